"""Generated images for the studies' offline runs: :class:`~zf_attr.models.shapes.ShapesDataset` items as a batch."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from zf_attr.models.shapes import SHAPE_CLASSES, ShapesDataset

__all__ = ["shapes_batch"]


def shapes_batch(
    count: int,
    *,
    seed: int = 2,
    size: int = 112,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    shape: str | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """The first ``count`` items of a generated split (of one ``shape`` if given), normalised for a model.

    Args:
        count: images wanted.
        seed: the split (2: the test split, never trained on).
        size: image side in pixels.
        mean: normalisation mean (default: the data set's own, which the bundled ZFNet expects).
        std: normalisation standard deviation (default: the data set's own).
        shape: keep only items of this class (one of :data:`~zf_attr.models.shapes.SHAPE_CLASSES`).

    Returns:
        ``(images (N, 3, size, size), labels (N,), object masks (N, size, size))``.

    Example:
        >>> images, labels, masks = shapes_batch(2, shape="star", size=64)
        >>> tuple(images.shape), labels.tolist(), masks.dtype
        ((2, 3, 64, 64), [5, 5], torch.bool)
    """
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ValueError(f"count={count!r} must be a positive int")
    if shape is not None and shape not in SHAPE_CLASSES:
        raise ValueError(f"shape={shape!r} is not one of the generated shapes {list(SHAPE_CLASSES)}")
    wanted = None if shape is None else SHAPE_CLASSES.index(shape)
    data = ShapesDataset(count * len(SHAPE_CLASSES) if shape else count, seed=seed, image_size=size)
    samples = [data.sample(i) for i in range(len(data))]
    samples = [s for s in samples if wanted is None or s.label == wanted][:count]
    mean_t = torch.tensor(mean if mean is not None else ShapesDataset.MEAN)[:, None, None]
    std_t = torch.tensor(std if std is not None else ShapesDataset.STD)[:, None, None]
    images = torch.stack([(s.image - mean_t) / std_t for s in samples])
    return images, torch.tensor([s.label for s in samples]), torch.stack([s.mask for s in samples])
