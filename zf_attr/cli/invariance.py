"""``zf-attr invariance``: feature distances and p(class) under translation, scale and rotation (paper Fig. 5).

Images are files, folders or globs (each preprocessed as the model expects), or, without any, generated shapes
of the test split with their true classes (offline). Writes ``invariance.png`` (rows: transforms; columns:
distance per layer, p(target)), ``invariance.json``, ``invariance.csv`` (one row per transform, value and image)
and ``report.html``.
"""

from __future__ import annotations

import argparse

import torch

from zf_attr.cli._common import (
    CommandError,
    Outputs,
    add_model_arguments,
    add_output_arguments,
    demo_note,
    open_model,
    write_json,
)
from zf_attr.cli._inputs import InputError, find_images, read_image
from zf_attr.cli._targets import TargetRule

__all__ = ["configure_invariance", "parse_sweep", "run_invariance"]


def parse_sweep(text: str) -> tuple[str, list[float]]:
    """``NAME=V1,V2,...`` → ``(NAME, [V1, V2, ...])`` for ``--sweep``.

    Example:
        >>> parse_sweep("rotation=0,90,180")
        ('rotation', [0.0, 90.0, 180.0])
    """
    name, _, values = text.partition("=")
    try:
        numbers = [float(value) for value in values.split(",") if value.strip()]
    except ValueError:
        numbers = []
    if not name or not numbers:
        raise argparse.ArgumentTypeError(f"--sweep {text!r}: write NAME=V1,V2,... e.g. rotation=0,90,180")
    return name.strip(), numbers


def configure_invariance(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``zf-attr invariance``."""
    from zf_attr.analysis.invariance.transforms import TRANSFORMS

    parser.add_argument("images", nargs="*", help="image files, folders or globs (default: generated shapes)")
    parser.add_argument("--shapes", type=int, default=5, help="generated images when no image is given (default 5)")
    parser.add_argument("--target", default=None, help="class of every image, by index or name (default: predicted)")
    parser.add_argument(
        "--transforms", nargs="+", choices=TRANSFORMS, default=None, help="transforms to sweep (default: all four)"
    )
    parser.add_argument(
        "--sweep", type=parse_sweep, action="append", default=[], metavar="NAME=V1,V2,...",
        help="values of one transform instead of the paper's (pixels, zoom factor or degrees); repeatable",
    )  # fmt: skip
    parser.add_argument("--layers", nargs="+", default=None, help="layers compared (default: first conv, penultimate)")
    parser.add_argument("--fill", type=float, default=0.0, help="value of pixels brought in from outside (default 0)")
    add_model_arguments(parser, seed=True)
    add_output_arguments(parser, "zf-attr-invariance")


def run_invariance(args: argparse.Namespace) -> int:
    """Sweep the transforms over the images and write the figure, JSON, CSV and report."""
    from zf_attr.analysis import invariance_study
    from zf_attr.analysis._probes import shapes_batch
    from zf_attr.analysis.invariance.transforms import default_sweeps

    loaded = open_model(args)
    names: list[str] = []
    if args.images:
        try:
            files = find_images(args.images)
            images = torch.stack([read_image(path, loaded)[1] for path in files])
        except InputError as error:
            raise CommandError(str(error)) from error
        names, labels = [str(path) for path in files], None
    else:
        if args.shapes < 1:
            raise CommandError(f"--shapes {args.shapes}: give at least one image")
        images, labels, _ = shapes_batch(args.shapes, size=loaded.size, mean=loaded.mean, std=loaded.std)
        names = [f"shapes test item {i}" for i in range(len(images))]
    with torch.no_grad():
        classes = loaded.model(images[:1].to(loaded.device)).shape[1]
    rule = TargetRule(args.target, loaded.categories, classes)
    if rule.from_folder:
        raise CommandError("--target from-folder is for explain; invariance takes a class index or name")
    targets = rule.fixed if rule.fixed is not None else labels
    defaults = default_sweeps(loaded.size)
    sweeps = {name: defaults[name] for name in (args.transforms or defaults)}
    for name, values in args.sweep:
        sweeps[name] = torch.tensor(values, dtype=torch.float64)
    demo_note(args, loaded)
    outputs = Outputs(args.out, f"zf-attr invariance: {len(images)} images on {loaded.note}")
    with outputs.session():
        try:
            study = invariance_study(
                loaded.model, images.to(loaded.device), targets, sweeps=sweeps, layers=args.layers, fill=args.fill,
                class_names=loaded.categories,
            )  # fmt: skip
        except (TypeError, ValueError) as error:
            raise CommandError(str(error)) from error
        outputs.add(study.save_figure(outputs.out / "invariance.png"))
        table = outputs.out / "invariance.csv"
        study.to_csv(table)
        outputs.add(table)
        outputs.summary = {
            "model": loaded.note,
            "images": names,
            "targets": [study.class_name(int(t)) for t in study.targets],
            "layers": study.layers,
            "transforms": {
                name: {
                    "values": study.sweeps[name].tolist(),
                    **{
                        f"mean distance {layer}": study.distances[name][layer].mean(0).tolist()
                        for layer in study.layers
                    },
                    "mean p(target)": study.probabilities[name].mean(0).tolist(),
                }
                for name in study.sweeps
            },
        }
        outputs.add(write_json(outputs.out / "invariance.json", {**study.to_dict(), "images": names}))
    return 0
