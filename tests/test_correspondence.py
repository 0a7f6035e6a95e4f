"""The correspondence study (paper §4.3, Table 1): known answers, parts of the generated shapes, bad input."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image
from torch import nn

from zf_attr.analysis import correspondence_study
from zf_attr.analysis.correspondence import random_regions, shapes_parts, sign_hamming
from zf_attr.analysis.tables import parse_latex, parse_markdown, read_csv
from zf_attr.models.shapes import ShapesDataset


def small_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(4 * 8 * 8, 16), nn.ReLU(),
        nn.Linear(16, 3),
    ).eval()  # fmt: skip


def boxes(count: int, box: list[int]) -> torch.Tensor:
    return torch.tensor([box] * count)


def test_identical_images_with_the_same_part_occluded_give_zero() -> None:
    images = torch.randn(1, 3, 16, 16).expand(4, -1, -1, -1).clone()
    study = correspondence_study(small_model(), images, {"corner": boxes(4, [2, 2, 7, 7])}, layers=["2", "5"])
    for layer in ("2", "5"):
        assert study.delta["corner"][layer] == (0.0, 0.0)
        assert not study.pairwise["corner"][layer].any()
    assert study.layers == ["2", "5"] and study.rectifiers == {"2": None, "5": None}
    assert study.lengths == {"2": 256, "5": 16}


def test_independent_random_signs_give_one_half() -> None:
    differences = torch.randn(6, 40_000, generator=torch.Generator().manual_seed(0))
    counts = sign_hamming(differences)
    upper = torch.triu_indices(6, 6, offset=1)
    normalised = counts[upper[0], upper[1]] / differences.shape[1]
    assert torch.allclose(normalised, torch.full_like(normalised, 0.5), atol=0.01)
    assert torch.equal(counts, counts.T) and not counts.diagonal().any()


def test_the_two_normalisations_agree() -> None:
    images = torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    parts = {"a": boxes(4, [0, 0, 6, 6]), "b": boxes(4, [8, 8, 14, 16])}
    paper = correspondence_study(small_model(), images, parts, layers=["2"], random_draws=3)
    summed = correspondence_study(small_model(), images, parts, layers=["2"], random_draws=3, normalization="sum")
    for part in parts:
        raw = paper.pairwise[part]["2"]
        assert summed.delta[part]["2"][0] == pytest.approx(float(raw.sum()))  # Σ over ordered pairs i ≠ j
        assert paper.delta[part]["2"][0] == pytest.approx(float(raw.sum()) / (4 * 3) / 256)
        assert summed.delta[part]["2"][1] != summed.delta[part]["2"][1]  # one value: no spread (NaN)
    assert torch.equal(paper.random_pairwise["2"], summed.random_pairwise["2"])  # same seed, same draws
    assert paper.random_pairwise["2"].shape == (3, 4, 4)


def test_random_regions_keep_size_and_stay_inside() -> None:
    masks = torch.zeros(5, 20, 20, dtype=torch.bool)
    masks[:, 3:9, 10:14] = True
    moved = random_regions(masks, torch.Generator().manual_seed(0))
    assert moved.flatten(1).sum(1).tolist() == [24] * 5
    assert not torch.equal(moved, masks)


def test_parts_of_the_generated_shapes_and_the_tables() -> None:
    data = ShapesDataset(12, seed=2)
    indices = [i for i in range(12) if data.sample(i).class_name == "square"][:2]
    images = torch.stack([data[i][0] for i in indices])
    masks = torch.stack([data.sample(i).mask for i in indices])
    parts = shapes_parts(masks)
    assert set(parts) == {"centre", "top", "left", "right"}
    for box in torch.cat(list(parts.values())).tolist():
        assert 0 <= box[0] < box[2] <= 112 and 0 <= box[1] < box[3] <= 112 and box[2] - box[0] == 14
    x0, y0, x1, y1 = parts["centre"][0].tolist()
    assert masks[0, y0:y1, x0:x1].float().mean() > 0.5  # the centre of a square lies on the square
    study = correspondence_study(small_model_112(), images, parts, layers=["0"], random_draws=2)
    markdown = study.to_markdown()
    assert markdown.splitlines()[0] == "| part | 0 |" and markdown.count("\n") == 6  # 4 parts + random
    assert parse_markdown(markdown).mean["random"]["0"] == pytest.approx(study.random["0"][0], abs=5e-4)
    assert parse_latex(study.to_latex()).methods == ("centre", "top", "left", "right", "random")
    assert read_csv(study.to_csv()).mean["centre"]["0"] == study.delta["centre"]["0"][0]
    assert json.loads(json.dumps(study.to_dict()))["normalization"] == "paper"


def small_model_112() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 2, 8, stride=8), nn.ReLU(), nn.Flatten(), nn.Linear(2 * 14 * 14, 3)).eval()


@pytest.mark.parametrize(
    ("arguments", "error", "named"),
    [
        ({"part_masks": {"a": torch.ones(3, 8, 8, dtype=torch.bool)}}, ValueError, "part_masks"),
        ({"part_masks": {"a": boxes(3, [0, 0, 20, 4])}}, ValueError, "part_masks"),
        ({"part_masks": {"a": torch.zeros(3, 16, 16, dtype=torch.bool)}}, ValueError, "part_masks"),
        ({"part_masks": {"random": boxes(3, [0, 0, 4, 4])}}, ValueError, "part_masks"),
        ({"part_masks": {}}, TypeError, "part_masks"),
        ({"images": torch.randn(1, 3, 16, 16), "part_masks": {"a": boxes(1, [0, 0, 4, 4])}}, ValueError, "images"),
        ({"images": torch.zeros(3, 16, 16, dtype=torch.uint8)}, TypeError, "images"),
        ({"layers": ["conv9"]}, ValueError, "layers"),
        ({"normalization": "mean"}, ValueError, "normalization"),
        ({"random_draws": 0}, ValueError, "random_draws"),
    ],
)
def test_bad_input_is_refused_naming_the_argument(arguments: dict, error: type, named: str) -> None:
    call = {"images": torch.randn(3, 3, 16, 16), "part_masks": {"a": boxes(3, [0, 0, 4, 4])}, "layers": ["2"]}
    call.update(arguments)
    with pytest.raises(error, match=named):
        correspondence_study(small_model(), call.pop("images"), call.pop("part_masks"), **call)


def test_the_command_on_generated_shapes_and_on_files(tmp_path, capsys) -> None:
    from zf_attr.cli import main

    out = tmp_path / "shapes"
    assert main(["correspondence", "--count", "2", "--random-draws", "2", "--out", str(out), "--quiet"]) == 0
    assert {path.suffix for path in out.iterdir()} == {".md", ".tex", ".csv", ".json", ".png", ".html"}
    assert parse_markdown((out / "correspondence.md").read_text()).methods[-1] == "random"
    data = ShapesDataset(2, seed=2, normalize=False)
    for i in range(2):
        array = (data.sample(i).image.permute(1, 2, 0).numpy() * 255).round().astype("uint8")
        Image.fromarray(array).save(tmp_path / f"image{i}.png")
    parts = tmp_path / "parts.json"
    parts.write_text(json.dumps({"corner": [[0, 0, 20, 20], [4, 4, 24, 24]]}))
    files = [str(tmp_path / "image0.png"), str(tmp_path / "image1.png")]
    out = tmp_path / "files"
    assert (
        main(["correspondence", *files, "--parts", str(parts), "--random-draws", "2", "--out", str(out), "--quiet"])
        == 0
    )
    assert json.loads((out / "correspondence.json").read_text())["images"] == files
    assert main(["correspondence", *files, "--out", str(out), "--quiet"]) == 1
    assert "--parts" in capsys.readouterr().err
