"""Auditing a data set, runs: resume, torchrun, weights by name, class names, progress, seeds, memory, report."""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torchvision
from test_audit_inputs import TINY, TINY_ARGS, save_rgb

from zf_attr.cli import main
from zf_attr.cli._progress import Progress


@pytest.fixture
def explain(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Callable[..., Any]:
    """``zf-attr explain ARGS`` in this process: ``(exit status, stdout, stderr)``; ``tiny``: with the tiny model."""
    (tmp_path / "tiny_models.py").write_text(TINY)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "tiny_models", raising=False)

    def run(*args: str, tiny: bool = True) -> tuple[int, str, str]:
        code = main(["explain", *args, *(TINY_ARGS if tiny else ["--quiet", "--workers", "0"])])
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run


def images(folder: Path, count: int, size: tuple[int, int] = (40, 40)) -> Path:
    for index in range(count):
        save_rgb(folder / f"class{index % 2}" / f"img{index:03d}.png", index, size)
    return folder


def test_resume_after_an_interrupted_run(tmp_path: Path, explain: Callable[..., Any]) -> None:
    data, out = images(tmp_path / "data", 4), tmp_path / "out"
    code, _, err = explain(str(data), "--out", str(out))
    assert code == 0, err
    manifest = out / "manifest.jsonl"
    lines = manifest.read_text().splitlines()
    # as if killed while the third image was being written: its line cut short, the fourth never started
    manifest.write_text("\n".join(lines[:2]) + "\n" + lines[2][:25])
    keys = [json.loads(line)["key"] for line in lines]
    (out / f"{keys[3]}.npz").unlink()
    finished = {path: path.stat().st_mtime_ns for key in keys[:2] for path in (out / f"{key}.png", out / f"{key}.npz")}
    code, _, err = explain(str(data), "--out", str(out))  # a fresh run never mixes with an earlier one
    assert code == 1 and err.strip().startswith("zf-attr: error:") and "--resume" in err
    assert len(err.strip().splitlines()) == 1
    code, _, err = explain(str(data), "--out", str(out), "--target", "1", "--resume")
    assert code == 1 and "other settings (target)" in err
    code, stdout, err = explain(str(data), "--out", str(out), "--resume")
    assert code == 0, err
    assert {path: path.stat().st_mtime_ns for path in finished} == finished  # finished outputs untouched
    made = [line for line in stdout.splitlines() if line.endswith((".png", ".npz"))]
    assert made == [str(out / f"{key}.{suffix}") for key in keys[2:] for suffix in ("png", "npz")]
    summary = json.loads((out / "summary.json").read_text())
    assert [entry["key"] for entry in summary["images"]] == keys and summary["complete"] is True


def _free_port() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return str(probe.getsockname()[1])


def test_two_torchrun_ranks_equal_one_process(tmp_path: Path, explain: Callable[..., Any]) -> None:
    data = images(tmp_path / "data", 5)
    code, _, err = explain(str(data), "--out", str(tmp_path / "one"), "--no-figures", "--batch-size", "2")
    assert code == 0, err
    launch = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", _free_port()]
    command = [*launch, "-m", "zf_attr", "explain", str(data), "--out", str(tmp_path / "two"), "--no-figures",
               *TINY_ARGS]  # fmt: skip
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, cwd=tmp_path, env=environment, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert sorted(path.name for path in (tmp_path / "two").glob("manifest*.jsonl")) == [
        "manifest.jsonl",
        "manifest.rank1.jsonl",
    ]
    one = json.loads((tmp_path / "one" / "summary.json").read_text())
    two = json.loads((tmp_path / "two" / "summary.json").read_text())
    assert [entry["key"] for entry in two["images"]] == [entry["key"] for entry in one["images"]]  # each once
    assert len(two["images"]) == two["total"] == 5 and two["complete"] is True
    for first, second in zip(one["images"], two["images"], strict=True):
        assert first["predicted_index"] == second["predicted_index"]
        assert first["target_probability"] == pytest.approx(second["target_probability"], abs=1e-5)
        np.testing.assert_allclose(
            np.load(tmp_path / "one" / second["arrays"])["deconvnet"],
            np.load(tmp_path / "two" / second["arrays"])["deconvnet"],
            rtol=1e-4,
            atol=1e-6,
        )


