"""Sharded mining on torch.distributed: which shard this process mines, and the exact merge of all shards.

Under ``torchrun --nproc_per_node N`` every process calls :func:`~zf_attr.analysis.mine_top_k` the same way;
each mines the images at positions ``rank, rank + N, rank + 2N, ...`` of the data (disjoint shards, no padding
duplicates), and the per-rank results are gathered with ``all_gather_object`` and merged exactly, so every rank
returns the result a single process would have computed. The process group is the user's, or initialised here
from torchrun's environment variables (``gloo`` on CPU, ``nccl`` when CUDA is available).

Example:
    >>> from zf_attr.analysis.atlas.distributed import current_shard, rank_path
    >>> current_shard(None) is None          # not launched by torchrun: a single process mines everything
    True
    >>> rank_path("atlas/mined.pt", rank=1, world_size=4).as_posix()
    'atlas/mined.rank1-of-4.pt'
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.distributed as dist

from zf_attr.analysis.atlas.topk import TopKActivations

__all__ = ["current_shard", "gather_merge", "init_from_env", "rank_path"]


def init_from_env(backend: str | None = None) -> None:
    """Initialise the default process group from torchrun's variables (``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``, ...).

    Does nothing when it is initialised already. Called by :func:`current_shard` under torchrun.

    Args:
        backend: ``"gloo"`` or ``"nccl"``; by default ``nccl`` when CUDA is available (each process then uses
            the GPU ``LOCAL_RANK``), else ``gloo``.

    Example:
        >>> import os, socket
        >>> with socket.socket() as probe:
        ...     probe.bind(("127.0.0.1", 0))
        ...     port = str(probe.getsockname()[1])
        >>> variables = dict(RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1", MASTER_PORT=port)
        >>> os.environ.update(variables)                      # what torchrun sets in each process
        >>> init_from_env("gloo")
        >>> dist.get_rank(), dist.get_world_size()
        (0, 1)
        >>> dist.destroy_process_group()
        >>> for name in variables:
        ...     del os.environ[name]
    """
    if dist.is_initialized():
        return
    if backend is None:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    _import_world_defaults()
    dist.init_process_group(backend=backend)


def _import_world_defaults() -> None:
    """Import, before the group exists, the torch modules whose functions take ``group=group.WORLD`` defaults.

    ``torch.distributed.nn`` (imported by ``torch._dynamo``, which torchvision imports) evaluates
    ``group.WORLD`` once, at import. Imported after ``init_process_group``, its defaults hold the process group
    for good: ``destroy_process_group`` then leaves gloo's worker threads running, and one still dropping a
    finished ``all_gather_object`` at interpreter exit aborts the process ("terminate called without an active
    exception", SIGABRT, in about one torchrun run in ten). Imported first, the defaults are ``None``.
    """
    import torch.distributed.nn  # noqa: F401
    import torchvision  # noqa: F401  (imports torch._dynamo, and with it the rest of such modules)


def current_shard(distributed: bool | None) -> tuple[int, int] | None:
    """``(rank, world_size)`` of this process when mining is to be sharded, else ``None``.

    Args:
        distributed: ``None`` (auto): shard when torch.distributed is initialised with more than one process,
            or when torchrun's ``WORLD_SIZE`` is above 1 (the process group is then initialised here);
            ``True``: require that; ``False``: never shard.

    Raises:
        ValueError: ``distributed=True`` outside a distributed launch.
    """
    if distributed is False:
        return None
    if not isinstance(distributed, bool) and distributed is not None:
        raise TypeError(f"distributed must be None (auto), True or False, got {distributed!r}")
    if dist.is_available() and not dist.is_initialized() and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        init_from_env()
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    if distributed:
        raise ValueError(
            "distributed=True, but torch.distributed is not initialised and WORLD_SIZE is not set; launch with "
            "`torchrun --nproc_per_node N script.py` or call torch.distributed.init_process_group() first"
        )
    return None


def gather_merge(result: TopKActivations | None) -> TopKActivations | None:
    """Gather every rank's result and merge them exactly (in rank order; the merge is order-independent).

    Every rank must call it (a collective) and gets the merged result. A rank whose shard held no image passes
    ``None``; the result is ``None`` only when no rank saw an image.

    Example:
        >>> import tempfile, torch
        >>> import torch.distributed as dist
        >>> dist.init_process_group("gloo", init_method=f"file://{tempfile.mkdtemp()}/store", rank=0, world_size=1)
        >>> part = TopKActivations.empty("layer3", k=1, channels=[0])
        >>> part = part.add_candidates(torch.tensor([[2.5]]), torch.tensor([[4]]), torch.tensor([[[1, 1]]]), 1)
        >>> gather_merge(part).values.tolist()
        [[2.5]]
        >>> dist.destroy_process_group()
    """
    parts: list[TopKActivations | None] = [None] * dist.get_world_size()
    dist.all_gather_object(parts, result)
    merged: TopKActivations | None = None
    for part in parts:
        if part is not None:
            merged = part if merged is None else merged.merge(part)
    return merged


def rank_path(path: str | os.PathLike[str], rank: int, world_size: int) -> Path:
    """The per-rank file of a checkpoint path: ``mined.pt`` becomes ``mined.rank{rank}-of-{world_size}.pt``."""
    path = Path(path)
    return path.with_name(f"{path.stem}.rank{rank}-of-{world_size}{path.suffix}")
