"""Spectral measures of the architecture diagnostics: filter energy by frequency band, near-Nyquist energy.

Frequencies are in cycles per sample (pixel or map unit); 0.5 is the Nyquist frequency of the grid.
"""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["BAND_EDGES", "band_energy", "near_nyquist_share", "stride_aliasing"]

#: Radial frequency bands (cycles/sample) of :func:`band_energy`: [0, 1/8), [1/8, 1/4), [1/4, 3/8), [3/8, ∞).
BAND_EDGES: tuple[float, ...] = (0.0, 0.125, 0.25, 0.375)


def _radius(height: int, width: int, device: torch.device) -> Tensor:
    fy = torch.fft.fftfreq(height, device=device)[:, None]
    fx = torch.fft.fftfreq(width, device=device)[None, :]
    return torch.sqrt(fx**2 + fy**2)


def band_energy(weight: Tensor, size: int = 32) -> Tensor:
    """Each filter's spectral energy share per band of :data:`BAND_EDGES`, ``(C_out, bands)``, rows summing to 1.

    The filter (summed over input channels in energy) is zero-padded to ``size × size`` before the FFT, so the
    bands are resolved finer than the kernel. A filter of zeros gets all-zero shares.

    Example:
        >>> flat = torch.ones(1, 1, 4, 4)
        >>> checker = torch.tensor([[1.0, -1.0], [-1.0, 1.0]]).repeat(2, 2)[None, None]
        >>> band_energy(torch.cat([flat, checker])).argmax(dim=1).tolist()   # lowest band, highest band
        [0, 3]
    """
    height, width = weight.shape[-2:]
    size = max(size, height, width)
    spectrum = torch.fft.fft2(weight.detach().double(), s=(size, size)).abs().pow(2).sum(dim=1)  # (C_out, s, s)
    radius = _radius(size, size, spectrum.device)
    edges = [*BAND_EDGES, float("inf")]
    shares = torch.stack(
        [spectrum[:, (radius >= lo) & (radius < hi)].sum(dim=1) for lo, hi in itertools.pairwise(edges)],
        dim=1,
    )
    total = shares.sum(dim=1, keepdim=True)
    return torch.where(total > 0, shares / total.clamp_min(1e-300), torch.zeros_like(shares)).float()


def near_nyquist_share(maps: Tensor, low: float = 0.375) -> float:
    """Share of the spectral energy of maps ``(N, C, H, W)`` at frequencies ``max(|fx|, |fy|) ≥ low``.

    Each map's mean is removed first (its DC term says nothing about aliasing). The share pools all maps:
    energy near Nyquist over all energy. Aliased content (a grid sampled below its bandwidth) shows up there.

    Example:
        >>> stripes = torch.tensor([1.0, -1.0]).repeat(8)[None, None, None].expand(1, 1, 16, 16)
        >>> near_nyquist_share(stripes), near_nyquist_share(torch.ones(1, 1, 16, 16))
        (1.0, 0.0)
    """
    maps = maps.detach().double()
    maps = maps - maps.mean(dim=(-2, -1), keepdim=True)
    spectrum = torch.fft.fft2(maps).abs().pow(2)
    fy = torch.fft.fftfreq(maps.shape[-2], device=maps.device).abs()[:, None]
    fx = torch.fft.fftfreq(maps.shape[-1], device=maps.device).abs()[None, :]
    near = torch.maximum(fx, fy) >= low
    total = float(spectrum.sum())
    return float(spectrum[..., near].sum()) / total if total > 0 else 0.0


def stride_aliasing(inputs: Tensor, weight: Tensor, stride: int, padding: int | tuple[int, ...] | str = 0) -> float:
    """Share of a strided convolution's full-rate response energy above the Nyquist frequency of its stride.

    The layer's linear response at stride 1 (no bias) holds frequencies up to 0.5; sampling it every ``stride``
    samples folds everything above ``1 / (2 stride)`` back onto lower frequencies (aliasing). 0 for stride 1.

    Example:
        >>> blur = torch.ones(1, 1, 4, 4) / 16
        >>> noise = torch.randn(2, 1, 32, 32)
        >>> stride_aliasing(noise, blur, 1), stride_aliasing(noise, blur, 4) > 0.1
        (0.0, True)
    """
    if stride <= 1:
        return 0.0
    response = F.conv2d(inputs.detach().double(), weight.detach().double(), padding=padding)
    return near_nyquist_share(response, low=1.0 / (2 * stride) + 1e-9)
