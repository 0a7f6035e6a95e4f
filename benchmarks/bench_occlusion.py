"""Benchmark ``zf_attr.OcclusionSensitivity`` against ``captum.attr.Occlusion`` on ResNet-18.

What it measures, in one process on the CPU: seconds for one ``attribute`` call on one random 224x224 image
(torchvision ResNet-18, ``weights=None``, seeded, ``eval()``, float32), window ``(3, 16, 16)``, strides
``(3, 8, 8)`` (27 x 27 = 729 windows), fill 0, one random target class:

* Captum ``Occlusion`` at ``perturbations_per_eval=1`` (its default);
* Captum at each ``perturbations_per_eval`` in ``--ppe`` (default 8 16 32 64); the fastest is its "best";
* zf_attr with ``perturbations_per_eval=None`` (chosen automatically under the default 64 MiB CPU budget).

Each configuration runs ``--repeats`` times (default 1; the minimum is reported) after one untimed warm-up
forward pass. Equal output: every result is compared with Captum's ppe=1 result; the run exits with status 1 if
``max|a - b| / max|b|`` exceeds 1e-4. Results go to ``benchmarks/results/occlusion-cpu-<short device name>.json``
(``-quick`` suffix with ``--quick``) and a table to stdout.

How to run (from the repository root)::

    python benchmarks/bench_occlusion.py            # ~3-4 minutes on 2 cores
    python benchmarks/bench_occlusion.py --quick    # smoke run: 64x64 (7 x 7 = 49 windows)
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import torchvision
from bench_deconvnet import RESULTS_DIR, environment, load_average, short_name
from captum.attr import Occlusion
from torch import Tensor

from zf_attr import OcclusionSensitivity

MAX_RELATIVE_ERROR = 1e-4


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=224, help="input height = width (default 224)")
    parser.add_argument("--window", type=int, default=16, help="window height = width (default 16)")
    parser.add_argument("--stride", type=int, default=8, help="stride (default 8)")
    parser.add_argument("--ppe", type=int, nargs="+", default=[8, 16, 32, 64], help="Captum batch sizes to try")
    parser.add_argument("--repeats", type=int, default=1, help="timed calls per configuration (default 1)")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="smoke run at 64x64")
    parser.add_argument("--out", type=Path, default=None, help="JSON output path")
    args = parser.parse_args(argv)
    if args.quick:
        args.size = 64
    return args


def timed(call: Callable[[], Tensor], repeats: int) -> tuple[float, Tensor]:
    best, result = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        result = call()
        best = min(best, time.perf_counter() - start)
    return best, result


def relative_error(ours: Tensor, reference: Tensor) -> float:
    return float((ours - reference).abs().max() / reference.abs().max().clamp_min(1e-30))


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cpu")
    env = environment(device)
    torch.manual_seed(args.seed)
    model = torchvision.models.resnet18(weights=None).eval()
    image = torch.randn(1, 3, args.size, args.size)
    target = int(torch.randint(1000, ()).item())
    window, strides = (3, args.window, args.window), (3, args.stride, args.stride)
    with torch.no_grad():
        model(image)  # warm-up
    kwargs: dict[str, Any] = dict(sliding_window_shapes=window, strides=strides, target=target)

    rows: list[dict[str, Any]] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for ppe in [1, *args.ppe]:
            seconds, result = timed(
                lambda ppe=ppe: Occlusion(model).attribute(image, perturbations_per_eval=ppe, **kwargs), args.repeats
            )
            if ppe == 1:
                reference = result
            rows.append(dict(method="captum", perturbations_per_eval=ppe, seconds=seconds,
                             relative_error=relative_error(result, reference)))  # fmt: skip
            print(f"captum ppe={ppe}: {seconds:.2f} s", file=sys.stderr)
    ours = OcclusionSensitivity(model)
    seconds, result = timed(lambda: ours.attribute(image, **kwargs), args.repeats)
    rows.append(dict(method="zf_attr", perturbations_per_eval=ours.last_perturbations_per_eval, auto=True,
                     seconds=seconds, relative_error=relative_error(result, reference)))  # fmt: skip
    captum_rows = [row for row in rows if row["method"] == "captum"]
    default = captum_rows[0]
    best = min(captum_rows[1:] or captum_rows, key=lambda row: row["seconds"])
    windows = ((args.size - args.window + args.stride - 1) // args.stride + 1) ** 2
    report = {
        **env,
        "load_average_after": load_average(),
        "model": "resnet18",
        "size": args.size,
        "window": list(window),
        "strides": list(strides),
        "windows": windows,
        "target": target,
        "repeats": args.repeats,
        "rows": rows,
        "captum_default_seconds": default["seconds"],
        "captum_best_seconds": best["seconds"],
        "captum_best_ppe": best["perturbations_per_eval"],
        "zf_attr_seconds": rows[-1]["seconds"],
        "speedup_vs_captum_default": default["seconds"] / rows[-1]["seconds"],
        "speedup_vs_captum_best": best["seconds"] / rows[-1]["seconds"],
        "max_relative_error": max(row["relative_error"] for row in rows),
    }
    out = (
        args.out or RESULTS_DIR / f"occlusion-cpu-{short_name(env['device_name'])}{'-quick' if args.quick else ''}.json"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"ResNet-18 {args.size}x{args.size}, window {window}, strides {strides}: {windows} windows, "
          f"{env['threads']} threads, {env['device_name']}")  # fmt: skip
    print(f"{'method':<10}{'ppe':>12}{'seconds':>10}{'rel. error':>12}")
    for row in rows:
        label = f"{row['perturbations_per_eval']}{' (auto)' if row.get('auto') else ''}"
        print(f"{row['method']:<10}{label:>12}{row['seconds']:>10.2f}{row['relative_error']:>12.1e}")
    print(f"zf_attr (auto) vs Captum default: {report['speedup_vs_captum_default']:.2f}x, vs Captum best "
          f"(ppe={best['perturbations_per_eval']}): {report['speedup_vs_captum_best']:.2f}x; wrote {out}")  # fmt: skip
    return 0 if report["max_relative_error"] <= MAX_RELATIVE_ERROR else 1


if __name__ == "__main__":
    sys.exit(main())
