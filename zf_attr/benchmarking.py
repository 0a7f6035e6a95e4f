"""Measuring zf_attr against a reference: the machine, checked-then-timed calls, and one record per case.

The timing core of ``python -m benchmarks`` (the suite in a checkout's ``benchmarks/``) and of ``zf-attr bench``;
it lives in the package so that the subcommand works from an installed copy, whereas the suite's cases (model zoo,
Captum reference set-ups) stay in the checkout. Every comparison first runs each call once and checks that the
outputs agree (:func:`check_then_time`); only then are the calls timed, interleaved (ours, reference, ours, ...)
so that both see the same machine state. On CUDA every timed call is synchronised, timed by the wall clock and by
CUDA events, and its peak device memory is read (``torch.cuda.max_memory_allocated`` after
``reset_peak_memory_stats``). Times are medians of the repeats.

Example:
    >>> import torch
    >>> from zf_attr.benchmarking import check_then_time, relative_error
    >>> calls = {"zf_attr": lambda: torch.ones(4) * 2, "reference": lambda: torch.ones(4) + 1}
    >>> checked = check_then_time(calls, lambda out: relative_error(out["zf_attr"], out["reference"]), 1e-6)
    >>> checked.equal, sorted(checked.timings), len(checked.timings["reference"].seconds)
    (True, ['reference', 'zf_attr'], 3)
"""

from __future__ import annotations

import datetime as dt
import os
import platform
import re
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

import zf_attr

__all__ = [
    "BUSY_FRACTION",
    "Checked",
    "Timing",
    "case_record",
    "cases_table",
    "check_then_time",
    "device_name",
    "environment",
    "load_average",
    "load_warning",
    "relative_error",
    "short_name",
    "time_interleaved",
    "timed_call",
    "versions",
]

#: A 1-minute load average above this fraction of the CPU count marks the machine as busy.
BUSY_FRACTION = 0.75


# ---------------------------------------------------------------------------------------------- the machine
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


def load_warning(
    before: Sequence[float] | None, after: Sequence[float] | None, cpu_count: int | None = None, own_threads: int = 0
) -> str | None:
    """A warning when the machine was busy: 1-minute load average above ``BUSY_FRACTION`` x CPUs.

    Args:
        before: load averages at the start (before this process did any work).
        after: load averages at the end; they include this process's own threads, so ``own_threads`` is
            subtracted first (what remains is a lower bound on the other processes' load).
        cpu_count: CPUs of the machine (default: ``os.cpu_count()``).
        own_threads: threads this process kept busy (``torch.get_num_threads()``).

    Returns:
        The warning, or ``None`` when the machine was quiet (or has no load average).

    Example:
        >>> load_warning([0.2, 0.3, 0.3], [2.1, 1.0, 0.5], cpu_count=2, own_threads=2) is None
        True
    """
    cpus = cpu_count or os.cpu_count() or 1
    limit = BUSY_FRACTION * cpus
    busy = []
    if before and before[0] > limit:
        busy.append(f"1-minute load average {before[0]:.2f} at the start")
    if after and after[0] - own_threads > limit:
        busy.append(f"{after[0]:.2f} at the end ({own_threads} of it this process's threads)")
    if not busy:
        return None
    return (
        f"machine busy: {' and '.join(busy)}, above {BUSY_FRACTION:g} x {cpus} CPUs; other processes shared the "
        "machine, so the times (not the equality checks) are unreliable"
    )


def versions() -> dict[str, str]:
    """Python, torch, torchvision, captum and zf_attr versions."""
    import torchvision

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "captum": metadata.version("captum"),
        "zf_attr": zf_attr.__version__,
    }


def environment(device: torch.device) -> dict[str, Any]:
    """Time stamp, device, platform and library versions, threads and load average, for a results file."""
    return {
        "timestamp": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "device": device.type,
        "device_name": device_name(device),
        "platform": platform.platform(),
        **versions(),
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "load_average_before": load_average(),
    }


# ---------------------------------------------------------------------------------------------- timing
def _synchronise(device: torch.device | None = None) -> None:
    if device is not None and device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device is None and torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def timed_call(function: Callable[[], Any], device: torch.device | None = None) -> tuple[float, Any]:
    """Seconds for one call of ``function()`` (CUDA synchronised before and after) and its result."""
    _synchronise(device)
    start = time.perf_counter()
    result = function()
    _synchronise(device)
    return time.perf_counter() - start, result


