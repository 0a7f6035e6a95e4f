"""``zf-attr correspondence``: do occlusions of one part change different images' features alike (Table 1)?

Images are files, folders or globs with ``--parts FILE``, a JSON object mapping each part name to one box
``[x0, y0, x1, y1]`` per image (model-input pixels, in the order the images are found); or, without images,
generated shapes of one class (``--shape``) whose parts come from their object masks (centre, top, left and
right extremity). Writes ``correspondence.md``/``.tex``/``.csv`` (the table), ``correspondence.json`` (the table
and the raw pairwise counts), ``correspondence.png`` and ``report.html``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

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

__all__ = ["configure_correspondence", "run_correspondence"]


def configure_correspondence(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``zf-attr correspondence``."""
    from zf_attr.analysis.correspondence import NORMALIZATIONS
    from zf_attr.models.shapes import SHAPE_CLASSES

    parser.add_argument("images", nargs="*", help="image files, folders or globs (needs --parts; default: shapes)")
    parser.add_argument("--parts", type=Path, default=None, metavar="FILE", help="JSON: part -> one box per image")
    parser.add_argument("--shape", choices=SHAPE_CLASSES, default="square", help="generated class (default square)")
    parser.add_argument("--count", type=int, default=5, help="generated images (default 5, as the paper's)")
    parser.add_argument("--part-size", type=int, default=None, help="side of the generated parts' boxes in pixels")
    parser.add_argument("--layers", nargs="+", default=None, help="layers compared (default: last conv block, penult.)")
    parser.add_argument("--random-draws", type=int, default=20, help="random-region draws (default 20)")
    parser.add_argument("--normalization", choices=NORMALIZATIONS, default="paper", help="see docs (default paper)")
    parser.add_argument("--fill", type=float, default=0.0, help="value of occluded pixels (default 0)")
    add_model_arguments(parser, seed=True)
    add_output_arguments(parser, "zf-attr-correspondence")


def _parts(path: Path, count: int) -> dict[str, torch.Tensor]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise CommandError(f"--parts: cannot read {str(path)!r}: {error}") from error
    if not isinstance(data, dict) or not data:
        raise CommandError("--parts: the file must hold a JSON object: part name -> one [x0, y0, x1, y1] per image")
    parts = {}
    for name, boxes in data.items():
        try:
            tensor = torch.tensor(boxes, dtype=torch.long)
        except (TypeError, ValueError) as error:
            raise CommandError(f"--parts: {name!r} must be a list of [x0, y0, x1, y1] boxes") from error
        if tensor.shape != (count, 4):
            raise CommandError(f"--parts: {name!r} has {tuple(tensor.shape)} values; give {count} boxes of 4 numbers")
        parts[name] = tensor
    return parts


def run_correspondence(args: argparse.Namespace) -> int:
    """Occlude each part in every image, compare the sign changes of the features, write the table and figure."""
    from zf_attr.analysis import correspondence_study
    from zf_attr.analysis._probes import shapes_batch
    from zf_attr.analysis.correspondence import shapes_parts

    loaded = open_model(args)
    if args.images:
        if args.parts is None:
            raise CommandError("image files need --parts FILE (a JSON object: part name -> one box per image)")
        try:
            files = find_images(args.images)
            images = torch.stack([read_image(path, loaded)[1] for path in files])
        except InputError as error:
            raise CommandError(str(error)) from error
        parts, names = _parts(args.parts, len(images)), [str(path) for path in files]
    else:
        if args.count < 2:
            raise CommandError(f"--count {args.count}: the study compares pairs, give at least 2")
        images, _, masks = shapes_batch(
            args.count, size=loaded.size, mean=loaded.mean, std=loaded.std, shape=args.shape
        )
        parts = shapes_parts(masks, args.part_size)
        names = [f"shapes test {args.shape} {i}" for i in range(len(images))]
    demo_note(args, loaded)
    outputs = Outputs(args.out, f"zf-attr correspondence: {len(images)} images on {loaded.note}")
    with outputs.session():
        try:
            study = correspondence_study(
                loaded.model, images.to(loaded.device), parts, layers=args.layers, random_draws=args.random_draws,
                fill=args.fill, normalization=args.normalization, seed=args.seed,
            )  # fmt: skip
        except (TypeError, ValueError) as error:
            raise CommandError(str(error)) from error
        for paths in study.summary().save(outputs.out, stem="correspondence").values():
            outputs.add(paths)
        outputs.add(study.save_figure(outputs.out / "correspondence.png", mean=loaded.mean, std=loaded.std))
        outputs.summary = {"model": loaded.note, "images": names, "normalization": study.normalization,
                           "table": study.to_markdown()}  # fmt: skip
        outputs.add(write_json(outputs.out / "correspondence.json", {**study.to_dict(), "images": names}))
    return 0
