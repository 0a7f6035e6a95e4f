"""Benchmark ``zf_attr.Deconvnet`` against ``captum.attr.Deconvolution`` on ResNet-18 and VGG-16.

What it measures: seconds per ``attribute(x, target=t)`` call of both methods on torchvision models with
random (seeded) weights in ``eval()`` mode, float32, on the same inputs and targets. The two methods are
timed *interleaved in one process* (warm-up calls first, then A, B, A, B, ...), so that both see the same
machine state; the reported ratio is ``zf_attr median / Captum median`` and the target is ``<= 1.1``
("no slower than 1.1x Captum at equal output"). Equal output is checked on the same inputs: the run exits
with status 1 when the relative error ``max|zf - captum| / max|captum|`` exceeds 1e-5 for any model.
A ratio above target is reported (``"pass": false``) but does not change the exit status.

No weights are downloaded (``weights=None``). Results go to a JSON file (default
``benchmarks/results/deconvnet-<device>-<short device name>[-b<batch>].json``) and a table to stdout.

How to run (from the repository root)::

    python benchmarks/bench_deconvnet.py                       # both models, 224x224, batch 1, 5 repeats
    python benchmarks/bench_deconvnet.py --batch 4             # writes ...-b4.json
    python benchmarks/bench_deconvnet.py --models resnet18 --repeats 11 --out /tmp/r18.json
    python benchmarks/bench_deconvnet.py --device cuda         # on a GPU (synchronises around every call)
    python benchmarks/bench_deconvnet.py --quick --out /tmp/smoke.json   # tiny smoke run (64x64, 1 repeat)
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import torchvision
from captum.attr import Deconvolution
from torch import Tensor, nn

import zf_attr
from zf_attr.benchmarking import environment, load_average, short_name

MODELS: dict[str, Callable[[], nn.Module]] = {
    "resnet18": lambda: torchvision.models.resnet18(weights=None),
    "vgg16": lambda: torchvision.models.vgg16(weights=None),
}
TARGET_RATIO = 1.1
MAX_RELATIVE_ERROR = 1e-5
RESULTS_DIR = Path(__file__).resolve().parent / "results"

Attribute = Callable[[Tensor, Tensor], Tensor]


# ---------------------------------------------------------------------------------------------- arguments
def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", choices=sorted(MODELS), default=["resnet18", "vgg16"])
    parser.add_argument("--batch", type=int, default=1, help="batch size (default 1)")
    parser.add_argument("--size", type=int, default=224, help="input height = width (default 224)")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per method (default 5)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed warm-up calls per method (default 2)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="smoke run: 64x64, 1 warm-up, 1 repeat")
    parser.add_argument("--out", type=Path, default=None, help="JSON output path (default: see module doc)")
    args = parser.parse_args(argv)
    if args.quick:
        args.size, args.repeats, args.warmup = 64, 1, 1
    if args.batch < 1 or args.repeats < 1 or args.warmup < 0 or args.size < 32:
        parser.error("need --batch >= 1, --repeats >= 1, --warmup >= 0 and --size >= 32")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda but torch.cuda.is_available() is False")
    return args


# ---------------------------------------------------------------------------------------------- environment


def default_out(args: argparse.Namespace, name: str) -> Path:
    suffix = ("" if args.batch == 1 else f"-b{args.batch}") + ("-quick" if args.quick else "")
    return RESULTS_DIR / f"deconvnet-{args.device}-{short_name(name)}{suffix}.json"


# ---------------------------------------------------------------------------------------------- measuring
def build_model(name: str, seed: int, device: torch.device) -> nn.Module:
    torch.manual_seed(seed)
    return MODELS[name]().eval().float().to(device)


def make_inputs(batch: int, size: int, seed: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """Random images ``(batch, 3, size, size)`` and one (distinct) class per image."""
    generator = torch.Generator().manual_seed(seed + 1)
    images = torch.randn(batch, 3, size, size, generator=generator)
    targets = torch.randint(0, 1000, (batch,), generator=generator)
    return images.to(device), targets.to(device)


def methods(model: nn.Module) -> dict[str, Attribute]:
    """The two attribution calls under test, constructed once (construction is not timed)."""
    ours, theirs = zf_attr.Deconvnet(model), Deconvolution(model)
    return {
        "zf_attr": lambda x, t: ours.attribute(x, target=t),
        "captum": lambda x, t: theirs.attribute(x, target=t),
    }


def timed_call(function: Attribute, images: Tensor, targets: Tensor, device: torch.device) -> tuple[float, Tensor]:
    """Seconds for one call (synchronised on CUDA) and its result."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    result = function(images, targets)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start, result


