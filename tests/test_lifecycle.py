"""The user's model, inputs and torch's global state are exactly as found after every attribution."""

from __future__ import annotations

from unittest import mock

import pytest
import torch
import torchvision
from conftest import assert_bitwise_equal, assert_clean, hooks_left, snapshot

from zf_attr import Deconvnet, GuidedBackprop

MODELS = {
    "vgg11": (lambda: torchvision.models.vgg11(weights=None), "features.8"),
    "resnet18": (lambda: torchvision.models.resnet18(weights=None), "layer2"),
    "googlenet": (
        lambda: torchvision.models.googlenet(weights=None, aux_logits=False, init_weights=True),
        "inception4a",
    ),
}


@pytest.fixture(scope="module", params=sorted(MODELS))
def model_case(request: pytest.FixtureRequest) -> tuple[torch.nn.Module, str]:
    build, inner = MODELS[request.param]
    return build().eval(), inner


@pytest.mark.parametrize("outcome", ["success", "exception_in_forward", "invalid_target"])
@pytest.mark.parametrize("requires_grad", [False, True])
def test_state_restored(model_case: tuple, outcome: str, requires_grad: bool) -> None:
    model, inner_name = model_case
    before = snapshot(model)
    images = torch.randn(2, 3, 32, 32, requires_grad=requires_grad)
    images_before = images.detach().clone()
    method = Deconvnet(model)

    if outcome == "success":
        result = method.attribute(images, target=1)
        assert result.shape == images.shape
    elif outcome == "exception_in_forward":
        inner = model.get_submodule(inner_name)
        with mock.patch.object(inner, "forward", side_effect=RuntimeError("boom inside forward")):
            with pytest.raises(RuntimeError, match="boom inside forward"):
                method.attribute(images, target=1)
        assert "forward" not in vars(inner)
    else:
        with pytest.raises(ValueError, match="target"):
            method.attribute(images, target=5000)

    assert_clean(model)
    assert images.requires_grad is requires_grad
    assert images.grad is None
    assert torch.equal(images.detach(), images_before)
    assert model.training is False
    assert_bitwise_equal(model, before)
    assert all(parameter.grad is None for parameter in model.parameters())
    # the model still works normally afterwards: plain forward equals a fresh forward
    with torch.no_grad():
        torch.testing.assert_close(model(images_before), model(images_before))


def test_no_handle_accumulation_over_repeated_calls() -> None:
    model = torchvision.models.resnet18(weights=None).eval()
    method = GuidedBackprop(model)
    images = torch.randn(1, 3, 32, 32)
    first = method.attribute(images, target=0)
    for _ in range(3):
        again = method.attribute(images, target=0)
        assert hooks_left(model) == {}
        # equal up to the order of oneDNN's multi-threaded reductions (~1e-8 apart on a loaded 2-core machine)
        torch.testing.assert_close(first, again, rtol=1e-5, atol=1e-7)
    assert not vars(method).get("backward_hooks")


def test_training_mode_and_parameter_flags_untouched() -> None:
    model = torchvision.models.vgg11(weights=None)
    model.train()
    model.features[0].weight.requires_grad_(False)
    flags = {name: parameter.requires_grad for name, parameter in model.named_parameters()}
    torch.manual_seed(0)
    Deconvnet(model).attribute(torch.randn(2, 3, 32, 32), target=[0, 1])
    assert model.training is True
    assert all(module.training for module in model.modules())
    assert {name: parameter.requires_grad for name, parameter in model.named_parameters()} == flags
    assert_clean(model)


def test_user_hooks_survive() -> None:
    model = torchvision.models.resnet18(weights=None).eval()
    seen: list[int] = []
    handle = model.layer1.register_forward_hook(lambda module, args, output: seen.append(1))
    Deconvnet(model).attribute(torch.randn(1, 3, 32, 32), target=0)
    assert seen == [1]
    assert hooks_left(model) == {"layer1": 1}
    handle.remove()
