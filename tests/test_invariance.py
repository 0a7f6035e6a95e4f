"""The invariance study (paper Fig. 5): known answers, the toy invariant model, bad input."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image
from torch import nn

from zf_attr.analysis import invariance_study
from zf_attr.analysis.invariance import default_sweeps, transform_images


def toy_model() -> nn.Module:
    """Global average pooling of a 1×1 conv: translation-invariant for content that stays inside the image."""
    torch.manual_seed(0)
    return (
        nn.Sequential(nn.Conv2d(3, 4, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))
        .double()
        .eval()
    )


def centred_images(count: int = 3, size: int = 16, margin: int = 5) -> torch.Tensor:
    images = torch.zeros(count, 3, size, size, dtype=torch.float64)
    inner = size - 2 * margin
    generator = torch.Generator().manual_seed(1)
    images[..., margin:-margin, margin:-margin] = torch.rand(count, 3, inner, inner, generator=generator).double()
    return images


def test_identity_gives_distance_zero_and_the_unmodified_probability() -> None:
    model, images = toy_model(), centred_images()
    study = invariance_study(model, images, [0, 1, 2], layers=["0", "4"])
    expected = model(images).softmax(dim=1)[torch.arange(3), torch.tensor([0, 1, 2])]
    for name, values in study.sweeps.items():
        identity = int((values == {"scale": 1.0}.get(name, 0.0)).nonzero())
        for layer in study.layers:
            assert torch.equal(study.distances[name][layer][:, identity], torch.zeros(3, dtype=torch.float64))
        torch.testing.assert_close(study.probabilities[name][:, identity], expected)
    assert set(study.sweeps) == {"vertical", "horizontal", "scale", "rotation"}
    assert study.rectifiers == {"0": "relu", "4": None}


def test_a_translation_invariant_model_gives_flat_translation_curves() -> None:
    model, images = toy_model(), centred_images()
    shifts = list(range(-4, 5))
    study = invariance_study(model, images, None, sweeps={"vertical": shifts, "horizontal": shifts}, layers=["2", "0"])
    for name in ("vertical", "horizontal"):
        assert study.distances[name]["2"].abs().max() < 1e-12  # the pooled features do not move
        assert study.distances[name]["0"][:, 0].min() > 0  # the conv map itself moves with the image
        probabilities = study.probabilities[name]
        torch.testing.assert_close(probabilities, probabilities[:, :1].expand_as(probabilities))
    with torch.no_grad():
        assert study.targets.tolist() == model(images).argmax(dim=1).tolist()  # targets=None: the prediction


def test_default_sweeps_follow_the_paper_and_hold_their_identity() -> None:
    sweeps = default_sweeps(224)
    assert sweeps["vertical"][0] == -60 and sweeps["vertical"][-1] == 60 and 0 in sweeps["vertical"]
    assert sweeps["scale"][0] == 1.0 and sweeps["scale"][-1] == pytest.approx(1.8)
    assert sweeps["rotation"][0] == 0 and sweeps["rotation"][-1] == 360
    assert default_sweeps(112)["horizontal"][-1] == 30
    study = invariance_study(toy_model(), centred_images(1), 0, sweeps={"scale": [1.5, 1.2]}, layers=["2"])
    assert study.sweeps["scale"].tolist() == [1.0, 1.2, 1.5]  # sorted, identity added


def test_transforms_move_content_as_named() -> None:
    image = torch.zeros(1, 1, 9, 9)
    image[0, 0, 2, 4] = 1.0  # above the centre
    assert transform_images(image, "vertical", 3)[0, 0, 5, 4] == 1.0
    assert transform_images(image, "horizontal", -2)[0, 0, 2, 2] == 1.0
    turned = transform_images(image, "rotation", 90)  # counter-clockwise: the point goes left of the centre
    assert turned[0, 0, 4, 2] == pytest.approx(1.0, abs=1e-5)
    zoomed = transform_images(image, "scale", 2.0, fill=0.5)
    assert zoomed[0, 0, 0, 4] > 0.5 and zoomed[0, 0, 4, 4] == pytest.approx(0.0)
    assert transform_images(image, "rotation", 360) is image and transform_images(image, "scale", 1) is image
    assert torch.equal(transform_images(image, "vertical", 20), torch.zeros_like(image))


def test_outputs_json_csv_and_figure(tmp_path) -> None:
    study = invariance_study(toy_model(), centred_images(2), [0, 1], sweeps={"rotation": [0, 90, 180]},
                             layers=["0", "2"], class_names=["a", "b", "c"])  # fmt: skip
    payload = json.loads(json.dumps(study.to_dict()))
    assert payload["units"] == {"rotation": "degrees"} and len(payload["distances"]["rotation"]["0"]) == 2
    rows = study.to_csv(tmp_path / "invariance.csv").splitlines()
    assert rows[0] == "transform,value,unit,image,target,distance_0,distance_2,p_target" and len(rows) == 1 + 3 * 2
    path = study.save_figure(tmp_path / "invariance.png")
    with Image.open(path) as image:
        assert image.size[0] > 600


@pytest.mark.parametrize(
    ("arguments", "error", "named"),
    [
        ({"images": torch.zeros(3, 16)}, ValueError, "images"),
        ({"images": torch.zeros(1, 3, 16, 16, dtype=torch.long)}, TypeError, "images"),
        ({"images": [[0.0]]}, TypeError, "images"),
        ({"sweeps": {"vertical": []}}, ValueError, "sweeps"),
        ({"sweeps": {"shear": [1]}}, ValueError, "sweeps"),
        ({"sweeps": {"scale": [0.0, 1.0]}}, ValueError, "sweeps"),
        ({"layers": ["nope"]}, ValueError, "layers"),
        ({"layers": []}, ValueError, "layers"),
        ({"targets": [0]}, ValueError, "targets"),
        ({"targets": [0, 7]}, ValueError, "targets"),
    ],
)
def test_bad_input_is_refused_naming_the_argument(arguments: dict, error: type, named: str) -> None:
    call = {"images": centred_images(2), "targets": [0, 1], "sweeps": {"vertical": [0, 2]}, "layers": ["2"]}
    call.update(arguments)
    with pytest.raises(error, match=named):
        invariance_study(toy_model(), call.pop("images"), call.pop("targets"), **call)


def test_the_command_writes_figure_json_and_csv(tmp_path, capsys) -> None:
    from zf_attr.cli import main

    out = tmp_path / "out"
    code = main(["invariance", "--shapes", "2", "--transforms", "rotation", "--sweep", "rotation=0,90", "--out",
                 str(out), "--quiet"])  # fmt: skip
    assert code == 0
    assert sorted(path.name for path in out.iterdir()) == [
        "invariance.csv", "invariance.json", "invariance.png", "report.html"
    ]  # fmt: skip
    payload = json.loads((out / "invariance.json").read_text())
    assert payload["sweeps"] == {"rotation": [0.0, 90.0]} and payload["layers"] == ["conv1", "fc7"]
    assert payload["distances"]["rotation"]["fc7"][0][0] == 0.0
    assert main(["invariance", "--shapes", "1", "--layers", "conv9", "--out", str(out), "--quiet"]) == 1
    assert "layers" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["invariance", "--sweep", "rotation", "--out", str(out)])
