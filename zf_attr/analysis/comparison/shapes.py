"""The documented comparison: the bundled ZFNet on generated shapes with their ground-truth masks.

Regenerates the table and figure of ``docs/comparison.md``::

    python -m zf_attr.analysis.comparison.shapes --out docs/comparison_run

Writes ``comparison_zfnet.csv``/``.md``/``.tex`` (mean ± std per method and metric),
``comparison_zfnet_randomization.md`` (the cascade, layer by layer) and ``comparison_zfnet.png`` (the figure).
"""

from __future__ import annotations

import argparse
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from zf_attr.analysis.comparison.study import Comparison, compare

__all__ = ["main", "shapes_comparison", "shapes_methods"]


def shapes_methods(model: torch.nn.Module, *, occlusion: bool = True) -> dict[str, object]:
    """The methods of the documented comparison on the bundled ZFNet.

    Grad-CAM and guided Grad-CAM use ``relu5``: the rectified conv5 feature maps (6×6 at 112 px), as Grad-CAM is
    defined on the last convolutional layer's (rectified) activations.

    Example:
        >>> from zf_attr.models import zfnet
        >>> list(shapes_methods(zfnet(weights="DEFAULT").eval(), occlusion=False))[:3]
        ['deconvnet', 'guided backprop', 'gradient']
    """
    from captum.attr import GuidedGradCam, IntegratedGradients, LayerGradCam, Saliency

    import zf_attr

    methods: dict[str, object] = {
        "deconvnet": zf_attr.Deconvnet(model),
        "guided backprop": zf_attr.GuidedBackprop(model),
        "gradient": (Saliency(model), {"abs": False}),
        "integrated gradients": (IntegratedGradients(model), {"n_steps": 32, "internal_batch_size": 64}),
        "Grad-CAM": LayerGradCam(model, model.relu5),
        "guided Grad-CAM": GuidedGradCam(model, model.relu5),
    }
    if occlusion:
        window = {"sliding_window_shapes": (3, 16, 16), "strides": (3, 8, 8), "baselines": 0.0}
        methods["occlusion"] = (zf_attr.OcclusionSensitivity(model), window)
    return methods


def shapes_comparison(
    out: str | Path | None = None,
    *,
    num_images: int = 24,
    figure_images: int = 6,
    data_seed: int = 2,
    seed: int = 0,
    tolerance: float = 7,
    steps: int = 32,
    occlusion: bool = True,
    randomization: bool = True,
    methods: Sequence[str] | None = None,
    report: Callable[[str], None] = print,
) -> Comparison:
    """Compare every method on the bundled ZFNet and ``ShapesDataset(num_images, seed=data_seed)`` with masks.

    The images are the test split (seed 2, never seen in training) at 112 px; the targets are the true labels.
    The pointing tolerance defaults to 7 px: TorchRay's 15 px at 224 px, scaled to these 112 px images.

    Args:
        out: the folder for the tables and the figure (created if needed); ``None`` writes nothing.
        num_images: the images scored.
        figure_images: the rows of the figure (the first images).
        data_seed: the data split.
        seed: the seed of the comparison (random baseline, tie-breaking, randomisation).
        tolerance: the pointing-game tolerance in pixels.
        steps: deletion/insertion steps.
        occlusion: include occlusion (the slowest method).
        randomization: run the cascading randomisation test (slow).
        methods: the names of the methods to run, from :func:`shapes_methods` (default: all of them).
        report: called with progress lines and, at the end, the Markdown table.

    Returns:
        The :class:`~zf_attr.analysis.Comparison`.

    Example:
        >>> result = shapes_comparison(None, num_images=1, methods=["deconvnet"], randomization=False, steps=2,
        ...                            report=lambda line: None)
        >>> result.methods, result.metrics
        (['deconvnet', 'centre', 'random'], ('pointing', 'deletion', 'insertion', 'class_sensitivity'))
    """
    from zf_attr.models import zfnet
    from zf_attr.models.shapes import ShapesDataset

    model = zfnet(weights="DEFAULT").eval()
    data = ShapesDataset(num_images, seed=data_seed)
    images = torch.stack([data[i][0] for i in range(num_images)])
    samples = [data.sample(i) for i in range(num_images)]
    masks = torch.stack([sample.mask for sample in samples])
    labels = [sample.label for sample in samples]
    available = shapes_methods(model, occlusion=occlusion)
    if methods is not None:
        unknown = [name for name in methods if name not in available]
        if unknown:
            raise ValueError(f"methods names {unknown}; choose from {list(shapes_methods(model))}")
        available = {name: available[name] for name in methods}
    metrics = ["pointing", "deletion", "insertion", "class_sensitivity"] + (["randomization"] if randomization else [])
    started = time.perf_counter()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Input Tensor 0 did not already require gradients")
        warnings.filterwarnings("ignore", message="Setting backward hooks on ReLU activations")
        result = compare(
            model, images, labels, available, masks=masks, metrics=metrics,
            seed=seed, tolerance=tolerance, steps=steps,
        )  # fmt: skip
    report(f"compared {len(result.methods)} methods on {num_images} images in {time.perf_counter() - started:.0f} s")
    table = result.summary()
    if out is not None:
        out = Path(out)
        for path in result.save_tables(out, stem="comparison_zfnet").values():
            report(f"wrote {path}")
        if randomization:
            path = out / "comparison_zfnet_randomization.md"
            path.write_text(result.randomization_summary().to_markdown() + "\n", encoding="utf-8")
            report(f"wrote {path}")
        path = result.save_figure(
            out / "comparison_zfnet.png", max_images=figure_images, class_names=data.classes, mean=data.MEAN,
            std=data.STD, dpi=80, palette=True,
        )  # fmt: skip
        report(f"wrote {path}")
    report(table.to_markdown())
    return result


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point: ``python -m zf_attr.analysis.comparison.shapes --out DIR [options]``.

    Example:
        >>> main(["--help"])  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        SystemExit: 0
    """
    parser = argparse.ArgumentParser(
        prog="python -m zf_attr.analysis.comparison.shapes",
        description="Compare attribution methods on the bundled ZFNet and generated shapes with masks.",
    )
    parser.add_argument("--out", type=Path, required=True, help="folder for the tables and the figure")
    parser.add_argument("--images", type=int, default=24, help="images scored (default 24)")
    parser.add_argument("--figure-images", type=int, default=6, help="rows of the figure (default 6)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the comparison (default 0)")
    parser.add_argument("--tolerance", type=float, default=7, help="pointing tolerance in pixels (default 7)")
    parser.add_argument("--steps", type=int, default=32, help="deletion/insertion steps (default 32)")
    parser.add_argument("--methods", nargs="+", help="methods to run (default: all); see shapes_methods")
    parser.add_argument("--no-occlusion", action="store_true", help="leave occlusion out (faster)")
    parser.add_argument("--no-randomization", action="store_true", help="skip the randomisation test (faster)")
    args = parser.parse_args(argv)
    shapes_comparison(
        args.out, num_images=args.images, figure_images=args.figure_images, seed=args.seed,
        tolerance=args.tolerance, steps=args.steps, occlusion=not args.no_occlusion,
        randomization=not args.no_randomization, methods=args.methods,
    )  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
