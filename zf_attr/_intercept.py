"""The one interception mechanism: every rectifier and max-pool *call* of a forward pass, however it is made.

A :class:`torch.overrides.TorchFunctionMode` sees every torch function call made while it is active, so it
catches ``nn.ReLU`` modules (they call ``F.relu``), in-place and shared ones, functional ``F.relu`` /
``torch.relu`` / ``relu_`` / ``Tensor.relu``, ``ReLU6`` (``F.relu6`` and the ``F.hardtanh(x, 0, 6)`` form),
``LeakyReLU`` and ``nn.MaxPool2d`` / ``F.max_pool2d`` alike. Forward pre/post hooks on the model's modules
(handles kept, removed in ``__exit__``) only tell it which module is running, to name each call.

Nothing of the model is replaced or modified: rectifier calls are rerouted through
:class:`~zf_attr.rules.RectifierFunction`, which computes the same forward values and applies the chosen
backward rule; max-pool calls are computed with ``return_indices=True`` to record their switches.
"""

from __future__ import annotations

import functools
import inspect
from collections import Counter
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from zf_attr._lifecycle import (
    Attachment,
    call_running,
    caller_frame,
    live_attachments,
    mode_is_active,
    recover_stale,
)
from zf_attr.rules import (
    NONRECTIFIER_POLICIES,
    BackwardRule,
    Rectifier,
    RectifierFunction,
    ReluishFunction,
    SkipBackwardFunction,
    bind_first_argument,
    get_rule,
)
from zf_attr.switches import ActivationCall, ForwardTrace, PoolSwitches

__all__ = ["Interceptor", "intercept", "record_switches"]

Handler = Callable[[Any, tuple, dict], Any]


def _functions(*candidates: Any) -> list[Any]:
    """The distinct callables among ``candidates`` that exist in this torch version."""
    found: list[Any] = []
    for candidate in candidates:
        if candidate is not None and all(candidate is not seen for seen in found):
            found.append(candidate)
    return found


def _maybe(owner: Any, name: str) -> Any:
    return getattr(owner, name, None)


_RELU = _functions(F.relu, torch.relu, torch.Tensor.relu)
_RELU_INPLACE = _functions(torch.relu_, torch.Tensor.relu_, _maybe(F, "relu_"))
_RELU6 = _functions(F.relu6)
_HARDTANH = _functions(F.hardtanh)
_HARDTANH_INPLACE = _functions(_maybe(F, "hardtanh_"))
_LEAKY = _functions(F.leaky_relu)
_LEAKY_INPLACE = _functions(_maybe(F, "leaky_relu_"))
_MAX_POOL = _functions(F.max_pool2d, F.max_pool2d_with_indices, torch.max_pool2d)
_POOL_ARGUMENTS = ("input", "kernel_size", "stride", "padding", "dilation", "ceil_mode", "return_indices")

# (functions, kind, ReLU-like?) for activations that are not rectifiers
_OTHER_ACTIVATIONS: list[tuple[list[Any], str, bool]] = [
    (_functions(F.silu), "SiLU", True),
    (_functions(F.gelu), "GELU", True),
    (_functions(F.hardswish), "Hardswish", True),
    (_functions(F.elu, _maybe(F, "elu_")), "ELU", True),
    (_functions(F.celu, _maybe(F, "celu_")), "CELU", True),
    (_functions(F.selu, _maybe(F, "selu_")), "SELU", True),
    (_functions(F.mish), "Mish", True),
    (_functions(F.softplus), "Softplus", True),
    (_functions(F.prelu), "PReLU", False),
    (_functions(F.rrelu, _maybe(F, "rrelu_")), "RReLU", False),
    (
        _functions(torch.sigmoid, torch.Tensor.sigmoid, F.sigmoid, torch.sigmoid_, torch.Tensor.sigmoid_),
        "sigmoid",
        False,
    ),
    (_functions(F.hardsigmoid), "Hardsigmoid", False),
    (_functions(torch.tanh, torch.Tensor.tanh, F.tanh, torch.tanh_, torch.Tensor.tanh_), "tanh", False),
    (_functions(F.softsign), "Softsign", False),
    (_functions(F.logsigmoid), "LogSigmoid", False),
    (_functions(F.glu), "GLU", False),
]

