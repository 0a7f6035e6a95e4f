"""Receptive fields of a layer's units in input pixels, derived analytically from the model's graph.

Each module is traced one level deep with :mod:`torch.fx` and its graph walked from the input to the layer:
convolutions and pools compose their kernel, stride, padding and dilation, element-wise operations and
channel concatenations take the union of their operands' fields, containers are descended into recursively.
Operations that mix all positions (adaptive or global pooling, flatten, linear layers, BatchNorm in training
mode, group/layer/instance norm) make the field *global*: the box is then the whole image. Operations this
walk does not know raise :class:`ReceptiveFieldError` rather than guess.

Example:
    >>> import torchvision
    >>> from zf_attr.attr.receptive_field import receptive_field
    >>> field = receptive_field(torchvision.models.vgg11(), "features.2")  # conv 3×3 (padding 1), max-pool 2×2
    >>> field.box(0, 0, image_size=(64, 64)), field.box(5, 7, image_size=(64, 64))
    ((0, 0, 3, 3), (13, 9, 17, 13))
"""

from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx, nn

from zf_attr._fx import ThreadSafeTracer
from zf_attr.attr._layers import NotAChainError, children_chain

__all__ = ["ReceptiveField", "ReceptiveFieldError", "receptive_field"]


class ReceptiveFieldError(ValueError):
    """The layer's receptive field cannot be derived from the model's graph (the message says where)."""


@dataclass(frozen=True)
class ReceptiveField:
    """Affine map from a unit's location to the input pixels it can see, per axis: ``[jump*i + lo, jump*i + hi]``.

    Attributes:
        jump: input pixels between neighbouring units, ``(rows, cols)``.
        lo: offset of the first pixel seen by unit 0, ``(rows, cols)`` (negative where padding is involved).
        hi: offset of the last pixel seen by unit 0, inclusive, ``(rows, cols)``.
        is_global: every unit sees the whole image (``jump``, ``lo``, ``hi`` are then meaningless).
    """

    jump: tuple[int, int] = (1, 1)
    lo: tuple[int, int] = (0, 0)
    hi: tuple[int, int] = (0, 0)
    is_global: bool = False

    @property
    def size(self) -> tuple[int, int]:
        """Extent of one unit's field in input pixels, before clipping to the image, ``(rows, cols)``."""
        return (self.hi[0] - self.lo[0] + 1, self.hi[1] - self.lo[1] + 1)

    def box(self, row: int, col: int, image_size: tuple[int, int]) -> tuple[int, int, int, int]:
        """Box ``(x0, y0, x1, y1)`` (exclusive ends, clipped to the image) seen by the unit at ``(row, col)``."""
        height, width = image_size
        if self.is_global:
            return (0, 0, width, height)
        y0, y1 = self.jump[0] * row + self.lo[0], self.jump[0] * row + self.hi[0] + 1
        x0, x1 = self.jump[1] * col + self.lo[1], self.jump[1] * col + self.hi[1] + 1
        return (max(x0, 0), max(y0, 0), min(x1, width), min(y1, height))

    def boxes(self, locations: torch.Tensor, image_size: tuple[int, int]) -> torch.Tensor:
        """Boxes ``(..., 4)`` as ``(x0, y0, x1, y1)`` for integer ``locations`` ``(..., 2)`` holding ``(row, col)``."""
        height, width = image_size
        if self.is_global:
            shape = (*locations.shape[:-1], 1)
            zeros = torch.zeros(shape, dtype=torch.long, device=locations.device)
            return torch.cat([zeros, zeros, zeros + width, zeros + height], dim=-1)
        rows, cols = locations[..., 0:1].long(), locations[..., 1:2].long()
        y0 = (self.jump[0] * rows + self.lo[0]).clamp(0, height)
        y1 = (self.jump[0] * rows + self.hi[0] + 1).clamp(0, height)
        x0 = (self.jump[1] * cols + self.lo[1]).clamp(0, width)
        x1 = (self.jump[1] * cols + self.hi[1] + 1).clamp(0, width)
        return torch.cat([x0, y0, x1, y1], dim=-1)

    def then(self, kernel: Any, stride: Any, padding: Any, dilation: Any = 1) -> ReceptiveField:
        """The field after a sliding window (convolution or pooling) applied to this one."""
        if self.is_global:
            return self
        kernel, stride, padding, dilation = (_pair(value) for value in (kernel, stride, padding, dilation))
        jump, lo, hi = [], [], []
        for axis in range(2):
            jump.append(self.jump[axis] * stride[axis])
            lo.append(self.lo[axis] - self.jump[axis] * padding[axis])
            hi.append(self.hi[axis] + self.jump[axis] * (dilation[axis] * (kernel[axis] - 1) - padding[axis]))
        return ReceptiveField(tuple(jump), tuple(lo), tuple(hi))  # type: ignore[arg-type]


