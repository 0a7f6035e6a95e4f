"""Part regions of the correspondence study: masks or boxes per image, random regions of the same size.

:func:`shapes_parts` derives parts of the generated shapes from the object masks the data set already knows.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

__all__ = ["check_part_masks", "random_regions", "shapes_parts"]


def check_part_masks(part_masks: Any, count: int, size: tuple[int, int]) -> dict[str, Tensor]:
    """Validated part regions as bool masks ``(N, H, W)``, one mapping entry per part.

    Each part is a mask per image (bool or 0/1, ``(N, H, W)``) or a box per image ``(N, 4)`` of integer pixel
    coordinates ``(x0, y0, x1, y1)`` (ends exclusive).

    Raises:
        TypeError, ValueError: not a mapping, a mask of another size than the images, a box outside the image,
            an empty region; the message names ``part_masks``.

    Example:
        >>> check_part_masks({"eye": torch.tensor([[1, 1, 3, 2]])}, 1, (4, 4))["eye"].sum().item()
        2
    """
    if not isinstance(part_masks, Mapping) or not part_masks:
        raise TypeError(f"part_masks must be a non-empty mapping of part name to masks or boxes, got {part_masks!r}")
    height, width = size
    checked: dict[str, Tensor] = {}
    for name, region in part_masks.items():
        if not isinstance(name, str) or name == "random":
            raise ValueError(f"part_masks has the part name {name!r}; use strings other than 'random' (a table row)")
        if not isinstance(region, Tensor):
            raise TypeError(f"part_masks[{name!r}] must be a tensor of masks (N, H, W) or boxes (N, 4)")
        if region.dim() == 2 and region.shape == (count, 4) and not region.is_floating_point():
            masks = torch.zeros(count, height, width, dtype=torch.bool)
            for i, (x0, y0, x1, y1) in enumerate(region.tolist()):
                if not (0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height):
                    raise ValueError(
                        f"part_masks[{name!r}][{i}] = {[x0, y0, x1, y1]} is not a box (x0, y0, x1, y1) inside the "
                        f"{width}×{height} image"
                    )
                masks[i, y0:y1, x0:x1] = True
        elif region.dim() == 3:
            if tuple(region.shape) != (count, height, width):
                raise ValueError(
                    f"part_masks[{name!r}] has shape {tuple(region.shape)}; masks must be (N, H, W) = "
                    f"{(count, height, width)}, the size of the images"
                )
            masks = region.detach().cpu() != 0
        else:
            raise ValueError(
                f"part_masks[{name!r}] has shape {tuple(region.shape)}; pass masks ({count}, {height}, {width}) or "
                f"integer boxes ({count}, 4)"
            )
        empty = (~masks.flatten(1).any(dim=1)).nonzero().flatten().tolist()
        if empty:
            raise ValueError(f"part_masks[{name!r}] is empty for images {empty}; every image needs a region")
        checked[name] = masks
    return checked


def random_regions(masks: Tensor, generator: torch.Generator) -> Tensor:
    """Each image's mask moved by a random whole-pixel offset that keeps it inside the image (same size and shape).

    Example:
        >>> mask = torch.zeros(1, 6, 6, dtype=torch.bool)
        >>> mask[0, :2, :2] = True
        >>> random_regions(mask, torch.Generator().manual_seed(0)).sum().item()
        4
    """
    moved = torch.zeros_like(masks)
    height, width = masks.shape[-2:]
    for i, mask in enumerate(masks):
        rows, cols = mask.any(dim=1).nonzero().flatten(), mask.any(dim=0).nonzero().flatten()
        y0, y1, x0, x1 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
        dy = int(torch.randint(-y0, height - y1 + 1, (), generator=generator))
        dx = int(torch.randint(-x0, width - x1 + 1, (), generator=generator))
        moved[i, y0 + dy : y1 + dy, x0 + dx : x1 + dx] = mask[y0:y1, x0:x1]
    return moved


def shapes_parts(masks: Tensor, side: int | None = None) -> dict[str, Tensor]:
    """Parts of generated shapes from their object masks: the centre and three extremities, as boxes.

    ``"centre"`` is a square of ``side`` pixels at the mask's centroid; ``"top"``, ``"left"`` and ``"right"`` are
    squares at the mask's topmost, leftmost and rightmost pixel (a vertex or an arm of the shape), clipped into
    the image. The analogue, on :class:`~zf_attr.models.shapes.ShapesDataset`, of the paper's eyes and nose.

    Args:
        masks: object masks ``(N, H, W)`` (``ShapesDataset.sample(i).mask``).
        side: the square's side; default: an eighth of the image side, at least 3.

    Returns:
        Part name → integer boxes ``(N, 4)`` ``(x0, y0, x1, y1)``.

    Example:
        >>> mask = torch.zeros(1, 16, 16, dtype=torch.bool)
        >>> mask[0, 4:12, 6:10] = True
        >>> shapes_parts(mask, side=4)["centre"].tolist(), shapes_parts(mask, side=4)["top"].tolist()
        ([[6, 6, 10, 10]], [[6, 2, 10, 6]])
    """
    height, width = masks.shape[-2:]
    side = side or max(3, min(height, width) // 8)
    parts: dict[str, list[list[int]]] = {"centre": [], "top": [], "left": [], "right": []}
    for mask in masks:
        ys, xs = mask.nonzero(as_tuple=True)
        if not len(ys):
            raise ValueError("masks holds an empty mask; every image needs its object's mask")
        points = {
            "centre": (float(ys.double().mean()), float(xs.double().mean())),
            "top": (float(ys.min()), float(xs[ys == ys.min()].double().mean())),
            "left": (float(ys[xs == xs.min()].double().mean()), float(xs.min())),
            "right": (float(ys[xs == xs.max()].double().mean()), float(xs.max())),
        }
        for name, (y, x) in points.items():
            y0 = min(max(round(y - side / 2), 0), height - side)
            x0 = min(max(round(x - side / 2), 0), width - side)
            parts[name].append([x0, y0, x0 + side, y0 + side])
    return {name: torch.tensor(boxes, dtype=torch.long) for name, boxes in parts.items()}
