"""Seed rows of feature-map projections: the strongest activations of chosen maps, and user seeds checked."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

__all__ = ["check_range", "seed_rows", "strongest"]


def strongest(activation: Tensor, chosen: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """Values and flat locations ``(N, len(chosen) * k)`` of each chosen map's ``k`` strongest activations."""
    maps = activation[:, chosen.to(activation.device)].flatten(2)  # (N, channels, h*w)
    if k > maps.shape[-1]:
        raise ValueError(f"k={k} exceeds the {maps.shape[-1]} locations of each map of the layer")
    values, flat = maps.topk(k, dim=-1)
    return values.flatten(1), flat.flatten(1)


def seed_rows(seeds: Any, count: int) -> Tensor:
    """Validated ``(S, 3)`` or ``(S, 4)`` int64 copy of ``seeds`` (image indices checked against ``count``)."""
    if not isinstance(seeds, Tensor):
        raise TypeError(f"seeds must be an integer tensor (S, 3) or (S, 4), got {type(seeds).__name__}")
    if seeds.is_floating_point() or seeds.is_complex() or seeds.dtype == torch.bool:
        raise ValueError(f"seeds must hold integer indices (int64), got dtype {seeds.dtype}")
    if seeds.dim() != 2 or seeds.shape[1] not in (3, 4):
        raise ValueError(
            f"seeds has shape {tuple(seeds.shape)}; pass (S, 3) rows (image, channel, flat_location) or (S, 4) "
            "rows (image, channel, row, col)"
        )
    rows = seeds.detach().to("cpu", torch.long).clone()
    check_range(rows, 0, count, "image index", f"inputs holds {count} images", seeds)
    return rows


def check_range(rows: Tensor, column: int, stop: int, what: str, why: str, seeds: Tensor) -> None:
    bad = ((rows[:, column] < 0) | (rows[:, column] >= stop)).nonzero()
    if len(bad):
        s = int(bad[0])
        raise ValueError(
            f"seeds[{s}] = {seeds[s].tolist()} has {what} {int(rows[s, column])}, out of range [0, {stop}): "
            f"{why} ({len(bad)} bad row(s) in all)"
        )
