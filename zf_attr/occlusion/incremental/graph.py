"""The model as a list of ops the engine knows: ``torch.fx`` tracing and the table of supported ops.

Every traced node becomes an :class:`Op` of one of these kinds:

* ``"input"``: the image batch (exactly one tensor input).
* ``"const"``: a tensor stored on the model (``get_attr``).
* ``"elementwise"``: spatially pointwise (output at ``(y, x)`` reads only inputs at ``(y, x)``): rectifiers and
  other activations, batch norm in eval, local response (contrast) normalisation, dropout in eval, residual
  add/sub/mul, channel concatenation.
* ``"spatial"``: a sliding-window op the engine recomputes on a patch: ``Conv2d`` (stride, padding, dilation,
  groups), ``MaxPool2d`` (padding, dilation, ceil mode), ``AvgPool2d``.
* ``"dense"``: any other op known to treat every example (row) on its own: linear, flatten, adaptive pooling,
  softmax; always computed on whole maps.

Ops run functionally (weights read from the modules, never in place), so the model is never modified and the
cached activations are never overwritten. Anything else raises :class:`UnsupportedModelError` with the reason.
"""

from __future__ import annotations

import inspect
import operator
import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, fx, nn

from zf_attr._fx import TRACE_LOCK, ThreadSafeTracer
from zf_attr.occlusion.incremental.regions import AxisGeometry

__all__ = ["Op", "UnsupportedModelError", "trace_ops", "traced_ops"]


class UnsupportedModelError(Exception):
    """The model cannot run on the incremental engine; ``str(error)`` says why in one line."""


@dataclass
class Op:
    """One node of the traced model.

    Attributes:
        name: the fx node name.
        kind: ``"input"``, ``"const"``, ``"elementwise"``, ``"spatial"``, ``"dense"`` or ``"output"``.
        inputs: indices (into the op list) of the nodes this op reads.
        call: computes the op from its inputs' values (in the order of ``inputs``) on whole maps.
        geometry: for spatial ops, the ``(rows, cols)`` geometry.
        patch_call: for spatial ops, the op without padding, applied to an already padded patch.
        pad_value: the value spatial padding stands for (0, or -inf for max-pooling).
        ceil_mode: whether the op rounds its output size up (a spatial op whose size this changes runs dense).
        macs_per_output: multiply-accumulates per output element (conv and linear; 0 otherwise), for FLOPs.
        value: the tensor of a ``"const"`` op.
    """

    name: str
    kind: str
    inputs: tuple[int, ...] = ()
    call: Callable[[list[Any]], Any] | None = None
    geometry: tuple[AxisGeometry, AxisGeometry] | None = None
    patch_call: Callable[[Tensor], Tensor] | None = None
    pad_value: float = 0.0
    ceil_mode: bool = False
    macs_per_output: int = 0
    value: Any = None
    modules: list[str] = field(default_factory=list)


class _Tracer(ThreadSafeTracer):
    """Tracer that records which node each module call (leaf or not) returned."""

    def __init__(self) -> None:
        super().__init__()
        self.module_outputs: dict[str, list[fx.Node]] = {}

    def call_module(self, m: nn.Module, forward: Callable[..., Any], args: Any, kwargs: Any) -> Any:
        result = super().call_module(m, forward, args, kwargs)
        if isinstance(result, fx.Proxy) and threading.get_ident() == self._thread:
            self.module_outputs.setdefault(self.path_of_module(m), []).append(result.node)
        return result


