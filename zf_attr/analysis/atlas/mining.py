"""Stream a data set through a model and keep, per feature map of a layer, its k strongest activations.

Memory is bounded by ``k × channels`` (plus one batch): per-image activations are never kept. The forward pass
stops right after the layer, under ``torch.no_grad``. Runs can be checkpointed and resumed, combined with
:meth:`~zf_attr.analysis.TopKActivations.merge`, and sharded over processes under ``torchrun``
(:mod:`zf_attr.analysis.atlas.distributed`).

Example:
    >>> import torch, torchvision
    >>> from zf_attr.analysis import mine_top_k
    >>> model = torchvision.models.resnet18().eval()
    >>> mined = mine_top_k(model, "layer2", torch.randn(6, 3, 64, 64), k=3, channels=[0, 5], show_progress=False)
    >>> tuple(mined.values.shape), tuple(mined.locations.shape), mined.images_seen, mined.map_size
    ((2, 3), (2, 3, 2), 6, (8, 8))
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from zf_attr.analysis.atlas.distributed import current_shard, gather_merge, rank_path
from zf_attr.analysis.atlas.sources import Source
from zf_attr.analysis.atlas.topk import TopKActivations
from zf_attr.attr._layers import capture_layer_output, check_channels, resolve_layer
from zf_attr.attr._rectified import LayerMap, layer_map

__all__ = ["mine_top_k"]


def mine_top_k(
    model: nn.Module,
    layer: str | nn.Module,
    data: Any,
    k: int = 9,
    channels: int | Sequence[int] | Tensor | None = None,
    *,
    one_per_image: bool = True,
    batch_size: int = 32,
    indices: Sequence[int] | None = None,
    resume_from: str | os.PathLike[str] | TopKActivations | None = None,
    checkpoint: str | os.PathLike[str] | None = None,
    checkpoint_every: int = 50,
    show_progress: bool = True,
    distributed: bool | None = None,
    rectified: bool = True,
) -> TopKActivations:
    """Mine the ``k`` strongest activations of each chosen feature map of ``layer`` over ``data``.

    Image ids are global positions in the data: the index in a tensor or ``Dataset``, the running count of
    images yielded by an iterable or ``DataLoader`` (so it is the data-set index for an unshuffled loader).

    Args:
        model: the network; put in eval mode for the run and restored afterwards, never modified.
        layer: the layer, by name (``"layer3"``, ``"features.28"``) or as a submodule; it must return a
            feature map ``(N, C, h, w)``.
        data: images as a tensor ``(N, C, H, W)``, a map-style ``Dataset`` of images or ``(image, label)``
            pairs, a ``DataLoader``, or any iterable of images ``(C, H, W)``, batches ``(n, C, H, W)`` or
            tuples whose first element is one of those.
        k: activations kept per channel.
        channels: the channels to mine (an int, a sequence of ints), or ``None`` for all.
        one_per_image: keep at most one activation per (image, channel), the image's strongest in that map (as
            the paper's figures do); ``False`` keeps the ``k`` strongest locations wherever they are.
        batch_size: images per forward pass for tensors, data sets and iterables of single images (a
            ``DataLoader``'s own batches are used as they come).
        indices: mine only these images of an indexable ``data`` (tensor, ``Dataset``, unshuffled
            ``DataLoader``), in this order; their ids stay the indices into ``data``, so runs over different
            parts of one data set merge into the result over their union.
        resume_from: a result or checkpoint (object or file) of an earlier run over the *same data in the same
            order*; the images it has seen are skipped (not loaded at all for tensors, data sets and unshuffled
            loaders) and mining continues from it.
        checkpoint: file to write the result to every ``checkpoint_every`` batches and at the end (atomically);
            pass it as ``resume_from`` after an interruption. Sharded runs write one file per rank
            (``mined.rank0-of-2.pt``, see :func:`~zf_attr.analysis.atlas.distributed.rank_path`).
        checkpoint_every: batches between checkpoints.
        show_progress: show a tqdm progress bar (in images; sharded, rank 0's only).
        distributed: ``None`` (auto): shard over the processes of torch.distributed when it runs with more than
            one (e.g. under ``torchrun``); ``True`` requires that; ``False`` never shards. Sharded, every rank
            mines positions ``rank::world_size`` and gets the exactly merged result of all ranks.
        rectified: mine the map after the rectifier the layer's output goes straight into (ZFNet's ``convN`` →
            ReLU: the paper's rectified maps; a hook on the layer alone sees the output before it), if any;
            ``False`` mines the raw output. The result's ``rectifier`` says which.

    Returns:
        A :class:`~zf_attr.analysis.TopKActivations`.

    Raises:
        ValueError: unknown layer (with suggestions), channel out of range, ``k < 1``, empty data, a layer
            that is not a feature map, NaN activations, or a ``resume_from`` of another layer, ``k`` or
            channels.
        TypeError: ``data`` yields something that is not an image tensor.

    Example:
        >>> import torch, torchvision
        >>> model = torchvision.models.resnet18().eval()
        >>> images = torch.randn(10, 3, 32, 32)
        >>> mined = mine_top_k(model, "layer1", images, k=4, channels=[2], batch_size=4, show_progress=False)
        >>> mined.image_ids.shape, mined.images_seen, bool((mined.values[0, :-1] >= mined.values[0, 1:]).all())
        (torch.Size([1, 4]), 10, True)
    """
    layer_name, module = resolve_layer(model, layer)
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k={k!r} must be a positive int (the number of activations kept per channel)")
    for name, value in (("batch_size", batch_size), ("checkpoint_every", checkpoint_every)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name}={value!r} must be a positive int")
    shard = current_shard(distributed)
    checkpoint_path = None if checkpoint is None else Path(checkpoint)
    if shard is not None and checkpoint_path is not None:
        checkpoint_path = rank_path(checkpoint_path, *shard)
    state = _resume(resume_from, shard)
    if state is not None:
        asked = TopKActivations.empty(layer_name, k, [0], one_per_image=one_per_image)
        for field in ("layer", "k", "one_per_image"):
            if getattr(state, field) != getattr(asked, field):
                raise ValueError(
                    f"resume_from has {field}={getattr(state, field)!r} but this run asks for "
                    f"{field}={getattr(asked, field)!r}; resume with the arguments of the run that wrote it"
                )
    parameter = next(model.parameters(), None)
    reading: LayerMap | None = None
    modes = [(submodule, submodule.training) for submodule in model.modules()]
    model.eval()
    try:
        source = Source(data, batch_size, shard, 0 if state is None else state.images_seen, indices)
        progress = _progress(show_progress, source.total, 0 if state is None else state.images_seen, shard)
        try:
            for count, (ids, images) in enumerate(source, start=1):
                if parameter is not None:
                    dtype = parameter.dtype if images.is_floating_point() else images.dtype
                    images = images.to(device=parameter.device, dtype=dtype)
                if reading is None:
                    reading = layer_map(model, layer_name, module, (images[:1],), rectified=rectified)
                    if state is not None and state.rectifier != reading.rectifier:
                        raise ValueError(
                            f"resume_from has rectifier={state.rectifier!r} but this run reads the map with "
                            f"rectifier={reading.rectifier!r}; resume with the rectified= of the run that wrote it"
                        )
                with torch.no_grad():
                    activation, _ = capture_layer_output(model, module, (images,), stop=True, transform=reading)
                if state is None:
                    state = _first_state(activation, layer_name, k, channels, one_per_image, reading.rectifier)
                elif count == 1:  # resumed: the channels asked for must be the ones mined before
                    _check_resumed_channels(state, activation, channels)
                state = _update(state, activation, ids)
                progress.update(len(ids))
                if checkpoint_path is not None and count % checkpoint_every == 0:
                    state.save(checkpoint_path)
        finally:
            progress.close()
    finally:
        for submodule, training in modes:
            submodule.train(training)
    if checkpoint_path is not None and state is not None:
        state.save(checkpoint_path)  # sharded: this rank's own shard, to resume it
    if shard is not None:
        state = gather_merge(state)
        if checkpoint is not None and shard[0] == 0 and state is not None:
            state.save(checkpoint)  # the merged result of all ranks
    if state is None or state.images_seen == 0:
        raise ValueError("data yielded no images; pass a non-empty tensor, data set, DataLoader or iterable")
    return state


def _resume(resume_from: Any, shard: tuple[int, int] | None) -> TopKActivations | None:
    if resume_from is None or isinstance(resume_from, TopKActivations):
        return resume_from
    if not isinstance(resume_from, (str, os.PathLike)):
        raise TypeError(f"resume_from must be a TopKActivations or a file path, got {type(resume_from).__name__}")
    path = Path(resume_from) if shard is None else rank_path(resume_from, *shard)
    if not path.exists():
        raise ValueError(f"resume_from={str(path)!r} does not exist; pass a file written by checkpoint= or save()")
    return TopKActivations.load(path)


def _first_state(
    activation: Tensor, layer: str, k: int, channels: Any, one_per_image: bool, rectifier: str | None
) -> TopKActivations:
    if activation.dim() != 4:
        raise ValueError(
            f"layer {layer!r} returns shape {tuple(activation.shape)}; mining needs a feature map (N, C, h, w)"
        )
    chosen = check_channels(channels, activation.shape[1], layer, unique=True)
    dtype = activation.dtype if activation.is_floating_point() else torch.float32
    return TopKActivations.empty(layer, k, chosen, one_per_image=one_per_image, dtype=dtype, rectifier=rectifier)


def _check_resumed_channels(state: TopKActivations, activation: Tensor, channels: Any) -> None:
    chosen = check_channels(channels, activation.shape[1] if activation.dim() == 4 else 0, state.layer, unique=True)
    if not torch.equal(chosen, state.channels):
        raise ValueError(
            f"resume_from mined channels {state.channels.tolist()[:12]}, this run asks for {chosen.tolist()[:12]}; "
            "resume with the channels of the run that wrote it"
        )


def _update(state: TopKActivations, activation: Tensor, ids: Tensor) -> TopKActivations:
    """Merge one batch's candidates into ``state`` (exactly: ties follow the total order)."""
    if activation.dim() != 4:
        raise ValueError(f"layer {state.layer!r} returns shape {tuple(activation.shape)}; expected (N, C, h, w)")
    n, count, height, width = activation.shape
    if int(state.channels.max()) >= count:
        raise ValueError(f"layer {state.layer!r} has {count} channels here, fewer than the channels being mined")
    if n > 1 and not bool((ids[1:] > ids[:-1]).all()):  # columns must run in (id, location) order
        order = ids.argsort()
        ids, activation = ids[order], activation[order.to(activation.device)]
    if len(state.channels) == count and bool((state.channels == torch.arange(count)).all()):
        maps = activation.flatten(2)  # every channel, in order: no copy
    else:
        maps = activation.index_select(1, state.channels.to(activation.device)).flatten(2)  # (n, C, h*w)
    if state.one_per_image:
        values, flat = maps.max(dim=2)  # first maximal location on ties: location ascending
        values, flat, cand_ids = values.T, flat.T, ids.to(flat.device).expand(len(state.channels), n)
    else:
        values = maps.transpose(0, 1).reshape(len(state.channels), n * height * width)
        flat = torch.arange(height * width, device=values.device).repeat(n).expand_as(values)
        cand_ids = ids.to(values.device).repeat_interleave(height * width).expand_as(values)
    if bool(values.isnan().any()):
        bad = sorted({int(i) for i in cand_ids[values.isnan()].unique()})[:5]
        raise ValueError(f"layer {state.layer!r} gave NaN activations for image ids {bad}; check the inputs")
    if values.shape[1] > state.k:
        columns = _first_k(values, state.k)
        values, flat, cand_ids = values.gather(1, columns), flat.gather(1, columns), cand_ids.gather(1, columns)
    locations = torch.stack([flat // width, flat % width], dim=-1)
    return state.add_candidates(values.cpu(), cand_ids.cpu(), locations.cpu(), n, (height, width))


def _first_k(values: Tensor, k: int) -> Tensor:
    """Columns ``(C, k)`` of each row's ``k`` largest values, ties going to the leftmost columns (exact)."""
    threshold = values.topk(k, dim=1).values[:, -1:]
    greater = values > threshold
    equal = values == threshold
    needed = k - greater.sum(dim=1, keepdim=True)
    take = greater | (equal & (equal.cumsum(dim=1) <= needed))
    return take.nonzero()[:, 1].reshape(values.shape[0], k)


def _progress(show: bool, total: int | None, initial: int, shard: tuple[int, int] | None) -> Any:
    from tqdm.auto import tqdm

    label = "mining" if shard is None else f"mining (rank 0 of {shard[1]}; the others run alike)"
    hidden = not show or (shard is not None and shard[0] != 0)  # one bar, not N interleaved ones
    return tqdm(total=total, initial=initial, unit="img", desc=label, disable=hidden, leave=False)
