"""The incremental-inference occlusion engine (after Krypton, Nakandala et al., SIGMOD 2019).

:class:`IncrementalEngine` traces the model (once: :func:`~zf_attr.occlusion.incremental.graph.traced_ops`), runs
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
import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from zf_attr.occlusion.incremental.graph import Op, UnsupportedModelError, traced_ops
from zf_attr.occlusion.incremental.held import HeldBytes, reads_caches
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
from zf_attr.occlusion.incremental.layouts import Layout, classify, internal_shape, to_internal, to_true, wrap_call
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
            :class:`~zf_attr.occlusion.incremental.graph.UnsupportedModelError` is raised).
        dtype: ``torch.bfloat16`` or ``torch.float16``: compute under autocast in that dtype (approximate);
            ``None`` or the input's dtype: exact.
        channels_last: hand patches to conv/pool in ``torch.channels_last`` memory format.
        keep_modules: names of modules whose outputs :meth:`run` may return (``extra``); see
            :meth:`node_of_module`.
        max_cache_bytes: stop building (raise :class:`~zf_attr.occlusion.incremental.held.CacheTooLargeError`, an
            ``UnsupportedModelError``) once the values held during the unoccluded pass take more than this.

    Raises:
        UnsupportedModelError: the model cannot be traced or uses an op outside the table; ``str(error)`` says which.

    Attributes:
        ops: the traced ops, in execution order.
        tail_start: index of the first op of the dense tail (the ops after the last spatial or element-wise one).
        tail_inputs: the ops before the tail whose values the tail reads.
        tail_bytes_per_window: bytes of those values per window (held by :meth:`run` with ``sub_batch``).
        tail_weight_bytes: bytes of the tail's linear weights (VGG-16: 472 MiB, ResNet-18: 2 MiB).

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
        keep_modules: Sequence[str] = (),
        max_cache_bytes: int | None = None,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise UnsupportedModelError("forward_func is a plain callable, not an nn.Module")
        if not isinstance(inputs, Tensor) or inputs.dim() != 4 or not inputs.is_floating_point():
            raise UnsupportedModelError("the input is not one floating-point image batch (N, C, H, W)")
        self.ops, self.module_outputs = traced_ops(model)
        self.device = inputs.device
        self.dtype = dtype
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.users = [[j for j, op in enumerate(self.ops) if i in op.inputs] for i in range(len(self.ops))]
        self.model, self.channels_last = model, channels_last
        self.kept = {self.module_outputs[name] for name in keep_modules if name in self.module_outputs}
        self.max_cache_bytes = max_cache_bytes
        with torch.no_grad(), self._autocast():
            self.caches = self._forward(inputs)
        self.padded: dict[int, Tensor] = {}
        self._prune_caches()
        # the dense tail: the ops after the last spatial or element-wise one (e.g. VGG's classifier)
        self.tail_start = len(self.ops) - 1
        while self.tail_start > 0 and self.ops[self.tail_start - 1].kind in ("dense", "const"):
            self.tail_start -= 1
        self.tail_inputs = sorted({j for op in self.ops[self.tail_start :] for j in op.inputs if j < self.tail_start})
        self.tail_bytes_per_window = sum(
            math.prod(self.shapes[j]) * inputs.element_size() for j in self.tail_inputs if self.shapes[j]
        )
        self.tail_weight_bytes = sum(  # linear layers: in_features (MACs per output) x out_features
            op.macs_per_output * self.shapes[i][-1] * inputs.element_size()
            for i, op in enumerate(self.ops[self.tail_start :], start=self.tail_start)
            if op.macs_per_output and self.shapes[i]
        )
        output = self.caches[-1]
        if not isinstance(output, Tensor):
            raise UnsupportedModelError("the model does not return a tensor")
        if reference is not None:
            scale = reference.detach().abs().max().clamp_min(1e-30)
            error = float((output.float() - reference.detach().float()).abs().max() / scale)
            if error > TRACE_TOLERANCE and dtype is None:
                raise UnsupportedModelError(
                    f"the traced graph does not reproduce the model's output (relative error {error:.1e})"
                )

    def _prune_caches(self) -> None:
        """Keep only the cached values a batch reads; spatial ops read a padded copy (others a view into it)."""
        needed = {len(self.ops) - 1, *self.kept}
        for op in self.ops:
            if reads_caches(op, self.ops) and op.kind != "spatial":
                needed.update(op.inputs)
        shared: dict[tuple[Any, ...], Tensor] = {}
        viewed: set[int] = set()
        for i, op in enumerate(self.ops):
            if op.kind != "spatial" or op.geometry is None:
                continue
            (j,) = op.inputs
            padded = pad_cache(op, self.caches[j], self.shapes[i])
            key = (j, tuple(padded.shape), op.geometry[0].padding, op.geometry[1].padding, op.pad_value)
            self.padded[i] = padded = shared.setdefault(key, padded)
            if j not in viewed:  # the whole value (a region that covers the map) is a view into the padded copy
                top, left = op.geometry[0].padding, op.geometry[1].padding
                self.caches[j] = padded[..., top : top + self.shapes[j][2], left : left + self.shapes[j][3]]
                viewed.add(j)
                needed.add(j)
        for j, op in enumerate(self.ops):
            if j not in needed and op.kind not in ("input", "const"):
                self.caches[j] = None

    @staticmethod
    def _spatial_fits(op: Op, in_shape: Sequence[int], out_shape: Sequence[int]) -> bool:
        assert op.geometry is not None
        for axis, size, out in zip(op.geometry, in_shape[-2:], out_shape[-2:], strict=True):
            floor_size = (size + 2 * axis.padding - axis.span) // axis.stride + 1
            if out != floor_size and (op.pad_value == 0.0 or out < floor_size):
                return False  # only max-pooling may add ceil-mode outputs (they read -inf padding)
        return len(out_shape) == 4

    def _autocast(self) -> Any:
        if self.dtype not in (torch.bfloat16, torch.float16):
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def _forward(self, inputs: Tensor) -> list[Any]:
        """Every op's value on the unoccluded input, with each op's final kind and layout decided on the way.

        A value is dropped once its last reader has run unless a batch reads it from the cache
        (:func:`~.held.reads_caches`), so the pass holds about the cache, counted against ``max_cache_bytes``. Values
        in the channels-last layout are kept as ``(N, C, H, W)`` views and the ops around them wrapped
        (:mod:`.layouts`).
        """
        values: list[Any] = []
        self.shapes: list[tuple[int, ...]] = []
        self.layouts: list[Layout] = []
        remaining = [len(users) for users in self.users]
        held = HeldBytes(self.max_cache_bytes)
        for op in self.ops:
            consts = [self.ops[j].value if self.ops[j].kind == "const" else None for j in op.inputs]
            if op.kind == "input":
                value, layout = inputs, "last2"
            elif op.kind == "const":
                value, layout = op.value, None
            else:
                assert op.call is not None
                value = op.call([values[j] for j in op.inputs])
            shape = tuple(value.shape) if isinstance(value, Tensor) else ()
            if op.kind not in ("input", "const"):
                ins = [self.layouts[j] for j in op.inputs]
                op.kind, layout = classify(op, ins, [self.shapes[j] for j in op.inputs], consts, shape)
                if op.kind == "spatial" and not self._spatial_fits(op, self.shapes[op.inputs[0]], shape):
                    op.kind, layout = "dense", None  # e.g. average pooling whose ceil mode changes the output size
            values.append(value)
            self.layouts.append(layout)
            self.shapes.append(shape)
            if op.kind not in ("input", "const"):
                held.add(value, op.name)
            for j in op.inputs:
                remaining[j] -= 1
                if (
                    remaining[j] == 0
                    and not any(reads_caches(self.ops[u], self.ops) for u in self.users[j])
                    and j not in self.kept
                    and j != len(self.ops) - 1
                    and self.ops[j].kind not in ("input", "const")
                ):  # no batch reads it: dropped now, not after the pass (the pass's peak is the cache's)
                    held.remove(values[j])
                    values[j] = None
        for i, op in enumerate(self.ops):  # the engine's representation: spatial dims last
            if op.call is not None:
                op.call = wrap_call(op.call, [self.layouts[j] for j in op.inputs], self.layouts[i])
            if self.layouts[i] == "nhwc":
                values[i] = to_internal("nhwc", values[i])
                self.shapes[i] = internal_shape("nhwc", self.shapes[i])
        return values

    @property
    def output(self) -> Tensor:
        """The (cached) model output for the unoccluded input."""
        return self.caches[-1]

    def node_of_module(self, name: str) -> int | None:
        """Op index of module ``name``'s output, if it was called exactly once and passed in ``keep_modules``."""
        index = self.module_outputs.get(name)
        return index if index in self.kept else None

    def run(
        self,
        windows: Sequence[tuple[slice, ...]],
        baseline: Tensor,
        *,
        cap: float | None = None,
        extra: Sequence[int] = (),
        sub_batch: int | None = None,
    ) -> Any:
        """Model outputs for the input occluded by each window, ``(len(windows) * N, ...)``, window-major.

        Args:
            windows: one ``(channels, rows, cols)`` slice triple per window (as
                :meth:`zf_attr.occlusion.WindowGrid.slices` returns them).
            baseline: the fill value, broadcastable to the input ``(N, C, H, W)``.
            cap: approximate mode: largest rectangle side as a fraction of each map side (``None``: exact).
            extra: op indices whose whole values are returned too (e.g. :meth:`node_of_module`).
            sub_batch: run the ops before the dense tail (see :attr:`tail_start`) ``sub_batch`` windows at a time,
                then the tail on all windows at once: the tail's weights (VGG's 400 MB of fully connected layers)
                are then read once for all the windows instead of once per sub-batch. Memory for the windows
                beyond one sub-batch: :attr:`tail_bytes_per_window` each. Ignored with ``extra``.

        Returns:
            The output, or ``(output, [values of extra])`` when ``extra`` is given.
        """
        if cap is not None and not 0 < cap <= 1:
            raise ValueError(f"cap must be in (0, 1] (a fraction of the map side) or None, got {cap!r}")
        inputs = self.caches[0]
        whole = self._context(len(windows), cap)
        with torch.no_grad(), self._autocast():
            if sub_batch is None or extra or len(windows) <= sub_batch:
                states = self._run_ops(0, len(self.ops), windows, baseline, whole, set(extra))
            else:
                parts: dict[int, list[Tensor]] = {j: [] for j in self.tail_inputs}
                for first in range(0, len(windows), sub_batch):
                    part = windows[first : first + sub_batch]
                    context = self._context(len(part), cap)
                    prefix = self._run_ops(0, self.tail_start, part, baseline, context, set(self.tail_inputs))
                    for j in self.tail_inputs:
                        parts[j].append(to_dense(prefix[j], self.caches[j], context))
                states = [None] * len(self.ops)
                for j, values in parts.items():
                    states[j] = torch.cat(values)
                states = self._run_ops(self.tail_start, len(self.ops), windows, baseline, whole, set(), states)
            output = to_dense(states[-1], self.caches[-1], whole)
            if self.dtype is not None and output.is_floating_point() and output.dtype != inputs.dtype:
                output = output.to(inputs.dtype)
            if not extra:
                return output
            return output, [to_true(self.layouts[j], to_dense(states[j], self.caches[j], whole)) for j in extra]

    def _context(self, num_windows: int, cap: float | None) -> Context:
        n = self.caches[0].shape[0]
        example = torch.arange(num_windows * n, device=self.device) % n
        return Context(example=example, cap=cap, memory_format=self.memory_format)

    def _run_ops(
        self,
        start: int,
        stop: int,
        windows: Sequence[tuple[slice, ...]],
        baseline: Tensor,
        context: Context,
        keep: set[int],
        states: list[State] | None = None,
    ) -> list[State]:
        """States of ops ``start … stop-1`` (a value is dropped after its last reader unless in ``keep``)."""
        states = [None] * len(self.ops) if states is None else states
        remaining = [len(users) for users in self.users]
        for i in range(start, stop):
            op = self.ops[i]
            states[i] = self._step(i, op, states, windows, baseline, context)
            for j in op.inputs:
                remaining[j] -= 1
                if remaining[j] == 0 and j not in keep and self.ops[j].kind != "input":
                    states[j] = None
        return states

    def _step(
        self,
        i: int,
        op: Op,
        states: list[State],
        windows: Sequence[tuple[slice, ...]],
        baseline: Tensor,
        context: Context,
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
        rectangles = bounds.tolist()
        bounds = bounds.to(self.device)
        top, h = fit_regions(bounds[:, 2], bounds[:, 3], height)
        left, w = fit_regions(bounds[:, 4], bounds[:, 5], width)
        fill = torch.broadcast_to(baseline.to(device=self.device, dtype=inputs.dtype), inputs.shape)
        values = gather(None, inputs, context, top, left, h, w)
        offsets = zip(rectangles, top.tolist(), left.tolist(), strict=True)
        for r, ((c0, c1, r0, r1, q0, q1), t, le) in enumerate(offsets):
            r1, q1, e = min(r1, height), min(q1, width), r % n
            values[r, c0:c1, r0 - t : r1 - t, q0 - le : q1 - le] = fill[e, c0:c1, r0:r1, q0:q1]
        return Patch(values, top, left)

    @property
    def cache_bytes(self) -> int:
        """Bytes of the cached activations (and their padded copies) of the unoccluded input."""
        storages = {}
        for tensor in [c for c in self.caches if isinstance(c, Tensor)] + list(self.padded.values()):
            storage = tensor.untyped_storage()
            storages[storage.data_ptr()] = storage.nbytes()
        return sum(storages.values())

    def exact(self) -> IncrementalEngine:
        """An engine for the same model and input in the input's dtype (the reference of low-precision runs)."""
        return IncrementalEngine(self.model, self.caches[0], channels_last=self.channels_last)

    def bytes_per_copy(self, window: tuple[slice, ...], baseline: Tensor) -> int:
        """Memory one occluded copy costs: 2 × (peak of the values alive at once for ``window`` + 4 × the largest).

        Values stay alive until their last reader has run (held skip connections included); the 4 × largest
        covers the workspace of the largest op (gathered patch, mask, pasted patch, contiguous copy); the factor
        2 covers the allocator (ResNet-18 at 160×160: measured 2.0 MiB more peak resident memory per window,
        estimate 1.5 MiB).
        """
        inputs = self.caches[0]
        n = inputs.shape[0]
        context = Context(example=torch.arange(n, device=self.device) % n, memory_format=self.memory_format)
        largest = live = peak = 0
        states: list[State] = [None] * len(self.ops)
        remaining = [len(users) for users in self.users]
        sizes = [0] * len(self.ops)
        with torch.no_grad(), self._autocast():
            for i, op in enumerate(self.ops):
                states[i] = self._step(i, op, states, [window], baseline, context)
                value = states[i].values if isinstance(states[i], Patch) else states[i]
                if isinstance(value, Tensor):
                    sizes[i] = value.numel() * value.element_size()
                    largest, live = max(largest, sizes[i]), live + sizes[i]
                    peak = max(peak, live)
                for j in op.inputs:
                    remaining[j] -= 1
                    if remaining[j] == 0:
                        live -= sizes[j]
                        states[j] = None
        return 2 * (peak + 4 * largest)
