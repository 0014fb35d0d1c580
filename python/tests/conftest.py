import os

import pytest

# Tests run from the repository root (CTest's python_tests does); paths to
# examples/ are relative to it.
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(autouse=True)
def _at_root(monkeypatch, tmp_path):
    monkeypatch.chdir(ROOT)
    # A private JIT cache: tests never read or fill the user's.
    monkeypatch.setenv("STEPC_CACHE_DIR", str(tmp_path / "cache"))
