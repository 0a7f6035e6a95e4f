"""How many occluded copies go into one forward pass: memory measurement, budget, argument expansion.

The cost of one *copy* (the ``N`` examples with one window occluded) is measured on the unoccluded forward pass
that occlusion needs anyway:

* **CUDA**: the peak of ``torch.cuda.max_memory_allocated`` during that pass above the memory allocated before it
  (the peak statistics of the device are reset for this), plus the bytes of the occluded inputs.
* **CPU** (and any other device): an estimate from a temporary global module forward hook
  (``torch.nn.modules.module.register_module_forward_hook``, removed before returning) that sees every module
  call of this thread, also inside plain callables: ``6 ×`` (:data:`CPU_COPY_FACTOR`) the largest module output
  (the live input of a layer, its output, a held skip connection, the convolution's workspace and the allocator's
  slack; measured peak resident memory of ResNet-18 and VGG-11 sweeps stays within the budget with this factor, see
  ``tests/test_robustness.py``) plus the bytes of the inputs and of the model output. A forward function that
  calls no module is costed at its inputs and output only.

A pass of two or more examples also costs a fixed amount whatever its size: on CPU, oneDNN copies a convolution's
weights into its own layout for the duration of the call (a 512×512×3×3 convolution, 9 MiB of weights, grows the
resident memory by 9.0-9.7 MiB at batch 2 and 8 and by 0.5 MiB at batch 1). :func:`measured_forward` returns it as
*bytes per pass*: the largest weight of the convolution modules that ran (0 on CUDA, whose measured peak already
holds the workspace of the pass).

Under an explicit budget the copies get what :func:`budget_for_copies` leaves; their number is then
``max(1, budget // cost)``, capped at the number of windows (:func:`copies_per_batch`).
"""

from __future__ import annotations

import ctypes
import sys
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from zf_attr._lifecycle import Attachment

__all__ = [
    "DEFAULT_CPU_BUDGET",
    "budget_for_copies",
    "copies_per_batch",
    "default_memory_budget",
    "expand_additional_forward_args",
    "expand_target",
    "measured_forward",
    "release_freed_memory",
]

#: Default ``memory_budget`` off CUDA: 64 MiB. A CPU is saturated by small batches and gets slower per example as
#: a batch's activations leave its caches (ResNet-18 at 224×224 on 2 cores: 14.4 ms/example at batch 6-8,
#: 16.5 at 16, 20.7 at 52), so a larger budget buys nothing there.
DEFAULT_CPU_BUDGET = 64 * 2**20
#: Off CUDA a copy costs this many times the largest module output (plus inputs and output): the live input of a
#: layer, its output, a held skip connection, the convolution's workspace, and the allocator's slack. ResNet-18 at
#: 160×160 under a 48 MiB budget: with 5 the peak resident memory grew by 41-52 MiB over 8 runs (5 copies); with 6,
#: by 34-42 MiB over 6 runs (4 copies).
CPU_COPY_FACTOR = 6
#: Lower bound of the default budget on CUDA.
MIN_CUDA_BUDGET = 512 * 2**20
#: Default ``memory_budget`` on CUDA: this fraction of the device's free memory.
CUDA_FREE_FRACTION = 0.25


def default_memory_budget(device: torch.device) -> int:
    """64 MiB off CUDA; on CUDA a quarter of the free memory, but at least ``min(512 MiB, free memory)``."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return max(int(free * CUDA_FREE_FRACTION), min(MIN_CUDA_BUDGET, free))
    return DEFAULT_CPU_BUDGET


def _bytes(value: Any) -> int:
    if isinstance(value, Tensor):
        return value.numel() * value.element_size()
    if isinstance(value, (tuple, list)):
        return sum(_bytes(item) for item in value)
    if isinstance(value, dict):
        return sum(_bytes(item) for item in value.values())
    return 0


def measured_forward(forward: Callable[[], Any], inputs: tuple[Tensor, ...]) -> tuple[Any, int, int]:
    """Run ``forward()`` once; return ``(output, bytes per copy, bytes per pass)`` (see the module docstring)."""
    device = inputs[0].device
    input_bytes = sum(_bytes(tensor) for tensor in inputs)
    largest = largest_weight = 0

    def record(module: nn.Module, args: Any, output: Any) -> None:
        nonlocal largest, largest_weight
        largest = max(largest, _bytes(output))
        if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            largest_weight = max(largest_weight, _bytes(module.weight))

    if device.type == "cuda":
        torch.cuda.synchronize(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        output = forward()
        torch.cuda.synchronize(device)
        activations = torch.cuda.max_memory_allocated(device) - before
        return output, max(activations, _bytes(output)) + input_bytes, 0
    with Attachment() as hooks:  # global: it sees this thread's module calls only
        hooks.hook(torch.nn.modules.module.register_module_forward_hook, record)
        output = forward()
    return output, CPU_COPY_FACTOR * largest + input_bytes + _bytes(output), largest_weight


def budget_for_copies(memory_budget: int, bytes_per_copy: int, bytes_per_pass: int) -> int:
    """What an explicit ``memory_budget`` leaves for the occluded copies of a batched sweep.

    It holds what the unoccluded pass left with the allocator (one copy) and the fixed cost of every pass
    (``bytes_per_pass``). ResNet-18 at 112×112 under 16 MiB without the fixed cost ran 2 copies a pass and grew
    the resident memory by 10.1-16.6 MiB (one copy: 2.6-4.4 MiB); its largest convolution weight is 9 MiB.

    Example:
        >>> budget_for_copies(32 * 2**20, 5 * 2**20, 9 * 2**20) // 2**20
        18
    """
    return int(memory_budget) - bytes_per_copy - bytes_per_pass


def _libc_trim() -> Callable[[int], int] | None:
    try:
        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not Linux / glibc: nothing to trim
        return None


_MALLOC_TRIM = _libc_trim() if sys.platform.startswith("linux") else None


def release_freed_memory(device: torch.device) -> None:
    """Hand the memory a batch freed back to the system (glibc ``malloc_trim``; elsewhere a no-op).

    Without it glibc keeps the freed buffers of every patch shape in its heap, pinned by small long-lived
    allocations, and a ResNet-18 sweep under ``memory_budget=256 MiB`` grew the resident memory by ~370 MiB.
    A trim costs about a millisecond, a batch hundreds.
    """
    if device.type == "cpu" and _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)


def copies_per_batch(memory_budget: int, bytes_per_copy: int, num_windows: int) -> int:
    """Occluded copies per forward pass under ``memory_budget``: at least 1, at most ``num_windows``."""
    return max(1, min(num_windows, memory_budget // max(1, bytes_per_copy)))


def expand_additional_forward_args(args: tuple[Any, ...], copies: int) -> tuple[Any, ...]:
    """Repeat tensor arguments with a batch dimension ``copies`` times along it (as Captum); others as they are."""
    return tuple(torch.cat([arg] * copies, dim=0) if isinstance(arg, Tensor) and arg.dim() > 0 else arg for arg in args)


def expand_target(target: Any, copies: int) -> Any:
    """Repeat a per-example target (list, or tensor of several entries) ``copies`` times (as Captum)."""
    if isinstance(target, list):
        return target * copies
    if isinstance(target, Tensor) and target.numel() > 1:
        return torch.cat([target] * copies, dim=0)
    return target
