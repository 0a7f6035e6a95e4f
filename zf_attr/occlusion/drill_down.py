"""Coarse-then-fine occlusion (Krypton's adaptive drill-down): a coarse lattice of windows, then the hot spots.

A coarse lattice of the windows is evaluated first, then only the windows where the coarse map is strong or
changes fast; the rest are interpolated.

The windows of a sweep form a grid (:attr:`~zf_attr.occlusion.windows.WindowGrid.grid_shape`). A
:class:`DrillDown` with ``step=s`` first evaluates every ``s``-th window along each axis (and the last one, so
the lattice spans the grid). Every other window lies in a cell of that lattice; its **priority** is the largest
score drop at the cell's corners plus the spread of the drops there (both in the units of the score, the larger
over the examples). The ``refine`` fraction of those windows with the highest priority is evaluated next. The
windows still not evaluated get the multilinear interpolation of the lattice's drops. Evaluated windows are
exact, so the attribution is exact wherever the map is strong or has an edge, and smooth elsewhere.

The error is measured, not assumed: after the sweep up to :data:`ERROR_SAMPLES` interpolated windows, spread
over the grid, are evaluated exactly too (and keep their exact values); the largest difference between their
interpolated and exact drops, relative to the largest exact drop of the sweep, is reported.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from zf_attr.occlusion.windows import WindowGrid

__all__ = ["ERROR_SAMPLES", "DrillDown", "DrillDownPlan"]

#: Interpolated windows evaluated exactly after a drill-down sweep to measure its error.
ERROR_SAMPLES = 16


@dataclass(frozen=True)
class DrillDown:
    """Coarse-then-fine occlusion: the ``approximate=`` setting of :class:`~zf_attr.OcclusionSensitivity`.

    Args:
        step: evaluate every ``step``-th window along each axis first (at least 2).
        refine: fraction in ``[0, 1]`` of the remaining windows evaluated next, those where the coarse map is
            strongest or changes most; the others are interpolated. ``1`` evaluates every window (exact).

    Example:
        >>> import torch, torchvision
        >>> from zf_attr import DrillDown, OcclusionSensitivity
        >>> model = torchvision.models.resnet18(weights=None, num_classes=10).eval()
        >>> occlusion = OcclusionSensitivity(model, approximate=DrillDown(step=3, refine=0.2))
        >>> maps = occlusion.attribute(torch.randn(1, 3, 64, 64), (3, 8, 8), strides=(3, 4, 4), target=1)
        >>> occlusion.last_windows_evaluated < 225, occlusion.last_approximation_error >= 0
        (True, True)
    """

    step: int = 3
    refine: float = 0.1

    def __post_init__(self) -> None:
        if isinstance(self.step, bool) or not isinstance(self.step, int) or self.step < 2:
            raise ValueError(f"DrillDown step must be an int >= 2 (every step-th window first), got {self.step!r}")
        if isinstance(self.refine, bool) or not isinstance(self.refine, (int, float)) or not 0 <= self.refine <= 1:
            raise ValueError(
                f"DrillDown refine must be a fraction in [0, 1] of the remaining windows, got {self.refine!r}"
            )


def _lattice(count: int, step: int) -> list[int]:
    """Coarse positions along an axis of ``count`` windows: every ``step``-th and the last."""
    return sorted(set(range(0, count, step)) | {count - 1})


def _neighbours(count: int, lattice: list[int]) -> tuple[Tensor, Tensor, Tensor]:
    """Per position: the lattice index at or below, at or above, and the weight of the one above."""
    low, high, weight = [], [], []
    for i in range(count):
        a = max(j for j, p in enumerate(lattice) if p <= i)
        b = min(j for j, p in enumerate(lattice) if p >= i)
        low.append(a)
        high.append(b)
        weight.append(0.0 if a == b else (i - lattice[a]) / (lattice[b] - lattice[a]))
    return torch.tensor(low), torch.tensor(high), torch.tensor(weight, dtype=torch.float64)


class DrillDownPlan:
    """Which windows of one sweep a :class:`DrillDown` evaluates, and the interpolation of the others.

    Window ids are global across the grids of a tuple input (input 0's windows first), as everywhere in
    :mod:`zf_attr.occlusion`.

    Args:
        grids: one grid per input.
        setting: the drill-down.

    Example:
        >>> from zf_attr.occlusion import WindowGrid
        >>> plan = DrillDownPlan([WindowGrid((1, 7, 7), (1, 1, 1), (1, 1, 1))], DrillDown(step=3, refine=0.5))
        >>> plan.coarse_ids  # rows and columns 0, 3, 6 of the 7 x 7 grid
        [0, 3, 6, 21, 24, 27, 42, 45, 48]
        >>> plan.num_refined  # half of the other 40
        20
    """

    def __init__(self, grids: list[WindowGrid] | tuple[WindowGrid, ...], setting: DrillDown) -> None:
        self.grids, self.setting = list(grids), setting
        self.offsets = [0]
        for grid in self.grids:
            self.offsets.append(self.offsets[-1] + grid.num_windows)
        self.lattices = [[_lattice(count, setting.step) for count in grid.grid_shape] for grid in self.grids]
        self.coarse_ids: list[int] = []
        for grid, lattice, offset in zip(self.grids, self.lattices, self.offsets, strict=False):
            local = torch.arange(grid.num_windows).reshape(grid.grid_shape)
            for axis, positions in enumerate(lattice):
                local = local.index_select(axis, torch.tensor(positions))
            self.coarse_ids += sorted((local.flatten() + offset).tolist())
        remaining = self.offsets[-1] - len(self.coarse_ids)
        self.num_refined = math.ceil(setting.refine * remaining - 1e-9)

    def _expand(self, drops: Tensor, index: int, combine: str) -> Tensor:
        """Grid ``index``'s lattice values spread over its whole grid: ``(*grid_shape, N)``."""
        grid, lattice, offset = self.grids[index], self.lattices[index], self.offsets[index]
        values = drops[offset : offset + grid.num_windows].reshape(*grid.grid_shape, -1)
        for axis, positions in enumerate(lattice):
            values = values.index_select(axis, torch.tensor(positions, device=drops.device))
        for axis, positions in enumerate(lattice):
            low, high, weight = (t.to(drops.device) for t in _neighbours(grid.grid_shape[axis], positions))
            a, b = values.index_select(axis, low), values.index_select(axis, high)
            if combine == "max":
                values = torch.maximum(a, b)
            elif combine == "min":
                values = torch.minimum(a, b)
            else:
                shape = [1] * values.dim()
                shape[axis] = -1
                w = weight.to(values.dtype).reshape(shape)
                values = a * (1 - w) + b * w
        return values

    def refinement(self, drops: Tensor) -> list[int]:
        """The windows to evaluate after the coarse ones, from the coarse drops ``(num_windows, N)``."""
        if self.num_refined == 0:
            return []
        priorities = []
        for index in range(len(self.grids)):
            high, low = self._expand(drops, index, "max"), self._expand(drops, index, "min")
            priority = torch.maximum(high.abs(), low.abs()) + (high - low)
            priorities.append(priority.amax(-1).flatten())
        priority = torch.cat(priorities).double()
        priority[torch.tensor(self.coarse_ids, device=priority.device)] = -math.inf
        return sorted(priority.topk(self.num_refined).indices.tolist())

    def interpolate(self, drops: Tensor, evaluated: Tensor) -> Tensor:
        """``drops`` with every window not ``evaluated`` replaced by the interpolation of the lattice."""
        smooth = torch.cat([self._expand(drops, i, "lerp").flatten(0, -2) for i in range(len(self.grids))])
        return torch.where(evaluated[:, None].to(drops.device), drops, smooth)

    def error_samples(self, evaluated: Tensor) -> list[int]:
        """Up to :data:`ERROR_SAMPLES` interpolated windows, evenly spread over the sweep."""
        candidates = torch.nonzero(~evaluated).flatten().tolist()
        if len(candidates) <= ERROR_SAMPLES:
            return candidates
        return sorted(
            {candidates[round(i * (len(candidates) - 1) / (ERROR_SAMPLES - 1))] for i in range(ERROR_SAMPLES)}
        )
