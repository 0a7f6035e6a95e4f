"""``torch.fx`` tracing that is safe beside other threads.

While ``fx.Tracer.trace`` runs it patches ``nn.Module.__call__`` and ``nn.Module.__getattr__`` for the whole
process (restored when it returns). Two traces at once would save and restore each other's patches (leaving them
in place for good), and a plain forward pass in another thread would be recorded into the graph being traced.
:class:`ThreadSafeTracer` therefore traces under one process-wide lock, and its patched entry points hand calls
from any other thread straight to the original ``nn.Module`` behaviour. No function is auto-wrapped (fx's default
wraps the ``math`` module's functions in every traced module's globals).

Example:
    >>> import torch
    >>> graph = ThreadSafeTracer().trace(torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.ReLU()))
    >>> [node.op for node in graph.nodes]
    ['placeholder', 'call_module', 'call_module', 'output']
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from torch import fx, nn

__all__ = ["TRACE_LOCK", "ThreadSafeTracer"]

#: Held while any zf_attr tracer runs: fx's patches of ``nn.Module`` are process-wide.
TRACE_LOCK = threading.RLock()


class ThreadSafeTracer(fx.Tracer):
    """``fx.Tracer`` that traces under :data:`TRACE_LOCK` and lets other threads' module calls through untouched."""

    def __init__(self) -> None:
        super().__init__(autowrap_modules=(), autowrap_functions=())
        self._thread = threading.get_ident()

    def trace(self, root: Any, concrete_args: dict[str, Any] | None = None) -> fx.Graph:
        """Trace ``root`` (see ``fx.Tracer.trace``) while holding :data:`TRACE_LOCK`."""
        with TRACE_LOCK:
            self._thread = threading.get_ident()
            return super().trace(root, concrete_args)

    def call_module(self, m: nn.Module, forward: Callable[..., Any], args: Any, kwargs: Any) -> Any:
        """Record the call, or run it as usual when it comes from another thread."""
        if threading.get_ident() != self._thread:
            return forward(*args, **kwargs)
        return super().call_module(m, forward, args, kwargs)

    def getattr(self, attr: str, attr_val: Any, parameter_proxy_cache: dict[str, Any]) -> Any:
        """Proxy a parameter read, or return the value itself to another thread."""
        if threading.get_ident() != self._thread:
            return attr_val
        return super().getattr(attr, attr_val, parameter_proxy_cache)
