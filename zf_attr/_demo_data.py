"""A small deterministic synthetic image batch for the ``zf-attr demo`` command (no download needed).

Each image is one coloured shape (a disc, a square, a triangle) on a textured background: smooth colour
blotches, diagonal stripes and fine grain, all drawn with torch from a seed.

Example:
    >>> from zf_attr._demo_data import make_demo_images
    >>> images, names = make_demo_images(seed=0)
    >>> tuple(images.shape), names
    ((3, 3, 96, 96), ['disc', 'square', 'triangle'])

"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torch.nn.functional import interpolate

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "SHAPES", "make_demo_images", "normalize"]

#: Per-channel mean and standard deviation of ImageNet, the normalisation torchvision models expect.
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)

#: The shapes drawn, one per image, with their base colours (RGB in [0, 1]).
SHAPES: dict[str, tuple[float, float, float]] = {
    "disc": (0.90, 0.15, 0.15),
    "square": (0.15, 0.75, 0.20),
    "triangle": (0.20, 0.35, 0.95),
}


def _uniform(generator: torch.Generator, low: float, high: float) -> float:
    return low + (high - low) * float(torch.rand((), generator=generator))


def _background(size: int, generator: torch.Generator) -> Tensor:
    """Draw a muted textured background: smooth colour blotches, diagonal stripes and fine grain, in [0, 1]."""
    blotches = torch.rand(3, 6, 6, generator=generator)
    blotches = interpolate(blotches[None], size=(size, size), mode="bicubic", align_corners=False)[0]
    coords = torch.arange(size, dtype=torch.float32)
    yy, xx = torch.meshgrid(coords, coords, indexing="ij")
    angle = _uniform(generator, 0.0, math.pi)
    period = _uniform(generator, 7.0, 12.0)
    stripes = torch.sin(2 * math.pi * (xx * math.cos(angle) + yy * math.sin(angle)) / period)
    grain = torch.rand(3, size, size, generator=generator)
    image = 0.45 + 0.20 * (blotches - 0.5) + 0.08 * stripes + 0.08 * (grain - 0.5)
    return image.clamp(0.0, 1.0)


def _shape_mask(shape: str, size: int, generator: torch.Generator) -> Tensor:
    """Anti-aliased (H, W) mask in [0, 1] of one shape at a jittered position and size."""
    coords = torch.arange(size, dtype=torch.float32) + 0.5
    yy, xx = torch.meshgrid(coords, coords, indexing="ij")
    cx = size * _uniform(generator, 0.40, 0.60)
    cy = size * _uniform(generator, 0.40, 0.60)
    radius = size * _uniform(generator, 0.22, 0.30)
    dx, dy = xx - cx, yy - cy
    if shape == "disc":
        inside = radius - torch.sqrt(dx**2 + dy**2)
    elif shape == "square":
        half = radius * 0.85
        inside = half - torch.maximum(dx.abs(), dy.abs())
    elif shape == "triangle":
        # Equilateral, apex up: distance inside = inradius minus the projection on each outward edge normal.
        normals = [(0.0, 1.0), (-math.sqrt(3) / 2, -0.5), (math.sqrt(3) / 2, -0.5)]
        inside = torch.stack([radius / 2 - (nx * dx + ny * dy) for nx, ny in normals]).amin(dim=0)
    else:
        raise ValueError(f"unknown shape {shape!r}; choose one of {list(SHAPES)}")
    return (inside + 0.5).clamp(0.0, 1.0)


def make_demo_images(seed: int = 0, size: int = 96) -> tuple[Tensor, list[str]]:
    """Draw one image per shape in :data:`SHAPES`, deterministically from ``seed``.

    Args:
        seed: seed of the private random generator (the global torch RNG is not touched).
        size: height and width of the images in pixels.

    Returns:
        ``(images, names)``: a float tensor ``(len(SHAPES), 3, size, size)`` with values in [0, 1]
        (not normalised; see :func:`normalize`), and the shape drawn in each image.

    """
    if size < 16:
        raise ValueError(f"size={size} is too small to draw shapes; use at least 16 pixels")
    generator = torch.Generator().manual_seed(int(seed))
    images = []
    for shape, colour in SHAPES.items():
        background = _background(size, generator)
        mask = _shape_mask(shape, size, generator)
        # A little shading from the top left gives the shape some internal structure.
        shading = torch.linspace(1.15, 0.80, size)
        shading = (shading[:, None] + shading[None, :]) / 2
        foreground = torch.tensor(colour)[:, None, None] * shading
        images.append((mask * foreground + (1 - mask) * background).clamp(0.0, 1.0))
    return torch.stack(images), list(SHAPES)


def normalize(images: Tensor) -> Tensor:
    """Normalise ``(N, 3, H, W)`` images in [0, 1] with the ImageNet mean and standard deviation."""
    mean = torch.tensor(IMAGENET_MEAN, dtype=images.dtype)[:, None, None]
    std = torch.tensor(IMAGENET_STD, dtype=images.dtype)[:, None, None]
    return (images - mean) / std
