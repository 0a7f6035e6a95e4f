"""``python -m benchmarks``: valid results, equality checks that catch a planted mismatch, and the rendered page.

No timed assertion: speed belongs in the suite's results, never in a test.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks import render  # noqa: E402
from benchmarks.suite.context import PLANT_VARIABLE  # noqa: E402
from benchmarks.suite.registry import cases, select  # noqa: E402
from zf_attr.benchmarking import load_warning  # noqa: E402

TOP_LEVEL = {"device", "device_name", "versions", "load_average", "load_warning", "cpu_count", "torch_threads",
             "quick", "started", "cases"}  # fmt: skip
CASE = {"name", "model", "input_shape", "zf_attr_s", "reference", "reference_s", "ratio", "equal",
        "max_relative_error", "tolerance"}  # fmt: skip


def suite(out: Path, *only: str, plant: str | None = None) -> subprocess.CompletedProcess[str]:
    """``python -m benchmarks --quick --device cpu --only ...`` in the repository root (one thread: cheap)."""
    command = [sys.executable, "-m", "benchmarks", "--quick", "--device", "cpu", "--threads", "1", "--out", str(out)]
    env = {key: value for key, value in os.environ.items() if key != PLANT_VARIABLE}
    if plant is not None:
        env[PLANT_VARIABLE] = plant
    command += [item for name in only for item in ("--only", name)]
    return subprocess.run(command, capture_output=True, text=True, cwd=ROOT, env=env, timeout=300, check=False)


def test_quick_cases_write_valid_results_all_equal(tmp_path: Path) -> None:
    out = tmp_path / "suite.json"
    result = suite(out, "deconvnet/zfnet", "occlusion/resnet18/incremental")
    assert result.returncode == 0, result.stderr
    report = json.loads(out.read_text())
    assert TOP_LEVEL <= set(report) and report["device"] == "cpu" and report["quick"] is True
    assert set(report["versions"]) == {"python", "torch", "torchvision", "captum", "zf_attr"}
    assert set(report["load_average"]) == {"before", "after"} and report["torch_threads"] == 1
    assert [case["name"] for case in report["cases"]] == ["deconvnet/zfnet", "occlusion/resnet18/incremental"]
    for case in report["cases"]:
        assert CASE <= set(case), CASE - set(case)
        assert case["equal"] is True and case["max_relative_error"] <= case["tolerance"]
        assert case["zf_attr_s"] > 0 and case["reference_s"] > 0
        assert case["ratio"] == pytest.approx(case["reference_s"] / case["zf_attr_s"])
        assert len(case["zf_attr_timing"]["all_s"]) == report["settings"]["repeats"]
    deconvnet, occlusion = report["cases"]
    assert deconvnet["input_shape"] == [1, 3, 112, 112] and deconvnet["reference"] == "captum.attr.Deconvolution"
    assert occlusion["engine_requested"] == "incremental" and occlusion["engine"] in ("incremental", "batched")
    assert occlusion["windows"] == 49 and occlusion["flop_bound"] > 1
    assert occlusion["fraction_of_bound"] == pytest.approx(occlusion["ratio"] / occlusion["flop_bound"])
    assert set(occlusion["reference_ppe_s"]) == {"1", "8", "16"}
    assert occlusion["reference_s"] == min(occlusion["reference_ppe_s"].values())
    assert "| deconvnet/zfnet |" in result.stdout


def test_a_planted_mismatch_fails_the_run_and_is_recorded(tmp_path: Path) -> None:
    out = tmp_path / "planted.json"
    result = suite(out, "deconvnet/zfnet", "neuron/zfnet", plant="deconvnet/zfnet")
    assert result.returncode == 1
    assert "FAIL: outputs not equal" in result.stderr and "deconvnet/zfnet" in result.stderr.splitlines()[-1]
    report = json.loads(out.read_text())  # written before the exit
    assert report["planted_mismatch"] == "deconvnet/zfnet"
    planted, clean = report["cases"]
    assert planted["name"] == "deconvnet/zfnet" and planted["equal"] is False
    assert planted["max_relative_error"] > planted["tolerance"]
    assert planted["zf_attr_s"] is None and planted["ratio"] is None  # no time reported for unequal outputs
    assert clean["name"] == "neuron/zfnet" and clean["equal"] is True


def test_case_selection_and_names() -> None:
    quick = [case.name for case in cases(True, torch.device("cpu"))]
    full = [case.name for case in cases(False, torch.device("cuda"))]
    assert len(set(quick)) == len(quick) and set(quick) < set(full)
    for kind in ("deconvnet", "gradcam", "neuron", "projection", "mining", "occlusion"):
        assert any(name.startswith(f"{kind}/") for name in quick)
    for model in ("resnet18", "vgg16", "googlenet", "convnext_tiny", "efficientnet_b0", "zfnet"):
        assert {f"deconvnet/{model}", f"occlusion/{model}/incremental", f"occlusion/{model}/batched"} <= set(full)
    assert {"deconvnet/resnet18/bf16", "occlusion/resnet18/incremental-channels_last"} <= set(full)
    chosen = select(cases(True, torch.device("cpu")), ["occlusion/zfnet", "mining/resnet18"])
    assert [case.name for case in chosen] == [
        "mining/resnet18" if name.startswith("mining") else name
        for name in quick
        if name.startswith("occlusion/zfnet") or name == "mining/resnet18"
    ]


def test_load_warning_only_when_busy() -> None:
    assert load_warning([0.4, 0.5, 0.5], [2.3, 1.2, 0.8], cpu_count=2, own_threads=2) is None
    assert load_warning(None, None, cpu_count=2) is None
    assert "3.90 at the start" in load_warning([3.9, 3.0, 2.0], [1.0, 1.0, 1.0], cpu_count=2, own_threads=2)
    assert "at the end" in load_warning([0.1, 0.1, 0.1], [4.5, 2.0, 1.0], cpu_count=2, own_threads=2)


FIXTURE: dict[str, Any] = {
    "device": "cpu",
    "device_name": "Test CPU",
    "versions": {"python": "3.11", "torch": "2.x", "torchvision": "0.x", "captum": "0.9", "zf_attr": "0.1.0"},
    "load_average": {"before": [0.1, 0.1, 0.1], "after": [3.9, 1.0, 0.5]},
    "load_warning": "machine busy: 3.90 at the end",
    "cpu_count": 2,
    "torch_threads": 2,
    "quick": True,
    "started": "2026-01-01T00:00:00+00:00",
    "wall_s": 12.0,
    "git_commit": "abc1234",
    "cases": [
        {"name": "deconvnet/resnet18", "model": "resnet18", "input_shape": [1, 3, 64, 64], "kind": "deconvnet",
         "variant": "float32", "zf_attr_s": 0.02, "reference": "captum.attr.Deconvolution", "reference_s": 0.025,
         "ratio": 1.25, "equal": True, "max_relative_error": 0.0, "tolerance": 1e-5},
        {"name": "occlusion/resnet18/incremental", "model": "resnet18", "input_shape": [1, 3, 64, 64],
         "kind": "occlusion", "engine": "incremental", "windows": 49, "windows_evaluated": 49, "zf_attr_s": 0.1,
         "reference": "captum.attr.Occlusion (best perturbations_per_eval=8)", "reference_s": 0.3,
         "reference_default_s": 0.5, "reference_best_ppe": 8, "ratio": 3.0, "ratio_vs_default": 5.0,
         "flop_bound": 2.5, "fraction_of_bound": 1.2, "equal": True, "max_relative_error": 3e-6, "tolerance": 1e-4},
        {"name": "mining/zfnet", "model": "zfnet", "input_shape": [64, 3, 112, 112], "kind": "mining",
         "layer": "pool5", "zf_attr_s": None, "reference": "plain inference", "reference_s": None, "ratio": None,
         "equal": False, "max_relative_error": 7, "tolerance": 0},
    ],
}  # fmt: skip


def test_render_tables_from_a_fixture(tmp_path: Path) -> None:
    (tmp_path / "suite-cpu-test-quick.json").write_text(json.dumps(FIXTURE))
    (tmp_path / "deconvnet-cpu-old.json").write_text("{}")  # not a suite file: ignored
    text = render.render_results(tmp_path)
    assert text.startswith("### Test CPU (cpu), quick run") and "commit `abc1234`" in text
    assert "> **Busy machine**: 3.90 at the end." in text
    rows = [line for line in text.splitlines() if line.startswith("| ")]
    assert rows[0].startswith("| case | input | zf_attr s | reference | reference s | speed-up |")
    assert rows[2] == (
        "| `deconvnet/resnet18` | 1×3×64×64 | 0.02 | `captum.attr.Deconvolution` | 0.025 | **1.25×** | 0 | yes |"
    )
    occlusion = next(row for row in rows if "occlusion/resnet18" in row)
    assert "| incremental | 49 (49) | 0.1 | 0.5 | 0.3 (8) | **3.00×** | **5.00×** | 2.50× | 120% | exact |" in occlusion
    mining = next(row for row in rows if row.startswith("| zfnet `pool5`"))
    assert mining.endswith("| — | — | — | — | — | 7 | **NO** |")
    page = tmp_path / "page.md"
    page.write_text(f"# Title\n\nprose\n\n{render.START}\nstale 11.00 s\n{render.END}\n\nmore prose\n")
    assert render.main(["--results", str(tmp_path), "--doc", str(page), "--check"]) == 1
    assert render.main(["--results", str(tmp_path), "--doc", str(page)]) == 0
    written = page.read_text()
    assert "stale" not in written and written.startswith("# Title\n\nprose\n\n") and written.endswith("more prose\n")
    assert render.main(["--results", str(tmp_path), "--doc", str(page), "--check"]) == 0


def test_the_benchmarks_page_shows_the_committed_results() -> None:
    assert render.main(["--check"]) == 0, "run python -m benchmarks.render"
