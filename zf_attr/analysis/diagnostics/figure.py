"""Figures of the architecture diagnostics, in the spirit of the paper's Fig. 6 (matplotlib imported lazily).

One result: the first layer's filters, their energy per frequency band, each layer's map activity and the
aliasing indicators. Several results (e.g. ZFNet's 7×7/2 against AlexNet's 11×11/4 first layer): one row each.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from zf_attr.analysis.diagnostics.spectra import BAND_EDGES
from zf_attr.viz import _matplotlib

if TYPE_CHECKING:
    from zf_attr.analysis.diagnostics.study import FilterDiagnostics

__all__ = ["filter_grid", "save_diagnostics_comparison", "save_diagnostics_figure"]

_BANDS = [f"{lo:g}–{hi:g}" for lo, hi in zip(BAND_EDGES, [*BAND_EDGES[1:], 0.71], strict=True)]


def filter_grid(filters: Any, pad: int = 1) -> np.ndarray:
    """Tile filters ``(C_out, C_in, k, k)`` into one image, each filter scaled on its own to [0, 1] (grey = 0).

    Three input channels are shown in colour, others as the mean over input channels.

    Example:
        >>> import torch
        >>> filter_grid(torch.randn(5, 3, 4, 4)).shape
        (11, 16, 3)
    """
    weights = filters.detach().double().cpu().numpy()
    if weights.shape[1] != 3:
        weights = weights.mean(axis=1, keepdims=True).repeat(3, axis=1)
    count, _, height, width = weights.shape
    columns = math.ceil(math.sqrt(count))
    rows = math.ceil(count / columns)
    grid = np.ones(((height + pad) * rows + pad, (width + pad) * columns + pad, 3))
    for index in range(count):
        scale = np.abs(weights[index]).max()
        tile = 0.5 + 0.5 * weights[index] / scale if scale > 0 else np.full_like(weights[index], 0.5)
        top, left = pad + (index // columns) * (height + pad), pad + (index % columns) * (width + pad)
        grid[top : top + height, left : left + width] = tile.transpose(1, 2, 0)
    return grid


def _filters(axis: Any, result: FilterDiagnostics, label: str) -> None:
    first = result.layers[0]
    axis.imshow(filter_grid(result.filters), interpolation="nearest")
    axis.set_xticks([])
    axis.set_yticks([])
    dead, high = len(result.dead_filters[first]), len(result.high_frequency_filters)
    axis.set_title(f"{label} {first} filters ({result.kernels[first]}×{result.kernels[first]}, stride "
                   f"{result.strides[first]})\n{dead} dead, {high} high-frequency", fontsize=8)  # fmt: skip


def _bands(axis: Any, result: FilterDiagnostics, label: str) -> None:
    shares = result.band_energy.numpy()
    positions = np.arange(len(_BANDS))
    axis.bar(positions, shares.mean(axis=0), color="0.75", label="mean over filters")
    jitter = np.linspace(-0.25, 0.25, len(shares)) if len(shares) > 1 else np.zeros(1)
    for band in range(len(_BANDS)):
        axis.scatter(positions[band] + jitter, shares[:, band], s=6, color="tab:blue", alpha=0.6,
                     label="one filter" if band == 0 else None)  # fmt: skip
    white = _white_noise_shares()
    axis.scatter(positions, white, marker="_", s=400, color="tab:red", label="white noise", zorder=3)
    axis.set_xticks(positions, _BANDS, fontsize=7)
    axis.set_xlabel("frequency band (cycles/pixel)", fontsize=8)
    axis.set_ylabel("share of the filter's energy", fontsize=8)
    axis.set_ylim(0, 1)
    axis.set_title(f"{label} frequency content of {result.layers[0]}'s filters", fontsize=8)
    axis.legend(fontsize=6, frameon=False)


def _white_noise_shares(size: int = 64) -> np.ndarray:
    """Share of each band in a flat spectrum: the bands' areas in the frequency square."""
    frequencies = np.fft.fftfreq(size)
    radius = np.sqrt(frequencies[:, None] ** 2 + frequencies[None, :] ** 2)
    edges = [*BAND_EDGES, np.inf]
    return np.array([((radius >= lo) & (radius < hi)).mean() for lo, hi in itertools.pairwise(edges)])


