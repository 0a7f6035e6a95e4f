"""``zf-attr bench``: how fast zf_attr is against Captum on your model, device and input size, at equal output.

Two modes, one timing core (:mod:`zf_attr.benchmarking`, the core of the benchmark suite ``python -m benchmarks``)
and one results format (the suite's: a list of ``cases``, each checked before it is timed):

* **your model** (default): each method against its Captum counterpart, interleaved, on the same seeded random
  images: ``deconvnet`` (``captum.attr.Deconvolution``), ``guided`` (``captum.attr.GuidedBackprop``) and
  ``occlusion`` (``captum.attr.Occlusion`` at its default ``perturbations_per_eval=1`` and at ``--captum-ppe``).
  Exit status 1 when an occlusion output differs from Captum's beyond the tolerance (the deconvnet and guided
  backprop differences are reported, not failed: on models with functional rectifiers Captum returns the plain
  gradient, and zf_attr does not).
* **the suite** (``--suite``, from a checkout of the repository): the cases of ``python -m benchmarks`` (eleven models,
  every method, both occlusion engines); ``--quick`` and ``--only`` select as there. The suite's cases live in the
  checkout's ``benchmarks/`` (not in the installed package); from an installed copy the subcommand says how to
  get them.

Both write ``bench.json`` (machine, versions, load average, every timing), ``bench.md`` (the table) and
``report.html``, and warn when the machine was busy (load average above 0.75 × the CPU count).
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import math
import os
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from zf_attr.cli._common import CommandError, Outputs, add_model_arguments, add_output_arguments, open_model, write_json
from zf_attr.cli._inputs import LoadedModel

__all__ = ["BENCH_METHODS", "configure_bench", "run_bench"]

BENCH_METHODS = ("deconvnet", "guided", "occlusion")
_TOLERANCE = 1e-4
_REFERENCES = {
    "deconvnet": "captum.attr.Deconvolution",
    "guided": "captum.attr.GuidedBackprop",
    "occlusion": "captum.attr.Occlusion",
}
_NO_SUITE = (
    "--suite needs the benchmark suite, which lives in a checkout of the zf_attr repository (benchmarks/, not part "
    "of the installed package): clone it and run, from its root, `python -m benchmarks --quick` (or `zf-attr bench "
    "--suite` there)"
)


def configure_bench(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``zf-attr bench``."""
    parser.add_argument("--method", nargs="+", choices=BENCH_METHODS, default=["deconvnet", "occlusion"],
                        help="what to time (default: deconvnet occlusion)")  # fmt: skip
    parser.add_argument("--batch", type=int, default=1, help="images per call (default: 1)")
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds, median reported (default: 3)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds after the checked one (default: 1)")
    parser.add_argument("--window", type=int, default=None, help="occlusion window (default: size / 8, min 4)")
    parser.add_argument("--stride", type=int, default=None, help="occlusion stride (default: window / 2)")
    parser.add_argument("--captum-ppe", type=int, default=16, help="Captum's tuned perturbations_per_eval (16)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random images and targets (default: 0)")
    suite = parser.add_argument_group("the benchmark suite (python -m benchmarks, from a checkout)")
    suite.add_argument("--suite", action="store_true", help="run the suite's cases instead of your model's")
    suite.add_argument("--quick", action="store_true", help="the suite's quick mode (tiny inputs)")
    suite.add_argument("--only", action="append", metavar="SUBSTRING", help="suite cases whose name contains it")
    add_model_arguments(parser)
    add_output_arguments(parser, "zf-attr-bench")


