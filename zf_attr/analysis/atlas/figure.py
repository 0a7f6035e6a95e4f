"""The atlas figure in the style of the paper's Fig. 2 (matplotlib imported lazily, Agg canvas only).

For each channel a block: its ``k`` projections on the left, the ``k`` receptive-field patches of the images
on the right, both in strongest-first order, each tile labelled with the activation value and the image id.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from torch import Tensor

from zf_attr.viz import _matplotlib, image_to_display

if TYPE_CHECKING:
    from zf_attr.analysis.atlas.projection import Atlas

__all__ = ["plot_atlas", "projection_to_display", "save_atlas"]


def projection_to_display(projection: Tensor) -> np.ndarray:
    """A signed projection ``(C, h, w)`` as an RGB array in [0, 1]: grey is zero, contrast scaled per tile.

    The 99.5th percentile of the magnitudes maps to full contrast (larger values are clipped), so that a few
    extreme pixels do not grey out the rest.

    Example:
        >>> import torch
        >>> shown = projection_to_display(torch.tensor([[[1.0, -2.0]], [[0.0, 0.0]], [[0.0, 2.0]]]))
        >>> shown.shape, shown[0, 1].tolist()
        ((1, 2, 3), [0.0, 0.5, 1.0])
    """
    values = projection.detach().cpu().double().numpy()
    if values.shape[0] == 1:
        values = np.repeat(values, 3, axis=0)
    magnitude = np.abs(values)
    scale = float(np.percentile(magnitude, 99.5)) or float(magnitude.max())
    shown = 0.5 + values / (2 * scale) if scale > 0 else np.full_like(values, 0.5)
    return np.clip(shown, 0.0, 1.0).transpose(1, 2, 0)


def _tile(atlas: Atlas, row: int, slot: int, picture: np.ndarray) -> np.ndarray:
    """RGBA tile of the field's full size: a patch clipped at the image border sits where the field does."""
    field = atlas.field
    height, width = picture.shape[:2]
    if field is None:
        tile = np.zeros((height, width, 4))
        tile[..., :3], tile[..., 3] = picture, 1.0
        return tile
    y, x = atlas.locations[row, slot].tolist()
    top = int(atlas.boxes[row, slot, 1]) - (field.jump[0] * y + field.lo[0])
    left = int(atlas.boxes[row, slot, 0]) - (field.jump[1] * x + field.lo[1])
    full_height, full_width = field.size
    tile = np.zeros((max(full_height, top + height), max(full_width, left + width), 4))
    tile[top : top + height, left : left + width, :3] = picture
    tile[top : top + height, left : left + width, 3] = 1.0
    return tile


