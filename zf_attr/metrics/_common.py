"""Shared pieces of the metrics: map reduction, rank correlation, SSIM and argument validation."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["class_indices", "saliency", "spearman", "ssim"]


def saliency(maps: Any, argument: str = "maps") -> Tensor:
    """Reduce attribution maps to one value per pixel: ``(N, H, W)`` as is, ``(N, C, H, W)`` → ``sum_c |maps|``.

    Example:
        >>> saliency(torch.tensor([[[[1.0, -2.0]], [[3.0, 4.0]]]]))
        tensor([[[4., 6.]]])

    Raises:
        TypeError: not a floating-point tensor (the message names ``argument``).
        ValueError: not 3-D or 4-D, or an empty batch.
    """
    if not isinstance(maps, Tensor):
        raise TypeError(
            f"{argument} must be a torch.Tensor of shape (N, H, W) or (N, C, H, W), got {type(maps).__name__}"
        )
    if not maps.is_floating_point():
        raise TypeError(f"{argument} has dtype {maps.dtype}; it must be floating point (convert with .float())")
    if maps.dim() not in (3, 4) or maps.shape[0] == 0:
        raise ValueError(f"{argument} has shape {tuple(maps.shape)}; it must be (N, H, W) or (N, C, H, W) with N >= 1")
    return maps.abs().sum(1) if maps.dim() == 4 else maps


def class_indices(target: Any, num_examples: int, device: torch.device, argument: str = "target") -> Tensor:
    """One class index per example, as a ``(N,)`` long tensor on ``device``.

    ``target`` may be an int (the same class for all), a list of N ints, or a 0-d or length-N integer tensor.

    Example:
        >>> class_indices(3, 2, torch.device("cpu"))
        tensor([3, 3])
    """
    if isinstance(target, bool):
        raise TypeError(f"{argument} must be an int, a list of ints or an integer tensor, not bool")
    if isinstance(target, int):
        return torch.full((num_examples,), target, dtype=torch.long, device=device)
    if isinstance(target, Tensor):
        if target.is_floating_point() or target.is_complex() or target.dtype == torch.bool:
            raise TypeError(f"{argument} tensor must hold integer class indices, got dtype {target.dtype}")
        if target.numel() == 1:
            return target.reshape(()).to(device=device, dtype=torch.long).expand(num_examples).clone()
        if target.dim() == 1 and target.numel() == num_examples:
            return target.to(device=device, dtype=torch.long)
        raise ValueError(
            f"{argument} tensor has shape {tuple(target.shape)}; use a 0-d tensor or a 1-D tensor of length "
            f"{num_examples}"
        )
    if isinstance(target, (list, tuple)):
        if len(target) != num_examples:
            raise ValueError(f"{argument} has {len(target)} entries; it needs one per example ({num_examples})")
        if not all(isinstance(entry, int) and not isinstance(entry, bool) for entry in target):
            raise TypeError(f"{argument} entries must be ints (one class index per example)")
        return torch.tensor(list(target), dtype=torch.long, device=device)
    raise TypeError(f"{argument} must be an int, a list of ints or an integer tensor, got {type(target).__name__}")


def _ranks(values: Tensor) -> Tensor:
    """1-based ranks of a 1-D tensor, ties given their average rank (as ``scipy.stats.rankdata``)."""
    ordered, order = values.sort(stable=True)
    _, inverse, counts = torch.unique_consecutive(ordered, return_inverse=True, return_counts=True)
    ends = counts.cumsum(0).to(torch.float64)
    average = ends - (counts.to(torch.float64) - 1) / 2
    ranks = values.new_empty(values.shape, dtype=torch.float64)
    ranks[order] = average[inverse]
    return ranks


def spearman(first: Tensor, second: Tensor) -> Tensor:
    """Spearman rank correlation per example between two batches of maps (any shape ``(N, ...)``).

    Ties take their average rank. A constant map has no rank order: its correlation is NaN.

    Returns:
        Float64 tensor of shape ``(N,)`` in [-1, 1].

    Example:
        >>> a = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
        >>> spearman(a, a ** 3), spearman(a, -a)
        (tensor([1.], dtype=torch.float64), tensor([-1.], dtype=torch.float64))
    """
    if first.shape != second.shape:
        raise ValueError(f"maps to correlate have shapes {tuple(first.shape)} and {tuple(second.shape)}")
    first, second = first.reshape(first.shape[0], -1), second.reshape(second.shape[0], -1)
    result = []
    for a, b in zip(first, second, strict=True):
        ra, rb = _ranks(a.detach()), _ranks(b.detach())
        ra, rb = ra - ra.mean(), rb - rb.mean()
        denominator = (ra.square().sum() * rb.square().sum()).sqrt()
        result.append((ra * rb).sum() / denominator if denominator > 0 else ra.new_tensor(float("nan")))
    return torch.stack(result).cpu()


def ssim(first: Tensor, second: Tensor, window: int = 11, sigma: float = 1.5) -> Tensor:
    """Structural similarity (Wang et al. 2004) per example between two batches of maps ``(N, H, W)``.

    Each map is first min-max normalised to [0, 1] (a constant map becomes all zeros); then the usual SSIM with a
    Gaussian window (``window`` pixels, shrunk to the map size if larger, ``sigma``), data range 1,
    ``C1 = 0.01²``, ``C2 = 0.03²``, averaged over the valid (unpadded) window positions.

    Returns:
        Float64 tensor of shape ``(N,)``; 1 for identical maps.

    Example:
        >>> maps = torch.rand(2, 16, 16)
        >>> ssim(maps, maps)
        tensor([1., 1.], dtype=torch.float64)
    """
    if first.shape != second.shape or first.dim() != 3:
        raise ValueError(
            f"SSIM needs two batches of maps (N, H, W) of one shape, got {tuple(first.shape)} and {tuple(second.shape)}"
        )
    a, b = _unit_range(first.detach().to(torch.float64)), _unit_range(second.detach().to(torch.float64))
    size = min(window, a.shape[1], a.shape[2])
    size -= 1 - size % 2  # odd
    offsets = torch.arange(size, dtype=torch.float64, device=a.device) - (size - 1) / 2
    gauss = torch.exp(-offsets.square() / (2 * sigma**2))
    kernel = torch.outer(gauss, gauss)
    kernel = (kernel / kernel.sum()).reshape(1, 1, size, size)

    def blur(x: Tensor) -> Tensor:
        return F.conv2d(x.unsqueeze(1), kernel).squeeze(1)

    c1, c2 = 0.01**2, 0.03**2
    mu_a, mu_b = blur(a), blur(b)
    var_a = blur(a * a) - mu_a.square()
    var_b = blur(b * b) - mu_b.square()
    cov = blur(a * b) - mu_a * mu_b
    index = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a.square() + mu_b.square() + c1) * (var_a + var_b + c2))
    return index.mean((1, 2)).cpu()


def _unit_range(maps: Tensor) -> Tensor:
    flat = maps.reshape(maps.shape[0], -1)
    low = flat.min(1).values.reshape(-1, 1, 1)
    span = (flat.max(1).values.reshape(-1, 1, 1) - low).clamp_min(torch.finfo(maps.dtype).tiny)
    return (maps - low) / span
