"""Bad input raises ValueError/TypeError naming the argument and the fix, never a silent wrong answer."""

from __future__ import annotations

import pytest
import torch
import torchvision
from conftest import assert_clean

from zf_attr import Deconvnet, GuidedBackprop, intercept


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    return torchvision.models.resnet18(weights=None, num_classes=10).eval()


def test_non_module_model() -> None:
    with pytest.raises(TypeError, match=r"model must be a torch\.nn\.Module"):
        Deconvnet(lambda x: x)


def test_missing_batch_dimension(model: torch.nn.Module) -> None:
    with pytest.raises(ValueError, match=r"inputs has shape \(3, 32, 32\).*unsqueeze\(0\)"):
        Deconvnet(model).attribute(torch.randn(3, 32, 32), target=0)


def test_wrong_rank(model: torch.nn.Module) -> None:
    with pytest.raises(ValueError, match=r"inputs has shape .*\(N, C, H, W\)"):
        Deconvnet(model).attribute(torch.randn(1, 1, 3, 32, 32), target=0)


@pytest.mark.parametrize("dtype", [torch.uint8, torch.int64, torch.bool])
def test_non_float_dtype(model: torch.nn.Module, dtype: torch.dtype) -> None:
    with pytest.raises(TypeError, match=r"inputs has dtype .*\.float\(\)"):
        Deconvnet(model).attribute(torch.zeros(1, 3, 32, 32, dtype=dtype), target=0)


def test_not_a_tensor(model: torch.nn.Module) -> None:
    with pytest.raises(TypeError, match=r"inputs\[1\] must be a torch.Tensor"):
        Deconvnet(model).attribute((torch.randn(1, 3, 32, 32), [1, 2]), target=0)


@pytest.mark.parametrize(
    ("target", "error", "pattern"),
    [
        (10, ValueError, r"target 10 is out of range .*10 entries"),
        (-11, ValueError, r"target -11 is out of range"),
        ((1, 2), ValueError, r"target \(1, 2\) has 2 indices"),
        ([1, 2, 3], ValueError, r"target is a list of length 3"),
        ([1, 12], ValueError, r"target 12 is out of range"),
        (torch.tensor([0, 10]), ValueError, r"target holds class 10"),
        (torch.tensor([0.0, 1.0]), TypeError, r"target tensor must hold integer"),
        (torch.zeros(2, 2, dtype=torch.long), ValueError, r"target tensor has shape \(2, 2\)"),
        ("cat", TypeError, r"target must be None, an int"),
        (None, ValueError, r"target=None but the model returns 10 scores"),
    ],
)
def test_bad_targets(model: torch.nn.Module, target: object, error: type, pattern: str) -> None:
    with pytest.raises(error, match=pattern):
        GuidedBackprop(model).attribute(torch.randn(2, 3, 32, 32), target=target)
    assert_clean(model)


def test_unknown_variant_policy_and_rule(model: torch.nn.Module) -> None:
    with pytest.raises(ValueError, match=r"variant='zf'.*\['gradient', 'strict'\]"):
        Deconvnet(model, variant="zf")
    with pytest.raises(ValueError, match=r"nonrectifier_policy='ignore'"):
        Deconvnet(model, nonrectifier_policy="ignore")
    with pytest.raises(ValueError, match=r"rule='lrp'"):
        intercept(model, rule="lrp")


def test_training_mode_googlenet_output_explains_the_fix() -> None:
    googlenet = torchvision.models.googlenet(weights=None, aux_logits=True, init_weights=True).train()
    with pytest.raises(TypeError, match=r"model.eval\(\)"):
        Deconvnet(googlenet).attribute(torch.randn(2, 3, 64, 64), target=0)
    assert_clean(googlenet)
