"""Shared fixtures and assertions for the zf_attr test suite."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import torch
from torch import nn


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def hooks_left(model: nn.Module) -> dict[str, int]:
    """Every hook still registered on any module of ``model``, by module name."""
    left = {}
    for name, module in model.named_modules():
        count = sum(
            len(getattr(module, attribute, {}))
            for attribute in (
                "_forward_hooks",
                "_forward_pre_hooks",
                "_backward_hooks",
                "_backward_pre_hooks",
                "_forward_hooks_always_called",
                "_forward_hooks_with_kwargs",
                "_forward_pre_hooks_with_kwargs",
            )
        )
        if count:
            left[name or "<model>"] = count
    return left


def assert_clean(model: nn.Module) -> None:
    """No hook on any module and no torch function mode left active."""
    assert hooks_left(model) == {}
    assert torch._C._len_torch_function_stack() == 0


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}


def assert_bitwise_equal(model: nn.Module, before: dict[str, torch.Tensor]) -> None:
    after = model.state_dict()
    assert after.keys() == before.keys()
    for name, tensor in before.items():
        assert torch.equal(after[name], tensor), f"{name} changed"


@contextmanager
def quiet() -> Iterator[None]:
    """Silence third-party warnings (Captum warns on every call)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    scale = expected.abs().max().clamp_min(torch.finfo(expected.dtype).tiny)
    return float((actual - expected).abs().max() / scale)
