"""The code passes its own lint configuration (pyproject.toml [tool.ruff]): noqa comments mean something."""
from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from tests.conftest import CONF

REPO = CONF.parent


def test_ruff_passes():
    ruff = [sys.executable, "-m", "ruff"] if shutil.which("ruff") is None else ["ruff"]
    try:
        out = subprocess.run([*ruff, "check", "--no-cache", str(REPO)], capture_output=True, text=True, cwd=REPO, timeout=300)
    except FileNotFoundError:
        pytest.skip("ruff is not installed (pip install -e '.[test]' brings it)")
    if "No module named ruff" in out.stderr:
        pytest.skip("ruff is not installed (pip install -e '.[test]' brings it)")
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-1000:]
