"""What the incremental engine holds while it builds its cache, and which values a batch reads from the cache.

:class:`HeldBytes` counts the bytes of the values the unoccluded pass holds (views of one storage count once) and
stops the construction with :class:`CacheTooLargeError` once they pass a limit, so that an explicit
``memory_budget`` too small for the engine is found before the pass has held more than that.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from zf_attr.occlusion.incremental.graph import Op, UnsupportedModelError

__all__ = ["CacheTooLargeError", "HeldBytes", "reads_caches"]


class CacheTooLargeError(UnsupportedModelError):
    """The engine's cache would pass ``max_cache_bytes``; construction stopped there.

    Example:
        >>> import torch, torchvision
        >>> from zf_attr.occlusion.incremental import IncrementalEngine
        >>> model = torchvision.models.resnet18(weights=None).eval()
        >>> try:
        ...     IncrementalEngine(model, torch.randn(1, 3, 64, 64), max_cache_bytes=2**16)
        ... except CacheTooLargeError as error:
        ...     print(str(error).split(":")[0])
        memory_budget=0.1 MiB cannot hold the incremental engine's cache of the unoccluded activations
    """


def reads_caches(op: Op, ops: list[Op]) -> bool:
    """Whether a batch reads the cached values of this op's inputs (spatial ops: a padded copy of them).

    A pointwise op reads them when two or more of its inputs are tensors (it gathers each on the union of their
    changed rectangles); with one tensor and model constants (a layer scale) it maps the changed values alone.
    """
    if op.kind == "elementwise":
        return sum(ops[j].kind != "const" for j in op.inputs) > 1
    return op.kind in ("dense", "output", "spatial")


class HeldBytes:
    """Bytes of the values the unoccluded pass holds (by storage: views count once), against a limit.

    Example:
        >>> import torch
        >>> held = HeldBytes(limit=1024)
        >>> value = torch.zeros(64)  # 256 bytes
        >>> held.add(value, "conv1"); held.add(value.view(8, 8), "view"); held.total
        256
        >>> held.remove(value); held.remove(value); held.total
        0
        >>> held.add(torch.zeros(512), "conv2")
        Traceback (most recent call last):
        ...
        zf_attr.occlusion.incremental.held.CacheTooLargeError: memory_budget=0.0 MiB cannot hold ...
    """

    def __init__(self, limit: int | None) -> None:
        self.limit, self.total = limit, 0
        self.storages: dict[int, list[int]] = {}  # data pointer -> [bytes, number of held values on it]

    def add(self, value: Any, name: str) -> None:
        """Count ``value`` (the output of op ``name``); raise :class:`CacheTooLargeError` past the limit."""
        if not isinstance(value, Tensor) or value.device.type == "meta":
            return
        storage = value.untyped_storage()
        entry = self.storages.setdefault(storage.data_ptr(), [storage.nbytes(), 0])
        entry[1] += 1
        if entry[1] == 1:
            self.total += entry[0]
        if self.limit is not None and self.total > self.limit:
            raise CacheTooLargeError(
                f"memory_budget={2 * self.limit / 2**20:.1f} MiB cannot hold the incremental engine's cache of the "
                f"unoccluded activations: it passes half the budget at {name}"
            )

    def remove(self, value: Any) -> None:
        """Stop counting ``value`` (its storage once no held value uses it)."""
        if not isinstance(value, Tensor) or value.device.type == "meta":
            return
        key = value.untyped_storage().data_ptr()
        entry = self.storages.get(key)
        if entry is not None:
            entry[1] -= 1
            if entry[1] == 0:
                self.total -= entry[0]
                del self.storages[key]
