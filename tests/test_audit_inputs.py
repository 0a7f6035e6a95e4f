"""Auditing a data set, inputs: folder trees, output names that never collide, lossless decoding, failing files."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from conftest import zf_attr_cli
from PIL import Image

from zf_attr.cli import main
from zf_attr.cli._images import InputError, collect_inputs, decode_image, preprocess

TINY = """
import torch
def tiny():
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(4, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(), torch.nn.Linear(4, 4))
"""
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


TINY_ARGS = ["--model", "tiny_models:tiny", "--size", "32", "--workers", "0", "--method", "deconvnet", "--quiet"]


def tiny_cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``zf-attr explain`` as a subprocess with a 4-class tiny model on 32-pixel inputs, in ``tmp_path``."""
    (tmp_path / "tiny_models.py").write_text(TINY)
    return zf_attr_cli("explain", *args, *TINY_ARGS, cwd=tmp_path)


@pytest.fixture
def explain(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Callable[..., Any]:
    """``zf-attr explain ARGS`` with the tiny model, in this process (faster): ``(exit status, stdout, stderr)``."""
    (tmp_path / "tiny_models.py").write_text(TINY)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "tiny_models", raising=False)

    def run(*args: str) -> tuple[int, str, str]:
        code = main(["explain", *args, *TINY_ARGS])
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run


