"""FeatureMapDeconvnet's receptive-field-cropped projections: geometry, equality with whole images, the choice."""

from __future__ import annotations

import functools
from collections.abc import Callable

import pytest
import torch
import torchvision
from conftest import assert_bitwise_equal, assert_clean, snapshot
from torch import nn

import zf_attr.attr.cropped as cropped
from zf_attr import FeatureMapDeconvnet
from zf_attr.attr._layers import NotAChainError, capture_layer_output, children_chain
from zf_attr.attr.cropped import axis_crops, choose_crop, crop_area_fraction, crop_extent
from zf_attr.attr.receptive_field import ReceptiveField
from zf_attr.models import zfnet


@functools.cache
def _model(name: str) -> nn.Module:
    """The model in float64, eval mode (VGG-11 without its 120M-parameter classifier: the layers are early)."""
    torch.manual_seed(0)
    builders: dict[str, Callable[[], nn.Module]] = {
        "resnet18": torchvision.models.resnet18,
        "vgg11": lambda: torchvision.models.vgg11().features,
        "googlenet": lambda: torchvision.models.googlenet(init_weights=True, aux_logits=False),
        "zfnet": lambda: zfnet(variant="shapes", weights="DEFAULT"),
    }
    return builders[name]().double().eval()


def _images(count: int, size: int, seed: int = 1) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(count, 3, size, size, generator=generator, dtype=torch.float64)


