"""Feature-map projections: the ``k`` strongest locations of each map of the probe layer, all projected at once by
``FeatureMapDeconvnet``, against a loop of Captum ``NeuronDeconvolution`` calls giving the same projections.

Captum needs one call per (map, rank): a callable ``neuron_selector`` picks each example's own location of that
rank times its (detached) value, so one call serves the whole batch and both seed with the activation. Only a
random subset of those calls is timed (``captum_calls``); the loop's time is their median per call times the
number of calls (``reference_estimated``). Every timed call is compared with zf_attr's projection of the same
seeds. Seeds whose activation is not positive are left out of the subset: zf_attr projects them to zero (no
feature responds), Captum to a sign-inverted picture.

The FLOP bound (multiply-accumulates of convolutions and linear layers, counted with forward hooks): Captum pays a
full forward pass ``F`` plus a backward pass from the layer ``B ~= F_layer`` per call, zf_attr ``F_layer / seeds
+ B`` per projection: ``(F + B) / (F_layer / seeds + B)``.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from captum.attr import NeuronDeconvolution
from torch import Tensor, nn

import zf_attr
from benchmarks.suite.context import Context
from benchmarks.suite.models import MODELS
from zf_attr.benchmarking import case_record, check_then_time, relative_error

__all__ = ["captum_projection", "count_macs", "projection_case"]


def count_macs(model: nn.Module, layer: str, images: Tensor) -> dict[str, Any]:
    """Multiply-accumulates per image: the full forward pass, the pass up to ``layer`` and the records below it.

    Returns:
        ``{"full": int, "to_layer": int, "below": [(module name, MACs per output position, (h, w)), ...]}``.
    """
    records: list[tuple[str, int, tuple[int, int]]] = []
    reached: list[int] = []
    names = {module: name for name, module in model.named_modules()}

    def count(module: nn.Module, args: Any, output: Tensor) -> None:
        if isinstance(module, nn.Conv2d):
            per_position = module.out_channels * (module.in_channels // module.groups) * math.prod(module.kernel_size)
            records.append((names[module], per_position, tuple(output.shape[-2:])))
        elif isinstance(module, nn.Linear):
            records.append((names[module], module.in_features * module.out_features, (1, 1)))

    handles = [m.register_forward_hook(count) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    handles.append(model.get_submodule(layer).register_forward_hook(lambda *_: reached.append(len(records))))
    try:
        with torch.no_grad():
            model(images[:1])
    finally:
        for handle in handles:
            handle.remove()
    below = records[: reached[0]]
    return {
        "full": sum(per * h * w for _, per, (h, w) in records),
        "to_layer": sum(per * h * w for _, per, (h, w) in below),
        "below": below,
    }


def captum_projection(method: NeuronDeconvolution, images: Tensor, rows: Tensor, cols: Tensor, channel: int) -> Tensor:
    """Captum's projection of each example's own location ``(rows[i], cols[i])`` of ``channel``, seeded by its value."""
    batch = torch.arange(len(images), device=images.device)

    def selector(output: Tensor) -> Tensor:
        picked = output[batch, channel, rows, cols]
        return picked * picked.detach()

    return method.attribute(images, selector)


def projection_case(ctx: Context, case: str, name: str) -> dict[str, Any]:
    """``FeatureMapDeconvnet(...).attribute(images, channels, mode="topk", k=k)`` against Captum's loop."""
    settings = ctx.settings
    images, _ = ctx.inputs(name, 1)
    layer = MODELS[name].layer
    model, twin = ctx.model(name), ctx.twin(name)
    projector = zf_attr.FeatureMapDeconvnet(model, layer)
    maps = int(_layer_channels(model, layer, images))
    channels = list(range(min(maps, settings.projection_channels or maps)))
    k = settings.projection_k
    seeds = len(channels) * k
    # the seeds to time Captum on: a random subset of those with a positive activation in every example
    probe = projector.attribute(images, channels, mode="topk", k=k)
    active = torch.nonzero((probe.activations > 0).all(dim=0)).flatten().cpu()
    generator = torch.Generator().manual_seed(ctx.seed + 2)
    picks = active[torch.randperm(len(active), generator=generator)[: settings.captum_calls]].tolist()
    locations = probe.locations
    theirs = NeuronDeconvolution(twin, twin.get_submodule(layer))

    def loop() -> list[Tensor]:
        return [
            captum_projection(theirs, images, locations[:, m, 0], locations[:, m, 1], channels[m // k]) for m in picks
        ]

    def check(out: dict[str, Any]) -> float:
        ours = out["zf_attr"].projections
        errors = [relative_error(ours[:, m], expected) for m, expected in zip(picks, out["reference"], strict=True)]
        same_seeds = torch.equal(out["zf_attr"].locations, locations)
        return max(errors, default=math.inf) if same_seeds else math.inf

    calls = {
        "zf_attr": ctx.ours(case, lambda: projector.attribute(images, channels, mode="topk", k=k)),
        "reference": loop,
    }
    checked = check_then_time(
        calls, check, settings.occlusion_tolerance, warmup=settings.heavy_warmup, repeats=settings.heavy_repeats,
        device=ctx.device,
    )  # fmt: skip
    macs = count_macs(ctx.cpu_model(name), layer, images.cpu())
    bound = (macs["full"] + macs["to_layer"]) / (macs["to_layer"] / seeds + macs["to_layer"])
    return case_record(
        case, name, images.shape, checked, "captum.attr.NeuronDeconvolution loop (estimated)",
        reference_scale=seeds / max(1, len(picks)), kind="projection", layer=layer, maps_projected=len(channels),
        k=k, projections=seeds * len(images), reference_calls_timed=len(picks), reference_calls_total=seeds,
        reference_estimated=True, cropped=projector.last_cropped, flop_bound=bound,
        gmacs_per_image={"full": macs["full"] / 1e9, "to_layer": macs["to_layer"] / 1e9},
    )  # fmt: skip


def _layer_channels(model: nn.Module, layer: str, images: Tensor) -> int:
    captured: list[int] = []
    handle = model.get_submodule(layer).register_forward_hook(lambda m, a, out: captured.append(out.shape[1]))
    try:
        with torch.no_grad():
            model(images[:1])
    finally:
        handle.remove()
    return captured[0]
