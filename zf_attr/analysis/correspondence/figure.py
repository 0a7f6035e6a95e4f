"""The figure of a correspondence study: Δ per part and layer against random regions, and the occluded parts."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from zf_attr.viz import _matplotlib, image_to_display

if TYPE_CHECKING:
    from zf_attr.analysis.correspondence.study import CorrespondenceStudy

__all__ = ["save_correspondence_figure"]


def save_correspondence_figure(
    study: CorrespondenceStudy,
    path: str | Path,
    *,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    examples: int = 3,
    dpi: int = 100,
) -> Path:
    """Save a bar chart of Δ (parts and random regions, per layer) beside example images with each part occluded.

    Args:
        study: the result of :func:`~zf_attr.analysis.correspondence_study`.
        path: where to write (the parent folder must exist).
        mean: normalisation mean of the images, to show them in their colours.
        std: normalisation standard deviation of the images.
        examples: images shown per part (at most the study's images).
        dpi: resolution.

    Returns:
        The path written.

    Example:
        >>> import tempfile, torch
        >>> from zf_attr.analysis import correspondence_study
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 2, 3), torch.nn.ReLU(), torch.nn.Flatten(),
        ...                           torch.nn.Linear(2 * 6 * 6, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
        >>> study = correspondence_study(net, torch.randn(2, 3, 8, 8), {"a": torch.tensor([[0, 0, 3, 3]] * 2)},
        ...                              layers=["0", "3"], random_draws=2)
        >>> save_correspondence_figure(study, Path(tempfile.mkdtemp()) / "c.png").name
        'c.png'
    """
    figure_class, canvas_class = _matplotlib()
    from matplotlib import colormaps

    shown = max(1, min(examples, len(study.images)))
    figure = figure_class(figsize=(5.2 + 1.6 * len(study.parts), max(3.6, 1.5 * shown + 0.9)), layout="constrained")
    canvas_class(figure)
    grid = figure.add_gridspec(shown, len(study.parts) + 1, width_ratios=[3.2] + [1.0] * len(study.parts))
    bars = figure.add_subplot(grid[:, 0])
    rows = [*study.parts, "random"]
    colours = colormaps["tab10"]
    width = 0.8 / len(rows)
    positions = np.arange(len(study.layers))
    for r, row in enumerate(rows):
        values = study.random if row == "random" else study.delta[row]
        means = [values[layer][0] for layer in study.layers]
        spreads = [0.0 if np.isnan(values[layer][1]) else values[layer][1] for layer in study.layers]
        colour = "0.55" if row == "random" else colours(r % 10)
        bars.bar(positions + (r - (len(rows) - 1) / 2) * width, means, width, yerr=spreads, capsize=2,
                 color=colour, label=row)  # fmt: skip
    labels = [
        f"{layer}\n(after {study.rectifiers[layer]})" if study.rectifiers[layer] else layer for layer in study.layers
    ]
    bars.set_xticks(positions, labels, fontsize=8)
    bars.set_xlabel("layer", fontsize=8)
    unit = (
        "Hamming distance / length, mean ± std over pairs" if study.normalization == "paper" else "Σ_{i≠j} H (counts)"
    )
    bars.set_ylabel(f"Δ ({unit})", fontsize=8)
    bars.set_title("(a) sign-change consistency Δ: lower = tighter correspondence", fontsize=9)
    bars.legend(fontsize=7, frameon=False)
    bars.tick_params(labelsize=7)
    for column, part in enumerate(study.parts, start=1):
        for i in range(shown):
            axis = figure.add_subplot(grid[i, column])
            region = study.masks[part][i]
            occluded = study.images[i].masked_fill(region[None].expand_as(study.images[i]), study.fill)
            axis.imshow(image_to_display(occluded, mean, std))
            axis.contour(region.numpy().astype(float), levels=[0.5], colors="yellow", linewidths=1.0)
            axis.set_xticks([])
            axis.set_yticks([])
            if i == 0:
                axis.set_title(f"({chr(98 + column - 1)}) {part}", fontsize=9)
            if column == 1:
                axis.set_ylabel(f"image {i}", fontsize=8)
    draws = study.random_pairwise[study.layers[0]].shape[0]
    figure.suptitle(
        f"Correspondence (as Zeiler & Fergus Table 1): {len(study.images)} images, each part occluded "
        f"(outlined) with fill {study.fill:g}; random = regions of the same size at random places ({draws} draws)",
        fontsize=9,
    )
    path = Path(path)
    figure.savefig(path, dpi=dpi)
    return path
