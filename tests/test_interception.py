"""The interception mechanism: every way a rectifier or max-pool can be called, each rule, each policy."""

from __future__ import annotations

import warnings
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

import zf_attr
from zf_attr import Deconvnet, GuidedBackprop, UnhonouredLayerWarning, intercept

# (label, call, rectifying part of the signal, local derivative as a function of x)
relu_mask = lambda x: (x > 0).double()  # noqa: E731
relu6_mask = lambda x: ((x > 0) & (x < 6)).double()  # noqa: E731
leaky_mask = lambda x: torch.where(x > 0, 1.0, 0.2).double()  # noqa: E731
leaky = lambda g: F.leaky_relu(g, 0.2)  # noqa: E731

FORMS: list[tuple[str, Callable, Callable, Callable]] = [
    ("nn.ReLU", lambda x: nn.ReLU()(x), torch.relu, relu_mask),
    ("nn.ReLU(inplace)", lambda x: nn.ReLU(inplace=True)(x), torch.relu, relu_mask),
    ("F.relu", lambda x: F.relu(x), torch.relu, relu_mask),
    ("F.relu(inplace)", lambda x: F.relu(x, inplace=True), torch.relu, relu_mask),
    ("torch.relu", torch.relu, torch.relu, relu_mask),
    ("torch.relu_", torch.relu_, torch.relu, relu_mask),
    ("Tensor.relu", lambda x: x.relu(), torch.relu, relu_mask),
    ("Tensor.relu_", lambda x: x.relu_(), torch.relu, relu_mask),
    ("nn.ReLU6", lambda x: nn.ReLU6()(x), torch.relu, relu6_mask),
    ("nn.ReLU6(inplace)", lambda x: nn.ReLU6(inplace=True)(x), torch.relu, relu6_mask),
    ("F.relu6", lambda x: F.relu6(x), torch.relu, relu6_mask),
    ("F.hardtanh(0, 6)", lambda x: F.hardtanh(x, 0.0, 6.0), torch.relu, relu6_mask),
    ("nn.LeakyReLU", lambda x: nn.LeakyReLU(0.2)(x), leaky, leaky_mask),
    ("F.leaky_relu(inplace)", lambda x: F.leaky_relu(x, 0.2, inplace=True), leaky, leaky_mask),
]


@pytest.mark.parametrize("rule", ["deconvnet", "guided", "gradient"])
@pytest.mark.parametrize("form", FORMS, ids=[form[0] for form in FORMS])
def test_every_rectifier_form_applies_the_rule(form: tuple, rule: str) -> None:
    label, call, rectify, derivative = form
    leaf = (torch.randn(64, dtype=torch.float64) * 5).requires_grad_(True)
    signal = torch.randn(64, dtype=torch.float64)
    x = leaf * 1.0  # a non-leaf, so in-place calls are legal
    with intercept(call, rule=rule) as trace:
        y = call(x)
    (received,) = torch.autograd.grad(y, leaf, signal)
    local = derivative(leaf.detach())
    expected = {
        "deconvnet": rectify(signal),
        "guided": rectify(signal * local),
        "gradient": signal * local,
    }[rule]
    torch.testing.assert_close(received, expected)
    assert len(trace.rectifiers) == 1, label
    # the forward values are exactly the original function's
    torch.testing.assert_close(y.detach(), call(leaf.detach().clone()))