GLOBAL = ReceptiveField(is_global=True)
State = ReceptiveField | None  # None: does not depend on the image


def _pair(value: Any) -> tuple[int, int]:
    if isinstance(value, (list, tuple)):
        return (int(value[0]), int(value[-1]))
    return (int(value), int(value))


def _union(states: list[State]) -> State:
    fields = [state for state in states if state is not None]
    if not fields:
        return None
    if any(field.is_global for field in fields) or len({field.jump for field in fields}) > 1:
        return GLOBAL  # sound: a union of fields with different strides is not affine
    lo = tuple(min(field.lo[axis] for field in fields) for axis in range(2))
    hi = tuple(max(field.hi[axis] for field in fields) for axis in range(2))
    return ReceptiveField(fields[0].jump, lo, hi)  # type: ignore[arg-type]


_POINTWISE_MODULES = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.Hardtanh, nn.SiLU, nn.GELU, nn.Sigmoid, nn.Tanh, nn.Hardswish,
    nn.Hardsigmoid, nn.ELU, nn.Mish, nn.Softplus, nn.PReLU, nn.Identity, nn.Dropout, nn.Dropout2d,
    nn.LocalResponseNorm,
)  # fmt: skip
_GLOBAL_MODULES = (
    nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.Flatten, nn.Linear, nn.GroupNorm, nn.LayerNorm,
    nn.InstanceNorm2d,
)  # fmt: skip
_POINTWISE_FUNCTIONS = {
    operator.add, operator.iadd, operator.mul, operator.imul, operator.sub, operator.truediv, operator.neg,
    torch.add, torch.mul, torch.sub, torch.relu, torch.relu_, torch.sigmoid, torch.tanh, torch.unsqueeze,
    F.relu, F.relu6, F.hardtanh, F.leaky_relu, F.silu, F.gelu, F.hardswish, F.dropout, F.local_response_norm,
}  # fmt: skip
_POINTWISE_METHODS = {
    "relu", "relu_", "add", "add_", "mul", "mul_", "sigmoid", "contiguous", "clone", "float", "double", "to",
    "type_as", "unsqueeze", "detach",
}  # fmt: skip
_GLOBAL_FUNCTIONS = {torch.flatten, F.adaptive_avg_pool2d, F.adaptive_max_pool2d, torch.mean, F.linear}
_GLOBAL_METHODS = {"flatten", "view", "reshape", "mean", "sum"}


