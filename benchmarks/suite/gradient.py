"""Gradient-type cases: ``Deconvnet`` against Captum ``Deconvolution`` (float32, channels_last, bf16), the neuron
projection against ``NeuronDeconvolution``, and Captum ``LayerGradCam`` as the cheap reference.

Captum runs on the model's twin (GoogLeNet: ``nn.ReLU`` modules for its functional ``F.relu``), where it computes
the deconvnet; on the original GoogLeNet it returns the plain gradient. The Grad-CAM case times zf_attr's
``Deconvnet`` against ``LayerGradCam`` (the cheapest common attribution: one backward pass to a late layer); its
check is on the reference itself, against a Grad-CAM written out here with ``torch.autograd``.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from captum.attr import Deconvolution, LayerGradCam, NeuronDeconvolution
from torch import Tensor, nn

import zf_attr
from benchmarks.suite.context import Context
from benchmarks.suite.models import MODELS
from zf_attr.benchmarking import case_record, check_then_time, relative_error

__all__ = ["deconvnet_case", "gradcam_case", "handwritten_gradcam", "neuron_case"]


def _variant(model: nn.Module, images: Tensor, variant: str | None) -> tuple[nn.Module, Tensor]:
    """A copy of ``model`` and ``images`` in channels_last or bfloat16 (``None``: the originals)."""
    if variant is None:
        return model, images
    if variant == "channels_last":
        return copy.deepcopy(model).to(memory_format=torch.channels_last), images.contiguous(
            memory_format=torch.channels_last
        )
    if variant == "bf16":
        return copy.deepcopy(model).to(torch.bfloat16), images.to(torch.bfloat16)
    raise ValueError(f"unknown variant {variant!r}")


def deconvnet_case(ctx: Context, case: str, name: str, variant: str | None = None) -> dict[str, Any]:
    """``zf_attr.Deconvnet`` against ``captum.attr.Deconvolution`` on the same model, inputs and targets."""
    settings = ctx.settings
    images, targets = ctx.inputs(name, settings.batch)
    model, twin = ctx.model(name), ctx.twin(name)
    ours_model, x = _variant(model, images, variant)
    theirs_model = ours_model if twin is model else _variant(twin, images, variant)[0]
    ours, theirs = zf_attr.Deconvnet(ours_model), Deconvolution(theirs_model)
    calls = {
        "zf_attr": ctx.ours(case, lambda: ours.attribute(x, target=targets)),
        "reference": lambda: theirs.attribute(x, target=targets),
    }
    tolerance = settings.tolerance if variant != "bf16" else 1e-2
    checked = check_then_time(
        calls, lambda out: relative_error(out["zf_attr"], out["reference"]), tolerance,
        warmup=settings.warmup, repeats=settings.repeats, device=ctx.device,
    )  # fmt: skip
    extra: dict[str, Any] = {"kind": "deconvnet", "variant": variant or "float32"}
    if twin is not model:
        extra["reference_note"] = "Captum on the nn.ReLU twin (on the original model it returns the gradient)"
        extra["captum_on_original_relative_error"] = relative_error(
            checked.outputs["zf_attr"], Deconvolution(model).attribute(images, target=targets)
        )
    if variant is not None:
        float32 = zf_attr.Deconvnet(model).attribute(images, target=targets)
        extra["error_vs_float32"] = relative_error(checked.outputs["zf_attr"].float(), float32)
    return case_record(case, name, x.shape, checked, "captum.attr.Deconvolution", **extra)


def _neuron(ctx: Context, name: str) -> tuple[int, int, int]:
    """The probe layer's strongest neuron ``(channel, row, col)`` on the first image."""
    images, _ = ctx.inputs(name, ctx.settings.batch)
    captured: list[Tensor] = []
    handle = (
        ctx.model(name)
        .get_submodule(MODELS[name].layer)
        .register_forward_hook(lambda module, args, output: captured.append(output.detach()))
    )
    try:
        with torch.no_grad():
            ctx.model(name)(images[:1])
    finally:
        handle.remove()
    flat = int(captured[0][0].argmax())
    _, height, width = captured[0].shape[1:]
    return flat // (height * width), flat // width % height, flat % width


def neuron_case(ctx: Context, case: str, name: str) -> dict[str, Any]:
    """``zf_attr.NeuronDeconvnet`` against ``captum.attr.NeuronDeconvolution``: one neuron of the probe layer."""
    settings = ctx.settings
    images, _ = ctx.inputs(name, settings.batch)
    layer, neuron = MODELS[name].layer, _neuron(ctx, name)
    twin = ctx.twin(name)
    ours = zf_attr.NeuronDeconvnet(ctx.model(name), layer)
    theirs = NeuronDeconvolution(twin, twin.get_submodule(layer))
    calls = {
        "zf_attr": ctx.ours(case, lambda: ours.attribute(images, neuron_selector=neuron)),
        "reference": lambda: theirs.attribute(images, neuron_selector=neuron),
    }
    checked = check_then_time(
        calls, lambda out: relative_error(out["zf_attr"], out["reference"]), settings.tolerance,
        warmup=settings.warmup, repeats=settings.repeats, device=ctx.device,
    )  # fmt: skip
    return case_record(
        case, name, images.shape, checked, "captum.attr.NeuronDeconvolution", kind="neuron", layer=layer,
        neuron=list(neuron),
    )  # fmt: skip


def handwritten_gradcam(model: nn.Module, layer: nn.Module, images: Tensor, targets: Tensor) -> Tensor:
    """Grad-CAM without Captum: the layer's maps weighted by their spatially averaged gradients, summed."""
    captured: list[Tensor] = []
    handle = layer.register_forward_hook(lambda module, args, output: captured.append(output))
    try:
        with torch.enable_grad():
            scores = model(images.detach().requires_grad_())
            picked = scores[torch.arange(len(images), device=scores.device), targets]
            (gradient,) = torch.autograd.grad(picked.sum(), captured[0])
    finally:
        handle.remove()
    return (gradient.mean(dim=(2, 3), keepdim=True) * captured[0]).sum(dim=1, keepdim=True).detach()


def gradcam_case(ctx: Context, case: str, name: str) -> dict[str, Any]:
    """zf_attr's ``Deconvnet`` timed against Captum's ``LayerGradCam`` (the cheap reference), which is checked."""
    settings = ctx.settings
    images, targets = ctx.inputs(name, settings.batch)
    model = ctx.model(name)
    layer = model.get_submodule(MODELS[name].gradcam_layer)
    expected = handwritten_gradcam(model, layer, images, targets)
    ours, theirs = zf_attr.Deconvnet(model), LayerGradCam(model, layer)
    calls = {
        "zf_attr": lambda: ours.attribute(images, target=targets),
        "reference": ctx.ours(case, lambda: theirs.attribute(images, target=targets)),
    }
    checked = check_then_time(
        calls, lambda out: relative_error(out["reference"], expected), settings.tolerance,
        warmup=settings.warmup, repeats=settings.repeats, device=ctx.device,
    )  # fmt: skip
    return case_record(
        case, name, images.shape, checked, "captum.attr.LayerGradCam", kind="gradcam",
        layer=MODELS[name].gradcam_layer,
        check="Captum's LayerGradCam against a hand-written Grad-CAM (zf_attr's Deconvnet is timed, not compared)",
    )  # fmt: skip
