"""``zf-attr atlas`` as a subprocess: mining a folder, projecting, drawing; resume and bad arguments."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import zf_attr_cli, zf_attr_main

from zf_attr.analysis import TopKActivations, mine_top_k
from zf_attr.cli._inputs import find_images, load_model, read_image


def test_atlas_of_a_folder(shape_image_files: Path, tmp_path: Path) -> None:
    images = tmp_path / "images"  # the shapes without their masks (folders are walked recursively)
    images.mkdir()
    for index in range(3):
        shutil.copy(shape_image_files / f"shape{index}.png", images)
    out = tmp_path / "atlas"
    result = zf_attr_cli("atlas", str(images), "--layer", "conv2", "--channels", "0-2", "7", "--k", "2",
                         "--batch-size", "2", "--device", "cpu", "--out", str(out), "--quiet")  # fmt: skip
    assert result.returncode == 0, result.stderr
    names = ["mined.pt", "atlas.png", "atlas.npz", "atlas.json", "report.html"]
    assert result.stdout.split() == [str(out / name) for name in names]
    summary = json.loads((out / "atlas.json").read_text())
    assert summary["layer"] == "conv2" and summary["images"] == 3
    assert [entry["channel"] for entry in summary["channels"]] == [0, 1, 2, 7]
    # the same numbers as mining the preprocessed images in Python
    loaded = load_model("zfnet", None, device="cpu")
    paths = find_images([str(images)])
    images = torch.stack([read_image(path, loaded)[1] for path in paths])
    expected = mine_top_k(loaded.model, "conv2", images, k=2, channels=[0, 1, 2, 7], show_progress=False)
    mined = TopKActivations.load(out / "mined.pt")
    assert torch.equal(mined.image_ids, expected.image_ids)
    torch.testing.assert_close(mined.values, expected.values)
    first = summary["channels"][0]["top"][0]
    assert first["image"] == str(paths[first["image_id"]])
    arrays = np.load(out / "atlas.npz")
    assert arrays["values"].shape == (4, 2) and arrays["boxes"].shape == (4, 2, 4)


def test_atlas_resume_needs_a_checkpoint(shape_image_files: Path, tmp_path: Path) -> None:
    result = zf_attr_cli("atlas", str(shape_image_files), "--resume", "--device", "cpu", "--out", str(tmp_path))
    assert result.returncode == 1
    assert result.stderr.startswith("zf-attr: error: --resume: no ") and "mined.pt" in result.stderr


def test_atlas_resume_continues(shape_image_files: Path, tmp_path: Path) -> None:
    args = ["atlas", "--shapes", "6", "--layer", "conv1", "--channels", "0", "1", "--k", "3", "--all-locations"]
    first = zf_attr_cli(*args, "--device", "cpu", "--out", str(tmp_path), "--quiet")
    assert first.returncode == 0, first.stderr
    before = TopKActivations.load(tmp_path / "mined.pt")
    assert not before.one_per_image and before.images_seen == 6
    again = zf_attr_cli(*args, "--resume", "--device", "cpu", "--out", str(tmp_path), "--quiet")
    assert again.returncode == 0, again.stderr
    after = TopKActivations.load(tmp_path / "mined.pt")
    assert torch.equal(after.values, before.values) and torch.equal(after.image_ids, before.image_ids)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--layer", "conv9"], "zf-attr: error: --layer: layer='conv9' is not a layer of the model; did you mean"),
        (["--channels", "a-b"], "zf-attr: error: --channels 'a-b': use channel numbers and ranges like 0-15"),
        (["--k", "0"], "zf-attr: error: --k and --batch-size must be at least 1"),
    ],
)
def test_atlas_bad_arguments(shape_image_files: Path, tmp_path: Path, args: list[str], message: str) -> None:
    result = zf_attr_main("atlas", str(shape_image_files), *args, "--device", "cpu", "--out", str(tmp_path / "o"))
    assert result.returncode == 1
    assert result.stderr.startswith(message), result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_atlas_under_torchrun_equals_one_process(tmp_path: Path) -> None:
    args = ["atlas", "--shapes", "6", "--layer", "conv1", "--channels", "0", "1", "--k", "2", "--device", "cpu",
            "--quiet"]  # fmt: skip
    single = zf_attr_cli(*args, "--out", str(tmp_path / "one"))
    assert single.returncode == 0, single.stderr
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = str(probe.getsockname()[1])
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", port,
               "-m", "zf_attr", *args, "--out", str(tmp_path / "two")]  # fmt: skip
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"}
    )
    assert result.returncode == 0, result.stderr
    one = json.loads((tmp_path / "one" / "atlas.json").read_text())
    two = json.loads((tmp_path / "two" / "atlas.json").read_text())
    assert [[e["image_id"] for e in c["top"]] for c in two["channels"]] == [
        [e["image_id"] for e in c["top"]] for c in one["channels"]
    ]
    assert TopKActivations.load(tmp_path / "two" / "mined.pt").images_seen == 6
    assert sorted(p.name for p in (tmp_path / "two").glob("mined*.pt")) == [
        "mined.pt", "mined.rank0-of-2.pt", "mined.rank1-of-2.pt"
    ]  # fmt: skip
