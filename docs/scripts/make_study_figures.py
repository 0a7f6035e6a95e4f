"""Regenerate the figures and numbers of docs/invariance.md, docs/correspondence.md and docs/diagnostics.md.

All on the bundled ZFNet and generated shapes (offline; about a minute on 2 CPU cores)::

    python docs/scripts/make_study_figures.py            # writes docs/images/*_zfnet.png, prints the numbers
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from PIL import Image

from zf_attr.analysis import correspondence_study, filter_diagnostics, invariance_study
from zf_attr.analysis._probes import shapes_batch
from zf_attr.analysis.correspondence import shapes_parts
from zf_attr.models import zfnet
from zf_attr.models.shapes import SHAPE_CLASSES, ShapesDataset

IMAGES = Path(__file__).resolve().parents[1] / "images"


def shrink(path: Path) -> None:
    """Reduce a PNG to a 256-colour palette (the docs' figures stay small)."""
    with Image.open(path) as picture:
        picture.convert("RGB").quantize(256).save(path, optimize=True)
    print(f"{path} ({path.stat().st_size // 1024} KB)")


def main() -> None:
    """Run the three studies and write their figures."""
    torch.manual_seed(0)
    model = zfnet(weights="DEFAULT").eval()

    images, labels, _ = shapes_batch(5)  # the first 5 test items: one of 5 different classes each
    study = invariance_study(model, images, labels, class_names=SHAPE_CLASSES)
    shrink(study.save_figure(IMAGES / "invariance_zfnet.png", dpi=80))
    for name in study.sweeps:
        middle = len(study.sweeps[name]) // 2 + 1
        distances = {layer: study.distances[name][layer].mean(0)[[0, middle, -1]].tolist() for layer in study.layers}
        probability = study.probabilities[name].mean(0)
        print(name, study.sweeps[name][[0, middle, -1]].tolist(), distances, "p:", probability.tolist())

    for shape in ("square", "star"):
        images, _, masks = shapes_batch(5, shape=shape)
        result = correspondence_study(model, images, shapes_parts(masks, side=16), random_draws=20)
        print(f"\n{shape}:\n{result.to_markdown()}")
        if shape == "square":
            path = result.save_figure(IMAGES / "correspondence_zfnet.png", mean=ShapesDataset.MEAN,
                                      std=ShapesDataset.STD, dpi=80)  # fmt: skip
            shrink(path)

    probes = shapes_batch(120, seed=4)[0]
    diagnostics = filter_diagnostics(model, probes)
    title = "Architecture diagnostics (as Zeiler & Fergus Fig. 6): the bundled ZFNet, 120 generated probe images"
    shrink(diagnostics.save_figure(IMAGES / "diagnostics_zfnet.png", dpi=80, title=title))
    print(json.dumps(diagnostics.summary(), indent=1))
    print("dead:", diagnostics.dead_filters, "high-frequency:", diagnostics.high_frequency_filters)


if __name__ == "__main__":
    main()
