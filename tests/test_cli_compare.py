"""``zf-attr compare`` as a subprocess: the generated data set with masks, and image files with a mask folder."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import zf_attr_cli, zf_attr_main

from zf_attr.analysis.tables import parse_markdown, read_csv
from zf_attr.models.shapes import ShapesDataset


def test_compare_shapes_writes_figure_tables_values_and_report(tmp_path: Path) -> None:
    out = tmp_path / "cmp"
    result = zf_attr_cli("compare", "--shapes", "3", "--method", "deconvnet", "gradcam", "--steps", "4",
                         "--device", "cpu", "--out", str(out))  # fmt: skip
    assert result.returncode == 0, result.stderr
    names = ["comparison.png", "comparison.csv", "comparison.md", "comparison.tex", "maps.npz", "comparison.json"]
    assert result.stdout.splitlines()[:7] == [str(out / name) for name in [*names, "report.html"]]
    table = read_csv(out / "comparison.csv")
    assert table.methods == ("deconvnet", "gradcam", "centre", "random")
    assert set(table.metrics) == {"pointing", "deletion", "insertion", "class_sensitivity"}
    markdown = parse_markdown((out / "comparison.md").read_text())
    for method in table.methods:  # the Markdown table shows 3 decimals of the same numbers
        expected = [table.mean[method][metric] for metric in table.metrics]
        shown = [markdown.mean[method][metric] for metric in table.metrics]
        np.testing.assert_allclose(shown, expected, atol=5e-4)
    summary = json.loads((out / "comparison.json").read_text())
    labels = [ShapesDataset(3, seed=2).sample(i).class_name for i in range(3)]
    assert [image["target"] for image in summary["images"]] == labels  # true labels of the test split
    pointing = summary["values"]["pointing"]["deconvnet"]
    assert np.mean(pointing) == pytest.approx(table.mean["deconvnet"]["pointing"])
    maps = np.load(out / "maps.npz")
    assert maps["gradcam"].shape[0] == 3 and maps["gradcam"].shape[-2:] == (112, 112)
    assert "base64," in (out / "report.html").read_text()


def test_compare_image_files_with_masks(shape_image_files: Path, tmp_path: Path) -> None:
    out = tmp_path / "files"
    result = zf_attr_cli("compare", str(shape_image_files), "--masks", str(shape_image_files / "masks"),
                         "--method", "gradient", "--baselines", "centre", "--steps", "4", "--device", "cpu",
                         "--out", str(out), "--quiet")  # fmt: skip
    assert result.returncode == 0, result.stderr
    summary = json.loads((out / "comparison.json").read_text())
    assert [image["name"] for image in summary["images"]] == ["shape0.png", "shape1.png", "shape2.png"]
    assert summary["methods"] == ["gradient", "centre"] and "pointing" in summary["metrics"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "zf-attr: error: give either image files (IMAGES) or --shapes N"),
        (["--shapes", "2", "--model", "resnet18"], "zf-attr: error: --shapes needs the bundled ZFNet"),
        (["{images}", "--masks", "{images}/nothing"], "zf-attr: error: --masks '{images}/nothing' is not a folder"),
        (
            ["--shapes", "2", "--method", "gradcam", "--layer", "conv9"],
            "zf-attr: error: --layer: layer='conv9' is not a layer of the model; did you mean ['conv5'",
        ),
        (["--shapes", "2", "--method", "deconvnet", "--layer", "relu9"], "zf-attr: error: --layer: layer='relu9'"),
    ],
)
def test_compare_bad_arguments(shape_image_files: Path, tmp_path: Path, args: list[str], message: str) -> None:
    args = [arg.replace("{images}", str(shape_image_files)) for arg in args]
    message = message.replace("{images}", str(shape_image_files))
    result = zf_attr_main("compare", *args, "--device", "cpu", "--out", str(tmp_path / "out"))
    assert result.returncode == 1
    assert result.stderr.startswith(message) and len(result.stderr.strip().splitlines()) == 1


def test_compare_missing_mask_names_the_file(shape_image_files: Path, tmp_path: Path) -> None:
    masks = tmp_path / "masks"
    masks.mkdir()
    result = zf_attr_cli("compare", str(shape_image_files / "shape0.png"), "--masks", str(masks),
                         "--device", "cpu", "--out", str(tmp_path / "out"))  # fmt: skip
    assert result.returncode == 1
    assert result.stderr.startswith("zf-attr: error: --masks: no mask 'shape0.png'")


def test_compare_under_torchrun_says_it_runs_in_one_process(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from zf_attr.cli import main

    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main(["compare", "--shapes", "2"]) == 1
    assert capsys.readouterr().err.startswith("zf-attr: error: compare runs in one process")
