"""Measuring zf_attr against Captum: the machine, interleaved timing, and output agreement.

Shared by ``zf-attr bench`` and the scripts in ``benchmarks/``. Both methods of a comparison run in one process,
interleaved (ours, theirs, ours, theirs, ...), so that they see the same machine state; CUDA work is
synchronised around every timed call.

Example:
    >>> import torch
    >>> from zf_attr.benchmarking import relative_error, time_interleaved
    >>> calls = {"double": lambda: torch.ones(4) * 2, "add": lambda: torch.ones(4) + 1}
    >>> timings = time_interleaved(calls, warmup=1, repeats=3)
    >>> sorted(timings), len(timings["add"].seconds), relative_error(timings["double"].output, torch.full((4,), 2.0))
    (['add', 'double'], 3, 0.0)
"""

from __future__ import annotations

import datetime as dt
import os
import platform
import re
import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

import zf_attr

__all__ = [
    "Timing",
    "device_name",
    "environment",
    "load_average",
    "relative_error",
    "short_name",
    "time_interleaved",
    "timed_call",
]


def device_name(device: torch.device) -> str:
    """Human name of the device: the GPU's name, or the CPU model from /proc/cpuinfo."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown-cpu"


def short_name(name: str) -> str:
    """File-name-friendly short form: ``"Intel(R) Xeon(R) Gold 6248 CPU @ 2.50GHz"`` -> ``"intel-xeon-gold-6248"``."""
    name = re.sub(r"\((R|TM|tm|r)\)|@.*$|\bCPU\b|\bProcessor\b|\bNVIDIA\b", " ", name)
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    return slug or "unknown"


def load_average() -> list[float] | None:
    """1, 5 and 15 minute load averages (to spot a busy machine in the results), where the OS has them."""
    try:
        return [round(value, 2) for value in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def environment(device: torch.device) -> dict[str, Any]:
    """Time stamp, device, platform and library versions, threads and load average, for a results file."""
    import torchvision

    return {
        "timestamp": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "device": device.type,
        "device_name": device_name(device),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "captum": metadata.version("captum"),
        "zf_attr": zf_attr.__version__,
        "threads": torch.get_num_threads(),
        "load_average_before": load_average(),
    }


def _synchronise() -> None:
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def timed_call(function: Callable[[], Any]) -> tuple[float, Any]:
    """Seconds for one call of ``function()`` (CUDA synchronised before and after) and its result."""
    _synchronise()
    start = time.perf_counter()
    result = function()
    _synchronise()
    return time.perf_counter() - start, result


@dataclass
class Timing:
    """The timed calls of one method: seconds per call, in order, and the last output."""

    seconds: list[float]
    output: Any

    @property
    def median(self) -> float:
        """Median seconds per call."""
        return statistics.median(self.seconds)

    @property
    def minimum(self) -> float:
        """Fastest call, in seconds."""
        return min(self.seconds)

    def as_dict(self) -> dict[str, Any]:
        """``median_s``, ``min_s`` and ``all_s`` for a JSON file."""
        return {"median_s": self.median, "min_s": self.minimum, "all_s": self.seconds}


def time_interleaved(calls: Mapping[str, Callable[[], Any]], *, warmup: int = 1, repeats: int = 3) -> dict[str, Timing]:
    """Run every call ``warmup`` times untimed, then ``repeats`` rounds of all calls in turn, each timed.

    Args:
        calls: name → a function of no arguments (construct attribution objects outside, so that only the
            ``attribute`` call is timed).
        warmup: untimed rounds first.
        repeats: timed rounds.

    Returns:
        name → :class:`Timing`.
    """
    if repeats < 1 or warmup < 0:
        raise ValueError(f"repeats={repeats} must be >= 1 and warmup={warmup} >= 0")
    outputs: dict[str, Any] = {}
    for _ in range(warmup):
        for name, call in calls.items():
            outputs[name] = call()
    seconds: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(repeats):
        for name, call in calls.items():
            elapsed, outputs[name] = timed_call(call)
            seconds[name].append(elapsed)
    return {name: Timing(seconds[name], outputs[name]) for name in calls}


def relative_error(ours: Tensor, theirs: Tensor) -> float:
    """``max|ours - theirs| / max|theirs|`` in float64 (0 when both are zero, inf when only ``theirs`` is)."""
    difference = (ours.double() - theirs.double()).abs().max().item()
    scale = theirs.double().abs().max().item()
    if scale == 0.0:
        return 0.0 if difference == 0.0 else float("inf")
    return difference / scale
