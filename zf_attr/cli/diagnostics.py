"""``zf-attr diagnostics``: first-layer filters, their frequencies, dead maps and aliasing (paper Fig. 6).

Probe images are files, folders or globs, or, without any, generated shapes of the test split. Writes
``diagnostics.png`` (filters, frequency bands, map activity, aliasing), ``diagnostics.json`` and ``report.html``.
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

__all__ = ["configure_diagnostics", "run_diagnostics"]


def configure_diagnostics(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``zf-attr diagnostics``."""
    parser.add_argument("images", nargs="*", help="probe image files, folders or globs (default: generated shapes)")
    parser.add_argument("--probes", type=int, default=60, help="generated probes when no image is given (default 60)")
    parser.add_argument("--layers", nargs="+", default=None, help="Conv2d layers (default: the first two)")
    parser.add_argument("--dead-rate", type=float, default=1e-3, help="activity at or below which a map is dead")
    add_model_arguments(parser, seed=True)
    add_output_arguments(parser, "zf-attr-diagnostics")


def run_diagnostics(args: argparse.Namespace) -> int:
    """Measure the diagnostics on the probes and write the figure, JSON and report."""
    from zf_attr.analysis import filter_diagnostics
    from zf_attr.analysis._probes import shapes_batch

    loaded = open_model(args)
    if args.images:
        try:
            files = find_images(args.images)
            probes = torch.stack([read_image(path, loaded)[1] for path in files])
        except InputError as error:
            raise CommandError(str(error)) from error
        source = f"{len(files)} image files"
    else:
        if args.probes < 1:
            raise CommandError(f"--probes {args.probes}: give at least one probe image")
        probes = shapes_batch(args.probes, seed=4, size=loaded.size, mean=loaded.mean, std=loaded.std)[0]
        source = f"{len(probes)} generated shapes (seed 4)"
    demo_note(args, loaded)
    outputs = Outputs(args.out, f"zf-attr diagnostics: {loaded.note} on {source}")
    with outputs.session():
        try:
            result = filter_diagnostics(loaded.model, probes.to(loaded.device), layers=args.layers,
                                        dead_rate=args.dead_rate)  # fmt: skip
        except (TypeError, ValueError) as error:
            raise CommandError(str(error)) from error
        title = f"Architecture diagnostics (as Zeiler & Fergus Fig. 6): {loaded.note}, {source}"
        outputs.add(result.save_figure(outputs.out / "diagnostics.png", dead_rate=args.dead_rate, title=title))
        outputs.summary = {"model": loaded.note, "probes": source, **result.summary()}
        outputs.add(write_json(outputs.out / "diagnostics.json", {"model": loaded.note, **result.to_dict()}))
    return 0
