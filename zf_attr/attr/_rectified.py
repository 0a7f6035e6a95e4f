"""The paper's feature maps are rectified: read a layer's map after the rectifier its output goes straight into.

ZFNet's ``convN`` (and VGG's ``features.K`` convolutions) hand their output to an in-place ReLU. A hook on the
layer sees the output *before* that ReLU, so a map read there holds negative values the network never passes
on. :func:`layer_map` finds, with one forward pass of one example, the first computation that consumes the
layer's output; if it is a rectifier (``relu``/``relu_``/``F.relu``/``Tensor.relu``, ``relu6``, or
``hardtanh`` with a lower bound of 0: modules, in-place and functional calls alike), maps are read after it, as
the paper's are. A rectified value at a location equals the raw one where the raw one is positive and is 0
elsewhere, so projecting a positive rectified value through the raw output's graph is the projection of the
rectified map.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from zf_attr._guard import fresh
from zf_attr._lifecycle import Attachment

__all__ = ["LayerMap", "layer_map"]


@dataclass(frozen=True)
class LayerMap:
    """How a layer's feature map is read: its raw output, or clamped as the rectifier that follows it does.

    Attributes:
        layer: the layer's name.
        rectifier: ``"relu"``, ``"relu6"`` or ``"hardtanh"`` when the map is read after that rectifier; ``None``
            for the raw output (no rectifier follows, or the raw output was asked for).
        low: lower clamp of the rectifier (0), ``None`` for the raw output.
        high: upper clamp (6 for ReLU6), ``None`` for none.

    Example:
        >>> LayerMap("conv3", "relu", 0.0, None)(torch.tensor([-0.5, 2.0])).tolist()
        [0.0, 2.0]
    """

    layer: str
    rectifier: str | None = None
    low: float | None = None
    high: float | None = None

    @property
    def rectified(self) -> bool:
        """Whether the map is read after a rectifier."""
        return self.rectifier is not None

    def __call__(self, output: Tensor) -> Tensor:
        """The map as read from the layer's raw ``output`` (a new tensor when rectified, ``output`` otherwise)."""
        return output if self.rectifier is None else output.clamp(self.low, self.high)


def layer_map(
    model: Callable[..., Any], name: str, layer: nn.Module, inputs: tuple[Any, ...], *, rectified: bool = True
) -> LayerMap:
    """How to read ``layer``'s map: after the rectifier its output goes straight into, if any and ``rectified``.

    Runs ``model(*inputs)`` once without gradients (pass one example), watching the first call of ``layer``:
    the first torch computation that takes its output as an argument and returns a tensor decides, and the
    forward pass stops there. Calls that only read metadata (``dim``, ``shape``) do not count.

    Args:
        model: the network.
        name: the layer's name (for the result).
        layer: the layer.
        inputs: positional arguments of one forward pass.
        rectified: ``False`` reads the raw output without running anything.

    Returns:
        A :class:`LayerMap`.

    Example:
        >>> net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(inplace=True), nn.Conv2d(2, 2, 1))
        >>> x = (torch.zeros(1, 1, 5, 5),)
        >>> layer_map(net, "0", net[0], x).rectifier, layer_map(net, "2", net[2], x).rectifier
        ('relu', None)
    """
    if not rectified:
        return LayerMap(name)
    watch = _Watch()

    def hook(module: nn.Module, args: Any, output: Any) -> None:
        if watch.output is None and watch.decided is None:
            if not isinstance(output, Tensor):
                watch.decided = LayerMap(name)
                raise _Decided
            watch.output = output

    with Attachment() as hooks:  # this thread's forward passes only; removed (or recovered) whatever happens
        hooks.hook(layer.register_forward_hook, hook)
        try:
            with torch.no_grad(), watch:
                model(*fresh(inputs))  # a copy: an in-place first layer must not write into the caller's tensor
        except _Decided:
            pass
    if watch.decided is None and watch.output is None:
        raise ValueError(f"layer {name!r} was not called during the forward pass")
    decided = watch.decided or LayerMap(name)
    return LayerMap(name, decided.rectifier, decided.low, decided.high)


class _Decided(Exception):  # noqa: N818 (control flow, not an error)
    pass


_RELU = {F.relu, torch.relu, torch.relu_, Tensor.relu, Tensor.relu_, getattr(F, "relu_", F.relu)}
_HARDTANH = {F.hardtanh, getattr(F, "hardtanh_", F.hardtanh)}


class _Watch(TorchFunctionMode):
    """Sees every torch call; once ``output`` is set, the first tensor-valued call consuming it decides."""

    def __init__(self) -> None:
        super().__init__()
        self.output: Tensor | None = None
        self.decided: LayerMap | None = None

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        if self.output is None or not _uses(self.output, args, kwargs):
            return func(*args, **kwargs)
        result = func(*args, **kwargs)
        if isinstance(result, Tensor):
            self.decided = _rectifier(func, args, kwargs)
            raise _Decided
        return result


def _uses(output: Tensor, args: tuple, kwargs: dict) -> bool:
    values = [*args, *kwargs.values()]
    return any(
        value is output or (isinstance(value, (list, tuple)) and any(item is output for item in value))
        for value in values
    )


def _rectifier(func: Any, args: tuple, kwargs: dict) -> LayerMap:
    """The clamp ``func`` applies when it is a rectifier (the layer name is filled in by the caller)."""
    if func in _RELU:
        return LayerMap("", "relu", 0.0, None)
    if func is F.relu6:
        return LayerMap("", "relu6", 0.0, 6.0)
    if func in _HARDTANH:
        values = dict(zip(("input", "min_val", "max_val"), args, strict=False)) | kwargs
        low, high = float(values.get("min_val", -1.0)), float(values.get("max_val", 1.0))
        if low == 0.0:
            return LayerMap("", "relu6" if high == 6.0 else "hardtanh", 0.0, high)
    return LayerMap("")
