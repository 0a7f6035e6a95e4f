"""Does the network locate the same object part across images? (Zeiler & Fergus 2014, §4.3 and Table 1).

For each part, every image is occluded on that part; ``ε_i^l = x_i^l − x̃_i^l`` is the change of image ``i``'s
feature vector at layer ``l``. If the network locates the part consistently, occluding it changes the features
of different images alike, and the signs of their ``ε`` agree:

    Δ_l = Σ_{i≠j} H(sign(ε_i^l), sign(ε_j^l)),   H = Hamming distance,

lower meaning tighter correspondence. The same is measured for random regions of the same size and shape as a
baseline. The paper's values lie below 1, so they are evidently normalised; ``normalization="paper"`` (the
default) reports, per pair of images, the Hamming distance divided by the feature vector's length, averaged over
the pairs (mean ± sample std over the ``N(N−1)/2`` pairs, pooled over the draws for random regions);
``normalization="sum"`` reports Δ_l as printed: the raw count summed over the ``N(N−1)`` ordered pairs (± the
sample std over random draws; a part's single value has none).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from zf_attr._captum_compat import validate_model
from zf_attr.analysis._features import FeatureReader, check_images, default_layers
from zf_attr.analysis.correspondence.parts import check_part_masks, random_regions
from zf_attr.analysis.tables import SummaryTable
from zf_attr.attr._layers import default_feature_layer

__all__ = ["NORMALIZATIONS", "CorrespondenceStudy", "correspondence_study", "sign_hamming"]

#: ``"paper"``: Hamming distance / vector length, mean ± std over pairs; ``"sum"``: Σ_{i≠j} H, raw counts.
NORMALIZATIONS: tuple[str, ...] = ("paper", "sum")


def sign_hamming(differences: Tensor) -> Tensor:
    """Pairwise Hamming distances ``(N, N)`` between the signs (−1, 0, +1) of feature differences ``(N, L)``.

    Example:
        >>> sign_hamming(torch.tensor([[1.0, -2.0, 0.0], [3.0, 1.0, 0.0]])).tolist()
        [[0.0, 1.0], [1.0, 0.0]]
    """
    signs = torch.sign(differences)
    return torch.stack([(signs[i] != signs).sum(dim=1) for i in range(len(signs))]).double()


@dataclass(frozen=True)
class CorrespondenceStudy:
    """What :func:`correspondence_study` measured; ``N`` images, ``R`` random draws.

    Attributes:
        delta: part → layer → ``(mean, std)`` of Δ under :attr:`normalization` (Table 1's rows).
        random: layer → ``(mean, std)`` for random regions of the same size (Table 1's last row).
        layers: the layers, in order.
        parts: the part names, in order.
        normalization: ``"paper"`` or ``"sum"`` (see :data:`NORMALIZATIONS` and the module docstring).
        lengths: layer → length ``L`` of its feature vector.
        pairwise: part → layer → ``(N, N)`` raw Hamming counts between the images' sign vectors.
        random_pairwise: layer → ``(R, N, N)`` the same for each random draw.
        rectifiers: layer → the rectifier its map was read after, ``None`` for the raw output.
        masks: part → ``(N, H, W)`` the occluded regions.
        images: ``(N, C, H, W)`` the images.
        fill: the value occluded pixels take.

    Example:
        >>> import torch
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(),
        ...                           torch.nn.Linear(4 * 14 * 14, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
        >>> boxes = torch.tensor([[2, 2, 6, 6]] * 3)
        >>> study = correspondence_study(net, torch.randn(3, 3, 16, 16), {"corner": boxes}, layers=["0", "3"])
        >>> sorted(study.delta["corner"]), study.random_pairwise["3"].shape
        (['0', '3'], torch.Size([10, 3, 3]))
    """

    delta: dict[str, dict[str, tuple[float, float]]]
    random: dict[str, tuple[float, float]]
    layers: list[str]
    parts: list[str]
    normalization: str
    lengths: dict[str, int]
    pairwise: dict[str, dict[str, Tensor]]
    random_pairwise: dict[str, Tensor]
    rectifiers: dict[str, str | None]
    masks: dict[str, Tensor]
    images: Tensor
    fill: float = 0.0

    #: Draws the result: ``draw(result, path, **options)``, attached by the study's package from its figure
    #: module (which imports this type for typing only; this module never imports the figure: no import circle).
    draw: ClassVar[Callable[..., Path]]

    def summary(self) -> SummaryTable:
        """The table: rows the parts and ``random``, columns the layers, cells mean ± std."""
        rows = {**self.delta, "random": self.random}
        count = len(self.images) * (len(self.images) - 1) // 2
        counts = {part: dict.fromkeys(self.layers, count) for part in self.delta}
        counts["random"] = dict.fromkeys(self.layers, count * self.random_pairwise[self.layers[0]].shape[0])
        return SummaryTable(
            methods=tuple(rows),
            metrics=tuple(self.layers),
            mean={part: {layer: values[layer][0] for layer in self.layers} for part, values in rows.items()},
            std={part: {layer: values[layer][1] for layer in self.layers} for part, values in rows.items()},
            count=counts,
            row_label="part",
        )

    def to_markdown(self, decimals: int = 3) -> str:
        """Table 1 as GitHub Markdown."""
        return self.summary().to_markdown(decimals)

    def to_latex(self, decimals: int = 3) -> str:
        r"""Table 1 as a booktabs ``tabular``."""
        return self.summary().to_latex(decimals)

    def to_csv(self) -> str:
        """Table 1 as CSV (``method`` = the part, then ``<layer>_mean``, ``_std``, ``_n``), full precision."""
        return self.summary().to_csv()

    def to_dict(self) -> dict[str, Any]:
        """The table and the raw pairwise counts as plain lists and numbers (for JSON)."""
        return {
            "normalization": self.normalization,
            "layers": list(self.layers),
            "lengths": dict(self.lengths),
            "rectifiers": dict(self.rectifiers),
            "delta": {part: {layer: list(v) for layer, v in values.items()} for part, values in self.delta.items()},
            "random": {layer: list(v) for layer, v in self.random.items()},
            "pairwise": {
                part: {layer: values.tolist() for layer, values in per_layer.items()}
                for part, per_layer in self.pairwise.items()
            },
        }

    def save_figure(self, path: str | Path, **options: Any) -> Path:
        """Draw Δ per part and layer against random regions, with example occlusions.

        See :func:`zf_attr.analysis.correspondence.figure.save_correspondence_figure` for the options.
        """
        return type(self).draw(self, path, **options)


def correspondence_study(
    model: nn.Module,
    images: Tensor,
    part_masks: Mapping[str, Tensor],
    *,
    layers: Sequence[str | nn.Module] | None = None,
    random_draws: int = 10,
    fill: float = 0.0,
    normalization: str = "paper",
    rectified: bool = True,
    seed: int = 0,
) -> CorrespondenceStudy:
    """Measure how consistently occluding the same part changes the features of different images (Table 1).

    Args:
        model: a classifier, in eval mode; left as found.
        images: ``N ≥ 2`` images ``(N, C, H, W)`` of objects of one kind (the paper: 5 frontal dog faces).
        part_masks: part name → the part's region in each image: bool masks ``(N, H, W)`` of the images' size,
            or integer boxes ``(N, 4)`` ``(x0, y0, x1, y1)`` (ends exclusive).
        layers: the layers compared (names or submodules); ``None``: the last layer with a spatial map and the
            penultimate layer (ZFNet: ``pool5`` and ``fc7``, the paper's layers 5 and 7).
        random_draws: random-region draws; draw ``d`` moves each image's region of part ``d mod P`` to a random
            place inside the image (same size and shape).
        fill: the value of occluded pixels (0: the mean after normalisation, the paper's grey).
        normalization: ``"paper"`` or ``"sum"``; see the module docstring.
        rectified: read each layer after the rectifier its output goes straight into (the paper's maps).
        seed: seed of the random regions.

    Returns:
        A :class:`CorrespondenceStudy`; ``.to_markdown()`` prints Table 1.

    Raises:
        TypeError, ValueError: bad images, part masks (size, shape, empty), layers, ``random_draws`` or
            ``normalization``; the message names the argument.
    """
    validate_model(model)
    images = check_images(images)
    if len(images) < 2:
        raise ValueError(f"images holds {len(images)} image; the study compares pairs, pass at least 2")
    if normalization not in NORMALIZATIONS:
        raise ValueError(f"normalization={normalization!r} is not known; choose one of {list(NORMALIZATIONS)}")
    if isinstance(random_draws, bool) or not isinstance(random_draws, int) or random_draws < 1:
        raise ValueError(f"random_draws={random_draws!r} must be a positive int")
    masks = check_part_masks(part_masks, len(images), tuple(images.shape[-2:]))
    parameter = next(model.parameters(), None)
    if parameter is not None:
        images = images.to(parameter.device)
    if layers is None:
        layers = [default_feature_layer(model, (images[:1],)), default_layers(model, images[:1])[1]]
    reader = FeatureReader(model, layers, images[:1], rectified=rectified)
    _, reference = reader(images)

    def hamming(region: Tensor) -> dict[str, Tensor]:
        occluded = images.clone()
        occluded.masked_fill_(region.to(images.device)[:, None].expand_as(images), fill)
        _, features = reader(occluded)
        return {layer: sign_hamming((reference[layer] - features[layer]).cpu()) for layer in reader.layers}

    pairwise = {part: hamming(region) for part, region in masks.items()}
    generator = torch.Generator().manual_seed(seed)
    parts = list(masks)
    draws = [hamming(random_regions(masks[parts[d % len(parts)]], generator)) for d in range(random_draws)]
    random_pairwise = {layer: torch.stack([draw[layer] for draw in draws]) for layer in reader.layers}
    lengths = {layer: int(reference[layer].shape[1]) for layer in reader.layers}
    return CorrespondenceStudy(
        delta={
            part: {layer: _statistic(per[layer][None], lengths[layer], normalization) for layer in reader.layers}
            for part, per in pairwise.items()
        },
        random={layer: _statistic(random_pairwise[layer], lengths[layer], normalization) for layer in reader.layers},
        layers=reader.layers,
        parts=parts,
        normalization=normalization,
        lengths=lengths,
        pairwise=pairwise,
        random_pairwise=random_pairwise,
        rectifiers={layer: reading.rectifier for layer, reading in reader.maps.items()},
        masks=masks,
        images=images.cpu(),
        fill=float(fill),
    )


def _statistic(counts: Tensor, length: int, normalization: str) -> tuple[float, float]:
    """``(mean, std)`` of draws of pairwise counts ``(R, N, N)`` under ``normalization``."""
    if normalization == "sum":
        sums = counts.sum(dim=(1, 2))  # Σ_{i≠j}: the diagonal is 0
        return float(sums.mean()), float(sums.std()) if len(sums) > 1 else math.nan
    upper = torch.triu_indices(counts.shape[1], counts.shape[2], offset=1)
    values = counts[:, upper[0], upper[1]].flatten() / length
    return float(values.mean()), float(values.std()) if len(values) > 1 else math.nan
