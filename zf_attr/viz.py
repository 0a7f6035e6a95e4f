"""Turn attributions into pictures: normalised heat maps, displayable images and labelled comparison grids.

Matplotlib is an optional dependency (``pip install "zf-attr[viz]"``); it is imported only when a figure is
drawn, and only through its object-oriented API with the Agg canvas, so the caller's pyplot backend and
state are never touched.

Example:
    >>> import torch
    >>> from zf_attr.viz import attribution_to_image
    >>> heat = attribution_to_image(torch.randn(3, 8, 8))
    >>> heat.shape, float(heat.min()) >= 0.0, float(heat.max()) <= 1.0
    ((8, 8), True, True)

"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from torch import Tensor

__all__ = ["SIGNS", "attribution_to_image", "image_to_display", "save_attribution_grid"]

#: ``"absolute"``: magnitude, summed over channels, in [0, 1]. ``"all"``: signed sum over channels, in [-1, 1].
SIGNS: tuple[str, ...] = ("absolute", "all")

_INSTALL_HINT = 'matplotlib is needed to draw figures; install it with: pip install "zf-attr[viz]"'


def _matplotlib() -> tuple[Any, Any]:
    """Import matplotlib lazily; return its ``Figure`` class and the Agg canvas class."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as error:
        raise ImportError(_INSTALL_HINT) from error
    return Figure, FigureCanvasAgg


def _to_numpy(tensor: Tensor | np.ndarray) -> np.ndarray:
    if isinstance(tensor, Tensor):
        return tensor.detach().to("cpu").double().numpy()
    return np.asarray(tensor, dtype=np.float64)


def attribution_to_image(
    attr: Tensor | np.ndarray, sign: str = "absolute", *, clip_percentile: float | None = 99.5
) -> np.ndarray:
    """Reduce a ``(C, H, W)`` or ``(H, W)`` attribution to an ``(H, W)`` map normalised for display.

    Args:
        attr: one example's attribution (no batch dimension).
        sign: ``"absolute"``: ``sum_c |attr|`` scaled to [0, 1]; ``"all"``: ``sum_c attr`` scaled to [-1, 1]
            keeping zero at zero.
        clip_percentile: the value at this percentile of the magnitudes maps to 1 (larger ones are clipped),
            so that a few extreme pixels do not hide the rest; ``None`` scales by the maximum.

    Returns:
        A ``float64`` array ``(H, W)``. An all-zero (or non-finite) attribution gives zeros, never NaN.

    Raises:
        ValueError: ``sign`` is unknown or ``attr`` is not 2-D or 3-D.

    """
    if sign not in SIGNS:
        raise ValueError(f"sign={sign!r} is not known; choose one of {list(SIGNS)}")
    values = _to_numpy(attr)
    if values.ndim not in (2, 3):
        raise ValueError(f"attr must be (C, H, W) or (H, W), got shape {tuple(values.shape)}")
    values = np.nan_to_num(values, nan=0.0, posinf=0.0, neginf=0.0)
    if values.ndim == 3:
        values = np.abs(values).sum(axis=0) if sign == "absolute" else values.sum(axis=0)
    elif sign == "absolute":
        values = np.abs(values)
    magnitude = np.abs(values)
    scale = float(np.percentile(magnitude, clip_percentile) if clip_percentile is not None else magnitude.max())
    if not scale > 0.0:  # percentile can be 0 for sparse maps: fall back to the maximum
        scale = float(magnitude.max())
    if not scale > 0.0:
        return np.zeros_like(values)
    low = 0.0 if sign == "absolute" else -1.0
    return np.clip(values / scale, low, 1.0)


def image_to_display(
    image: Tensor | np.ndarray, mean: Sequence[float] | None = None, std: Sequence[float] | None = None
) -> np.ndarray:
    """Turn a ``(C, H, W)`` image tensor into an ``(H, W, C)`` array in [0, 1] for ``imshow``.

    Args:
        image: one image, channels first (1 or 3 channels).
        mean: per-channel mean the image was normalised with; undone when given.
        std: per-channel standard deviation the image was normalised with; undone when given.

    Returns:
        A ``float64`` array ``(H, W, C)`` clipped to [0, 1]. Without ``mean``/``std`` an image outside [0, 1]
        is min-max scaled instead of clipped.

    """
    values = _to_numpy(image)
    if values.ndim != 3:
        raise ValueError(f"image must be (C, H, W), got shape {tuple(values.shape)}")
    channels = values.shape[0]
    if std is not None:
        values = values * np.asarray(std, dtype=np.float64).reshape(channels, 1, 1)
    if mean is not None:
        values = values + np.asarray(mean, dtype=np.float64).reshape(channels, 1, 1)
    if mean is None and std is None and (values.min() < 0.0 or values.max() > 1.0):
        span = values.max() - values.min()
        values = (values - values.min()) / span if span > 0 else np.zeros_like(values)
    return np.clip(np.nan_to_num(values), 0.0, 1.0).transpose(1, 2, 0)


