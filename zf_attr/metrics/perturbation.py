"""Deletion and insertion curves (Petsiuk et al. 2018, RISE): faithfulness of a map to the model."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from zf_attr.metrics._common import class_indices, saliency

__all__ = ["PerturbationCurve", "deletion_auc", "insertion_auc"]

Baseline = float | Tensor | Callable[[Tensor], Tensor]


@dataclass(frozen=True)
class PerturbationCurve:
    """The outcome of :func:`deletion_auc` or :func:`insertion_auc`.

    Attributes:
        fractions: ``(steps + 1,)`` float64, the fraction of pixels removed (or inserted) at each step, from 0 to 1.
        scores: ``(N, steps + 1)`` float64, the target score at each step.
        auc: ``(N,)`` float64, the area under each curve (trapezoidal rule over ``fractions``).
    """

    fractions: Tensor
    scores: Tensor
    auc: Tensor


def deletion_auc(
    model: Callable[[Tensor], Tensor],
    images: Tensor,
    maps: Tensor,
    target: Any,
    *,
    steps: int = 64,
    baseline: Baseline = 0.0,
    score: str = "probability",
    batch_size: int = 64,
    seed: int = 0,
) -> PerturbationCurve:
    """Deletion curve: remove pixels, most important first, and follow the target score down (lower AUC = better).

    Pixels (spatial positions, all channels together) are ordered by the map, largest first; ties are broken by
    a random order drawn from ``seed`` (deterministic). At step ``k`` of ``steps`` the first
    ``floor(k * H * W / steps)`` pixels are replaced by the baseline, so the curve has ``steps + 1`` points from the
    intact image to the all-baseline image. The model sees the perturbed images in batches of ``batch_size``,
    under ``torch.no_grad()``, on the images' device. It is not otherwise touched: put it in ``eval()`` mode
    yourself.

    Args:
        model: maps a batch ``(B, C, H, W)`` to scores ``(B, classes)``.
        images: ``(N, C, H, W)`` floating-point images.
        maps: ``(N, H, W)`` maps used as they are, or ``(N, C, H, W)`` reduced to ``sum_c |maps|``; same N, H, W
            as the images.
        target: the class per example: an int, a list of N ints, or a 0-d or length-N integer tensor.
        steps: the number of steps (>= 1).
        baseline: what replaces deleted pixels: a number, a tensor broadcastable to the images, or a callable
            ``images -> tensor`` of the images' shape (e.g. a blur).
        score: ``"probability"`` (softmax of the output, the default) or ``"logit"`` (the raw output).
        batch_size: perturbed images per forward pass (>= 1).
        seed: the seed of the random tie-breaking order.

    Returns:
        A :class:`PerturbationCurve` (fractions, scores, per-example AUC).

    Raises:
        TypeError: a non-tensor or non-float argument, a bad ``target`` type.
        ValueError: mismatched shapes, ``steps`` or ``batch_size`` < 1, an unknown ``score``, a model output that
            is not ``(B, classes)`` or a target out of range.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from zf_attr.metrics import deletion_auc
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 4))
        >>> images, maps = torch.randn(2, 3, 8, 8), torch.rand(2, 8, 8)
        >>> curve = deletion_auc(model, images, maps, target=[0, 1], steps=8)
        >>> curve.scores.shape, curve.auc.shape
        (torch.Size([2, 9]), torch.Size([2]))
    """
    return _curve("deletion", model, images, maps, target, steps, baseline, score, batch_size, seed)


def insertion_auc(
    model: Callable[[Tensor], Tensor],
    images: Tensor,
    maps: Tensor,
    target: Any,
    *,
    steps: int = 64,
    baseline: Baseline = 0.0,
    score: str = "probability",
    batch_size: int = 64,
    seed: int = 0,
) -> PerturbationCurve:
    """Insertion curve: start from the baseline image and insert pixels, most important first (higher AUC = better).

    The mirror of :func:`deletion_auc` with the same arguments: at step ``k`` the first
    ``floor(k * H * W / steps)`` pixels of the image are pasted into the baseline (RISE uses a blurred copy of the
    image: pass a callable), so the curve runs from the all-baseline image to the intact one.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from zf_attr.metrics import insertion_auc
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 4))
        >>> images, maps = torch.randn(2, 3, 8, 8), torch.rand(2, 8, 8)
        >>> curve = insertion_auc(model, images, maps, target=0, steps=4, score="logit")
        >>> curve.fractions.tolist()
        [0.0, 0.25, 0.5, 0.75, 1.0]
    """
    return _curve("insertion", model, images, maps, target, steps, baseline, score, batch_size, seed)


def _curve(
    mode: str,
    model: Callable[[Tensor], Tensor],
    images: Any,
    maps: Any,
    target: Any,
    steps: Any,
    baseline: Any,
    score: str,
    batch_size: Any,
    seed: int,
) -> PerturbationCurve:
    if not callable(model):
        raise TypeError(f"model must be callable (an nn.Module), got {type(model).__name__}")
    if not isinstance(images, Tensor):
        raise TypeError(f"images must be a torch.Tensor of shape (N, C, H, W), got {type(images).__name__}")
    if not images.is_floating_point():
        raise TypeError(f"images has dtype {images.dtype}; it must be floating point")
    if images.dim() != 4 or images.shape[0] == 0:
        raise ValueError(f"images has shape {tuple(images.shape)}; it must be (N, C, H, W) with N >= 1")
    num, _, height, width = images.shape
    scores_map = saliency(maps).to(images.device)
    if tuple(scores_map.shape) != (num, height, width):
        raise ValueError(
            f"maps has shape {tuple(maps.shape)} but images has shape {tuple(images.shape)}: the maps need the "
            f"images' batch size and spatial size ({num}, {height}, {width}); upsample layer maps first"
        )
    for name, value in (("steps", steps), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an int >= 1, got {value!r}")
    if score not in ("probability", "logit"):
        raise ValueError(f"score must be 'probability' or 'logit', got {score!r}")
    classes = class_indices(target, num, images.device)
    fill = _baseline(baseline, images)

    pixels = height * width
    # rank[i, p] = position of pixel p in example i's order (0 = most important); ties in a seeded random order
    generator = torch.Generator().manual_seed(seed)
    shuffle = torch.randperm(pixels, generator=generator).to(images.device)
    flat = scores_map.detach().reshape(num, pixels)[:, shuffle]
    order = shuffle[flat.sort(dim=1, descending=True, stable=True).indices]
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(pixels, device=images.device).expand(num, pixels))
    counts = torch.tensor([k * pixels // steps for k in range(steps + 1)], device=images.device)

    jobs = [(i, k) for i in range(num) for k in range(steps + 1)]
    values = torch.empty(len(jobs), dtype=torch.float64)
    with torch.no_grad():
        for start in range(0, len(jobs), batch_size):
            chunk = torch.tensor(jobs[start : start + batch_size], device=images.device)
            example, step = chunk[:, 0], chunk[:, 1]
            changed = (rank[example] < counts[step].unsqueeze(1)).reshape(-1, 1, height, width)
            if mode == "deletion":
                batch = torch.where(changed, fill[example], images[example])
            else:
                batch = torch.where(changed, images[example], fill[example])
            output = model(batch)
            if not isinstance(output, Tensor) or output.dim() != 2 or output.shape[0] != batch.shape[0]:
                shape = tuple(output.shape) if isinstance(output, Tensor) else type(output).__name__
                raise ValueError(f"model must map a batch (B, C, H, W) to scores (B, classes), got {shape}")
            if int(classes.max()) >= output.shape[1] or int(classes.min()) < 0:
                raise ValueError(f"target holds a class out of range for a model with {output.shape[1]} outputs")
            if score == "probability":
                output = output.softmax(1)
            values[start : start + len(chunk)] = (
                output.gather(1, classes[example].unsqueeze(1)).squeeze(1).double().cpu()
            )

    fractions = counts.double().cpu() / pixels
    curves = values.reshape(num, steps + 1)
    return PerturbationCurve(fractions=fractions, scores=curves, auc=torch.trapezoid(curves, fractions, dim=1))


def _baseline(baseline: Any, images: Tensor) -> Tensor:
    """The baseline as a tensor of the images' shape, on their device."""
    if callable(baseline) and not isinstance(baseline, Tensor):
        fill = baseline(images)
        if not isinstance(fill, Tensor) or fill.shape != images.shape:
            shape = tuple(fill.shape) if isinstance(fill, Tensor) else type(fill).__name__
            raise ValueError(
                f"baseline callable must return a tensor of the images' shape {tuple(images.shape)}, got {shape}"
            )
        return fill.to(device=images.device, dtype=images.dtype)
    if isinstance(baseline, bool):
        raise TypeError("baseline must be a number, a tensor or a callable, not bool")
    if isinstance(baseline, (int, float)):
        return torch.full_like(images, float(baseline))
    if isinstance(baseline, Tensor):
        try:
            return torch.broadcast_to(baseline.to(device=images.device, dtype=images.dtype), images.shape)
        except RuntimeError:
            raise ValueError(
                f"baseline has shape {tuple(baseline.shape)}, not broadcastable to images {tuple(images.shape)}"
            ) from None
    raise TypeError(f"baseline must be a number, a tensor or a callable, got {type(baseline).__name__}")
