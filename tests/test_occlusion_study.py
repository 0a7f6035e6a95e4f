"""The four-panel occlusion study: each panel checked against the model run on explicitly occluded images."""

from __future__ import annotations

from pathlib import Path
from unittest import mock

import pytest
import torch
import torch.nn.functional as F
import torchvision
from conftest import assert_bitwise_equal, assert_clean, snapshot
from test_functional_rectifiers import reference_relu

from zf_attr.analysis import occlusion_study
from zf_attr.models import zfnet
from zf_attr.models.shapes import ShapesDataset


@pytest.fixture(scope="module")
def shipped() -> tuple[torch.nn.Module, torch.Tensor, int]:
    model = zfnet(weights="DEFAULT").eval()
    image, label = ShapesDataset(4, seed=5)[3]
    return model, image, label


def layer_sum(model: torch.nn.Module, layer: torch.nn.Module, image: torch.Tensor, channel: int) -> float:
    captured = []
    handle = layer.register_forward_hook(lambda m, a, out: captured.append(out[0, channel].sum().item()))
    try:
        with torch.no_grad():
            model(image[None])
    finally:
        handle.remove()
    return captured[-1]


@pytest.mark.parametrize("position", [(0, 0), (3, 2), (6, 6)])
def test_panels_equal_the_model_on_the_occluded_image(shipped: tuple, position: tuple[int, int]) -> None:
    model, image, label = shipped
    study = occlusion_study(model, image, label, window=40, stride=12)
    assert study.layer == "pool5" and study.target_probability.shape == (7, 7)
    row, col = position
    occluded = image.clone()
    rows, cols = study.window_slices(row, col)
    occluded[:, rows, cols] = 0.0
    torch.testing.assert_close(study.occluded_image(row, col), occluded)
    with torch.no_grad():
        probabilities = model(occluded[None]).softmax(dim=1)[0]
    torch.testing.assert_close(study.target_probability[row, col], probabilities[label], atol=1e-5, rtol=1e-4)
    assert int(study.top_class[row, col]) == int(probabilities.argmax())
    expected_total = layer_sum(model, model.pool5, occluded, study.feature_map)
    assert study.map_activation[row, col].item() == pytest.approx(expected_total, rel=1e-4, abs=1e-4)
    # the feature map is the strongest one for the unoccluded image
    with torch.no_grad():
        pooled = image[None].clone()
        for name, layer in model.named_children():
            pooled = layer(pooled)
            if name == "pool5":
                break
    assert study.feature_map == int(pooled[0].flatten(1).amax(dim=1).argmax())


def test_projection_equals_an_independent_deconvnet(shipped: tuple) -> None:
    model, image, label = shipped
    study = occlusion_study(model, image, label, window=56, stride=56)
    leaf = image[None].clone().requires_grad_(True)
    x = leaf
    with mock.patch.object(F, "relu", reference_relu):  # every nn.ReLU of ZFNet calls F.relu
        for name, layer in model.named_children():
            x = layer(x)
            if name == "pool5":
                break
    seed = torch.zeros_like(x)
    seed[:, study.feature_map] = x[:, study.feature_map].detach()
    (expected,) = torch.autograd.grad(x, leaf, seed)
    torch.testing.assert_close(study.projection, expected[0], rtol=1e-4, atol=1e-6)


def test_batching_under_a_tiny_budget_changes_nothing(shipped: tuple) -> None:
    model, image, label = shipped
    default = occlusion_study(model, image, label, window=40, stride=24)
    one_by_one = occlusion_study(model, image, label, window=40, stride=24, memory_budget=1)
    for field in ("map_activation", "target_probability", "top_class"):
        torch.testing.assert_close(getattr(one_by_one, field), getattr(default, field))


def test_any_torchvision_classifier_and_default_layers() -> None:
    resnet = torchvision.models.resnet18(weights=None, num_classes=5).eval()
    study = occlusion_study(resnet, torch.randn(3, 48, 48), 2, window=16, stride=16)
    assert study.layer == "layer4" and study.target_probability.shape == (3, 3)
    vgg = torchvision.models.vgg11(weights=None, num_classes=5).eval()
    assert occlusion_study(vgg, torch.randn(3, 64, 64), 0, window=32, stride=32).layer == "features"
    named = occlusion_study(resnet, torch.randn(3, 48, 48), 2, layer="layer3", window=24, stride=24)
    assert named.layer == "layer3" and named.projection.shape == (3, 48, 48)


def test_figure_is_written(shipped: tuple, tmp_path: Path) -> None:
    model, image, label = shipped
    study = occlusion_study(model, image, label, window=40, stride=12, class_names=model.weights_info.categories)
    path = study.save_figure(tmp_path / "study.png", mean=model.weights_info.mean, std=model.weights_info.std)
    matplotlib_image = pytest.importorskip("matplotlib.image")
    pixels = matplotlib_image.imread(path)
    assert pixels.shape[1] > 1500 and float(pixels[..., :3].std()) > 0.05


@pytest.mark.parametrize(
    ("kwargs", "error", "pattern"),
    [
        ({"layer": "conv6"}, ValueError, r"layer='conv6' is not a layer of the model; did you mean \["),
        ({"window": 200}, ValueError, r"window=200 must be between 1 and the image side 112"),
        ({"stride": 0}, ValueError, r"stride=0 must be between 1 and window"),
        ({"stride": 40, "window": 20}, ValueError, r"stride=40 must be between 1 and window=20"),
        ({"target": 6}, ValueError, r"target=6 is out of range for 6 classes"),
        ({"layer": "fc6"}, ValueError, r"choose a conv layer"),
    ],
)
def test_bad_input(shipped: tuple, kwargs: dict, error: type, pattern: str) -> None:
    model, image, label = shipped
    arguments = {"target": label, **kwargs}
    target = arguments.pop("target")
    with pytest.raises(error, match=pattern):
        occlusion_study(model, image, target, **arguments)
    with pytest.raises(ValueError, match="pass one image"):
        occlusion_study(model, torch.stack([image, image]), label)
    with pytest.raises(TypeError, match="floating-point"):
        occlusion_study(model, (image * 255).to(torch.uint8), label)
    assert_clean(model)


def test_interrupted_sweep_leaves_the_model_untouched(shipped: tuple) -> None:
    model, image, label = shipped
    before = snapshot(model)
    calls = {"n": 0}
    original = model.conv3.forward

    def fail_on_third_call(x: torch.Tensor) -> torch.Tensor:
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("interrupted")
        return original(x)

    with mock.patch.object(model.conv3, "forward", side_effect=fail_on_third_call):
        with pytest.raises(RuntimeError, match="interrupted"):
            occlusion_study(model, image, label, window=40, stride=8, memory_budget=1)
    assert calls["n"] == 3
    assert_clean(model)
    assert model.training is False
    assert_bitwise_equal(model, before)
