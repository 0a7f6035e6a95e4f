"""The maps × epochs grid of a feature evolution, in the spirit of the paper's Fig. 4 (matplotlib imported lazily)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from zf_attr.attr.receptive_field import ReceptiveField
from zf_attr.viz import _matplotlib

if TYPE_CHECKING:
    from zf_attr.analysis.evolution.tracker import EvolutionSnapshot, FeatureEvolution

__all__ = ["plot_evolution"]


def plot_evolution(
    evolution: FeatureEvolution,
    channels: Sequence[int] | None = None,
    *,
    crop: bool = True,
    title: str | None = None,
    tile_inches: float = 1.1,
) -> Any:
    """Draw the maps × epochs grid (rows: maps, columns: epochs) of ``evolution`` as a matplotlib ``Figure``.

    Each tile is the projection as a colour image, scaled on its own: grey is 0 and the largest
    ``|projection|`` in the tile reaches black or white (the paper's per-projection contrast). Below each
    tile: the activation value and the probe image it came from.

    Args:
        evolution: a :class:`~zf_attr.analysis.FeatureEvolution` with at least one snapshot.
        channels: the maps to draw (a subset of the recorded ones, in this order); ``None`` for all.
        crop: cut each projection to its receptive field (a field-sized window, padded with grey at image
            borders); ``False`` or no field known shows the whole image.
        title: figure title; by default it names the layer.
        tile_inches: size of one tile.

    Returns:
        The ``matplotlib.figure.Figure`` (Agg canvas; pyplot is not used).

    Example:
        >>> import torch
        >>> from zf_attr.analysis import FeatureEvolution
        >>> model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU())
        >>> evolution = FeatureEvolution("0", torch.randn(2, 3, 12, 12), channels=[0, 1])
        >>> evolution(1, model)
        >>> len(plot_evolution(evolution).axes)
        2
    """
    if not evolution.snapshots:
        raise ValueError("nothing recorded yet; call the callback at a chosen epoch first")
    recorded = evolution.snapshots[0].channels.tolist()
    channels = recorded if channels is None else list(channels)
    missing = [channel for channel in channels if channel not in recorded]
    if missing or not channels:
        raise ValueError(f"channels {missing or channels} are not among the recorded maps {recorded}")
    rows = [recorded.index(channel) for channel in channels]
    figure_class, canvas_class = _matplotlib()
    columns = len(evolution.snapshots)
    figure = figure_class(
        figsize=(tile_inches * columns + 0.8, (tile_inches + 0.22) * len(rows) + 0.8), layout="constrained"
    )
    canvas_class(figure)
    axes = figure.subplots(len(rows), columns, squeeze=False)
    for column, snapshot in enumerate(evolution.snapshots):
        axes[0, column].set_title(f"epoch {snapshot.epoch}", fontsize=9)
        for row, m in enumerate(rows):
            axis = axes[row, column]
            tile = _tile(snapshot, m, evolution.receptive_field if crop else None)
            axis.imshow(tile, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
            axis.set_xticks([])
            axis.set_yticks([])
            inactive = snapshot.inactive is not None and bool(snapshot.inactive[m])
            label = "a≤0: no feature" if inactive else f"a={float(snapshot.values[m]):.3g}"
            axis.set_xlabel(f"{label} · img {int(snapshot.images[m])}", fontsize=6, labelpad=1)
            if column == 0:
                axis.set_ylabel(f"map {channels[row]}", fontsize=8)
    what = "receptive-field crops" if crop and isinstance(evolution.receptive_field, ReceptiveField) else "whole images"
    figure.suptitle(
        title
        or f"Feature evolution of layer {evolution.layer!r}: each map's strongest activation over the probe set, "
        f"projected\n({what}; grey = 0, each tile scaled by its own max |projection|; a = activation)",
        fontsize=8,
    )
    return figure


def _tile(snapshot: EvolutionSnapshot, m: int, field: Any) -> np.ndarray:
    """The projection ``m`` as an ``(h, w, C)`` image in [0, 1], cropped to its receptive field if known."""
    projection = snapshot.projections[m].double()
    if isinstance(field, ReceptiveField) and not field.is_global and snapshot.boxes is not None:
        (row, col), (height, width) = snapshot.locations[m].tolist(), field.size
        top, left = field.jump[0] * row + field.lo[0], field.jump[1] * col + field.lo[1]
        padded = projection.new_zeros(projection.shape[0], height, width)
        y0, x0 = max(top, 0), max(left, 0)
        y1, x1 = min(top + height, projection.shape[1]), min(left + width, projection.shape[2])
        if y1 > y0 and x1 > x0:
            padded[:, y0 - top : y1 - top, x0 - left : x1 - left] = projection[:, y0:y1, x0:x1]
        projection = padded
    scale = float(projection.abs().max())
    image = 0.5 + 0.5 * projection / scale if scale > 0 else torch.full_like(projection, 0.5)
    image = image.clamp(0, 1).numpy().transpose(1, 2, 0)
    return image if image.shape[-1] in (3, 4) else image.mean(-1)
