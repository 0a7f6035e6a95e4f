"""How features and the prediction respond to translation, scale and rotation (Zeiler & Fergus 2014, Fig. 5).

Each image is transformed by every value of every sweep; for each transformed image the study records the
Euclidean distance between the feature vectors of the original and the transformed image at chosen layers
(default: the first convolution and the penultimate layer, the paper's layer 1 and layer 7) and the
probability of the image's true class.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from zf_attr._captum_compat import validate_model
from zf_attr.analysis._features import FeatureReader, check_images
from zf_attr.analysis.invariance.transforms import IDENTITY, UNITS, check_sweeps, transform_images

__all__ = ["InvarianceStudy", "invariance_study"]


@dataclass(frozen=True)
class InvarianceStudy:
    """What :func:`invariance_study` measured; ``N`` images, ``V`` values per sweep.

    Attributes:
        sweeps: transform name → its values ``(V,)`` (sorted; the identity value included).
        distances: transform name → layer → ``(N, V)`` Euclidean distance between the layer's feature vectors
            of the original and the transformed image (0 at the identity value).
        probabilities: transform name → ``(N, V)`` probability of each image's target class.
        layers: the layers, in order (the figure's distance columns).
        rectifiers: layer → the rectifier its map was read after (``"relu"``), ``None`` for the raw output.
        targets: ``(N,)`` the class of each image whose probability is recorded.
        images: ``(N, C, H, W)`` the original images.
        fill: the value of pixels that transforms bring in from outside the image.
        class_names: names of the classes, if given.

    Example:
        >>> from zf_attr.models import zfnet
        >>> from zf_attr.models.shapes import ShapesDataset
        >>> image, label = ShapesDataset(1, seed=3)[0]
        >>> study = invariance_study(zfnet(weights="DEFAULT").eval(), image, [label], sweeps={"rotation": [0, 90]})
        >>> study.layers, study.distances["rotation"]["fc7"].shape, study.distances["rotation"]["conv1"][0, 0].item()
        (['conv1', 'fc7'], torch.Size([1, 2]), 0.0)
    """

    sweeps: dict[str, Tensor]
    distances: dict[str, dict[str, Tensor]]
    probabilities: dict[str, Tensor]
    layers: list[str]
    rectifiers: dict[str, str | None]
    targets: Tensor
    images: Tensor
    fill: float = 0.0
    class_names: tuple[str, ...] | None = None

    #: Draws the result: ``draw(result, path, **options)``, attached by the study's package from its figure
    #: module (which imports this type for typing only; this module never imports the figure: no import circle).
    draw: ClassVar[Callable[..., Path]]

    def class_name(self, index: int) -> str:
        """Name of class ``index`` (its number when no names were given)."""
        return self.class_names[index] if self.class_names is not None else str(index)

    def to_dict(self) -> dict[str, Any]:
        """Everything as plain lists and numbers (for JSON)."""
        return {
            "layers": list(self.layers),
            "rectifiers": dict(self.rectifiers),
            "targets": self.targets.tolist(),
            "fill": self.fill,
            "units": {name: UNITS[name] for name in self.sweeps},
            "sweeps": {name: values.tolist() for name, values in self.sweeps.items()},
            "distances": {
                name: {layer: values.tolist() for layer, values in per_layer.items()}
                for name, per_layer in self.distances.items()
            },
            "probabilities": {name: values.tolist() for name, values in self.probabilities.items()},
        }

    def to_csv(self, path: str | Path | None = None) -> str:
        """One CSV row per (transform, value, image): distances per layer and p(target); to ``path`` if given."""
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(
            ["transform", "value", "unit", "image", "target", *(f"distance_{x}" for x in self.layers), "p_target"]
        )
        for name, values in self.sweeps.items():
            for v, value in enumerate(values.tolist()):
                for i in range(len(self.targets)):
                    distances = [f"{float(self.distances[name][layer][i, v]):.6g}" for layer in self.layers]
                    probability = f"{float(self.probabilities[name][i, v]):.6g}"
                    writer.writerow([name, f"{value:g}", UNITS[name], i, int(self.targets[i]), *distances, probability])
        text = buffer.getvalue()
        if path is not None:
            Path(path).write_text(text)
        return text

    def save_figure(self, path: str | Path, **options: Any) -> Path:
        """Draw the paper's grid: rows transforms, columns distance per layer and p(target).

        See :func:`zf_attr.analysis.invariance.figure.save_invariance_figure` for the options.
        """
        return type(self).draw(self, path, **options)


def invariance_study(
    model: nn.Module,
    images: Tensor,
    targets: int | Sequence[int] | Tensor | None,
    *,
    sweeps: Mapping[str, Sequence[float] | Tensor] | None = None,
    layers: Sequence[str | nn.Module] | None = None,
    fill: float = 0.0,
    rectified: bool = True,
    class_names: Sequence[str] | None = None,
) -> InvarianceStudy:
    """Transform every image along every sweep and measure feature distances and p(true class) (paper Fig. 5).

    Args:
        model: a classifier returning logits ``(N, classes)``, in eval mode; left as found.
        images: images ``(N, C, H, W)`` (or one ``(C, H, W)``), preprocessed as the model expects.
        targets: each image's true class (an int for all, a sequence or tensor of ``N``); ``None``: the class the
            model predicts for the untransformed image.
        sweeps: transform name → values, of ``"vertical"``/``"horizontal"`` (pixels, positive down/right),
            ``"scale"`` (zoom factor about the centre) and ``"rotation"`` (degrees, counter-clockwise); each sweep
            gets its identity value if it lacks it. ``None``: the paper's sweeps scaled to the image size
            (:func:`~zf_attr.analysis.invariance.transforms.default_sweeps`: ±60 px at 224 px, scale 1.0–1.8,
            rotation 0–360°).
        layers: layers whose feature vectors are compared (names or submodules); ``None``: the first convolution
            and the penultimate layer (ZFNet: ``conv1`` and ``fc7``, the paper's layer 1 and layer 7).
        fill: value of the pixels a transform brings in from outside the image (0: the mean, after normalisation).
        rectified: read each layer after the rectifier its output goes straight into (the paper's maps).
        class_names: names of the classes, for the figure.

    Returns:
        An :class:`InvarianceStudy`.

    Raises:
        TypeError, ValueError: bad images, targets, sweeps or layers; the message names the argument.
    """
    validate_model(model)
    images = check_images(images)
    sweeps_checked = check_sweeps(sweeps, int(images.shape[-1]))
    parameter = next(model.parameters(), None)
    if parameter is not None:
        images = images.to(parameter.device)
    reader = FeatureReader(model, layers, images[:1], rectified=rectified)
    logits, reference = reader(images)
    chosen = _targets(targets, logits)
    distances: dict[str, dict[str, Tensor]] = {}
    probabilities: dict[str, Tensor] = {}
    rows = torch.arange(len(images), device=logits.device)
    for name, values in sweeps_checked.items():
        per_layer = {layer: torch.zeros(len(images), len(values), dtype=torch.float64) for layer in reader.layers}
        probability = torch.zeros(len(images), len(values), dtype=torch.float64)
        for v, value in enumerate(values.tolist()):
            if value == IDENTITY[name]:  # the images themselves: distance 0, the unmodified probability
                scores, features = logits, reference
            else:
                scores, features = reader(transform_images(images, name, value, fill=fill))
            for layer in reader.layers:
                difference = (features[layer].double() - reference[layer].double()).cpu()
                per_layer[layer][:, v] = torch.linalg.vector_norm(difference, dim=1)
            probability[:, v] = scores.double().softmax(dim=1)[rows, chosen.to(rows.device)].cpu()
        distances[name], probabilities[name] = per_layer, probability
    return InvarianceStudy(
        sweeps=sweeps_checked,
        distances=distances,
        probabilities=probabilities,
        layers=reader.layers,
        rectifiers={layer: reading.rectifier for layer, reading in reader.maps.items()},
        targets=chosen.cpu(),
        images=images.cpu(),
        fill=float(fill),
        class_names=tuple(class_names) if class_names is not None else None,
    )


def _targets(targets: Any, logits: Tensor) -> Tensor:
    """One class index per image (validated against the number of classes)."""
    count, classes = logits.shape
    if targets is None:
        return logits.argmax(dim=1).cpu()
    if isinstance(targets, bool):
        raise TypeError("targets must be an int, a sequence of ints, an integer tensor or None, got a bool")
    if isinstance(targets, int):
        chosen = torch.full((count,), targets, dtype=torch.long)
    else:
        try:
            chosen = torch.as_tensor(targets).reshape(-1)
        except (TypeError, ValueError, RuntimeError) as error:
            raise TypeError(f"targets must be an int, a sequence of ints or a tensor, got {targets!r}") from error
        if chosen.is_floating_point() or chosen.dtype == torch.bool:
            raise TypeError(f"targets must hold class indices (ints), got dtype {chosen.dtype}")
        if chosen.numel() != count:
            raise ValueError(f"targets has {chosen.numel()} entries for {count} images; give one per image")
        chosen = chosen.long().cpu()
    if bool(((chosen < 0) | (chosen >= classes)).any()):
        raise ValueError(f"targets {chosen.tolist()} holds a class out of range for {classes} classes")
    return chosen
