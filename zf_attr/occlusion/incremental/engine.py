"""The incremental-inference occlusion engine (after Krypton, Nakandala et al., SIGMOD 2019).

:class:`IncrementalEngine` traces the model once (:func:`~zf_attr.occlusion.incremental.graph.trace_ops`), runs
the unoccluded image through the traced ops and keeps every node's output. For a batch of windows it then
recomputes, op by op, only the rectangle of each map that the window can change (its projective field), pasted
over the cached values; every window of a batch gets the same rectangle size per op (the largest), moved back
inside the map where it would cross the border, so a batch is one dense tensor ``(R, C, h, w)`` plus per-row
offsets. Once a rectangle covers a whole map, and at linear / flatten / global pooling, computation continues
on whole (now small) maps. The result equals plain recomputation up to float rounding.

Approximate mode (``cap``, Krypton's projective-field threshold): no rectangle grows beyond ``cap`` times the
map side; changes outside it are dropped (the cached values are used there).
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from zf_attr.occlusion.incremental.graph import Op, Unsupported, trace_ops
from zf_attr.occlusion.incremental.kernels import (
    Context,
    Patch,
    State,
    gather,
    pad_cache,
    run_dense,
    run_elementwise,
    run_spatial,
    to_dense,
)
from zf_attr.occlusion.incremental.regions import fit_regions

__all__ = ["IncrementalEngine"]

#: Relative difference between the traced graph's output and the model's above which the engine is refused.
TRACE_TOLERANCE = 1e-4


class IncrementalEngine:
    """Occluded outputs of a model for batches of windows, recomputing only what each window changes.

    Args:
        model: an ``nn.Module`` in eval mode taking one image batch ``(N, C, H, W)``; never modified.
        inputs: the unoccluded batch ``(N, C, H, W)``.
        reference: the model's output on ``inputs`` (if given, the traced graph must reproduce it, else
            :class:`~zf_attr.occlusion.incremental.graph.Unsupported` is raised).
        dtype: compute in this dtype (e.g. ``torch.bfloat16``, via autocast); ``None``: the input's dtype.
        channels_last: hand patches to conv/pool in ``torch.channels_last`` memory format.

    Raises:
        Unsupported: the model cannot be traced or uses an op outside the table; ``str(error)`` says which.

    Example:
        >>> import torch, torchvision
        >>> model = torchvision.models.resnet18(weights=None).eval()
        >>> x = torch.randn(1, 3, 32, 32)
        >>> engine = IncrementalEngine(model, x)
        >>> windows = [(slice(0, 3), slice(0, 8), slice(8, 16)), (slice(0, 3), slice(24, 32), slice(24, 32))]
        >>> out = engine.run(windows, torch.zeros(()))
        >>> occluded = x.repeat(2, 1, 1, 1)
        >>> occluded[0, :, 0:8, 8:16] = 0
        >>> occluded[1, :, 24:32, 24:32] = 0
        >>> bool(torch.allclose(out, model(occluded), atol=1e-5))
        True
    """

    def __init__(
        self,
        model: nn.Module,
        inputs: Tensor,
        reference: Tensor | None = None,
        *,
        dtype: torch.dtype | None = None,
        channels_last: bool = False,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise Unsupported("forward_func is a plain callable, not an nn.Module")
        if not isinstance(inputs, Tensor) or inputs.dim() != 4 or not inputs.is_floating_point():
            raise Unsupported("the input is not one floating-point image batch (N, C, H, W)")
        self.ops, self.module_outputs = trace_ops(model)
        self.device = inputs.device
        self.dtype = dtype
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.users = [[j for j, op in enumerate(self.ops) if i in op.inputs] for i in range(len(self.ops))]
        with torch.no_grad(), self._autocast():
            self.caches = self._forward(inputs.to(dtype) if dtype is not None else inputs)
        self.shapes = [tuple(c.shape) if isinstance(c, Tensor) else () for c in self.caches]
        self.padded: dict[int, Tensor] = {}
        for i, op in enumerate(self.ops):
            if op.kind == "spatial":
                (cache,) = (self.caches[j] for j in op.inputs)
                if cache.dim() != 4 or not self._spatial_fits(op, cache.shape, self.shapes[i]):
                    op.kind = "dense"  # e.g. average pooling whose ceil mode changes the output size
                else:
                    self.padded[i] = pad_cache(op, cache, self.shapes[i])
        output = self.caches[-1]
        if not isinstance(output, Tensor):
            raise Unsupported("the model does not return a tensor")
        if reference is not None:
            scale = reference.detach().abs().max().clamp_min(1e-30)
            error = float((output.float() - reference.detach().float()).abs().max() / scale)
            if error > TRACE_TOLERANCE and dtype is None:
                raise Unsupported(f"the traced graph does not reproduce the model's output (relative error {error:.1e})")

    @staticmethod
    def _spatial_fits(op: Op, in_shape: Sequence[int], out_shape: Sequence[int]) -> bool:
        assert op.geometry is not None
        for axis, size, out in zip(op.geometry, in_shape[-2:], out_shape[-2:], strict=True):
            floor_size = (size + 2 * axis.padding - axis.span) // axis.stride + 1
            if out != floor_size and (op.pad_value == 0.0 or out < floor_size):
                return False  # only max-pooling may add ceil-mode outputs (they read -inf padding)
        return len(out_shape) == 4

    def _autocast(self) -> Any:
        if self.dtype is None or self.dtype in (torch.float32, torch.float64):
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def _forward(self, inputs: Tensor) -> list[Any]:
        values: list[Any] = []
        for op in self.ops:
            if op.kind == "input":
                values.append(inputs)
            elif op.kind == "const":
                values.append(op.value)
            else:
                assert op.call is not None
                values.append(op.call([values[j] for j in op.inputs]))
        return values

    @property
    def output(self) -> Tensor:
        """The (cached) model output for the unoccluded input."""
        return self.caches[-1]

    def node_of_module(self, name: str) -> int | None:
        """Index of the op whose value is the output of module ``name`` (``None`` if not called exactly once)."""
        return self.module_outputs.get(name)

    def run(
        self,
        windows: Sequence[tuple[slice, ...]],
        baseline: Tensor,
        *,
        cap: float | None = None,
        extra: Sequence[int] = (),
    ) -> Any:
        """Model outputs for the input occluded by each window, ``(len(windows) * N, ...)``, window-major.

        Args:
            windows: one ``(channels, rows, cols)`` slice triple per window (as
                :meth:`zf_attr.occlusion.WindowGrid.slices` returns them).
            baseline: the fill value, broadcastable to the input ``(N, C, H, W)``.
            cap: approximate mode: largest rectangle side as a fraction of each map side (``None``: exact).
            extra: op indices whose whole values are returned too (e.g. :meth:`node_of_module`).

        Returns:
            The output, or ``(output, [values of extra])`` when ``extra`` is given.
        """
        if cap is not None and not 0 < cap <= 1:
            raise ValueError(f"cap must be in (0, 1] (a fraction of the map side) or None, got {cap!r}")
        inputs = self.caches[0]
        n = inputs.shape[0]
        context = Context(
            example=torch.arange(len(windows) * n, device=self.device) % n, cap=cap, memory_format=self.memory_format
        )
        keep = set(extra)
        states: list[State] = [None] * len(self.ops)
        remaining = [len(users) for users in self.users]
        with torch.no_grad(), self._autocast():
            for i, op in enumerate(self.ops):
                states[i] = self._step(i, op, states, windows, baseline, context)
                for j in op.inputs:
                    remaining[j] -= 1
                    if remaining[j] == 0 and j not in keep:
                        states[j] = None if self.ops[j].kind != "input" else states[j]
            output = to_dense(states[-1], self.caches[-1], context)
            if self.dtype is not None and output.is_floating_point() and output.dtype != inputs.dtype:
                output = output.float()
            if not extra:
                return output
            return output, [to_dense(states[j], self.caches[j], context) for j in extra]

    def _step(
        self, i: int, op: Op, states: list[State], windows: Sequence[tuple[slice, ...]], baseline: Tensor, context: Context
    ) -> State:
        if op.kind == "input":
            return self._occluded_input(windows, baseline, context)
        if op.kind == "const":
            return None
        ins = [states[j] for j in op.inputs]
        caches = [self.caches[j] for j in op.inputs]
        consts = [self.ops[j].kind == "const" for j in op.inputs]
        if all(s is None for s in ins):
            return None
        if op.kind == "elementwise":
            return run_elementwise(op, ins, caches, context, consts, self.shapes[i])
        if op.kind == "spatial":
            return run_spatial(op, ins[0], caches[0], self.padded[i], self.shapes[i], context)
        return run_dense(op, ins, caches, context, consts)  # dense and output

    def _occluded_input(self, windows: Sequence[tuple[slice, ...]], baseline: Tensor, context: Context) -> Patch:
        inputs = self.caches[0]
        n, _, height, width = inputs.shape
        if any(len(w) != 3 for w in windows):
            raise ValueError("every window must be a (channels, rows, cols) triple of slices")
        bounds = torch.tensor(
            [[w[0].start, w[0].stop, w[1].start, w[1].stop, w[2].start, w[2].stop] for w in windows],
            dtype=torch.long,
        ).repeat_interleave(n, dim=0)
        bounds = bounds.to(self.device)
        top, h = fit_regions(bounds[:, 2], bounds[:, 3], height)
        left, w = fit_regions(bounds[:, 4], bounds[:, 5], width)
        fill = torch.broadcast_to(baseline.to(device=self.device, dtype=inputs.dtype), inputs.shape)
        values = gather(None, inputs, context, top, left, h, w)
        filled = gather(None, fill, context, top, left, h, w)
        channel = torch.arange(inputs.shape[1], device=self.device)
        rows = top[:, None] + torch.arange(h, device=self.device)
        cols = left[:, None] + torch.arange(w, device=self.device)

        def within(index: Tensor, lo: Tensor, hi: Tensor) -> Tensor:
            return (index >= lo[:, None]) & (index < hi[:, None])

        mask = (
            within(channel[None].expand(len(bounds), -1), bounds[:, 0], bounds[:, 1])[:, :, None, None]
            & within(rows, bounds[:, 2], bounds[:, 3])[:, None, :, None]
            & within(cols, bounds[:, 4], bounds[:, 5])[:, None, None, :]
        )
        return Patch(torch.where(mask, filled, values), top, left)

    def state_bytes(self, window: tuple[slice, ...], baseline: Tensor) -> int:
        """Largest value (bytes) any op holds for one window: the engine's cost of one occluded copy."""
        inputs = self.caches[0]
        n = inputs.shape[0]
        context = Context(example=torch.arange(n, device=self.device) % n, memory_format=self.memory_format)
        largest = 0
        states: list[State] = [None] * len(self.ops)
        with torch.no_grad(), self._autocast():
            for i, op in enumerate(self.ops):
                states[i] = self._step(i, op, states, [window], baseline, context)
                value = states[i].values if isinstance(states[i], Patch) else states[i]
                if isinstance(value, Tensor):
                    largest = max(largest, value.numel() * value.element_size())
        return largest
