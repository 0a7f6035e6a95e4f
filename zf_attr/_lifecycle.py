"""What zf_attr attaches to a model, owned by one thread and undone whatever happens.

Every hook zf_attr registers (on a module, or the global module hooks used to measure a forward pass) belongs to
an :class:`Attachment`: the hook runs only in the thread that attached it and only while the attachment is armed,
so forward passes of the same model in other threads are neither recorded nor changed. An attachment registers
itself in a per-thread list *before* it attaches anything and leaves the list only *after* everything is undone,
so an exception or ``KeyboardInterrupt`` landing on any line of a set-up or tear-down leaves at most a disarmed,
listed attachment behind, which the next zf_attr call in that thread finds and finishes undoing
(:func:`recover_stale`).

What is stale: an attachment belongs to a frame while it is in use (a public call's scope to the call's frame, a
user's :func:`zf_attr.intercept` context to the frame running the ``with`` statement); when no public call runs,
every attachment whose frame is not on the current stack is stale.

Example:
    >>> import torch
    >>> layer = torch.nn.Linear(2, 2)
    >>> seen = []
    >>> with Attachment() as hooks:
    ...     hooks.hook(layer.register_forward_hook, lambda m, a, o: seen.append(o.shape))
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
    "caller_frame",
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
    """Hooks, a torch-function mode and undo steps attached for one operation in one thread; undone together.

    Args:
        frame: the frame this attachment is in use for (see the module docstring); ``None``: in use only while
            a public call runs.
        call: this is a public call's own scope (:func:`begin_call`).
    """

    def __init__(self, frame: FrameType | None = None, *, call: bool = False) -> None:
        self.thread = threading.get_ident()
        self.armed = True
        self.call = call
        self.handles: list[RemovableHandle] = []
        self.mode: TorchFunctionMode | None = None
        self.undo: list[Callable[[], Any]] = []
        self.frame = frame
        live_attachments().append(self)  # last: listed once it is complete enough to be closed

    def bound(self, hook: Callable[..., Any]) -> Callable[..., Any]:
        """``hook`` restricted to this attachment's thread while it is armed (a no-op returning ``None`` else)."""

        def call(*args: Any, **kwargs: Any) -> Any:
            if self.armed and threading.get_ident() == self.thread:
                return hook(*args, **kwargs)
            return None

        return call

    def hook(self, register: Callable[..., RemovableHandle], hook: Callable[..., Any], **options: Any) -> None:
        """Register ``hook`` (restricted by :meth:`bound`) with ``register(hook, **options)``; removed on close.

        Registering and keeping the handle happen on one line, so no line-level interrupt falls between them.
        """
        self.handles.append(register(self.bound(hook), **options))

    def close(self) -> None:
        """Disarm, pop the mode, remove the hooks, run the undo steps (last first); closing twice is harmless.

        Each step runs whatever the others raise; the attachment leaves the live list only when all of them
        succeeded (else the first error is raised and a later :func:`recover_stale` finishes the job).
        """
        self.armed = False
        self.frame = None
        error: BaseException | None = None
        for step in (self._pop_mode, self._remove_hooks, self._run_undo):
            try:
                step()
            except BaseException as raised:  # the other steps still run; raised below
                error = error or raised
        if error is not None:
            raise error
        self.mode = None  # popped: the mode refers back to its attachment, a cycle that would hold both
        _forget(self)

    def _pop_mode(self) -> None:
        remove_mode(self.mode)

    def _remove_hooks(self) -> None:
        for handle in self.handles:
            handle.remove()  # removing twice is safe
        self.handles.clear()

    def _run_undo(self) -> None:
        while self.undo:
            self.undo[-1]()  # each undo step is idempotent: it may run again if interrupted before the pop
            self.undo.pop()

    def __enter__(self) -> Attachment:
        return self

    def __exit__(self, *exc_info: object) -> bool:
        self.close()
        return False


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


def _stack(frame: FrameType | None) -> list[FrameType]:
    frames = []
    while frame is not None:
        frames.append(frame)
        frame = frame.f_back
    return frames


def _on(frames: list[FrameType], frame: FrameType | None) -> bool:
    return frame is not None and any(entry is frame for entry in frames)


def recover_stale() -> None:
    """Finish undoing what an interrupted zf_attr call or context left in this thread.

    Called when no public call runs (at the start of the outermost one, and when a user's context opens): every
    attachment whose frame is not on the current stack is then stale. A user's context still open (its ``with``
    statement's frame on the stack) is kept.
    """
    frames = _stack(sys._getframe(1))
    for attachment in list(live_attachments()):
        if not _on(frames, attachment.frame):
            attachment.close()


def call_running() -> bool:
    """Whether a public zf_attr call is in progress in this thread (a listed call scope's frame is on the stack)."""
    scopes = [attachment.frame for attachment in live_attachments() if attachment.call and attachment.frame]
    return bool(scopes) and any(_on(_stack(sys._getframe(1)), scope) for scope in scopes)


def caller_frame() -> FrameType | None:
    """The first frame outside zf_attr and ``contextlib`` above the caller (the user's ``with`` statement)."""
    frame: FrameType | None = sys._getframe(1)
    while frame is not None and frame.f_globals.get("__name__", "").split(".")[0] in ("zf_attr", "contextlib"):
        frame = frame.f_back
    return frame


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
    return Attachment(sys._getframe(depth), call=True)
