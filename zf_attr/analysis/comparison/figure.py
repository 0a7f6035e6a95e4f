"""The comparison figure: rows = images, columns = the image and one map per method.

Two column types, each with one normalisation and one colour map for every panel of that type:

- **signed** (a method with any negative value: deconvnet, guided backprop, gradients, occlusion):
  the channel sum, divided by its 99.5th-percentile magnitude, clipped to [-1, 1], diverging ``RdBu_r`` with
  zero white;
- **non-negative** (Grad-CAM, ``|gradient|`` saliency, the baselines): ``sum_c |map|`` scaled to [0, 1] the same
  way, sequential ``inferno``.

Layer maps arrive already upsampled (see :func:`~zf_attr.analysis.compare`). Mask outlines (cyan) are drawn on
every panel when the comparison has masks, and the map's maximum point (the pointing game's point) is marked:
a green circle when it hits the object, a red cross when it misses.
"""

from __future__ import annotations

import io
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from torch import Tensor

from zf_attr.metrics import pointing_game
from zf_attr.viz import _matplotlib, attribution_to_image, image_to_display

if TYPE_CHECKING:
    from zf_attr.analysis.comparison.study import Comparison

__all__ = ["save_comparison_figure"]


def save_comparison_figure(
    comparison: Comparison,
    path: str | Path,
    *,
    methods: Sequence[str] | None = None,
    max_images: int | None = None,
    class_names: Sequence[str] | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    overlay: bool = False,
    title: str | None = None,
    tolerance: float | None = None,
    panel_size: float = 1.45,
    dpi: int = 100,
    palette: bool = False,
) -> Path:
    """Draw the images × methods grid of a :class:`~zf_attr.analysis.Comparison` and save it (PNG by extension).

    Args:
        comparison: the result of :func:`~zf_attr.analysis.compare`.
        path: the file to write; its folder must exist.
        methods: the columns to draw, in order (default: every method of the comparison).
        max_images: draw only the first ``max_images`` rows.
        class_names: names of the classes, for the row labels (default: class indices).
        mean: the per-channel mean the images were normalised with (undone for display).
        std: the per-channel standard deviation the images were normalised with.
        overlay: draw each map semi-transparently over a grey copy of the image.
        title: the figure title (default: a description of the normalisation).
        tolerance: the pointing-game tolerance of the hit/miss markers, in pixels (default: the comparison's).
        panel_size: the side of one panel in inches.
        dpi: the resolution of the saved file.
        palette: save a 256-colour PNG (needs Pillow): about a third of the size, for documentation.

    Returns:
        The path written.

    Raises:
        ValueError: an unknown method name, ``max_images`` < 1.
        ImportError: matplotlib is not installed.

    Example:
        >>> import torch, tempfile, pathlib
        >>> from zf_attr.analysis import compare
        >>> model = torch.nn.Sequential(torch.nn.Conv2d(3, 2, 3), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
        ...                             torch.nn.Flatten()).eval()
        >>> result = compare(model, torch.rand(2, 3, 16, 16), [0, 1], ["gradient"], metrics=["deletion"], steps=2)
        >>> with tempfile.TemporaryDirectory() as folder:
        ...     save_comparison_figure(result, pathlib.Path(folder) / "grid.png").name
        'grid.png'
    """
    figure_class, canvas_class = _matplotlib()
    names = list(comparison.methods if methods is None else methods)
    unknown = [name for name in names if name not in comparison.maps]
    if unknown:
        raise ValueError(f"methods names {unknown}, not in the comparison; choose from {comparison.methods}")
    rows = comparison.images.shape[0]
    if max_images is not None:
        if isinstance(max_images, bool) or not isinstance(max_images, int) or max_images < 1:
            raise ValueError(f"max_images must be an int >= 1, got {max_images!r}")
        rows = min(rows, max_images)
    signed = {name: bool((comparison.maps[name] < 0).any()) for name in names}
    columns = 1 + len(names)

    figure = figure_class(figsize=(panel_size * columns + 0.6, panel_size * rows + 1.5), layout="constrained")
    canvas_class(figure)
    grid = figure.add_gridspec(rows + 1, columns, height_ratios=[1.0] * rows + [0.07])
    images = {}
    for row in range(rows):
        picture = image_to_display(comparison.images[row], mean, std)
        images[row] = picture
        axis = figure.add_subplot(grid[row, 0])
        axis.imshow(picture, interpolation="nearest")
        _finish(axis, comparison, row)
        target = int(comparison.targets[row])
        axis.set_ylabel(class_names[target] if class_names is not None else f"class {target}", fontsize=9)
        if row == 0:
            axis.set_title("image", fontsize=9)
    mappables = {}
    from matplotlib.patheffects import withStroke

    outline = withStroke(linewidth=3, foreground="black")
    for column, name in enumerate(names, start=1):
        maps = comparison.maps[name][:rows]
        points = _points(comparison, maps, comparison.tolerance if tolerance is None else tolerance)
        for row in range(rows):
            axis = figure.add_subplot(grid[row, column])
            heat = attribution_to_image(maps[row], "all" if signed[name] else "absolute")
            if overlay:
                axis.imshow(images[row].mean(axis=2), cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
            mappables[signed[name]] = axis.imshow(
                heat,
                cmap="RdBu_r" if signed[name] else "inferno",
                vmin=-1.0 if signed[name] else 0.0,
                vmax=1.0,
                alpha=0.65 if overlay else None,
                interpolation="nearest",
            )
            _finish(axis, comparison, row)
            if points is not None:
                (y, x), hit = points[row]
                marker = {"marker": "o", "markerfacecolor": "none"} if hit else {"marker": "x"}
                axis.plot(
                    [x], [y], color="lime" if hit else "red", markersize=7, markeredgewidth=1.6,
                    path_effects=[outline], **marker,
                )  # fmt: skip
            if row == 0:
                axis.set_title(f"{name}\n({'signed' if signed[name] else '≥ 0'})", fontsize=9)
    _colour_bars(figure, grid, columns, mappables)
    text = title or "Attribution maps, each scaled by its own 99.5th-percentile magnitude" + (
        "; cyan: object mask, marker: map maximum (green hit / red miss)" if comparison.masks is not None else ""
    )
    characters = max(30, int(figure.get_figwidth() * 11))  # about 11 characters per inch at 10 pt
    figure.suptitle("\n".join(textwrap.wrap(text, characters)), fontsize=10)
    path = Path(path)
    if not palette:
        figure.savefig(path, dpi=dpi)
        return path
    from PIL import Image

    buffer = io.BytesIO()
    figure.savefig(buffer, dpi=dpi, format="png")
    buffer.seek(0)
    with Image.open(buffer) as picture:
        picture.convert("RGB").quantize(256, method=Image.Quantize.FASTOCTREE).save(path, optimize=True)
    return path


def _finish(axis: Any, comparison: Comparison, row: int) -> None:
    axis.set_xticks([])
    axis.set_yticks([])
    if comparison.masks is not None:
        outline = comparison.masks[row].numpy().astype(float)
        axis.contour(outline, levels=[0.5], colors="cyan", linewidths=0.7)


def _points(comparison: Comparison, maps: Tensor, tolerance: float) -> list[tuple[tuple[int, int], bool]] | None:
    rows = len(maps)
    if comparison.masks is None and comparison.boxes is None:
        return None
    masks = None if comparison.masks is None else comparison.masks[:rows]
    boxes = None if comparison.boxes is None else comparison.boxes[:rows]
    result = pointing_game(maps, masks=masks, boxes=boxes, tolerance=tolerance)
    return [((int(p[0]), int(p[1])), bool(h)) for p, h in zip(result.points, result.hits, strict=True)]


def _colour_bars(figure: Any, grid: Any, columns: int, mappables: dict[bool, Any]) -> None:
    labels = {True: "signed map / its 99.5th-pct |value| (0 = white)", False: "|map| / its 99.5th percentile"}
    kinds = [kind for kind in (True, False) if kind in mappables]
    spans = np.array_split(np.arange(1, columns), len(kinds)) if kinds else []
    for kind, span in zip(kinds, spans, strict=True):
        axis = figure.add_subplot(grid[-1, int(span[0]) : int(span[-1]) + 1])
        bar = figure.colorbar(mappables[kind], cax=axis, orientation="horizontal")
        bar.set_label(labels[kind], fontsize=8)
        bar.ax.tick_params(labelsize=7)
