"""The attribution methods of ``zf-attr explain``, each run on a batch of images with one target per image.

The gradient-style methods (deconvnet, strict, guided, gradient, Grad-CAM) take a whole batch per pass;
occlusion runs image by image (each image's windows are batched under a memory budget by
:class:`zf_attr.OcclusionSensitivity`), so that its per-image record (windows evaluated, reported error) is known.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from zf_attr._lifecycle import Attachment
from zf_attr.cli._common import CommandError
from zf_attr.cli._models import LoadedModel

__all__ = [
    "GRADIENT_METHODS",
    "METHODS",
    "OcclusionRunner",
    "Runner",
    "build_runners",
    "default_batch_size",
    "occlusion_method",
]

#: Methods of ``zf-attr explain --method``.
METHODS = ("deconvnet", "strict", "guided", "gradient", "gradcam", "occlusion")
#: The methods that run a batch of images per backward pass.
GRADIENT_METHODS = ("deconvnet", "strict", "guided", "gradient", "gradcam")

#: ``(inputs (N, 3, H, W), one target per image) -> maps (N, C, H, W)``.
Runner = Callable[[Tensor, list[int]], Tensor]


def build_runners(
    loaded: LoadedModel,
    names: Sequence[str],
    layer: str | None,
    window: int | None,
    stride: int | None,
    occlusion: Any,
) -> dict[str, Runner]:
    """One runner per method name, built once for the whole run."""
    import zf_attr

    model = loaded.model
    side = window or max(4, loaded.size // 8)
    step = stride or max(1, side // 2)
    if side > loaded.size or step < 1:
        raise CommandError(f"--window {side} / --stride {step} do not fit a {loaded.size}-pixel image")
    builders: dict[str, Callable[[], Runner]] = {
        "deconvnet": lambda: _captum_style(zf_attr.Deconvnet(model)),
        "strict": lambda: _captum_style(zf_attr.Deconvnet(model, variant="strict")),
        "guided": lambda: _captum_style(zf_attr.GuidedBackprop(model)),
        "gradient": lambda: lambda x, t: _gradient(model, x, t),
        "gradcam": lambda: _gradcam(loaded, layer),
        "occlusion": lambda: OcclusionRunner(occlusion, side, step),
    }
    return {name: builders[name]() for name in names}


def _captum_style(method: Any) -> Runner:
    return lambda images, targets: method.attribute(images, target=list(targets))


def _gradient(model: nn.Module, images: Tensor, targets: list[int]) -> Tensor:
    leaf = images.detach().requires_grad_(True)
    index = torch.tensor(targets, device=images.device)[:, None]
    with torch.enable_grad():
        (gradient,) = torch.autograd.grad(model(leaf).gather(1, index).sum(), leaf)
    return gradient


def _gradcam(loaded: LoadedModel, layer: str | None) -> Runner:
    from captum.attr import LayerAttribution, LayerGradCam

    from zf_attr.attr._layers import default_feature_layer, resolve_layer

    model = loaded.model
    if layer is None:
        probe = torch.zeros(1, 3, loaded.size, loaded.size, device=loaded.device)
        layer = default_feature_layer(model, (probe,))
    try:
        _, module = resolve_layer(model, layer)
    except ValueError as error:
        raise CommandError(f"--layer: {error}") from error
    gradcam = LayerGradCam(model, module)

    def run(images: Tensor, targets: list[int]) -> Tensor:
        maps = gradcam.attribute(images, target=list(targets), relu_attributions=True)
        return LayerAttribution.interpolate(maps, tuple(images.shape[-2:]), interpolate_mode="bilinear")

    return run


class OcclusionRunner:
    """Occlusion image by image; :attr:`records` holds, per image of the last call, its windows and error."""

    def __init__(self, occlusion: Any, side: int, step: int) -> None:
        self.occlusion, self.side, self.step = occlusion, side, step
        self.records: list[dict[str, Any]] = []

    def __call__(self, images: Tensor, targets: list[int]) -> Tensor:
        """Maps ``(N, 3, H, W)`` of ``images`` for ``targets``."""
        maps, self.records = [], []
        window, strides = (3, self.side, self.side), (3, self.step, self.step)
        for image, target in zip(images, targets, strict=True):
            maps.append(self.occlusion.attribute(image[None], window, strides=strides, target=target)[0])
            record: dict[str, Any] = {"occlusion_windows_evaluated": self.occlusion.last_windows_evaluated}
            if self.occlusion.last_approximation_error is not None:
                record["occlusion_reported_error"] = round(self.occlusion.last_approximation_error, 6)
            self.records.append(record)
        return torch.stack(maps)


def occlusion_method(loaded: LoadedModel, drill_down: Sequence[float] | None, used: bool) -> Any:
    """The occlusion method of a run: exact, or a ``DrillDown`` from ``--drill-down STEP REFINE``."""
    import zf_attr

    if drill_down is None:
        return zf_attr.OcclusionSensitivity(loaded.model)
    if not used:
        raise CommandError("--drill-down applies to --method occlusion, which is not chosen")
    step, refine = drill_down
    if step != int(step):
        raise CommandError(f"--drill-down STEP must be a whole number, got {step:g}")
    try:
        setting = zf_attr.DrillDown(int(step), refine)
    except ValueError as error:
        raise CommandError(f"--drill-down: {error}") from error
    return zf_attr.OcclusionSensitivity(loaded.model, approximate=setting)


def default_batch_size(loaded: LoadedModel, methods: Sequence[str]) -> int:
    """Images per pass: what half the free GPU memory (on the CPU, 1 GiB) holds, from one image's activations.

    The activations of one forward pass are measured with forward hooks; a backward pass needs about three
    times that. Occlusion alone runs image by image (1). Between 1 and 64.
    """
    if not set(methods) & set(GRADIENT_METHODS):
        return 1
    total = 0

    def count(module: nn.Module, inputs: Any, output: Any) -> None:
        nonlocal total
        if isinstance(output, Tensor):
            total += output.numel() * output.element_size()

    with Attachment() as hooks, torch.no_grad():
        for module in loaded.model.modules():
            hooks.hook(module.register_forward_hook, count)
        loaded.model(torch.zeros(1, 3, loaded.size, loaded.size, device=loaded.device))
    if loaded.device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(loaded.device)
        budget = free // 2
    else:
        budget = 1 << 30
    return int(max(1, min(64, budget // max(3 * total, 1))))
