"""The figure of an invariance study, laid out as the paper's Fig. 5 (matplotlib imported lazily).

Rows: the transforms; columns: the feature distance at each layer, then p(true class); one curve per image.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from zf_attr.analysis.invariance.transforms import IDENTITY, UNITS
from zf_attr.viz import _matplotlib

if TYPE_CHECKING:
    from zf_attr.analysis.invariance.study import InvarianceStudy

__all__ = ["save_invariance_figure"]

_TITLES = {
    "vertical": "vertical translation",
    "horizontal": "horizontal translation",
    "scale": "scale",
    "rotation": "rotation",
}


def save_invariance_figure(
    study: InvarianceStudy, path: str | Path, *, dpi: int = 100, title: str | None = None
) -> Path:
    """Save the transforms × (distance per layer, p(target)) grid of ``study`` as a PNG.

    Args:
        study: the result of :func:`~zf_attr.analysis.invariance_study`.
        path: where to write (the parent folder must exist).
        dpi: resolution.
        title: figure title (default: says what is plotted).

    Returns:
        The path written.

    Example:
        >>> import tempfile, torch
        >>> from zf_attr.analysis import invariance_study
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
        ...                           torch.nn.Flatten(), torch.nn.Linear(4, 4), torch.nn.Linear(4, 2))
        >>> study = invariance_study(net, torch.randn(2, 3, 16, 16), [0, 1], sweeps={"scale": [1.0, 1.5]})
        >>> save_invariance_figure(study, Path(tempfile.mkdtemp()) / "invariance.png").name
        'invariance.png'
    """
    figure_class, canvas_class = _matplotlib()
    from matplotlib import colormaps

    names = list(study.sweeps)
    columns = len(study.layers) + 1
    figure = figure_class(figsize=(3.6 * columns + 1.6, 2.5 * len(names) + 0.9), layout="constrained")
    canvas_class(figure)
    axes = figure.subplots(len(names), columns, squeeze=False)
    colours = colormaps["tab10"]
    count = len(study.targets)
    for row, name in enumerate(names):
        values = study.sweeps[name].numpy()
        series = [study.distances[name][layer] for layer in study.layers] + [study.probabilities[name]]
        for column, data in enumerate(series):
            axis = axes[row, column]
            for i in range(count):
                label = f"image {i} ({study.class_name(int(study.targets[i]))})"
                axis.plot(values, data[i].numpy(), marker="o", markersize=3, lw=1.2, color=colours(i % 10), label=label)
            axis.axvline(IDENTITY[name], color="0.6", lw=0.8, ls=":")
            axis.set_xlabel(f"{_TITLES[name]} ({UNITS[name]})", fontsize=8)
            axis.tick_params(labelsize=7)
            axis.grid(alpha=0.3)
            if column < len(study.layers):
                layer = study.layers[column]
                read = f" after {study.rectifiers[layer]}" if study.rectifiers.get(layer) else ""
                axis.set_ylabel("Euclidean distance", fontsize=8)
                axis.set_title(f"({chr(97 + row)}{column + 1}) {layer}{read}: ‖f(x) − f(T x)‖", fontsize=9)
            else:
                axis.set_ylim(-0.03, 1.03)
                axis.set_ylabel("p(target class)", fontsize=8)
                axis.set_title(f"({chr(97 + row)}{column + 1}) p(target class)", fontsize=9)
    axes[0, -1].legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=7, frameon=False)
    figure.suptitle(
        title
        or "Invariance (as Zeiler & Fergus Fig. 5): distance between the feature vectors of each image and its "
        "transformed copy, and p(target class); one curve per image, dotted line: identity",
        fontsize=9,
    )
    path = Path(path)
    figure.savefig(path, dpi=dpi)
    return path
