"""``python -m benchmarks``: run the suite's cases, write one JSON file, exit 1 if any output was not equal.

Every case checks zf_attr's output against its reference first and times both only when they agree; a case
whose outputs differ (or that fails) is recorded with ``"equal": false`` and no time, the JSON is still written,
and the run exits with status 1 at the end.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import time
import traceback
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from benchmarks.suite.context import PLANT_VARIABLE, Context
from benchmarks.suite.registry import Case, cases, select
from zf_attr.benchmarking import cases_table, device_name, load_average, load_warning, short_name, versions
from zf_attr.errors import ZFAttrWarning

__all__ = ["RESULTS_DIR", "default_out", "main", "parse_args", "run"]

RESULTS_DIR = Path(__file__).resolve().parents[1] / "results"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line of ``python -m benchmarks``."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny inputs, fewer models (a few minutes on 2 cores)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cuda" if torch.cuda.is_available() else "cpu",
                        help="default: cuda when available")  # fmt: skip
    parser.add_argument("--out", type=Path, default=None,
                        help="JSON file (default: benchmarks/results/suite-<device>-<name>[-quick].json)")  # fmt: skip
    parser.add_argument("--only", action="append", metavar="SUBSTRING",
                        help="run the cases whose name contains SUBSTRING (repeatable)")  # fmt: skip
    parser.add_argument("--list", action="store_true", help="print the selected cases' names and exit")
    parser.add_argument("--time-budget", type=float, default=None, metavar="SECONDS",
                        help="start no case after this many seconds (the rest are listed as not run)")  # fmt: skip
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda, but torch.cuda.is_available() is False")
    return args


def default_out(device: torch.device, name: str, quick: bool) -> Path:
    """``benchmarks/results/suite-<cpu|cuda>-<device name slug>[-quick].json``."""
    return RESULTS_DIR / f"suite-{device.type}-{short_name(name)}{'-quick' if quick else ''}.json"


def _git_commit() -> str | None:
    try:
        result = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False,
                                cwd=RESULTS_DIR.parent, timeout=10)  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip() or None


def _run_case(case: Case, ctx: Context) -> dict[str, Any]:
    """One case's record, with its zf_attr warnings and wall time; a failure is recorded as not equal."""
    began = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            record = case.run(ctx)
        except Exception as error:  # a crash is a result too: recorded, and the run exits 1 at the end
            record = {"name": case.name, "model": case.model, "zf_attr_s": None, "reference_s": None, "ratio": None,
                      "equal": False, "max_relative_error": None, "error": f"{type(error).__name__}: {error}",
                      "traceback": traceback.format_exc(limit=-4)}  # fmt: skip
    ours = sorted({str(w.message).splitlines()[0][:300] for w in caught if issubclass(w.category, ZFAttrWarning)})
    if ours:
        record["zf_attr_warnings"] = ours
    if record.get("flop_bound") and record.get("ratio") and record.get("engine", "incremental") == "incremental":
        record["fraction_of_bound"] = record["ratio"] / record["flop_bound"]  # the bound is the incremental engine's
    record["wall_s"] = time.perf_counter() - began
    ctx.synchronize()
    return record


def _line(record: dict[str, Any]) -> str:
    if record.get("error"):
        return f"{record['name']}: FAILED {record['error']}"
    if not record["equal"]:
        return f"{record['name']}: NOT EQUAL, error {record['max_relative_error']:.2e} > {record['tolerance']:g}"
    engine = f", engine {record['engine']}" if "engine" in record else ""
    return (
        f"{record['name']}: zf_attr {record['zf_attr_s']:.4g} s, reference {record['reference_s']:.4g} s, "
        f"speed-up {record['ratio']:.3g}x, error {record['max_relative_error']:.1e}{engine}"
    )


def run(args: argparse.Namespace) -> tuple[dict[str, Any], Path]:
    """Run the selected cases and write the JSON; the report and its path."""
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    name = device_name(device)
    selected = select(cases(args.quick, device), args.only)
    if args.list or not selected:
        print("\n".join(case.name for case in selected) or f"no case matches --only {args.only}")
        raise SystemExit(0 if selected else 2)
    started, began, before = dt.datetime.now(dt.timezone.utc), time.perf_counter(), load_average()
    ctx = Context(device, args.quick, args.seed)
    out = args.out or default_out(device, name, args.quick)
    out.parent.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {
        "suite": "python -m benchmarks",
        "command": ["python", "-m", "benchmarks", *sys.argv[1:]] if sys.argv[0].endswith("__main__.py") else None,
        "device": device.type,
        "device_name": name,
        "versions": versions(),
        "platform": platform.platform(),
        "git_commit": _git_commit(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_average": {"before": before, "after": None},
        "load_warning": None,
        "quick": args.quick,
        "started": started.isoformat(timespec="seconds"),
        "wall_s": None,
        "complete": False,
        "settings": dataclasses.asdict(ctx.settings),
        "planted_mismatch": ctx.plant,
        "cases": [],
        "not_run": [],
    }
    if device.type == "cuda":
        report["cuda"] = {"torch_cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version(), "tf32": False}
    for index, case in enumerate(selected, 1):
        if args.time_budget is not None and time.perf_counter() - began > args.time_budget:
            report["not_run"] = [later.name for later in selected[index - 1 :]]
            print(f"time budget of {args.time_budget:g} s spent: {len(report['not_run'])} cases not run",
                  file=sys.stderr)  # fmt: skip
            break
        print(f"[{index}/{len(selected)}] {case.name} ...", file=sys.stderr, flush=True)
        report["cases"].append(_run_case(case, ctx))
        print(f"    {_line(report['cases'][-1])}", file=sys.stderr, flush=True)
        report["wall_s"] = time.perf_counter() - began
        out.write_text(json.dumps(report, indent=2) + "\n")  # after every case: a run cut short keeps its results
    after = load_average()
    report["load_average"]["after"] = after
    report["load_warning"] = load_warning(before, after, os.cpu_count(), torch.get_num_threads())
    report["wall_s"] = time.perf_counter() - began
    report["complete"] = not report["not_run"]
    out.write_text(json.dumps(report, indent=2) + "\n")
    return report, out


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m benchmarks``; 0 when every case's outputs were equal, else 1."""
    args = parse_args(argv)
    report, out = run(args)
    print(cases_table(report["cases"]))
    print(f"wrote {out} ({report['wall_s']:.0f} s)")
    if report["load_warning"]:
        print(f"WARNING: {report['load_warning']}", file=sys.stderr)
    if report["not_run"]:
        print(f"note: {len(report['not_run'])} cases not run (--time-budget): {', '.join(report['not_run'])}",
              file=sys.stderr)  # fmt: skip
    if report["planted_mismatch"]:
        print(f"note: {PLANT_VARIABLE}={report['planted_mismatch']} planted a mismatch", file=sys.stderr)
    unequal = [case["name"] for case in report["cases"] if not case["equal"]]
    if unequal:
        print(f"FAIL: outputs not equal (or the case failed): {', '.join(unequal)}", file=sys.stderr)
        return 1
    return 0