def _activity(axis: Any, result: FilterDiagnostics, label: str, dead_rate: float) -> None:
    for index, layer in enumerate(result.layers):
        values = np.sort(result.activity[layer].numpy())
        axis.plot(np.linspace(0, 1, len(values)), np.maximum(values, 1e-4), lw=1.5, color=f"C{index}",
                  label=f"{layer}: {len(result.dead_filters[layer])} dead of {len(values)}")  # fmt: skip
    axis.axhline(max(dead_rate, 1e-4), color="tab:red", lw=0.8, ls="--", label="dead threshold")
    axis.set_yscale("log")
    axis.set_ylim(8e-5, 1.2)
    axis.set_xlabel("maps, sorted (fraction)", fontsize=8)
    axis.set_ylabel("fraction of probe positions active", fontsize=8)
    axis.set_title(f"{label} map activity on {result.probes} probe images", fontsize=8)
    axis.legend(fontsize=6, frameon=False)


def _aliasing(axis: Any, result: FilterDiagnostics, label: str) -> None:
    positions = np.arange(len(result.layers))
    nyquist = [result.nyquist_energy[layer] for layer in result.layers]
    stride = [result.stride_aliasing[layer] for layer in result.layers]
    axis.bar(positions - 0.2, nyquist, 0.4, label="input energy near Nyquist (≥ 3/8)")
    axis.bar(positions + 0.2, stride, 0.4, label="response energy above the stride's Nyquist")
    axis.set_xticks(positions, [f"{layer}\n/{result.strides[layer]}" for layer in result.layers], fontsize=7)
    axis.set_ylabel("share of spectral energy", fontsize=8)
    axis.set_ylim(0, max(0.05, *nyquist, *stride) * 1.25)
    axis.set_title(f"{label} aliasing indicators", fontsize=8)
    axis.legend(fontsize=6, frameon=False)


def save_diagnostics_figure(
    result: FilterDiagnostics, path: str | Path, *, dpi: int = 100, dead_rate: float = 1e-3, title: str | None = None
) -> Path:
    """Save the four panels of one result: (a) filters, (b) frequency bands, (c) map activity, (d) aliasing.

    Args:
        result: from :func:`~zf_attr.analysis.filter_diagnostics`.
        path: where to write (the parent folder must exist).
        dpi: resolution.
        dead_rate: the threshold line drawn in (c) (the one the diagnostics used).
        title: figure title.

    Returns:
        The path written.

    Example:
        >>> import tempfile, torch
        >>> from zf_attr.analysis import filter_diagnostics
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 5, stride=2), torch.nn.ReLU(), torch.nn.Conv2d(4, 4, 3))
        >>> result = filter_diagnostics(net, torch.randn(2, 3, 24, 24))
        >>> save_diagnostics_figure(result, Path(tempfile.mkdtemp()) / "d.png").name
        'd.png'
    """
    figure_class, canvas_class = _matplotlib()
    figure = figure_class(figsize=(15, 3.8), layout="constrained")
    canvas_class(figure)
    axes = figure.subplots(1, 4, gridspec_kw={"width_ratios": [1.0, 1.2, 1.2, 1.0]})
    _filters(axes[0], result, "(a)")
    _bands(axes[1], result, "(b)")
    _activity(axes[2], result, "(c)", dead_rate)
    _aliasing(axes[3], result, "(d)")
    figure.suptitle(title or "Architecture diagnostics (as Zeiler & Fergus Fig. 6)", fontsize=10)
    path = Path(path)
    figure.savefig(path, dpi=dpi)
    return path


def save_diagnostics_comparison(
    results: Mapping[str, FilterDiagnostics],
    path: str | Path,
    *,
    dpi: int = 100,
    dead_rate: float = 1e-3,
    title: str | None = None,
) -> Path:
    """Save one row of the four panels per result (e.g. two first-layer designs), labelled by the mapping's keys.

    Returns:
        The path written.
    """
    if not results:
        raise ValueError("results is empty; pass at least one FilterDiagnostics")
    figure_class, canvas_class = _matplotlib()
    figure = figure_class(figsize=(15, 3.6 * len(results) + 0.4), layout="constrained")
    canvas_class(figure)
    axes = figure.subplots(len(results), 4, squeeze=False, gridspec_kw={"width_ratios": [1.0, 1.2, 1.2, 1.0]})
    for row, (name, result) in enumerate(results.items()):
        letter = chr(97 + row)
        _filters(axes[row, 0], result, f"({letter}1) {name}:")
        _bands(axes[row, 1], result, f"({letter}2)")
        _activity(axes[row, 2], result, f"({letter}3)", dead_rate)
        _aliasing(axes[row, 3], result, f"({letter}4)")
    figure.suptitle(title or "First-layer designs compared (as Zeiler & Fergus Fig. 6)", fontsize=10)
    path = Path(path)
    figure.savefig(path, dpi=dpi)
    return path
