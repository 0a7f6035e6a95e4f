"""What zf_attr attaches to a model, owned by one thread and undone whatever happens.

Every hook zf_attr registers (on a module, or the global module hooks used to measure a forward pass) belongs to
an :class:`Attachment`: the hook runs only in the thread that attached it and only while the attachment is armed,
so forward passes of the same model in other threads are neither recorded nor changed. An attachment registers
itself in a per-thread list *before* it attaches anything and leaves the list only *after* everything is undone,
so an exception or ``KeyboardInterrupt`` landing on any line of a set-up or tear-down leaves at most a disarmed,
listed attachment behind, which the next zf_attr call in that thread finds and finishes undoing
(:func:`recover_stale`).

Example:
    >>> import torch
    >>> layer = torch.nn.Linear(2, 2)
    >>> seen = []
    >>> with Attachment() as hooks:
    ...     _ = hooks.add(layer.register_forward_hook(hooks.bound(lambda m, a, o: seen.append(o.shape))))
    ...     _ = layer(torch.zeros(1, 2))
    >>> seen, len(layer._forward_hooks)
    ([torch.Size([1, 2])], 0)
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

from torch.overrides import TorchFunctionMode
from torch.utils.hooks import RemovableHandle

__all__ = [
    "Attachment",
    "begin_call",
    "call_running",
    "live_attachments",
    "mode_is_active",
    "recover_stale",
    "remove_mode",
]

_local = threading.local()


def live_attachments() -> list[Attachment]:
    """This thread's attachments that are not fully undone yet (normally only those of the call in progress)."""
    if not hasattr(_local, "live"):
        _local.live = []
    return _local.live


class Attachment:
    """Hooks (and a torch-function mode) attached for one operation in one thread; undone together, idempotently.

    Args:
        internal: ``True`` for attachments made inside a zf_attr call (stale as soon as no zf_attr call runs);
            ``False`` for a context the user holds open (:func:`zf_attr.intercept`): stale only once its mode
            is no longer on the thread's torch-function mode stack.
    """

    def __init__(self, internal: bool = True, frame: FrameType | None = None) -> None:
        self.thread = threading.get_ident()
        self.internal = internal
        self.armed = True
        self.handles: list[RemovableHandle] = []
        self.mode: TorchFunctionMode | None = None
        self.frame = frame  # for a call's own scope: the frame of the public call, while it runs
        self.undo: list[Callable[[], Any]] = []
        live_attachments().append(self)

    def owns_call(self) -> bool:
        """True while armed, in the thread that attached it."""
        return self.armed and threading.get_ident() == self.thread

    def bound(self, hook: Callable[..., Any]) -> Callable[..., Any]:
        """``hook`` restricted to this attachment's thread while it is armed (a no-op returning ``None`` else)."""

        def call(*args: Any, **kwargs: Any) -> Any:
            if self.armed and threading.get_ident() == self.thread:
                return hook(*args, **kwargs)
            return None

        return call

    def add(self, handle: RemovableHandle) -> RemovableHandle:
        """Keep ``handle`` to remove it on :meth:`close`."""
        self.handles.append(handle)
        return handle

    def close(self) -> None:
        """Disarm, pop the mode, remove every hook, run the ``undo`` callbacks (last first), leave the live list.

        Each step runs whatever the others do; the first error is raised at the end.
        """
        self.armed = False
        self.frame = None
        try:
            remove_mode(self.mode)
        finally:
            try:
                for handle in self.handles:
                    handle.remove()  # removing twice is safe
                self.handles.clear()
            finally:
                try:
                    _run_all(self.undo)
                finally:
                    _forget(self)

    def __enter__(self) -> Attachment:
        return self

    def __exit__(self, *exc_info: object) -> bool:
        self.close()
        return False


def _run_all(callbacks: list[Callable[[], Any]]) -> None:
    """Run and drop every callback, last first; each runs whatever the others raise (the first error is re-raised)."""
    error: BaseException | None = None
    while callbacks:
        try:
            callbacks[-1]()
        except BaseException as raised:
            error = error or raised
        finally:
            callbacks.pop()
    if error is not None:
        raise error


def _forget(attachment: Attachment) -> None:
    live = live_attachments()
    if attachment in live:
        live.remove(attachment)


def mode_is_active(mode: TorchFunctionMode | None) -> bool:
    """Whether ``mode`` is on this thread's torch-function mode stack."""
    if mode is None:
        return False
    from torch.overrides import _get_current_function_mode_stack

    return any(entry is mode for entry in _get_current_function_mode_stack())


def remove_mode(mode: TorchFunctionMode | None) -> None:
    """Take ``mode`` off this thread's torch-function mode stack wherever it sits (modes above it stay, in order)."""
    if not mode_is_active(mode):
        return
    from torch.overrides import _pop_mode, _push_mode

    above: list[Any] = []
    try:
        while True:
            top = _pop_mode()
            if top is mode:
                break
            above.append(top)
    finally:
        for entry in reversed(above):
            _push_mode(entry)


def recover_stale() -> None:
    """Finish undoing what an interrupted zf_attr call left in this thread.

    Called at the start of every public zf_attr call: internal attachments cannot belong to a call in progress
    then, and a user's interception context whose mode has left the stack is over. A user's context that is
    still open (its mode on the stack) is kept.
    """
    for attachment in list(live_attachments()):
        if attachment.internal or not attachment.armed or not mode_is_active(attachment.mode):
            attachment.close()


def call_running() -> bool:
    """Whether a public zf_attr call is in progress in this thread (a listed call scope's frame is on the stack)."""
    scopes = [attachment.frame for attachment in live_attachments() if attachment.frame is not None]
    frame: FrameType | None = sys._getframe(1) if scopes else None
    while frame is not None:
        if any(scope is frame for scope in scopes):
            return True
        frame = frame.f_back
    return False


def begin_call(depth: int = 1) -> Attachment:
    """Open the scope of a public zf_attr call; the outermost call in a thread first runs :func:`recover_stale`.

    A call is nested when the frame of a listed call scope is on the current stack (e.g. the occlusion study
    calling :class:`~zf_attr.OcclusionSensitivity`): its attachments are then in use, not stale. Close the
    returned scope when the call ends.

    Args:
        depth: how many frames above this function's caller the public call's frame is (1: the caller itself).
    """
    if not call_running():
        recover_stale()
    return Attachment(internal=True, frame=sys._getframe(depth))
