"""``zf-attr explain``: attribution figures, arrays and numbers for image files, folders and globs, at any scale.

Per input ``KEY`` (its path relative to the folder or glob root it came from, without suffix) it writes
``KEY.png`` (the image and one map per method; not with ``--no-figures``), ``KEY.npz`` (one array per method) and
a thumbnail, each atomically and as soon as the image is done, then appends a line to ``manifest.jsonl``. At the
end ``summary.json`` is rebuilt from the manifest (every input once, in input order, with ``failures``) and the
report ``report.html`` (paginated) is written. ``--resume`` skips the inputs already done; under ``torchrun``
the inputs are split across the processes and rank 0 writes the summary and the report.

Exit status: 0 every input done; 3 some inputs skipped (``--skip-errors``; listed in ``failures``); 1 none done,
or a run-level error (without ``--skip-errors``, the first failing input stops the run).
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from zf_attr.cli._common import (
    CommandError,
    add_model_arguments,
    add_output_arguments,
    check_layer,
    demo_note,
    open_model,
    prepare_out,
)
from zf_attr.cli._dataset import Decoded, ImageFiles, batched, decode_ahead
from zf_attr.cli._distributed import World, join_world
from zf_attr.cli._images import InputError, InputFile, collect_inputs
from zf_attr.cli._methods import (
    METHODS,
    OcclusionRunner,
    build_runners,
    default_batch_size,
    occlusion_method,
)
from zf_attr.cli._models import LoadedModel
from zf_attr.cli._pages import save_thumbnail, thumbnail_path, write_paged_report
from zf_attr.cli._progress import Progress
from zf_attr.cli._runlog import (
    Manifest,
    atomic_write,
    check_run_settings,
    finished_keys,
    remove_temporaries,
    save_arrays,
    write_summary,
)
from zf_attr.cli._targets import TargetRule

__all__ = ["EXIT_SKIPPED", "METHODS", "configure_explain", "run_explain"]

#: Exit status when some inputs were skipped (``--skip-errors``) but not all.
EXIT_SKIPPED = 3


def configure_explain(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``zf-attr explain``."""
    parser.add_argument("images", nargs="+", help="image files, folders (walked recursively) or glob patterns")
    parser.add_argument(
        "--method", nargs="+", choices=METHODS, default=["deconvnet", "guided", "gradient"],
        help="methods to run: deconvnet (gradient-style), strict (paper's), guided backprop, the plain gradient, "
        "Captum's Grad-CAM (at --layer, upsampled) and occlusion (default: deconvnet guided gradient)",
    )  # fmt: skip
    parser.add_argument(
        "--target", default=None,
        help="class to explain: an index, a class name, or from-folder (each image's folder names its class); "
        "default: the predicted one",
    )  # fmt: skip
    parser.add_argument("--window", type=int, default=None, help="occlusion window side (default: size / 8)")
    parser.add_argument("--stride", type=int, default=None, help="occlusion stride (default: window / 2)")
    parser.add_argument(
        "--drill-down", nargs=2, type=float, default=None, metavar=("STEP", "REFINE"),
        help="coarse-then-fine occlusion: every STEP-th window, then the REFINE fraction of the others where the "
        "map is strong, the rest interpolated (e.g. 3 0.1); its measured error goes to summary.json",
    )  # fmt: skip
    run = parser.add_argument_group("large runs")
    run.add_argument("--batch-size", type=int, default=None, help="images per pass (default: what memory allows)")
    run.add_argument("--workers", type=int, default=None,
                     help="image-decoding processes (default: a quarter of the CPUs, at most 4)")  # fmt: skip
    run.add_argument("--skip-errors", action="store_true",
                     help="list unreadable or failing inputs (stderr, summary.json) and go on (exit 3)")  # fmt: skip
    run.add_argument("--resume", action="store_true", help="continue an interrupted run in OUT: skip inputs done")
    run.add_argument("--figures", action=argparse.BooleanOptionalAction, default=True,
                     help="a PNG figure per image (--no-figures: arrays, thumbnails, summary; faster)")  # fmt: skip
    run.add_argument("--per-page", type=int, default=100, help="images per page of report.html (default: 100)")
    add_model_arguments(
        parser, layer_help="Grad-CAM layer, e.g. layer4 or features.28 (default: last conv block)", seed=True
    )
    add_output_arguments(parser, "zf-attr-explain")


def run_explain(args: argparse.Namespace) -> int:
    """Explain every input (this rank's share under torchrun); exit status 0, 3 or 1 (see the module docstring)."""
    for flag in ("batch_size", "per_page"):
        if getattr(args, flag) is not None and getattr(args, flag) < 1:
            raise CommandError(f"--{flag.replace('_', '-')} must be at least 1")
    if args.workers is not None and args.workers < 0:
        raise CommandError("--workers must be at least 0")
    world = join_world(args.device)
    try:
        return _Run(args, world).run()
    finally:
        world.close()


