"""``zf-attr compare``: deconvnet, occlusion and Grad-CAM side by side, with localisation and faithfulness scores.

Images come from files (``IMAGES``: files, folders walked recursively, globs; optionally with object masks:
``--masks DIR`` holding ``<key>.png``, the image's path relative to its folder, e.g. ``cats/1.png``; any non-zero
pixel is object) or from the generated data set of the bundled ZFNet (``--shapes N``: the test split, true
labels and ground-truth masks). Runs :func:`zf_attr.analysis.compare` and writes ``comparison.png`` (rows =
images, columns = methods), the summary as ``comparison.csv``, ``.md`` and ``.tex``, ``comparison.json`` (every
per-image value), ``maps.npz`` and ``report.html``.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from zf_attr.cli._common import (
    CommandError,
    Outputs,
    add_model_arguments,
    add_output_arguments,
    check_layer,
    demo_note,
    open_model,
    write_json,
)
from zf_attr.cli._inputs import InputError, LoadedModel, collect_inputs, read_image

__all__ = ["configure_compare", "run_compare"]

_DEFAULT_METHODS = ["deconvnet", "guided_backprop", "gradient", "gradcam", "occlusion"]


def configure_compare(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``zf-attr compare``."""
    from zf_attr.analysis.comparison_methods import BASELINES, KNOWN_METHODS

    parser.add_argument("images", nargs="*", help="image files, folders or globs (or use --shapes)")
    shapes_help = "use N generated test images of the bundled ZFNet, with true labels and masks"
    parser.add_argument("--shapes", type=int, default=None, metavar="N", help=shapes_help)
    parser.add_argument("--masks", type=Path, default=None, metavar="DIR", help="masks <key>.png of IMAGES")
    methods = [name for name in KNOWN_METHODS if name not in BASELINES]
    parser.add_argument("--method", nargs="+", choices=methods, default=_DEFAULT_METHODS,
                        help=f"methods compared (default: {' '.join(_DEFAULT_METHODS)})")  # fmt: skip
    parser.add_argument("--baselines", nargs="*", choices=BASELINES, default=list(BASELINES),
                        help="reference maps added as columns (default: centre random)")  # fmt: skip
    parser.add_argument("--target", type=int, default=None, help="class explained (default: label or prediction)")
    parser.add_argument("--randomization", action="store_true", help="also run the cascading randomisation test")
    parser.add_argument("--steps", type=int, default=32, help="deletion/insertion steps (default: 32)")
    parser.add_argument(
        "--tolerance", type=float, default=None, help="pointing tolerance in px (default: 15 × size/224)"
    )
    parser.add_argument("--figure-images", type=int, default=8, help="rows of the figure (default: 8)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random baseline and the tests (default: 0)")
    add_model_arguments(parser, layer_help="Grad-CAM layer (default: the last spatial feature map)")
    add_output_arguments(parser, "zf-attr-compare")


def _shapes(loaded: LoadedModel, count: int) -> tuple[Tensor, list[int], Tensor, tuple[str, ...], list[str]]:
    from zf_attr.models.shapes import ShapesDataset

    if loaded.categories is None or tuple(loaded.categories) != ShapesDataset.classes:
        raise CommandError("--shapes needs the bundled ZFNet (--model zfnet without --weights)")
    data = ShapesDataset(count, seed=2, image_size=loaded.size)
    samples = [data.sample(index) for index in range(count)]
    images = torch.stack([data[index][0] for index in range(count)])
    return images, [s.label for s in samples], torch.stack([s.mask for s in samples]), data.classes, []


def _files(args: argparse.Namespace, loaded: LoadedModel) -> tuple[Tensor, list[int] | None, Tensor | None, list[str]]:
    if args.masks is not None and not args.masks.is_dir():
        raise CommandError(f"--masks {str(args.masks)!r} is not a folder")
    try:
        inputs = collect_inputs(args.images, exclude=[args.out, *([args.masks] if args.masks else [])])
        images = torch.stack([read_image(item.path, loaded)[1] for item in inputs])
    except InputError as error:
        raise CommandError(str(error)) from error
    masks = None
    if args.masks is not None:
        masks = torch.stack([_read_mask(args.masks / f"{item.key}.png", loaded) for item in inputs])
    return images, None, masks, [item.key + item.path.suffix for item in inputs]


def _read_mask(path: Path, loaded: LoadedModel) -> Tensor:
    from PIL import Image
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms import functional as TF

    if not path.is_file():
        raise CommandError(f"--masks: no mask {path.name!r} for the image of that name (expected {str(path)!r})")
    with Image.open(path) as file:
        mask = file.convert("L")
    spec = loaded.preprocessing
    mask = TF.center_crop(TF.resize(mask, spec.resize, interpolation=InterpolationMode.NEAREST), spec.size)
    return TF.pil_to_tensor(mask)[0] > 0


