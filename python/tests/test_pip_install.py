"""`pip install .` into a fresh venv, then the README's example, from
outside the repository. Opt-in (minutes, and it needs PyPI):
STEPC_TEST_PIP_INSTALL=1."""
import os
import subprocess
import sys
import venv

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.skipif(os.environ.get("STEPC_TEST_PIP_INSTALL") != "1",
                    reason="set STEPC_TEST_PIP_INSTALL=1 to run the real pip install")
def test_pip_install_builds_and_imports(tmp_path):
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    python = str(env_dir / "bin" / "python")
    subprocess.run([python, "-m", "pip", "install", "-q", ROOT], check=True)
    script = (
        "import numpy as np, stepc, os\n"
        f"g = stepc.load({os.path.join(ROOT, 'examples', 'mlp.sg')!r})\n"
        "step = stepc.compile(g.train_step(loss='loss', optimizer='adam', lr=1e-3), backend='cpu')\n"
        "out = step(x=np.zeros((128, 784), np.float32), y=np.zeros(128, np.int32))\n"
        "assert abs(float(out['loss']) - np.log(10)) < 1e-4, out\n"
        "d = os.path.dirname(stepc.__file__)\n"
        "assert os.path.exists(os.path.join(d, 'py.typed'))\n"
        "assert os.path.exists(os.path.join(d, '_stepc.pyi'))\n"
        "print('ok', stepc.__file__)\n")
    result = subprocess.run([python, "-c", script], cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "site-packages" in result.stdout
