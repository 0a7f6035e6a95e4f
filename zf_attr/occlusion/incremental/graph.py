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
from torch import Tensor, fx, nn

from zf_attr._fx import TRACE_LOCK, ThreadSafeTracer
from zf_attr.occlusion.incremental.regions import AxisGeometry
from zf_attr.occlusion.incremental.table import POINTWISE, TUPLE_METHODS, UnsupportedOpError, is_shape_node
from zf_attr.occlusion.incremental.table import function_op as _function_op
from zf_attr.occlusion.incremental.table import module_op as _module_op

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
        modules: the qualified names of the modules whose output this op is.
        rule: which dims the op mixes or moves (see :mod:`.table`); :mod:`.layouts` decides from it and the
            shapes whether an ``"elementwise"`` op is spatially pointwise where it runs.
        size_only: positions in ``inputs`` of the values the op reads only through their sizes.
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
    rule: tuple[Any, ...] = POINTWISE
    size_only: tuple[int, ...] = ()


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


def _bind(fn: Callable[..., Any], node: fx.Node, order: list[fx.Node]) -> Callable[[list[Any]], Any]:
    """``fn`` applied to the node's arguments, given the values of the tensors ``order`` it reads.

    Folded nodes among the arguments (sizes such as ``x.size(0) // 2``, tuples such as ``x.chunk(2, 1)``) are
    computed from those tensors on every call, so a size read from a patch is the patch's size.
    """
    args, kwargs = node.args, node.kwargs

    def call(values: list[Any]) -> Any:
        # no closure that refers to itself: such a cycle would keep every call's tensors alive until the
        # garbage collector ran (ResNet-18's sweep under a 128 MiB budget grew by 300 MiB)
        lookup = dict(zip(order, values, strict=True))
        return fn(*_evaluated(args, lookup), **_evaluated(kwargs, lookup))

    return call


def _evaluated(arguments: Any, lookup: dict[fx.Node, Any]) -> Any:
    """``arguments`` with every node replaced by its value: from ``lookup``, or computed (folded nodes)."""
    return fx.node.map_arg(arguments, lambda n: _value(n, lookup))


def _value(n: fx.Node, lookup: dict[fx.Node, Any]) -> Any:
    if n not in lookup:
        a, k = _evaluated(n.args, lookup), _evaluated(n.kwargs, lookup)
        lookup[n] = getattr(a[0], str(n.target))(*a[1:], **k) if n.op == "call_method" else n.target(*a, **k)
    return lookup[n]


def _is_tuple_node(node: fx.Node) -> bool:
    if node.op == "call_method":
        return node.target in TUPLE_METHODS
    return node.op == "call_function" and node.target in TUPLE_METHODS.values()


def _operands(node: fx.Node, folded: set[fx.Node]) -> list[fx.Node]:
    """The tensor nodes ``node`` reads, directly or through folded size and tuple nodes (in order, once each)."""
    result: list[fx.Node] = []
    for n in node.all_input_nodes:
        for leaf in _operands(n, folded) if n in folded else [n]:
            if leaf not in result:
                result.append(leaf)
    return result


def _read_for_size_only(node: fx.Node, operands: list[fx.Node], shapes: set[fx.Node]) -> tuple[int, ...]:
    """Positions in ``operands`` of the tensors ``node`` reads only through their sizes (``x.size()``)."""
    data: set[fx.Node] = set()
    pending = [n for n in node.all_input_nodes if n not in shapes]
    while pending:  # through tuple nodes (x.chunk(2, 1)) the data itself is read
        n = pending.pop()
        if n in operands:
            data.add(n)
        else:
            pending.extend(m for m in n.all_input_nodes if m not in shapes)
    return tuple(k for k, n in enumerate(operands) if n not in data)


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
    shapes: set[fx.Node] = set()
    tuples: set[fx.Node] = set()
    for node in graph.nodes:
        if node.op in ("call_function", "call_method") and is_shape_node(node, shapes):
            shapes.add(node)  # folded: computed by the ops that read it, from their inputs
            continue
        if _is_tuple_node(node):
            tuples.add(node)  # folded: each getitem of it is one op
            continue
        operands = _operands(node, shapes | tuples)
        inputs = tuple(index[n] for n in operands)
        if node.op == "placeholder" and not node.users and node.args:
            continue  # an unused argument with a default value
        try:
            op = _node_op(node, root, inputs, operands, tuples, ops)
        except UnsupportedOpError as error:
            raise UnsupportedModelError(str(error)) from None
        op.size_only = _read_for_size_only(node, operands, shapes)
        index[node] = len(ops)
        ops.append(op)
    module_outputs = {  # a module whose output nothing reads was removed with the dead code
        name: index[nodes[0]] for name, nodes in tracer.module_outputs.items() if len(nodes) == 1 and nodes[0] in index
    }
    for name, position in module_outputs.items():
        ops[position].modules.append(name)
    return ops, module_outputs


def _node_op(
    node: fx.Node,
    root: fx.GraphModule,
    inputs: tuple[int, ...],
    operands: list[fx.Node],
    tuples: set[fx.Node],
    ops: list[Op],
) -> Op:
    """The :class:`Op` of one (unfolded) node."""
    if node.op == "placeholder":
        if any(op.kind == "input" for op in ops):
            raise UnsupportedModelError("the model's forward takes more than one tensor argument")
        return Op(node.name, "input")
    if node.op == "get_attr":
        value = root
        for part in str(node.target).split("."):
            value = getattr(value, part)
        return Op(node.name, "const", value=value)
    if node.op == "output":
        if not isinstance(node.args[0], fx.Node):
            raise UnsupportedModelError("the model returns a tuple, list or dict, not one tensor")
        return Op(node.name, "output", inputs=inputs, call=lambda v: v[0])
    if node.op == "call_module":
        kind, fields = _module_op(root.get_submodule(str(node.target)), str(node.target))
        if len(operands) != 1 or node.kwargs:
            raise UnsupportedModelError(
                f"{node.target}: module called with {len(operands)} tensors or keyword arguments"
            )
        return Op(node.name, kind, inputs=inputs, **fields)
    source = node.args[0] if node.args else None
    if node.target is operator.getitem and isinstance(source, fx.Node) and source in tuples:
        dim = source.args[2] if len(source.args) > 2 else source.kwargs.get("dim", 0)
        if dim == 0:
            raise UnsupportedModelError(f"{source.name}: .{source.target}() along dim 0 splits the batch")
        call = _bind(operator.getitem, node, operands)
        return Op(node.name, "elementwise", inputs=inputs, call=call, rule=("pointwise", (dim,)))
    kind, fn, rule = _function_op(node)
    return Op(node.name, kind, inputs=inputs, call=_bind(fn, node, operands), rule=rule)