def plot_atlas(
    atlas: Atlas,
    channels: Sequence[int] | None = None,
    *,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    blocks_per_row: int = 2,
    tile_inches: float = 0.85,
) -> Any:
    """Draw the atlas as a matplotlib ``Figure`` (not attached to pyplot).

    Args:
        atlas: from :func:`~zf_attr.analysis.project_top_k`.
        channels: the channels to draw, in this order (default: all of the atlas).
        mean: normalisation mean of the images, to show the patches in their colours.
        std: normalisation standard deviation of the images.
        blocks_per_row: channel blocks side by side.
        tile_inches: size of one tile.

    Returns:
        The figure.

    Raises:
        ValueError: a channel the atlas does not hold.

    Example:
        >>> import torch, torchvision
        >>> from zf_attr.analysis import mine_top_k, project_top_k
        >>> model = torchvision.models.vgg11().eval()
        >>> images = torch.randn(3, 3, 32, 32)
        >>> mined = mine_top_k(model, "features.2", images, k=3, channels=[1, 2], show_progress=False)
        >>> atlas = project_top_k(model, mined, images)
        >>> figure = plot_atlas(atlas, channels=[2])
        >>> [sub._suptitle.get_text() for sub in figure.subfigs]
        ['features.2 · channel 2']
    """
    figure_class, canvas_class = _matplotlib()
    order = list(range(len(atlas.channels))) if channels is None else [_row(atlas, c) for c in channels]
    if not order:
        raise ValueError("channels is empty; pass at least one channel of the atlas")
    k = atlas.values.shape[1]
    grid_cols = math.ceil(math.sqrt(k))
    grid_rows = math.ceil(k / grid_cols)
    columns = min(blocks_per_row, len(order))
    rows = math.ceil(len(order) / columns)
    block_width = 2 * grid_cols * tile_inches + 0.5
    block_height = grid_rows * (tile_inches + 0.22) + 0.6
    figure = figure_class(figsize=(columns * block_width, rows * block_height + 0.6), layout="constrained")
    canvas_class(figure)
    blocks = np.atleast_1d(figure.subfigures(rows, columns, squeeze=False).ravel())
    for block, row in zip(blocks, order, strict=False):
        block.suptitle(f"{atlas.layer} · channel {int(atlas.channels[row])}", fontsize=9, fontweight="bold")
        halves = block.subfigures(1, 2, wspace=0.04)
        for half, name, pictures in (
            (halves[0], "projections", atlas.projections[row]),
            (halves[1], "image patches", atlas.patches[row]),
        ):
            half.suptitle(name, fontsize=7)
            axes = np.atleast_1d(half.subplots(grid_rows, grid_cols, squeeze=False)).ravel()
            for slot, axis in enumerate(axes):
                axis.set_xticks([])
                axis.set_yticks([])
                for spine in axis.spines.values():
                    spine.set_linewidth(0.3)
                picture = pictures[slot] if slot < k else None
                if picture is None:
                    axis.set_axis_off()
                    continue
                shown = projection_to_display(picture) if name == "projections" else _patch(picture, mean, std)
                axis.imshow(_tile(atlas, row, slot, shown), interpolation="nearest")
                value, image_id = float(atlas.values[row, slot]), int(atlas.image_ids[row, slot])
                axis.set_title(f"{value:.3g} · #{image_id}", fontsize=5.5, pad=1.5)
    for block in blocks[len(order) :]:
        block.set_facecolor("none")
    text = (
        f"Top-{k} activations of {atlas.layer}, strongest first: deconvnet projections (signed, grey = 0, "
        "per-tile contrast) and the receptive fields in the images (white: beyond the image border); "
        "tiles: activation · image id"
    )
    characters = max(30, int(figure.get_figwidth() * 14))  # about 14 characters per inch at 8 pt
    figure.suptitle("\n".join(textwrap.wrap(text, characters)), fontsize=8)
    return figure


def save_atlas(
    atlas: Atlas,
    path: str | Path,
    channels: Sequence[int] | None = None,
    *,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    blocks_per_row: int = 2,
    dpi: int = 150,
) -> Path:
    """Draw the atlas with :func:`plot_atlas` and save it (PNG by extension); returns the path.

    Example:
        >>> import tempfile, pathlib, torch, torchvision
        >>> from zf_attr.analysis import mine_top_k, project_top_k, save_atlas
        >>> model = torchvision.models.resnet18().eval()
        >>> images = torch.randn(4, 3, 64, 64)
        >>> mined = mine_top_k(model, "layer1", images, k=4, channels=[1], show_progress=False)
        >>> atlas = project_top_k(model, mined, images)
        >>> save_atlas(atlas, pathlib.Path(tempfile.mkdtemp()) / "atlas.png").stat().st_size > 0
        True
    """
    figure = plot_atlas(atlas, channels, mean=mean, std=std, blocks_per_row=blocks_per_row)
    path = Path(path)
    figure.savefig(path, dpi=dpi)
    return path


def _patch(patch: Tensor, mean: Sequence[float] | None, std: Sequence[float] | None) -> np.ndarray:
    return image_to_display(patch, mean, std)


def _row(atlas: Atlas, channel: int) -> int:
    hits = (atlas.channels == channel).nonzero()
    if hits.numel() == 0:
        raise ValueError(f"channel {channel} is not in the atlas; it holds {atlas.channels.tolist()[:12]}")
    return int(hits[0, 0])
