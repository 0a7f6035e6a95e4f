"""Backward rules applied at rectifier calls, and the autograd functions that apply them.

A *rule* says what happens to the signal travelling down through a rectifier:

========== ===================================================== ==========================
rule       signal passed down through ``y = r(x)``               reference
========== ===================================================== ==========================
deconvnet  ``rect(g)``: the signal itself is rectified; the        Zeiler & Fergus 2014, §2.1
           forward pass's on/off pattern is ignored
guided     ``rect(g * r'(x))``: the true gradient, rectified       Springenberg et al. 2015
gradient   ``g * r'(x)``: the true gradient (nothing changed)      plain backpropagation
========== ===================================================== ==========================

``rect`` is the *rectifying part* of the non-linearity: ``relu`` for ``ReLU`` and ``ReLU6`` (the clip at 6
is a saturation, and a backward signal has no natural scale to clip it at), ``leaky_relu`` with the
layer's own slope for ``LeakyReLU``.

Non-rectifying activations (SiLU, GELU, Hardswish, sigmoid gates, ...) are governed by a separate policy,
see :data:`NONRECTIFIER_POLICIES`.

Example:
    >>> import torch
    >>> from zf_attr.rules import get_rule, Rectifier
    >>> rule = get_rule("deconvnet")
    >>> out = torch.tensor([0.0, 2.0])          # forward output of a ReLU
    >>> rule.rectifier_backward(torch.tensor([3.0, -1.0]), Rectifier.relu(), out)
    tensor([3., 0.])
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "NONRECTIFIER_POLICIES",
    "RULES",
    "BackwardRule",
    "DeconvnetRule",
    "GradientRule",
    "GuidedBackpropRule",
    "NonrectifierPolicy",
    "Rectifier",
    "RuleName",
    "get_rule",
]

RuleName = Literal["deconvnet", "guided", "gradient"]
NonrectifierPolicy = Literal["gradient", "rectify", "error"]

#: Policies for activations that are not rectifiers (SiLU, GELU, Hardswish, ELU, sigmoid, tanh, ...):
#:
#: * ``"gradient"`` (default): they pass their true local gradient; the attribution warns once, naming them.
#: * ``"rectify"``: the ReLU-like ones (SiLU, GELU, Hardswish, ELU, CELU, SELU, Mish, Softplus) are treated
#:   like rectifiers under the rule (deconvnet: ``relu(g)``; guided: ``relu(g * f'(x))``); gates
#:   (sigmoid, hardsigmoid, tanh, ...) keep their gradient. The attribution still warns once.
#: * ``"error"``: the forward pass raises ``ValueError`` at the first such activation.
NONRECTIFIER_POLICIES: tuple[str, ...] = ("gradient", "rectify", "error")


@dataclass(frozen=True)
class Rectifier:
    """A rectifying non-linearity as seen at one call: ``relu``, clipped relu, or leaky relu.

    Attributes:
        kind: ``"relu"``, ``"clipped"`` (``hardtanh`` with lower bound 0, e.g. ``ReLU6``) or ``"leaky"``.
        upper: the clip value of a clipped rectifier (6 for ``ReLU6``), else ``None``.
        negative_slope: slope below zero of a leaky rectifier, else 0.
    """

    kind: Literal["relu", "clipped", "leaky"]
    upper: float | None = None
    negative_slope: float = 0.0

    @classmethod
    def relu(cls) -> Rectifier:
        """The plain rectifier ``max(x, 0)``."""
        return cls("relu")

    @classmethod
    def clipped(cls, upper: float) -> Rectifier:
        """The clipped rectifier ``min(max(x, 0), upper)`` (``ReLU6`` is ``clipped(6)``)."""
        return cls("clipped", upper=float(upper))

    @classmethod
    def leaky(cls, negative_slope: float) -> Rectifier:
        """The leaky rectifier with the given slope below zero."""
        return cls("leaky", negative_slope=float(negative_slope))

    @property
    def label(self) -> str:
        """Short human name, e.g. ``"ReLU6"``."""
        if self.kind == "relu":
            return "ReLU"
        if self.kind == "leaky":
            return f"LeakyReLU({self.negative_slope:g})"
        return "ReLU6" if self.upper == 6.0 else f"Hardtanh(0, {self.upper:g})"

    def forward(self, x: Tensor, inplace: bool) -> Tensor:
        """Compute the forward non-linearity exactly as torch does."""
        if self.kind == "relu":
            return torch.relu_(x) if inplace else torch.relu(x)
        if self.kind == "leaky":
            return F.leaky_relu(x, self.negative_slope, inplace=inplace)
        return F.hardtanh(x, 0.0, self.upper, inplace=inplace)

    def derivative(self, output: Tensor) -> Tensor:
        """Local derivative ``r'(x)``, read from the forward *output* (valid for in-place calls too)."""
        if self.kind == "relu":
            return (output > 0).to(output.dtype)
        if self.kind == "leaky":
            positive = (output > 0).to(output.dtype)
            return positive + (1 - positive) * self.negative_slope
        return ((output > 0) & (output < self.upper)).to(output.dtype)

    def rectify(self, signal: Tensor) -> Tensor:
        """The rectifying part applied to a backward signal."""
        if self.kind == "leaky":
            return F.leaky_relu(signal, self.negative_slope)
        return torch.relu(signal)


