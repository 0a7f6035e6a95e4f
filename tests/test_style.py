"""The code base stays ruff-clean (lint rules and formatting from pyproject.toml)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PATHS = ["zf_attr", "tests", "benchmarks"]


def ruff(*args: str) -> subprocess.CompletedProcess:
    command = [shutil.which("ruff")] if shutil.which("ruff") else [sys.executable, "-m", "ruff"]
    return subprocess.run([*command, *args], cwd=ROOT, capture_output=True, text=True, check=False)


@pytest.mark.parametrize("mode", ["check", "format"])
def test_ruff_clean(mode: str) -> None:
    args = ["check", *PATHS] if mode == "check" else ["format", "--check", *PATHS]
    result = ruff(*args)
    assert result.returncode == 0, result.stdout + result.stderr
