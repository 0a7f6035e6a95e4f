"""Deconvnet projection of one neuron (or an aggregate of neurons) of an inner layer, Captum-style."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import torch
from captum.attr import GradientAttribution, NeuronAttribution
from torch import Tensor, nn

from zf_attr._captum_compat import (
    attribution_method,
    check_indices,
    format_additional_forward_args,
    format_inputs,
    format_output,
    input_names,
    validate_model,
)
from zf_attr._guard import CallGuard, caller_stacklevel, check_forward_arguments, check_tensors
from zf_attr._intercept import intercept
from zf_attr.attr._layers import capture_layer_output, resolve_layer
from zf_attr.attr._rule_attribution import validate_variant
from zf_attr.errors import UnhonouredLayerWarning

__all__ = ["NeuronDeconvnet", "select_neuron"]

NeuronSelector = int | tuple[int | slice, ...] | Callable[[Tensor], Tensor]


def select_neuron(layer_output: Tensor, neuron_selector: NeuronSelector) -> Tensor:
    """One value per example from a layer's output, following Captum's ``neuron_selector`` forms.

    An int or a tuple of ints picks one neuron; slices in the tuple sum the neurons they cover; a callable maps
    the layer output to one value per example (or to one value in all).

    Raises:
        TypeError, ValueError: a selector of the wrong type, length or range; the message names it.
    """
    if callable(neuron_selector):
        selected = neuron_selector(layer_output)
        if not isinstance(selected, Tensor):
            raise TypeError(f"neuron_selector returned {type(selected).__name__}; it must return a tensor")
        if selected.numel() not in (1, layer_output.shape[0]):
            raise ValueError(
                f"neuron_selector returned shape {tuple(selected.shape)}; it must return one value per example "
                f"({layer_output.shape[0]}) or a single value"
            )
        return selected.reshape(-1)
    index = (neuron_selector,) if isinstance(neuron_selector, int) else neuron_selector
    if isinstance(index, bool) or not isinstance(index, tuple) or not index:
        raise TypeError(
            f"neuron_selector must be an int, a tuple of ints/slices or a callable, got {neuron_selector!r}"
        )
    if len(index) != layer_output.dim() - 1:
        raise ValueError(
            f"neuron_selector {neuron_selector!r} has {len(index)} indices but the layer output "
            f"{tuple(layer_output.shape)} has {layer_output.dim() - 1} non-batch dimensions"
        )
    check_indices(layer_output, index, "neuron_selector", neuron_selector, what="the layer output", allow_slices=True)
    selected = layer_output[(slice(None), *index)]
    return selected.reshape(selected.shape[0], -1).sum(1)


class NeuronDeconvnet(NeuronAttribution, GradientAttribution):
    """Deconvnet projection of a neuron of an inner layer to the input: right on functional-ReLU models.

    A drop-in for ``captum.attr.NeuronDeconvolution``: same constructor and ``attribute(inputs, neuron_selector,
    additional_forward_args, attribute_to_neuron_input)``. Every rectifier call below the layer is rerouted by
    :func:`zf_attr.intercept`, so functional ``F.relu`` (GoogLeNet, Inception-v3) and ``ReLU6`` are rectified,
    where Captum silently passes the plain gradient. The forward pass stops right after the layer. The seed is
    1 at the selected neuron (the gradient convention of Captum); for the paper's seeding by the activation
    itself see :class:`zf_attr.FeatureMapDeconvnet`.

    Args:
        model: the network; never modified (hooks are removed after every call, also on errors).
        layer: the layer, by its name (``"layer3"``, ``"features.28"``) or as a submodule of ``model``.
        device_ids: accepted for Captum compatibility (``DataParallel``); unused.
        variant: ``"gradient"`` (default) or ``"strict"`` (normalisation layers skipped), as for
            :class:`zf_attr.Deconvnet`.

    Example:
        >>> import torch, torchvision
        >>> from zf_attr import NeuronDeconvnet
        >>> model = torchvision.models.resnet18().eval()
        >>> neuron = NeuronDeconvnet(model, "layer2")
        >>> neuron.attribute(torch.randn(2, 3, 64, 64), neuron_selector=(5, 3, 4)).shape
        torch.Size([2, 3, 64, 64])
        >>> neuron.attribute(torch.randn(1, 3, 64, 64), neuron_selector=(5, slice(0, 2), slice(None))).shape
        torch.Size([1, 3, 64, 64])
    """

    def __init__(
        self,
        model: nn.Module,
        layer: str | nn.Module,
        device_ids: list[int] | None = None,
        *,
        variant: str = "gradient",
    ) -> None:
        validate_model(model)
        validate_variant(variant)
        self.layer_name, module = resolve_layer(model, layer)
        NeuronAttribution.__init__(self, model, module, device_ids)
        GradientAttribution.__init__(self, model)
        self.model = model
        self.variant = variant

    @attribution_method
    def attribute(
        self,
        inputs: Tensor | tuple[Tensor, ...],
        neuron_selector: NeuronSelector,
        additional_forward_args: Any = None,
        attribute_to_neuron_input: bool = False,
    ) -> Tensor | tuple[Tensor, ...]:
        """Project the selected neuron of every example down to the inputs.

        Args:
            inputs: a batch ``(N, ...)``, or a tuple of batches for multi-input models.
            neuron_selector: an int (2-D layer outputs), a tuple of ints and slices (slices sum the neurons
                they cover), or a callable mapping the layer output to one value per example.
            additional_forward_args: extra model arguments after the inputs (one value or a tuple).
            attribute_to_neuron_input: select the neuron in the layer's input instead of its output.

        Returns:
            Attributions shaped like ``inputs`` (a tensor for a tensor, a tuple for a tuple).

        Raises:
            TypeError, ValueError: bad inputs or selector; the message names the argument.
        """
        was_tuple, inputs_tuple = format_inputs(inputs, self.model)
        extra_args = format_additional_forward_args(additional_forward_args)
        check_forward_arguments(self.model, len(inputs_tuple), extra_args, "additional_forward_args")
        check_tensors(self.model, input_names(inputs_tuple, was_tuple))
        with CallGuard(self.model, self.get_name()):
            leaves = tuple(tensor.detach().requires_grad_(True) for tensor in inputs_tuple)
            interceptor = intercept(self.model, "deconvnet", skip_normalization=self.variant == "strict")
            with torch.enable_grad():
                with interceptor as trace:
                    activation, _ = capture_layer_output(
                        self.model, self.layer, (*leaves, *extra_args), stop=True, layer_input=attribute_to_neuron_input
                    )
                score = select_neuron(activation, neuron_selector)
                gradients = torch.autograd.grad(score.sum(), leaves, allow_unused=True)
        # Only non-rectifying activations below the layer are a problem here: a layer below the first rectifier
        # or max-pool is projected by its transposed filters, which is the paper's projection for such a layer.
        report = trace.unhonoured_report(self.get_name(), "deconvnet") if trace.other_activations else None
        if report is not None:
            warnings.warn(report, UnhonouredLayerWarning, stacklevel=caller_stacklevel())
        attributions = [
            torch.zeros_like(leaf) if gradient is None else gradient
            for leaf, gradient in zip(leaves, gradients, strict=True)
        ]
        return format_output(was_tuple, attributions)

    def attribute_future(self, *args: Any, **kwargs: Any) -> Any:
        """Not implemented, as in Captum's ``NeuronDeconvolution``."""
        raise NotImplementedError(f"attribute_future is not implemented for {self.get_name()}")