def save_rgb(path: Path, seed: int, size: tuple[int, int] = (40, 40)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


def test_nested_folders_mirror_their_paths_sorted(tmp_path: Path, explain: Callable[..., Any]) -> None:
    for index, name in enumerate(["dogs/1.png", "cats/1.png", "cats/deep/2.jpg", "cats/10.png", ".hidden/3.png"]):
        save_rgb(tmp_path / "data" / name, index)
    (tmp_path / "data" / "cats" / "notes.txt").write_text("not an image")
    keys = [item.key for item in collect_inputs([str(tmp_path / "data")])]
    assert keys == ["cats/1", "cats/10", "cats/deep/2", "dogs/1"]  # recursive, sorted, hidden skipped
    (tmp_path / "data" / "cats" / "loop").symlink_to(tmp_path / "data")  # a link cycle is walked once
    assert [item.key for item in collect_inputs([str(tmp_path / "data")])] == keys
    (tmp_path / "data" / "cats" / "loop").unlink()
    save_rgb(tmp_path / "elsewhere" / "5.png", 5)
    (tmp_path / "data" / "birds").symlink_to(tmp_path / "elsewhere")  # a linked class folder is followed
    assert [item.key for item in collect_inputs([str(tmp_path / "data")])] == ["birds/5", *keys]
    (tmp_path / "data" / "birds").unlink()
    glob_keys = [item.key for item in collect_inputs([str(tmp_path / "data" / "*" / "1.png")])]
    assert glob_keys == ["cats/1", "dogs/1"]  # relative to the glob's root
    out = tmp_path / "out"
    code, _, err = explain(str(tmp_path / "data"), "--no-figures", "--out", str(out))
    assert code == 0, err
    assert {p.relative_to(out).as_posix() for p in out.rglob("*.npz")} == {f"{k}.npz" for k in keys}
    summary = json.loads((out / "summary.json").read_text())
    assert [entry["key"] for entry in summary["images"]] == keys
    # the output folder inside the input folder is never read back as input
    inside = tmp_path / "data" / "explained"
    code, _, err = explain(str(tmp_path / "data"), "--no-figures", "--out", str(inside))
    assert code == 0, err
    assert json.loads((inside / "summary.json").read_text())["total"] == 4


def test_name_collisions_are_refused_before_any_work(tmp_path: Path, explain: Callable[..., Any]) -> None:
    files = [save_rgb(tmp_path / "a" / "x.png", 0), save_rgb(tmp_path / "b" / "x.png", 1)]
    result = tiny_cli(tmp_path, str(files[0]), str(files[1]), "--out", str(tmp_path / "out"))
    assert result.returncode == 1
    assert result.stderr == (
        f"zf-attr: error: '{files[0]}' and '{files[1]}' would both write the outputs 'x.*'; name their folder "
        "instead of the files, or rename one (nothing was written)\n"
    )
    assert not (tmp_path / "out").exists()
    # the same folder holding x.png and x.jpg
    save_rgb(tmp_path / "a" / "x.jpg", 2)
    code, out, err = explain(str(tmp_path / "a"), "--out", str(tmp_path / "out"))
    assert code == 1 and out == "" and "would both write the outputs 'x.*'" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_names_equal_up_to_case_collide(tmp_path: Path) -> None:
    files = [save_rgb(tmp_path / "a" / "x.png", 0), save_rgb(tmp_path / "b" / "X.png", 1)]
    with pytest.raises(InputError, match="would both write"):
        collect_inputs([str(path) for path in files])


def test_lossless_decoding_of_every_mode(tmp_path: Path) -> None:
    grey = np.random.default_rng(0).integers(0, 256, (40, 48), dtype=np.uint8)
    Image.fromarray(grey).save(tmp_path / "grey8.png")
    Image.fromarray(grey.astype(np.uint16) * 257).save(tmp_path / "grey16.png")
    Image.fromarray(grey.astype(np.float32) / 255).save(tmp_path / "float.tif")
    Image.fromarray(grey.astype(np.float32) * 4 - 100).save(tmp_path / "float-wide.tif")  # stretched to [0, 1]
    assert Image.open(tmp_path / "grey16.png").mode == "I;16"
    expected = torch.from_numpy(grey / 255).float().expand(3, -1, -1)
    for name in ("grey16.png", "float.tif", "float-wide.tif"):
        picture, size = decode_image(tmp_path / name)
        assert size == (48, 40) and isinstance(picture, torch.Tensor), name
        torch.testing.assert_close(picture, expected, atol=1e-6, rtol=0)  # scaled, not clipped to white
    # resized, the 16-bit image differs from its 8-bit copy by less than one grey level (the 8-bit rounding)
    eight = preprocess(decode_image(tmp_path / "grey8.png")[0], 32, 36, MEAN, STD)[0]
    sixteen = preprocess(decode_image(tmp_path / "grey16.png")[0], 32, 36, MEAN, STD)[0]
    assert float((eight - sixteen).abs().max()) <= 1 / 255 + 1e-6
    # palette, alpha over white, CMYK
    rgb = np.random.default_rng(1).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    Image.fromarray(rgb).quantize(16).save(tmp_path / "palette.png")
    palette = np.asarray(Image.open(tmp_path / "palette.png").convert("RGB"))
    np.testing.assert_array_equal(np.asarray(decode_image(tmp_path / "palette.png")[0]), palette)
    rgba = np.dstack([rgb, np.zeros((8, 8), np.uint8)])
    rgba[0, 0, 3] = 255
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    decoded = np.asarray(decode_image(tmp_path / "rgba.png")[0])
    assert (decoded[1:, :] == 255).all() and (decoded[0, 0] == rgb[0, 0]).all()  # transparent → white
    Image.fromarray(np.dstack([grey[:8, :8], np.full((8, 8), 255, np.uint8)]), "LA").save(tmp_path / "la.png")
    np.testing.assert_array_equal(np.asarray(decode_image(tmp_path / "la.png")[0])[..., 0], grey[:8, :8])
    Image.fromarray(rgb).convert("CMYK").save(tmp_path / "cmyk.jpg", quality=100)
    assert np.abs(np.asarray(decode_image(tmp_path / "cmyk.jpg")[0]).astype(int) - rgb).mean() < 8
    with pytest.raises(InputError, match="cannot read image"):
        (tmp_path / "broken.png").write_bytes(b"\x89PNG broken")
        decode_image(tmp_path / "broken.png")


def test_sixteen_bit_grey_explained_as_its_eight_bit_copy(tmp_path: Path, explain: Callable[..., Any]) -> None:
    grey = np.random.default_rng(3).integers(0, 256, (32, 32), dtype=np.uint8)
    for depth in ("eight", "sixteen"):
        (tmp_path / depth).mkdir()
    Image.fromarray(grey).save(tmp_path / "eight" / "g.png")
    Image.fromarray(grey.astype(np.uint16) * 257).save(tmp_path / "sixteen" / "g.png")
    results = {}
    for depth in ("eight", "sixteen"):
        out = tmp_path / f"out-{depth}"
        code, _, err = explain(str(tmp_path / depth), "--resize", "32", "--no-figures", "--out", str(out))
        assert code == 0, err
        results[depth] = (json.loads((out / "summary.json").read_text())["images"][0], np.load(out / "g.npz"))
    assert results["eight"][0]["predicted"] == results["sixteen"][0]["predicted"]
    assert results["eight"][0]["target_probability"] == results["sixteen"][0]["target_probability"]
    np.testing.assert_array_equal(results["eight"][1]["deconvnet"], results["sixteen"][1]["deconvnet"])


def test_broken_file_with_and_without_skip_errors(tmp_path: Path, explain: Callable[..., Any]) -> None:
    save_rgb(tmp_path / "data" / "a.png", 0)
    (tmp_path / "data" / "b.png").write_text("not an image")
    save_rgb(tmp_path / "data" / "c.png", 2, size=(20, 24))  # smaller than the 32-pixel input: a warning
    skipped = tiny_cli(tmp_path, str(tmp_path / "data"), "--skip-errors", "--no-figures", "--out", str(tmp_path / "s"))
    assert skipped.returncode == 3, skipped.stderr
    stderr = skipped.stderr.strip().splitlines()
    assert stderr[0].startswith(f"zf-attr: skipped {tmp_path / 'data' / 'b.png'}: cannot read image")
    assert stderr[1] == (
        f"zf-attr: warning: {tmp_path / 'data' / 'c.png'} is 20x24 pixels, smaller than the model's 32x32 input: "
        "it is upscaled"
    )
    summary = json.loads((tmp_path / "s" / "summary.json").read_text())
    assert [entry["key"] for entry in summary["images"]] == ["a", "c"]
    assert [failure["file"] for failure in summary["failures"]] == [str(tmp_path / "data" / "b.png")]
    assert summary["failures"][0]["error"].startswith("cannot read image")
    assert (summary["done"], summary["failed"], summary["complete"]) == (2, 1, False)
    code, _, err = explain(str(tmp_path / "data"), "--no-figures", "--out", str(tmp_path / "t"))
    assert code == 1
    assert err.strip().splitlines()[-1].startswith("zf-attr: error: cannot read image")
    assert (tmp_path / "t" / "a.npz").is_file()  # finished before the failure: kept
    assert json.loads((tmp_path / "t" / "summary.json").read_text())["not_done"] == [
        str(tmp_path / "data" / name) for name in ("b.png", "c.png")
    ]
    code, _, _ = explain(str(tmp_path / "data" / "b.png"), "--skip-errors", "--out", str(tmp_path / "n"))
    assert code == 1  # nothing done
