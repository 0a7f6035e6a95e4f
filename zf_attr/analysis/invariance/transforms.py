"""The geometric transforms of the paper's invariance study (Fig. 5) and their default sweeps.

Every transform maps an image batch to a batch of the same size by one affine resampling (bilinear,
``torch.nn.functional.grid_sample``); pixels that come from outside the image take the ``fill`` value (0: the
data set's mean after mean subtraction, the paper's grey). A sweep's identity value returns the images unchanged,
bit for bit.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["IDENTITY", "TRANSFORMS", "UNITS", "check_sweeps", "default_sweeps", "transform_images"]

#: The transforms, in the order of the paper's Fig. 5 rows (the paper shows vertical translation, scale and
#: rotation; horizontal translation is added).
TRANSFORMS: tuple[str, ...] = ("vertical", "horizontal", "scale", "rotation")
#: Each transform's identity value.
IDENTITY: dict[str, float] = {"vertical": 0.0, "horizontal": 0.0, "scale": 1.0, "rotation": 0.0}
#: Each transform's unit, for tables and axes.
UNITS: dict[str, str] = {"vertical": "pixels", "horizontal": "pixels", "scale": "×", "rotation": "degrees"}


def default_sweeps(size: int) -> dict[str, Tensor]:
    """The paper's sweeps for square images of side ``size``; every sweep holds its identity value.

    Translations: ±60 px at 224 px, scaled to ``size`` (±30 px at 112), in 13 whole-pixel steps; scale 1.0–1.8
    in steps of 0.1; rotation 0–360° in steps of 30°.

    Example:
        >>> sweeps = default_sweeps(112)
        >>> sweeps["vertical"].tolist()[:3], sweeps["scale"][0].item(), sweeps["rotation"][-1].item()
        ([-30.0, -25.0, -20.0], 1.0, 360.0)
    """
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"size={size!r} must be a positive int (the image side in pixels)")
    shift = round(60 * size / 224)
    translation = torch.linspace(-shift, shift, 13, dtype=torch.float64).round()
    return {
        "vertical": translation,
        "horizontal": translation.clone(),
        "scale": torch.linspace(1.0, 1.8, 9, dtype=torch.float64),
        "rotation": torch.arange(0.0, 361.0, 30.0, dtype=torch.float64),
    }


def transform_images(images: Tensor, name: str, value: float, *, fill: float = 0.0) -> Tensor:
    """Apply one transform of the study to a batch ``(N, C, H, W)``.

    Args:
        images: floating-point images ``(N, C, H, W)``.
        name: ``"vertical"`` (positive: down), ``"horizontal"`` (positive: right), ``"scale"`` (zoom about the
            centre; 1.5 enlarges the content 1.5×) or ``"rotation"`` (degrees, counter-clockwise on screen).
        value: the amount; the identity value returns ``images`` itself.
        fill: value of pixels that come from outside the image.

    Returns:
        The transformed batch, same shape and dtype.

    Example:
        >>> image = torch.zeros(1, 1, 5, 5)
        >>> image[0, 0, 2, 2] = 1.0
        >>> moved, turned = transform_images(image, "vertical", 1), transform_images(image, "rotation", 90)
        >>> moved[0, 0, 3, 2].item(), turned.sum().item()
        (1.0, 1.0)
    """
    if name not in TRANSFORMS:
        raise ValueError(f"transform {name!r} is not known; choose one of {list(TRANSFORMS)}")
    value = float(value)
    if value == IDENTITY[name] or (name == "rotation" and value % 360 == 0):
        return images
    height, width = images.shape[-2:]
    if name in ("vertical", "horizontal") and value.is_integer():
        return _shift(images, int(value), -2 if name == "vertical" else -1, fill)
    # theta maps normalised output coordinates (x, y in [-1, 1]) to input ones; pixels are squares.
    matrix = torch.eye(3, dtype=torch.float64)
    if name == "vertical":
        matrix[1, 2] = -2 * value / height
    elif name == "horizontal":
        matrix[0, 2] = -2 * value / width
    elif name == "scale":
        if value <= 0:
            raise ValueError(f"scale {value} must be positive")
        matrix[0, 0] = matrix[1, 1] = 1 / value
    else:
        angle = math.radians(value)  # counter-clockwise on screen (y down): sample the input clockwise
        cos, sin = math.cos(angle), math.sin(angle)
        to_pixels = torch.diag(torch.tensor([width / 2, height / 2, 1.0], dtype=torch.float64))
        rotation = torch.tensor([[cos, -sin, 0.0], [sin, cos, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
        matrix = torch.linalg.inv(to_pixels) @ rotation @ to_pixels
    theta = matrix[:2].to(images.dtype).to(images.device).expand(images.shape[0], 2, 3)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    shifted = images - fill
    return F.grid_sample(shifted, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + fill


def _shift(images: Tensor, step: int, dim: int, fill: float) -> Tensor:
    """Whole-pixel translation along ``dim`` (exact: no resampling)."""
    size = images.shape[dim]
    out = torch.full_like(images, fill)
    if abs(step) < size:
        source = images.narrow(dim, max(-step, 0), size - abs(step))
        out.narrow(dim, max(step, 0), size - abs(step)).copy_(source)
    return out


def check_sweeps(sweeps: Mapping[str, Sequence[float] | Tensor] | None, size: int) -> dict[str, Tensor]:
    """Validated sweeps (``None``: :func:`default_sweeps`), each sorted, with its identity value added if absent.

    Raises:
        TypeError, ValueError: a sweep of an unknown transform, an empty or non-finite sweep, a non-positive
            scale; the message names ``sweeps``.
    """
    if sweeps is None:
        return default_sweeps(size)
    if not isinstance(sweeps, Mapping) or not sweeps:
        raise TypeError(f"sweeps must be a non-empty mapping of transform name to values, got {sweeps!r}")
    checked: dict[str, Tensor] = {}
    for name, values in sweeps.items():
        if name not in TRANSFORMS:
            raise ValueError(f"sweeps holds {name!r}, not a known transform; choose from {list(TRANSFORMS)}")
        try:
            tensor = torch.as_tensor(values, dtype=torch.float64).reshape(-1)
        except (TypeError, ValueError, RuntimeError) as error:
            raise TypeError(f"sweeps[{name!r}] must be a sequence of numbers, got {values!r}") from error
        if tensor.numel() == 0:
            raise ValueError(f"sweeps[{name!r}] is empty; give at least one value")
        if not bool(torch.isfinite(tensor).all()) or (name == "scale" and bool((tensor <= 0).any())):
            raise ValueError(f"sweeps[{name!r}] = {tensor.tolist()} must be finite (and positive for a scale)")
        if not bool((tensor == IDENTITY[name]).any()):
            tensor = torch.cat([tensor, torch.tensor([IDENTITY[name]], dtype=torch.float64)])
        checked[name] = tensor.unique()  # sorted, each value once
    return checked
