"""zf_attr attributions honour Captum's contract and run inside Captum's wrappers, metrics and plots."""

from __future__ import annotations

import matplotlib
import pytest
import torch
import torch.nn.functional as F
import torchvision
from captum.attr import NoiseTunnel
from captum.attr import visualization as viz
from captum.metrics import infidelity, sensitivity_max
from torch import nn

from zf_attr import Deconvnet, GuidedBackprop

matplotlib.use("Agg")


@pytest.fixture(scope="module")
def model() -> nn.Module:
    torch.manual_seed(0)
    return torchvision.models.resnet18(weights=None, num_classes=6).eval().double()


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    torch.manual_seed(1)
    return torch.randn(3, 3, 32, 32, dtype=torch.float64)


def one_by_one(model: nn.Module, images: torch.Tensor, targets: list) -> torch.Tensor:
    return torch.cat([Deconvnet(model).attribute(images[i : i + 1], target=t) for i, t in enumerate(targets)])


def test_basic_properties(model: nn.Module) -> None:
    method = Deconvnet(model)
    assert method.get_name() == "Deconvnet"
    assert GuidedBackprop(model).get_name() == "Guided Backprop"  # Captum splits CamelCase
    assert method.has_convergence_delta() is False
    assert method.multiplies_by_inputs is False
    assert callable(method.attribute.__wrapped__)


@pytest.mark.parametrize(
    "target",
    [
        2,
        (2,),
        torch.tensor(2),
        torch.tensor([2]),
        torch.tensor([2, 4, 5]),
        [2, 4, 5],
        [(2,), (4,), (5,)],
        -1,
    ],
    ids=["int", "tuple", "0d-tensor", "1-element-tensor", "1d-tensor", "list-int", "list-tuple", "negative"],
)
def test_every_target_form(model: nn.Module, images: torch.Tensor, target: object) -> None:
    per_example = {
        "list": [2, 4, 5],
    }
    if isinstance(target, list) or (isinstance(target, torch.Tensor) and target.numel() == 3):
        expected_targets = per_example["list"]
    elif isinstance(target, int) and target < 0:
        expected_targets = [5, 5, 5]
    else:
        expected_targets = [2, 2, 2]
    actual = Deconvnet(model).attribute(images, target=target)
    torch.testing.assert_close(actual, one_by_one(model, images, expected_targets))


def test_tuple_target_on_multidimensional_output() -> None:
    class Grid(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 2, 3, padding=1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return F.max_pool2d(torch.relu(self.conv(x)), 2).amax(dim=3)  # (N, 2, H / 2)

    model = Grid().double()
    x = torch.randn(2, 3, 10, 10, dtype=torch.float64)
    actual = Deconvnet(model).attribute(x, target=[(1, 2), (0, 4)])
    first = Deconvnet(model).attribute(x[:1], target=(1, 2))
    second = Deconvnet(model).attribute(x[1:], target=(0, 4))
    torch.testing.assert_close(actual, torch.cat([first, second]))


class TwoInputs(nn.Module):
    """Two image inputs and an extra scale argument, as Captum's additional_forward_args."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.MaxPool2d(2))
        self.b = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.MaxPool2d(2))
        self.head = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor, y: torch.Tensor, scale: float = 1.0, shift: float = 0.0) -> torch.Tensor:
        features = (self.a(x) + self.b(y)).mean(dim=(2, 3))
        return self.head(features) * scale + shift


def test_tuple_inputs_and_additional_forward_args() -> None:
    model = TwoInputs().double()
    x = torch.randn(2, 3, 10, 10, dtype=torch.float64)
    y = torch.randn(2, 1, 10, 10, dtype=torch.float64)
    result = Deconvnet(model).attribute((x, y), target=1, additional_forward_args=2.0)
    assert isinstance(result, tuple) and len(result) == 2
    assert result[0].shape == x.shape and result[1].shape == y.shape
    base = Deconvnet(model).attribute((x, y), target=1)
    torch.testing.assert_close(result[0], 2 * base[0])
    shifted = Deconvnet(model).attribute((x, y), target=1, additional_forward_args=(2.0, 5.0))
    torch.testing.assert_close(shifted[1], result[1])


def test_target_none_for_one_score_per_example() -> None:
    scalar = nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.ReLU(), nn.MaxPool2d(2), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 1)
    )
    x = torch.randn(2, 3, 8, 8)
    result = Deconvnet(scalar).attribute(x)
    assert isinstance(result, torch.Tensor) and result.shape == x.shape
    torch.testing.assert_close(result, Deconvnet(scalar).attribute(x, target=0))


def test_inside_noise_tunnel(model: nn.Module, images: torch.Tensor) -> None:
    tunnel = NoiseTunnel(Deconvnet(model))
    noiseless = tunnel.attribute(images, nt_type="smoothgrad", nt_samples=3, stdevs=0.0, target=[2, 4, 5])
    torch.testing.assert_close(noiseless, Deconvnet(model).attribute(images, target=[2, 4, 5]))
    noisy = tunnel.attribute(images, nt_type="smoothgrad_sq", nt_samples=4, stdevs=0.2, target=1)
    assert noisy.shape == images.shape and torch.isfinite(noisy).all()


def test_visualize_image_attr_accepts_output(model: nn.Module, images: torch.Tensor) -> None:
    attribution = Deconvnet(model).attribute(images[:1], target=2)
    hwc = attribution[0].permute(1, 2, 0).numpy()
    picture = images[0].permute(1, 2, 0).numpy()
    picture = (picture - picture.min()) / (picture.max() - picture.min())
    figure, axis = viz.visualize_image_attr(
        hwc, picture, method="blended_heat_map", sign="absolute_value", use_pyplot=False
    )
    assert figure is not None and axis is not None


def test_captum_metrics_run(model: nn.Module, images: torch.Tensor) -> None:
    method = Deconvnet(model)
    attributions = method.attribute(images, target=2)

    def perturb(inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        noise = torch.randn_like(inputs) * 0.01
        return noise, inputs - noise

    score = infidelity(model, perturb, images, attributions, target=2, n_perturb_samples=2)
    assert score.shape == (3,) and torch.isfinite(score).all()
    sensitivity = sensitivity_max(method.attribute, images, target=2, n_perturb_samples=2, perturb_radius=0.01)
    assert sensitivity.shape == (3,) and torch.isfinite(sensitivity).all()
