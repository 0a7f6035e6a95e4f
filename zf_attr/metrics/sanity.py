"""Sanity checks: model-parameter randomisation (Adebayo et al. 2018) and class sensitivity (Nie et al. 2018)."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from zf_attr._captum_compat import validate_model
from zf_attr._guard import fresh
from zf_attr._lifecycle import Attachment
from zf_attr.metrics._common import saliency, spearman, ssim

__all__ = ["RandomizationResult", "class_sensitivity", "randomization_test"]

AttributionFn = Callable[[nn.Module, Tensor, Any], Tensor]
_SIMILARITIES = ("spearman", "ssim")


@dataclass(frozen=True)
class RandomizationResult:
    """The outcome of :func:`randomization_test`; row ``i`` is after randomising ``layers[: i + 1]`` (cascading).

    Attributes:
        layers: the module names in the order they were randomised (output first).
        spearman: ``(L, N)`` float64, Spearman correlation of each image's ``|map|`` with its original.
        ssim: ``(L, N)`` float64 SSIM of the min-max normalised ``|map|`` with its original, or ``None``.
    """

    layers: list[str]
    spearman: Tensor | None
    ssim: Tensor | None

    def mean(self, similarity: str = "spearman") -> Tensor:
        """``(L,)`` similarity per layer, averaged over the images (NaNs from constant maps ignored)."""
        values = getattr(self, similarity)
        if values is None:
            raise ValueError(f"{similarity} was not computed; pass similarity=(..., {similarity!r})")
        return values.nanmean(1)


def randomization_test(
    model: nn.Module,
    attribution_fn: AttributionFn,
    images: Tensor,
    target: Any,
    *,
    layers: Sequence[str] | None = None,
    cascading: bool = True,
    seed: int = 0,
    similarity: Sequence[str] = ("spearman", "ssim"),
) -> RandomizationResult:
    """Adebayo et al.'s model-parameter randomisation test: do the maps change when the weights are destroyed?

    The model is deep-copied; the original maps are ``attribution_fn(copy, images, target)``; then the layers are
    re-initialised one after another, from the output back to the input, each time recomputing the maps and
    comparing them with the originals. A method that explains the model should lose its similarity quickly;
    one that recovers the image (an edge detector) keeps it. Maps are compared as ``|map|`` (summed over channels
    for ``(N, C, H, W)`` maps): Spearman rank correlation, and SSIM of the min-max normalised maps.

    Re-initialisation uses each module's own ``reset_parameters()`` (PyTorch's default initialisation; for
    BatchNorm that is weight 1, bias 0 and fresh running statistics) with the global generator temporarily
    seeded by a hash of ``seed`` and the layer's position (the caller's random state is restored afterwards);
    modules without it get every own parameter drawn from ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))``. The user's
    model is never modified (checked bitwise on return).

    Args:
        model: the network; only copies of it are used.
        attribution_fn: ``(model, images, target) -> maps`` of shape ``(N, H, W)`` or ``(N, C, H, W)``, e.g.
            ``lambda m, x, t: zf_attr.Deconvnet(m).attribute(x, target=t)``.
        images: the inputs passed to ``attribution_fn``.
        target: passed to ``attribution_fn`` as is.
        layers: module names (as in ``model.named_modules()``) in the order to randomise them. Default: every
            module with parameters of its own, in the reverse of the order of their first call in a forward pass
            of ``images`` (output first); modules never called are left out.
        cascading: ``True`` (default): randomisation accumulates, layer after layer. ``False``: each layer is
            randomised alone in a fresh copy (the "independent" variant).
        seed: the seed of the re-initialisation.
        similarity: any of ``"spearman"`` and ``"ssim"``.

    Returns:
        A :class:`RandomizationResult`; ``result.mean()`` is the mean Spearman correlation per layer.

    Raises:
        TypeError: ``model`` not an ``nn.Module``, ``attribution_fn`` not callable, maps not float tensors.
        ValueError: unknown layer names or similarities, layers without parameters, maps changing shape.
        RuntimeError: the user's model changed after all (``attribution_fn`` reached it some other way).

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from zf_attr.metrics import randomization_test
        >>> model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 8 * 8, 5))
        >>> def gradient(m, x, t):
        ...     x = x.clone().requires_grad_()
        ...     m(x)[:, t].sum().backward()
        ...     return x.grad
        >>> result = randomization_test(model, gradient, torch.randn(2, 3, 8, 8), 0)
        >>> result.layers, result.mean().shape
        (['3', '0'], torch.Size([2]))
    """
    validate_model(model)
    if not callable(attribution_fn):
        raise TypeError(f"attribution_fn must be callable (model, images, target) -> maps, got {attribution_fn!r}")
    similarity = (similarity,) if isinstance(similarity, str) else tuple(similarity)
    unknown = [name for name in similarity if name not in _SIMILARITIES]
    if unknown or not similarity:
        raise ValueError(f"similarity must name one or more of {_SIMILARITIES}, got {similarity!r}")
    before = {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}
    modules = dict(model.named_modules())
    if layers is None:
        layers = _layers_by_call_order(copy.deepcopy(model), images)
    else:
        if isinstance(layers, str):
            layers = [layers]
        for name in layers:
            if name not in modules:
                raise ValueError(f"layers names {name!r}, which is not a module of the model (see named_modules())")
            if not list(modules[name].parameters(recurse=False)):
                raise ValueError(f"layers names {name!r}, a module without parameters of its own")
        layers = list(layers)
    if not layers:
        raise ValueError("layers is empty: the model has no parameterised module to randomise")

    original = _maps(attribution_fn, copy.deepcopy(model), images, target)
    rows: dict[str, list[Tensor]] = {name: [] for name in similarity}
    randomised = copy.deepcopy(model)
    for position, name in enumerate(layers):
        if not cascading:
            randomised = copy.deepcopy(model)
        _reinitialise(dict(randomised.named_modules())[name], _layer_seed(seed, position))
        maps = _maps(attribution_fn, randomised, images, target)
        if maps.shape != original.shape:
            raise ValueError(
                f"attribution_fn returned maps of shape {tuple(maps.shape)} after randomising {name!r}, "
                f"but {tuple(original.shape)} for the original model"
            )
        if "spearman" in rows:
            rows["spearman"].append(spearman(maps, original))
        if "ssim" in rows:
            rows["ssim"].append(ssim(maps, original))

    after = model.state_dict()
    if after.keys() != before.keys() or any(not torch.equal(after[key], value) for key, value in before.items()):
        raise RuntimeError(
            "the model's parameters or buffers changed during randomization_test: attribution_fn "
            "must use the model it is given, not the original"
        )
    stacked = {name: torch.stack(values) for name, values in rows.items()}
    return RandomizationResult(layers=list(layers), spearman=stacked.get("spearman"), ssim=stacked.get("ssim"))


def class_sensitivity(
    attribution_fn: Callable[[Tensor, Any], Tensor], images: Tensor, target: Any, other_target: Any
) -> Tensor:
    """Spearman correlation per example between the maps for ``target`` and for ``other_target``.

    Nie et al. (2018) observed that deconvnet and guided-backprop maps barely change with the explained class:
    a correlation near 1 between the maps of the predicted and, say, the least likely class says the map shows
    the image more than the decision. Maps are compared as ``|map|`` (summed over channels for 4-D maps).

    Args:
        attribution_fn: ``(images, target) -> maps``, e.g. ``zf_attr.Deconvnet(model).attribute`` with the
            target as second positional argument (Captum's ``attribute(inputs, target)`` fits as is).
        images: the inputs.
        target: the class(es) explained first (any form ``attribution_fn`` accepts).
        other_target: the class(es) to compare with, e.g. ``model(images).argmin(1)``.

    Returns:
        ``(N,)`` float64 correlations in [-1, 1] (NaN for constant maps).

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from zf_attr.metrics import class_sensitivity
        >>> images = torch.randn(2, 3, 8, 8)
        >>> class_sensitivity(lambda x, t: x.abs(), images, 0, 1)        # ignores the class
        tensor([1., 1.], dtype=torch.float64)
    """
    if not callable(attribution_fn):
        raise TypeError(f"attribution_fn must be callable (images, target) -> maps, got {attribution_fn!r}")
    first = saliency(attribution_fn(images, target), "attribution_fn(images, target)")
    second = saliency(attribution_fn(images, other_target), "attribution_fn(images, other_target)")
    if first.shape != second.shape:
        raise ValueError(f"maps for target and other_target have shapes {tuple(first.shape)} and {tuple(second.shape)}")
    return spearman(first.abs(), second.abs())


def _maps(attribution_fn: AttributionFn, model: nn.Module, images: Tensor, target: Any) -> Tensor:
    return saliency(attribution_fn(model, images, target), "attribution_fn(model, images, target)").detach().abs()


def _layers_by_call_order(model: nn.Module, images: Tensor) -> list[str]:
    """Modules with own parameters, in the reverse order of their first call in a forward pass."""
    names = {module: name for name, module in model.named_modules() if list(module.parameters(recurse=False))}
    called: list[str] = []

    def record(module: nn.Module, args: Any) -> None:
        if module in names and names[module] not in called:
            called.append(names[module])

    with Attachment() as hooks, torch.no_grad():
        for module in names:
            hooks.hook(module.register_forward_pre_hook, record)
        model(*fresh((images,)))
    return called[::-1]


def _layer_seed(seed: int, position: int) -> int:
    """A seed for one layer, hashed from ``(seed, position)``.

    Never ``seed`` itself: re-initialising under the seed the model was built with would reproduce its weights.
    """
    return int(np.random.SeedSequence([seed, position]).generate_state(1, dtype=np.uint64)[0] >> 1)


def _reinitialise(module: nn.Module, seed: int) -> None:
    devices = sorted({p.device.index or 0 for p in module.parameters(recurse=False) if p.device.type == "cuda"})
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        if hasattr(module, "reset_parameters"):
            module.reset_parameters()
            return
        with torch.no_grad():
            for parameter in module.parameters(recurse=False):
                fan_in = parameter[0].numel() if parameter.dim() >= 2 else parameter.numel()
                bound = 1 / math.sqrt(max(fan_in, 1))
                parameter.uniform_(-bound, bound)