@dataclass
class Timing:
    """The timed calls of one method: seconds per call, in order, and the last output.

    Attributes:
        seconds: wall-clock seconds per timed call (synchronised on CUDA).
        output: the last call's output.
        cuda_seconds: on CUDA, the seconds between CUDA events recorded before and after each call.
        peak_memory_bytes: on CUDA, the largest ``torch.cuda.max_memory_allocated`` over the timed calls.
        peak_memory_growth_bytes: on CUDA, the largest peak above what was allocated when a call began.
    """

    seconds: list[float]
    output: Any
    cuda_seconds: list[float] = field(default_factory=list)
    peak_memory_bytes: int | None = None
    peak_memory_growth_bytes: int | None = None

    @property
    def median(self) -> float:
        """Median seconds per call."""
        return statistics.median(self.seconds)

    @property
    def minimum(self) -> float:
        """Fastest call, in seconds."""
        return min(self.seconds)

    def as_dict(self) -> dict[str, Any]:
        """``median_s``, ``min_s`` and ``all_s`` (plus the CUDA event times and peak memory on CUDA)."""
        result: dict[str, Any] = {"median_s": self.median, "min_s": self.minimum, "all_s": self.seconds}
        if self.cuda_seconds:
            result["cuda_event_median_s"] = statistics.median(self.cuda_seconds)
            result["cuda_event_all_s"] = self.cuda_seconds
        if self.peak_memory_bytes is not None:
            result["peak_memory_bytes"] = self.peak_memory_bytes
            result["peak_memory_growth_bytes"] = self.peak_memory_growth_bytes
        return result


def _cuda_call(call: Callable[[], Any], device: torch.device, timing: Timing) -> Any:
    """One call on CUDA: synchronised wall clock, CUDA events and the peak memory, added to ``timing``."""
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    allocated = torch.cuda.memory_allocated(device)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    began = time.perf_counter()
    start.record()
    result = call()
    end.record()
    torch.cuda.synchronize(device)
    timing.seconds.append(time.perf_counter() - began)
    timing.cuda_seconds.append(start.elapsed_time(end) / 1000)
    peak = torch.cuda.max_memory_allocated(device)
    timing.peak_memory_bytes = max(timing.peak_memory_bytes or 0, peak)
    timing.peak_memory_growth_bytes = max(timing.peak_memory_growth_bytes or 0, peak - allocated)
    return result


def time_interleaved(
    calls: Mapping[str, Callable[[], Any]],
    *,
    warmup: int = 1,
    repeats: int = 3,
    device: torch.device | str | None = None,
) -> dict[str, Timing]:
    """Run every call ``warmup`` times untimed, then ``repeats`` rounds of all calls in turn, each timed.

    Args:
        calls: name → a function of no arguments (construct attribution objects outside, so that only the
            ``attribute`` call is timed).
        warmup: untimed rounds first.
        repeats: timed rounds.
        device: on a CUDA device each call is timed by CUDA events too and its peak memory read; ``None``
            synchronises CUDA if it is in use, without events or memory.

    Returns:
        name → :class:`Timing`.
    """
    if repeats < 1 or warmup < 0:
        raise ValueError(f"repeats={repeats} must be >= 1 and warmup={warmup} >= 0")
    device = torch.device(device) if device is not None else None
    outputs: dict[str, Any] = {}
    for _ in range(warmup):
        for name, call in calls.items():
            outputs[name] = call()
    timings = {name: Timing([], None) for name in calls}
    for _ in range(repeats):
        for name, call in calls.items():
            if device is not None and device.type == "cuda":
                outputs[name] = _cuda_call(call, device, timings[name])
            else:
                elapsed, outputs[name] = timed_call(call, device)
                timings[name].seconds.append(elapsed)
    for name, timing in timings.items():
        timing.output = outputs[name]
    return timings


@dataclass
class Checked:
    """Outcome of :func:`check_then_time`: the check's error, and the timings when the check passed.

    Attributes:
        error: what the check returned (e.g. a relative error) on the first run's outputs.
        tolerance: the largest error counted as equal.
        outputs: the first run's outputs, by call name.
        timings: name → :class:`Timing`; ``None`` when the outputs were not equal (no time is reported).
    """

    error: float
    tolerance: float
    outputs: dict[str, Any]
    timings: dict[str, Timing] | None

    @property
    def equal(self) -> bool:
        """Whether the outputs agreed within the tolerance."""
        return bool(self.error <= self.tolerance)