def test_hardtanh_with_negative_bound_is_not_a_rectifier() -> None:
    x = torch.randn(8, requires_grad=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with intercept(lambda t: F.hardtanh(t), rule="deconvnet") as trace:
            F.hardtanh(x)
    assert not trace.rectifiers
    assert [call.kind for call in trace.other_activations] == ["Hardtanh"]
    assert not caught  # interception itself never warns; attributions do


def test_max_pool_forms_record_switches_and_keep_return_values() -> None:
    x = torch.randn(1, 2, 9, 9)

    class Pools(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.pool = nn.MaxPool2d(3, 2, padding=1, ceil_mode=True)
            self.indexed = nn.MaxPool2d(2, return_indices=True)

        def forward(self, t: torch.Tensor) -> torch.Tensor:
            a = self.pool(t)
            b, indices = self.indexed(t)
            c = F.max_pool2d(t, 3, stride=1, dilation=2)
            d, _ = F.max_pool2d_with_indices(t, 2)
            e = torch.max_pool2d(t, 3, 3)
            assert indices.dtype == torch.int64
            return a.sum() + b.sum() + c.sum() + d.sum() + e.sum()

    model = Pools()
    with zf_attr.record_switches(model) as trace:
        intercepted = model(x)
    assert torch.equal(intercepted, model(x))
    assert trace.pool_names == ["pool", "indexed", "<model>:max_pool2d", "<model>:max_pool2d#1", "<model>:max_pool2d#2"]
    assert trace.pool("<model>:max_pool2d").dilation == (2, 2)
    assert trace.pool("pool").ceil_mode and trace.pool("pool").padding == (1, 1)
    assert [switches.call_index for switches in trace.pools] == [0, 0, 0, 1, 2]
    with pytest.raises(KeyError, match="recorded pool calls"):
        trace.pool("nope")


def test_shared_and_functional_calls_are_named_by_module() -> None:
    resnet = torchvision.models.resnet18(weights=None).eval()
    with zf_attr.record_switches(resnet) as trace:
        resnet(torch.randn(1, 3, 32, 32))
    names = [call.name for call in trace.rectifiers]
    assert names[:3] == ["relu", "layer1.0.relu", "layer1.0.relu#1"]
    assert len(names) == len(set(names)) == 17

    googlenet = torchvision.models.googlenet(weights=None, aux_logits=False, init_weights=True).eval()
    with zf_attr.record_switches(googlenet) as trace:
        googlenet(torch.randn(1, 3, 64, 64))
    assert trace.rectifiers[0].name == "conv1:relu"
    assert trace.rectifiers[0].module_name == "conv1"
    assert trace.pool_names[:2] == ["maxpool1", "maxpool2"]


def test_recording_does_not_change_the_gradient() -> None:
    model = torchvision.models.resnet18(weights=None).eval().double()
    x = torch.randn(1, 3, 32, 32, dtype=torch.float64, requires_grad=True)
    (plain,) = torch.autograd.grad(model(x)[0, 3], x)
    with zf_attr.record_switches(model):
        out = model(x)
    (recorded,) = torch.autograd.grad(out[0, 3], x)
    assert torch.equal(plain, recorded)


class SiLUNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.act = nn.SiLU()
        self.head = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.act(self.conv(x)).mean(dim=(2, 3)))


def test_nonrectifier_policy_gradient_warns_once_and_keeps_gradient() -> None:
    model = SiLUNet().double()
    x = torch.randn(3, 3, 8, 8, dtype=torch.float64)
    with pytest.warns(UnhonouredLayerWarning) as caught:
        ours = Deconvnet(model).attribute(x, target=1)
    assert len(caught) == 1
    message = str(caught[0].message)
    assert "no rectifiers" in message and "SiLU x1" in message and "'act'" in message
    leaf = x.clone().requires_grad_(True)
    (gradient,) = torch.autograd.grad(model(leaf)[:, 1].sum(), leaf)
    torch.testing.assert_close(ours, gradient)


def test_nonrectifier_policy_error_raises_naming_the_layer() -> None:
    with pytest.raises(ValueError, match=r"SiLU at 'act'.*nonrectifier_policy"):
        Deconvnet(SiLUNet(), nonrectifier_policy="error").attribute(torch.randn(1, 3, 8, 8), target=0)


@pytest.mark.parametrize("inplace", [False, True])
def test_nonrectifier_policy_rectify_treats_silu_as_rectifier(inplace: bool) -> None:
    model = SiLUNet().double()
    model.act.inplace = inplace
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    with pytest.warns(UnhonouredLayerWarning, match="a rectified signal"):
        ours = Deconvnet(model, nonrectifier_policy="rectify").attribute(x, target=2)
        guided = GuidedBackprop(model, nonrectifier_policy="rectify").attribute(x, target=2)
    with torch.no_grad():
        pre = model.conv(x)
    signal = (model.head.weight[2] / pre.shape[-1] / pre.shape[-2]).reshape(1, 4, 1, 1).expand_as(pre)
    silu_derivative = torch.sigmoid(pre) * (1 + pre * (1 - torch.sigmoid(pre)))
    expected = F.conv_transpose2d(signal.clamp(min=0), model.conv.weight)
    expected_guided = F.conv_transpose2d((signal * silu_derivative).clamp(min=0), model.conv.weight)
    torch.testing.assert_close(ours, expected)
    torch.testing.assert_close(guided, expected_guided)


class NormNet(nn.Module):
    """ZFNet-like block: conv → ReLU → max-pool → LRN, then conv → BatchNorm → ReLU → linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.relu1 = nn.ReLU()
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.norm1 = nn.LocalResponseNorm(3)
        self.conv2 = nn.Conv2d(4, 5, 3)
        self.bn2 = nn.BatchNorm2d(5)
        self.relu2 = nn.ReLU()
        self.fc = nn.Linear(5 * 3 * 3, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm1(self.pool1(self.relu1(self.conv1(x))))
        return self.fc(torch.flatten(self.relu2(self.bn2(self.conv2(x))), 1))


def test_strict_variant_skips_normalisation_on_the_way_down() -> None:
    model = NormNet().double().eval()
    with torch.no_grad():  # non-trivial BatchNorm statistics
        model.bn2.running_mean.uniform_(-1, 1)
        model.bn2.running_var.uniform_(0.5, 2)
        model.bn2.weight.uniform_(0.5, 2)
    x = torch.randn(1, 3, 10, 10, dtype=torch.float64)
    strict = Deconvnet(model, variant="strict").attribute(x, target=1)
    gradient_style = Deconvnet(model).attribute(x, target=1)

    with torch.no_grad():  # the paper's chain: unpool → rectify → transposed filter, norms skipped
        r1 = model.relu1(model.conv1(x))
        _, indices = F.max_pool2d(r1, 3, 2, ceil_mode=True, return_indices=True)
        signal = model.fc.weight[1].reshape(1, 5, 3, 3).clamp(min=0)
        signal = F.conv_transpose2d(signal, model.conv2.weight)
        flat = torch.zeros(1, 4, 100, dtype=torch.float64).scatter_add_(2, indices.flatten(2), signal.flatten(2))
        expected = F.conv_transpose2d(flat.reshape(r1.shape).clamp(min=0), model.conv1.weight, padding=1)
    torch.testing.assert_close(strict, expected)
    assert (strict - gradient_style).abs().max() > 1e-3


def test_nested_interception_is_refused() -> None:
    model = nn.ReLU()
    with intercept(model), pytest.raises(RuntimeError, match="already active"):
        with intercept(model):
            pass
    assert torch._C._len_torch_function_stack() == 0
