"""Per-op incremental kernels: how each kind of op maps the changed values of a batch of windows forward.

A node's value for a batch of ``R`` rows (windows × examples, window-major) is held as one of:

* ``None``: unchanged, equal to the cached value of the unoccluded input for every row;
* a :class:`Patch`: equal to the cache except inside one rectangle per row, all of the same size, whose values
  are stored densely (Krypton's layout: one tensor ``(R, C, h, w)`` plus per-row offsets);
* a plain tensor ``(R, ...)``: the whole value (after the change has spread over the map, or past flatten).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Union

import torch
import torch.nn.functional as F
from torch import Tensor

from zf_attr.occlusion.incremental.graph import Op
from zf_attr.occlusion.incremental.regions import affected_outputs, fit_regions

__all__ = [
    "Context",
    "Patch",
    "State",
    "gather",
    "pad_cache",
    "paste",
    "run_dense",
    "run_elementwise",
    "run_spatial",
    "to_dense",
]


@dataclass
class Patch:
    """Values of rows that differ from the cache only inside ``[top, top+h) × [left, left+w)``.

    Attributes:
        values: ``(R, C, h, w)``: the row's values inside its rectangle.
        top: ``(R,)`` first row of each rectangle (long, on the values' device).
        left: ``(R,)`` first column of each rectangle.
    """

    values: Tensor
    top: Tensor
    left: Tensor

    @property
    def size(self) -> tuple[int, int]:
        """Height and width of the rectangles."""
        return self.values.shape[-2], self.values.shape[-1]


State = Union[Patch, Tensor, None]  # noqa: UP007 (a runtime alias)


@dataclass
class Context:
    """What the kernels need besides the states: cached values and per-row bookkeeping.

    Attributes:
        example: ``(R,)`` the example (row of the unoccluded batch) each row belongs to.
        cap: the approximate mode's region cap as a fraction of each map side (``None``: exact).
        memory_format: memory format of the patches handed to spatial ops.
    """

    example: Tensor
    cap: float | None = None
    memory_format: torch.memory_format = torch.contiguous_format


def gather(
    state: State,
    cache: Tensor,
    context: Context,
    top: Tensor,
    left: Tensor,
    height: int,
    width: int,
    pad: tuple[int, int] = (0, 0),
) -> Tensor:
    """``(R, C, height, width)``: each row's value in the rectangle starting at ``(top, left)``.

    ``cache`` is the unoccluded value ``(N, C, H', W')``, possibly padded by ``pad = (rows, cols)`` before the
    map (``top``/``left`` are then in padded coordinates); the changed values of ``state`` are pasted over it.
    The rectangles are read in one indexing kernel from a sliding-window view of the cache (no copy of it), and
    each row's changed values are pasted as one slice copy.
    """
    if isinstance(state, Tensor):  # whole values: pad like the cache and slice
        raise TypeError("gather needs a Patch or None; whole values are used as they are")
    ndim = cache.dim()
    windows = cache.unfold(ndim - 2, height, 1).unfold(ndim - 1, width, 1)  # (N, C, H'-h+1, W'-w+1, h, w)
    base = windows[(context.example, *[slice(None)] * (ndim - 3), top, left)]  # (R, C, height, width), contiguous
    if state is not None:
        paste(base, state, top.tolist(), left.tolist(), pad)
    return base


def paste(target: Tensor, state: Patch, top: list[int], left: list[int], pad: tuple[int, int] = (0, 0)) -> None:
    """Copy each row's changed values of ``state`` into ``target[r]``, a rectangle starting at ``(top, left)``.

    ``target`` is ``(R, C, height, width)`` in the (padded by ``pad``) coordinates of the map; only the part of
    each changed rectangle that falls inside the row's target rectangle is copied.
    """
    h, w = state.size
    height, width = target.shape[-2:]
    for r, (t, le, st, sl) in enumerate(zip(top, left, state.top.tolist(), state.left.tolist(), strict=True)):
        r0, r1 = max(t, st + pad[0]), min(t + height, st + pad[0] + h)
        c0, c1 = max(le, sl + pad[1]), min(le + width, sl + pad[1] + w)
        if r0 < r1 and c0 < c1:
            target[r, ..., r0 - t : r1 - t, c0 - le : c1 - le] = state.values[
                r, ..., r0 - st - pad[0] : r1 - st - pad[0], c0 - sl - pad[1] : c1 - sl - pad[1]
            ]


def to_dense(state: State, cache: Tensor, context: Context) -> Tensor:
    """The whole value ``(R, ...)`` of a state."""
    if isinstance(state, Tensor):
        return state
    if state is None:
        return cache[context.example]
    h, w = state.size
    if (h, w) == tuple(cache.shape[-2:]):
        return state.values
    zero = torch.zeros_like(state.top)
    return gather(state, cache, context, zero, zero, *cache.shape[-2:])


def _union(states: list[State], shape: tuple[int, int], cap: float | None) -> tuple[Tensor, Tensor, int, int]:
    """Common rectangle (``top, left, h, w``) covering every patch of every row."""
    patches = [s for s in states if isinstance(s, Patch)]
    tops = torch.stack([p.top for p in patches]).amin(0)
    lefts = torch.stack([p.left for p in patches]).amin(0)
    bottoms = torch.stack([p.top + p.size[0] for p in patches]).amax(0)
    rights = torch.stack([p.left + p.size[1] for p in patches]).amax(0)
    top, h = fit_regions(tops, bottoms, shape[0], _cap(cap, shape[0]))
    left, w = fit_regions(lefts, rights, shape[1], _cap(cap, shape[1]))
    return top, left, h, w


def _cap(cap: float | None, size: int) -> int | None:
    return None if cap is None else max(1, int(cap * size + 0.999999))


def run_elementwise(
    op: Op, states: list[State], caches: list[Any], context: Context, consts: list[bool], out_shape: tuple[int, ...]
) -> State:
    """A spatially pointwise op (inputs and output of one spatial shape): on the union of the changed rectangles.

    Model constants (``consts``) are passed as they are (they broadcast: the same at every position).
    """
    tensors = [s for s, const in zip(states, consts, strict=True) if not const]
    if len(tensors) == 1 and isinstance(tensors[0], Patch):  # one changed input: same rectangle, no cache needed
        patch = tensors[0]
        values = [c if const else patch.values for c, const in zip(caches, consts, strict=True)]
        return Patch(op.call(values), patch.top, patch.left)
    if all(isinstance(s, Patch) or s is None for s in tensors):
        top, left, h, w = _union(tensors, tuple(out_shape[-2:]), context.cap)
        values = [
            c if const else gather(s, c, context, top, left, h, w)
            for s, c, const in zip(states, caches, consts, strict=True)
        ]
        return Patch(op.call(values), top, left)
    return run_dense(op, states, caches, context, consts)


def run_dense(op: Op, states: list[State], caches: list[Any], context: Context, consts: list[bool]) -> Tensor:
    """Any per-example op on whole values (model constants, ``consts``, are passed as they are)."""
    values = [
        cache if const else to_dense(state, cache, context)
        for state, cache, const in zip(states, caches, consts, strict=True)
    ]
    return op.call(values)


def run_spatial(
    op: Op, state: State, cache: Tensor, padded: Tensor, out_shape: tuple[int, ...], context: Context
) -> State:
    """Conv / pool: recompute the outputs whose receptive field meets the changed rectangle, on a patch.

    ``padded`` is the cache padded with ``op.pad_value`` (by the op's padding before the map and enough after
    it for every output, ceil mode included).
    """
    assert op.geometry is not None and op.patch_call is not None
    if isinstance(state, Tensor):
        return op.call([state])
    assert isinstance(state, Patch)
    rows, cols = op.geometry
    out_h, out_w = out_shape[-2:]
    h, w = state.size
    olo_r, ohi_r = affected_outputs(state.top, state.top + h, rows, out_h)
    olo_c, ohi_c = affected_outputs(state.left, state.left + w, cols, out_w)
    top, oh = fit_regions(olo_r, ohi_r, out_h, _cap(context.cap, out_h))
    left, ow = fit_regions(olo_c, ohi_c, out_w, _cap(context.cap, out_w))
    if (oh, ow) == (out_h, out_w) and context.cap is None:
        return op.call([to_dense(state, cache, context)])
    patch = gather(
        state,
        padded,
        context,
        top * rows.stride,
        left * cols.stride,
        (oh - 1) * rows.stride + rows.span,
        (ow - 1) * cols.stride + cols.span,
        pad=(rows.padding, cols.padding),
    )
    return Patch(op.patch_call(patch.contiguous(memory_format=context.memory_format)), top, left)


def pad_cache(op: Op, cache: Tensor, out_shape: tuple[int, ...]) -> Tensor:
    """The cached input of a spatial op padded for :func:`run_spatial`."""
    assert op.geometry is not None
    pads = []
    for axis, size, out in zip(op.geometry, cache.shape[-2:], out_shape[-2:], strict=True):
        after = max(axis.padding, (out - 1) * axis.stride + axis.span - size - axis.padding)
        pads.append((axis.padding, after))
    (pt, pb), (pl, pr) = pads
    return F.pad(cache, (pl, pr, pt, pb), value=op.pad_value)
