"""NeuronDeconvnet (Captum's NeuronDeconvolution, made right) and FeatureMapDeconvnet (the Zeiler–Fergus projection)."""

from __future__ import annotations

import functools

import pytest
import torch
import torchvision
from captum.attr import NeuronDeconvolution, NeuronGradient
from conftest import assert_clean, quiet, relative_error

from zf_attr import FeatureMapDeconvnet, NeuronDeconvnet
from zf_attr.analysis import project_feature_map
from zf_attr.attr._layers import capture_layer_output
from zf_attr.attr.receptive_field import ReceptiveFieldError, receptive_field
from zf_attr.models import zfnet


@functools.cache
def _model(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    if name == "vgg11":
        return torchvision.models.vgg11().double().eval()
    if name == "resnet18":
        return torchvision.models.resnet18().double().eval()
    if name == "googlenet":
        return torchvision.models.googlenet(weights=None, aux_logits=False, init_weights=True).eval()
    if name == "zfnet":  # the paper's layer geometry at the small "shapes" widths, 112×112 inputs
        model = zfnet(variant="shapes", num_classes=6)
        model.reset_parameters("kaiming")  # the paper's N(0, 1e-2) init leaves most deep units at 0
        return model.double().eval()
    raise KeyError(name)


def _images(n: int = 2, size: int = 32) -> torch.Tensor:
    return torch.randn(n, 3, size, size, dtype=torch.float64)


SELECTORS = [
    (3, 1, 2),
    (4, slice(0, 2), slice(None)),
    (slice(2, 5), 0, slice(1, 3)),
    lambda output: output[:, 2:5].sum(dim=(1, 2, 3)),
]


@pytest.mark.parametrize(("name", "layer"), [("vgg11", "features.10"), ("resnet18", "layer2")])
@pytest.mark.parametrize("to_input", [False, True])
@pytest.mark.parametrize("selector", SELECTORS, ids=["ints", "slices", "mixed", "callable"])
def test_neuron_equals_captum_where_captum_is_right(name: str, layer: str, to_input: bool, selector: object) -> None:
    model, images = _model(name), _images()
    ours = NeuronDeconvnet(model, layer).attribute(images, selector, attribute_to_neuron_input=to_input)
    with quiet():
        captum = NeuronDeconvolution(model, model.get_submodule(layer)).attribute(
            images, selector, attribute_to_neuron_input=to_input
        )
    assert captum.abs().max() > 0
    assert relative_error(ours, captum) < 1e-10
    assert_clean(model)


def test_neuron_tuple_inputs_and_module_layer() -> None:
    model, images = _model("vgg11"), _images(1)
    neuron = NeuronDeconvnet(model, model.features[10])
    (attribution,) = neuron.attribute((images,), (2, 1, 1))
    assert torch.equal(attribution, neuron.attribute(images, (2, 1, 1)))
    assert neuron.attribute.__wrapped__ is not None


def test_neuron_on_googlenet_rectifies_functional_relus() -> None:
    model, images = _model("googlenet"), _images(1, 64).float()
    layer, selector = "inception3a", (7, 3, 3)
    ours = NeuronDeconvnet(model, layer).attribute(images, selector)
    with quiet():
        captum = NeuronDeconvolution(model, model.inception3a).attribute(images, selector)
        gradient = NeuronGradient(model, model.inception3a).attribute(images, selector)
    assert relative_error(captum, gradient) < 1e-6  # Captum misses every F.relu: it is the plain gradient
    assert relative_error(ours, captum) > 1e-2
    assert_clean(model)


@pytest.mark.parametrize(("name", "layer"), [("vgg11", "features.10"), ("resnet18", "layer2")])
def test_one_location_is_the_neuron_seeded_with_its_activation(name: str, layer: str) -> None:
    model, images = _model(name), _images()
    result = FeatureMapDeconvnet(model, layer).attribute(images, [1, 6], mode="topk", k=2)
    neuron = NeuronDeconvnet(model, layer)
    for n in range(2):
        for m in range(4):
            row, col = result.locations[n, m].tolist()
            expected = neuron.attribute(images[n : n + 1], (int(result.channels[m]), row, col))[0]
            assert relative_error(result.projections[n, m], expected * result.activations[n, m]) < 1e-10
    assert_clean(model)


def test_batched_equals_one_by_one() -> None:
    model, images = _model("resnet18"), _images(3, 32)
    projector = FeatureMapDeconvnet(model, "layer2")
    together = projector.attribute(images, [0, 9, 17], mode="topk", k=3, chunk_size=4)
    loop = projector.attribute(images, [0, 9, 17], mode="topk", k=3, vectorize=False)
    assert relative_error(together.projections, loop.projections) < 1e-12
    for i, channel in enumerate([0, 9, 17]):
        single = projector.attribute(images[1:2], channel, mode="topk", k=3)
        assert torch.equal(single.locations[0], together.locations[1, 3 * i : 3 * i + 3])
        assert relative_error(single.projections[0], together.projections[1, 3 * i : 3 * i + 3]) < 1e-12


def test_max_mode_is_the_strongest_activation_and_map_mode_is_project_feature_map() -> None:
    model, images = _model("vgg11"), _images()
    projector = FeatureMapDeconvnet(model, "features.10")
    result = projector.attribute(images, [3, 4])
    assert result.projections.shape == (2, 2, 3, 32, 32) and result.mode == "max"
    activation = model.features[:11](images)
    assert torch.equal(result.activations, activation[:, [3, 4]].flatten(2).amax(-1))
    whole = projector.attribute(images, [3, 4], mode="map")
    assert whole.boxes is None
    for m, channel in enumerate([3, 4]):
        expected = project_feature_map(model, images, model.features[10], channel)
        assert relative_error(whole.projections[:, m], expected) < 1e-12


def _outside_box_perturbation_changes_nothing(model: torch.nn.Module, layer: str, images: torch.Tensor) -> None:
    images = images.to(next(model.parameters()).dtype)
    atol = 1e-9 if images.dtype == torch.float64 else 1e-5
    module = model.get_submodule(layer)
    activation, _ = capture_layer_output(model, module, (images,), stop=True)
    liveliest = activation.amax(dim=(0, 2, 3)).topk(3).indices.tolist()  # maps with positive activations
    result = FeatureMapDeconvnet(model, layer).attribute(images, liveliest, mode="topk", k=2)
    height, width = images.shape[-2:]
    assert result.boxes is not None
    areas = (result.boxes[..., 2] - result.boxes[..., 0]) * (result.boxes[..., 3] - result.boxes[..., 1])
    assert (areas < height * width).all()  # not trivially the whole image
    for n in range(images.shape[0]):
        for m in range(result.channels.shape[0]):
            x0, y0, x1, y1 = result.boxes[n, m].tolist()
            perturbed = images[n : n + 1] + 10 * torch.randn_like(images[n : n + 1])
            perturbed[..., y0:y1, x0:x1] = images[n, :, y0:y1, x0:x1]
            row, col = result.locations[n, m].tolist()
            activation, _ = capture_layer_output(model, module, (perturbed,), stop=True)
            assert torch.allclose(activation[0, result.channels[m], row, col], result.activations[n, m], atol=atol)
            inside = perturbed.clone()
            inside[..., y0:y1, x0:x1] += 10 * torch.randn_like(inside[..., y0:y1, x0:x1])
            moved, _ = capture_layer_output(model, module, (inside,), stop=True)
            assert not torch.allclose(moved[0, result.channels[m], row, col], result.activations[n, m], atol=atol)


@pytest.mark.parametrize(
    ("name", "layer", "size"),
    [
        ("vgg11", "features.5", 48),
        ("resnet18", "layer1", 64),
        ("googlenet", "maxpool2", 64),  # branches: Inception modules come later, see the next test
        ("zfnet", "conv2", 112),
        ("zfnet", "pool2", 112),
    ],
)
def test_boxes_hold_everything_the_activation_depends_on(name: str, layer: str, size: int) -> None:
    with torch.no_grad():
        _outside_box_perturbation_changes_nothing(_model(name), layer, _images(1, size))


def test_googlenet_branches_functional_relus_and_vmap() -> None:
    model, images = _model("googlenet"), _images(2, 64).float()
    projector = FeatureMapDeconvnet(model, "inception3a")
    together = projector.attribute(images, [0, 100, 200], mode="topk", k=2)  # 1×1, 3×3 and 5×5 branches
    loop = projector.attribute(images, [0, 100, 200], mode="topk", k=2, vectorize=False)
    assert relative_error(together.projections, loop.projections) < 1e-5
    assert projector.receptive_field().size == (43, 43)
    with torch.no_grad():
        _outside_box_perturbation_changes_nothing(model, "inception3a", _images(1, 96))
    assert_clean(model)


def test_receptive_field_arithmetic_and_limits() -> None:
    field = receptive_field(_model("resnet18"), "layer2")
    assert field.jump == (8, 8) and field.size == (99, 99)  # ResNet-18's layer2 sees 99×99 pixels
    assert receptive_field(_model("vgg11"), "avgpool").is_global  # adaptive pooling mixes every position

    class Wrapped(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 4, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.nn.functional.interpolate(self.conv(x), scale_factor=2.0)

    with pytest.raises(ReceptiveFieldError, match="interpolate"):
        receptive_field(torch.nn.Sequential(Wrapped(), torch.nn.Conv2d(4, 4, 3)), "1")


@pytest.mark.parametrize(
    ("kwargs", "error", "pattern"),
    [
        ({"channels": [0, 512]}, ValueError, "channels holds 512, out of range"),
        ({"channels": []}, ValueError, "channels is empty"),
        ({"channels": 1.5}, TypeError, "channels"),
        ({"channels": 0, "mode": "topk", "k": 0}, ValueError, "k=0"),
        ({"channels": 0, "k": 2}, ValueError, "k=2 applies to mode='topk'"),
        ({"channels": 0, "mode": "mean"}, ValueError, "mode='mean'"),
        ({"channels": 0, "mode": "topk", "k": 10_000}, ValueError, "k=10000 exceeds"),
    ],
)
def test_feature_map_bad_input(kwargs: dict, error: type, pattern: str) -> None:
    model = _model("vgg11")
    with pytest.raises(error, match=pattern):
        FeatureMapDeconvnet(model, "features.10").attribute(_images(1), **kwargs)
    assert_clean(model)


def test_bad_layers_and_selectors() -> None:
    model, images = _model("resnet18"), _images(1)
    with pytest.raises(ValueError, match=r"layer='layr3'.*did you mean.*'layer3'"):
        FeatureMapDeconvnet(model, "layr3")
    with pytest.raises(ValueError, match="did you mean"):
        NeuronDeconvnet(model, "layer3.0.conv")
    with pytest.raises(ValueError, match="variant="):
        FeatureMapDeconvnet(model, "layer3", variant="paper")
    with pytest.raises(ValueError, match="needs a feature map"):
        FeatureMapDeconvnet(model, "fc").attribute(images, 0)
    with pytest.raises(TypeError, match="no tuples"):
        FeatureMapDeconvnet(model, "layer1").attribute((images,), 0)
    neuron = NeuronDeconvnet(model, "layer1")
    with pytest.raises(ValueError, match="out of range"):
        neuron.attribute(images, (64, 0, 0))
    with pytest.raises(ValueError, match="3 non-batch dimensions"):
        neuron.attribute(images, (1, 0))
    with pytest.raises(TypeError, match="neuron_selector"):
        neuron.attribute(images, "all")
    with pytest.raises(ValueError, match="one value per example"):
        neuron.attribute(images.repeat(2, 1, 1, 1), lambda output: output[:, :2, 0, 0])
    assert_clean(model)


def test_inputs_untouched_and_no_hooks_left() -> None:
    model = _model("resnet18")
    images = _images(1)
    before = images.clone()
    FeatureMapDeconvnet(model, "layer1").attribute(images, 2, mode="topk", k=2)
    NeuronDeconvnet(model, "layer1").attribute(images, (2, 0, 0))
    assert torch.equal(images, before) and not images.requires_grad and images.grad is None
    assert_clean(model)
