"""``zf-attr bench``: times zf_attr against Captum with equal outputs, writes JSON, Markdown and the report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import zf_attr_cli


def test_bench_bundled_zfnet(tmp_path: Path) -> None:
    out = tmp_path / "bench"
    flags = ["--window", "56", "--stride", "28", "--repeats", "2", "--warmup", "0", "--device", "cpu"]
    result = zf_attr_cli("bench", "--method", "deconvnet", "occlusion", *flags, "--out", str(out), "--quiet")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [str(out / name) for name in ("bench.json", "bench.md", "report.html")]
    report = json.loads((out / "bench.json").read_text())
    assert report["model"] == "bundled ZFNet (shapes)" and report["input_size"] == 112
    by_method = {entry["method"]: entry for entry in report["results"]}
    assert sorted(by_method) == ["deconvnet", "occlusion"]
    for entry in by_method.values():
        assert entry["equal"] and entry["relative_error"] <= 1e-4
        assert len(entry["zf_attr"]["all_s"]) == len(entry["captum"]["all_s"]) == 2
        assert entry["ratio"] == pytest.approx(entry["zf_attr"]["median_s"] / entry["captum"]["median_s"])
    assert "captum_ppe16" in by_method["occlusion"]
    table = (out / "bench.md").read_text().splitlines()
    assert table[2].startswith("| method |") and [row.split("|")[1].strip() for row in table[4:]] == [
        "deconvnet",
        "occlusion",
    ]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--repeats", "0"], "zf-attr: error: --repeats must be at least 1, got 0"),
        (["--window", "500", "--method", "occlusion"], "zf-attr: error: --window 500 is larger than the 112-pixel"),
    ],
)
def test_bench_bad_arguments(tmp_path: Path, args: list[str], message: str) -> None:
    result = zf_attr_cli("bench", *args, "--device", "cpu", "--out", str(tmp_path / "out"))
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [result.stderr.strip()] and result.stderr.startswith(message)
