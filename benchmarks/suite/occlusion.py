"""Occlusion cases: ``OcclusionSensitivity`` (incremental, batched and auto engines, exact; the drill-down; on CUDA
channels_last and bf16) against Captum ``Occlusion`` at its default and at its best ``perturbations_per_eval``.

One image, square window over all channels, fill 0, one target. Captum runs once per model at ``1`` and at each
of ``captum_ppe`` (interleaved rounds, medians; shared by that model's cases), its ``perturbations_per_eval=1``
output being the reference. Each case records the engine that actually ran (``engine``; ``engine="auto"`` and
unsupported models fall back to batching, ``engine_note`` says why) and the FLOP bound of the incremental engine
(:func:`zf_attr.occlusion.incremental.occlusion_flops`: full over changed-region multiply-accumulates).

The float32 tolerance is 1e-4 (relative to the attribution's largest value), or 4 times the spread of Captum's own
outputs over its batch sizes where that is larger (``reference_spread``): where the score drops are tiny against the
scores (random-init ShuffleNet: drops of 1e-6 on scores of 3e-2), float32 rounding alone moves Captum by 2e-3
between batch sizes, while in float64 the engines agree with it to 1e-8.

The drill-down evaluates some windows exactly and interpolates the others, so its check is on the pixels that
only evaluated windows cover: there it must equal Captum; its error over the whole map and the error it reports
(``last_approximation_error``) are recorded beside. In bfloat16 the scores keep about 3 significant digits, and an
occlusion attribution is a difference of scores: relative to the attribution's own scale the error can be large
(0.5 on a random-init ResNet-18 at 224×224, whose drops are small against its scores; recorded as
``error_vs_float32``, and by the engine itself as ``reported_error``), so the bf16 check is on the scale of the
scores: ``max|bf16 - float32| / max|scores of the unoccluded image|``.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from captum.attr import Occlusion
from torch import Tensor

from benchmarks.suite.context import Context
from zf_attr import DrillDown, OcclusionSensitivity
from zf_attr.benchmarking import case_record, check_then_time, relative_error, time_interleaved
from zf_attr.occlusion.incremental import UnsupportedModelError, occlusion_flops
from zf_attr.occlusion.windows import WindowGrid

__all__ = ["DRILL_DOWN", "NOISE", "captum_reference", "exact_pixels", "flop_bound", "occlusion_case"]

#: The drill-down measured: every 3rd window along each axis, then the 10 % of the rest that matter most.
DRILL_DOWN = DrillDown(step=3, refine=0.1)

#: A float32 case may differ from Captum's ppe=1 output this many times as much as Captum's other batch sizes do.
NOISE = 4


def _geometry(ctx: Context, name: str) -> dict[str, Any]:
    window, stride = ctx.settings.window, ctx.settings.stride
    return {"sliding_window_shapes": (3, window, window), "strides": (3, stride, stride)}


def _image(ctx: Context, name: str) -> tuple[Tensor, int]:
    images, targets = ctx.inputs(name, 1)
    return images, int(targets[0])


def captum_reference(ctx: Context, name: str) -> dict[str, Any]:
    """Captum ``Occlusion`` on the model's image at ``perturbations_per_eval`` 1 and each of ``captum_ppe``."""

    def run() -> dict[str, Any]:
        model = ctx.model(name)
        image, target = _image(ctx, name)
        kwargs = {**_geometry(ctx, name), "target": target}
        method = Occlusion(model)
        ppes = (1, *ctx.settings.captum_ppe)
        calls = {ppe: (lambda ppe=ppe: method.attribute(image, perturbations_per_eval=ppe, **kwargs)) for ppe in ppes}
        with torch.no_grad():
            model(image)  # warm-up
        warmup = 1 if ctx.quick or ctx.device.type == "cuda" else 0  # full CPU runs take minutes per call
        timings = time_interleaved(calls, warmup=warmup, repeats=ctx.settings.heavy_repeats, device=ctx.device)
        best = min(ppes, key=lambda ppe: timings[ppe].median)
        spread = max(relative_error(timings[ppe].output, timings[1].output) for ppe in ppes)
        return {"output": timings[1].output, "timings": timings, "best": best, "spread": spread}

    return ctx.cached(name, "captum occlusion", run)


def flop_bound(ctx: Context, name: str) -> tuple[float | None, str | None]:
    """The incremental engine's FLOP bound for the model's sweep, or ``None`` and why not."""

    def count() -> tuple[float | None, str | None]:
        size = ctx.size(name)
        try:
            flops = occlusion_flops(ctx.cpu_model(name), (3, size, size), ctx.settings.window, ctx.settings.stride)
        except UnsupportedModelError as error:
            return None, f"no FLOP bound: {str(error).splitlines()[0][:200]}"
        return flops.bound, None

    return ctx.cached(name, "flop bound", count)