_NORMALIZATIONS: list[tuple[list[Any], str]] = [
    (_functions(F.batch_norm), "BatchNorm"),
    (_functions(F.local_response_norm), "LocalResponseNorm"),
    (_functions(F.layer_norm), "LayerNorm"),
    (_functions(F.group_norm), "GroupNorm"),
    (_functions(F.instance_norm), "InstanceNorm"),
    (_functions(_maybe(F, "rms_norm")), "RMSNorm"),
]


def _arguments(args: tuple, kwargs: dict, names: tuple[str, ...], defaults: dict[str, Any]) -> dict[str, Any]:
    """Bind positional and keyword arguments to ``names`` (a function's parameter order)."""
    bound = dict(defaults)
    bound.update(zip(names, args, strict=False))
    bound.update(kwargs)
    return bound


def _pair(value: Any) -> tuple[int, int]:
    if isinstance(value, (list, tuple)):
        return (int(value[0]), int(value[-1])) if value else (0, 0)
    return (int(value), int(value))


def _is_torch_layer(module: nn.Module | None) -> bool:
    """A built-in ``torch.nn`` layer without children (``nn.ReLU``, ``nn.MaxPool2d``): its calls carry its name."""
    return (
        module is not None
        and type(module).__module__.startswith("torch.nn.modules")
        and next(module.children(), None) is None
    )


def _function_name(func: Any) -> str:
    return getattr(func, "__name__", None) or str(func)


class _InterceptMode(TorchFunctionMode):
    """Routes the functions the interceptor cares about to its handlers; everything else runs as is."""

    def __init__(self, handlers: dict[Any, Handler], attachment: Attachment) -> None:
        super().__init__()
        self._handlers = handlers
        self._attachment = attachment

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        if not self._attachment.armed:  # left on the stack by an interrupt: pass everything through
            return func(*args, **kwargs)
        try:
            handler = self._handlers.get(func)
        except TypeError:  # an unhashable callable: not one of ours
            handler = None
        if handler is None:
            return func(*args, **kwargs)
        return handler(func, args, kwargs)


