"""One model per torchvision classification family (default run); the full sweep behind ``-m sweep``.

Random-init weights, small inputs: the point is that interception works on every architecture, that
rectifier-free families warn exactly once, and that nothing is silently left as the plain gradient.
"""

from __future__ import annotations

import warnings

import pytest
import torch
import torchvision
from captum.attr import Saliency
from conftest import assert_clean, quiet, relative_error

import zf_attr
from zf_attr import Deconvnet, UnhonouredLayerWarning

REPRESENTATIVES = {
    "alexnet": "alexnet",
    "vgg": "vgg11",
    "resnet": "resnet18",
    "resnext": "resnext50_32x4d",
    "wide_resnet": "wide_resnet50_2",
    "densenet": "densenet121",
    "googlenet": "googlenet",
    "inception": "inception_v3",
    "mobilenet_v2": "mobilenet_v2",
    "mobilenet_v3": "mobilenet_v3_small",
    "shufflenet_v2": "shufflenet_v2_x0_5",
    "squeezenet": "squeezenet1_1",
    "mnasnet": "mnasnet0_5",
    "regnet": "regnet_y_400mf",
    "efficientnet": "efficientnet_b0",
    "convnext": "convnext_tiny",
}
RECTIFIER_FREE = {"efficientnet_b0", "convnext_tiny"}
# Swin V2's only ReLU sits in the relative-position-bias MLP, which reads a fixed coordinate table, not the
# image: the rectifier rule cannot change the input attribution there.
RECTIFIERS_OFF_INPUT_PATH = {"swin_v2_t", "swin_v2_s", "swin_v2_b"}


def build(name: str) -> torch.nn.Module:
    kwargs: dict = {"weights": None}
    if name in ("googlenet", "inception_v3"):
        kwargs.update(aux_logits=False, init_weights=True)
    return torchvision.models.get_model(name, **kwargs).eval()


def input_size(name: str) -> int:
    if name == "inception_v3":
        return 80
    if name.startswith("vit") or name.startswith("swin") or name.startswith("maxvit"):
        return 224
    return 64


def check_model(name: str) -> None:
    torch.manual_seed(0)
    model = build(name)
    images = torch.randn(2, 3, input_size(name), input_size(name))
    with zf_attr.record_switches(model) as trace:
        with torch.no_grad():
            model(images)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        attributions = Deconvnet(model).attribute(images, target=[0, 1])
    ours = [warning for warning in caught if issubclass(warning.category, UnhonouredLayerWarning)]

    assert attributions.shape == images.shape
    assert torch.isfinite(attributions).all()
    assert_clean(model)
    expect_warning = bool(trace.other_activations) or not trace.rectifiers or not trace.pools
    assert len(ours) == (1 if expect_warning else 0), [str(warning.message) for warning in ours]
    if name in RECTIFIER_FREE:
        assert not trace.rectifiers and "no rectifiers" in str(ours[0].message)
    if not trace.pools and not trace.other_activations and trace.rectifiers:
        assert "no max-pool calls" in str(ours[0].message)
    if trace.rectifiers and name not in RECTIFIERS_OFF_INPUT_PATH:
        with quiet():
            gradient = Saliency(model).attribute(images, target=[0, 1], abs=False)
        assert relative_error(attributions, gradient) > 1e-3


@pytest.mark.parametrize("family", sorted(REPRESENTATIVES))
def test_family_representative(family: str) -> None:
    check_model(REPRESENTATIVES[family])


def _classification_models() -> list[str]:
    return sorted(torchvision.models.list_models(module=torchvision.models))


@pytest.mark.sweep
@pytest.mark.parametrize("name", _classification_models())
def test_full_sweep(name: str) -> None:
    check_model(name)
