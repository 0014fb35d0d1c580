#!/usr/bin/env bash
# Installs the Debian packages stepc builds with. Idempotent and quiet when
# everything is present; used by `make build|test|demo`. Arguments are more
# packages to install (`make sanitize|fuzz` add clang's).
set -euo pipefail

packages=(cmake ninja-build g++ ccache pkg-config libfmt-dev libcli11-dev
          nlohmann-json3-dev libgtest-dev libgmock-dev libonnx-dev libonnx-testdata
          libprotobuf-dev protobuf-compiler llvm-19-dev libmlir-19-dev mlir-19-tools
          zlib1g-dev dataset-fashion-mnist wamerican fortunes libopenmpi-dev openmpi-bin
          python3-dev python3-venv "$@")

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "stepc: installing ${missing[*]}"
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