def run_compare(args: argparse.Namespace) -> int:
    """Compare the methods on the images; write the figure, the tables, the values and the report."""
    from zf_attr.analysis import compare

    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise CommandError(
            "compare runs in one process (its tables pool every image); launch it without torchrun "
            "(explain and atlas split their inputs across torchrun's processes)"
        )
    if (args.shapes is None) == (not args.images):
        raise CommandError("give either image files (IMAGES) or --shapes N, not both or neither")
    if args.shapes is not None and args.shapes < 1:
        raise CommandError(f"--shapes must be at least 1, got {args.shapes}")
    if args.steps < 1 or args.figure_images < 1:
        raise CommandError("--steps and --figure-images must be at least 1")
    loaded = open_model(args)
    layered = {"gradcam", "guided_gradcam"} & set(args.method)
    check_layer(loaded, args.layer, None if layered else "--method gradcam or guided_gradcam")
    if args.shapes is not None:
        if args.masks is not None:
            raise CommandError("--masks is for IMAGES; --shapes brings its own masks")
        images, labels, masks, class_names, names = _shapes(loaded, args.shapes)
    else:
        images, labels, masks, names = _files(args, loaded)
        class_names = loaded.categories
    demo_note(args, loaded)
    images = images.to(loaded.device)
    with torch.no_grad():
        predicted = loaded.model(images).argmax(dim=1).tolist()
    targets = [args.target] * len(images) if args.target is not None else (labels or predicted)
    methods: dict[str, Any] = {
        name: (name, {"layer": args.layer}) if args.layer and name in ("gradcam", "guided_gradcam") else name
        for name in args.method
    }
    metrics = ["deletion", "insertion", "class_sensitivity"] + (["pointing"] if masks is not None else [])
    metrics += ["randomization"] if args.randomization else []
    tolerance = args.tolerance if args.tolerance is not None else 15 * loaded.size / 224
    outputs = Outputs(args.out, f"zf-attr compare: {', '.join(args.method)} on {loaded.note}")
    with outputs.session():
        try:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="Input Tensor 0 did not already require gradients")
                warnings.filterwarnings("ignore", message="Setting backward hooks on ReLU activations")
                result = compare(
                    loaded.model, images, targets, methods, masks=masks, metrics=metrics, baselines=args.baselines,
                    seed=args.seed, tolerance=tolerance, steps=args.steps,
                    show_progress=not args.quiet and sys.stderr.isatty(),
                )  # fmt: skip
        except (ValueError, TypeError) as error:
            raise CommandError(str(error)) from error
        outputs.add(
            result.save_figure(
                outputs.out / "comparison.png",
                max_images=args.figure_images,
                class_names=class_names,
                mean=loaded.mean,
                std=loaded.std,
                tolerance=tolerance,
            )
        )
        for path in result.save_tables(outputs.out, stem="comparison").values():
            outputs.add(path)
        if args.randomization:
            path = outputs.out / "comparison_randomization.md"
            path.write_text(result.randomization_summary().to_markdown() + "\n", encoding="utf-8")
            outputs.add(path)
        arrays = {name: maps.numpy() for name, maps in result.maps.items()}
        np.savez_compressed(outputs.out / "maps.npz", **arrays)
        outputs.add(outputs.out / "maps.npz")
        outputs.summary = _summary(result, loaded, names, predicted, class_names)
        outputs.add(write_json(outputs.out / "comparison.json", outputs.summary))
    if not args.quiet:
        print(result.summary().to_markdown())
    return 0


def _summary(
    result: Any, loaded: LoadedModel, names: list[str], predicted: list[int], class_names: Any
) -> dict[str, Any]:
    """Everything needed to rebuild the tables: per-method summaries and every per-image value (NaN → null)."""

    def label(index: int) -> str:
        return class_names[index] if class_names is not None else str(index)

    def number(value: float) -> float | None:
        return None if math.isnan(value) else round(value, 6)

    table = result.summary()
    return {
        "model": loaded.note,
        "methods": result.methods,
        "metrics": list(result.metrics),
        "images": [
            {"name": names[i] if names else f"shapes[{i}]", "target": label(int(t)), "predicted": label(predicted[i])}
            for i, t in enumerate(result.targets.tolist())
        ],
        "summary": {
            method: {
                metric: {
                    "mean": number(table.mean[method][metric]),
                    "std": number(table.std[method][metric]),
                    "count": table.count[method][metric],
                }
                for metric in table.metrics
            }
            for method in table.methods
        },
        "values": {
            metric: {method: [number(float(v)) for v in values.tolist()] for method, values in per_method.items()}
            for metric, per_method in result.values.items()
        },
        "notes": result.notes,
    }