class Interceptor:
    """Context manager that sees every rectifier and max-pool call of ``model`` and applies a backward rule.

    Entering returns a :class:`~zf_attr.switches.ForwardTrace` that fills up as forward passes run inside
    the context. Backward passes may run inside or after the context: the rule travels with the graph.
    On exit every hook is removed and the mode is popped, also when the forward pass raised.

    The hooks and the mode belong to the entering thread: other threads' forward passes of the same model are
    neither recorded nor rerouted. An interrupt at any line of entering or leaving leaves at most a disarmed
    remainder, which the next zf_attr call or context in that thread removes (:mod:`zf_attr._lifecycle`).

    Args:
        model: the network; an ``nn.Module`` gives calls their module names, any other callable is allowed
            (calls are then named ``"<model>:relu"``, ...).
        rule: backward rule at rectifiers: ``"deconvnet"``, ``"guided"``, ``"gradient"`` (no change) or a
            :class:`~zf_attr.rules.BackwardRule`.
        skip_normalization: strict Zeiler–Fergus: BatchNorm, LRN, LayerNorm, GroupNorm and InstanceNorm pass
            the signal down unchanged (identity) instead of through their Jacobian.
        nonrectifier_policy: what non-rectifying activations do, see
            :data:`zf_attr.rules.NONRECTIFIER_POLICIES`.

    Example:
        >>> import torch, torch.nn as nn, torch.nn.functional as F
        >>> from zf_attr import intercept
        >>> class Net(nn.Module):
        ...     def forward(self, x):
        ...         return F.max_pool2d(F.relu(x), 2).sum(dim=(1, 2, 3))
        >>> net, x = Net(), torch.randn(1, 1, 4, 4, requires_grad=True)
        >>> with intercept(net, rule="deconvnet") as trace:
        ...     y = net(x)
        >>> [call.name for call in trace.rectifiers], trace.pool_names
        (['<model>:relu'], ['<model>:max_pool2d'])
    """

    def __init__(
        self,
        model: Callable[..., Any],
        rule: str | BackwardRule = "gradient",
        *,
        skip_normalization: bool = False,
        nonrectifier_policy: str = "gradient",
    ) -> None:
        if not callable(model):
            raise TypeError(f"model must be a torch.nn.Module or a callable, got {type(model).__name__}")
        if nonrectifier_policy not in NONRECTIFIER_POLICIES:
            raise ValueError(
                f"nonrectifier_policy={nonrectifier_policy!r} is not known; choose one of {list(NONRECTIFIER_POLICIES)}"
            )
        self.model = model
        self.rule = get_rule(rule)
        self.skip_normalization = skip_normalization
        self.nonrectifier_policy = nonrectifier_policy
        self.trace = ForwardTrace()
        self._attachment: Attachment | None = None
        self._stack: list[tuple[str, nn.Module]] = []
        self._counts: Counter[str] = Counter()
        self._handlers: dict[Any, Handler] = {}  # built on entering, dropped on leaving (they refer to self)

    # ------------------------------------------------------------------ lifecycle
    def __enter__(self) -> ForwardTrace:
        internal = call_running()
        if not internal:
            recover_stale()  # a user's context: first finish undoing what an interrupted call left behind
        if any(other.armed and mode_is_active(other.mode) for other in live_attachments()):
            raise RuntimeError(
                "a zf_attr interception is already active in this thread; nested attributions are not supported"
            )
        attachment = self._attachment = Attachment(None if internal else caller_frame())
        try:
            if isinstance(self.model, nn.Module):
                for name, module in self.model.named_modules():
                    attachment.hook(module.register_forward_pre_hook, functools.partial(self._push, name))
                    attachment.hook(module.register_forward_hook, self._pop, always_call=True)
            self._handlers = self._build_handlers()
            attachment.mode = _InterceptMode(self._handlers, attachment)
            return attachment.mode.__enter__() and self.trace  # one line: pushed and returned, or neither
        except BaseException:
            attachment.close()
            raise

    def __exit__(self, *exc_info: object) -> bool:
        try:
            if self._attachment is not None:
                self._attachment.close()
        finally:
            self._stack.clear()
            # without this cycle (self -> handlers -> bound methods -> self), the interceptor and its trace of
            # the call's switches go as soon as the caller drops them, not at the next full garbage collection
            self._handlers = {}
        return False

    def _push(self, name: str, module: nn.Module, args: Any) -> None:
        self._stack.append((name, module))

    def _pop(self, module: nn.Module, args: Any, output: Any) -> None:
        if self._stack and self._stack[-1][1] is module:
            self._stack.pop()

    # ------------------------------------------------------------------ naming
    def _name(self, function: str) -> tuple[str, str, int]:
        """Unique name of the call being made now, the module making it, and the call's index under its name."""
        module_name, module = self._stack[-1] if self._stack else ("", None)
        owner = module_name or "<model>"
        base = owner if _is_torch_layer(module) else f"{owner}:{function}"
        count = self._counts[base]
        self._counts[base] += 1
        return (base if count == 0 else f"{base}#{count}"), module_name, count

    # ------------------------------------------------------------------ handlers
    def _build_handlers(self) -> dict[Any, Handler]:
        handlers: dict[Any, Handler] = {}

        def register(functions: list[Any], handler: Handler) -> None:
            for function in functions:
                handlers[function] = handler

        register(_RELU, functools.partial(self._on_rectifier, self._parse_relu, False))
        register(_RELU_INPLACE, functools.partial(self._on_rectifier, self._parse_relu, True))
        register(_RELU6, functools.partial(self._on_rectifier, self._parse_relu6, False))
        register(_HARDTANH, functools.partial(self._on_rectifier, self._parse_hardtanh, False))
        register(_HARDTANH_INPLACE, functools.partial(self._on_rectifier, self._parse_hardtanh, True))
        register(_LEAKY, functools.partial(self._on_rectifier, self._parse_leaky, False))
        register(_LEAKY_INPLACE, functools.partial(self._on_rectifier, self._parse_leaky, True))
        register(_MAX_POOL, self._on_max_pool)
        for functions, kind, reluish in _OTHER_ACTIVATIONS:
            register(functions, functools.partial(self._on_other_activation, kind, reluish))
        for functions, kind in _NORMALIZATIONS:
            register(functions, functools.partial(self._on_normalization, kind))
        return handlers

    @staticmethod
    def _parse_relu(args: tuple, kwargs: dict, inplace: bool) -> tuple[Tensor, Rectifier | None, bool]:
        bound = _arguments(args, kwargs, ("input", "inplace"), {"inplace": False})
        return bound["input"], Rectifier.relu(), inplace or bool(bound["inplace"])

    @staticmethod
    def _parse_relu6(args: tuple, kwargs: dict, inplace: bool) -> tuple[Tensor, Rectifier | None, bool]:
        bound = _arguments(args, kwargs, ("input", "inplace"), {"inplace": False})
        return bound["input"], Rectifier.clipped(6.0), inplace or bool(bound["inplace"])

    @staticmethod
    def _parse_hardtanh(args: tuple, kwargs: dict, inplace: bool) -> tuple[Tensor, Rectifier | None, bool]:
        names = ("input", "min_val", "max_val", "inplace")
        bound = _arguments(args, kwargs, names, {"min_val": -1.0, "max_val": 1.0, "inplace": False})
        is_rectifier = float(bound["min_val"]) == 0.0 and float(bound["max_val"]) > 0.0
        rectifier = Rectifier.clipped(float(bound["max_val"])) if is_rectifier else None
        return bound["input"], rectifier, inplace or bool(bound["inplace"])

    @staticmethod
    def _parse_leaky(args: tuple, kwargs: dict, inplace: bool) -> tuple[Tensor, Rectifier | None, bool]:
        names = ("input", "negative_slope", "inplace")
        bound = _arguments(args, kwargs, names, {"negative_slope": 0.01, "inplace": False})
        return bound["input"], Rectifier.leaky(float(bound["negative_slope"])), inplace or bool(bound["inplace"])

    def _on_rectifier(self, parse: Callable, inplace: bool, func: Any, args: tuple, kwargs: dict) -> Any:
        x, rectifier, inplace = parse(args, kwargs, inplace)
        if rectifier is None:  # hardtanh with a negative lower bound: not a rectifier
            return self._on_other_activation("Hardtanh", False, func, args, kwargs)
        name, module_name, _ = self._name(_function_name(func))
        treatment = "rule" if self.rule.modifies_backward else "gradient"
        self.trace.rectifiers.append(
            ActivationCall(name, module_name, _function_name(func), rectifier.label, treatment)
        )
        if not self.rule.modifies_backward:
            return func(*args, **kwargs)
        return RectifierFunction.apply(x, rectifier, self.rule, inplace)

    def _on_max_pool(self, func: Any, args: tuple, kwargs: dict) -> Any:
        defaults = {"stride": None, "padding": 0, "dilation": 1, "ceil_mode": False, "return_indices": False}
        bound = _arguments(args, kwargs, _POOL_ARGUMENTS, defaults)
        x = bound["input"]
        stride = bound["stride"] if bound["stride"] not in (None, [], ()) else None
        output, indices = F.max_pool2d(
            x, bound["kernel_size"], stride, bound["padding"], bound["dilation"],
            ceil_mode=bool(bound["ceil_mode"]), return_indices=True,
        )  # fmt: skip
        name, module_name, call_index = self._name("max_pool2d")
        self.trace.pools.append(
            PoolSwitches(
                name=name,
                module_name=module_name,
                call_index=call_index,
                indices=indices.detach(),
                input_shape=x.shape,
                output_shape=output.shape,
                kernel_size=_pair(bound["kernel_size"]),
                stride=_pair(stride if stride is not None else bound["kernel_size"]),
                padding=_pair(bound["padding"]),
                dilation=_pair(bound["dilation"]),
                ceil_mode=bool(bound["ceil_mode"]),
            )
        )
        if bound["return_indices"] or func is F.max_pool2d_with_indices:
            return output, indices
        return output

    def _on_other_activation(self, kind: str, reluish: bool, func: Any, args: tuple, kwargs: dict) -> Any:
        name, module_name, _ = self._name(_function_name(func))

        def record(treatment: str) -> None:
            call = ActivationCall(name, module_name, _function_name(func), kind, treatment)
            self.trace.other_activations.append(call)

        if self.rule.modifies_backward and self.nonrectifier_policy == "error":
            raise ValueError(
                f"{kind} at {name!r} is not a rectifier and nonrectifier_policy='error'; pass "
                "nonrectifier_policy='gradient' to let it pass its true gradient or 'rectify' to treat "
                "ReLU-like activations as rectifiers"
            )
        if self.rule.modifies_backward and self.nonrectifier_policy == "rectify" and reluish:
            x, function, inplace = _out_of_place(func, args, kwargs)
            record("rectified")
            return ReluishFunction.apply(x, function, self.rule, inplace)
        record("gradient")
        return func(*args, **kwargs)

    def _on_normalization(self, kind: str, func: Any, args: tuple, kwargs: dict) -> Any:
        name, module_name, _ = self._name(_function_name(func))
        treatment = "skipped" if self.skip_normalization else "gradient"
        self.trace.normalizations.append(ActivationCall(name, module_name, _function_name(func), kind, treatment))
        if not self.skip_normalization:
            return func(*args, **kwargs)
        if not args:
            kwargs = dict(kwargs)
            args = (kwargs.pop("input"),)
        return SkipBackwardFunction.apply(args[0], bind_first_argument(func, args, kwargs))


