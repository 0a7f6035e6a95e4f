"""Feature vectors of chosen layers in one forward pass, read as the paper reads them (shared by the studies).

A layer's map is read after the rectifier its output goes straight into (see :mod:`zf_attr.attr._rectified`),
flattened to one vector per image. :func:`default_layers` picks the paper's "layer 1" and "layer 7" for any
classifier: the first convolution and the penultimate layer.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from zf_attr._guard import fresh
from zf_attr._lifecycle import Attachment
from zf_attr.attr._layers import resolve_layer
from zf_attr.attr._rectified import LayerMap, layer_map

__all__ = ["FeatureReader", "check_images", "default_layers"]


def check_images(images: Any, name: str = "images") -> Tensor:
    """``images`` as a detached floating-point batch ``(N, C, H, W)`` (one ``(C, H, W)`` image gains a batch axis).

    Raises:
        TypeError, ValueError: not a floating-point tensor of images; the message names ``name``.
    """
    if not isinstance(images, Tensor) or not images.is_floating_point():
        kind = f"a {images.dtype} tensor" if isinstance(images, Tensor) else type(images).__name__
        raise TypeError(f"{name} must be a floating-point tensor of images (N, C, H, W), got {kind}")
    if images.dim() == 3:
        images = images[None]
    if images.dim() != 4 or not len(images) or min(images.shape[-2:]) < 2:
        raise ValueError(f"{name} has shape {tuple(images.shape)}; pass images (N, C, H, W) or one image (C, H, W)")
    return images.detach()


def default_layers(model: nn.Module, example: Tensor) -> list[str]:
    """The paper's layer 1 and layer 7: the first ``Conv2d`` and the penultimate layer.

    The penultimate layer is the second-to-last ``Linear`` layer (ZFNet's ``fc7``, read after its ReLU) when the
    model has two or more, else the module called right before the last ``Linear`` (a ResNet's ``avgpool``).

    Example:
        >>> from zf_attr.models import zfnet
        >>> default_layers(zfnet(weights="DEFAULT").eval(), torch.zeros(1, 3, 112, 112))
        ['conv1', 'fc7']
    """
    names = {module: name for name, module in model.named_modules() if name and not list(module.children())}
    calls: list[tuple[str, nn.Module]] = []
    with Attachment() as hooks, torch.no_grad():  # this thread's calls only; removed whatever happens
        for module in names:
            hooks.hook(module.register_forward_hook, lambda m, a, o: calls.append((names[m], m)))
        model(*fresh((example,)))
    convs = [name for name, module in calls if isinstance(module, nn.Conv2d)]
    linears = [index for index, (_, module) in enumerate(calls) if isinstance(module, nn.Linear)]
    if not convs or not linears:
        raise ValueError("layers=None needs a model with a Conv2d and a Linear layer; pass layers= explicitly")
    penultimate = calls[linears[-2]][0] if len(linears) >= 2 else calls[max(linears[-1] - 1, 0)][0]
    return [convs[0], penultimate]


class FeatureReader:
    """Runs the model once per batch and returns the logits and every chosen layer's feature vectors.

    Args:
        model: the classifier (left as found: no mode change, hooks removed after every call).
        layers: layer names (or submodules); ``None``: :func:`default_layers`.
        example: one batch, to resolve the default layers and each layer's rectifier.
        rectified: read maps after the rectifier that follows the layer, if any (the paper's maps).
        argument: the argument name that ``layers`` came from, for error messages.

    Example:
        >>> net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8, 3))
        >>> reader = FeatureReader(net, ["0"], torch.zeros(1, 1, 4, 4))
        >>> logits, features = reader(torch.randn(5, 1, 4, 4))
        >>> logits.shape, features["0"].shape, reader.maps["0"].rectifier
        (torch.Size([5, 3]), torch.Size([5, 8]), 'relu')
    """

    def __init__(
        self,
        model: nn.Module,
        layers: Sequence[str | nn.Module] | None,
        example: Tensor,
        *,
        rectified: bool = True,
        argument: str = "layers",
    ) -> None:
        if layers is None:
            layers = default_layers(model, example[:1])
        if isinstance(layers, (str, nn.Module)):
            layers = [layers]
        if not layers:
            raise ValueError(f"{argument} is empty; name at least one layer (or pass None for the defaults)")
        self.model = model
        self.modules: dict[str, nn.Module] = {}
        for layer in layers:
            try:
                name, module = resolve_layer(model, layer)
            except (TypeError, ValueError) as error:
                raise type(error)(f"{argument}: {error}") from None
            self.modules[name] = module
        self.maps: dict[str, LayerMap] = {
            name: layer_map(model, name, module, (example[:1],), rectified=rectified)
            for name, module in self.modules.items()
        }

    @property
    def layers(self) -> list[str]:
        """The layer names, in the order given."""
        return list(self.modules)

    def __call__(self, images: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """``(logits, {layer: (N, D) feature vectors})`` for a batch, without gradients."""
        captured: dict[str, Tensor] = {}

        def keep(name: str, output: Any) -> None:
            if not isinstance(output, Tensor):
                raise TypeError(f"layer {name!r} returns a {type(output).__name__}; choose a layer returning a tensor")
            captured[name] = self.maps[name](output.detach()).flatten(1).clone()

        with Attachment() as hooks, torch.no_grad():
            for name, module in self.modules.items():
                hooks.hook(module.register_forward_hook, lambda m, a, o, name=name: keep(name, o))
            logits = self.model(*fresh((images,)))
        if not isinstance(logits, Tensor) or logits.dim() != 2:
            raise ValueError("model must return logits (N, classes); call model.eval() for auxiliary outputs")
        missing = [name for name in self.modules if name not in captured]
        if missing:
            raise ValueError(f"layers {missing} were not called during the forward pass")
        return logits, captured
