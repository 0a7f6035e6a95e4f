"""Coarse-then-fine occlusion (DrillDown): the lattice, the interpolation, the refinement, the reported error."""

from __future__ import annotations

import pytest
import torch
from captum.attr import Occlusion
from conftest import relative_error
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from zf_attr import DrillDown, OcclusionSensitivity
from zf_attr.occlusion import DrillDownPlan, WindowGrid


class WeightedSum(nn.Module):
    """``f(x) = sum(weight * x)`` per example: a window's drop is the sum of the weights it covers."""

    def __init__(self, weight: torch.Tensor) -> None:
        super().__init__()
        self.weight = nn.Parameter(weight, requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x * self.weight).flatten(1).sum(1, keepdim=True)


def test_drill_down_arguments_name_the_fix() -> None:
    for bad in ({"step": 1}, {"step": 2.0}, {"step": True}, {"refine": 1.5}, {"refine": -0.1}, {"refine": "all"}):
        with pytest.raises(ValueError, match=r"DrillDown (step|refine)"):
            DrillDown(**bad)
    with pytest.raises(ValueError, match="approximate must be None"):
        OcclusionSensitivity(WeightedSum(torch.ones(1, 4, 4)), approximate="coarse")


@settings(max_examples=40, deadline=None)
@given(
    shape=st.lists(st.integers(1, 9), min_size=1, max_size=3),
    step=st.integers(2, 4),
    refine=st.floats(0, 1),
    examples=st.integers(1, 2),
    seed=st.integers(0, 2**16),
)
def test_lattice_refinement_and_interpolation_properties(shape, step, refine, examples, seed) -> None:
    grid = WindowGrid(tuple(shape), (1,) * len(shape), (1,) * len(shape))
    plan = DrillDownPlan([grid], DrillDown(step, refine))
    coarse = plan.coarse_ids
    assert coarse == sorted(set(coarse)) and 0 in coarse and grid.num_windows - 1 in coarse  # both corners
    for window_id in coarse:
        assert all(i % step == 0 or i == n - 1 for i, n in zip(grid.position(window_id), shape, strict=True))
    # a multilinear function of the grid position is reproduced exactly from the lattice
    generator = torch.Generator().manual_seed(seed)
    coefficients = torch.randn(2 ** len(shape), examples, generator=generator, dtype=torch.float64)
    positions = torch.tensor([grid.position(i) for i in range(grid.num_windows)], dtype=torch.float64)
    drops = torch.zeros(grid.num_windows, examples, dtype=torch.float64)
    for term in range(2 ** len(shape)):
        factor = torch.ones(grid.num_windows, dtype=torch.float64)
        for axis in range(len(shape)):
            if term >> axis & 1:
                factor = factor * positions[:, axis]
        drops += factor[:, None] * coefficients[term]
    known = torch.zeros(grid.num_windows, dtype=torch.bool)
    known[coarse] = True
    guessed = plan.interpolate(torch.where(known[:, None], drops, torch.full_like(drops, 1e9)), known)
    torch.testing.assert_close(guessed, drops, rtol=1e-9, atol=1e-9)
    refined = plan.refinement(drops)
    assert len(refined) == len(set(refined)) == plan.num_refined <= grid.num_windows - len(coarse)
    assert not set(refined) & set(coarse)
    samples = plan.error_samples(known)
    assert len(samples) <= 16 and not set(samples) & set(coarse)


def test_smooth_map_is_exact_from_the_lattice_alone() -> None:
    rows, cols = torch.meshgrid(torch.arange(20.0), torch.arange(20.0), indexing="ij")
    model = WeightedSum((0.3 + 0.05 * rows - 0.02 * cols)[None]).eval()  # drops affine in the window position
    image = torch.ones(2, 1, 20, 20)
    kwargs = {"sliding_window_shapes": (1, 4, 4), "strides": (1, 2, 2), "target": 0}  # 9 x 9 windows, none cut
    method = OcclusionSensitivity(model, approximate=DrillDown(step=3, refine=0.0))
    approximate = method.attribute(image, **kwargs)
    assert method.last_windows_evaluated == 16 + 16  # 4 x 4 lattice (0, 3, 6, 8) + the error samples
    lattice = [r * 9 + c for r in (0, 3, 6, 8) for c in (0, 3, 6, 8)]
    assert method.last_evaluated.shape == (81,) and method.last_evaluated[lattice].all()
    assert int(method.last_evaluated.sum()) == 32
    assert method.last_approximation_error < 1e-5  # float32 rounding
    exact = Occlusion(model).attribute(image, **kwargs)
    assert relative_error(approximate, exact) < 1e-5


def test_refinement_finds_a_hot_spot_between_lattice_points() -> None:
    weight = torch.zeros(1, 20, 20)
    weight[0, 9, 9] = 1.0  # covered by windows 3 and 4 along each axis; only window (4, 4) is on the lattice
    model = WeightedSum(weight).eval()
    image = torch.rand(1, 1, 20, 20) + 0.5
    kwargs = {"sliding_window_shapes": (1, 4, 4), "strides": (1, 2, 2), "target": 0}
    exact = Occlusion(model).attribute(image, **kwargs)
    coarse_only = OcclusionSensitivity(model, approximate=DrillDown(step=2, refine=0.0)).attribute(image, **kwargs)
    assert relative_error(coarse_only, exact) > 0.1  # interpolation alone smears the spot
    method = OcclusionSensitivity(model, approximate=DrillDown(step=2, refine=0.15))  # 9 of the 56 other windows
    assert relative_error(method.attribute(image, **kwargs), exact) < 1e-6
    assert method.last_approximation_error == 0.0


def test_full_refinement_equals_captum_on_both_engines_and_tuple_inputs() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(384, 4))
    model = model.eval()
    image = torch.randn(2, 3, 16, 16)
    kwargs = {"sliding_window_shapes": (3, 4, 4), "strides": (3, 2, 2), "target": [1, 3]}
    exact = Occlusion(model).attribute(image, **kwargs)
    for engine in ("incremental", "batched"):
        method = OcclusionSensitivity(model, engine=engine, approximate=DrillDown(step=3, refine=1.0))
        assert relative_error(method.attribute(image, **kwargs), exact) < 1e-5
        assert method.last_engine == engine and method.last_windows_evaluated == 49
        assert method.last_approximation_error == 0.0

    def two_inputs(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return model(x) + y[:, :4]

    side = torch.randn(2, 10)
    windows, strides = ((3, 4, 4), (3,)), ((3, 2, 2), 2)
    reference = Occlusion(two_inputs).attribute((image, side), windows, strides, target=[1, 3])
    method = OcclusionSensitivity(two_inputs, approximate=DrillDown(step=2, refine=1.0))
    result = method.attribute((image, side), windows, strides, target=[1, 3])
    assert method.last_windows_evaluated == 49 + 5  # 7 x 7 image windows, 5 along the side input
    for ours, theirs in zip(result, reference, strict=True):
        assert relative_error(ours, theirs) < 1e-5
