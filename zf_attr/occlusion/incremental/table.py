"""The table of ops the engine knows: what each traced module or function call computes and which dims it mixes.

Each entry gives the op's kind as traced (``"spatial"``, ``"elementwise"`` or ``"dense"``) and its ``rule``, which
:mod:`.layouts` reads, once the shapes are known, to decide whether the op is spatially pointwise where it runs:

* ``("pointwise", mixes)``: output position ``p`` reads input position ``p`` only, mixing values along the dims
  ``mixes`` (of the op's first tensor input): ``()`` for activations and residual adds, ``(1,)`` for local response
  normalisation, ``(-1,)`` for linear layers, the last ``k`` dims for layer norm, the dim of a concatenation or
  chunk. Pointwise where those dims are neither the batch nor a spatial dim (a linear layer on channels-last
  maps, ConvNeXt's); otherwise the op runs on whole maps (``"dense"``).
* ``("permute", dims)``: a permutation of the dims (``permute``, ``transpose``): moves the spatial dims.
* ``("reshape", sizes)``: ``view`` / ``reshape`` to ``sizes`` (``None`` where a size is computed from the input,
  e.g. from ``x.size()``); pointwise when it keeps the batch and the two trailing spatial dims (a channel shuffle).
* ``("reduce", dims, keepdim)``: a reduction (``mean``, ``sum``, ``amax``, ``amin``) over ``dims``.

Anything else raises :class:`~zf_attr.occlusion.incremental.graph.UnsupportedModelError` naming the op.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx, nn

from zf_attr.occlusion.incremental.regions import AxisGeometry

__all__ = ["TUPLE_METHODS", "UnsupportedOpError", "function_op", "is_shape_node", "module_op"]


class UnsupportedOpError(Exception):
    """Raised by the table; :mod:`.graph` turns it into ``UnsupportedModelError``."""


def _pair(value: Any) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else (int(value[0]), int(value[1]))


def geometry(kernel: Any, stride: Any, padding: Any, dilation: Any) -> tuple[AxisGeometry, AxisGeometry]:
    """Per-axis geometry of a sliding-window op."""
    k, s, p, d = _pair(kernel), _pair(stride if stride is not None else kernel), _pair(padding), _pair(dilation)
    return AxisGeometry(k[0], s[0], p[0], d[0]), AxisGeometry(k[1], s[1], p[1], d[1])


_OUT_OF_PLACE: dict[type[nn.Module], Callable[[Any, Any], Any]] = {
    nn.ReLU: lambda m, x: torch.relu(x),
    nn.ReLU6: lambda m, x: F.relu6(x),
    nn.LeakyReLU: lambda m, x: F.leaky_relu(x, m.negative_slope),
    nn.ELU: lambda m, x: F.elu(x, m.alpha),
    nn.Hardtanh: lambda m, x: F.hardtanh(x, m.min_val, m.max_val),
    nn.SiLU: lambda m, x: F.silu(x),
    nn.Hardswish: lambda m, x: F.hardswish(x),
    nn.Hardsigmoid: lambda m, x: F.hardsigmoid(x),
    nn.Mish: lambda m, x: F.mish(x),
    nn.SELU: lambda m, x: F.selu(x),
}


def _out_of_place(module: nn.Module) -> Callable[[Any], Any]:
    """An activation module that never writes its input (the cached values): in place ones run out of place."""
    if not getattr(module, "inplace", False):
        return module
    functional = _OUT_OF_PLACE.get(type(module))
    if functional is None:  # a subclass: its own forward on a copy
        return lambda x: module(x.clone())
    return lambda x: functional(module, x)


POINTWISE: tuple[str, tuple[int, ...]] = ("pointwise", ())
_ACTIVATIONS = (
    nn.ELU, nn.GELU, nn.Hardsigmoid, nn.Hardswish, nn.Hardtanh, nn.LeakyReLU, nn.Mish, nn.ReLU, nn.ReLU6, nn.SELU,
    nn.SiLU, nn.Sigmoid, nn.Softplus, nn.Tanh,
)  # fmt: skip
_IDENTITIES = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.AlphaDropout, nn.Identity)
_DENSE_MODULES = (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.Flatten)
_POINTWISE_FUNCTIONS = {
    F.relu, torch.relu, F.relu6, F.hardtanh, F.leaky_relu, F.elu, F.silu, F.gelu, F.hardswish, F.hardsigmoid,
    F.mish, torch.sigmoid, torch.tanh, F.sigmoid, F.tanh,
}  # fmt: skip
_BINARY_FUNCTIONS = {
    operator.add: operator.add, operator.iadd: operator.add, torch.add: torch.add,
    operator.sub: operator.sub, operator.isub: operator.sub, torch.sub: torch.sub,
    operator.mul: operator.mul, operator.imul: operator.mul, torch.mul: torch.mul,
    operator.truediv: operator.truediv, torch.div: torch.div,
}  # fmt: skip
_DENSE_FUNCTIONS = {F.adaptive_avg_pool2d, F.adaptive_max_pool2d, F.avg_pool2d, F.max_pool2d}
_POINTWISE_METHODS = {"relu", "sigmoid", "tanh", "contiguous", "add", "mul", "sub", "div"}
_REDUCTIONS = {"mean": torch.mean, "sum": torch.sum, "amax": torch.amax, "amin": torch.amin}
#: Methods and functions returning a tuple of tensors along one dim; each ``getitem`` of the tuple is one op.
TUPLE_METHODS = {"chunk": torch.chunk, "split": torch.split}
_SHAPE_ARITHMETIC = {operator.getitem, operator.floordiv, operator.mul, operator.add, operator.sub}


def module_op(module: nn.Module, name: str) -> tuple[str, dict[str, Any]]:
    """``(kind, Op fields)`` for a call of ``module``; ``_Unsupported`` with the reason otherwise."""
    kind_name = type(module).__name__
    if isinstance(module, nn.Conv2d):
        if module.padding_mode != "zeros" or isinstance(module.padding, str):
            raise UnsupportedOpError(f"{name}: Conv2d with padding={module.padding!r}, mode {module.padding_mode!r}")
        m = module
        return "spatial", dict(
            call=lambda v: F.conv2d(v[0], m.weight, m.bias, m.stride, m.padding, m.dilation, m.groups),
            patch_call=lambda x: F.conv2d(x, m.weight, m.bias, m.stride, 0, m.dilation, m.groups),
            geometry=geometry(m.kernel_size, m.stride, m.padding, m.dilation),
            macs_per_output=m.in_channels // m.groups * m.kernel_size[0] * m.kernel_size[1],
        )
    if isinstance(module, nn.MaxPool2d):
        if module.return_indices:
            raise UnsupportedOpError(f"{name}: MaxPool2d with return_indices=True")
        m = module
        return "spatial", dict(
            call=lambda v: F.max_pool2d(v[0], m.kernel_size, m.stride, m.padding, m.dilation, m.ceil_mode),
            patch_call=lambda x: F.max_pool2d(x, m.kernel_size, m.stride, 0, m.dilation),
            geometry=geometry(m.kernel_size, m.stride, m.padding, m.dilation),
            pad_value=float("-inf"),
            ceil_mode=m.ceil_mode,
        )
    if isinstance(module, nn.AvgPool2d):
        m = module
        call = dict(call=lambda v: m(v[0]))
        if m.divisor_override is not None or (not m.count_include_pad and _pair(m.padding) != (0, 0)):
            return "dense", call
        return "spatial", dict(
            **call,
            patch_call=lambda x: F.avg_pool2d(x, m.kernel_size, m.stride, 0),
            geometry=geometry(m.kernel_size, m.stride, m.padding, 1),
            ceil_mode=m.ceil_mode,
        )
    if isinstance(module, nn.BatchNorm2d):
        if module.training or module.running_mean is None:
            raise UnsupportedOpError(f"{name}: BatchNorm2d in training mode (or without running statistics)")
        m = module
        return "elementwise", dict(
            call=lambda v: F.batch_norm(v[0], m.running_mean, m.running_var, m.weight, m.bias, False, 0.0, m.eps)
        )
    if isinstance(module, nn.LocalResponseNorm):  # across channels only
        m = module
        return "elementwise", dict(
            call=lambda v: F.local_response_norm(v[0], m.size, m.alpha, m.beta, m.k), rule=("pointwise", (1,))
        )
    if isinstance(module, nn.LayerNorm):
        m = module
        last = tuple(range(-len(m.normalized_shape), 0))
        return "elementwise", dict(
            call=lambda v: F.layer_norm(v[0], m.normalized_shape, m.weight, m.bias, m.eps), rule=("pointwise", last)
        )
    if isinstance(module, _IDENTITIES):
        if module.training and not isinstance(module, nn.Identity):
            raise UnsupportedOpError(f"{name}: {kind_name} in training mode (random)")
        return "elementwise", dict(call=lambda v: v[0])
    if isinstance(module, _ACTIVATIONS):
        fn = _out_of_place(module)
        return "elementwise", dict(call=lambda v: fn(v[0]))
    if isinstance(module, nn.Linear):
        m = module
        return "elementwise", dict(
            call=lambda v: F.linear(v[0], m.weight, m.bias), macs_per_output=m.in_features, rule=("pointwise", (-1,))
        )
    if isinstance(module, (nn.Softmax, nn.LogSoftmax)):
        if module.dim is None or module.dim == 0:
            raise UnsupportedOpError(f"{name}: {kind_name}(dim={module.dim}) mixes examples")
        m = module
        return "elementwise", dict(call=lambda v: m(v[0]), rule=("pointwise", (m.dim,)))
    if isinstance(module, _DENSE_MODULES):
        if isinstance(module, nn.Flatten) and not module.start_dim >= 1:
            raise UnsupportedOpError(f"{name}: Flatten(start_dim={module.start_dim}) would merge the batch dimension")
        m = module
        return "dense", dict(call=lambda v: m(v[0]))
    raise UnsupportedOpError(f"{name}: module type {kind_name} is not supported")


def _argument(node: fx.Node, position: int, name: str, default: Any) -> Any:
    return node.args[position] if len(node.args) > position else node.kwargs.get(name, default)


def _dims(value: Any) -> tuple[int, ...]:
    return (value,) if isinstance(value, int) else tuple(value)


def function_op(node: fx.Node) -> tuple[str, Callable[..., Any], tuple[Any, ...]]:
    """``(kind, function, rule)`` of a ``call_function`` / ``call_method`` node; ``_Unsupported`` otherwise."""
    target = node.target
    if node.op == "call_method":
        method = str(target)
        if method in _POINTWISE_METHODS:
            return "elementwise", lambda *a, **k: getattr(a[0], method)(*a[1:], **k), POINTWISE
        if method == "flatten" and _start_dim(node) >= 1:
            return "dense", lambda *a, **k: a[0].flatten(*a[1:], **k), ("dense",)
        if method in ("permute", "transpose"):
            return "elementwise", _method(method), _permutation(node, method)
        if method in ("view", "reshape"):
            sizes = node.args[1:] if len(node.args) > 2 or not isinstance(node.args[1], (tuple, list)) else node.args[1]
            return "elementwise", _method(method), ("reshape", tuple(s if isinstance(s, int) else None for s in sizes))
        if method in _REDUCTIONS:
            dims, keepdim = _argument(node, 1, "dim", None), _argument(node, 2, "keepdim", False)
            if dims is None or not isinstance(keepdim, bool):
                raise UnsupportedOpError(f"{node.name}: .{method}() over every dim mixes the examples")
            return "elementwise", _method(method), ("reduce", _dims(dims), keepdim)
        raise UnsupportedOpError(f"{node.name}: tensor method .{method}() is not supported")
    if target in _POINTWISE_FUNCTIONS:
        return (
            "elementwise",
            lambda *a, **k: target(*a, **{**k, **({"inplace": False} if "inplace" in k else {})}),
            (POINTWISE),
        )
    if target in _BINARY_FUNCTIONS:
        return "elementwise", _BINARY_FUNCTIONS[target], POINTWISE
    if _is_stochastic_depth(target):
        if _argument(node, 3, "training", True) is not False:
            raise UnsupportedOpError(f"{node.name}: stochastic_depth in training mode (random)")
        return "elementwise", lambda *a, **k: a[0], POINTWISE  # the identity in eval mode
    if target is torch.cat:
        dim = _argument(node, 1, "dim", 0)
        if dim == 0:
            raise UnsupportedOpError(f"{node.name}: torch.cat along dim 0 mixes the examples")
        return "elementwise", torch.cat, ("pointwise", (dim,))
    if target is F.layer_norm:
        shape = _argument(node, 1, "normalized_shape", None)
        return "elementwise", F.layer_norm, ("pointwise", tuple(range(-len(_dims(shape)), 0)))
    if target is F.linear:
        return "elementwise", F.linear, ("pointwise", (-1,))
    if target is F.softmax:
        dim = _argument(node, 1, "dim", None)
        if not isinstance(dim, int) or dim == 0:
            raise UnsupportedOpError(f"{node.name}: softmax over dim {dim} mixes examples")
        return "elementwise", F.softmax, ("pointwise", (dim,))
    if target in (torch.permute, torch.transpose):
        name = "permute" if target is torch.permute else "transpose"
        return "elementwise", target, _permutation(node, name)
    if target is torch.reshape:
        return "elementwise", torch.reshape, ("reshape", tuple(s if isinstance(s, int) else None for s in node.args[1]))
    if target is torch.flatten:
        if _start_dim(node) < 1:
            raise UnsupportedOpError(f"{node.name}: torch.flatten from dim 0 would merge the batch dimension")
        return "dense", torch.flatten, ("dense",)
    if target in _DENSE_FUNCTIONS:
        return "dense", target, ("dense",)
    if target in _REDUCTIONS.values():
        dims, keepdim = _argument(node, 1, "dim", None), _argument(node, 2, "keepdim", False)
        if dims is None:
            raise UnsupportedOpError(f"{node.name}: {target.__name__} over every dim mixes the examples")
        return "elementwise", target, ("reduce", _dims(dims), keepdim)
    raise UnsupportedOpError(f"{node.name}: function {getattr(target, '__name__', target)!r} is not supported")


def _is_stochastic_depth(target: Any) -> bool:
    """Whether ``target`` is torchvision's ``stochastic_depth`` (recognised without importing torchvision)."""
    return getattr(target, "__name__", None) == "stochastic_depth" and str(
        getattr(target, "__module__", "")
    ).startswith("torchvision.")


