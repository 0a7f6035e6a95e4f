"""The data sources of :func:`~zf_attr.analysis.mine_top_k`: batches of ``(global ids, images)`` of one shard.

Tensors, map-style data sets and unshuffled data loaders are indexed, so the images of other shards, and
those already mined before a resume, are never loaded; any other iterable is read in full by every rank and
filtered by position.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import (
    DataLoader,
    Dataset,
    DistributedSampler,
    IterableDataset,
    RandomSampler,
    SequentialSampler,
    Subset,
)

from zf_attr.errors import ZFAttrWarning

__all__ = ["Source"]

Batch = tuple[Tensor, Tensor]  # (ids (n,), images (n, C, H, W))


class Source:
    """Batches ``(ids, images)`` of this rank's share of ``data``, after skipping its first ``skip`` images."""

    def __init__(
        self, data: Any, batch_size: int, shard: tuple[int, int] | None, skip: int, indices: Sequence[int] | None
    ) -> None:
        self.data, self.batch_size, self.skip, self.indices = data, batch_size, skip, indices
        self.rank, self.world = shard or (0, 1)
        self.total = self._total()

    def _total(self) -> int | None:
        data = self.data
        if isinstance(data, Tensor):
            return len(self._positions(len(data) if data.dim() == 4 else 1)) + self.skip
        if isinstance(data, DataLoader) and _plain_sequential(data):
            return len(self._positions(len(data.dataset))) + self.skip  # type: ignore[arg-type]
        if isinstance(data, Dataset) and not isinstance(data, IterableDataset) and _sized(data):
            return len(self._positions(len(data))) + self.skip  # type: ignore[arg-type]
        if self.indices is not None:
            raise TypeError(
                "indices= needs data that can be indexed: a tensor, a map-style Dataset or an unshuffled DataLoader "
                f"over one; got {type(data).__name__}"
            )
        if isinstance(data, DataLoader):
            _check_loader(data, self.world > 1)
            if _sized(data.dataset):
                return _own(len(data.dataset), self.rank, self.world)  # type: ignore[arg-type]
        return None

    def __iter__(self) -> Iterator[Batch]:
        data = self.data
        if isinstance(data, Tensor):
            return self._tensor(data)
        if isinstance(data, DataLoader) and _plain_sequential(data):
            return self._loader(data)
        if isinstance(data, Dataset) and not isinstance(data, IterableDataset) and _sized(data):
            return self._dataset(data)
        if isinstance(data, (str, bytes)) or not isinstance(data, Iterable):
            raise TypeError(
                f"data must be a tensor, a Dataset, a DataLoader or an iterable of images, got {type(data).__name__}"
            )
        return self._stream(data)

    def _positions(self, length: int) -> Sequence[int]:
        """Ids this rank mines: ``indices`` (or all), its share ``rank::world``, minus the first ``skip``."""
        if self.indices is None:
            return range(self.rank, length, self.world)[self.skip :]
        return _checked_indices(self.indices, length)[self.rank :: self.world][self.skip :]

    def _tensor(self, data: Tensor) -> Iterator[Batch]:
        data = data[None] if data.dim() == 3 else data
        if data.dim() != 4:
            raise ValueError(f"data has shape {tuple(data.shape)}; pass images (N, C, H, W)")
        positions = torch.tensor(list(self._positions(len(data))), dtype=torch.long)
        for start in range(0, len(positions), self.batch_size):
            ids = positions[start : start + self.batch_size]
            yield ids, data[ids.to(data.device)]

    def _dataset(self, data: Dataset) -> Iterator[Batch]:
        positions = self._positions(len(data))  # type: ignore[arg-type]
        for start in range(0, len(positions), self.batch_size):
            chunk = positions[start : start + self.batch_size]
            yield from _stack_runs(chunk, [_image(data[index], f"data[{index}]", single=True) for index in chunk])

    def _loader(self, data: DataLoader) -> Iterator[Batch]:
        positions = self._positions(len(data.dataset))  # type: ignore[arg-type]
        if self.indices is None and self.skip == 0 and self.world == 1:
            loader: Iterable[Any] = data
        else:  # load only this rank's remaining images, with the user's batch size, workers and collate_fn
            loader = DataLoader(
                Subset(data.dataset, positions),
                batch_size=data.batch_size,
                num_workers=data.num_workers,
                collate_fn=data.collate_fn,
                pin_memory=data.pin_memory,
            )
        offset = 0
        for item in loader:
            images = _image(item, "a batch of the DataLoader", single=False)
            ids = torch.tensor(positions[offset : offset + len(images)], dtype=torch.long)
            offset += len(images)
            yield ids, images

    def _stream(self, data: Iterable[Any]) -> Iterator[Batch]:
        position, own, pending_ids, pending = 0, 0, [], []
        for item in data:
            images = _image(item, "an item of data", single=None)
            single = images.dim() == 3
            batch = images[None] if single else images
            keep = [j for j in range(len(batch)) if (position + j) % self.world == self.rank]
            kept = []
            for j in keep:
                if own >= self.skip:
                    kept.append(j)
                own += 1
            ids = [position + j for j in kept]
            position += len(batch)
            if not kept:
                continue
            if not single:
                yield torch.tensor(ids, dtype=torch.long), batch[kept] if len(kept) < len(batch) else batch
                continue
            if pending and pending[0].shape != batch[0].shape:
                yield torch.tensor(pending_ids, dtype=torch.long), torch.stack(pending)
                pending_ids, pending = [], []
            pending_ids.extend(ids)
            pending.append(batch[0])
            if len(pending) == self.batch_size:
                yield torch.tensor(pending_ids, dtype=torch.long), torch.stack(pending)
                pending_ids, pending = [], []
        if pending:
            yield torch.tensor(pending_ids, dtype=torch.long), torch.stack(pending)


