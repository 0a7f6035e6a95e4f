"""Occlusion sensitivity (Zeiler & Fergus 2014, Sec. 4.2) as a drop-in for ``captum.attr.Occlusion``."""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import torch
from captum.attr import PerturbationAttribution
from torch import Tensor
from tqdm.auto import tqdm

from zf_attr._captum_compat import (
    attribution_method,
    format_additional_forward_args,
    format_inputs,
    format_output,
    input_names,
    select_targets,
)
from zf_attr._guard import caller_stacklevel, check_finite, check_forward_arguments, check_tensors, fresh, guarded
from zf_attr.errors import ZFAttrWarning
from zf_attr.occlusion import (
    copies_per_batch,
    default_memory_budget,
    expand_additional_forward_args,
    expand_target,
    format_baselines,
    format_window_grids,
    iter_occluded,
    locate_window,
    measured_forward,
    release_freed_memory,
)
from zf_attr.occlusion.drill_down import ERROR_SAMPLES, DrillDown, DrillDownPlan
from zf_attr.occlusion.incremental.regions import batch_order, representative_first
from zf_attr.occlusion.incremental.select import (
    count_macs,
    fit_engine,
    select_engine,
    validate_engine_options,
    windows_per_batch,
)

__all__ = ["OcclusionSensitivity"]

#: The incremental engine's dense tail (e.g. VGG's fully connected layers, whose weights take longer to read than
#: to multiply) runs on this many batches of windows at once ...
TAIL_BATCHES = 8
#: ... when its linear weights take at least this many bytes (VGG-16: 472 MiB); a small tail (ResNet-18's 2 MiB
#: classifier) gains nothing, and the memory its waiting inputs need is better spent on larger batches.
TAIL_WEIGHT_BYTES = 64 * 2**20
#: ``engine="auto"`` runs this many batches on each engine and times the last.
MEASURED_BATCHES = 2
#: On the CPU a window on the incremental engine costs this many times its estimated memory: oneDNN keeps a
#: primitive (and its memory) for every patch shape it has seen, and glibc keeps freed buffers between batches.
#: Measured on ResNet-18 at 224x224: 3.3 MiB per window against an estimate of 2.5 (benchmarks/bench_memory_budget.py).
ENGINE_CPU_SLACK = 1.5