def _out_of_place(func: Any, args: tuple, kwargs: dict) -> tuple[Tensor, Callable[[Tensor], Tensor], bool]:
    """Split an activation call into (input, out-of-place function of the input, was it in place)."""
    try:
        signature = inspect.signature(func)
    except (TypeError, ValueError):  # a builtin without a signature: such activations take no inplace flag
        return args[0], bind_first_argument(func, args, kwargs), False
    bound = signature.bind(*args, **kwargs)
    inplace = bool(bound.arguments.get("inplace", False))
    if "inplace" in bound.arguments:
        bound.arguments["inplace"] = False
    first = next(iter(bound.arguments.values()))
    return first, bind_first_argument(func, tuple(bound.args), dict(bound.kwargs)), inplace


def intercept(
    model: Callable[..., Any],
    rule: str | BackwardRule = "gradient",
    *,
    skip_normalization: bool = False,
    nonrectifier_policy: str = "gradient",
) -> Interceptor:
    """Intercept every rectifier and max-pool call of ``model`` while the returned context is active.

    See :class:`Interceptor` for the arguments. Example::

        with zf_attr.intercept(model, rule="deconvnet") as trace:
            scores = model(images)
        scores[:, 3].sum().backward()   # the deconvnet signal lands in images.grad
    """
    return Interceptor(
        model,
        rule,
        skip_normalization=skip_normalization,
        nonrectifier_policy=nonrectifier_policy,
    )


def record_switches(model: Callable[..., Any]) -> Interceptor:
    """Record the switches of every max-pool call of ``model``; the backward pass is left unchanged.

    Example:
        >>> import torch, torchvision
        >>> import zf_attr
        >>> model = torchvision.models.resnet18().eval()
        >>> with zf_attr.record_switches(model) as trace:
        ...     _ = model(torch.randn(1, 3, 64, 64))
        >>> trace.pool_names, tuple(trace.pool("maxpool").indices.shape)
        (['maxpool'], (1, 64, 16, 16))
    """
    return Interceptor(model, "gradient")
