"""Packaging for auditors: ``py.typed`` and ``zf_attr.integrations.quantus.explain_func`` under Quantus metrics."""

from __future__ import annotations

from importlib import resources

import numpy as np
import pytest
import torch

import zf_attr
from zf_attr.integrations.quantus import explain_func


def tiny() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(4, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(), torch.nn.Linear(4, 3),
    ).eval()  # fmt: skip


def test_package_declares_its_type_hints() -> None:
    assert resources.files("zf_attr").joinpath("py.typed").is_file()


def test_explain_func_equals_the_methods_it_names() -> None:
    model = tiny()
    x = np.random.default_rng(0).random((2, 3, 16, 16), dtype=np.float32)
    y = np.array([0, 2])
    expected = zf_attr.Deconvnet(model).attribute(torch.from_numpy(x), target=[0, 2]).sum(1, keepdim=True)
    np.testing.assert_allclose(explain_func(model=model, inputs=x, targets=y), expected.numpy(), rtol=1e-6)
    full = explain_func(model, x, y, method="guided", reduce_axes=None)
    assert full.shape == x.shape and full.dtype == np.float32
    saliency = explain_func(model, x, 1, method="Saliency", abs=False)  # a Captum class, kwargs passed on
    assert saliency.shape == (2, 1, 16, 16)
    occluded = explain_func(model, x, y, method="occlusion", sliding_window_shapes=(3, 4, 4), strides=(3, 4, 4))
    assert occluded.shape == (2, 1, 16, 16)
    with pytest.raises(ValueError, match="neither a zf_attr method"):
        explain_func(model, x, y, method="NoSuchMethod")


def test_quantus_metric_accepts_explain_func() -> None:
    quantus = pytest.importorskip("quantus")
    model = tiny()
    x = np.random.default_rng(1).random((4, 3, 16, 16), dtype=np.float32)
    y = model(torch.from_numpy(x)).argmax(1).numpy()
    for method in ("deconvnet", "Deconvolution"):
        scores = quantus.Sparseness(disable_warnings=True)(
            model=model, x_batch=x, y_batch=y, a_batch=None, explain_func=explain_func,
            explain_func_kwargs={"method": method}, device="cpu",
        )  # fmt: skip
        assert len(scores) == 4 and all(np.isfinite(scores))
