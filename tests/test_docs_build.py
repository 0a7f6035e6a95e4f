"""The documentation site builds with Sphinx, every warning an error (as ``docs/conf.py`` says)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_docs_build_strictly(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html", "docs", str(tmp_path)]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"sphinx failed:\n{result.stdout}\n{result.stderr}"
    api = (tmp_path / "api.html").read_text()
    for name in ("Deconvnet", "OcclusionSensitivity", "FeatureMapDeconvnet", "pointing_game", "ShapesDataset"):
        assert name in api, f"{name} missing from the API reference"
    for page in sorted((ROOT / "docs").glob("*.md")):
        assert (tmp_path / f"{page.stem}.html").is_file(), f"docs/{page.name} was not built"