def exact_pixels(grid: WindowGrid, evaluated: Tensor) -> Tensor:
    """``(C, H, W)`` True where every window covering the pixel was evaluated (not interpolated)."""
    interpolated = torch.zeros(grid.shape, dtype=torch.bool)
    for window in torch.nonzero(~evaluated.cpu()).flatten().tolist():
        interpolated[grid.slices(window)] = True
    return ~interpolated


def occlusion_case(
    ctx: Context,
    case: str,
    name: str,
    engine: str = "incremental",
    drill_down: bool = False,
    variant: str | None = None,
) -> dict[str, Any]:
    """``OcclusionSensitivity(model, engine=engine, ...)`` against Captum's default and best batch size."""
    settings = ctx.settings
    reference = captum_reference(ctx, name)
    model = ctx.model(name)
    image, target = _image(ctx, name)
    geometry = _geometry(ctx, name)
    options: dict[str, Any] = {"engine": engine}
    if drill_down:
        options["approximate"] = DRILL_DOWN
    if variant == "channels_last":
        options["channels_last"] = True
    elif variant == "bf16":
        options["dtype"] = torch.bfloat16
    method = OcclusionSensitivity(model, **options)
    grid = WindowGrid(tuple(image.shape[1:]), geometry["sliding_window_shapes"], geometry["strides"])
    expected = reference["output"]

    with torch.no_grad():
        score_scale = model(image).abs().max().item()

    def check(out: dict[str, Any]) -> float:
        ours = out["zf_attr"].float()
        if variant == "bf16":  # on the scale of the scores, which bf16 keeps to ~3 digits (see the module doc)
            return (ours.double() - expected.double()).abs().max().item() / score_scale
        if not drill_down:
            return relative_error(ours, expected)
        mask = exact_pixels(grid, method.last_evaluated).to(ours.device)
        scale = expected.double().abs().max().item()
        difference = (ours.double() - expected.double())[:, mask].abs().max().item() if mask.any() else 0.0
        return difference / scale if scale > 0 else (0.0 if difference == 0 else math.inf)

    # float32: as close as Captum's own batch sizes are to each other (x NOISE), and never stricter than 1e-4
    tolerance = max(settings.occlusion_tolerance, NOISE * reference["spread"])
    tolerance = settings.bf16_tolerance if variant == "bf16" else tolerance
    call = ctx.ours(case, lambda: method.attribute(image, target=target, **geometry))
    checked = check_then_time(
        {"zf_attr": call}, check, tolerance, warmup=settings.heavy_warmup, repeats=settings.heavy_repeats,
        device=ctx.device,
    )  # fmt: skip
    timings, best = reference["timings"], reference["best"]
    bound, bound_note = flop_bound(ctx, name)
    record = case_record(
        case, name, image.shape, checked, f"captum.attr.Occlusion (best perturbations_per_eval={best})",
        kind="occlusion", engine_requested=engine, engine=method.last_engine, engine_note=method.last_engine_note,
        variant=variant or "float32", approximate="drill-down 3/0.1" if drill_down else None,
        window=settings.window, stride=settings.stride, windows=grid.num_windows,
        windows_evaluated=method.last_windows_evaluated, perturbations_per_eval=method.last_perturbations_per_eval,
        reported_error=method.last_approximation_error, flop_bound=bound, flop_bound_note=bound_note,
        reference_default_s=timings[1].median, reference_best_ppe=best, reference_spread=reference["spread"],
        reference_ppe_s={str(ppe): timing.median for ppe, timing in timings.items()},
        reference_timing=timings[best].as_dict(),
    )  # fmt: skip
    if checked.timings is not None:
        record["reference_s"] = timings[best].median
        record["ratio"] = record["reference_s"] / record["zf_attr_s"]
        record["ratio_vs_default"] = timings[1].median / record["zf_attr_s"]
    if drill_down:
        record["error_vs_exact"] = relative_error(checked.outputs["zf_attr"].float(), expected)
    if variant == "bf16":
        record["error_vs_float32"] = relative_error(checked.outputs["zf_attr"].float(), expected)
        record["check"] = "max|bf16 - float32| / max|scores of the unoccluded image| (max_relative_error)"
    if drill_down:
        record["exact_pixel_fraction"] = float(exact_pixels(grid, method.last_evaluated).float().mean())
    return record