def check_then_time(
    calls: Mapping[str, Callable[[], Any]],
    check: Callable[[dict[str, Any]], float],
    tolerance: float,
    *,
    warmup: int = 1,
    repeats: int = 3,
    device: torch.device | str | None = None,
) -> Checked:
    """Run every call once and check its outputs; only if they agree, warm up and time them interleaved.

    Args:
        calls: name → a function of no arguments.
        check: the outputs of the first run (name → output) → an error (e.g. :func:`relative_error`).
        tolerance: errors up to this count as equal.
        warmup: untimed rounds in all, the checked run included (at least 1).
        repeats: timed rounds.
        device: as for :func:`time_interleaved`.

    Returns:
        A :class:`Checked`; its ``timings`` are ``None`` when the check failed.
    """
    if warmup < 1:
        raise ValueError(f"warmup={warmup} must be >= 1: the first run is the one checked")
    outputs = {name: call() for name, call in calls.items()}
    error = float(check(outputs))
    if not error <= tolerance:  # also NaN
        return Checked(error, tolerance, outputs, None)
    timings = time_interleaved(calls, warmup=warmup - 1, repeats=repeats, device=device)
    return Checked(error, tolerance, outputs, timings)


def relative_error(ours: Tensor, theirs: Tensor) -> float:
    """``max|ours - theirs| / max|theirs|`` in float64 (0 when both are zero, inf when only ``theirs`` is)."""
    difference = (ours.double() - theirs.double()).abs().max().item()
    scale = theirs.double().abs().max().item()
    if scale == 0.0:
        return 0.0 if difference == 0.0 else float("inf")
    return difference / scale


# ---------------------------------------------------------------------------------------------- records
def case_record(
    name: str,
    model: str,
    input_shape: Sequence[int],
    checked: Checked,
    reference: str,
    *,
    ours_key: str = "zf_attr",
    reference_key: str = "reference",
    reference_scale: float = 1.0,
    **extra: Any,
) -> dict[str, Any]:
    """One case of a results file: ``{"name", "model", "input_shape", "zf_attr_s", "reference", ...}``.

    Args:
        name: the case's name, e.g. ``"deconvnet/resnet18"``.
        model: the model's name.
        input_shape: shape of the input batch.
        checked: from :func:`check_then_time`.
        reference: what zf_attr is measured against, e.g. ``"captum.attr.Deconvolution"``.
        ours_key: zf_attr's call in ``checked``.
        reference_key: the reference's call in ``checked`` (absent: no reference time).
        reference_scale: multiplies the reference's time (a subsample of calls scaled to the whole loop).
        **extra: further fields of the case.

    Returns:
        The case; times (``zf_attr_s``, ``reference_s``: medians) and ``ratio`` (``reference_s / zf_attr_s``,
        above 1 when zf_attr is faster) are ``None`` when the outputs were not equal.
    """
    record: dict[str, Any] = {
        "name": name,
        "model": model,
        "input_shape": list(input_shape),
        "zf_attr_s": None,
        "reference": reference,
        "reference_s": None,
        "ratio": None,
        "equal": checked.equal,
        "max_relative_error": checked.error,
        "tolerance": checked.tolerance,
    }
    if checked.timings is not None:
        ours = checked.timings[ours_key]
        record["zf_attr_s"] = ours.median
        record["zf_attr_timing"] = ours.as_dict()
        if reference_key in checked.timings:
            theirs = checked.timings[reference_key]
            record["reference_s"] = theirs.median * reference_scale
            record["reference_timing"] = theirs.as_dict()
            record["ratio"] = record["reference_s"] / ours.median
    record.update(extra)
    return record


def cases_table(cases: Sequence[Mapping[str, Any]], columns: Sequence[tuple[str, str]] | None = None) -> str:
    """A Markdown table of cases: one row each, ``columns`` as ``(header, key)`` (default: the common fields).

    Example:
        >>> print(cases_table([{"name": "a", "ratio": 2.0, "equal": True}], [("case", "name"), ("speed-up", "ratio")]))
        | case | speed-up |
        | --- | ---: |
        | a | 2 |
    """
    columns = columns or [("case", "name"), ("zf_attr s", "zf_attr_s"), ("reference", "reference"),
                          ("reference s", "reference_s"), ("speed-up", "ratio"), ("equal", "equal"),
                          ("relative error", "max_relative_error")]  # fmt: skip
    text = {"name", "model", "reference", "engine", "engine_requested"}
    lines = [" | ".join(["", *(header for header, _ in columns), ""]).strip()]
    lines.append(" | ".join(["", *("---" if key in text else "---:" for _, key in columns), ""]).strip())
    for case in cases:
        cells = []
        for _, key in columns:
            value = case.get(key)
            if value is None:
                cells.append("—")
            elif isinstance(value, bool):
                cells.append("yes" if value else "**NO**")
            elif isinstance(value, float):
                cells.append(f"{value:.{2 if key.endswith('error') else 3}g}")
            else:
                cells.append(str(value))
        lines.append(" | ".join(["", *cells, ""]).strip())
    return "\n".join(lines)
