#!/usr/bin/env bash
# Creates the virtual environment `make test` builds the Python module with
# and runs pytest in (Debian's python3, whose headers python3-dev installs).
# Idempotent and quiet when it is complete. Usage: scripts/python-venv.sh DIR
set -euo pipefail
venv=${1:-build/py-venv}
packages=(numpy ml_dtypes pytest mypy nanobind scikit-build-core)
if [ -x "$venv/bin/python" ] && "$venv/bin/python" -c "import numpy, ml_dtypes, pytest, mypy, nanobind, scikit_build_core" 2>/dev/null; then
  exit 0
fi
echo "stepc: creating $venv (${packages[*]})"
/usr/bin/python3 -m venv "$venv"
"$venv/bin/pip" install -q --disable-pip-version-check "${packages[@]}"
