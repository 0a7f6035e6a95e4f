"""Shared machinery of attributions that backpropagate a target score with a rectifier rule."""

from __future__ import annotations

import warnings
from typing import Any, ClassVar

import torch
from captum.attr import GradientAttribution
from torch import Tensor, nn

from zf_attr._captum_compat import (
    attribution_method,
    format_additional_forward_args,
    format_inputs,
    format_output,
    input_names,
    select_targets,
    validate_model,
)
from zf_attr._guard import CallGuard, caller_stacklevel, check_forward_arguments, check_tensors, fresh
from zf_attr._intercept import intercept
from zf_attr.errors import UnhonouredLayerWarning
from zf_attr.rules import NONRECTIFIER_POLICIES

__all__ = ["VARIANTS", "RuleAttribution", "validate_variant"]

#: ``"gradient"``: every layer but the rectifiers passes its true Jacobian (Captum, TorchRay, zennit).
#: ``"strict"``: as the paper's deconvnet, normalisation layers are skipped (identity) on the way down.
VARIANTS: tuple[str, ...] = ("gradient", "strict")


def validate_variant(variant: str) -> str:
    """Return ``variant`` if it is one of :data:`VARIANTS`, else raise ``ValueError`` naming it."""
    if variant not in VARIANTS:
        raise ValueError(f"variant={variant!r} is not known; choose one of {list(VARIANTS)}")
    return variant


class RuleAttribution(GradientAttribution):
    """Backpropagate the target score with the rule ``rule_name`` at every rectifier call.

    Subclasses set ``rule_name``. See :class:`zf_attr.Deconvnet` for the arguments.
    """

    rule_name: ClassVar[str] = ""

    def __init__(self, model: nn.Module, *, variant: str = "gradient", nonrectifier_policy: str = "gradient") -> None:
        validate_model(model)
        validate_variant(variant)
        if nonrectifier_policy not in NONRECTIFIER_POLICIES:
            raise ValueError(
                f"nonrectifier_policy={nonrectifier_policy!r} is not known; choose one of {list(NONRECTIFIER_POLICIES)}"
            )
        GradientAttribution.__init__(self, model)
        self.model = model
        self.variant = variant
        self.nonrectifier_policy = nonrectifier_policy

    @attribution_method
    def attribute(
        self,
        inputs: Tensor | tuple[Tensor, ...],
        target: Any = None,
        additional_forward_args: Any = None,
    ) -> Tensor | tuple[Tensor, ...]:
        """Attribute the ``target`` score of every example to its inputs.

        Args:
            inputs: a batch ``(N, ...)``, or a tuple of batches for multi-input models.
            target: which output to explain, in any of Captum's forms: an int, a tuple of ints, a 0-d or
                length-N integer tensor, a list of N ints or tuples; ``None`` only for one score per example.
            additional_forward_args: extra model arguments after the inputs (one value or a tuple).

        Returns:
            Attributions shaped like ``inputs`` (a tensor for a tensor, a tuple for a tuple).

        Raises:
            TypeError, ValueError: bad inputs or target; the message names the argument and the fix.
        """
        was_tuple, inputs_tuple = format_inputs(inputs, self.model)
        extra_args = format_additional_forward_args(additional_forward_args)
        check_forward_arguments(self.model, len(inputs_tuple), extra_args, "additional_forward_args")
        check_tensors(self.model, input_names(inputs_tuple, was_tuple))
        with CallGuard(self.model, self.get_name()):
            # Fresh leaves: the caller's tensors and their requires_grad flags are never touched; the forward
            # pass gets copies of them, which an in-place first layer may overwrite.
            leaves = tuple(tensor.detach().requires_grad_(True) for tensor in inputs_tuple)
            interceptor = intercept(
                self.model,
                self.rule_name,
                skip_normalization=self.variant == "strict",
                nonrectifier_policy=self.nonrectifier_policy,
            )
            with torch.enable_grad():
                forward_args = fresh((*leaves, *extra_args))
                with interceptor as trace:
                    output = self.model(*forward_args)
                scores = select_targets(output, target, leaves[0].shape[0])
                if scores.dim() > 1 and scores[0].numel() != 1:
                    raise ValueError(
                        f"target=None but the model returns {scores[0].numel()} scores per example "
                        f"(output shape {tuple(output.shape)}); pass target=<class index> to choose one"
                    )
                gradients = torch.autograd.grad(scores.sum(), leaves, allow_unused=True)
        report = trace.unhonoured_report(self.get_name(), self.rule_name)
        if report is not None:
            warnings.warn(report, UnhonouredLayerWarning, stacklevel=caller_stacklevel())
        attributions = [
            torch.zeros_like(leaf) if gradient is None else gradient
            for leaf, gradient in zip(leaves, gradients, strict=True)
        ]
        return format_output(was_tuple, attributions)

    def attribute_future(self, *args: Any, **kwargs: Any) -> Any:
        """Not implemented, as in Captum's ``Deconvolution`` and ``GuidedBackprop``."""
        raise NotImplementedError(f"attribute_future is not implemented for {self.get_name()}")