def test_weights_by_name_from_the_torch_hub_cache(
    tmp_path: Path, explain: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    weights = torchvision.models.ResNet18_Weights.IMAGENET1K_V1
    cache = tmp_path / "torch-home" / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), cache / weights.url.rsplit("/", 1)[-1])
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    data = images(tmp_path / "data", 1)
    for name in ("DEFAULT", "IMAGENET1K_V1", "ResNet18_Weights.IMAGENET1K_V1"):
        out = tmp_path / f"out-{name}"
        code, _, err = explain(str(data), "--model", "resnet18", "--weights", name, "--size", "64",
                               "--method", "deconvnet", "--no-figures", "--out", str(out), tiny=False)  # fmt: skip
        assert code == 0, err
        summary = json.loads((out / "summary.json").read_text())
        assert summary["model"] == "torchvision resnet18, weights ResNet18_Weights.IMAGENET1K_V1"
        (entry,) = summary["images"]
        assert entry["predicted"] == weights.meta["categories"][entry["predicted_index"]]  # ImageNet names
    code, _, err = explain(str(data), "--model", "resnet18", "--weights", "ResNet18_Weights.IMAGENET1K_V2",
                           "--out", str(tmp_path / "x"), tiny=False)  # fmt: skip
    assert code == 1 and err.startswith("zf-attr: error: --weights 'ResNet18_Weights.IMAGENET1K_V2'")
    # offline and not cached: one line naming the file and where it goes (no download attempted here)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty"))

    def offline(*args: object, **kwargs: object) -> None:
        from urllib.error import URLError

        raise URLError("no network")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    code, _, err = explain(str(data), "--model", "resnet18", "--weights", "DEFAULT", "--out", str(tmp_path / "y"),
                           tiny=False)  # fmt: skip
    assert code == 1
    assert err == (
        "zf-attr: error: --weights ResNet18_Weights.IMAGENET1K_V1: resnet18-f37072fd.pth is not in the torch hub "
        f"cache and cannot be downloaded here (URLError); download {weights.url} into "
        f"{tmp_path / 'empty' / 'hub' / 'checkpoints'}/ (or set TORCH_HOME)\n"
    )


def test_class_names_file_and_target_from_folder(tmp_path: Path, explain: Callable[..., Any]) -> None:
    data = tmp_path / "data"
    for index, folder in enumerate(["cat", "dog", "dog"]):
        save_rgb(data / folder / f"{index}.png", index)
    (tmp_path / "classes.txt").write_text("cat\ndog\nbird\nfish\n")
    out = tmp_path / "out"
    code, _, err = explain(str(data), "--classes", str(tmp_path / "classes.txt"), "--target", "from-folder",
                           "--out", str(out), "--per-page", "2")  # fmt: skip
    assert code == 0, err
    summary = json.loads((out / "summary.json").read_text())
    assert [(e["target"], e["target_index"]) for e in summary["images"]] == [("cat", 0), ("dog", 1), ("dog", 1)]
    names = ("cat", "dog", "bird", "fish")
    assert all(e["predicted"] == names[e["predicted_index"]] for e in summary["images"])
    index = (out / "report.html").read_text()
    assert 'href="report/page-0001.html"' in index and 'href="report/page-0002.html"' in index
    page = (out / "report" / "page-0002.html").read_text()
    assert "thumbs/dog/2.jpg" in page and "<b>dog</b>" in page  # the class name, predicted or explained
    (tmp_path / "few.json").write_text('["cat", "dog"]')
    code, _, err = explain(str(data), "--classes", str(tmp_path / "few.json"), "--out", str(tmp_path / "o2"))
    assert code == 1 and err == "zf-attr: error: --classes names 2 classes but the model has 4 outputs\n"
    save_rgb(data / "horse" / "9.png", 9)
    code, _, err = explain(str(data), "--classes", str(tmp_path / "classes.txt"), "--target", "from-folder",
                           "--out", str(tmp_path / "o3"))  # fmt: skip
    assert code == 1 and err.startswith("zf-attr: error: --target from-folder: folder names 'horse' are not")
    assert not (tmp_path / "o3").exists()


def test_seed_makes_random_init_runs_reproducible(tmp_path: Path, explain: Callable[..., Any]) -> None:
    data = images(tmp_path / "data", 1)
    maps = {}
    for run, seed in (("a", "1"), ("b", "1"), ("c", "2")):
        code, _, err = explain(str(data), "--model", "resnet18", "--size", "32", "--seed", seed, "--method", "gradient",
                               "--no-figures", "--out", str(tmp_path / run), tiny=False)  # fmt: skip
        assert code == 0, err
        maps[run] = np.load(tmp_path / run / "class0" / "img000.npz")["gradient"]
    # the same weights; CPU convolutions may sum in a different order from run to run (last-bit differences)
    np.testing.assert_allclose(maps["a"], maps["b"], rtol=1e-4, atol=1e-7)
    assert not np.allclose(maps["a"], maps["c"], rtol=1e-2, atol=1e-5)


def test_progress_lines_in_a_log_and_tqdm_write_on_a_terminal(capsys: pytest.CaptureFixture[str]) -> None:
    log = io.StringIO()
    progress = Progress(40, stream=log, interval=3600)
    for _ in range(40):
        progress.update()
    lines = log.getvalue().splitlines()
    assert len(lines) == 20  # every 5%
    assert lines[0].startswith("zf-attr: 2/40 images (5%), ") and "images/s, ETA " in lines[0]

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    terminal = Terminal()
    progress = Progress(3, stream=terminal)
    progress.update()
    progress.print("out/cats/1.png")
    progress.close()
    assert capsys.readouterr().out == "out/cats/1.png\n"  # the path alone on its line, the bar elsewhere
    assert "images" in terminal.getvalue()


