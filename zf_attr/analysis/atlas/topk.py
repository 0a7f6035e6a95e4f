"""The k strongest activations of each feature map over a data set: an exact, mergeable record.

Entries are kept in one deterministic total order: activation value descending, then image id ascending,
then location ``(row, col)`` ascending. Because the order is total, the top ``k`` of a union of disjoint data
is the top ``k`` of the union of the parts' top ``k``: results mined on shards, or in several runs, merge
exactly and in any order (:meth:`TopKActivations.merge`).

Example:
    >>> import torch
    >>> from zf_attr.analysis.atlas.topk import TopKActivations
    >>> a = TopKActivations.empty("layer3", k=2, channels=[0])
    >>> a = a.add_candidates(torch.tensor([[3.0, 1.0]]), torch.tensor([[0, 1]]), torch.tensor([[[0, 0], [1, 1]]]), 2)
    >>> b = TopKActivations.empty("layer3", k=2, channels=[0])
    >>> b = b.add_candidates(torch.tensor([[2.0]]), torch.tensor([[2]]), torch.tensor([[[0, 1]]]), 1)
    >>> merged = a.merge(b)
    >>> merged.values.tolist(), merged.image_ids.tolist(), merged.images_seen
    ([[3.0, 2.0]], [[0, 2]], 3)
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

__all__ = ["TopKActivations"]

_FORMAT = "zf_attr.TopKActivations"
_VERSION = 1
_LAST = torch.iinfo(torch.int64).max  # sort key of an empty slot: after every real entry


@dataclass(frozen=True, eq=False)
class TopKActivations:
    """Per channel, the ``k`` strongest activations of a layer over the data seen so far.

    Row ``i`` of every tensor belongs to channel ``channels[i]``; within a row, entries are in the total order
    (value descending, image id ascending, location ascending). Slots not filled yet (fewer than ``k``
    candidates seen) hold value ``-inf``, image id ``-1`` and location ``(-1, -1)``, and come last.

    Attributes:
        layer: name of the layer the activations come from.
        k: entries kept per channel.
        channels: ``(C,)`` the channels mined (indices into the layer's channels).
        values: ``(C, k)`` activation values.
        image_ids: ``(C, k)`` int64 global index of the image in the data (``-1``: empty slot).
        locations: ``(C, k, 2)`` int64 ``(row, col)`` of the activation in the layer's map.
        images_seen: images mined so far.
        map_size: ``(h, w)`` of the layer's map, ``None`` before any image or when images of several sizes
            gave maps of several sizes.
        one_per_image: at most one entry per (image, channel), the image's strongest activation in that map
            (the paper's 9 are 9 different images); ``False`` keeps any location of any image.
        rectifier: the rectifier the maps were read after (``"relu"`` for ZFNet's ``convN``, see
            :func:`~zf_attr.analysis.mine_top_k`), ``None`` for the layer's raw output.

    Example:
        >>> import torch
        >>> record = TopKActivations.empty("conv3", k=2, channels=[5])
        >>> record = record.add_candidates(
        ...     torch.tensor([[1.0, 4.0, 4.0]]), torch.tensor([[7, 9, 8]]), torch.tensor([[[0, 0], [1, 2], [0, 1]]]), 3
        ... )
        >>> record.values.tolist(), record.image_ids.tolist()   # the tie at 4.0 goes to the smaller image id
        ([[4.0, 4.0]], [[8, 9]])
    """

    layer: str
    k: int
    channels: Tensor
    values: Tensor
    image_ids: Tensor
    locations: Tensor
    images_seen: int = 0
    map_size: tuple[int, int] | None = None
    one_per_image: bool = True
    rectifier: str | None = None

    @classmethod
    def empty(
        cls,
        layer: str,
        k: int,
        channels: Sequence[int] | Tensor,
        *,
        one_per_image: bool = True,
        dtype: torch.dtype = torch.float32,
        rectifier: str | None = None,
    ) -> TopKActivations:
        """A record that has seen no image yet.

        Raises:
            ValueError: ``k`` is not a positive int or ``channels`` is empty.
        """
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"k={k!r} must be a positive int (the number of activations kept per channel)")
        channels = torch.as_tensor(channels, dtype=torch.long).reshape(-1)
        if channels.numel() == 0:
            raise ValueError("channels is empty; pass at least one channel (or None for all)")
        count = channels.numel()
        return cls(
            layer=layer,
            k=k,
            channels=channels.clone(),
            values=torch.full((count, k), float("-inf"), dtype=dtype),
            image_ids=torch.full((count, k), -1, dtype=torch.long),
            locations=torch.full((count, k, 2), -1, dtype=torch.long),
            one_per_image=bool(one_per_image),
            rectifier=rectifier,
        )

    @property
    def filled(self) -> Tensor:
        """``(C, k)`` bool: which slots hold an activation."""
        return self.image_ids >= 0

    def row(self, channel: int) -> int:
        """Row of ``channel`` in the tensors.

        Raises:
            ValueError: ``channel`` was not mined.
        """
        hits = (self.channels == channel).nonzero()
        if hits.numel() == 0:
            raise ValueError(f"channel {channel} was not mined; mined channels: {self.channels.tolist()[:12]}")
        return int(hits[0, 0])

    def add_candidates(
        self,
        values: Tensor,
        image_ids: Tensor,
        locations: Tensor,
        images: int,
        map_size: tuple[int, int] | None = None,
    ) -> TopKActivations:
        """A new record holding the top ``k`` of this one and the candidates ``(C, m)`` (one row per channel).

        The candidates must come from ``images`` images not seen before (their ids disjoint from the ids
        already seen); ``map_size`` is the map size they were found in.
        """
        if values.shape[0] != self.channels.numel() or values.shape != image_ids.shape:
            raise ValueError(
                f"candidates have shape {tuple(values.shape)} (ids {tuple(image_ids.shape)}); expected "
                f"({self.channels.numel()}, m) for the {self.channels.numel()} channels mined"
            )
        new_size = map_size if self.images_seen == 0 else _same_size(self.map_size, map_size)
        return self._select(values, image_ids, locations, self.images_seen + images, new_size)

    def merge(self, other: TopKActivations) -> TopKActivations:
        """The exact top ``k`` over the data of both records (they must have seen disjoint data).

        The result does not depend on the order of merging: ``a.merge(b)`` equals ``b.merge(a)`` bitwise.

        Raises:
            TypeError: ``other`` is not a :class:`TopKActivations`.
            ValueError: the records differ in layer, ``k``, channels or ``one_per_image``, or both hold the same
                (image, channel, location): their data overlapped, which would count it twice.
        """
        if not isinstance(other, TopKActivations):
            raise TypeError(f"can only merge a TopKActivations, got {type(other).__name__}")
        self.check_compatible(other, "other")
        if other.images_seen == 0:
            map_size = self.map_size
        elif self.images_seen == 0:
            map_size = other.map_size
        else:
            map_size = _same_size(self.map_size, other.map_size)
        return self._select(
            other.values.to(self.values.dtype),
            other.image_ids,
            other.locations,
            self.images_seen + other.images_seen,
            map_size,
        )

    def check_compatible(self, other: TopKActivations, name: str) -> None:
        """Raise ``ValueError`` naming ``name`` unless ``other`` mined the same layer, ``k`` and channels."""
        for field in ("layer", "k", "one_per_image", "rectifier"):
            if getattr(self, field) != getattr(other, field):
                raise ValueError(
                    f"{name} has {field}={getattr(other, field)!r}, this result {field}={getattr(self, field)!r}; "
                    "only results of the same layer, k, one_per_image and rectifier can be combined"
                )
        if not torch.equal(self.channels, other.channels):
            raise ValueError(
                f"{name} mined channels {other.channels.tolist()[:12]}, this result {self.channels.tolist()[:12]}; "
                "only results over the same channels can be combined"
            )

    def _select(
        self, values: Tensor, ids: Tensor, locations: Tensor, images_seen: int, map_size: tuple[int, int] | None
    ) -> TopKActivations:
        all_values = torch.cat([self.values, values.to(self.values.dtype)], dim=1)
        all_ids = torch.cat([self.image_ids, ids.long()], dim=1)
        all_locations = torch.cat([self.locations, locations.long()], dim=1)
        order = total_order(all_values, all_ids, all_locations)
        all_values, all_ids = all_values.gather(1, order), all_ids.gather(1, order)
        all_locations = all_locations.gather(1, order[..., None].expand(-1, -1, 2))
        _check_disjoint(all_ids, all_locations, self.one_per_image)
        keep = slice(0, self.k)
        return TopKActivations(
            layer=self.layer,
            k=self.k,
            channels=self.channels,
            values=all_values[:, keep].contiguous(),
            image_ids=all_ids[:, keep].contiguous(),
            locations=all_locations[:, keep].contiguous(),
            images_seen=images_seen,
            map_size=map_size,
            one_per_image=self.one_per_image,
            rectifier=self.rectifier,
        )

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the record with :func:`torch.save` (atomically: a partly written file never replaces one).

        Returns:
            The path written.
        """
        path = Path(path)
        state: dict[str, Any] = {
            "format": _FORMAT,
            "version": _VERSION,
            "layer": self.layer,
            "k": self.k,
            "channels": self.channels,
            "values": self.values,
            "image_ids": self.image_ids,
            "locations": self.locations,
            "images_seen": self.images_seen,
            "map_size": None if self.map_size is None else list(self.map_size),
            "one_per_image": self.one_per_image,
            "rectifier": self.rectifier,
        }
        partial = path.with_name(f".{path.name}.partial")
        torch.save(state, partial)
        os.replace(partial, path)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> TopKActivations:
        """Read a record written by :meth:`save` (tensors only: loaded with ``weights_only=True``).

        Raises:
            ValueError: the file is not a saved :class:`TopKActivations`.
        """
        state = torch.load(Path(path), map_location="cpu", weights_only=True)
        if not isinstance(state, dict) or state.get("format") != _FORMAT:
            raise ValueError(f"{path} is not a saved TopKActivations (no {_FORMAT!r} format tag)")
        if state.get("version") != _VERSION:
            raise ValueError(f"{path} has format version {state.get('version')}; this zf_attr reads {_VERSION}")
        size = state["map_size"]
        return cls(
            layer=state["layer"],
            k=int(state["k"]),
            channels=state["channels"],
            values=state["values"],
            image_ids=state["image_ids"],
            locations=state["locations"],
            images_seen=int(state["images_seen"]),
            map_size=None if size is None else (int(size[0]), int(size[1])),
            one_per_image=bool(state["one_per_image"]),
            rectifier=state.get("rectifier"),  # files written before maps were rectified: raw
        )

    def equal(self, other: TopKActivations) -> bool:
        """Whether both records are identical, tensors bitwise (values, ids, locations) and metadata."""
        return (
            (self.layer, self.k, self.images_seen, self.map_size, self.one_per_image, self.rectifier)
            == (other.layer, other.k, other.images_seen, other.map_size, other.one_per_image, other.rectifier)
            and torch.equal(self.channels, other.channels)
            and self.values.dtype == other.values.dtype
            and torch.equal(self.values, other.values)
            and torch.equal(self.image_ids, other.image_ids)
            and torch.equal(self.locations, other.locations)
        )

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(layer={self.layer!r}, k={self.k}, channels={self.channels.numel()}, "
            f"images_seen={self.images_seen}, map_size={self.map_size}, one_per_image={self.one_per_image}, "
            f"rectifier={self.rectifier!r})"
        )


def total_order(values: Tensor, ids: Tensor, locations: Tensor) -> Tensor:
    """Permutation ``(C, m)`` sorting each row by value desc, image id asc, ``(row, col)`` asc; empty slots last.

    Three stable sorts, least significant key first.
    """
    empty = ids < 0
    location_key = torch.where(empty, _LAST, (locations[..., 0] << 32) | locations[..., 1])
    id_key = torch.where(empty, _LAST, ids)
    order = location_key.argsort(dim=1, stable=True)
    order = order.gather(1, id_key.gather(1, order).argsort(dim=1, stable=True))
    return order.gather(1, values.gather(1, order).argsort(dim=1, descending=True, stable=True))


def _check_disjoint(ids: Tensor, locations: Tensor, one_per_image: bool) -> None:
    """Raise if a row (sorted by :func:`total_order`) holds an entry twice: the data overlapped."""
    if ids.shape[1] < 2:
        return
    filled = (ids[:, 1:] >= 0) & (ids[:, :-1] >= 0)
    if one_per_image:
        sorted_ids = ids.sort(dim=1).values
        twice = (sorted_ids[:, 1:] == sorted_ids[:, :-1]) & (sorted_ids[:, :-1] >= 0)
    else:  # identical entries are adjacent in the total order
        twice = filled & (ids[:, 1:] == ids[:, :-1]) & (locations[:, 1:] == locations[:, :-1]).all(dim=-1)
    if bool(twice.any()):
        row, col = (int(i) for i in twice.nonzero()[0])
        image = int((sorted_ids if one_per_image else ids)[row, col])
        raise ValueError(
            f"image id {image} appears twice for the same channel: the data of the two results overlap; "
            "merge only results mined on disjoint data (e.g. shards rank::world_size, or consecutive runs)"
        )


def _same_size(first: tuple[int, int] | None, second: tuple[int, int] | None) -> tuple[int, int] | None:
    return first if first == second else None
