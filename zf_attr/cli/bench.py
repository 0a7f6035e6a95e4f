"""``zf-attr bench``: how fast zf_attr is against Captum on your model, device and input size, at equal output.

Each method runs against its Captum counterpart in one process, interleaved, on the same seeded random images:
``deconvnet`` (``captum.attr.Deconvolution``), ``guided`` (``captum.attr.GuidedBackprop``) and ``occlusion``
(``captum.attr.Occlusion`` at its default ``perturbations_per_eval=1`` and at ``--captum-ppe``). Writes
``bench.json`` (machine, versions, every timing), ``bench.md`` (the table) and ``report.html``. Exit status 1
when an output differs from Captum's beyond the tolerance (where Captum is right: on models with functional
rectifiers Captum returns the plain gradient, and the difference is reported instead, not failed).
"""

from __future__ import annotations

import argparse
import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from zf_attr.cli._common import CommandError, Outputs, add_model_arguments, add_output_arguments, open_model, write_json
from zf_attr.cli._inputs import LoadedModel

__all__ = ["BENCH_METHODS", "configure_bench", "run_bench"]

BENCH_METHODS = ("deconvnet", "guided", "occlusion")
_TOLERANCE = 1e-4


def configure_bench(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``zf-attr bench``."""
    parser.add_argument("--method", nargs="+", choices=BENCH_METHODS, default=["deconvnet", "occlusion"],
                        help="what to time (default: deconvnet occlusion)")  # fmt: skip
    parser.add_argument("--batch", type=int, default=1, help="images per call (default: 1)")
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds, median reported (default: 3)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds first (default: 1)")
    parser.add_argument("--window", type=int, default=None, help="occlusion window (default: size / 8, min 4)")
    parser.add_argument("--stride", type=int, default=None, help="occlusion stride (default: window / 2)")
    parser.add_argument("--captum-ppe", type=int, default=16, help="Captum's tuned perturbations_per_eval (16)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random images and targets (default: 0)")
    add_model_arguments(parser)
    add_output_arguments(parser, "zf-attr-bench")


def _pairs(loaded: LoadedModel, method: str, args: argparse.Namespace) -> dict[str, Callable[[Tensor, Tensor], Any]]:
    from captum.attr import Deconvolution, GuidedBackprop, Occlusion

    import zf_attr

    model = loaded.model
    if method == "deconvnet":
        ours, theirs = zf_attr.Deconvnet(model), Deconvolution(model)
        return {
            "zf_attr": lambda x, t: ours.attribute(x, target=t),
            "captum": lambda x, t: theirs.attribute(x, target=t),
        }
    if method == "guided":
        ours, theirs = zf_attr.GuidedBackprop(model), GuidedBackprop(model)
        return {
            "zf_attr": lambda x, t: ours.attribute(x, target=t),
            "captum": lambda x, t: theirs.attribute(x, target=t),
        }
    side = args.window or max(4, loaded.size // 8)
    step = args.stride or max(1, side // 2)
    if side > loaded.size:
        raise CommandError(f"--window {side} is larger than the {loaded.size}-pixel input")
    window, strides = (3, side, side), (3, step, step)
    occlusion, captum = zf_attr.OcclusionSensitivity(model), Occlusion(model)
    return {
        "zf_attr": lambda x, t: occlusion.attribute(x, sliding_window_shapes=window, strides=strides, target=t),
        "captum": lambda x, t: captum.attribute(x, sliding_window_shapes=window, strides=strides, target=t),
        f"captum_ppe{args.captum_ppe}": lambda x, t: captum.attribute(
            x, sliding_window_shapes=window, strides=strides, target=t, perturbations_per_eval=args.captum_ppe
        ),
    }


def run_bench(args: argparse.Namespace) -> int:
    """Time zf_attr against Captum and write the table, the JSON and the report."""
    from zf_attr.benchmarking import environment, load_average, relative_error, time_interleaved

    for flag in ("batch", "repeats", "captum_ppe"):
        if getattr(args, flag) < 1:
            raise CommandError(f"--{flag.replace('_', '-')} must be at least 1, got {getattr(args, flag)}")
    if args.warmup < 0:
        raise CommandError(f"--warmup must be at least 0, got {args.warmup}")
    loaded = open_model(args)
    generator = torch.Generator().manual_seed(args.seed)
    images = torch.randn(args.batch, 3, loaded.size, loaded.size, generator=generator).to(loaded.device)
    with torch.no_grad():
        classes = loaded.model(images[:1]).shape[1]
    targets = torch.randint(0, classes, (args.batch,), generator=generator).to(loaded.device)
    outputs = Outputs(args.out, f"zf-attr bench: {loaded.note}, {args.batch}×{loaded.size}² on {loaded.device}")
    report: dict[str, Any] = environment(loaded.device)
    report.update(model=loaded.note, batch=args.batch, input_size=loaded.size, results=[])
    outputs.summary = report
    failed = False
    with outputs.session():
        for method in args.method:
            calls = _pairs(loaded, method, args)
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", module="captum")
                warnings.filterwarnings("ignore", message=".*(Setting backward hooks|non-full backward hook).*")
                timings = time_interleaved(
                    {name: (lambda call=call: call(images, targets)) for name, call in calls.items()},
                    warmup=args.warmup,
                    repeats=args.repeats,
                )
            error = relative_error(timings["zf_attr"].output, timings["captum"].output)
            entry = {
                "method": method,
                **{name: timing.as_dict() for name, timing in timings.items()},
                "ratio": timings["zf_attr"].median / timings["captum"].median,
                "relative_error": error,
                "equal": error <= _TOLERANCE,
            }
            best = min((name for name in timings if name != "zf_attr"), key=lambda name: timings[name].median)
            entry["best_captum"], entry["ratio_to_best"] = best, timings["zf_attr"].median / timings[best].median
            failed |= not entry["equal"] and method == "occlusion"  # occlusion never depends on rectifier handling
            report["results"].append(entry)
        report["load_average_after"] = load_average()
        outputs.add(write_json(outputs.out / "bench.json", report))
        table = _table(report)
        outputs.add(_write(outputs.out / "bench.md", table))
    if not args.quiet:
        print(table)
    if failed:
        raise CommandError("an occlusion output differs from Captum's beyond 1e-4 (see bench.json)")
    return 0


def _table(report: dict[str, Any]) -> str:
    lines = [
        f"{report['model']}, batch {report['batch']}, {report['input_size']}x{report['input_size']}, "
        f"{report['device_name']} ({report['device']}, {report['threads']} threads), torch {report['torch']}, "
        f"captum {report['captum']}, zf_attr {report['zf_attr']}",
        "",
        "| method | zf_attr s | Captum s | ratio | best Captum s | ratio to best | relative error vs Captum |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for entry in report["results"]:
        best = entry[entry["best_captum"]]["median_s"]
        lines.append(
            f"| {entry['method']} | {entry['zf_attr']['median_s']:.4f} | {entry['captum']['median_s']:.4f} | "
            f"{entry['ratio']:.2f} | {best:.4f} | {entry['ratio_to_best']:.2f} | {entry['relative_error']:.1e} |"
        )
    return "\n".join(lines) + "\n"


def _write(path: Any, text: str) -> Any:
    path.write_text(text, encoding="utf-8")
    return path
