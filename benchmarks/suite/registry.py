"""Which cases a run has: every kind on every model in full mode, a smoke test of each kind in quick mode.

Case names are ``kind/model[/variant]``, e.g. ``deconvnet/resnet18``, ``occlusion/vgg16/incremental``,
``deconvnet/convnext_tiny/bf16``; ``--only`` selects by substring. Cases are ordered by model, so that a run
holds one model at a time.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch

from benchmarks.suite.context import Context
from benchmarks.suite.gradient import deconvnet_case, gradcam_case, neuron_case
from benchmarks.suite.mining import mining_case
from benchmarks.suite.models import OCCLUSION_ONLY
from benchmarks.suite.occlusion import occlusion_case
from benchmarks.suite.projection import projection_case

__all__ = ["ORDER", "Case", "cases", "select"]

#: The models, in the order a run visits them (the six of every kind first, cheapest first).
ORDER = ("zfnet", "resnet18", "efficientnet_b0", "googlenet", "convnext_tiny", "vgg16", *OCCLUSION_ONLY)

#: Occlusion settings: case suffix → keyword arguments of :func:`~benchmarks.suite.occlusion.occlusion_case`.
OCCLUSION: dict[str, dict[str, Any]] = {
    "incremental": {"engine": "incremental"},
    "batched": {"engine": "batched"},
    "auto": {"engine": "auto"},
    "drill-down": {"engine": "incremental", "drill_down": True},
    "incremental-channels_last": {"engine": "incremental", "variant": "channels_last"},
    "incremental-bf16": {"engine": "incremental", "variant": "bf16"},
}


@dataclass(frozen=True)
class Case:
    """One case: its name, its model and what runs it (a context → the case's record)."""

    name: str
    model: str
    run: Callable[[Context], dict[str, Any]]


def _plan(quick: bool, cuda: bool) -> dict[str, list[str]]:
    """Model → the case names (without the model) a run has."""
    exact = ["incremental", "batched", "auto", "drill-down"]
    plan: dict[str, list[str]] = {}
    for model in ORDER:
        if model in OCCLUSION_ONLY:
            plan[model] = ["occlusion/incremental"] if quick else ["occlusion/incremental", "occlusion/batched"]
            continue
        names = ["deconvnet", "gradcam", "neuron"]
        if not quick or model in ("zfnet", "resnet18"):
            names += ["projection", "mining", *(f"occlusion/{suffix}" for suffix in exact)]
        else:
            names += ["occlusion/incremental", "occlusion/batched"]
        variants = cuda or (not quick and model == "resnet18")  # on the CPU only where cheap
        if variants and model in ("resnet18", "efficientnet_b0", "convnext_tiny"):
            names += ["deconvnet/channels_last", "deconvnet/bf16"]
        if variants and model in (("resnet18",) if quick else ("resnet18", "vgg16", "convnext_tiny")):
            names += ["occlusion/incremental-channels_last", "occlusion/incremental-bf16"]
        plan[model] = names
    return plan


def _runner(model: str, name: str) -> Callable[[Context, str], dict[str, Any]]:
    kind, _, variant = name.partition("/")
    if kind == "deconvnet":
        return partial(_call, deconvnet_case, model, variant=variant or None)
    if kind == "occlusion":
        return partial(_call, occlusion_case, model, **OCCLUSION[variant])
    simple = {"gradcam": gradcam_case, "neuron": neuron_case, "projection": projection_case, "mining": mining_case}
    return partial(_call, simple[kind], model)


def _call(function: Callable[..., dict[str, Any]], model: str, ctx: Context, case: str, **kwargs: Any) -> dict:
    return function(ctx, case, model, **kwargs)


def cases(quick: bool, device: torch.device) -> list[Case]:
    """Every case of a quick or full run on ``device``, ordered by model."""
    result = []
    for model, names in _plan(quick, device.type == "cuda").items():
        for name in names:
            kind, _, variant = name.partition("/")
            case = "/".join(filter(None, [kind, model, variant]))
            runner = _runner(model, name)
            result.append(Case(case, model, lambda ctx, runner=runner, case=case: runner(ctx, case)))
    return result


def select(available: Sequence[Case], only: Sequence[str] | None) -> list[Case]:
    """The cases whose name contains any of ``only`` (all of them when ``only`` is empty)."""
    if not only:
        return list(available)
    return [case for case in available if any(part in case.name for part in only)]
