"""The package's annotations and the module's generated stubs (_stepc.pyi)
type-check the README's example with mypy (skipped without mypy, which
scripts/python-venv.sh installs)."""
import os
import subprocess
import sys

import pytest

import stepc

EXAMPLE = '''
import numpy as np
import stepc

g = stepc.load("examples/mlp.sg")
step = stepc.compile(g.train_step(loss="loss", optimizer="adam", lr=1e-3), backend="cpu")
out = step(x=np.zeros((128, 784), np.float32), y=np.zeros(128, np.int32))
loss: np.ndarray = out["loss"]
step.set_params(step.params())


@stepc.jit
def f(x: stepc.Value, w: stepc.Value) -> stepc.Value:
    return stepc.relu(x @ w).sum()


@stepc.jit(optimizer="sgd", lr=0.1)
def fit(b: stepc.GraphBuilder, x: stepc.Value) -> stepc.Value:
    w = b.param("w", "f32", (3,), stepc.Init.he_uniform(seed=1))
    return stepc.mse(x * w, x)


b = stepc.GraphBuilder("tiny")
x = b.input("x", "f32", (8, 4))
w = b.param("w", "f32", (4, 3), stepc.Init.he_uniform(seed=1))
b.output("loss", stepc.cross_entropy(stepc.gelu(x @ w) * 2 - 1, b.input("y", "i32", (8,))))
tiny = b.finish()
stepc.grad(tiny, "loss", wrt=["w"])
figures: dict = stepc.bench(g, compare_unfused=True, per_kernel=True)
'''


def test_package_and_readme_example_type_check(tmp_path):
    pytest.importorskip("mypy")
    package = os.path.dirname(stepc.__file__)
    assert os.path.exists(os.path.join(package, "_stepc.pyi"))
    assert os.path.exists(os.path.join(package, "py.typed"))
    example = tmp_path / "example.py"
    example.write_text(EXAMPLE)
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--cache-dir", str(tmp_path / "mypy-cache"),
         "--no-error-summary", str(example), package],
        capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