def test_memory_stays_flat_over_500_images(tmp_path: Path) -> None:
    """Peak RSS of 500 images minus that of 50 (each in a fresh process): no per-image data is held."""
    (tmp_path / "tiny_models.py").write_text(TINY)
    for count in (50, 500):
        images(tmp_path / f"data{count}", count, size=(64, 64))
    probe = (
        "import resource, subprocess, sys\n"
        "subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL)\n"
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
    )
    runs = {}
    for count in (50, 500):  # both at once, each in its own fresh process
        command = [sys.executable, "-c", probe, sys.executable, "-m", "zf_attr", "explain",
                   str(tmp_path / f"data{count}"), "--out", str(tmp_path / f"out{count}"), "--no-figures",
                   *TINY_ARGS[:2], "--size", "64", "--batch-size", "8", "--workers", "0", "--method", "deconvnet",
                   "gradient", "--quiet"]  # fmt: skip
        runs[count] = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peaks = {}
    for count, process in runs.items():
        stdout, stderr = process.communicate(timeout=600)
        assert process.returncode == 0, stderr
        peaks[count] = int(stdout.split()[-1]) / 1024  # MiB
    assert json.loads((tmp_path / "out500" / "summary.json").read_text())["done"] == 500
    # holding 500 images' maps would add 500 x 2 x 49 kB = 49 MB
    assert peaks[500] - peaks[50] < 20, peaks


STALLS_AFTER_TWO = """
import os, pathlib, time
_tiny = tiny
def tiny():
    model = _tiny()
    manifest = os.environ.get("TINY_STALL_AFTER_TWO")
    def stall(module, args):
        while manifest and pathlib.Path(manifest).is_file() and pathlib.Path(manifest).read_text().count("\\n") >= 2:
            time.sleep(0.05)
    model.register_forward_pre_hook(stall)
    return model
"""


def test_resume_after_a_killed_process(tmp_path: Path) -> None:
    """SIGKILL in the middle of a run, then --resume: what was finished stays as it was, the rest is made."""
    (tmp_path / "tiny_models.py").write_text(TINY + STALLS_AFTER_TWO)
    data, out = images(tmp_path / "data", 12), tmp_path / "out"
    manifest = out / "manifest.jsonl"
    command = [sys.executable, "-m", "zf_attr", "explain", str(data), "--out", str(out), "--no-figures",
               "--batch-size", "1", *TINY_ARGS]  # fmt: skip
    # The first run's model stalls once two results are recorded, so the kill lands midway however fast the machine.
    stalling = {**os.environ, "TINY_STALL_AFTER_TWO": str(manifest)}
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    process = subprocess.Popen(command, cwd=tmp_path, env=stalling, **quiet)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        if manifest.is_file() and manifest.read_text().count("\n") >= 2:
            break
        time.sleep(0.05)
    process.kill()
    process.wait()
    finished = [json.loads(line)["key"] for line in manifest.read_text().splitlines() if line.endswith("}")]
    assert 2 <= len(finished) < 12, "the run was not killed midway"
    (out / "class0" / ".img010.tmp99999.npz").write_bytes(b"half-written")  # as a write cut short leaves it
    stamps = {key: (out / f"{key}.npz").stat().st_mtime_ns for key in finished}
    resumed = subprocess.run([*command, "--resume"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert {key: (out / f"{key}.npz").stat().st_mtime_ns for key in finished} == stamps
    summary = json.loads((out / "summary.json").read_text())
    assert summary["done"] == summary["total"] == 12 and len({e["key"] for e in summary["images"]}) == 12
    assert not list(out.rglob(".*.tmp*"))  # no temporary file left behind


def test_decoding_workers_give_the_same_results_in_order(tmp_path: Path, explain: Callable[..., Any]) -> None:
    data = images(tmp_path / "data", 6)
    (data / "class1" / "broken.png").write_text("not an image")
    summaries = []
    for workers in ("0", "2"):
        out = tmp_path / f"out{workers}"
        code = main(["explain", str(data), *TINY_ARGS, "--no-figures", "--skip-errors", "--batch-size", "4",
                     "--workers", workers, "--out", str(out)])  # fmt: skip
        assert code == 3
        summaries.append(json.loads((out / "summary.json").read_text()))
    assert summaries[0]["images"] == summaries[1]["images"] and summaries[0]["failures"] == summaries[1]["failures"]
    keys = [entry["key"] for entry in summaries[1]["images"]]
    assert keys == sorted(keys) and len(keys) == 6
