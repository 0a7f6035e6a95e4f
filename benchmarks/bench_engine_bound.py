"""How close the incremental occlusion engine comes to its FLOP bound at 224×224, against our batched engine.

For each ``MODEL:STRIDE`` (window 16, all channels, fill 0, one random image, random weights, eval, float32):
one ``attribute`` call with ``engine="incremental"`` and one with ``engine="batched"``, outputs compared (relative
error ≤ 1e-4, else exit status 1), and the speed-up beside the FLOP bound
(:func:`zf_attr.occlusion.incremental.occlusion_flops`). One call each: a sweep takes seconds to minutes, so run
it on a quiet machine (``flock /tmp/zf_bench.lock``); the load average is recorded.

How to run (from the repository root)::

    python benchmarks/bench_engine_bound.py                       # ResNet-18, VGG-11, VGG-16, ConvNeXt-T: ~5 min
    python benchmarks/bench_engine_bound.py --cases mnasnet1_0:16
    python benchmarks/bench_engine_bound.py --cases convnext_tiny:16:256      # an explicit 256 MiB memory_budget

A case is ``MODEL:STRIDE`` or ``MODEL:STRIDE:BUDGET_MIB``; without a budget both engines use the default one (64 MiB
on the CPU), and each row records how many windows each engine ran per batch.

Results: ``benchmarks/results/engine-bound-<device>-<short device name>.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from collections.abc import Sequence
from functools import partial
from pathlib import Path

import torch
import torchvision

from zf_attr import OcclusionSensitivity
from zf_attr.benchmarking import environment, load_average, relative_error, short_name, timed_call
from zf_attr.occlusion.incremental import occlusion_flops

RESULTS = Path(__file__).resolve().parent / "results"
DEFAULT_CASES = ["resnet18:8", "vgg11:16", "vgg16:16", "convnext_tiny:16", "convnext_tiny:16:256"]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--cases", nargs="+", default=DEFAULT_CASES, help="MODEL:STRIDE[:BUDGET_MIB] (torchvision names)"
    )
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--window", type=int, default=16)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    device = torch.device("cpu")
    record = {**environment(device), "size": args.size, "window": args.window, "cases": []}
    failed = False
    for case in args.cases:
        name, stride, *budget_mib = case.split(":")
        stride = int(stride)
        budget = int(budget_mib[0]) * 2**20 if budget_mib else None
        torch.manual_seed(0)
        model = torchvision.models.get_model(name, weights=None).eval()
        image = torch.randn(1, 3, args.size, args.size)
        bound = occlusion_flops(model, (3, args.size, args.size), args.window, stride).bound
        runs = {}
        for engine in ("incremental", "batched"):
            method = OcclusionSensitivity(model, engine=engine)
            options = dict(
                sliding_window_shapes=(3, args.window, args.window), strides=(3, stride, stride), target=3,
                memory_budget=budget,
            )  # fmt: skip
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                seconds, maps = timed_call(partial(method.attribute, image, **options))
            runs[engine] = (seconds, maps, method.last_engine, method.last_perturbations_per_eval)
        error = relative_error(runs["incremental"][1], runs["batched"][1])
        speedup = runs["batched"][0] / runs["incremental"][0]
        failed |= error > 1e-4
        row = {
            "model": name, "stride": stride, "memory_budget_mib": int(budget_mib[0]) if budget_mib else None,
            "windows_per_batch": {engine: run[3] for engine, run in runs.items()},
            "incremental_s": runs["incremental"][0], "batched_s": runs["batched"][0],
            "engine_ran": runs["incremental"][2], "speedup": speedup, "flop_bound": bound,
            "fraction_of_bound": speedup / bound, "max_relative_error": error, "equal": error <= 1e-4,
        }  # fmt: skip
        record["cases"].append(row)
        setting = f"{name} stride {stride}" + (f" budget {budget_mib[0]} MiB" if budget_mib else "")
        print(f"{setting}: {speedup:.2f}x of a {bound:.2f}x bound ({speedup / bound:.0%}), error {error:.1e}",
              flush=True)  # fmt: skip
    record["load_average_after"] = load_average()
    out = args.out or RESULTS / f"engine-bound-cpu-{short_name(record['device_name'])}.json"
    out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
