"""Benchmark the overhead of ``zf_attr.analysis.mine_top_k`` over plain inference on the same data.

What it measures, per configuration ``layer:size:images`` of a ResNet-18 (seeded, ``weights=None``, ``eval()``,
float32), on generated images (``ShapesDataset``, rendered once before timing) in batches of ``--batch``:

* **full inference**: ``model(x)`` under ``torch.no_grad()`` over all batches (what a user already pays to run
  the model over a data set);
* **inference to the layer**: the same forward pass stopped right after the layer (``capture_layer_output(...,
  stop=True)``), the part of the network mining has to run;
* **mining**: ``mine_top_k(model, layer, batches, k=9)`` over the same list of batches (every map of the layer,
  ``one_per_image=True``, and with ``--all-locations`` also ``False``), no progress bar.

The three are interleaved **batch by batch**, inside one real, streaming ``mine_top_k`` call: it reads its batches
from a generator that, before handing over each batch, runs and times the full and the to-layer forward pass of
that same batch. Mining's own time is the call's time minus the time spent inside the generator (so it includes
the call's set-up and every top-k update). On a shared machine whose load drifts, the three numbers of a round
thus see the same conditions. ``--warmup`` untimed rounds, then ``--repeats`` timed ones; wall-clock and process
CPU time are both recorded. ``ratio = mining median / full-inference median`` is compared with the target 1.25
(the issue's "at most 25 % overhead over plain inference"); ``ratio_vs_layer = mining median / to-layer
median`` is the overhead of the top-k bookkeeping itself; ``*_paired_median`` are medians of per-round ratios.
Equal output: the mined result is compared bitwise with a brute-force top-k (plain Python sort of every image's
map maxima) computed from the same batches; the run exits with status 1 if they differ.

How to run (from the repository root; wrap timing runs in ``flock /tmp/zf_bench.lock`` on a shared machine)::

    python benchmarks/bench_mining.py                          # layer3:224:256 and layer3:112:512, batch 32
    python benchmarks/bench_mining.py --configs layer3:224:512 --repeats 5 --all-locations
    python benchmarks/bench_mining.py --quick --out /tmp/smoke.json   # layer3:64:64, 1 repeat
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torchvision

if __package__ in (None, ""):  # run as a script: the repository root is what makes `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.suite.mining import brute_force
from benchmarks.suite.models import shapes_batches
from zf_attr.analysis import TopKActivations, mine_top_k
from zf_attr.attr._layers import capture_layer_output
from zf_attr.benchmarking import environment, load_average, short_name

TARGET_RATIO = 1.25
RESULTS_DIR = Path(__file__).resolve().parent / "results"
DEFAULT_CONFIGS = ["layer3:224:256", "layer3:112:512"]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", nargs="+", default=DEFAULT_CONFIGS, help="layer:size:images of ResNet-18")
    parser.add_argument("--batch", type=int, default=32, help="images per batch (default 32)")
    parser.add_argument("--k", type=int, default=9)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--all-locations", action="store_true", help="also time one_per_image=False")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="smoke run: layer3:64:64, 1 repeat, no warm-up")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.quick:
        args.configs, args.repeats, args.warmup = ["layer3:64:64"], 1, 0
    try:
        args.configs = [(layer, int(size), int(count)) for layer, size, count in (c.split(":") for c in args.configs)]
    except ValueError:
        parser.error("--configs takes layer:size:images, e.g. layer3:224:256")
    if min(args.batch, args.k, args.repeats) < 1 or args.warmup < 0:
        parser.error("need --batch, --k, --repeats >= 1 and --warmup >= 0")
    return args


def summary(seconds: list[float]) -> dict[str, Any]:
    return {"median_s": statistics.median(seconds), "min_s": min(seconds), "all_s": seconds}


def benchmark(layer_name: str, size: int, count: int, args: argparse.Namespace) -> dict[str, Any]:
    torch.manual_seed(args.seed)
    model = torchvision.models.resnet18(weights=None).eval()
    layer = model.get_submodule(layer_name)
    batches = list(shapes_batches(count, size, args.batch, args.seed))

    mined: dict[str, TopKActivations] = {}

    def one_round(one_per_image: bool) -> dict[str, float]:
        """One ``mine_top_k`` call over a generator that, before handing over each batch, times the plain
        forward passes of that same batch: the three loops are interleaved batch by batch (robust to load
        drifting on a shared machine). Mining's own time is the call's time minus the time spent inside the
        generator."""
        spent = {"full": 0.0, "to_layer": 0.0, "inside": 0.0, "full_cpu": 0.0, "to_layer_cpu": 0.0, "inside_cpu": 0.0}

        def clock() -> tuple[float, float]:
            return time.perf_counter(), time.process_time()

        def instrumented() -> Any:
            for images in batches:
                enter = clock()
                with torch.no_grad():
                    start = clock()
                    model(images)
                    middle = clock()
                    capture_layer_output(model, layer, (images,), stop=True)
                    end = clock()
                spent["full"] += middle[0] - start[0]
                spent["full_cpu"] += middle[1] - start[1]
                spent["to_layer"] += end[0] - middle[0]
                spent["to_layer_cpu"] += end[1] - middle[1]
                leave = clock()
                spent["inside"] += leave[0] - enter[0]
                spent["inside_cpu"] += leave[1] - enter[1]
                yield images

        start = clock()
        mined[str(one_per_image)] = mine_top_k(
            model, layer_name, instrumented(), k=args.k, one_per_image=one_per_image, show_progress=False
        )
        end = clock()
        return {
            "full": spent["full"],
            "to_layer": spent["to_layer"],
            "mining": end[0] - start[0] - spent["inside"],
            "full_cpu": spent["full_cpu"],
            "to_layer_cpu": spent["to_layer_cpu"],
            "mining_cpu": end[1] - start[1] - spent["inside_cpu"],
        }

    modes = {"": True, "_all_locations": False} if args.all_locations else {"": True}
    rounds: dict[str, list[dict[str, float]]] = {suffix: [] for suffix in modes}
    for round_index in range(args.warmup + args.repeats):
        for suffix, one_per_image in modes.items():
            measured = one_round(one_per_image)
            if round_index >= args.warmup:
                rounds[suffix].append(measured)
    reference = brute_force(model, layer, layer_name, batches, args.k)
    equal = mined["True"].equal(reference)
    result: dict[str, Any] = {
        "model": "resnet18",
        "layer": layer_name,
        "input_size": size,
        "images": count,
        "batch": args.batch,
        "k": args.k,
        "channels": int(reference.channels.numel()),
        "map_size": list(reference.map_size or ()),
        "warmup": args.warmup,
        "repeats": args.repeats,
        "equal_to_brute_force": equal,
    }
    for suffix, measured in rounds.items():
        for name in ("full", "to_layer", "mining", "full_cpu", "to_layer_cpu", "mining_cpu"):
            result[f"{name}{suffix}"] = summary([m[name] for m in measured])
        mining = result[f"mining{suffix}"]["median_s"]
        result[f"ratio{suffix}"] = mining / result[f"full{suffix}"]["median_s"]
        result[f"ratio_vs_layer{suffix}"] = mining / result[f"to_layer{suffix}"]["median_s"]
        result[f"ratio_paired_median{suffix}"] = statistics.median(m["mining"] / m["full"] for m in measured)
        result[f"ratio_vs_layer_paired_median{suffix}"] = statistics.median(
            m["mining"] / m["to_layer"] for m in measured
        )
        result[f"ratio_cpu{suffix}"] = (
            result[f"mining_cpu{suffix}"]["median_s"] / result[f"full_cpu{suffix}"]["median_s"]
        )
        result[f"ratio_vs_layer_cpu{suffix}"] = (
            result[f"mining_cpu{suffix}"]["median_s"] / result[f"to_layer_cpu{suffix}"]["median_s"]
        )
        result[f"images_per_s{suffix}"] = count / mining
    result["target_ratio"] = TARGET_RATIO
    result["pass"] = result["ratio"] <= TARGET_RATIO
    return result


def table(results: list[dict[str, Any]]) -> str:
    lines = [
        "| layer | size | images | full inference s | to layer s | mining s | ratio vs full (≤ 1.25) "
        "| ratio vs to-layer | same, CPU time |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in results:
        for suffix, label in (("", ""), ("_all_locations", " (all locations)")):
            if f"mining{suffix}" not in r:
                continue
            lines.append(
                f"| {r['layer']}{label} | {r['input_size']} | {r['images']} | {r[f'full{suffix}']['median_s']:.2f} | "
                f"{r[f'to_layer{suffix}']['median_s']:.2f} | {r[f'mining{suffix}']['median_s']:.2f} | "
                f"{r[f'ratio{suffix}']:.3f} | {r[f'ratio_vs_layer{suffix}']:.3f} | "
                f"{r[f'ratio_cpu{suffix}']:.3f} / {r[f'ratio_vs_layer_cpu{suffix}']:.3f} |"
            )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    report: dict[str, Any] = environment(torch.device("cpu"))
    report.update(cpu_count=os.cpu_count(), target_ratio=TARGET_RATIO, results=[])
    name = report["device_name"]
    for layer, size, count in args.configs:
        result = benchmark(layer, size, count, args)
        report["results"].append(result)
        print(table([result]).splitlines()[-1], flush=True)
    report["load_average_after"] = load_average()
    out = args.out or RESULTS_DIR / f"mining-cpu-{short_name(name)}{'-quick' if args.quick else ''}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(table(report["results"]))
    print(f"written to {out}")
    return 0 if all(r["equal_to_brute_force"] for r in report["results"]) else 1


if __name__ == "__main__":
    sys.exit(main())