def _pairs(loaded: LoadedModel, method: str, args: argparse.Namespace) -> dict[str, Callable[[Any, Any], Any]]:
    from captum.attr import Deconvolution, GuidedBackprop, Occlusion

    import zf_attr

    model = loaded.model
    if method in ("deconvnet", "guided"):
        ours = zf_attr.Deconvnet(model) if method == "deconvnet" else zf_attr.GuidedBackprop(model)
        theirs = Deconvolution(model) if method == "deconvnet" else GuidedBackprop(model)
        return {
            "zf_attr": lambda x, t: ours.attribute(x, target=t),
            "reference": lambda x, t: theirs.attribute(x, target=t),
        }
    side = args.window or max(4, loaded.size // 8)
    step = args.stride or max(1, side // 2)
    if side > loaded.size:
        raise CommandError(f"--window {side} is larger than the {loaded.size}-pixel input")
    window, strides = (3, side, side), (3, step, step)
    occlusion, captum = zf_attr.OcclusionSensitivity(model), Occlusion(model)
    return {
        "zf_attr": lambda x, t: occlusion.attribute(x, sliding_window_shapes=window, strides=strides, target=t),
        "reference": lambda x, t: captum.attribute(x, sliding_window_shapes=window, strides=strides, target=t),
        f"reference_ppe{args.captum_ppe}": lambda x, t: captum.attribute(
            x, sliding_window_shapes=window, strides=strides, target=t, perturbations_per_eval=args.captum_ppe
        ),
    }


def _case(loaded: LoadedModel, method: str, args: argparse.Namespace, images: Any, targets: Any) -> dict[str, Any]:
    """One method against Captum, checked then timed, as a suite case."""
    from zf_attr.benchmarking import case_record, check_then_time, relative_error

    calls = _pairs(loaded, method, args)
    bound = {name: (lambda call=call: call(images, targets)) for name, call in calls.items()}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", module="captum")
        warnings.filterwarnings("ignore", message=".*(Setting backward hooks|non-full backward hook).*")
        # deconvnet and guided backprop are timed even where they differ from Captum (which is wrong on functional
        # rectifiers); occlusion never depends on rectifier handling, so a difference there stops it
        checked = check_then_time(
            bound, lambda out: relative_error(out["zf_attr"], out["reference"]),
            _TOLERANCE if method == "occlusion" else math.inf,
            warmup=args.warmup + 1, repeats=args.repeats, device=loaded.device,
        )  # fmt: skip
    checked.tolerance = _TOLERANCE
    references = [name for name in calls if name != "zf_attr"]
    best = references[0]
    if checked.timings is not None:
        best = min(references, key=lambda name: checked.timings[name].median)  # type: ignore[index]
    record = case_record(
        f"{method}/{loaded.note}", loaded.note, tuple(images.shape), checked, _REFERENCES[method], reference_key=best,
        kind=method,
    )  # fmt: skip
    if method == "occlusion":
        ppe = 1 if best == "reference" else args.captum_ppe
        record["reference"] = f"captum.attr.Occlusion (best perturbations_per_eval={ppe})"
        if checked.timings is not None:
            record["reference_default_s"] = checked.timings["reference"].median
            record["ratio_vs_default"] = record["reference_default_s"] / record["zf_attr_s"]
            record.update({f"{name}_timing": checked.timings[name].as_dict() for name in references})
    elif not checked.equal:
        record["note"] = (
            "differs from Captum, which hooks only nn.ReLU modules (functional rectifiers get the gradient)"
        )
    return record


def _run_suite(args: argparse.Namespace, outputs: Outputs) -> dict[str, Any]:
    """The benchmark suite's cases, from the checkout's ``benchmarks/`` (importable, or under the working folder)."""
    try:
        suite = importlib.import_module("benchmarks.suite.cli")
    except ImportError:
        if not (Path.cwd() / "benchmarks" / "suite" / "cli.py").is_file():
            raise CommandError(_NO_SUITE) from None
        sys.path.insert(0, str(Path.cwd()))
        suite = importlib.import_module("benchmarks.suite.cli")
    argv = ["--out", str(outputs.out / "bench.json")]
    if args.device != "auto":
        argv += ["--device", "cuda" if args.device.startswith("cuda") else args.device]
    argv += ["--quick"] * args.quick + [item for only in args.only or [] for item in ("--only", only)]
    report, _ = suite.run(suite.parse_args(argv))
    return report


def _check_arguments(args: argparse.Namespace) -> None:
    if (args.quick or args.only) and not args.suite:
        raise CommandError("--quick and --only select the suite's cases: add --suite")
    for flag in ("batch", "repeats", "captum_ppe"):
        if getattr(args, flag) < 1:
            raise CommandError(f"--{flag.replace('_', '-')} must be at least 1, got {getattr(args, flag)}")
    if args.warmup < 0:
        raise CommandError(f"--warmup must be at least 0, got {args.warmup}")


def _run_model(args: argparse.Namespace, outputs: Outputs, loaded: LoadedModel) -> dict[str, Any]:
    from zf_attr.benchmarking import device_name, load_average, load_warning, versions

    started, before = dt.datetime.now(dt.timezone.utc), load_average()
    generator = torch.Generator().manual_seed(args.seed)
    images = torch.randn(args.batch, 3, loaded.size, loaded.size, generator=generator).to(loaded.device)
    with torch.no_grad():
        classes = loaded.model(images[:1]).shape[1]
    targets = torch.randint(0, classes, (args.batch,), generator=generator).to(loaded.device)
    outputs.title = f"zf-attr bench: {loaded.note}, {args.batch}×{loaded.size}² on {loaded.device}"
    report: dict[str, Any] = {
        "suite": "zf-attr bench",
        "device": loaded.device.type,
        "device_name": device_name(loaded.device),
        "versions": versions(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "started": started.isoformat(timespec="seconds"),
        "quick": False,
        "model": loaded.note,
        "batch": args.batch,
        "input_size": loaded.size,
        "cases": [],
    }
    outputs.summary = report
    for method in args.method:
        report["cases"].append(_case(loaded, method, args, images, targets))
    after = load_average()
    report["load_average"] = {"before": before, "after": after}
    report["load_warning"] = load_warning(before, after, os.cpu_count(), torch.get_num_threads())
    return report


def run_bench(args: argparse.Namespace) -> int:
    """Time zf_attr against Captum (your model, or the suite's cases) and write the table, the JSON and the report."""
    from zf_attr.benchmarking import cases_table

    _check_arguments(args)
    loaded = None if args.suite else open_model(args)
    outputs = Outputs(args.out, "zf-attr bench: the benchmark suite")
    with outputs.session():
        report = _run_suite(args, outputs) if loaded is None else _run_model(args, outputs, loaded)
        outputs.summary = report
        outputs.add(write_json(outputs.out / "bench.json", report))
        header = f"{report['device_name']} ({report['device']}, {report['torch_threads']} threads), " + ", ".join(
            f"{name} {version}" for name, version in report["versions"].items()
        )
        table = f"{header}\n\n{cases_table(report['cases'])}\n"
        outputs.add(_write(outputs.out / "bench.md", table))
    if not args.quiet:
        print(table)
    if report.get("load_warning"):
        print(f"zf-attr: warning: {report['load_warning']}", file=sys.stderr)
    unequal = [case["name"] for case in report["cases"] if not case["equal"]]
    failing = [name for name in unequal if args.suite or name.startswith("occlusion/")]
    if failing:
        raise CommandError(f"outputs differ from the reference beyond the tolerance: {', '.join(failing)}")
    return 0


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path
