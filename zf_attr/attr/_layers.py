"""Layers addressed by name, and their outputs captured during a forward pass (hooks always removed)."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from zf_attr._guard import fresh
from zf_attr._lifecycle import Attachment

__all__ = [
    "NotAChainError",
    "capture_layer_output",
    "check_channels",
    "children_chain",
    "default_feature_layer",
    "resolve_layer",
]


def resolve_layer(model: nn.Module, layer: str | nn.Module) -> tuple[str, nn.Module]:
    """Return ``(name, module)`` for a layer given by its dotted name (``"layer3"``, ``"features.28"``) or itself.

    Raises:
        ValueError: no such layer; the message suggests the closest valid names.
        TypeError: ``layer`` is neither a string nor a submodule of ``model``.
    """
    names = {module: name for name, module in model.named_modules()}
    if isinstance(layer, nn.Module):
        if layer not in names:
            raise ValueError("layer is a module that is not part of model; pass one of its submodules or a name")
        return names[layer] or "<model>", layer
    if not isinstance(layer, str):
        raise TypeError(f"layer must be a layer name or a submodule, got {type(layer).__name__}")
    valid = [name for name in names.values() if name]
    if layer not in valid:
        close = difflib.get_close_matches(layer, valid, n=5, cutoff=0.5)
        hint = f"did you mean {close}?" if close else f"valid names include {valid[:8]} ... ({len(valid)} in all)"
        raise ValueError(f"layer={layer!r} is not a layer of the model; {hint}")
    return layer, model.get_submodule(layer)


class _StopForward(Exception):  # noqa: N818 (control flow, not an error)
    """Raised by a capture hook to end a forward pass once the layer of interest has run."""


def capture_layer_output(
    model: Callable[..., Any],
    layer: nn.Module,
    inputs: tuple[Any, ...],
    *,
    stop: bool = False,
    transform: Callable[[Tensor], Any] | None = None,
    layer_input: bool = False,
) -> tuple[Any, Any]:
    """Run ``model(*inputs)`` and return ``(layer output, model output)``.

    Args:
        model: the network.
        layer: the submodule whose output is wanted (its last call if it runs several times).
        inputs: positional arguments of the forward pass.
        stop: end the forward pass right after ``layer`` (the model output is then ``None``).
        transform: applied to the layer output inside the hook, before any later in-place operation (e.g. an
            in-place ReLU after a conv layer) can change it; its result is returned instead of the output.
        layer_input: capture the layer's (first) input instead of its output; with ``stop`` the forward pass
            then ends before the layer runs.
    """
    captured: list[Any] = []

    def keep(value: Any, what: str) -> None:
        if not isinstance(value, Tensor):
            raise TypeError(f"the layer's {what} is a {type(value).__name__}; choose a layer whose {what} is a tensor")
        captured[:] = [value if transform is None else transform(value)]
        if stop:
            raise _StopForward

    def hook(module: nn.Module, args: Any, output: Any) -> None:
        keep(output, "output")

    def pre_hook(module: nn.Module, args: Any) -> None:
        keep(args[0] if args else None, "input")

    with Attachment() as hooks:
        if layer_input:
            hooks.hook(layer.register_forward_pre_hook, pre_hook)
        else:
            hooks.hook(layer.register_forward_hook, hook)
        try:
            output = model(*fresh(inputs))
        except _StopForward:
            output = None
    if not captured:
        raise ValueError("the layer was not called during the forward pass")
    return captured[0], output


_HEAD_POOLS = (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)


def default_feature_layer(model: nn.Module, inputs: tuple[Any, ...]) -> str:
    """Name of the last module to finish with a spatial feature map ``(N, C, H, W)``, ``H * W > 1``.

    Adaptive pooling layers (the classifier's head, e.g. VGG's ``avgpool`` resizing to 7×7) are skipped.

    That is the last convolutional block before global pooling: ``"layer4"`` of a ResNet, ``"features"`` of
    VGG, ``"pool5"`` of ZFNet.
    """
    names = {module: name for name, module in model.named_modules() if name}
    last: list[str] = []

    def record(module: nn.Module, args: Any, output: Any) -> None:
        if isinstance(module, _HEAD_POOLS) or not isinstance(output, Tensor):
            return
        if module in names and output.dim() == 4 and output.shape[-2:].numel() > 1:
            last[:] = [names[module]]

    with Attachment() as hooks, torch.no_grad():
        for module in names:
            hooks.hook(module.register_forward_hook, record)
        model(*fresh(inputs))
    if not last:
        raise ValueError("the model has no layer with a spatial (N, C, H, W) output; pass layer= explicitly")
    return last[0]


def check_channels(channels: Any, count: int, layer: str, *, unique: bool = False) -> Tensor:
    """Validated channel indices of a layer with ``count`` channels, as a long tensor (``None``: all of them).

    Accepts an int, a sequence of ints or an integer tensor; raises ``TypeError``/``ValueError`` naming
    ``channels`` for anything else, for an index out of range, and (``unique=True``) for a repeated channel.

    Example:
        >>> check_channels([3, 0], 8, "layer1").tolist(), check_channels(None, 2, "layer1").tolist()
        ([3, 0], [0, 1])
    """
    if channels is None:
        return torch.arange(count)
    if isinstance(channels, Tensor):
        if channels.is_floating_point() or channels.is_complex() or channels.dtype == torch.bool:
            raise TypeError(f"channels must hold integer indices, got dtype {channels.dtype}")
        items = channels.reshape(-1).tolist()
    elif isinstance(channels, int) and not isinstance(channels, bool):
        items = [channels]
    elif isinstance(channels, Sequence) and not isinstance(channels, str):
        items = list(channels)
    else:
        raise TypeError(f"channels must be an int, a sequence of ints or None, got {type(channels).__name__}")
    if not items:
        raise ValueError("channels is empty; pass at least one channel (or None for all)")
    for item in items:
        if isinstance(item, bool) or not isinstance(item, int):
            raise TypeError(f"channels must hold ints, got {item!r}")
        if not 0 <= item < count:
            raise ValueError(f"channels holds {item}, out of range for layer {layer!r} with {count} channels")
    if unique and len(set(items)) != len(items):
        raise ValueError(f"channels holds a channel twice: {items}; list each channel once")
    return torch.tensor(items, dtype=torch.long)


class NotAChainError(ValueError):
    """A module's children do not form a plain chain up to a layer (the message says where).

    Attributes:
        never_called: the children did form a chain, but the layer was never called.
    """

    def __init__(self, message: str, never_called: bool = False) -> None:
        super().__init__(message)
        self.never_called = never_called


class _Reached(Exception):  # noqa: N818 (control flow, not an error)
    pass


def children_chain(module: nn.Module, path: str, example: tuple[Any, ...]) -> list[tuple[str, nn.Module, Any]]:
    """The children ``module(*example)`` calls up to the one holding ``path``, if they form a plain chain.

    Runs the module once without gradients, stopping at the child that is or contains the layer ``path`` (a
    dotted name relative to ``module``). A plain chain: each child takes the previous child's output as its first
    argument, the first child the first input.

    Returns:
        ``(child_name, child, child_input)`` per call, the last one the child holding ``path``.

    Raises:
        NotAChainError: a child's input is not the previous child's output, or ``path`` is never reached.
        Anything the forward pass itself raises.

    Example:
        >>> net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten())
        >>> [name for name, _, _ in children_chain(net, "1", (torch.zeros(1, 1, 5, 5),))]
        ['0', '1']
    """
    calls: list[tuple[str, nn.Module, Any]] = []
    example = fresh(example)
    outputs: list[Any] = [example[0]]

    def before(child_name: str, args: tuple) -> None:
        if not args or args[0] is not outputs[-1]:
            raise NotAChainError(f"the input of {child_name!r} is not the output of the child called before it")
        calls.append((child_name, dict(module.named_children())[child_name], args[0]))
        if path == child_name or path.startswith(f"{child_name}."):
            raise _Reached

    with Attachment() as hooks, torch.no_grad():
        for child_name, child in module.named_children():
            hooks.hook(child.register_forward_pre_hook, lambda c, a, n=child_name: before(n, a))
            hooks.hook(child.register_forward_hook, lambda c, a, o: outputs.append(o))
        try:
            module(*example)
        except _Reached:
            return calls
    raise NotAChainError(f"layer {path!r} is not called in the forward pass", never_called=True)
