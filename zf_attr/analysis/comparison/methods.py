"""The methods a comparison runs: names, zf_attr and Captum attribution objects, callables and the two baselines.

Every method is turned into a :class:`MethodSpec`: a name, how to compute ``(N, ...)`` maps at the images'
resolution for a batch and its targets, and how to rebuild it on another copy of the model (for the
randomisation test).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["BASELINES", "KNOWN_METHODS", "MethodSpec", "centre_prior", "random_map", "resolve_methods"]

#: Method names understood as strings (attribute kwargs in a ``(name, kwargs)`` pair; ``"layer"`` picks the
#: layer of the Grad-CAM variants, by default the last spatial feature map).
KNOWN_METHODS: tuple[str, ...] = (
    "deconvnet",
    "guided_backprop",
    "gradient",
    "saliency",
    "integrated_gradients",
    "occlusion",
    "gradcam",
    "guided_gradcam",
    "centre",
    "random",
)
#: The two reference maps that need no model: a centred Gaussian and seeded uniform noise.
BASELINES: tuple[str, ...] = ("centre", "random")


def centre_prior(images: Tensor, sigma: float = 0.25) -> Tensor:
    """The centre-prior baseline: an isotropic Gaussian centred on the image, ``(N, H, W)``, peak 1.

    Args:
        images: ``(N, C, H, W)``; only the shape, dtype and device are used.
        sigma: the standard deviation as a fraction of the image side (``min(H, W)``).

    Example:
        >>> prior = centre_prior(torch.zeros(1, 3, 5, 5))
        >>> prior.shape, float(prior[0, 2, 2]), bool(prior[0, 0, 0] < prior[0, 1, 1] < 1)
        (torch.Size([1, 5, 5]), 1.0, True)
    """
    num, _, height, width = images.shape
    scale = sigma * min(height, width)
    ys = torch.arange(height, device=images.device, dtype=torch.float64) - (height - 1) / 2
    xs = torch.arange(width, device=images.device, dtype=torch.float64) - (width - 1) / 2
    prior = torch.exp(-(ys.reshape(-1, 1).square() + xs.reshape(1, -1).square()) / (2 * scale**2))
    return prior.to(images.dtype).expand(num, height, width).clone()


def random_map(images: Tensor, seed: int = 0) -> Tensor:
    """The random-map baseline: uniform noise in [0, 1), ``(N, H, W)``, the same for the same seed and shape.

    Example:
        >>> images = torch.zeros(2, 3, 4, 4)
        >>> torch.equal(random_map(images, seed=1), random_map(images, seed=1)), random_map(images).shape
        (True, torch.Size([2, 4, 4]))
    """
    num, _, height, width = images.shape
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(num, height, width, generator=generator, dtype=torch.float64).to(images.device, images.dtype)


@dataclass
class MethodSpec:
    """One column of a comparison.

    Attributes:
        name: the column title.
        method: the attribution object (anything with ``attribute``) or callable ``(images, targets) -> maps``.
        kwargs: extra keyword arguments of ``attribute``.
        kind: ``"attribution"``, ``"layer"`` (a Captum layer attribution, upsampled bilinearly to the image; a
            single-channel result becomes one signed ``(N, H, W)`` heat map),
            ``"callable"`` or ``"baseline"``.
        seed: the seed of the random baseline.

    Example:
        >>> spec = MethodSpec("centre", centre_prior, kind="baseline")
        >>> spec.maps(torch.zeros(2, 3, 8, 8), torch.tensor([0, 1])).shape
        torch.Size([2, 8, 8])
    """

    name: str
    method: Any
    kwargs: dict[str, Any] = field(default_factory=dict)
    kind: str = "attribution"
    seed: int = 0

    def maps(self, images: Tensor, targets: Tensor) -> Tensor:
        """Maps ``(N, H, W)`` or ``(N, C, H, W)`` at the images' resolution, detached, on the images' device.

        Raises:
            ValueError: the method returned something that is not a map of the images' batch and spatial size.
        """
        if self.kind == "baseline":
            maps = centre_prior(images) if self.method is centre_prior else self.method(images, self.seed)
        elif self.kind == "callable":
            maps = self.method(images, targets)
        else:
            maps = self.method.attribute(images, target=targets, **self.kwargs)
        if isinstance(maps, tuple) and len(maps) == 1:
            maps = maps[0]
        if not isinstance(maps, Tensor) or not maps.is_floating_point():
            got = f"dtype {maps.dtype}" if isinstance(maps, Tensor) else type(maps).__name__
            raise ValueError(f"method {self.name!r} returned {got}; it must return a floating-point tensor of maps")
        size = tuple(images.shape[-2:])
        if self.kind == "layer" and maps.dim() == 4 and tuple(maps.shape[-2:]) != size:
            from captum.attr import LayerAttribution

            maps = LayerAttribution.interpolate(maps, size, interpolate_mode="bilinear")
        if self.kind == "layer" and maps.dim() == 4 and maps.shape[1] == 1:
            maps = maps[:, 0]  # one heat map per image (Grad-CAM): its sign is meaningful, keep it
        if maps.dim() not in (3, 4) or maps.shape[0] != images.shape[0] or tuple(maps.shape[-2:]) != size:
            raise ValueError(
                f"method {self.name!r} returned maps of shape {tuple(maps.shape)} for images of shape "
                f"{tuple(images.shape)}: return (N, H, W) or (N, C, H, W) maps at the images' size (upsample layer "
                "maps, e.g. with captum.attr.LayerAttribution.interpolate)"
            )
        return maps.detach().to(images.device)

    def rebound(self, original: nn.Module, replacement: nn.Module) -> MethodSpec | None:
        """This method rebuilt on ``replacement`` (a copy of ``original``), or ``None`` when that is impossible.

        Impossible for a plain callable, and for an object whose ``forward_func`` is neither a module nor a
        module's bound method (a closure over the model would keep calling the original).

        The attribution object is deep-copied with every module, parameter and buffer of ``original`` mapped
        to its counterpart in ``replacement``, so layer references (Grad-CAM's layer) follow.
        """
        if self.kind == "baseline":
            return self
        if self.kind == "callable" or not _rebindable(getattr(self.method, "forward_func", original)):
            return None
        memo: dict[int, Any] = {}
        for old, new in zip(original.modules(), replacement.modules(), strict=True):
            memo[id(old)] = new
        for old, new in zip(original.parameters(), replacement.parameters(), strict=True):
            memo[id(old)] = new
        for old, new in zip(original.buffers(), replacement.buffers(), strict=True):
            memo[id(old)] = new
        return MethodSpec(self.name, copy.deepcopy(self.method, memo), self.kwargs, self.kind, self.seed)


def _rebindable(forward_func: Any) -> bool:
    return isinstance(forward_func, nn.Module) or isinstance(getattr(forward_func, "__self__", None), nn.Module)


def resolve_methods(
    model: nn.Module, images: Tensor, methods: Any, baselines: Sequence[str], seed: int
) -> list[MethodSpec]:
    """Turn the ``methods`` and ``baselines`` arguments of ``compare`` into specs, in column order.

    Example:
        >>> model = torch.nn.Sequential(torch.nn.Conv2d(3, 2, 3), torch.nn.ReLU(), torch.nn.Flatten())
        >>> [s.name for s in resolve_methods(model, torch.zeros(1, 3, 8, 8), ["deconvnet"], ["centre"], 0)]
        ['deconvnet', 'centre']
    """
    if isinstance(methods, str):
        methods = [methods]
    if isinstance(methods, Mapping):
        items = list(methods.items())
    elif isinstance(methods, Sequence):
        items = []
        for entry in methods:
            if not isinstance(entry, str):
                raise TypeError(
                    f"methods as a list must hold method names ({', '.join(KNOWN_METHODS)}); "
                    f"pass a dict name -> method for objects and callables, got {type(entry).__name__}"
                )
            items.append((entry, entry))
    else:
        raise TypeError(f"methods must be a dict name -> method or a list of names, got {type(methods).__name__}")
    if isinstance(baselines, str):
        baselines = [baselines]
    for name in baselines:
        if name not in BASELINES:
            raise ValueError(f"baselines holds {name!r}; the known baselines are {list(BASELINES)}")
    specs = [_spec(model, images, str(name), method, seed) for name, method in items]
    specs += [_spec(model, images, name, name, seed) for name in baselines if name not in dict(items)]
    if not specs:
        raise ValueError("methods and baselines are both empty: nothing to compare")
    return specs


def _spec(model: nn.Module, images: Tensor, name: str, method: Any, seed: int) -> MethodSpec:
    kwargs: dict[str, Any] = {}
    if isinstance(method, tuple):
        if len(method) != 2 or not isinstance(method[1], Mapping):
            raise TypeError(f"methods[{name!r}] is a tuple; it must be (method, {{attribute kwargs}})")
        method, kwargs = method[0], dict(method[1])
    if isinstance(method, str):
        return _named(model, images, name, method, kwargs, seed)
    if hasattr(method, "attribute") and callable(method.attribute):
        from captum.attr import LayerAttribution, LayerGradCam

        if isinstance(method, LayerGradCam):
            kwargs.setdefault("relu_attributions", True)  # Grad-CAM as defined (Selvaraju et al.): ReLU of the sum
        return MethodSpec(name, method, kwargs, "layer" if isinstance(method, LayerAttribution) else "attribution")
    if callable(method):
        if kwargs:
            raise TypeError(f"methods[{name!r}] is a plain callable: attribute kwargs cannot be passed to it")
        return MethodSpec(name, method, kind="callable")
    raise TypeError(
        f"methods[{name!r}] is a {type(method).__name__}; use a method name, a zf_attr or Captum attribution "
        "object, a callable (images, targets) -> maps, or a (method, kwargs) pair"
    )


def _named(model: nn.Module, images: Tensor, name: str, method: str, kwargs: dict[str, Any], seed: int) -> MethodSpec:
    import captum.attr as ca

    import zf_attr
    from zf_attr.attr._layers import default_feature_layer, resolve_layer

    if method not in KNOWN_METHODS:
        raise ValueError(f"method {method!r} is not known; choose one of {list(KNOWN_METHODS)} or pass an object")
    if method in BASELINES:
        return MethodSpec(name, centre_prior if method == "centre" else random_map, kind="baseline", seed=seed)
    if method in ("gradcam", "guided_gradcam"):
        layer = kwargs.pop("layer", None)
        if layer is None:
            with torch.no_grad():
                layer = default_feature_layer(model, (images[:1],))
        _, module = resolve_layer(model, layer)
        if method == "gradcam":
            kwargs.setdefault("relu_attributions", True)
            return MethodSpec(name, ca.LayerGradCam(model, module), kwargs, "layer")
        return MethodSpec(name, ca.GuidedGradCam(model, module), kwargs)
    if method == "occlusion":
        window = max(4, min(images.shape[-2:]) // 8)
        kwargs.setdefault("sliding_window_shapes", (images.shape[1], window, window))
        kwargs.setdefault("strides", (images.shape[1], max(1, window // 2), max(1, window // 2)))
        return MethodSpec(name, zf_attr.OcclusionSensitivity(model), kwargs)
    if method == "gradient":
        kwargs.setdefault("abs", False)
    built = {
        "deconvnet": lambda: zf_attr.Deconvnet(model),
        "guided_backprop": lambda: zf_attr.GuidedBackprop(model),
        "gradient": lambda: ca.Saliency(model),
        "saliency": lambda: ca.Saliency(model),
        "integrated_gradients": lambda: ca.IntegratedGradients(model),
    }[method]()
    return MethodSpec(name, built, kwargs)
