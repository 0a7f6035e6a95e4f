"""``zf-attr bench``: times zf_attr against Captum with equal outputs, writes the suite's JSON, Markdown and report."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import zf_attr_cli, zf_attr_main

ROOT = Path(__file__).resolve().parents[1]


def test_bench_bundled_zfnet(tmp_path: Path) -> None:
    out = tmp_path / "bench"
    flags = ["--window", "56", "--stride", "28", "--repeats", "2", "--warmup", "0", "--device", "cpu"]
    result = zf_attr_cli("bench", "--method", "deconvnet", "occlusion", *flags, "--out", str(out), "--quiet")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [str(out / name) for name in ("bench.json", "bench.md", "report.html")]
    report = json.loads((out / "bench.json").read_text())
    assert report["model"] == "bundled ZFNet (shapes)" and report["input_size"] == 112
    assert set(report["versions"]) == {"python", "torch", "torchvision", "captum", "zf_attr"}
    assert set(report["load_average"]) == {"before", "after"} and "load_warning" in report
    by_kind = {case["kind"]: case for case in report["cases"]}
    assert sorted(by_kind) == ["deconvnet", "occlusion"]
    for case in by_kind.values():
        assert case["equal"] and case["max_relative_error"] <= 1e-4
        assert case["input_shape"] == [1, 3, 112, 112]
        assert len(case["zf_attr_timing"]["all_s"]) == len(case["reference_timing"]["all_s"]) == 2
        assert case["ratio"] == pytest.approx(case["reference_s"] / case["zf_attr_s"])
    occlusion = by_kind["occlusion"]
    assert "reference_ppe16_timing" in occlusion and occlusion["reference_default_s"] >= occlusion["reference_s"]
    table = (out / "bench.md").read_text().splitlines()
    assert table[2].startswith("| case |") and [row.split("|")[1].strip() for row in table[4:]] == [
        "deconvnet/bundled ZFNet (shapes)",
        "occlusion/bundled ZFNet (shapes)",
    ]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--repeats", "0"], "zf-attr: error: --repeats must be at least 1, got 0"),
        (["--window", "500", "--method", "occlusion"], "zf-attr: error: --window 500 is larger than the 112-pixel"),
        (["--quick"], "zf-attr: error: --quick and --only select the suite's cases: add --suite"),
    ],
)
def test_bench_bad_arguments(tmp_path: Path, args: list[str], message: str) -> None:
    result = zf_attr_main("bench", *args, "--device", "cpu", "--out", str(tmp_path / "out"))
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [result.stderr.strip()] and result.stderr.startswith(message)


def test_bench_suite_runs_the_suites_cases_from_a_checkout(tmp_path: Path) -> None:
    out = tmp_path / "suite"
    flags = ["--suite", "--quick", "--only", "deconvnet/zfnet", "--device", "cpu", "--out", str(out), "--quiet"]
    result = zf_attr_cli("bench", *flags, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    report = json.loads((out / "bench.json").read_text())
    assert report["quick"] and [case["name"] for case in report["cases"]] == ["deconvnet/zfnet"]
    assert report["cases"][0]["equal"] and "| deconvnet/zfnet |" in (out / "bench.md").read_text()


def test_bench_suite_outside_a_checkout_says_where_the_suite_is(tmp_path: Path) -> None:
    # only the package on the path, as from an installed copy: no benchmarks/ to import
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "zf_attr").symlink_to(ROOT / "zf_attr")
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "site")}
    command = [sys.executable, "-m", "zf_attr.cli", "bench", "--suite", "--device", "cpu", "--out", str(tmp_path / "o")]
    result = subprocess.run(command, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120, check=False)
    assert result.returncode == 1
    assert "python -m benchmarks --quick" in result.stderr and "checkout" in result.stderr