def _check_loader(loader: DataLoader, sharded: bool) -> None:
    """Refuse loaders whose order would make the ids or the shards wrong; warn where ids are not data-set indices."""
    if isinstance(loader.sampler, DistributedSampler):
        raise TypeError(
            "data is a DataLoader with a DistributedSampler: mine_top_k shards the data itself (without the padding "
            "duplicates a DistributedSampler adds, which would break exactness); pass the data set, or an unshuffled "
            "DataLoader over it, on every rank"
        )
    if isinstance(loader.sampler, RandomSampler):
        if sharded:
            raise TypeError(
                "data is a shuffled DataLoader: every rank must read the images in the same order; pass the data set "
                "or a DataLoader with shuffle=False (mine_top_k shards it itself)"
            )
        warnings.warn(
            "data is a shuffled DataLoader: image ids are positions in this shuffled stream, not data-set indices; "
            "use shuffle=False to get data-set indices (needed to fetch the images again for the atlas)",
            ZFAttrWarning,
            stacklevel=5,
        )


def _checked_indices(indices: Any, length: int) -> list[int]:
    if isinstance(indices, Tensor):
        indices = indices.reshape(-1).tolist()
    if isinstance(indices, (str, bytes)) or not isinstance(indices, Iterable):
        raise TypeError(f"indices must be a sequence of ints, got {type(indices).__name__}")
    items = list(indices)
    for item in items:
        if isinstance(item, bool) or not isinstance(item, int):
            raise TypeError(f"indices must hold ints, got {item!r}")
        if not 0 <= item < length:
            raise ValueError(f"indices holds {item}, out of range for data of {length} images")
    if len(set(items)) != len(items):
        raise ValueError("indices holds an index twice; each image may be mined once")
    return items


def _stack_runs(positions: Sequence[int], images: list[Tensor]) -> Iterator[Batch]:
    """Stack consecutive images of one size into batches."""
    start = 0
    for end in range(1, len(images) + 1):
        if end == len(images) or images[end].shape != images[start].shape:
            yield torch.tensor(positions[start:end], dtype=torch.long), torch.stack(images[start:end])
            start = end


def _image(item: Any, what: str, single: bool | None) -> Tensor:
    """The image tensor of an item: itself, or the first element of a tuple/list (``(image, label)``)."""
    if isinstance(item, (tuple, list)) and item:
        item = item[0]
    if not isinstance(item, Tensor):
        raise TypeError(f"{what} is a {type(item).__name__}; expected an image tensor or an (image, label) tuple")
    dims = {True: (3,), False: (4,), None: (3, 4)}[single]
    if item.dim() not in dims:
        shapes = " or ".join({3: "(C, H, W)", 4: "(n, C, H, W)"}[d] for d in dims)
        raise ValueError(f"{what} has shape {tuple(item.shape)}; expected {shapes}")
    return item


def _sized(data: Any) -> bool:
    try:
        len(data)
    except TypeError:
        return False
    return True


def _own(length: int, rank: int, world: int) -> int:
    return len(range(rank, length, world))


def _plain_sequential(loader: DataLoader) -> bool:
    """A loader over a sized map-style data set in its own order, in fixed-size batches, dropping nothing."""
    return (
        isinstance(loader.sampler, SequentialSampler)
        and loader.batch_size is not None
        and not loader.drop_last
        and not isinstance(loader.dataset, IterableDataset)
        and _sized(loader.dataset)
    )
