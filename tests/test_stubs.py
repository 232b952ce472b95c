"""The hand-written stubs match the compiled extension (mypy's stubtest)."""

from __future__ import annotations

import subprocess
import sys

import pytest


def test_core_stub_matches_runtime():
    pytest.importorskip("mypy")
    out = subprocess.run([sys.executable, "-m", "mypy.stubtest", "hanpack._core"], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