class OcclusionSensitivity(PerturbationAttribution):
    """Slide a window of baseline values over the input and record how much the target output drops.

    Same ``attribute`` signature and results as ``captum.attr.Occlusion``: each input position gets the mean,
    over the windows covering it, of ``output(original) - output(occluded)``. Windows include the channel
    dimension (not the batch), start at 0 and step by ``strides``; the last window along an axis is cut off at
    the border when the stride does not divide ``D - w``. Different from Captum:

    * ``perturbations_per_eval=None`` (default) picks the number of occluded copies per forward pass from the
      measured cost of one pass and ``memory_budget`` (see :mod:`zf_attr.occlusion.batching`).
    * ``show_progress`` counts windows.
    * ``target=None`` is accepted only when the model returns one value per example; Captum would attribute
      every output element (1000 logits → 1000 × the input's memory).
    * Attributions have the promoted dtype of the output and float32 (Captum always returns float32).
    * Models that ``torch.fx`` can trace into supported ops run on the incremental engine
      (:mod:`zf_attr.occlusion.incremental`, ``docs/fast-occlusion.md``): per layer only the region a window
      can change is recomputed, with the same results up to float rounding.

    Attributes:
        last_perturbations_per_eval: the windows per forward pass used by the last ``attribute`` call.
        last_engine: ``"incremental"`` or ``"batched"``: the engine of the last call.
        last_engine_note: why that engine was used.
        last_approximation_error: with ``approximate`` or a low-precision ``dtype``, the largest difference
            between the approximate and the exact float32 score drops on a sample of up to 16 windows, relative
            to the largest exact drop (of the sample; of the whole sweep for a drill-down); ``None`` for exact runs.
        last_windows_evaluated: windows the last call evaluated (all of them unless drilling down).
        last_evaluated: which windows the last call evaluated, a bool tensor over the windows (numbered row-major
            per input, input 0's first); the others were interpolated (:class:`~zf_attr.DrillDown`).

    Args:
        forward_func: the model, or any callable mapping the inputs (then ``additional_forward_args``) to an
            output with one row per example. An ``nn.Module`` is never modified (no mode change, no hooks left).
        engine: ``"auto"`` (default): the incremental engine for a traceable eval-mode model of at least
            20 M multiply-accumulates per example, else plain batched recomputation (a model that cannot be
            traced is noted once with a :class:`~zf_attr.errors.ZFAttrWarning`); on a long enough sweep one batch
            is timed on each and the faster goes on (see ``last_engine_note``); ``"incremental"``: the engine
            whenever the model supports it (else the same fallback and note); ``"batched"``: Captum's method.
        approximate: ``None`` (exact), or one of two approximations whose measured error is stored in
            ``last_approximation_error``: a :class:`~zf_attr.occlusion.drill_down.DrillDown` (coarse-then-fine:
            every ``step``-th window first, then the ``refine`` fraction of the others where the coarse map is
            strong or changes fast, the rest interpolated; works with either engine), or a float in ``(0, 1]``,
            Krypton's projective-field threshold for the incremental engine (each changed region's side capped at
            that fraction of its map; changes beyond it are dropped).
        dtype: compute the incremental engine in this dtype (``torch.bfloat16`` via autocast; error measured
            as for ``approximate``); ``None``: the input's dtype.
        channels_last: give convolutions ``torch.channels_last`` patches (faster on CUDA).

    Example:
        >>> import torch, torchvision
        >>> from zf_attr import OcclusionSensitivity
        >>> model = torchvision.models.resnet18(weights=None).eval()
        >>> images = torch.randn(2, 3, 32, 32)
        >>> occlusion = OcclusionSensitivity(model)
        >>> maps = occlusion.attribute(images, sliding_window_shapes=(3, 16, 16), strides=(3, 8, 8), target=[3, 7])
        >>> maps.shape
        torch.Size([2, 3, 32, 32])
    """

    def __init__(
        self,
        forward_func: Callable[..., Any],
        engine: str = "auto",
        approximate: float | DrillDown | None = None,
        dtype: torch.dtype | None = None,
        channels_last: bool = False,
    ) -> None:
        if not callable(forward_func):
            raise TypeError(f"forward_func must be callable (a model or function), got {type(forward_func).__name__}")
        validate_engine_options(engine, approximate, dtype, channels_last)
        PerturbationAttribution.__init__(self, forward_func)
        self.engine, self.approximate, self.dtype, self.channels_last = engine, approximate, dtype, channels_last
        self.last_engine: str | None = None
        self.last_engine_note: str | None = None
        self.last_approximation_error: float | None = None
        self.last_windows_evaluated: int | None = None
        self.last_evaluated: Tensor | None = None

    @attribution_method
    @guarded
    def attribute(
        self,
        inputs: Tensor | tuple[Tensor, ...],
        sliding_window_shapes: tuple[int, ...] | tuple[tuple[int, ...], ...],
        strides: int | tuple[int, ...] | tuple[int | tuple[int, ...], ...] | None = None,
        baselines: Any = None,
        target: Any = None,
        additional_forward_args: Any = None,
        perturbations_per_eval: int | None = None,
        show_progress: bool = False,
        memory_budget: int | None = None,
    ) -> Tensor | tuple[Tensor, ...]:
        """Occlusion attributions of the ``target`` output, shaped like ``inputs``.

        Args:
            inputs: a batch ``(N, ...)`` or a tuple of batches (multi-input models).
            sliding_window_shapes: the window over every non-batch dimension, e.g. ``(3, 16, 16)``; a tuple of
                such tuples for tuple inputs.
            strides: ``None`` (1), an int, a tuple with one int per window dimension; for tuple inputs one int or
                tuple per input.
            baselines: the fill value: ``None`` (0), a number, or a tensor broadcastable to the input; a tuple of
                these for tuple inputs.
            target: which output to explain, in Captum's forms (int, tuple, tensor, list). ``None`` only for
                models returning one value per example.
            additional_forward_args: extra arguments after the inputs (tensors with a batch dimension are repeated
                with the occluded copies, as in Captum).
            perturbations_per_eval: windows per forward pass; ``None`` chooses it under ``memory_budget``.
            show_progress: show a tqdm bar counting windows.
            memory_budget: bytes one forward pass may use when ``perturbations_per_eval`` is ``None``; default
                64 MiB off CUDA (larger CPU batches are no faster), on CUDA a quarter of the free device memory
                (at least 512 MiB when free).

        Returns:
            Attributions shaped like ``inputs`` (a tensor for a tensor, a tuple for a tuple).

        Raises:
            TypeError, ValueError: bad arguments; the message names the argument.
        """
        was_tuple, inputs_tuple = format_inputs(inputs, floating=False)
        grids = format_window_grids(inputs_tuple, sliding_window_shapes, strides, was_tuple)
        fills = format_baselines(baselines, inputs_tuple, was_tuple)
        extra = format_additional_forward_args(additional_forward_args)
        check_forward_arguments(self.forward_func, len(inputs_tuple), extra, "additional_forward_args")
        check_tensors(self.forward_func, input_names(inputs_tuple, was_tuple), integer_ok=True)
        for name, fill in input_names(fills, was_tuple, "baselines").items():
            # the values as given, not their broadcast copies (stride 0)
            check_finite(name, fill[tuple(slice(0, 1) if step == 0 else slice(None) for step in fill.stride())])
        if perturbations_per_eval is not None and (
            isinstance(perturbations_per_eval, bool)
            or not isinstance(perturbations_per_eval, int)
            or perturbations_per_eval < 1
        ):
            raise ValueError(f"perturbations_per_eval must be None or an int >= 1, got {perturbations_per_eval!r}")
        if memory_budget is not None and (
            isinstance(memory_budget, bool) or not isinstance(memory_budget, (int, float)) or memory_budget <= 0
        ):
            raise ValueError(f"memory_budget must be a positive number of bytes, got {memory_budget!r}")
        num_examples = inputs_tuple[0].shape[0]
        if any(tensor.shape[0] != num_examples for tensor in inputs_tuple):
            raise ValueError(f"inputs have different batch sizes {[tuple(t.shape) for t in inputs_tuple]}")
        num_windows = sum(grid.num_windows for grid in grids)

        with torch.no_grad():
            with count_macs() as macs:
                output, bytes_per_copy, bytes_per_pass = measured_forward(
                    lambda: self.forward_func(*fresh(inputs_tuple), *extra), inputs_tuple
                )
            initial = self._scores(output, target, num_examples)
            engine = select_engine(
                self, self.engine, self.forward_func, inputs_tuple, extra, output, macs[0],
                dtype=self.dtype, channels_last=self.channels_last, memory_budget=memory_budget,
            )  # fmt: skip
            budget = memory_budget if memory_budget is not None else default_memory_budget(inputs_tuple[0].device)
            batched_budget, batched_bytes = budget, bytes_per_copy
            if engine is not None:
                bytes_per_copy = engine.bytes_per_copy(grids[0].slices(grids[0].central_window), fills[0])
                if inputs_tuple[0].device.type == "cpu":
                    bytes_per_copy = int(bytes_per_copy * ENGINE_CPU_SLACK)
                tail_batches = TAIL_BATCHES if engine.tail_weight_bytes >= TAIL_WEIGHT_BYTES else 1
                # each window's input to the dense tail waits for the tail's batches (twice: the allocator)
                bytes_per_copy += 2 * (tail_batches - 1) * engine.tail_bytes_per_window
                engine, budget = fit_engine(self, engine, memory_budget, int(budget), bytes_per_copy)
                if engine is None:
                    release_freed_memory(inputs_tuple[0].device)  # the dropped cache, before the batches
                    _, bytes_per_copy, bytes_per_pass = measured_forward(
                        lambda: self.forward_func(*fresh(inputs_tuple), *extra), inputs_tuple
                    )
            if perturbations_per_eval is None:
                copies, budget = windows_per_batch(
                    int(budget), memory_budget, bytes_per_copy, bytes_per_pass, num_windows, engine is not None
                )
                # while the engine (its cache, its transient buffers) is alive, batched passes get half of what
                # the engine left of the budget
                batched_copies = copies_per_batch(
                    int(budget) // 2 if engine is not None else int(batched_budget), batched_bytes, num_windows
                )
            else:
                copies = batched_copies = min(perturbations_per_eval, num_windows)
            if memory_budget is not None and perturbations_per_eval is None and int(budget) < bytes_per_copy:
                needed = int(memory_budget) - int(budget) + bytes_per_copy  # the fixed memory and one copy
                warnings.warn(
                    f"memory_budget={memory_budget / 2**20:.1f} MiB is below the ~{needed / 2**20:.1f} MiB that a "
                    "forward pass with one occluded copy of the inputs takes: running one copy per pass, "
                    f"which will exceed the budget; pass memory_budget >= {needed} to stay within it",
                    ZFAttrWarning,
                    stacklevel=caller_stacklevel(),
                )
            self.last_perturbations_per_eval = copies
            dtype = torch.promote_types(initial.dtype, torch.float32)
            plan = DrillDownPlan(grids, self.approximate) if isinstance(self.approximate, DrillDown) else None
            cap = None if plan is not None else self.approximate
            expected = num_windows if plan is None else len(plan.coarse_ids) + plan.num_refined + ERROR_SAMPLES
            totals = [torch.zeros(t.shape, dtype=dtype, device=t.device) for t in inputs_tuple]
            drops = torch.zeros(num_windows, num_examples, dtype=dtype, device=initial.device)
            evaluated = torch.zeros(num_windows, dtype=torch.bool)
            progress = tqdm(
                total=min(expected, num_windows), desc=f"{self.get_name()} attribution", disable=not show_progress
            )

            def batched(ids: list[int], k: int) -> Iterator[tuple[list[int], Any]]:
                for chunk, occluded in iter_occluded(inputs_tuple, grids, fills, k, window_ids=ids):
                    yield chunk, self.forward_func(*occluded, *expand_additional_forward_args(extra, len(chunk)))

            def incremental(ids: list[int], k: int) -> Iterator[tuple[list[int], Any]]:
                order = batch_order([grids[0].position(i) for i in ids], grids[0].grid_shape, k)
                ids = [ids[i] for i in order]  # batches of windows with similar changed regions
                per_tail = k * tail_batches  # the dense tail (fully connected layers) on several batches at once
                for start in range(0, len(ids), per_tail):
                    chunk = ids[start : start + per_tail]
                    yield chunk, engine.run([grids[0].slices(i) for i in chunk], fills[0], cap=cap, sub_batch=k)

            first_ids = list(range(num_windows)) if plan is None else plan.coarse_ids
            measure = (
                engine is not None
                and self.engine == "auto"
                and cap is None
                and memory_budget is None  # an explicit budget is for the engine alone, not for both at once
                and len(first_ids) >= 2 * MEASURED_BATCHES * (copies + batched_copies)
            )

            def evaluate(ids: list[int]) -> None:
                nonlocal measure
                if engine is None or self.last_engine == "batched":
                    batches = batched(ids, self.last_perturbations_per_eval)
                elif measure:
                    typical = representative_first(ids, grids[0], copies)  # timed: the last measured batch
                    warm_up = typical[copies : MEASURED_BATCHES * copies]
                    ids = warm_up + typical[:copies] + typical[MEASURED_BATCHES * copies :]
                    batches, measure = self._faster_engine(ids, incremental, batched, copies, batched_copies), False
                else:
                    batches = incremental(ids, copies)
                for chunk, out in batches:
                    k = len(chunk)
                    scores = self._scores(out, expand_target(target, k), k * num_examples)
                    drops[chunk] = (initial.unsqueeze(0) - scores.reshape(k, num_examples)).to(dtype)
                    evaluated[chunk] = True
                    progress.update(k)
                    del out
                    release_freed_memory(initial.device)

            self.last_approximation_error = None
            try:
                evaluate(first_ids)
                if plan is not None:
                    evaluate(plan.refinement(drops))
                    samples = plan.error_samples(evaluated)
                    guess = plan.interpolate(drops, evaluated)
                    evaluate(samples)
                    scale = drops[evaluated.to(drops.device)].abs().max().clamp_min(1e-30)
                    self.last_approximation_error = (
                        float((guess[samples] - drops[samples]).abs().max() / scale) if samples else 0.0
                    )
                    drops = plan.interpolate(drops, evaluated)
            finally:
                progress.close()
            self.last_windows_evaluated, self.last_evaluated = int(evaluated.sum()), evaluated
            for window_id in range(num_windows):
                input_index, local_id = locate_window(window_id, grids)
                total = totals[input_index]
                diff = drops[window_id].to(total.device).reshape(num_examples, *([1] * (total.dim() - 1)))
                total[(slice(None), *grids[input_index].slices(local_id))] += diff
            if engine is not None and (cap is not None or self.dtype not in (None, torch.float32)):
                self.last_approximation_error = self._measured_error(engine, grids[0], fills[0], target, output)
        attributions = [total / grid.coverage(total.device, dtype) for total, grid in zip(totals, grids, strict=True)]
        return format_output(was_tuple, attributions)

    def attribute_future(self, *args: Any, **kwargs: Any) -> Any:
        """Not implemented, as in Captum's ``Occlusion``."""
        raise NotImplementedError("attribute_future is not implemented for OcclusionSensitivity")

    def _faster_engine(
        self,
        ids: list[int],
        incremental: Callable[..., Iterator[Any]],
        batched: Callable[..., Iterator[Any]],
        copies: int,
        batched_copies: int,
    ) -> Iterator[tuple[list[int], Any]]:
        """``engine="auto"``: time batches on each engine (results kept), then go on with the faster one.

        The incremental engine's speed-up depends on the architecture (many small branches, as in GoogLeNet,
        cost more in bookkeeping than they save), so it is measured, per window, on the sweep itself: each engine
        runs :data:`MEASURED_BATCHES` batches and the last is timed (the first pays one-off costs, such as
        oneDNN's set-up for a new batch size); the incremental engine's timed windows are of typical cost
        (:func:`~zf_attr.occlusion.incremental.regions.representative_first`, placed second by the caller).
        """
        seconds = {}
        done = 0
        for name, run, k in (("incremental", incremental, copies), ("batched", batched, batched_copies)):
            for _ in range(MEASURED_BATCHES):
                start = time.perf_counter()
                chunk, out = next(run(ids[done : done + k], k))
                if isinstance(out, Tensor) and out.is_cuda:
                    torch.cuda.synchronize(out.device)
                seconds[name] = (time.perf_counter() - start) / len(chunk)
                done += len(chunk)
                yield chunk, out
        winner = min(seconds, key=seconds.__getitem__)
        self.last_engine = winner
        self.last_perturbations_per_eval = copies if winner == "incremental" else batched_copies
        self.last_engine_note = (
            f"engine='auto' measured {seconds['incremental'] * 1e3:.1f} ms per window incremental and "
            f"{seconds['batched'] * 1e3:.1f} ms batched on this sweep, and went on {winner}"
        )
        yield from (incremental if winner == "incremental" else batched)(ids[done:], self.last_perturbations_per_eval)

    def _measured_error(self, engine: Any, grid: Any, fill: Tensor, target: Any, output: Tensor) -> float:
        """Max |approximate - exact| score drop over up to 16 windows, relative to the largest exact drop."""
        num_examples = output.shape[0]
        ids = sorted({round(i * (grid.num_windows - 1) / 15) for i in range(16)})
        windows = [grid.slices(i) for i in ids]
        k = len(ids)
        initial = self._scores(output, target, num_examples).double()
        exact_engine = engine if self.dtype in (None, torch.float32) else engine.exact()
        exact = exact_engine.run(windows, fill)
        approximate = engine.run(windows, fill, cap=self.approximate)
        drops = [
            initial.unsqueeze(0) - self._scores(out, expand_target(target, k), k * num_examples).double().reshape(k, -1)
            for out in (exact, approximate)
        ]
        return float((drops[1] - drops[0]).abs().max() / drops[0].abs().max().clamp_min(1e-30))

    @staticmethod
    def _scores(output: Any, target: Any, num_examples: int) -> Tensor:
        """One score per example, ``(num_examples,)``, or a ValueError explaining why not."""
        if isinstance(output, Tensor) and output.dim() == 0:
            raise ValueError(
                "forward_func returned a single value for the whole batch (0-d tensor); OcclusionSensitivity "
                "needs one row per example: return shape (N,) or (N, classes) instead of aggregating"
            )
        scores = select_targets(output, target, num_examples)
        if scores.dim() > 1:
            if scores[0].numel() != 1:
                raise ValueError(
                    f"target=None but the model returns {scores[0].numel()} values per example (output shape "
                    f"{tuple(output.shape)}); pass target=<class index> (or a list / tensor of N indices) to choose "
                    "one; attributing every output (as Captum does) would take that many times the input's memory"
                )
            scores = scores.reshape(num_examples)
        return scores
