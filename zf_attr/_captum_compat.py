"""Captum's calling conventions, written against public names only, with validation that names the argument.

Captum's own helpers for these (in its private ``_utils`` package) are private and renamed between releases, so the
small pieces of its contract we honour live here: tensor-or-tuple inputs and outputs, the target forms,
``additional_forward_args``, and an ``attribute`` decorator exposing ``__wrapped__`` (NoiseTunnel needs it).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import torch
from torch import Tensor, nn

__all__ = [
    "attribution_method",
    "check_indices",
    "format_additional_forward_args",
    "format_inputs",
    "format_output",
    "input_names",
    "select_targets",
    "validate_model",
]

Method = TypeVar("Method", bound=Callable[..., Any])

_CONV_RANK = {nn.Conv1d: 3, nn.Conv2d: 4, nn.Conv3d: 5}


def attribution_method(method: Method) -> Method:
    """Decorate an ``attribute`` method so that ``attribute.__wrapped__`` is the undecorated function.

    Captum's ``NoiseTunnel`` and ``GuidedGradCam`` call ``method.attribute.__wrapped__(method, ...)``.
    """

    @functools.wraps(method)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        return method(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def validate_model(model: Any, argument: str = "model") -> nn.Module:
    """Return ``model`` if it is an ``nn.Module``; else raise ``TypeError`` naming ``argument``."""
    if not isinstance(model, nn.Module):
        raise TypeError(
            f"{argument} must be a torch.nn.Module (its rectifier and pooling calls are intercepted during "
            f"forward), got {type(model).__name__}"
        )
    return model


def input_names(tensors: Sequence[Any], was_tuple: bool, argument: str = "inputs") -> dict[str, Any]:
    """``{"inputs": x}`` for a tensor, ``{"inputs[0]": x0, "inputs[1]": x1}`` for a tuple (error messages)."""
    if not was_tuple:
        return {argument: tensors[0]}
    return {f"{argument}[{i}]": tensor for i, tensor in enumerate(tensors)}


def format_inputs(
    inputs: Any, model: nn.Module | None = None, *, floating: bool = True
) -> tuple[bool, tuple[Tensor, ...]]:
    """Validate ``inputs`` and return ``(was_tuple, inputs_as_tuple)``.

    Args:
        inputs: a tensor or a tuple of tensors.
        model: checks the rank of a single input against the model's convolutions.
        floating: refuse integer inputs (gradient methods need floating point; occlusion takes token ids).

    Raises:
        TypeError: not a tensor or tuple of tensors, or (``floating``) not floating point.
        ValueError: no batch dimension, or the wrong rank for the model's convolutions.
    """
    is_tuple = isinstance(inputs, tuple)
    as_tuple = inputs if is_tuple else (inputs,)
    if not as_tuple:
        raise ValueError("inputs is an empty tuple; pass a tensor or a tuple of tensors")
    for position, tensor in enumerate(as_tuple):
        where = f"inputs[{position}]" if is_tuple else "inputs"
        if not isinstance(tensor, Tensor):
            raise TypeError(
                f"{where} must be a torch.Tensor (or inputs a tuple of tensors), got {type(tensor).__name__}"
            )
        if floating and not tensor.is_floating_point():
            raise TypeError(
                f"{where} has dtype {tensor.dtype}; attributions need floating-point inputs: convert with "
                f".float() (and normalise as the model expects)"
            )
        if tensor.dim() < 1 or tensor.shape[0] == 0:
            raise ValueError(f"{where} has shape {tuple(tensor.shape)}; it needs a non-empty leading batch dimension")
    if model is not None and len(as_tuple) == 1:
        expected = _expected_rank(model)
        if expected is not None and as_tuple[0].dim() != expected:
            layout = {3: "(N, C, L)", 4: "(N, C, H, W)", 5: "(N, C, D, H, W)"}[expected]
            hint = " Add a batch dimension: inputs.unsqueeze(0)." if as_tuple[0].dim() == expected - 1 else ""
            raise ValueError(
                f"inputs has shape {tuple(as_tuple[0].shape)} but the model's convolutions expect a batch shaped "
                f"{layout}.{hint}"
            )
    return is_tuple, as_tuple


def _expected_rank(model: nn.Module) -> int | None:
    ranks = {rank for module in model.modules() for kind, rank in _CONV_RANK.items() if type(module) is kind}
    return ranks.pop() if len(ranks) == 1 else None


def format_additional_forward_args(additional_forward_args: Any) -> tuple[Any, ...]:
    """Captum's convention: ``None`` → no extra arguments, a tuple → as is, anything else → a 1-tuple."""
    if additional_forward_args is None:
        return ()
    if isinstance(additional_forward_args, tuple):
        return additional_forward_args
    return (additional_forward_args,)


