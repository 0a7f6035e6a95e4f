"""The pointing game (Zhang et al. 2016), with TorchRay's tolerance convention."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from zf_attr.metrics._common import saliency

__all__ = ["PointingResult", "pointing_game"]


@dataclass(frozen=True)
class PointingResult:
    """The outcome of :func:`pointing_game`.

    Attributes:
        hits: ``(N,)`` bool, whether each map's maximum point hits its object.
        points: ``(N, 2)`` long, the ``(y, x)`` maximum point of each map (the first maximum in row-major order).
        accuracy: the fraction of hits, in [0, 1].
    """

    hits: Tensor
    points: Tensor
    accuracy: float


def pointing_game(
    maps: Tensor,
    masks: Tensor | None = None,
    boxes: Tensor | None = None,
    tolerance: float = 15,
    ties: str = "first",
) -> PointingResult:
    """Score whether each map's maximum point lies on (or within ``tolerance`` pixels of) its object.

    The convention is TorchRay's: a map scores a hit when some object pixel lies within Euclidean distance
    ``tolerance`` of the map's maximum point — equivalently, when the point falls in the object dilated by a
    disc of radius ``tolerance``. Boxes are grown the same way (with rounded corners), so a box and its mask give
    the same result. (TorchRay counts distances strictly below ``tolerance``; here "at most", so that
    ``tolerance=0`` asks for the point to lie on the object itself.) The maps must be at the resolution of the
    masks: upsample layer maps (Grad-CAM) first.

    Args:
        maps: ``(N, H, W)`` maps used as they are (signed: the largest value wins), or ``(N, C, H, W)`` maps
            reduced to ``sum_c |maps|``.
        masks: ``(N, H, W)`` bool object masks; exactly one of ``masks`` and ``boxes``.
        boxes: ``(N, 4)`` boxes ``(x0, y0, x1, y1)`` in pixels with exclusive ends (``x0 <= x < x1``); float
            coordinates are rounded to the nearest pixel.
        tolerance: the radius in pixels (default 15, as TorchRay).
        ties: ``"first"`` (default): the first maximum in row-major order is the point, as ``torch.argmax``.
            ``"any"``: a hit if any of the tied maxima hits (a constant map then hits whenever the object is
            non-empty — the lenient reading).

    Returns:
        A :class:`PointingResult` with the hits, the points and the accuracy.

    Raises:
        TypeError: wrong types or dtypes (non-float maps, non-bool masks).
        ValueError: both or neither of ``masks`` and ``boxes``, mismatched shapes, empty masks or boxes, a
            negative tolerance, an unknown ``ties``.

    Example:
        >>> import torch
        >>> from zf_attr.metrics import pointing_game
        >>> maps = torch.zeros(2, 32, 32)
        >>> maps[0, 5, 5] = maps[1, 30, 30] = 1.0          # peaks at (y, x) = (5, 5) and (30, 30)
        >>> boxes = torch.tensor([[0, 0, 10, 10], [0, 0, 10, 10]])
        >>> result = pointing_game(maps, boxes=boxes, tolerance=15)
        >>> result.hits.tolist(), result.accuracy
        ([True, False], 0.5)
    """
    scores = saliency(maps)
    num, height, width = scores.shape
    if isinstance(tolerance, bool) or not isinstance(tolerance, (int, float)) or not tolerance >= 0:
        raise ValueError(f"tolerance must be a number of pixels >= 0, got {tolerance!r}")
    if ties not in ("first", "any"):
        raise ValueError(f"ties must be 'first' or 'any', got {ties!r}")
    if (masks is None) == (boxes is None):
        raise ValueError(
            "pointing_game needs exactly one of masks= ((N, H, W) bool object masks) and boxes= ((N, 4) boxes), "
            f"got {'both' if masks is not None else 'neither'}"
        )
    device = scores.device
    flat = scores.detach().reshape(num, -1)
    first = flat.argmax(1)
    points = torch.stack([first // width, first % width], 1)
    radius2 = float(tolerance) ** 2
    ys = torch.arange(height, device=device, dtype=torch.float64).reshape(1, height, 1)
    xs = torch.arange(width, device=device, dtype=torch.float64).reshape(1, 1, width)
    if masks is not None:
        masks = _check_masks(masks, num, height, width).to(device)
        if ties == "first":  # the object pixels within the radius of each point
            py, px = (points.to(torch.float64).reshape(num, 2, 1, 1)).unbind(1)
            hits = (masks & ((ys - py).square() + (xs - px).square() <= radius2)).reshape(num, -1).any(1)
        else:
            near = _dilate(masks, float(tolerance)).reshape(num, -1)
            hits = ((flat == flat.max(1, keepdim=True).values) & near).any(1)
    else:
        x0, y0, x1, y1 = _check_boxes(boxes, num, height, width).to(device=device, dtype=torch.float64).unbind(1)
        dx = torch.maximum(x0.reshape(-1, 1, 1) - xs, xs - (x1.reshape(-1, 1, 1) - 1)).clamp_min(0)
        dy = torch.maximum(y0.reshape(-1, 1, 1) - ys, ys - (y1.reshape(-1, 1, 1) - 1)).clamp_min(0)
        near = (dx.square() + dy.square() <= radius2).reshape(num, -1)
        if ties == "first":
            hits = near.gather(1, first.reshape(-1, 1)).squeeze(1)
        else:
            hits = ((flat == flat.max(1, keepdim=True).values) & near).any(1)
    hits = hits.cpu()
    return PointingResult(hits=hits, points=points.cpu(), accuracy=float(hits.double().mean()))


def _dilate(masks: Tensor, radius: float) -> Tensor:
    """Every pixel within Euclidean distance ``radius`` of a ``True`` pixel (a convolution with a disc)."""
    reach = int(radius)
    offsets = torch.arange(-reach, reach + 1, device=masks.device, dtype=torch.float64)
    disc = (offsets.reshape(-1, 1).square() + offsets.reshape(1, -1).square() <= radius * radius).float()
    counts = F.conv2d(masks.float().unsqueeze(1), disc.reshape(1, 1, *disc.shape), padding=reach)
    return counts.squeeze(1) > 0.5


def _check_masks(masks: Any, num: int, height: int, width: int) -> Tensor:
    if not isinstance(masks, Tensor):
        raise TypeError(f"masks must be a torch.Tensor of shape (N, H, W), got {type(masks).__name__}")
    if masks.dtype != torch.bool:
        raise TypeError(f"masks has dtype {masks.dtype}; it must be bool (convert with masks > 0)")
    if tuple(masks.shape) != (num, height, width):
        raise ValueError(
            f"masks has shape {tuple(masks.shape)} but the maps need ({num}, {height}, {width}): one mask per map, "
            "at the maps' resolution (upsample layer maps to the image size first)"
        )
    empty = (~masks.reshape(num, -1).any(1)).nonzero().flatten()
    if empty.numel():
        raise ValueError(f"masks[{int(empty[0])}] is empty: the pointing game needs an object in every example")
    return masks


def _check_boxes(boxes: Any, num: int, height: int, width: int) -> Tensor:
    if not isinstance(boxes, Tensor):
        raise TypeError(f"boxes must be a torch.Tensor of shape (N, 4), got {type(boxes).__name__}")
    if boxes.dtype == torch.bool or boxes.is_complex():
        raise TypeError(f"boxes has dtype {boxes.dtype}; it must hold pixel coordinates (integers or floats)")
    if tuple(boxes.shape) != (num, 4):
        raise ValueError(f"boxes has shape {tuple(boxes.shape)}; it must be ({num}, 4): (x0, y0, x1, y1) per map")
    boxes = boxes.round().long() if boxes.is_floating_point() else boxes.long()
    x0, y0, x1, y1 = boxes.unbind(1)
    bad = ((x1 <= x0) | (y1 <= y0) | (x1 <= 0) | (y1 <= 0) | (x0 >= width) | (y0 >= height)).nonzero().flatten()
    if bad.numel():
        i = int(bad[0])
        raise ValueError(
            f"boxes[{i}] = {boxes[i].tolist()} is empty or outside the {height}x{width} map: boxes are "
            "(x0, y0, x1, y1) with exclusive ends, x0 < x1 and y0 < y1"
        )
    return boxes
