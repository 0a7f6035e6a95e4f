"""What every public zf_attr call does around its work: check its arguments first, leave the model as found.

* :class:`CallGuard` opens the call's scope (stale state of an interrupted call recovered,
  :mod:`zf_attr._lifecycle`); for a model with modules in training mode it warns once, serialises calls on that
  model, and restores its buffers (batch-norm running statistics) bitwise when the call ends, however it ends.
* :func:`check_tensors` refuses non-finite values, meta tensors and a dtype or device that the model's parameters
  do not share, naming the argument and the fix, before any long work.
* :func:`check_forward_arguments` checks that the model's ``forward`` accepts the inputs and extra arguments.
* :func:`fresh` gives a forward pass its own copies of the tensors, so a model whose first operation is in place
  (``nn.ReLU(inplace=True)``) never writes into the caller's tensors (a copy costs far less than a forward pass).

Example:
    >>> import torch
    >>> model = torch.nn.Sequential(torch.nn.ReLU(inplace=True), torch.nn.Conv2d(1, 1, 1))
    >>> x = -torch.ones(1, 1, 2, 2)
    >>> with CallGuard(model, "example"):
    ...     check_tensors(model, {"inputs": x})
    ...     _ = model(*fresh((x,)))
    >>> bool((x == -1).all())
    True
"""

from __future__ import annotations

import functools
import inspect
import sys
import threading
import warnings
import weakref
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import torch
from torch import Tensor, nn

from zf_attr._lifecycle import Attachment, begin_call
from zf_attr.errors import ZFAttrWarning

__all__ = [
    "CallGuard",
    "caller_stacklevel",
    "check_finite",
    "check_forward_arguments",
    "check_tensors",
    "fresh",
    "guarded",
    "training_sensitive",
]

Method = TypeVar("Method", bound=Callable[..., Any])

_locks: weakref.WeakKeyDictionary[nn.Module, threading.RLock] = weakref.WeakKeyDictionary()
_locks_lock = threading.Lock()


def _model_lock(model: nn.Module) -> threading.RLock:
    with _locks_lock:
        lock = _locks.get(model)
        if lock is None:
            lock = _locks[model] = threading.RLock()
        return lock


class CallGuard:
    """The scope of one public call on ``model`` (see the module docstring).

    Args:
        model: the network (any callable; only an ``nn.Module`` has buffers and a training mode).
        method: the name shown in the training-mode warning, e.g. ``"Deconvnet"``.
    """

    def __init__(self, model: Any, method: str) -> None:
        self.model = model
        self.method = method
        self._scope: Attachment | None = None

    def __enter__(self) -> CallGuard:
        scope = self._scope = begin_call(depth=2)
        try:
            model = self.model
            training = training_sensitive(model)
            if training:
                warnings.warn(
                    f"{self.method}: the model is in training mode ({len(training)} batch-norm, dropout or "
                    f"buffer-holding modules, e.g. {training[0] or '<model>'!r}): batch norm uses batch statistics and "
                    "dropout is random, so the result is not the model's eval-mode answer; call model.eval() first. "
                    "Its buffers (running statistics) are restored after the call, and calls on it are serialised.",
                    ZFAttrWarning,
                    stacklevel=caller_stacklevel(),
                )
                _serialise(scope, _model_lock(model))
                saved = [(buffer, buffer.detach().clone()) for buffer in model.buffers()]
                scope.undo.append(lambda: _restore(saved))
        except BaseException:
            scope.close()
            raise
        return self

    def __exit__(self, *exc_info: object) -> bool:
        if self._scope is not None:
            self._scope.close()
        return False


def caller_stacklevel() -> int:
    """The ``stacklevel`` that points a warning raised by the calling function at the first frame outside zf_attr."""
    package = __name__.split(".")[0]
    frame = sys._getframe(1)
    level = 1
    while frame.f_back is not None and frame.f_globals.get("__name__", "").split(".")[0] == package:
        frame = frame.f_back
        level += 1
    return level


def guarded(method: Method) -> Method:
    """Run a public method of an attribution (its ``model``, else its ``forward_func``) inside a :class:`CallGuard`."""

    @functools.wraps(method)
    def call(self: Any, *args: Any, **kwargs: Any) -> Any:
        model = self.model if hasattr(self, "model") else self.forward_func
        with CallGuard(model, type(self).__name__):
            return method(self, *args, **kwargs)

    return call  # type: ignore[return-value]


_TRAINING_SENSITIVE = (nn.modules.batchnorm._NormBase, nn.modules.dropout._DropoutNd)


def training_sensitive(model: Any) -> list[str]:
    """Names of the modules in training mode that behave differently there.

    Those are batch and instance norm, dropout, and any module holding buffers of its own (a forward pass may
    update them).
    """
    if not isinstance(model, nn.Module):
        return []
    return [
        name
        for name, module in model.named_modules()
        if module.training
        and (isinstance(module, _TRAINING_SENSITIVE) or next(module.buffers(recurse=False), None) is not None)
    ]