def save_attribution_grid(
    images: Tensor | Sequence[Tensor],
    attributions: Mapping[str, Tensor | Sequence[Tensor]],
    path: str | Path,
    title: str = "Attributions",
    *,
    row_labels: Sequence[str] | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    sign: str = "absolute",
    masks: Sequence[Tensor] | None = None,
    dpi: int = 120,
) -> Path:
    """Save a labelled grid: one row per image, the image first, then one column per attribution method.

    Every map is normalised on its own with :func:`attribution_to_image` and drawn with one shared colormap
    and colorbar, so columns compare by pattern, not by scale.

    Args:
        images: ``(N, C, H, W)`` tensor or N tensors ``(C, H, W)``.
        attributions: method name (the column title) to that method's N attributions, as an ``(N, C, H, W)``
            tensor or N tensors; a newline in a name breaks the title.
        path: where to write the figure (PNG by extension); parent folders must exist.
        title: figure title (may span several lines).
        row_labels: one label per image, shown left of it.
        mean: normalisation mean of ``images``, see :func:`image_to_display`.
        std: normalisation standard deviation of ``images``, see :func:`image_to_display`.
        sign: ``"absolute"`` (magnitude, ``inferno`` colormap) or ``"all"`` (signed, ``RdBu_r``).
        masks: one ``(H, W)`` boolean object mask per image, outlined in cyan on every panel of its row.
        dpi: resolution of the saved file.

    Returns:
        The path written, as a :class:`~pathlib.Path`.

    Raises:
        ImportError: matplotlib is not installed.
        ValueError: the numbers of images, attributions and labels differ.

    """
    figure_class, canvas_class = _matplotlib()
    rows = len(images)
    if rows == 0:
        raise ValueError("images is empty; nothing to draw")
    for name, maps in attributions.items():
        if len(maps) != rows:
            raise ValueError(f"method {name!r} has {len(maps)} attributions for {rows} images")
    if masks is not None and len(masks) != rows:
        raise ValueError(f"masks has {len(masks)} masks for {rows} images")
    if row_labels is not None and len(row_labels) != rows:
        raise ValueError(f"row_labels has {len(row_labels)} labels for {rows} images")
    columns = 1 + len(attributions)
    cmap, vmin = ("inferno", 0.0) if sign == "absolute" else ("RdBu_r", -1.0)

    figure = figure_class(figsize=(2.1 * columns + 0.9, 2.1 * rows + 1.1), layout="constrained")
    canvas_class(figure)
    axes = figure.subplots(rows, columns, squeeze=False)
    heat = None
    for row in range(rows):
        axes[row, 0].imshow(image_to_display(images[row], mean, std), interpolation="nearest")
        for column, maps in enumerate(attributions.values(), start=1):
            heat = axes[row, column].imshow(
                attribution_to_image(maps[row], sign), cmap=cmap, vmin=vmin, vmax=1.0, interpolation="nearest"
            )
        for axis in axes[row]:
            axis.set_xticks([])
            axis.set_yticks([])
            if masks is not None:
                outline = _to_numpy(masks[row]).astype(float)
                axis.contour(outline, levels=[0.5], colors="cyan", linewidths=0.8)
        if row_labels is not None:
            axes[row, 0].set_ylabel(row_labels[row], fontsize=10)
    for column, name in enumerate(["image", *attributions], start=0):
        axes[0, column].set_title(name, fontsize=10)
    if heat is not None:
        label = "|attribution|, per-map scale" if sign == "absolute" else "attribution, per-map scale"
        colorbar = figure.colorbar(heat, ax=axes[:, 1:].ravel().tolist(), shrink=0.8, pad=0.02)
        colorbar.set_label(label, fontsize=9)
    figure.suptitle(title, fontsize=11)
    path = Path(path)
    figure.savefig(path, dpi=dpi)
    return path