class _Run:
    """One ``explain`` run: everything checked before any work, then the inputs, then the summary."""

    def __init__(self, args: argparse.Namespace, world: World) -> None:
        self.args, self.world = args, world
        try:
            self.inputs = collect_inputs(args.images, exclude=args.out)
        except InputError as error:
            raise CommandError(str(error)) from error
        if args.figures:
            try:
                import matplotlib  # noqa: F401
            except ImportError as error:
                raise CommandError(
                    "figures need matplotlib: pip install 'zf-attr[viz]', or pass --no-figures"
                ) from error
        self.loaded = open_model(args, device=world.device(args.device))
        check_layer(self.loaded, args.layer, None if "gradcam" in args.method else "--method gradcam")
        with torch.no_grad():
            probe = torch.zeros(1, 3, self.loaded.size, self.loaded.size, device=self.loaded.device)
            num_classes = int(self.loaded.model(probe).shape[1])
        classes = self.loaded.categories
        if classes is not None and len(classes) != num_classes:
            raise CommandError(f"--classes names {len(classes)} classes but the model has {num_classes} outputs")
        self.rule = TargetRule(args.target, classes, num_classes)
        self.rule.check_folders(self.inputs)
        occlusion = occlusion_method(self.loaded, args.drill_down, "occlusion" in args.method)
        self.runners = build_runners(self.loaded, args.method, args.layer, args.window, args.stride, occlusion)
        self.batch_size = args.batch_size or default_batch_size(self.loaded, args.method)
        self.workers = args.workers if args.workers is not None else min(4, (os.cpu_count() or 1) // 4)
        self.out = prepare_out(args.out)
        settings = {
            "command": "explain", "model": self.loaded.note, "methods": list(args.method), "target": args.target,
            "size": self.loaded.size, "resize": self.loaded.preprocessing.resize, "mean": list(self.loaded.mean),
            "std": list(self.loaded.std), "layer": args.layer, "window": args.window, "stride": args.stride,
            "drill_down": args.drill_down, "figures": args.figures, "seed": args.seed,
        }  # fmt: skip
        if args.resume and world.rank == 0:  # before the others pass the barrier below and start writing
            remove_temporaries(self.out)
        reasons = world.gather(check_run_settings(self.out, settings, resume=args.resume, writer=False))
        if any(reasons):
            raise CommandError(next(reason for reason in reasons if reason))
        if world.rank == 0:
            check_run_settings(self.out, settings, resume=args.resume, writer=True)
        self.header = {"model": self.loaded.note, "methods": list(args.method), "classes": _classes_note(self.loaded)}
        self.title = f"zf-attr explain: {', '.join(args.method)} on {self.loaded.note}"

    def run(self) -> int:
        """Process this rank's inputs; then rank 0 merges the summary and writes the report."""
        args = self.args
        mine = self.world.shard(self.inputs)
        if args.resume:
            done = finished_keys(self.out)
            mine = [item for item in mine if item.key not in done]
        if self.world.rank == 0:
            demo_note(args, self.loaded)
        progress = Progress(len(mine), enabled=not args.quiet and self.world.rank == 0)
        error: str | None = None
        try:
            with Manifest(self.out, self.world.rank) as manifest:
                self._process(mine, manifest, progress)
        except CommandError as failure:
            error = str(failure)
        except Exception as failure:
            error = " ".join(f"{type(failure).__name__}: {failure}".split())
        except KeyboardInterrupt:
            progress.close()
            if not self.world.distributed:  # what finished is in the summary; --resume continues
                self._finish("interrupted")
            raise
        finally:
            progress.close()
        errors = self.world.gather(error)
        run_error = next((e for e in errors if e), None)
        counts = self._finish(run_error) if self.world.rank == 0 else None
        if error is not None:
            raise CommandError(error)
        if run_error is not None:
            raise CommandError(f"another process of the run failed: {run_error}")
        if counts is None:
            return 0
        if not args.quiet:
            print(f"{counts['done']} of {counts['total']} image(s) explained with {', '.join(args.method)} on "
                  f"{self.loaded.note}" + (f"; {counts['failed']} skipped" if counts["failed"] else ""))  # fmt: skip
        if counts["done"] == counts["total"]:
            return 0
        return EXIT_SKIPPED if counts["done"] > 0 else 1

    def _finish(self, error: str | None) -> dict[str, int]:
        summary = self.out / "summary.json"
        counts = write_summary(
            summary, self.header, [i.key for i in self.inputs], [str(i.path) for i in self.inputs], error=error
        )
        print(summary, flush=True)
        header = {**self.header, **counts, "error": error}
        print(write_paged_report(self.out, self.title, summary, header, per_page=self.args.per_page,
                                 methods=self.args.method), flush=True)  # fmt: skip
        return counts

    def _process(self, mine: Sequence[InputFile], manifest: Manifest, progress: Progress) -> None:
        files = ImageFiles([item.path for item in mine], self.loaded.preprocessing)
        for batch in batched(decode_ahead(files, self.workers), self.batch_size):
            good: list[tuple[InputFile, Decoded]] = []
            for decoded in batch:
                item = mine[decoded.index]
                if decoded.error is not None:
                    if not self.args.skip_errors and good:  # finish the images before the failing one first
                        self._explain(good, manifest, progress)
                    self._fail(item, decoded.error, manifest, progress)
                    continue
                if decoded.size is not None and min(decoded.size) < self.loaded.size:
                    width, height = decoded.size
                    progress.warn(f"zf-attr: warning: {item.path} is {width}x{height} pixels, smaller than the "
                                  f"model's {self.loaded.size}x{self.loaded.size} input: it is upscaled")  # fmt: skip
                good.append((item, decoded))
            if good:
                self._explain(good, manifest, progress)

    def _explain(self, good: list[tuple[InputFile, Decoded]], manifest: Manifest, progress: Progress) -> None:
        try:
            results = self._attribute(good)
        except (KeyboardInterrupt, CommandError):
            raise
        except Exception as failure:
            if not self.args.skip_errors:
                raise
            if len(good) > 1:  # find which image fails: one at a time
                for pair in good:
                    self._explain([pair], manifest, progress)
                return
            self._fail(good[0][0], " ".join(f"{type(failure).__name__}: {failure}".split()), manifest, progress)
            return
        for (item, decoded), result in zip(good, results, strict=True):
            self._write(item, decoded, result, manifest, progress)

    def _attribute(self, good: list[tuple[InputFile, Decoded]]) -> list[dict[str, Any]]:
        loaded = self.loaded
        inputs = torch.stack([decoded.inputs for _, decoded in good if decoded.inputs is not None]).to(loaded.device)
        with torch.no_grad():
            probabilities = loaded.model(inputs).softmax(dim=1)
        predicted = probabilities.argmax(dim=1).tolist()
        targets = [self.rule.target(item, p) for (item, _), p in zip(good, predicted, strict=True)]
        maps: dict[str, torch.Tensor] = {}
        extra: list[dict[str, Any]] = [{} for _ in good]
        for name, runner in self.runners.items():
            maps[name] = runner(inputs, targets).detach().cpu()
            if isinstance(runner, OcclusionRunner):
                for record, occluded in zip(extra, runner.records, strict=True):
                    record.update(occluded)
        results = []
        for position, (target, top) in enumerate(zip(targets, predicted, strict=True)):
            results.append({
                "predicted": loaded.class_name(top), "predicted_index": top,
                "target": loaded.class_name(target), "target_index": target,
                "target_probability": round(float(probabilities[position, target]), 6),
                **extra[position], "maps": {name: value[position] for name, value in maps.items()},
            })  # fmt: skip
        return results

    def _write(
        self, item: InputFile, decoded: Decoded, result: dict[str, Any], manifest: Manifest, progress: Progress
    ) -> None:
        maps = result.pop("maps")
        written: list[Path] = []
        if self.args.figures:
            from zf_attr.viz import save_attribution_grid

            title = (f"{item.key}{item.path.suffix}: target {result['target']} (p={result['target_probability']:.2f}); "
                     f"{self.loaded.note}")  # fmt: skip
            label = f"predicted {result['predicted']}"
            written.append(atomic_write(
                self.out / f"{item.key}.png",
                lambda tmp: save_attribution_grid([decoded.pixels], {m: [v] for m, v in maps.items()}, tmp,
                                                  title=title, row_labels=[label]),
            ))  # fmt: skip
        written.append(save_arrays(self.out / f"{item.key}.npz", {m: v.numpy() for m, v in maps.items()}))
        assert decoded.pixels is not None
        thumb = save_thumbnail(thumbnail_path(self.out, item.key), decoded.pixels, maps)
        outputs = [path.relative_to(self.out).as_posix() for path in [*written, thumb]]
        manifest.append({
            "key": item.key, "file": str(item.path), "status": "done",
            "figure": outputs[0] if self.args.figures else None, "arrays": f"{item.key}.npz", **result,
            "outputs": outputs,
        })  # fmt: skip
        for path in written:
            progress.print(str(path))
        progress.update()

    def _fail(self, item: InputFile, error: str, manifest: Manifest, progress: Progress) -> None:
        if not self.args.skip_errors:
            raise CommandError(error)
        manifest.append({"key": item.key, "file": str(item.path), "status": "failed", "error": error})
        progress.warn(f"zf-attr: skipped {item.path}: {error}")
        progress.update()


def _classes_note(loaded: LoadedModel) -> str:
    if loaded.categories is None:
        return "none (classes are indices)"
    return f"{len(loaded.categories)} names"
