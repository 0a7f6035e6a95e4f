"""``zf-attr occlusion-study``: the paper's four-panel occlusion study (Fig. 7) of one image: figure and JSON."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

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
from zf_attr.cli._inputs import InputError, read_image
from zf_attr.cli._targets import TargetRule

__all__ = ["configure_occlusion_study", "run_occlusion_study"]


def configure_occlusion_study(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``zf-attr occlusion-study``."""
    parser.add_argument("image", type=Path, help="one image file")
    parser.add_argument(
        "--target", default=None, help="class of panel (d), by index or name (default: the predicted one)"
    )
    parser.add_argument("--window", type=int, default=None, help="occluder side in pixels (default: size / 3)")
    parser.add_argument("--stride", type=int, default=None, help="occluder step in pixels (default: window / 6)")
    parser.add_argument("--fill", type=float, default=0.0, help="occluder value after normalisation (default 0)")
    add_model_arguments(parser, layer_help="layer of panels (b) and (c) (default: the last conv block)", seed=True)
    add_output_arguments(parser, "zf-attr-occlusion")


def run_occlusion_study(args: argparse.Namespace) -> int:
    """The paper's four-panel occlusion study (Fig. 7) of one image: a figure and a JSON summary."""
    from zf_attr.analysis import occlusion_study

    if not args.image.is_file():
        raise CommandError(f"no such image file: {str(args.image)!r}")
    loaded = open_model(args)
    check_layer(loaded, args.layer)
    window = args.window or max(4, loaded.size // 3)
    stride = args.stride or max(1, window // 6)
    try:
        _, batch = read_image(args.image, loaded)
    except InputError as error:
        raise CommandError(str(error)) from error
    batch = batch.to(loaded.device)
    with torch.no_grad():
        logits = loaded.model(batch[None])
    predicted = int(logits.argmax(dim=1))
    rule = TargetRule(args.target, loaded.categories, logits.shape[1])
    target = rule.fixed if rule.fixed is not None else predicted
    if rule.from_folder:
        raise CommandError("--target from-folder is for explain; occlusion-study takes a class index or name")
    demo_note(args, loaded)
    outputs = Outputs(args.out, f"zf-attr occlusion-study: {args.image.name} on {loaded.note}")
    with outputs.session():
        try:
            study = occlusion_study(  # no target: the study explains the prediction and its figure says so
                loaded.model, batch, rule.fixed, layer=args.layer, window=window, stride=stride, fill=args.fill,
                class_names=loaded.categories, show_progress=not args.quiet and sys.stderr.isatty(),
            )  # fmt: skip
        except ValueError as error:
            raise CommandError(str(error)) from error
        stem = args.image.stem
        outputs.add(study.save_figure(outputs.out / f"{stem}_occlusion.png", mean=loaded.mean, std=loaded.std))
        outputs.summary = {
            "file": str(args.image),
            "model": loaded.note,
            "predicted": study.class_name(predicted),
            "predicted_index": predicted,
            "target": study.class_name(target),
            "target_index": target,
            "target_given": rule.given,
            "layer": study.layer,
            "feature_map": study.feature_map,
            "window": window,
            "stride": stride,
            "fill": args.fill,
            "unoccluded": study.unoccluded,
            "row_starts": list(study.row_starts),
            "col_starts": list(study.col_starts),
            "map_activation": study.map_activation.tolist(),
            "target_probability": study.target_probability.tolist(),
            "top_class": [[study.class_name(int(c)) for c in row] for row in study.top_class],
        }
        outputs.add(write_json(outputs.out / f"{stem}_occlusion.json", outputs.summary))
    return 0
