"""Where Captum is right (nn.ReLU modules only), zf_attr must agree with it to float64 precision."""

from __future__ import annotations

import pytest
import torch
import torchvision
from captum.attr import Deconvolution
from captum.attr import GuidedBackprop as CaptumGuidedBackprop
from conftest import quiet, relative_error

from zf_attr import Deconvnet, GuidedBackprop

MODELS = {
    "alexnet": (lambda: torchvision.models.alexnet(weights=None), 64),
    "vgg11": (lambda: torchvision.models.vgg11(weights=None), 32),
    "resnet18": (lambda: torchvision.models.resnet18(weights=None), 48),
    "squeezenet1_1": (lambda: torchvision.models.squeezenet1_1(weights=None), 48),
}


@pytest.fixture(scope="module", params=sorted(MODELS))
def model_and_input(request: pytest.FixtureRequest) -> tuple[torch.nn.Module, torch.Tensor]:
    torch.manual_seed(1)
    build, size = MODELS[request.param]
    model = build().eval().double()
    return model, torch.randn(2, 3, size, size, dtype=torch.float64)


def test_deconvnet_equals_captum_deconvolution(model_and_input: tuple) -> None:
    model, images = model_and_input
    ours = Deconvnet(model).attribute(images, target=[3, 5])
    with quiet():
        theirs = Deconvolution(model).attribute(images, target=[3, 5])
    assert theirs.abs().max() > 0
    assert relative_error(ours, theirs) <= 1e-6


def test_guided_backprop_equals_captum(model_and_input: tuple) -> None:
    model, images = model_and_input
    ours = GuidedBackprop(model).attribute(images, target=4)
    with quiet():
        theirs = CaptumGuidedBackprop(model).attribute(images, target=4)
    assert relative_error(ours, theirs) <= 1e-6
