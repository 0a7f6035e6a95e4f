"""Whole-image deconvnet projections of many seeds from one recorded forward graph, batched with vmap."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

import torch
from torch import Tensor

__all__: list[str] = []


class _Seeds(Protocol):
    def make(self, start: int, stop: int) -> Tensor: ...


def _backward(
    activation: Tensor, leaf: Tensor, seeds: _Seeds, slots: int, chunk_size: int, vectorize: bool | None
) -> Iterator[tuple[int, int, Tensor]]:
    """``(start, stop, grad)`` per chunk of slots; ``grad`` is ``(stop - start, N, C, H, W)``.

    ``vectorize=None`` batches with vmap on CUDA and loops elsewhere (faster on CPU, see ``FeatureMapDeconvnet``).
    """
    if vectorize is None:
        vectorize = leaf.is_cuda
    for start in range(0, slots, chunk_size):
        stop = min(start + chunk_size, slots)
        seed = seeds.make(start, stop)
        keep = stop < slots
        if vectorize:  # torch.func.vmap: real batching rules (is_grads_batched loops over convolution_backward)
            grad = torch.func.vmap(lambda g, keep=keep: torch.autograd.grad(activation, leaf, g, retain_graph=keep)[0])(
                seed
            )
        else:
            grads = [
                torch.autograd.grad(activation, leaf, seed[j], retain_graph=keep or j < len(seed) - 1)[0]
                for j in range(len(seed))
            ]
            grad = torch.stack(grads)
        yield start, stop, grad.detach()


def _project_rows(activation: Tensor, leaf: Tensor, rows: Tensor, chunk_size: int, vectorize: bool | None) -> Tensor:
    """Projections ``(S, C, H, W)`` of validated seed rows ``(image, channel, flat)`` (on the activation's device)."""
    out = leaf.new_zeros(len(rows), *leaf.shape[1:])
    if not len(rows):
        return out
    seeds = _RowSeeds(activation.detach(), rows)
    for start, stop, grad in _backward(activation, leaf, seeds, seeds.slots, chunk_size, vectorize):
        chosen = ((seeds.slot >= start) & (seeds.slot < stop)).nonzero().squeeze(1)
        out[chosen] = grad[seeds.slot[chosen] - start, rows[chosen, 0]]
    return out


class _RowSeeds:
    """Seed rows dealt into slots, at most one per image each; a chunk of slots is a seed ``(m, N, C, h, w)``."""

    def __init__(self, activation: Tensor, rows: Tensor) -> None:
        self.activation, self.rows = activation, rows
        images = rows[:, 0]
        order = torch.sort(images, stable=True).indices
        counts = torch.bincount(images, minlength=activation.shape[0])
        firsts = counts.cumsum(0) - counts
        self.slot = torch.empty_like(images)
        self.slot[order] = torch.arange(len(rows), device=rows.device) - firsts[images[order]]
        self.slots = int(counts.max())

    def make(self, start: int, stop: int) -> Tensor:
        n, c, h, w = self.activation.shape
        seed = self.activation.new_zeros(stop - start, n, c, h * w)
        chosen = ((self.slot >= start) & (self.slot < stop)).nonzero().squeeze(1)
        image, channel, flat = self.rows[chosen].unbind(1)
        values = self.activation.reshape(n, c, h * w)[image, channel, flat]
        seed[self.slot[chosen] - start, image, channel, flat] = values
        return seed.reshape(stop - start, n, c, h, w)


class _MapSeeds:
    """Whole maps as seeds: slot ``m`` keeps map ``channels[m]`` of every image, zeros elsewhere."""

    def __init__(self, activation: Tensor, channels: Tensor) -> None:
        self.activation, self.channels = activation, channels.to(activation.device)

    def make(self, start: int, stop: int) -> Tensor:
        seed = self.activation.new_zeros(stop - start, *self.activation.shape)
        for j, channel in enumerate(self.channels[start:stop].tolist()):
            seed[j, :, channel] = self.activation[:, channel]
        return seed