def _method(name: str) -> Callable[..., Any]:
    return lambda *a, **k: getattr(a[0], name)(*a[1:], **k)


def _permutation(node: fx.Node, name: str) -> tuple[Any, ...]:
    """``("permute", dims)``: ``dims[k]`` is the input dim that becomes output dim ``k`` (``None``: not known)."""
    args = node.args[1:]
    if name == "transpose":
        first, second = args if len(args) == 2 else (node.kwargs.get("dim0"), node.kwargs.get("dim1"))
        return ("transpose", first, second)
    dims = args[0] if len(args) == 1 and isinstance(args[0], (tuple, list)) else args
    if not all(isinstance(d, int) for d in dims):
        raise UnsupportedOpError(f"{node.name}: permute with computed dims")
    return ("permute", tuple(dims))


def _start_dim(node: fx.Node) -> int:
    value = _argument(node, 1, "start_dim", 0)
    return value if isinstance(value, int) else -1


def is_shape_node(node: fx.Node, shape_nodes: set[fx.Node]) -> bool:
    """Whether ``node`` computes a size (``x.size()``, ``x.shape``, and arithmetic and indexing on sizes)."""
    if node.op == "call_method" and node.target == "size":
        return True
    if node.op == "call_function" and node.target is getattr and node.args[1] == "shape":
        return True
    operands = node.all_input_nodes
    return (
        node.op == "call_function"
        and node.target in _SHAPE_ARITHMETIC
        and bool(operands)
        and all(n in shape_nodes for n in operands)
    )
