"""Which engine an occlusion sweep uses: incremental when the model supports it and it pays, else batched.

``engine="auto"`` takes the incremental engine for a model that can be traced into supported ops and costs at
least :data:`AUTO_MIN_MACS` multiply-accumulates per example (below that a plain batched forward pass takes
microseconds and the engine's per-op bookkeeping would dominate), and for a model in eval mode (batch norm and
dropout in training mode depend on the batch or on chance). ``engine="incremental"`` skips the size test.

Memory: the engine holds the cached activations of the unoccluded image besides the windows' values. Its
fixed memory is estimated by :func:`fixed_bytes`; an explicit ``memory_budget`` must hold it plus one copy (else
batching is used), and the windows per batch come from what is left. Without an explicit budget the default
budget is spent on the copies and the fixed memory comes on top, and the engine runs at least
:data:`DEFAULT_MIN_WINDOWS` windows per batch (:func:`windows_per_batch`). When
a model cannot run incrementally the sweep falls back to plain batched recomputation and says why in
``last_engine_note``; a model that cannot be traced or uses an unknown op (or any fallback when
``engine="incremental"`` was asked for) is also reported once per reason and method object with a
:class:`~zf_attr.errors.ZFAttrWarning`.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn

from zf_attr._guard import caller_stacklevel
from zf_attr._lifecycle import Attachment
from zf_attr.errors import ZFAttrWarning
from zf_attr.occlusion.batching import budget_for_copies, copies_per_batch, release_freed_memory
from zf_attr.occlusion.drill_down import DrillDown
from zf_attr.occlusion.incremental.engine import IncrementalEngine
from zf_attr.occlusion.incremental.graph import UnsupportedModelError
from zf_attr.occlusion.incremental.held import CacheTooLargeError

__all__ = [
    "AUTO_MIN_MACS",
    "DEFAULT_MAX_WINDOWS_BYTES",
    "DEFAULT_MIN_WINDOWS",
    "ENGINES",
    "count_macs",
    "fit_engine",
    "fixed_bytes",
    "select_engine",
    "validate_engine_options",
    "windows_per_batch",
]

#: ``engine="auto"`` uses the incremental engine from this many multiply-accumulates per example on.
AUTO_MIN_MACS = 20_000_000
#: Accepted values of ``engine``.
ENGINES = ("auto", "incremental", "batched")
#: Without an explicit ``memory_budget`` the engine runs at least this many windows per batch: every batch pays a
#: fixed cost (each weight read once, each op's overhead), which one window cannot spread. ConvNeXt-T at 224×224
#: (about 43 MiB estimated per window, so one window under the 64 MiB CPU default) ran 1, 2, 4 and 8 identical
#: windows in 48, 75, 132 and 242 ms: 48 ms a window alone, 33 ms in fours ...
DEFAULT_MIN_WINDOWS = 4
#: ... as long as those windows are estimated at no more than this in all.
DEFAULT_MAX_WINDOWS_BYTES = 256 * 2**20


def windows_per_batch(
    budget: int, memory_budget: int | None, bytes_per_copy: int, bytes_per_pass: int, num_windows: int, engine: bool
) -> tuple[int, int]:
    """``(windows per batch, bytes left for them)`` for a sweep on the engine (``engine``) or batched.

    ``budget`` is what is left for the windows: the explicit ``memory_budget`` less the engine's fixed memory
    (:func:`fit_engine`), or the default budget. Batched under an explicit budget, what every pass costs is set
    aside first (:func:`~zf_attr.occlusion.batching.budget_for_copies`). On the engine under the default budget,
    the windows are raised to :data:`DEFAULT_MIN_WINDOWS` as far as :data:`DEFAULT_MAX_WINDOWS_BYTES` allows (never
    past ``num_windows``); an explicit ``memory_budget`` is kept as it is instead.

    Example:
        >>> MiB = 2**20
        >>> windows_per_batch(64 * MiB, None, 43 * MiB, 0, 196, engine=True)[0]  # raised from 1
        4
        >>> windows_per_batch(64 * MiB, None, 100 * MiB, 0, 196, engine=True)[0]  # as far as 256 MiB allows
        2
        >>> windows_per_batch(64 * MiB, 64 * MiB, 43 * MiB, 0, 196, engine=True)[0]  # an explicit budget is kept
        1
        >>> windows_per_batch(32 * MiB, 32 * MiB, 5 * MiB, 9 * MiB, 196, engine=False)  # pass and one copy set aside
        (3, 18874368)
    """
    if not engine and memory_budget is not None:
        budget = budget_for_copies(budget, bytes_per_copy, bytes_per_pass)
    copies = copies_per_batch(int(budget), bytes_per_copy, num_windows)
    if engine and memory_budget is None:
        affordable = max(1, DEFAULT_MAX_WINDOWS_BYTES // max(1, bytes_per_copy))
        copies = max(copies, min(DEFAULT_MIN_WINDOWS, num_windows, affordable))
    return copies, int(budget)


def validate_engine_options(engine: Any, approximate: Any, dtype: Any, channels_last: Any) -> None:
    """Raise ValueError/TypeError naming the argument for bad engine options.

    Example:
        >>> validate_engine_options("auto", None, None, False)
    """
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
    if (
        approximate is not None
        and not isinstance(approximate, DrillDown)
        and (isinstance(approximate, bool) or not isinstance(approximate, (int, float)) or not 0 < approximate <= 1)
    ):
        raise ValueError(
            f"approximate must be None (exact), a DrillDown(step, refine) (coarse-then-fine windows) or a fraction "
            f"in (0, 1] capping each changed region's side relative to its feature map, got {approximate!r}"
        )
    if dtype not in (None, torch.float32, torch.bfloat16, torch.float16):
        raise ValueError(f"dtype must be None, torch.float32, torch.bfloat16 or torch.float16, got {dtype!r}")
    if not isinstance(channels_last, bool):
        raise TypeError(f"channels_last must be True or False, got {channels_last!r}")


@contextmanager
def count_macs() -> Iterator[list[int]]:
    """Count conv / linear multiply-accumulates of this thread's module calls inside the block (a temporary hook).

    Example:
        >>> import torch
        >>> layer = torch.nn.Linear(4, 3)
        >>> with count_macs() as macs:
        ...     _ = layer(torch.randn(2, 4))
        >>> macs[0]
        24
    """
    total = [0]

    def record(module: nn.Module, args: Any, output: Any) -> None:
        if isinstance(output, Tensor) and isinstance(module, (nn.Conv2d, nn.Linear)):
            total[0] += output.numel() * (module.weight.numel() // module.weight.shape[0])

    with Attachment() as hooks:  # global, but it counts this thread's module calls only
        hooks.hook(torch.nn.modules.module.register_module_forward_hook, record)
        yield total


def fixed_bytes(engine: IncrementalEngine) -> int:
    """Memory the engine needs whatever the batch: ``2 × (cache + 2 × largest conv weight)``.

    The cache of the unoccluded activations, and oneDNN's transient copy of a layer's weights while a
    convolution runs, with a factor 2 for the allocator: ResNet-18 at 160×160 (cache 8.5 MiB, largest weight
    9 MiB) grows the peak resident memory by 46 MiB with one window per batch; this estimate is 55 MiB.
    """
    weights = [m.weight for m in engine.model.modules() if isinstance(m, nn.Conv2d)]
    largest = max((w.numel() * w.element_size() for w in weights), default=0)
    return 2 * (engine.cache_bytes + 2 * largest)


def fit_engine(
    method: Any, engine: IncrementalEngine, memory_budget: int | None, budget: int, bytes_per_copy: int
) -> tuple[IncrementalEngine | None, int]:
    """``(engine or None, bytes left for the copies)``; ``None`` (with the reason noted) if it does not fit.

    With ``None``, drop the engine and call :func:`~zf_attr.occlusion.release_freed_memory` before the batches.
    """
    fixed = fixed_bytes(engine)
    if memory_budget is None:
        return engine, budget
    if memory_budget >= fixed + bytes_per_copy:
        return engine, int(memory_budget) - fixed
    reason = (
        f"memory_budget={memory_budget / 2**20:.0f} MiB cannot hold the incremental engine's fixed memory "
        f"(~{fixed / 2**20:.0f} MiB) plus one window"
    )
    method.last_engine, method.last_engine_note = "batched", reason
    if method.engine == "incremental":
        _note(method, reason)
    return None, budget


def _note(method: Any, reason: str) -> None:
    noted = method.__dict__.setdefault("_engine_notes", set())
    if reason not in noted:
        noted.add(reason)
        warnings.warn(
            f"occlusion falls back to plain batched recomputation: {reason}",
            ZFAttrWarning,
            stacklevel=caller_stacklevel(),
        )


def select_engine(
    method: Any,
    engine: str,
    forward_func: Any,
    inputs: tuple[Tensor, ...],
    extra: tuple[Any, ...],
    output: Any,
    macs: int,
    *,
    dtype: torch.dtype | None = None,
    channels_last: bool = False,
    keep_modules: tuple[str, ...] = (),
    memory_budget: int | None = None,
) -> IncrementalEngine | None:
    """The incremental engine for this sweep, or ``None`` for plain batching (with the reason noted).

    Sets ``method.last_engine`` (``"incremental"`` or ``"batched"``) and ``method.last_engine_note`` (why). An
    explicit ``memory_budget`` stops the engine's construction as soon as its cache passes half the budget (it
    could not fit: :func:`fixed_bytes`), before the unoccluded pass has held more.
    """
    reason, quiet = None, False
    if engine == "batched":
        reason, quiet = "engine='batched' was requested", True
    elif not isinstance(forward_func, nn.Module):
        reason, quiet = "forward_func is a plain callable, not an nn.Module (cannot be traced)", engine == "auto"
    elif len(inputs) != 1 or extra:
        reason, quiet = "the model takes several inputs or additional_forward_args", engine == "auto"
    elif inputs[0].dim() != 4:
        reason = f"the input has shape {tuple(inputs[0].shape)}, not an image batch (N, C, H, W)"
        quiet = engine == "auto"
    elif any(module.training for module in forward_func.modules()):
        reason = "the model is in training mode (call model.eval())"
    elif engine == "auto" and macs < AUTO_MIN_MACS * inputs[0].shape[0]:
        reason, quiet = (
            f"small model ({macs / inputs[0].shape[0] / 1e6:.1f} M MACs per example): batching is as fast",
            True,
        )
    result = None
    if reason is None:
        try:
            result = IncrementalEngine(
                forward_func, inputs[0], output, dtype=dtype, channels_last=channels_last, keep_modules=keep_modules,
                max_cache_bytes=None if memory_budget is None else int(memory_budget) // 2,
            )  # fmt: skip
            if any(result.node_of_module(name) is None for name in keep_modules):
                result, reason = None, f"the layer {keep_modules[0]!r} is not one call of a module in the traced graph"
        except CacheTooLargeError as error:  # like fit_engine: noted loudly only when the engine was asked for
            reason, quiet = str(error), engine == "auto"
        except UnsupportedModelError as error:
            reason = str(error)
        if result is None:  # what the unoccluded pass held goes back before the batches allocate theirs
            release_freed_memory(inputs[0].device)
    method.last_engine = "batched" if result is None else "incremental"
    method.last_engine_note = reason or "incremental engine"
    if reason is not None and not quiet:
        _note(method, reason)
    return result