def format_output(was_tuple: bool, outputs: Sequence[Tensor]) -> Tensor | tuple[Tensor, ...]:
    """Tuple in, tuple out; tensor in, tensor out."""
    return tuple(outputs) if was_tuple else outputs[0]


def select_targets(output: Any, target: Any, num_examples: int) -> Tensor:
    """Select one score per example from the model ``output``, following Captum's ``target`` forms.

    Args:
        output: the model's output, first dimension = batch.
        target: ``None``, an int, a tuple of ints, a 0-d or length-N tensor, or a list of N ints or tuples.
        num_examples: the batch size of the inputs.

    Returns:
        Tensor of shape ``(N,)`` (or ``(N, ...)`` for ``target=None``).

    Raises:
        TypeError, ValueError: with a message naming ``target`` (or ``model`` for a bad output).
    """
    if not isinstance(output, Tensor):
        raise TypeError(
            f"model returned {type(output).__name__}, not a tensor of scores; for GoogLeNet / Inception-v3 call "
            "model.eval() (training mode returns auxiliary outputs), or wrap the model to return one tensor"
        )
    if output.dim() == 0 or output.shape[0] != num_examples:
        raise ValueError(
            f"model output has shape {tuple(output.shape)} but inputs have batch size {num_examples}: the model "
            "must map a batch (N, ...) to scores (N, ...); check that inputs carry a leading batch dimension"
        )
    if target is None:
        return output
    if isinstance(target, Tensor):
        if target.is_floating_point() or target.is_complex() or target.dtype == torch.bool:
            raise TypeError(f"target tensor must hold integer class indices, got dtype {target.dtype}")
        if target.numel() == 1:
            return _select_column(output, int(target.item()))
        if target.dim() == 1 and target.numel() == num_examples:
            if output.dim() != 2:
                raise ValueError(
                    f"a tensor of per-example targets needs a 2-D model output (N, classes), got {tuple(output.shape)}"
                )
            low, high = int(target.min()), int(target.max())
            if low < -output.shape[1] or high >= output.shape[1]:
                raise ValueError(
                    f"target holds class {high if high >= output.shape[1] else low}, out of range for model output "
                    f"of shape {tuple(output.shape)}"
                )
            index = target.to(output.device).remainder(output.shape[1]).reshape(num_examples, 1)
            return output.gather(1, index).squeeze(1)
        raise ValueError(
            f"target tensor has shape {tuple(target.shape)}; use a 0-d tensor or a 1-D tensor of length {num_examples}"
        )
    if isinstance(target, bool):
        raise TypeError("target must be an int, tuple, tensor or list, not bool")
    if isinstance(target, int):
        return _select_column(output, target)
    if isinstance(target, tuple):
        return _select_column(output, target)
    if isinstance(target, list):
        if len(target) != num_examples:
            raise ValueError(
                f"target is a list of length {len(target)}; it needs one entry per example ({num_examples})"
            )
        rows = [_select_column(output[i : i + 1], entry)[0] for i, entry in enumerate(target)]
        return torch.stack(rows)
    raise TypeError(f"target must be None, an int, a tuple, a tensor or a list, got {type(target).__name__}")


def _select_column(output: Tensor, index: int | tuple) -> Tensor:
    """``output[:, *index]`` with a range check that names ``target``."""
    if isinstance(index, Tensor):
        index = int(index.item())
    indices = index if isinstance(index, tuple) else (index,)
    if len(indices) > output.dim() - 1:
        raise ValueError(
            f"target {index!r} has {len(indices)} indices but the model output {tuple(output.shape)} has only "
            f"{output.dim() - 1} non-batch dimensions"
        )
    check_indices(output, indices, "target", index, what="model output")
    return output[(slice(None), *indices)]


def check_indices(
    output: Tensor, indices: tuple, argument: str, shown: object, *, what: str, allow_slices: bool = False
) -> None:
    """Check that ``output[:, *indices]`` is valid; errors name ``argument`` and show its value ``shown``.

    Args:
        output: the tensor to index, first dimension = batch.
        indices: one int (or slice, with ``allow_slices``) per non-batch dimension indexed.
        argument: the user's argument name, e.g. ``"target"``.
        shown: the argument's value as the user passed it.
        what: how the indexed tensor is named in the message, e.g. ``"model output"``.
        allow_slices: accept slices as entries.
    """
    kinds = "ints or slices" if allow_slices else "ints"
    for position, value in enumerate(indices):
        if allow_slices and isinstance(value, slice):
            continue
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{argument} entries must be {kinds}, got {value!r} in {shown!r}")
        size = output.shape[position + 1]
        if not -size <= value < size:
            raise ValueError(
                f"{argument} {shown!r} is out of range for {what} of shape {tuple(output.shape)} "
                f"(dimension {position + 1} has {size} entries)"
            )