def _serialise(scope: Attachment, lock: threading.RLock) -> None:
    """Hold ``lock`` until ``scope`` closes (the release is registered before the lock is taken)."""
    held = [False]

    def release() -> None:
        if held[0]:
            held[0] = lock.release()  # one line: released and marked so (``release`` returns None), or neither

    scope.undo.append(release)
    held[0] = lock.acquire()


def _restore(saved: list[tuple[Tensor, Tensor]]) -> None:
    with torch.no_grad():
        for buffer, value in saved:
            buffer.copy_(value)


def fresh(arguments: tuple[Any, ...]) -> tuple[Any, ...]:
    """The arguments with every tensor replaced by a copy (gradients still flow to the original leaves)."""
    return tuple(argument.clone() if isinstance(argument, Tensor) else argument for argument in arguments)


def _reference_parameter(model: Any) -> Tensor | None:
    if not isinstance(model, nn.Module):
        return None
    for tensor in model.parameters():
        if tensor.is_floating_point():
            return tensor
    for tensor in model.buffers():
        if tensor.is_floating_point():
            return tensor
    return None


def check_tensors(model: Any, tensors: Mapping[str, Any], *, integer_ok: bool = False) -> None:
    """Refuse tensors a forward pass of ``model`` would choke on or answer wrongly for, naming the argument.

    Args:
        model: the network; its first floating-point parameter (or buffer) gives the expected dtype and device.
        tensors: argument name → tensor (non-tensors are skipped), e.g. ``{"inputs": x, "baselines": b}``.
        integer_ok: integer tensors (token ids) are accepted and not compared with the model's dtype.

    Raises:
        ValueError: non-finite values (NaN or ±Inf), a meta tensor, or a device other than the model's.
        TypeError: a floating-point dtype other than the model's.
    """
    reference = _reference_parameter(model)
    for name, tensor in tensors.items():
        if not isinstance(tensor, Tensor):
            continue
        if tensor.is_meta:
            raise ValueError(f"{name} is a meta tensor (shape only, no values); pass a tensor with data")
        if reference is not None and reference.is_meta:
            raise ValueError("model has parameters on the meta device (no values); load its weights first")
        if reference is not None and tensor.device != reference.device:
            raise ValueError(
                f"{name} is on {tensor.device} but the model's parameters are on {reference.device}; move one of "
                f"them: {name}.to({str(reference.device)!r}) or model.to({str(tensor.device)!r})"
            )
        if tensor.is_floating_point() or tensor.is_complex():
            autocast = torch.is_autocast_enabled(tensor.device.type)
            if reference is not None and tensor.dtype != reference.dtype and not autocast:
                raise TypeError(
                    f"{name} has dtype {tensor.dtype} but the model's parameters are {reference.dtype}; convert "
                    f"one of them: {name}.to({reference.dtype}) or model.to({tensor.dtype})"
                )
            check_finite(name, tensor)
        elif not integer_ok and tensor.dtype != torch.bool:
            raise TypeError(f"{name} has dtype {tensor.dtype}; pass floating-point values")
        elif _convolves_without_embedding(model):
            raise TypeError(
                f"{name} has dtype {tensor.dtype} but the model has convolutions and no embedding: pass floating-point "
                f"values ({name}.float(), normalised as the model expects); integer inputs are for models that embed "
                "token ids"
            )


def _convolves_without_embedding(model: Any) -> bool:
    if not isinstance(model, nn.Module):
        return False
    modules = list(model.modules())
    return any(isinstance(m, nn.modules.conv._ConvNd) for m in modules) and not any(
        isinstance(m, (nn.Embedding, nn.EmbeddingBag)) for m in modules
    )


def check_finite(name: str, value: Any) -> None:
    """Raise ``ValueError`` naming ``name`` and the count if the number or tensor ``value`` holds NaN or ±Inf."""
    tensor = value if isinstance(value, Tensor) else torch.as_tensor(value)
    if not (tensor.is_floating_point() or tensor.is_complex()):
        return
    bad = int((~torch.isfinite(tensor)).sum())
    if bad:
        raise ValueError(
            f"{name} holds {bad} non-finite value(s) (NaN or ±Inf) of {tensor.numel()}; attributions of such an "
            "input are meaningless (a deconvnet map would still look plausible): clean or drop those examples first"
        )


def check_forward_arguments(model: Any, num_inputs: int, extra: tuple[Any, ...], argument: str) -> None:
    """Check that ``model`` can be called with ``num_inputs`` inputs followed by ``extra``; else TypeError.

    Args:
        model: the network or forward function.
        num_inputs: the number of input tensors.
        extra: the additional forward arguments.
        argument: how the extra arguments are named in the message (``"additional_forward_args"``).
    """
    forward = model.forward if isinstance(model, nn.Module) else model
    try:
        signature = inspect.signature(forward)
    except (TypeError, ValueError):  # a builtin or C extension: nothing to check
        return
    try:
        signature.bind(*([None] * num_inputs), *extra)
    except TypeError as error:
        raise TypeError(
            f"the model's forward{signature} cannot take {num_inputs} input(s) and {len(extra)} {argument} "
            f"({error}); pass the extra arguments the model's forward expects, or none"
        ) from None
