"""One pass over all windows: batches of occluded copies of the inputs, ready to forward.

Windows are numbered globally across the inputs of a tuple: input 0's windows first (in its grid's row-major
order), then input 1's, and so on. A batch of ``k`` windows holds ``k`` copies of the ``N`` examples, window-major
(rows ``j*N : (j+1)*N`` are window ``j``); each window occludes only its own input, the others are plain copies.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import Tensor

from zf_attr.occlusion.windows import WindowGrid

__all__ = ["format_baselines", "iter_occluded", "locate_window"]


def format_baselines(baselines: Any, inputs: tuple[Tensor, ...], was_tuple: bool) -> tuple[Tensor, ...]:
    """Captum's baseline forms as one tensor per input, broadcast to the input's shape (a view, no copy).

    ``None`` → 0; a scalar; a tensor broadcastable to the input (e.g. ``(N, ...)``, ``(1, ...)``, ``(C, H, W)``);
    for tuple inputs, a tuple with one scalar or tensor per input.

    Raises:
        ValueError, TypeError: naming ``baselines``.
    """
    if baselines is None:
        baselines = (0,) * len(inputs)
    elif not isinstance(baselines, tuple):
        baselines = (baselines,)
    if len(baselines) != len(inputs):
        raise ValueError(f"baselines has {len(baselines)} entries but inputs has {len(inputs)} tensors")
    result = []
    for i, (baseline, tensor) in enumerate(zip(baselines, inputs, strict=True)):
        where = f"baselines[{i}]" if was_tuple else "baselines"
        if isinstance(baseline, bool) or not isinstance(baseline, (int, float, Tensor)):
            raise TypeError(f"{where} must be a number or a tensor, got {type(baseline).__name__}")
        value = torch.as_tensor(baseline).to(device=tensor.device, dtype=tensor.dtype)
        try:
            result.append(torch.broadcast_to(value, tensor.shape))
        except RuntimeError:
            raise ValueError(
                f"{where} has shape {tuple(value.shape)}, which does not broadcast to the input shape "
                f"{tuple(tensor.shape)}"
            ) from None
    return tuple(result)


def locate_window(window_id: int, grids: Sequence[WindowGrid]) -> tuple[int, int]:
    """``(input index, window index within that input's grid)`` of a global window id."""
    for input_index, grid in enumerate(grids):
        if window_id < grid.num_windows:
            return input_index, window_id
        window_id -= grid.num_windows
    raise IndexError("window_id is past the last window")


def iter_occluded(
    inputs: tuple[Tensor, ...],
    grids: Sequence[WindowGrid],
    baselines: tuple[Tensor, ...],
    windows_per_batch: int,
    window_ids: Sequence[int] | None = None,
) -> Iterator[tuple[list[int], tuple[Tensor, ...]]]:
    """Yield ``(window_ids, occluded_inputs)`` over the windows, ``windows_per_batch`` at a time.

    Args:
        inputs: the unoccluded batches, one per input, each ``(N, ...)``; never modified.
        grids: one :class:`~zf_attr.occlusion.windows.WindowGrid` per input.
        baselines: one tensor per input, broadcastable to it (see :func:`format_baselines`).
        windows_per_batch: windows per yielded batch (the last may hold fewer).
        window_ids: the global ids of the windows to visit, in this order; ``None``: every window in order.

    Yields:
        The global ids of the ``k`` windows in the batch and a tuple of ``(k*N, ...)`` tensors, window-major.

    Example:
        >>> import torch
        >>> from zf_attr.occlusion import WindowGrid, iter_occluded
        >>> x = torch.ones(1, 1, 2, 2)
        >>> grid = WindowGrid(shape=(1, 2, 2), window=(1, 1, 2), strides=(1, 1, 1))
        >>> [(ids, batch[0].flatten().tolist()) for ids, batch in iter_occluded((x,), [grid], (torch.zeros(()),), 2)]
        [([0, 1], [0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 0.0, 0.0])]
    """
    if windows_per_batch < 1:
        raise ValueError(f"windows_per_batch must be at least 1, got {windows_per_batch}")
    num_examples = inputs[0].shape[0]
    total = sum(grid.num_windows for grid in grids)
    order = list(range(total)) if window_ids is None else list(window_ids)
    for start in range(0, len(order), windows_per_batch):
        ids = order[start : start + windows_per_batch]
        batch = tuple(tensor.repeat(len(ids), *([1] * (tensor.dim() - 1))) for tensor in inputs)
        for copy, window_id in enumerate(ids):
            input_index, local_id = locate_window(window_id, grids)
            rows = slice(copy * num_examples, (copy + 1) * num_examples)
            index = (slice(None), *grids[input_index].slices(local_id))
            baseline = baselines[input_index].expand(inputs[input_index].shape)
            batch[input_index][rows][index] = baseline[index]
        yield ids, batch
