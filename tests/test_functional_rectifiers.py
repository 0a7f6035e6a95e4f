"""Models whose rectifiers Captum cannot see: zf_attr must equal an independent reference, not the gradient.

The reference does not use zf_attr's interception at all: on a deep copy of the model it replaces
``torch.nn.functional.relu`` and ``hardtanh`` (which ``nn.ReLU`` / ``nn.ReLU6`` modules and torchvision's
functional calls all go through) with explicit deconvnet autograd functions.
"""

from __future__ import annotations

import copy
import warnings
from unittest import mock

import pytest
import torch
import torch.nn.functional as F
import torchvision
from captum.attr import Deconvolution, Saliency
from conftest import quiet, relative_error

from zf_attr import Deconvnet, UnhonouredLayerWarning

_original_relu = F.relu
_original_hardtanh = F.hardtanh


class ReferenceDeconvRelu(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, upper):
        return x.clamp(min=0) if upper is None else x.clamp(0, upper)

    @staticmethod
    def backward(ctx, grad_output):
        return grad_output.clamp(min=0), None


def reference_relu(x, inplace=False):
    return ReferenceDeconvRelu.apply(x, None)


def reference_hardtanh(x, min_val=-1.0, max_val=1.0, inplace=False):
    assert min_val == 0.0, "the models under test only use hardtanh as ReLU6"
    return ReferenceDeconvRelu.apply(x, max_val)


def reference_deconvnet(model: torch.nn.Module, images: torch.Tensor, target: list[int]) -> torch.Tensor:
    model = copy.deepcopy(model)
    images = images.clone().requires_grad_(True)
    with mock.patch.object(F, "relu", reference_relu), mock.patch.object(F, "hardtanh", reference_hardtanh):
        scores = model(images)
    selected = scores[torch.arange(len(target)), torch.tensor(target)]
    (gradient,) = torch.autograd.grad(selected.sum(), images)
    return gradient


MODELS = {
    "googlenet": (lambda: torchvision.models.googlenet(weights=None, aux_logits=False, init_weights=True), 64),
    "inception_v3": (lambda: torchvision.models.inception_v3(weights=None, aux_logits=False, init_weights=True), 80),
    "mobilenet_v2": (lambda: torchvision.models.mobilenet_v2(weights=None), 64),
    "densenet121": (lambda: torchvision.models.densenet121(weights=None), 48),
}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_equals_reference_and_differs_from_gradient(name: str) -> None:
    torch.manual_seed(2)
    build, size = MODELS[name]
    model = build().eval().double()
    images = torch.randn(2, 3, size, size, dtype=torch.float64)
    target = [1, 7]

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ours = Deconvnet(model).attribute(images, target=target)
    if name == "mobilenet_v2":  # no max-pool: nothing carries the image into the projection, and we say so
        assert [str(w.message) for w in caught if issubclass(w.category, UnhonouredLayerWarning)] == [
            "Deconvnet: the model has no max-pool calls, so no switches carry the image into the projection: "
            "on a conv/ReLU/BatchNorm network every image gets the same map for a given target."
        ]
    else:
        assert not [w for w in caught if issubclass(w.category, UnhonouredLayerWarning)]
    reference = reference_deconvnet(model, images, target)
    with quiet():
        gradient = Saliency(model).attribute(images, target=target, abs=False)
        captum = Deconvolution(model).attribute(images, target=target)

    assert relative_error(ours, reference) <= 1e-6
    assert relative_error(ours, gradient) > 1e-2, "zf_attr must not fall back to the plain gradient"
    if name != "densenet121":  # Captum's documented failure: it returns the plain gradient here
        assert relative_error(captum, gradient) <= 1e-10


def test_densenet_final_functional_relu_is_rectified() -> None:
    """DenseNet's last ReLU is ``F.relu`` in ``forward``: Captum skips it, zf_attr names and rectifies it."""
    import zf_attr

    model = torchvision.models.densenet121(weights=None).eval().double()
    with zf_attr.record_switches(model) as trace:
        model(torch.randn(1, 3, 48, 48, dtype=torch.float64))
    assert trace.rectifiers[-1].name == "<model>:relu"
    assert trace.rectifiers[-1].module_name == ""


def test_pool_free_deconvnet_is_image_independent_as_warned() -> None:
    """MobileNetV2 has no max-pool: the deconvnet map of a class is the same for every image (the warning's claim)."""
    from zf_attr import GuidedBackprop

    model = torchvision.models.mobilenet_v2(weights=None).eval().double()
    images = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    with pytest.warns(UnhonouredLayerWarning, match="no max-pool calls"):
        maps = Deconvnet(model).attribute(images, target=[4, 4])
    assert relative_error(maps[0], maps[1]) <= 1e-10
    guided = GuidedBackprop(model).attribute(images, target=[4, 4])
    assert relative_error(guided[0], guided[1]) > 1e-2  # guided backprop reads the forward pass