def output_errors(ours: Tensor, theirs: Tensor) -> dict[str, float]:
    difference = (ours.double() - theirs.double()).abs().max().item()
    scale = theirs.double().abs().max().item()
    return {
        "max_abs_diff": difference,
        "max_abs_captum": scale,
        "relative_error": difference / scale if scale > 0 else float("inf"),
    }


def summary(seconds: list[float]) -> dict[str, Any]:
    return {"median_s": statistics.median(seconds), "min_s": min(seconds), "all_s": seconds}


def benchmark_model(name: str, args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    """Warm up, check equal output, then time the two methods interleaved."""
    model = build_model(name, args.seed, device)
    images, targets = make_inputs(args.batch, args.size, args.seed, device)
    calls = methods(model)
    outputs: dict[str, Tensor] = {}
    for _ in range(args.warmup):
        for method, function in calls.items():
            outputs[method] = timed_call(function, images, targets, device)[1]
    seconds: dict[str, list[float]] = {method: [] for method in calls}
    for _ in range(args.repeats):
        for method, function in calls.items():
            elapsed, outputs[method] = timed_call(function, images, targets, device)
            seconds[method].append(elapsed)
    errors = output_errors(outputs["zf_attr"], outputs["captum"])
    ratio = statistics.median(seconds["zf_attr"]) / statistics.median(seconds["captum"])
    paired = [ours / theirs for ours, theirs in zip(seconds["zf_attr"], seconds["captum"], strict=True)]
    return {
        "model": name,
        "batch": args.batch,
        "input_size": [3, args.size, args.size],
        "warmup": args.warmup,
        "repeats": args.repeats,
        "zf_attr": summary(seconds["zf_attr"]),
        "captum": summary(seconds["captum"]),
        "ratio": ratio,
        "ratio_of_min": min(seconds["zf_attr"]) / min(seconds["captum"]),
        "ratio_paired_median": statistics.median(paired),
        "target_ratio": TARGET_RATIO,
        "pass": ratio <= TARGET_RATIO,
        "output": {**errors, "tolerance": MAX_RELATIVE_ERROR, "equal": errors["relative_error"] <= MAX_RELATIVE_ERROR},
    }


# ---------------------------------------------------------------------------------------------- reporting
def table(results: list[dict[str, Any]]) -> str:
    header = (
        f"{'model':<9} {'batch':>5} {'zf_attr med/min s':>18} {'captum med/min s':>17} "
        f"{'ratio':>6} {'pass':>5} {'rel err':>9}"
    )
    lines = [header, "-" * len(header)]
    for row in results:
        ours, theirs = row["zf_attr"], row["captum"]
        lines.append(
            f"{row['model']:<9} {row['batch']:>5} "
            f"{ours['median_s']:>9.4f}/{ours['min_s']:<8.4f} {theirs['median_s']:>8.4f}/{theirs['min_s']:<8.4f} "
            f"{row['ratio']:>6.3f} {'yes' if row['pass'] else 'NO':>5} {row['output']['relative_error']:>9.1e}"
        )
    return "\n".join(lines)


def write_json(path: Path, report: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    report = environment(device)
    print(f"{report['device_name']} ({args.device}, {report['threads']} threads), torch {report['torch']}, "
          f"captum {report['captum']}, zf_attr {report['zf_attr']}")  # fmt: skip
    results = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # Captum warns on every Deconvolution call
        warnings.simplefilter("default", zf_attr.ZFAttrWarning)  # ... but zf_attr's own warnings stay visible
        for name in args.models:
            results.append(benchmark_model(name, args, device))
    report["target_ratio"] = TARGET_RATIO
    report["max_relative_error"] = MAX_RELATIVE_ERROR
    report["load_average_after"] = load_average()
    report["results"] = results
    out = args.out or default_out(args, report["device_name"])
    write_json(out, report)
    print(table(results))
    print(f"wrote {out}")
    unequal = [row["model"] for row in results if not row["output"]["equal"]]
    if unequal:
        print(f"FAIL: output differs from Captum beyond {MAX_RELATIVE_ERROR:g} on {unequal}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
