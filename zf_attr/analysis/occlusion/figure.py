"""The figure of an occlusion study, in the spirit of the paper's Fig. 7 (matplotlib imported lazily)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from zf_attr.viz import _matplotlib, attribution_to_image, image_to_display

if TYPE_CHECKING:
    from zf_attr.analysis.occlusion.study import OcclusionStudy

__all__ = ["save_occlusion_study"]


def save_occlusion_study(
    study: OcclusionStudy,
    path: str | Path,
    *,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    dpi: int = 120,
) -> Path:
    """Save the image and panels (b)–(e) of ``study`` side by side as a PNG.

    Args:
        study: the result of :func:`zf_attr.analysis.occlusion_study`.
        path: where to write (parent folder must exist).
        mean: normalisation mean of the image, to display it in its colours.
        std: normalisation standard deviation of the image.
        dpi: resolution.

    Returns:
        The path written.
    """
    figure_class, canvas_class = _matplotlib()
    from matplotlib import patches
    from matplotlib.colors import ListedColormap

    height, width = study.image.shape[-2:]
    half = study.window / 2
    # each map value sits at its occluder's centre; extent spans the first to the last centre
    rows = [min(start + half, height) for start in study.row_starts]
    cols = [min(start + half, width) for start in study.col_starts]
    step_y = (rows[-1] - rows[0]) / max(len(rows) - 1, 1) / 2 or half
    step_x = (cols[-1] - cols[0]) / max(len(cols) - 1, 1) / 2 or half
    extent = (cols[0] - step_x, cols[-1] + step_x, rows[-1] + step_y, rows[0] - step_y)

    figure = figure_class(figsize=(17, 4.1), layout="constrained")
    canvas_class(figure)
    axes = figure.subplots(1, 5)
    picture = image_to_display(study.image, mean, std)
    axes[0].imshow(picture)
    box = study.window_slices(len(rows) // 2, len(cols) // 2)
    axes[0].add_patch(
        patches.Rectangle((box[1].start, box[0].start), study.window, study.window, fill=False, ec="white", lw=1.5)
    )
    axes[0].set_title(
        f"(a) input, {'target' if study.target_given else 'predicted'} class: "
        f"{study.class_name(study.target)}\nwhite square: occluder size",
        fontsize=9,
    )

    shown = axes[1].imshow(study.map_activation.numpy(), cmap="viridis", extent=extent)
    read = f" (after {study.rectifier})" if study.rectifier else ""
    axes[1].set_title(
        f"(b) total activation of {study.layer} map {study.feature_map}{read}\n(strongest for the unoccluded image)",
        fontsize=9,
    )
    figure.colorbar(shown, ax=axes[1], shrink=0.8)

    axes[2].imshow(attribution_to_image(study.projection, "absolute"), cmap="inferno")
    empty = "\n(map ≤ 0 everywhere: no feature, no projection)" if study.inactive else ""
    axes[2].set_title(f"(c) deconvnet projection of {study.layer} map {study.feature_map}{empty}", fontsize=9)

    shown = axes[3].imshow(study.target_probability.numpy(), cmap="magma", vmin=0.0, vmax=1.0, extent=extent)
    axes[3].set_title(f"(d) p({study.class_name(study.target)}) as a function\nof the occluder position", fontsize=9)
    figure.colorbar(shown, ax=axes[3], shrink=0.8)

    classes = sorted(set(study.top_class.flatten().tolist()))
    colours = [_colour(i) for i in range(len(classes))]
    lookup = {cls: i for i, cls in enumerate(classes)}
    indexed = np.vectorize(lookup.__getitem__)(study.top_class.numpy())
    axes[4].imshow(indexed, cmap=ListedColormap(colours), vmin=-0.5, vmax=len(classes) - 0.5, extent=extent)
    axes[4].set_title("(e) most probable class\nper occluder position", fontsize=9)
    handles = [patches.Patch(color=_colour(i), label=study.class_name(cls)) for i, cls in enumerate(classes)]
    axes[4].legend(handles=handles, loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=8, frameon=False)

    for axis in axes:
        axis.set_xlim(0, width)
        axis.set_ylim(height, 0)
        axis.set_xlabel("x (pixels)", fontsize=8)
        axis.tick_params(labelsize=7)
    axes[0].set_ylabel("y (pixels)", fontsize=8)
    unoccluded = study.unoccluded
    figure.suptitle(
        f"Occlusion study: {study.window}×{study.window} occluder (fill {study.fill:g}), stride {study.stride}; "
        f"unoccluded p({study.class_name(study.target)}) = {unoccluded['target_probability']:.2f}",
        fontsize=11,
    )
    path = Path(path)
    figure.savefig(path, dpi=dpi)
    return path


def _colour(index: int) -> tuple[float, float, float, float]:
    from matplotlib import colormaps

    return colormaps["tab10"](index % 10)