def _conv_padding(module: nn.Conv2d) -> Any:
    if module.padding_mode == "circular":
        raise ReceptiveFieldError(f"{module}: circular padding wraps around the image; no box describes that")
    if module.padding == "valid":
        return 0
    if module.padding == "same":
        return tuple(d * (k - 1) // 2 for d, k in zip(module.dilation, module.kernel_size, strict=True))
    return module.padding


def _module_field(module: nn.Module, state: State, name: str) -> State:
    """Field after ``module`` given the field of its input."""
    if state is None:
        return None
    if isinstance(module, nn.Conv2d):
        return state.then(module.kernel_size, module.stride, _conv_padding(module), module.dilation)
    if isinstance(module, nn.MaxPool2d):
        return state.then(module.kernel_size, module.stride or module.kernel_size, module.padding, module.dilation)
    if isinstance(module, nn.AvgPool2d):
        return state.then(module.kernel_size, module.stride or module.kernel_size, module.padding)
    if isinstance(module, nn.BatchNorm2d):
        return GLOBAL if module.training or not module.track_running_stats else state
    if isinstance(module, _POINTWISE_MODULES):
        return state
    if isinstance(module, _GLOBAL_MODULES):
        return GLOBAL
    if next(module.children(), None) is None and type(module).__module__.startswith("torch.nn"):
        raise ReceptiveFieldError(f"cannot derive receptive fields through {name} ({type(module).__name__})")
    return _graph_field(module, state, None, name)


class _OneLevelTracer(ThreadSafeTracer):
    def __init__(self, root: nn.Module) -> None:
        super().__init__()
        self._root = root

    def is_leaf_module(self, module: nn.Module, qualified_name: str) -> bool:
        return module is not self._root


def _argument(node: fx.Node, position: int, name: str, default: Any) -> Any:
    return node.args[position] if len(node.args) > position else node.kwargs.get(name, default)


def _function_field(node: fx.Node, state: State, where: str) -> State:
    target = node.target
    if node.op == "call_method":
        if target in _POINTWISE_METHODS:
            return state
        if target in _GLOBAL_METHODS:
            return GLOBAL
    elif target in _POINTWISE_FUNCTIONS:
        return state
    elif target in _GLOBAL_FUNCTIONS:
        return GLOBAL
    elif target is torch.cat and _argument(node, 1, "dim", 0) in (1, -3):
        return state
    elif target in (F.max_pool2d, F.avg_pool2d):
        kernel = _argument(node, 1, "kernel_size", None)
        stride = _argument(node, 2, "stride", None) or kernel
        padding = _argument(node, 3, "padding", 0)
        dilation = _argument(node, 4, "dilation", 1) if target is F.max_pool2d else 1
        return None if state is None else state.then(kernel, stride, padding, dilation)
    elif target is F.batch_norm:
        return GLOBAL if _argument(node, 5, "training", False) else state
    raise ReceptiveFieldError(f"cannot derive receptive fields through {node.format_node()} in {where}")


def _graph_field(
    module: nn.Module, state: State, path: str | None, name: str, example: tuple[Any, ...] | None = None
) -> State:
    """Field at ``module``'s output (``path`` None) or at the output of its submodule ``path``'s first call."""
    try:
        graph = _OneLevelTracer(module).trace(module)
    except Exception as error:
        if example is not None and path is not None:
            return _chain_field(module, state, path, name, example)
        raise ReceptiveFieldError(f"{name or 'the model'} cannot be traced by torch.fx: {error}") from error
    env: dict[fx.Node, State] = {}
    first_input = True
    for node in graph.nodes:
        inputs = [env.get(argument) for argument in node.all_input_nodes]
        merged = _union(inputs)
        where = f"{name}.{node.target}" if name else str(node.target)
        if node.op == "placeholder":
            env[node], first_input = (state if first_input else None), False
        elif node.op == "get_attr":
            env[node] = None
        elif node.op == "call_module":
            if path is not None and path.startswith(f"{node.target}."):
                return _graph_field(module.get_submodule(node.target), merged, path[len(node.target) + 1 :], where)
            env[node] = _module_field(module.get_submodule(node.target), merged, where)
            if path == node.target:
                return env[node]
        elif node.op in ("call_function", "call_method"):
            if merged is None or node.target in (getattr, "size", "dim"):
                env[node] = None
            elif node.target is operator.getitem:
                env[node] = _getitem_field(node, merged, name)
            else:
                env[node] = _function_field(node, merged, name or "the model")
        elif node.op == "output":
            if path is not None:
                raise ReceptiveFieldError(f"layer {path!r} is not called in the forward pass of {name or 'the model'}")
            return merged
    raise ReceptiveFieldError(f"{name or 'the model'} has no output")  # pragma: no cover


def _chain_field(module: nn.Module, state: State, path: str, name: str, example: tuple[Any, ...]) -> State:
    """Fallback for an untraceable module: run it once and accept it if its children form a plain chain."""
    try:
        calls = children_chain(module, path, example)
    except NotAChainError as error:
        if error.never_called:
            raise ReceptiveFieldError(
                f"layer {path!r} is not called in the forward pass of {name or 'the model'}"
            ) from None
        raise ReceptiveFieldError(
            f"{name or 'the model'} cannot be traced by torch.fx and its children do not form a plain chain ({error})"
        ) from None
    for child_name, child, _ in calls[:-1]:
        state = _module_field(child, state, f"{name}.{child_name}" if name else child_name)
    child_name, child, child_input = calls[-1]
    where = f"{name}.{child_name}" if name else child_name
    if path == child_name:
        return _module_field(child, state, where)
    return _graph_field(child, state, path[len(child_name) + 1 :], where, (child_input,))


def _getitem_field(node: fx.Node, state: State, name: str) -> State:
    index = node.args[1]
    entries = index if isinstance(index, tuple) else (index,)
    if len(entries) <= 2 and all(entry is None or isinstance(entry, int) or entry == slice(None) for entry in entries):
        return state  # batch / channel indexing (GoogLeNet's input transform)
    raise ReceptiveFieldError(f"cannot derive receptive fields through indexing {node.format_node()} in {name}")


def receptive_field(model: nn.Module, layer: str, example_inputs: tuple[Any, ...] | None = None) -> ReceptiveField:
    """Receptive field of the units of ``model``'s layer ``layer`` (a dotted module name), in input pixels.

    Assumes image inputs ``(N, C, H, W)`` as the model's first argument, and a model in eval mode (BatchNorm in
    training mode mixes all positions: the field is then global).

    Args:
        model: the network.
        layer: dotted name of the layer.
        example_inputs: arguments of one forward pass; used only where a module cannot be traced by
            :mod:`torch.fx` (e.g. a forward that checks the input's shape): it is then run once and accepted
            if its children form a plain chain, each taking the previous one's output.

    Raises:
        ReceptiveFieldError: the graph cannot be traced, or holds an operation whose field is not known.
    """
    return _graph_field(model, ReceptiveField(), layer, "", example_inputs) or ReceptiveField()