class _Children(nn.Module):
    """The children of a model called in order, under the same qualified names (no copy, no hooks)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        for name, child in model.named_children():
            self.add_module(name, child)

    def forward(self, x: Tensor) -> Tensor:
        for child in self.children():
            x = child(x)
        return x


def _defaults(model: nn.Module) -> dict[str, Any] | None:
    """Default values of the forward arguments after the first (the engine calls ``model(x)`` only)."""
    try:
        parameters = list(inspect.signature(model.forward).parameters.values())[1:]
    except (TypeError, ValueError):
        return None
    return {p.name: p.default for p in parameters if p.default is not inspect.Parameter.empty} or None


def _is_zfnet(model: nn.Module) -> bool:
    from zf_attr.models.zfnet import ZFNet

    return type(model) is ZFNet


def _pair(value: Any) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else (int(value[0]), int(value[1]))


def _geometry(kernel: Any, stride: Any, padding: Any, dilation: Any) -> tuple[AxisGeometry, AxisGeometry]:
    k, s, p, d = _pair(kernel), _pair(stride if stride is not None else kernel), _pair(padding), _pair(dilation)
    return AxisGeometry(k[0], s[0], p[0], d[0]), AxisGeometry(k[1], s[1], p[1], d[1])


def _clone_if_inplace(module: nn.Module) -> Callable[[Tensor], Tensor]:
    if getattr(module, "inplace", False):
        return lambda x: module(x.clone())
    return module


_ACTIVATIONS = (
    nn.ELU, nn.GELU, nn.Hardsigmoid, nn.Hardswish, nn.Hardtanh, nn.LeakyReLU, nn.Mish, nn.ReLU, nn.ReLU6, nn.SELU,
    nn.SiLU, nn.Sigmoid, nn.Softplus, nn.Tanh,
)  # fmt: skip
_IDENTITIES = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.AlphaDropout, nn.Identity)
_DENSE_MODULES = (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.Flatten, nn.Softmax, nn.LogSoftmax)
_POINTWISE_FUNCTIONS = {
    F.relu, torch.relu, F.relu6, F.hardtanh, F.leaky_relu, F.elu, F.silu, F.gelu, F.hardswish, F.hardsigmoid,
    F.mish, torch.sigmoid, torch.tanh, F.sigmoid, F.tanh,
}  # fmt: skip
_BINARY_FUNCTIONS = {
    operator.add: operator.add, operator.iadd: operator.add, torch.add: torch.add,
    operator.sub: operator.sub, operator.isub: operator.sub, torch.sub: torch.sub,
    operator.mul: operator.mul, operator.imul: operator.mul, torch.mul: torch.mul,
}  # fmt: skip
_DENSE_FUNCTIONS = {F.adaptive_avg_pool2d, F.adaptive_max_pool2d, F.linear, F.avg_pool2d, F.max_pool2d, F.softmax}
_POINTWISE_METHODS = {"relu", "sigmoid", "tanh", "contiguous", "add", "mul", "sub"}


def _module_op(module: nn.Module, name: str) -> tuple[str, dict[str, Any]]:
    """``(kind, Op fields)`` for a call of ``module``, or :class:`UnsupportedModelError`."""
    kind_name = type(module).__name__
    if isinstance(module, nn.Conv2d):
        if module.padding_mode != "zeros" or isinstance(module.padding, str):
            raise UnsupportedModelError(f"{name}: Conv2d with padding={module.padding!r}, mode {module.padding_mode!r}")
        m = module
        return "spatial", dict(
            call=lambda v: F.conv2d(v[0], m.weight, m.bias, m.stride, m.padding, m.dilation, m.groups),
            patch_call=lambda x: F.conv2d(x, m.weight, m.bias, m.stride, 0, m.dilation, m.groups),
            geometry=_geometry(m.kernel_size, m.stride, m.padding, m.dilation),
            macs_per_output=m.in_channels // m.groups * m.kernel_size[0] * m.kernel_size[1],
        )
    if isinstance(module, nn.MaxPool2d):
        if module.return_indices:
            raise UnsupportedModelError(f"{name}: MaxPool2d with return_indices=True")
        m = module
        return "spatial", dict(
            call=lambda v: F.max_pool2d(v[0], m.kernel_size, m.stride, m.padding, m.dilation, m.ceil_mode),
            patch_call=lambda x: F.max_pool2d(x, m.kernel_size, m.stride, 0, m.dilation),
            geometry=_geometry(m.kernel_size, m.stride, m.padding, m.dilation),
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
            geometry=_geometry(m.kernel_size, m.stride, m.padding, 1),
            ceil_mode=m.ceil_mode,
        )
    if isinstance(module, nn.BatchNorm2d):
        if module.training or module.running_mean is None:
            raise UnsupportedModelError(f"{name}: BatchNorm2d in training mode (or without running statistics)")
        m = module
        return "elementwise", dict(
            call=lambda v: F.batch_norm(v[0], m.running_mean, m.running_var, m.weight, m.bias, False, 0.0, m.eps)
        )
    if isinstance(module, nn.LocalResponseNorm):  # across channels only: spatially pointwise
        m = module
        return "elementwise", dict(call=lambda v: F.local_response_norm(v[0], m.size, m.alpha, m.beta, m.k))
    if isinstance(module, _IDENTITIES):
        if module.training and not isinstance(module, nn.Identity):
            raise UnsupportedModelError(f"{name}: {kind_name} in training mode (random)")
        return "elementwise", dict(call=lambda v: v[0])
    if isinstance(module, _ACTIVATIONS):
        fn = _clone_if_inplace(module)
        return "elementwise", dict(call=lambda v: fn(v[0]))
    if isinstance(module, nn.Linear):
        m = module
        return "dense", dict(call=lambda v: F.linear(v[0], m.weight, m.bias), macs_per_output=m.in_features)
    if isinstance(module, _DENSE_MODULES):
        if isinstance(module, nn.Flatten) and not module.start_dim >= 1:
            raise UnsupportedModelError(
                f"{name}: Flatten(start_dim={module.start_dim}) would merge the batch dimension"
            )
        if isinstance(module, (nn.Softmax, nn.LogSoftmax)) and not (module.dim is not None and module.dim >= 1):
            raise UnsupportedModelError(f"{name}: {kind_name}(dim={module.dim}) mixes examples")
        m = module
        return "dense", dict(call=lambda v: m(v[0]))
    raise UnsupportedModelError(f"{name}: module type {kind_name} is not supported")


def _function_op(node: fx.Node) -> tuple[str, Callable[..., Any]]:
    """``(kind, function)`` of a ``call_function`` / ``call_method`` node, or :class:`UnsupportedModelError`."""
    target, kwargs = node.target, node.kwargs
    if node.op == "call_method":
        if target in _POINTWISE_METHODS:
            return "elementwise", lambda *a, **k: getattr(a[0], target)(*a[1:], **k)
        if target == "flatten" and _start_dim(node) >= 1:
            return "dense", lambda *a, **k: a[0].flatten(*a[1:], **k)
        raise UnsupportedModelError(f"{node.name}: tensor method .{target}() is not supported")
    if target in _POINTWISE_FUNCTIONS:
        return "elementwise", lambda *a, **k: target(*a, **{**k, **({"inplace": False} if "inplace" in k else {})})
    if target in _BINARY_FUNCTIONS:
        return "elementwise", _BINARY_FUNCTIONS[target]
    if target is torch.cat:
        dim = node.args[1] if len(node.args) > 1 else kwargs.get("dim", 0)
        if dim not in (1, -3):
            raise UnsupportedModelError(f"{node.name}: torch.cat along dim {dim} (only channels, dim=1)")
        return "elementwise", torch.cat
    if target is torch.flatten:
        if _start_dim(node) < 1:
            raise UnsupportedModelError(f"{node.name}: torch.flatten from dim 0 would merge the batch dimension")
        return "dense", torch.flatten
    if target in _DENSE_FUNCTIONS:
        return "dense", target
    raise UnsupportedModelError(f"{node.name}: function {getattr(target, '__name__', target)!r} is not supported")


def _start_dim(node: fx.Node) -> int:
    value = node.args[1] if len(node.args) > 1 else node.kwargs.get("start_dim", 0)
    return value if isinstance(value, int) else -1


def _bind(fn: Callable[..., Any], node: fx.Node, order: list[fx.Node]) -> Callable[[list[Any]], Any]:
    args, kwargs = node.args, node.kwargs

    def call(values: list[Any]) -> Any:
        lookup = dict(zip(order, values, strict=True))
        return fn(*fx.node.map_arg(args, lookup.__getitem__), **fx.node.map_arg(kwargs, lookup.__getitem__))

    return call


_traced: weakref.WeakKeyDictionary[nn.Module, tuple[tuple[Any, ...], Any]]
_traced = weakref.WeakKeyDictionary()


def _structure(model: nn.Module) -> tuple[Any, ...]:
    """What a traced graph depends on: the modules (identity, type, mode, forward), parameters and buffers."""
    modules = tuple(
        (name, id(module), type(module), module.training, id(module.__dict__.get("forward")))
        for name, module in model.named_modules()
    )
    tensors = tuple((name, id(tensor)) for name, tensor in (*model.named_parameters(), *model.named_buffers()))
    return modules, tensors


def traced_ops(model: nn.Module) -> tuple[list[Op], dict[str, int]]:
    """:func:`trace_ops`, traced once per model and structure (thread-safe); each call gets its own op copies.

    The cache is weakly keyed on the model and invalidated when a module, parameter or buffer is replaced, added
    or removed, a module changes its training mode or gets its own ``forward``. The traced graph does not depend
    on the input's size: the engine derives what does (which ops run densely) for each sweep.
    """
    key = _structure(model)
    with TRACE_LOCK:
        entry = _traced.get(model)
        if entry is None or entry[0] != key:
            try:
                result: tuple[list[Op], dict[str, int]] | UnsupportedModelError = trace_ops(model)
            except UnsupportedModelError as error:
                result = error  # remembered too: an unsupported model is not traced again on every call
            entry = _traced[model] = (key, result)
    result = entry[1]
    if isinstance(result, UnsupportedModelError):
        raise UnsupportedModelError(str(result))
    ops, module_outputs = result
    return [replace(op, modules=list(op.modules)) for op in ops], dict(module_outputs)


def trace_ops(model: nn.Module) -> tuple[list[Op], dict[str, int]]:
    """Trace ``model`` with ``torch.fx`` into the op list (topological order; the last op is the output).

    Returns:
        ``(ops, module_outputs)``: the ops, and for every module called exactly once the index of the op
        that produced its output (by qualified name).

    Raises:
        UnsupportedModelError: the model cannot be traced, or uses an op outside the table (the message names it).

    Example:
        >>> import torch
        >>> model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.Flatten()).eval()
        >>> ops, outputs = trace_ops(model)
        >>> [op.kind for op in ops], outputs["0"]
        (['input', 'spatial', 'elementwise', 'dense', 'output'], 1)
    """
    tracer = _Tracer()
    try:
        graph = tracer.trace(model, concrete_args=_defaults(model))
    except Exception as error:  # fx raises many types (TraceError, TypeError, NotImplementedError...)
        if not _is_zfnet(model):
            first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise UnsupportedModelError(
                f"torch.fx cannot trace the model ({type(error).__name__}: {first[:160]})"
            ) from None
        graph = tracer.trace(_Children(model))  # ZFNet's forward: a shape check, then its children in order
    for node in reversed(list(graph.nodes)):  # checks of the specialised default arguments
        if node.op == "call_function" and node.target in (torch._assert, fx._symbolic_trace._assert_is_none):
            graph.erase_node(node)
    root = fx.GraphModule(tracer.root, graph)
    graph.eliminate_dead_code()
    ops: list[Op] = []
    index: dict[fx.Node, int] = {}
    for node in graph.nodes:
        operands = [n for n in node.all_input_nodes]
        inputs = tuple(index[n] for n in operands)
        if node.op == "placeholder" and not node.users and node.args:
            continue  # an unused argument with a default value
        if node.op == "placeholder":
            if any(op.kind == "input" for op in ops):
                raise UnsupportedModelError("the model's forward takes more than one tensor argument")
            op = Op(node.name, "input")
        elif node.op == "get_attr":
            value = root
            for part in str(node.target).split("."):
                value = getattr(value, part)
            op = Op(node.name, "const", value=value)
        elif node.op == "output":
            if not isinstance(node.args[0], fx.Node):
                raise UnsupportedModelError("the model returns a tuple, list or dict, not one tensor")
            op = Op(node.name, "output", inputs=inputs, call=lambda v: v[0])
        elif node.op == "call_module":
            kind, fields = _module_op(root.get_submodule(str(node.target)), str(node.target))
            if len(operands) != 1 or node.kwargs:
                raise UnsupportedModelError(
                    f"{node.target}: module called with {len(operands)} tensors or keyword arguments"
                )
            op = Op(node.name, kind, inputs=inputs, **fields)
        else:
            kind, fn = _function_op(node)
            op = Op(node.name, kind, inputs=inputs, call=_bind(fn, node, operands))
        index[node] = len(ops)
        ops.append(op)
    module_outputs = {  # a module whose output nothing reads was removed with the dead code
        name: index[nodes[0]] for name, nodes in tracer.module_outputs.items() if len(nodes) == 1 and nodes[0] in index
    }
    for name, position in module_outputs.items():
        ops[position].modules.append(name)
    return ops, module_outputs
