"""Splitting a command's inputs across the processes of ``torchrun``, and meeting again at the end.

``torchrun --nproc-per-node N -m zf_attr explain ...`` starts N processes with ``RANK``/``WORLD_SIZE`` set; each
joins the process group (``gloo`` on the CPU, ``nccl`` with CUDA: rank ``r`` then uses GPU ``LOCAL_RANK``), takes
the inputs at positions ``rank, rank + N, ...`` and writes its own outputs and manifest; at the end all wait for
each other and rank 0 merges the manifests into one ``summary.json``. Across machines, torchrun's usual flags
(``--nnodes``, ``--node-rank``, ``--rdzv-endpoint``) work the same, with ``--out`` on a shared file system.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, TypeVar

import torch

__all__ = ["World", "join_world"]

T = TypeVar("T")


@dataclass(frozen=True)
class World:
    """This process's place in the run: ``rank`` of ``size`` (``0`` of ``1`` without torchrun).

    Example:
        >>> World().shard(["a", "b", "c"]), World(1, 2).shard(["a", "b", "c"])
        (['a', 'b', 'c'], ['b'])
    """

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        """More than one process."""
        return self.size > 1

    def shard(self, items: list[T]) -> list[T]:
        """This rank's share of ``items``: positions ``rank, rank + size, ...``."""
        return items[self.rank :: self.size]

    def gather(self, value: Any) -> list[Any]:
        """Every rank's ``value`` (a picklable object), in rank order; also a barrier."""
        if not self.distributed:
            return [value]
        import torch.distributed as dist

        values: list[Any] = [None] * self.size
        dist.all_gather_object(values, value)
        return values

    def device(self, requested: str) -> str:
        """The device of this rank: with several ranks on CUDA, GPU ``LOCAL_RANK`` unless one is named."""
        if self.distributed and requested in ("auto", "cuda") and torch.cuda.is_available():
            return f"cuda:{self.local_rank}"
        return requested

    def close(self) -> None:
        """Leave the process group."""
        if self.distributed:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()


def join_world(device: str = "auto") -> World:
    """Join torchrun's process group when ``WORLD_SIZE`` > 1 (``nccl`` for CUDA devices, else ``gloo``)."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return World()
    import torch.distributed as dist

    from zf_attr.analysis.atlas.distributed import init_from_env

    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = device != "cpu" and not device.startswith("cpu") and torch.cuda.is_available()
    init_from_env("nccl" if cuda else "gloo")  # sets the CUDA device LOCAL_RANK for nccl
    return World(dist.get_rank(), dist.get_world_size(), local_rank)
