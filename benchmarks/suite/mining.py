"""Top-k mining (``zf_attr.analysis.mine_top_k``) against plain inference over the same data.

Every map of the probe layer, ``k = 9``, one entry per image, generated shapes images in batches. Three calls,
interleaved: mining, plain inference (``model(x)`` under ``no_grad`` over the batches: what running the model over
the data costs anyway) and inference up to the layer (all that mining needs to run). ``ratio`` is plain inference
over mining (below 1: mining costs more). The check: the mined record equals a brute-force top-k (a plain Python
sort of every image's map maxima from the same batches), bitwise.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from benchmarks.suite.context import Context
from benchmarks.suite.models import MODELS, shapes_batches
from zf_attr.analysis import TopKActivations, mine_top_k
from zf_attr.attr._layers import capture_layer_output
from zf_attr.benchmarking import case_record, check_then_time

__all__ = ["K", "brute_force", "differences", "mining_case"]

#: Entries kept per map.
K = 9


def brute_force(model: nn.Module, layer: nn.Module, name: str, batches: list[Tensor], k: int) -> TopKActivations:
    """Per channel: every image's map maximum (first location on ties), sorted in plain Python; the top k."""
    maxima, where = [], []
    with torch.no_grad():
        for images in batches:
            activation, _ = capture_layer_output(model, layer, (images,), stop=True)
            value, flat = activation.flatten(2).max(dim=2)
            maxima.append(value.cpu())
            where.append(flat.cpu())
            width = activation.shape[-1]
            map_size = tuple(activation.shape[-2:])
    values, flats = torch.cat(maxima).T, torch.cat(where).T  # (C, N)
    channels = values.shape[0]
    top_values = torch.empty(channels, k, dtype=values.dtype)
    top_ids = torch.empty(channels, k, dtype=torch.long)
    top_locations = torch.empty(channels, k, 2, dtype=torch.long)
    for c in range(channels):
        entries = sorted(range(values.shape[1]), key=lambda i, c=c: (-float(values[c, i]), i))[:k]
        top_values[c] = values[c, entries]
        top_ids[c] = torch.tensor(entries)
        top_locations[c] = torch.stack([flats[c, entries] // width, flats[c, entries] % width], dim=-1)
    return TopKActivations(
        name, k, torch.arange(channels), top_values, top_ids, top_locations, sum(map(len, batches)), map_size
    )


def differences(mined: TopKActivations, expected: TopKActivations) -> int:
    """How many of the values, image ids and locations differ (0: bitwise equal)."""
    differ = 0
    for field in ("values", "image_ids", "locations"):
        ours, theirs = getattr(mined, field).cpu(), getattr(expected, field).cpu()
        differ += int((ours != theirs).sum()) if ours.shape == theirs.shape else theirs.numel()
    return differ


def mining_case(ctx: Context, case: str, name: str) -> dict[str, Any]:
    """``mine_top_k(model, layer, batches, k=9)`` against ``model(x)`` over the same batches."""
    settings = ctx.settings
    model = ctx.model(name)
    layer_name = MODELS[name].layer
    layer = model.get_submodule(layer_name)
    size = ctx.size(name)
    batches = [b.to(ctx.device) for b in shapes_batches(settings.mining_images, size, settings.mining_batch, ctx.seed)]
    expected = brute_force(model, layer, layer_name, batches, K)

    def plain() -> None:
        with torch.no_grad():
            for images in batches:
                model(images)

    def to_layer() -> None:
        with torch.no_grad():
            for images in batches:
                capture_layer_output(model, layer, (images,), stop=True)

    calls = {
        "zf_attr": ctx.ours(case, lambda: mine_top_k(model, layer_name, batches, k=K, show_progress=False)),
        "reference": plain,
        "to_layer": to_layer,
    }
    checked = check_then_time(
        calls, lambda out: differences(out["zf_attr"], expected), 0, warmup=settings.heavy_warmup,
        repeats=settings.heavy_repeats, device=ctx.device,
    )  # fmt: skip
    record = case_record(
        case, name, (settings.mining_images, 3, size, size), checked, "plain inference, model(x) under no_grad",
        kind="mining", layer=layer_name, k=K, batch=settings.mining_batch, channels=int(expected.channels.numel()),
        check="mined record against a brute-force top-k, bitwise (max_relative_error: entries that differ)",
    )  # fmt: skip
    if checked.timings is not None:
        record["to_layer_s"] = checked.timings["to_layer"].median
        record["ratio_vs_to_layer"] = record["to_layer_s"] / record["zf_attr_s"]
        record["images_per_s"] = settings.mining_images / record["zf_attr_s"]
    return record
