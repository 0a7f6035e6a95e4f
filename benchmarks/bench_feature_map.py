"""Benchmark ``FeatureMapDeconvnet`` (top-k of every map) against a loop of Captum ``NeuronDeconvolution`` calls.

What it measures, per configuration ``layer:size:batch``: projecting the ``k`` (default 9) strongest locations of
**every** map of a ResNet-18 layer (``layer3``: 256 maps, so 2304 projections per image) for a batch of random
images, float32, seeded ``weights=None`` model in ``eval()``:

* **zf_attr**: one ``FeatureMapDeconvnet(model, layer).attribute(images, None, mode="topk", k=k)`` call: one
  forward pass to the layer, then either (shallow layers, whose receptive field is under half the image) one
  forward and backward pass per batch of receptive-field crops, or the whole-image backward passes batched with
  vmap, ``--chunk-size`` seeds at a time (``cropped`` in the JSON says which).
* **Captum**: the same projections from ``captum.attr.NeuronDeconvolution``, one call per (map, rank): a callable
  ``neuron_selector`` picks each example's own location of that rank and multiplies it by its (detached) value,
  so one call serves the whole batch and the seed is the activation itself, as in zf_attr. That is
  ``maps * k`` calls, each a full forward pass plus a backward pass from the layer. Only ``--captum-calls`` of
  them, drawn at random, are timed; the loop's time is their mean times ``maps * k`` (printed as such).

Equal output: every timed Captum call is compared with zf_attr's projections of the same seeds,
``max|zf - captum| / max|captum|``; the run exits with status 1 above 1e-4. The top-k locations are also
recomputed independently from a plain forward pass.

The FLOP bound printed beside the measured ratio counts multiply-accumulates of convolutions and linear layers
(forward hooks): Captum pays ``F_full + B`` per call, zf_attr ``F_layer / (maps * k) + B`` per projection, where
``F_full`` is a full forward pass, ``F_layer`` the forward pass up to the layer and ``B ~= F_layer`` the backward
pass from the layer to the pixels (input gradients only). The *cone* bound assumes an ideal sparse backward
that touches only the units a seed depends on (the part of each layer inside the seed's receptive field, averaged
over all seed locations): the most that restricting the backward to cropped regions could give.

How to run (from the repository root; wrap timing runs in ``flock /tmp/zf_bench.lock`` on a shared machine)::

    python benchmarks/bench_feature_map.py                  # layer1/2/3 at 224, layer3 at 112 (batch 4)
    python benchmarks/bench_feature_map.py --configs layer3:224:2 --captum-calls 64
    python benchmarks/bench_feature_map.py --quick --out /tmp/smoke.json    # layer3:64:2, k=2, 8 Captum calls
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import platform
import statistics
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import captum
import torch
import torchvision
from captum.attr import NeuronDeconvolution
from torch import Tensor, nn

if __package__ in (None, ""):  # run as a script: the repository root is what makes `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import zf_attr
from benchmarks.suite.projection import captum_projection, count_macs
from zf_attr.attr._layers import capture_layer_output
from zf_attr.attr.receptive_field import receptive_field
from zf_attr.benchmarking import device_name, load_average, short_name

MAX_RELATIVE_ERROR = 1e-4
TARGET_RATIO = 10.0
RESULTS_DIR = Path(__file__).resolve().parent / "results"
DEFAULT_CONFIGS = ["layer1:224:1", "layer2:224:1", "layer3:224:1", "layer3:112:4"]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", nargs="+", default=DEFAULT_CONFIGS, help="layer:size:batch of ResNet-18")
    parser.add_argument("--k", type=int, default=9, help="projections per map and image (default 9)")
    parser.add_argument("--captum-calls", type=int, default=24, help="Captum calls timed per configuration")
    parser.add_argument("--chunk-size", type=int, default=32, help="zf_attr seeds per batched backward pass")
    parser.add_argument(
        "--vectorize", choices=["auto", "on", "off"], default="auto", help="zf_attr's vmap (auto: on CUDA only)"
    )
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="smoke run: layer3:64:2, k=2, 8 Captum calls")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.quick:
        args.configs, args.k, args.captum_calls = ["layer3:64:2"], 2, 8
    try:
        args.configs = [(layer, int(size), int(batch)) for layer, size, batch in (c.split(":") for c in args.configs)]
    except ValueError:
        parser.error("--configs takes layer:size:batch, e.g. layer3:224:1")
    if args.k < 1 or args.captum_calls < 1 or args.chunk_size < 1:
        parser.error("need --k, --captum-calls and --chunk-size >= 1")
    return args


# ---------------------------------------------------------------------------------------------- FLOP bound
def macs(model: nn.Module, layer: str, images: Tensor) -> dict[str, Any]:
    """Multiply-accumulates per image of the full forward pass, the pass up to ``layer`` and the ideal cone."""
    counted = count_macs(model, layer, images)
    target = model.get_submodule(layer)
    # ideal sparse backward: at each conv below the layer, only the output positions inside the seed's cone
    seed_field = receptive_field(model, layer, (images[:1],))
    out_h, out_w = capture_layer_output(model, target, (images[:1],), stop=True)[0].shape[-2:]
    size = images.shape[-2:]
    cone_total = 0.0
    for name, per, (h, w) in counted["below"]:
        field = receptive_field(model, name, (images[:1],))
        positions = 0
        for row in range(out_h):
            for col in range(out_w):
                x0, y0, x1, y1 = seed_field.box(row, col, size)
                rows = _inside(y0, y1, field.jump[0], field.lo[0], field.hi[0], h, size[0])
                cols = _inside(x0, x1, field.jump[1], field.lo[1], field.hi[1], w, size[1])
                positions += rows * cols
        cone_total += per * positions / (out_h * out_w)
    return {"full": counted["full"], "to_layer": counted["to_layer"], "cone_backward": cone_total}


def _inside(start: int, stop: int, jump: int, lo: int, hi: int, count: int, image: int) -> int:
    """Units of a layer (``count`` along the axis) whose clipped field lies inside ``[start, stop)`` pixels."""
    inside = 0
    for i in range(count):
        first, last = max(jump * i + lo, 0), min(jump * i + hi, image - 1)
        inside += start <= first and last < stop
    return inside


# ---------------------------------------------------------------------------------------------- measuring
def benchmark(layer: str, size: int, batch: int, args: argparse.Namespace) -> dict[str, Any]:
    torch.manual_seed(args.seed)
    model = torchvision.models.resnet18(weights=None).eval()
    images = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(args.seed + 1))
    projector = zf_attr.FeatureMapDeconvnet(model, layer)
    vectorize = {"auto": None, "on": True, "off": False}[args.vectorize]
    projector.attribute(images[:1], [0, 1], mode="topk", k=1, chunk_size=args.chunk_size, vectorize=vectorize)
    began = time.perf_counter()
    result = projector.attribute(images, None, mode="topk", k=args.k, chunk_size=args.chunk_size, vectorize=vectorize)
    ours_s = time.perf_counter() - began
    maps = int(result.channels[-1]) + 1
    seeds = maps * args.k

    plain, _ = capture_layer_output(model, model.get_submodule(layer), (images,), stop=True)
    flat = plain.flatten(2).topk(args.k, dim=-1).indices.flatten(1)  # (batch, maps * k), independent of zf_attr
    width = plain.shape[-1]
    same_locations = torch.equal(flat, result.locations[..., 0] * width + result.locations[..., 1])

    theirs = NeuronDeconvolution(model, model.get_submodule(layer))
    picks = torch.randperm(seeds, generator=torch.Generator().manual_seed(args.seed + 2))[: args.captum_calls]
    locations = result.locations
    captum_projection(theirs, images, locations[:, 0, 0], locations[:, 0, 1], 0)  # warm-up
    seconds, errors = [], []
    for m in picks.tolist():
        channel = m // args.k
        began = time.perf_counter()
        expected = captum_projection(theirs, images, locations[:, m, 0], locations[:, m, 1], channel)
        seconds.append(time.perf_counter() - began)
        scale = expected.abs().max().item()
        diff = (result.projections[:, m] - expected).abs().max().item()
        errors.append(diff / scale if scale > 0 else (0.0 if diff == 0 else math.inf))
    captum_s = statistics.mean(seconds) * seeds
    count = macs(model, layer, images)
    dense_bound = (count["full"] + count["to_layer"]) / (count["to_layer"] / seeds + count["to_layer"])
    cone_bound = (count["full"] + count["to_layer"]) / (count["to_layer"] / seeds + count["cone_backward"])
    field = projector.receptive_field()
    return {
        "layer": layer,
        "input_size": [3, size, size],
        "batch": batch,
        "maps": maps,
        "k": args.k,
        "projections": batch * seeds,
        "layer_map": list(plain.shape[-2:]),
        "receptive_field": list(field.size),
        "zf_attr_s": ours_s,
        "zf_attr": {"chunk_size": args.chunk_size, "vectorize": vectorize, "cropped": projector.last_cropped},
        "captum_calls_total": seeds,
        "captum_calls_timed": len(seconds),
        "captum_call_s": {"mean": statistics.mean(seconds), "min": min(seconds), "max": max(seconds)},
        "captum_loop_s_estimated": captum_s,
        "ratio": captum_s / ours_s,
        "target_ratio": TARGET_RATIO,
        "pass": captum_s / ours_s >= TARGET_RATIO,
        "flop_bound_ratio_dense": dense_bound,
        "flop_bound_ratio_cone": cone_bound,
        "gmacs_per_image": {key: value / 1e9 for key, value in count.items()},
        "max_relative_error": max(errors),
        "equal": max(errors) <= MAX_RELATIVE_ERROR,
        "same_topk_locations_as_plain_forward": same_locations,
    }


def table(results: list[dict[str, Any]]) -> str:
    header = (
        f"{'layer':<7} {'size':>4} {'batch':>5} {'proj':>6} {'zf_attr s':>9} {'captum s (est)':>14} {'ratio':>6} "
        f"{'bound dense/cone':>16} {'rel err':>8} {'cropped':>8}"
    )
    lines = [header, "-" * len(header)]
    for row in results:
        lines.append(
            f"{row['layer']:<7} {row['input_size'][1]:>4} {row['batch']:>5} {row['projections']:>6} "
            f"{row['zf_attr_s']:>9.2f} {row['captum_loop_s_estimated']:>14.2f} {row['ratio']:>6.2f} "
            f"{row['flop_bound_ratio_dense']:>7.2f}/{row['flop_bound_ratio_cone']:<8.2f} "
            f"{row['max_relative_error']:>8.1e} {row['zf_attr']['cropped']!s:>8}"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    name = device_name(torch.device("cpu"))
    report: dict[str, Any] = {
        "timestamp": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "device": "cpu",
        "device_name": name,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "captum": captum.__version__,
        "zf_attr": zf_attr.__version__,
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "load_average_before": load_average(),
        "captum_timing": "a random subset of the Captum calls is timed; the loop time is their mean x all calls",
    }
    print(f"{name} (cpu, {report['threads']} threads), torch {report['torch']}, captum {report['captum']}")
    results = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # Captum warns on every call
        for layer, size, batch in args.configs:
            row = benchmark(layer, size, batch, args)
            results.append(row)
            print(
                f"{layer} {size}x{size} batch {batch}: zf_attr {row['zf_attr_s']:.2f} s for {row['projections']} "
                f"projections; Captum timed {row['captum_calls_timed']} of {row['captum_calls_total']} calls "
                f"({row['captum_call_s']['mean']:.3f} s each) -> {row['captum_loop_s_estimated']:.1f} s estimated; "
                f"ratio {row['ratio']:.2f} (FLOP bound {row['flop_bound_ratio_dense']:.2f} dense, "
                f"{row['flop_bound_ratio_cone']:.2f} ideal sparse cone); max rel err {row['max_relative_error']:.1e}",
                flush=True,
            )
    report["load_average_after"] = load_average()
    report["max_relative_error"] = MAX_RELATIVE_ERROR
    report["results"] = results
    out = args.out or RESULTS_DIR / f"feature-map-cpu-{short_name(name)}{'-quick' if args.quick else ''}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(table(results))
    print(f"wrote {out}")
    bad = [f"{r['layer']}:{r['input_size'][1]}" for r in results if not r["equal"]]
    if bad:
        print(f"FAIL: projections differ from Captum beyond {MAX_RELATIVE_ERROR:g} on {bad}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