def _border_seeds(model: nn.Module, layer: str, images: torch.Tensor) -> torch.Tensor:
    """Seeds ``(image, channel, row, col)`` on every border, corner and the middle of the layer's map.

    At each location the strongest channel (a non-zero projection) and a second one (the 10th strongest).
    """
    with torch.no_grad():
        activation, _ = capture_layer_output(model, model.get_submodule(layer), (images,), stop=True)
    height, width = activation.shape[-2:]
    rows = sorted({0, 1, height // 2, height - 2, height - 1})
    cols = sorted({0, 1, width // 2, width - 2, width - 1})
    seeds = []
    for image in range(len(images)):
        for row in rows:
            for col in cols:
                order = activation[image, :, row, col].argsort(descending=True)
                seeds += [[image, int(order[0]), row, col], [image, int(order[9]), row, col]]
    return torch.tensor(seeds)


def _worst_relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """Largest error of a projection relative to that projection's largest magnitude."""
    scale = expected.flatten(1).abs().amax(1).clamp_min(1e-300)
    return float(((actual - expected).flatten(1).abs().amax(1) / scale).max())


# --- 1. geometry ---------------------------------------------------------------------------------------------


def test_crop_geometry_by_hand() -> None:
    # ResNet-18 layer1's field along one axis: jump 4, pixels [4i - 21, 4i + 21]: S = 48 (43 + 3, rounded up to 4)
    assert crop_extent(4, -21, 21) == 48
    units = torch.tensor([10, 2, 0, 19, 20, 24])
    starts, sizes = axis_crops(units, 4, -21, 21, 102)
    # interior: 4*10 - 24 = 16; top/left border: starts at 0; bottom/right: [52, 102), 52 = largest multiple
    # of 4 <= 102 - 48 (unit 19's interior crop [52, 100) still fits inside the image)
    assert starts.tolist() == [16, 0, 0, 52, 52, 52]
    assert sizes.tolist() == [48, 48, 48, 48, 50, 50]
    for unit, start, size in zip(units.tolist(), starts.tolist(), sizes.tolist(), strict=True):
        assert start % 4 == 0 and start <= max(4 * unit - 21, 0) and min(4 * unit + 21, 101) < start + size <= 102
    # the field is larger than the image: no crop along that axis
    starts, sizes = axis_crops(units, 4, -21, 21, 40)
    assert starts.tolist() == [0] * 6 and sizes.tolist() == [40] * 6
    # ZFNet's conv2 (jump 8, pixels [8i - 1, 8i + 25]): S = 40; floor(-1 / 8) = -1, so crops start 8 before 8i
    starts, sizes = axis_crops(torch.tensor([5, 0, 9, 11]), 8, -1, 25, 112)
    assert starts.tolist() == [32, 0, 64, 72] and sizes.tolist() == [40, 40, 40, 40]
    # rows and columns are independent axes
    field = ReceptiveField((4, 8), (-21, -1), (21, 25))
    assert crop_area_fraction(field, (96, 112)) == pytest.approx(48 * 40 / (96 * 112))
    assert crop_area_fraction(ReceptiveField(is_global=True), (96, 112)) == 1.0


def test_choose_crop() -> None:
    field = ReceptiveField((4, 4), (-21, -21), (21, 21))
    assert choose_crop(None, field, "", (96, 96), False) is field  # 48² of 96²: a quarter
    assert choose_crop(None, field, "", (64, 64), False) is None  # 48² of 64²: over half
    assert choose_crop(True, field, "", (64, 64), False) is field
    assert choose_crop(None, field, "", (96, 96), True) is None  # additional_forward_args: not automatically
    assert choose_crop(False, field, "", (224, 224), False) is None
    assert choose_crop(None, None, "cannot trace", (224, 224), False) is None
    with pytest.raises(ValueError, match=r"crop=True.*cannot trace"):
        choose_crop(True, None, "cannot trace", (224, 224), False)
    with pytest.raises(ValueError, match=r"crop=True.*whole image"):
        choose_crop(True, ReceptiveField(is_global=True), "", (224, 224), False)
    with pytest.raises(TypeError, match="crop="):
        choose_crop("yes", field, "", (224, 224), False)  # type: ignore[arg-type]


# --- 2. cropped == whole images ------------------------------------------------------------------------------

CASES = [
    ("resnet18", "layer1", 96, 2),
    ("resnet18", "layer2", 96, 1),  # the field (112 px) is larger than the image: whole-image "crops"
    ("resnet18", "layer2", 160, 1),
    ("vgg11", "5", 64, 1),  # VGG-11's features.5: conv, ReLU, max-pool, conv, ReLU, max-pool
    ("googlenet", "maxpool2", 96, 2),
    ("googlenet", "inception3a", 96, 1),
    ("zfnet", "conv2", 112, 2),  # ZFNet's forward rejects crops: they run through its chain of children
    ("zfnet", "pool2", 112, 2),
]


@pytest.mark.parametrize(("name", "layer", "size", "count"), CASES, ids=[f"{c[0]}-{c[1]}-{c[2]}" for c in CASES])
def test_cropped_equals_whole_images(name: str, layer: str, size: int, count: int) -> None:
    model, images = _model(name), _images(count, size)
    before = snapshot(model)
    projector = FeatureMapDeconvnet(model, layer)
    seeds = _border_seeds(model, layer, images)
    cropped_out = projector.project_seeds(images, seeds, chunk_size=16, crop=True)
    assert projector.last_cropped is True
    whole = projector.project_seeds(images, seeds, crop=False)
    assert projector.last_cropped is False
    with torch.no_grad():
        activation, _ = capture_layer_output(model, model.get_submodule(layer), (images,), stop=True)
    active = activation[seeds[:, 0], seeds[:, 1], seeds[:, 2], seeds[:, 3]] > 0  # a seed <= 0 projects to zero
    strongest = whole.flatten(1).abs().amax(1)[::2]
    assert strongest[active[::2]].min() > 0  # the strongest channel's active seeds project to something
    assert not whole[~active].any()
    assert _worst_relative_error(cropped_out, whole) <= 1e-10
    # the projection vanishes outside the seed's receptive field (what makes cropping possible)
    field = projector.receptive_field((images,))
    boxes = field.boxes(seeds[:, 2:], (size, size))
    for projection, (x0, y0, x1, y1) in zip(cropped_out, boxes.tolist(), strict=True):
        inside = torch.zeros(size, size, dtype=torch.bool)
        inside[y0:y1, x0:x1] = True
        assert (projection * ~inside).abs().max() == 0
    # attribute(mode="topk") shares the path: same projections, locations and values as without cropping
    channels = [0, 3, 7]
    on_crops = projector.attribute(images, channels, mode="topk", k=3, crop=True)
    assert projector.last_cropped is True
    reference = projector.attribute(images, channels, mode="topk", k=3, crop=False)
    assert torch.equal(on_crops.locations, reference.locations)
    assert torch.equal(on_crops.activations, reference.activations)
    assert torch.equal(on_crops.boxes, reference.boxes)
    assert _worst_relative_error(on_crops.projections.flatten(0, 1), reference.projections.flatten(0, 1)) <= 1e-10
    assert_clean(model)
    assert_bitwise_equal(model, before)


def test_float32_and_small_chunks() -> None:
    model = torchvision.models.resnet18().eval()
    images = _images(2, 96).float()
    projector = FeatureMapDeconvnet(model, "layer1")
    seeds = _border_seeds(model, "layer1", images)
    whole = projector.project_seeds(images, seeds, crop=False)
    for chunk_size in (1, 7):
        on_crops = projector.project_seeds(images, seeds, chunk_size=chunk_size, crop=True)
        assert on_crops.dtype == torch.float32 and _worst_relative_error(on_crops, whole) < 1e-4


# --- 3. the automatic choice, refusals, fallbacks ------------------------------------------------------------


def test_automatic_choice() -> None:
    model, images = _model("resnet18"), _images(1, 96)
    seeds = torch.tensor([[0, 1, 0, 0], [0, 2, 3, 4]])
    shallow = FeatureMapDeconvnet(model, "layer1")  # 48² crop of a 96² image
    automatic = shallow.project_seeds(images, seeds)
    assert shallow.last_cropped is True
    assert torch.allclose(automatic, shallow.project_seeds(images, seeds, crop=False), rtol=0, atol=1e-12)
    shallow.attribute(images, [0, 1], mode="topk", k=2)
    assert shallow.last_cropped is True
    shallow.attribute(images, [0, 1], mode="map")
    assert shallow.last_cropped is False
    deep = FeatureMapDeconvnet(model, "layer3")  # the field covers the 96² image
    deep.project_seeds(images, seeds)
    assert deep.last_cropped is False
    deep.attribute(images, [0], mode="max")
    assert deep.last_cropped is False


def test_crop_true_refusals() -> None:
    model, images = _model("resnet18"), _images(1, 64)
    seeds = torch.tensor([[0, 1, 0, 0]])
    with pytest.raises(ValueError, match=r"crop=True.*whole image"):
        FeatureMapDeconvnet(model, "avgpool").project_seeds(images, seeds, crop=True)  # global field
    with pytest.raises(ValueError, match=r"crop=True.*mode"):
        FeatureMapDeconvnet(model, "layer1").attribute(images, [0], mode="map", crop=True)
    with pytest.raises(TypeError, match="crop="):
        FeatureMapDeconvnet(model, "layer1").project_seeds(images, seeds, crop="yes")  # type: ignore[arg-type]
    assert_clean(model)


def test_a_crop_that_disagrees_is_refused_or_falls_back(monkeypatch: pytest.MonkeyPatch) -> None:
    """Crops one stride too small cut into the cone: the check of each seed's value catches it."""
    model, images = _model("resnet18"), _images(1, 96)
    before = snapshot(model)
    projector = FeatureMapDeconvnet(model, "layer1")
    seeds = _border_seeds(model, "layer1", images)
    whole = projector.project_seeds(images, seeds, crop=False)
    monkeypatch.setattr(cropped, "crop_extent", lambda jump, lo, hi: -(-(hi - lo + jump) // jump) * jump - jump)
    with pytest.raises(ValueError, match=r"crop=True.*differs from the full forward"):
        projector.project_seeds(images, seeds, crop=True)
    automatic = projector.project_seeds(images, seeds)  # crop=None: whole images after all
    assert projector.last_cropped is False
    assert _worst_relative_error(automatic, whole) <= 1e-12
    assert_clean(model)
    assert_bitwise_equal(model, before)


class _SizeChecked(nn.Module):
    """A forward that rejects other sizes and is not a chain of its children (conv2 gets ``2 * relu(...)``)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.relu, self.conv2 = nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        torch._assert(x.shape[-1] == 40, "40×40 images only")
        return self.conv2(self.relu(self.conv1(x)) * 2)


def test_a_model_that_rejects_crops() -> None:
    model = _SizeChecked().double().eval()
    images = torch.randn(2, 2, 40, 40, dtype=torch.float64)
    seeds = torch.tensor([[0, 1, 0, 0], [1, 3, 20, 39]])
    projector = FeatureMapDeconvnet(model, "conv2")
    with pytest.raises(ValueError, match=r"crop=True.*rejects a 5×5 crop.*40×40 images only"):
        projector.project_seeds(images, seeds, crop=True)
    assert_clean(model)
    automatic = projector.project_seeds(images, seeds)
    assert projector.last_cropped is False
    assert torch.equal(automatic, projector.project_seeds(images, seeds, crop=False))
    assert_clean(model)


class _Scaled(nn.Module):
    """Takes a per-example scale as an additional forward argument."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(4, 5, 3))

    def forward(self, x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        return self.body(x * scale.view(-1, 1, 1, 1))


def test_additional_forward_args_are_gathered_per_crop() -> None:
    model = _Scaled().double().eval()
    images, scale = _images(3, 48), torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    projector = FeatureMapDeconvnet(model, "body.3")  # 22×22 map
    seeds = torch.tensor([[2, 0, 0, 0], [1, 4, 21, 21], [0, 2, 10, 3], [1, 1, 0, 21], [2, 3, 21, 0]])
    whole = projector.project_seeds(images, seeds, additional_forward_args=scale, crop=False)
    automatic = projector.project_seeds(images, seeds, additional_forward_args=scale)
    assert projector.last_cropped is False  # not automatically with additional_forward_args
    assert torch.equal(automatic, whole)
    on_crops = projector.project_seeds(images, seeds, additional_forward_args=(scale,), crop=True)
    assert projector.last_cropped is True
    assert _worst_relative_error(on_crops, whole) <= 1e-12
    assert_clean(model)


def test_children_chain_accepts_plain_chains_only() -> None:
    class Residual(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = nn.Conv2d(1, 1, 3, padding=1), nn.Conv2d(1, 1, 3, padding=1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.b(x) + self.a(x)  # a reads the input again, not b's output

    x = torch.zeros(1, 1, 6, 6)
    chain = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Sequential(nn.ReLU(), nn.Conv2d(2, 2, 1)), nn.Flatten())
    assert [name for name, _, _ in children_chain(chain, "1.1", (x,))] == ["0", "1"]
    with pytest.raises(NotAChainError, match="is not called") as never:
        children_chain(chain, "5", (x,))
    assert never.value.never_called
    residual = Residual()
    with pytest.raises(NotAChainError, match="the input of 'a' is not the output") as broken:
        children_chain(residual, "a", (x,))
    assert not broken.value.never_called
    assert_clean(chain)
    assert_clean(residual)