class BackwardRule:
    """Base class of backward rules: one method says what a rectifier passes down.

    Subclass and override :meth:`rectifier_backward` to define a new rule; give it a unique ``name``.
    """

    name: str = ""
    #: whether rectifier calls must be rerouted through the rule (``False`` for the plain gradient)
    modifies_backward: bool = True

    def rectifier_backward(self, grad_output: Tensor, rectifier: Rectifier, output: Tensor) -> Tensor:
        """Signal passed to the rectifier's input, given the signal at its output.

        Args:
            grad_output: backward signal arriving at the rectifier's output.
            rectifier: which rectifier was called.
            output: the rectifier's forward output (the input may have been overwritten in place).

        Returns:
            Signal for the rectifier's input, same shape as ``grad_output``.
        """
        raise NotImplementedError

    def reluish_backward(self, grad_output: Tensor, local_gradient: Callable[[Tensor], Tensor]) -> Tensor:
        """Signal through a ReLU-like non-rectifier under the ``"rectify"`` policy.

        Args:
            grad_output: backward signal at the activation's output.
            local_gradient: maps a signal ``g`` to ``g * f'(x)`` (the true vector-Jacobian product).
        """
        return local_gradient(grad_output)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class DeconvnetRule(BackwardRule):
    """Zeiler & Fergus: rectify the signal, ignoring the forward pass's on/off pattern."""

    name = "deconvnet"

    def rectifier_backward(self, grad_output: Tensor, rectifier: Rectifier, output: Tensor) -> Tensor:
        """``rect(g)``: the signal itself is rectified."""
        return rectifier.rectify(grad_output)

    def reluish_backward(self, grad_output: Tensor, local_gradient: Callable[[Tensor], Tensor]) -> Tensor:
        """``relu(g)``."""
        return torch.relu(grad_output)


class GuidedBackpropRule(BackwardRule):
    """Guided backpropagation: the true gradient through the rectifier, then rectified."""

    name = "guided"

    def rectifier_backward(self, grad_output: Tensor, rectifier: Rectifier, output: Tensor) -> Tensor:
        """``rect(g * r'(x))``: the true gradient, rectified."""
        return rectifier.rectify(grad_output * rectifier.derivative(output))

    def reluish_backward(self, grad_output: Tensor, local_gradient: Callable[[Tensor], Tensor]) -> Tensor:
        """``relu(g * f'(x))``."""
        return torch.relu(local_gradient(grad_output))


class GradientRule(BackwardRule):
    """The plain gradient: rectifiers are left to autograd untouched."""

    name = "gradient"
    modifies_backward = False

    def rectifier_backward(self, grad_output: Tensor, rectifier: Rectifier, output: Tensor) -> Tensor:
        """``g * r'(x)``: the true gradient."""
        return grad_output * rectifier.derivative(output)


