"""Does an occlusion sweep keep within its ``memory_budget``? Budget against measured peak growth, both engines.

Each configuration runs in a fresh subprocess (Linux only): the model is built and warmed (one forward pass and
one small sweep), the kernel's peak-resident-memory mark is reset (``5`` written to ``/proc/self/clear_refs``),
the sweep runs with ``memory_budget=BUDGET``, and the growth is ``VmHWM`` after the call minus ``VmRSS`` before it
(from ``/proc/self/status``; ``ru_maxrss`` would carry the parent's peak across ``exec``). Torchvision models,
``weights=None``, seeded, ``eval()``; one random image; window 16 over all channels, stride 8; target 1.

A configuration passes when the growth is at most the budget; the run exits with status 1 otherwise. Results go to
``benchmarks/results/memory-budget-cpu-<short device name>.json``.

How to run (from the repository root)::

    python benchmarks/bench_memory_budget.py                         # resnet18, vgg11; 128, 256, 512 MiB
    python benchmarks/bench_memory_budget.py --models resnet18 --budgets 96 256 --size 160
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, sys, warnings
import torch, torchvision
import zf_attr

def status(key):
    with open("/proc/self/status") as lines:
        for line in lines:
            if line.startswith(key):
                return int(line.split()[1]) * 1024

name, size, budget, engine, stride = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], int(sys.argv[5])
torch.manual_seed(0)
model = getattr(torchvision.models, name)(num_classes=10).eval()
image = torch.randn(1, 3, size, size)
occlusion = zf_attr.OcclusionSensitivity(model, engine=engine)
options = dict(sliding_window_shapes=(3, 16, 16), strides=(3, stride, stride), target=1)
with torch.no_grad():
    model(image)
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    occlusion.attribute(image[..., :64, :64], sliding_window_shapes=(3, 16, 16), strides=(3, 16, 16), target=1)
    with open("/proc/self/clear_refs", "w") as clear:
        clear.write("5")
    before = status("VmRSS")
    occlusion.attribute(image, memory_budget=budget, **options)
peak = status("VmHWM")
print(json.dumps({"growth": peak - before, "engine": occlusion.last_engine,
                  "windows_per_batch": occlusion.last_perturbations_per_eval}))
"""


def measure(model: str, size: int, budget_mib: int, engine: str, stride: int = 8) -> dict:
    """Run one configuration in a fresh process; the growth of its peak resident memory against the budget."""
    result = subprocess.run(
        [sys.executable, "-c", CHILD, model, str(size), str(budget_mib * 2**20), engine, str(stride)],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    )
    child = json.loads(result.stdout.strip().splitlines()[-1])
    growth_mib = child["growth"] / 2**20
    return {
        "model": model,
        "size": size,
        "stride": stride,
        "engine_requested": engine,
        "engine": child["engine"],
        "budget_mib": budget_mib,
        "growth_mib": round(growth_mib, 1),
        "fraction_of_budget": round(growth_mib / budget_mib, 3),
        "windows_per_batch": child["windows_per_batch"],
        "within_budget": growth_mib <= budget_mib,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["resnet18", "vgg11"])
    parser.add_argument("--budgets", nargs="+", type=int, default=[128, 256, 512], help="MiB")
    parser.add_argument("--engines", nargs="+", default=["incremental", "batched"])
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--stride", type=int, default=8)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    if not Path("/proc/self/clear_refs").exists():
        print("needs Linux (/proc/self/clear_refs)", file=sys.stderr)
        return 2
    sys.path.insert(0, str(ROOT))
    import torch

    from zf_attr.benchmarking import device_name, environment, short_name

    device = torch.device("cpu")
    out = args.out or ROOT / "benchmarks" / "results" / f"memory-budget-cpu-{short_name(device_name(device))}.json"
    record = {"environment": environment(device), "cases": []}
    cases = record["cases"]
    for model in args.models:
        for engine in args.engines:
            for budget in args.budgets:
                case = measure(model, args.size, budget, engine, args.stride)
                cases.append(case)
                print(
                    f"{model:10s} {engine:11s} -> {case['engine']:11s} budget {budget:4d} MiB  growth "
                    f"{case['growth_mib']:6.1f} MiB ({case['fraction_of_budget']:.0%})  {case['windows_per_batch']} "
                    f"windows per batch  {'ok' if case['within_budget'] else 'OVER BUDGET'}",
                    flush=True,
                )
                out.write_text(json.dumps(record, indent=2) + "\n")  # after every case: a long run keeps its rows
    print(f"wrote {out}")
    return 0 if all(case["within_budget"] for case in cases) else 1


if __name__ == "__main__":
    raise SystemExit(main())