RULES: dict[str, BackwardRule] = {rule.name: rule for rule in (DeconvnetRule(), GuidedBackpropRule(), GradientRule())}


def get_rule(rule: str | BackwardRule) -> BackwardRule:
    """Return the rule registered under ``rule`` (or ``rule`` itself when it already is a rule).

    Raises:
        ValueError: ``rule`` names no registered rule.
        TypeError: ``rule`` is neither a string nor a :class:`BackwardRule`.
    """
    if isinstance(rule, BackwardRule):
        return rule
    if isinstance(rule, str):
        if rule not in RULES:
            raise ValueError(f"rule={rule!r} is not a known backward rule; choose one of {sorted(RULES)}")
        return RULES[rule]
    raise TypeError(f"rule must be a rule name {sorted(RULES)} or a BackwardRule, got {type(rule).__name__}")


class RectifierFunction(torch.autograd.Function):
    """Autograd function: a rectifier's exact forward, with a rule's backward (in-place calls supported)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, rectifier: Rectifier, rule: BackwardRule, inplace: bool) -> Tensor:
        output = rectifier.forward(x, inplace)
        if inplace:
            ctx.mark_dirty(x)
        ctx.save_for_backward(output)
        ctx.rectifier = rectifier
        ctx.rule = rule
        return output

    @staticmethod
    def backward(ctx: Any, grad_output: Tensor) -> tuple[Tensor, None, None, None]:
        (output,) = ctx.saved_tensors
        return ctx.rule.rectifier_backward(grad_output, ctx.rectifier, output), None, None, None


class ReluishFunction(torch.autograd.Function):
    """Autograd function for a ReLU-like non-rectifier under the ``"rectify"`` policy.

    ``function`` is the out-of-place activation with its extra arguments bound; the forward result is
    exactly ``function(x)`` (written into ``x`` for in-place calls).
    """

    @staticmethod
    def forward(ctx: Any, x: Tensor, function: Callable[[Tensor], Tensor], rule: BackwardRule, inplace: bool) -> Tensor:
        saved_input = x.clone() if inplace else x
        output = function(x)
        if inplace:
            x.copy_(output)
            ctx.mark_dirty(x)
            output = x
        ctx.save_for_backward(saved_input)
        ctx.function = function
        ctx.rule = rule
        return output

    @staticmethod
    def backward(ctx: Any, grad_output: Tensor) -> tuple[Tensor, None, None, None]:
        (saved_input,) = ctx.saved_tensors

        def local_gradient(signal: Tensor) -> Tensor:
            with torch.enable_grad():
                x = saved_input.detach().requires_grad_(True)
                (grad,) = torch.autograd.grad(ctx.function(x), x, signal)
            return grad

        return ctx.rule.reluish_backward(grad_output, local_gradient), None, None, None


class SkipBackwardFunction(torch.autograd.Function):
    """Autograd function: exact forward of a shape-preserving layer, identity on the way down.

    Used by the strict Zeiler–Fergus variant to skip normalisation layers (LRN, BatchNorm, LayerNorm, ...)
    on the way down, as the paper's deconvnet does.
    """

    @staticmethod
    def forward(ctx: Any, x: Tensor, function: Callable[[Tensor], Tensor]) -> Tensor:
        output = function(x)
        if output.shape != x.shape:
            raise ValueError(f"cannot skip a layer that changes shape {tuple(x.shape)} -> {tuple(output.shape)}")
        return output

    @staticmethod
    def backward(ctx: Any, grad_output: Tensor) -> tuple[Tensor, None]:
        return grad_output, None


def bind_first_argument(function: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Callable:
    """``function`` with every argument but the first bound: ``lambda x: function(x, *args[1:], **kwargs)``."""
    return functools.partial(_call_with_first, function, args[1:], kwargs)


def _call_with_first(function: Callable[..., Any], rest: tuple[Any, ...], kwargs: dict[str, Any], x: Tensor) -> Any:
    return function(x, *rest, **kwargs)
