"""ZFNet weights: the checkpoints shipped inside the package, and loading any local file with clear errors.

Nothing here downloads anything: shipped weights live in ``zf_attr/models/checkpoints/``; a user's own weights
come from a local file (a state dict, a training checkpoint holding one, or safetensors).
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["WeightsInfo", "ZFNetWeights", "load_state_dict_file", "load_weights_into"]

_WEIGHTS_PACKAGE = "zf_attr.models.checkpoints"


@dataclass(frozen=True)
class WeightsInfo:
    """What a shipped checkpoint is: its file, the architecture it needs, its preprocessing and its metrics.

    Attributes:
        file: file name inside ``zf_attr/models/checkpoints/``.
        variant: the ZFNet variant (see :data:`zf_attr.models.VARIANTS`).
        categories: class names, in output order.
        mean, std: per-channel normalisation the model was trained with (inputs in [0, 1] first).
        metrics: measured quality, e.g. ``{"test_accuracy": 0.97}``, with how it was measured in ``recipe``.
        recipe: how the weights were made (command and data).

    Example:
        >>> import torch
        >>> from zf_attr.models import ZFNetWeights
        >>> info = ZFNetWeights.DEFAULT.info
        >>> info.variant, info.num_classes, info.normalize(torch.full((1, 3, 2, 2), 0.5)).shape
        ('shapes', 6, torch.Size([1, 3, 2, 2]))
    """

    file: str
    variant: str
    categories: tuple[str, ...]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    metrics: dict[str, Any] = field(default_factory=dict)
    recipe: str = ""

    @property
    def num_classes(self) -> int:
        """Number of classes the checkpoint predicts."""
        return len(self.categories)

    @property
    def path(self) -> Path:
        """Location of the checkpoint file inside the installed package."""
        return Path(str(resources.files(_WEIGHTS_PACKAGE).joinpath(self.file)))

    def normalize(self, images: Tensor) -> Tensor:
        """Normalise a batch of ``[0, 1]`` images ``(N, 3, H, W)`` as the model expects."""
        mean = torch.tensor(self.mean, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
        return (images - mean) / std


def _shapes_info() -> WeightsInfo:
    from zf_attr.models.shapes import SHAPE_CLASSES, ShapesDataset

    card = _card("zfnet_shapes_112.json")
    return WeightsInfo(
        file="zfnet_shapes_112.pt",
        variant="shapes",
        categories=tuple(SHAPE_CLASSES),
        mean=tuple(float(v) for v in ShapesDataset.MEAN),  # type: ignore[arg-type]
        std=tuple(float(v) for v in ShapesDataset.STD),  # type: ignore[arg-type]
        metrics=card.get("metrics", {}),
        recipe=card.get("recipe", "python -m zf_attr.models.shipped --seed 0"),
    )


def _card(name: str) -> dict[str, Any]:
    """The JSON card written beside a shipped checkpoint (metrics and recipe); empty if absent."""
    path = Path(str(resources.files(_WEIGHTS_PACKAGE).joinpath(name)))
    return json.loads(path.read_text()) if path.is_file() else {}


class ZFNetWeights(enum.Enum):
    """Checkpoints shipped with zf_attr (no download).

    ``SHAPES_112``: the narrow ``"shapes"`` ZFNet trained with the paper's recipe on
    :class:`zf_attr.models.shapes.ShapesDataset` (112×112, 6 classes); its test accuracy on a fresh split is in
    ``ZFNetWeights.SHAPES_112.info.metrics``.

    Example:
        >>> from zf_attr.models import ZFNetWeights
        >>> ZFNetWeights.DEFAULT.info.categories[:3]
        ('disc', 'square', 'triangle')
    """

    SHAPES_112 = "shapes_112"
    DEFAULT = "shapes_112"

    @property
    def info(self) -> WeightsInfo:
        """The :class:`WeightsInfo` of this checkpoint."""
        return _shapes_info()

    def get_state_dict(self) -> dict[str, Tensor]:
        """Load the checkpoint's state dict from the package."""
        path = self.info.path
        if not path.is_file():
            raise FileNotFoundError(
                f"shipped weights {path.name} are missing from the installed package ({path}); reinstall zf_attr "
                "or regenerate them with `python -m zf_attr.models.shipped`"
            )
        return load_state_dict_file(path)


def load_state_dict_file(path: str | Path) -> dict[str, Tensor]:
    """Read a state dict from a local ``.pt``/``.pth`` file (plain or inside a checkpoint) or ``.safetensors``.

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file holds no state dict.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file {str(path)!r} does not exist")
    if path.suffix == ".safetensors":
        try:
            from safetensors.torch import load_file
        except ImportError as error:
            raise ImportError(
                "reading .safetensors files needs the safetensors package: pip install safetensors"
            ) from error
        return load_file(str(path))
    content = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model"):
        if isinstance(content, dict) and isinstance(content.get(key), dict):
            content = content[key]
    if not isinstance(content, dict) or not all(isinstance(value, Tensor) for value in content.values()):
        raise ValueError(f"weights file {str(path)!r} holds no state dict (a mapping of parameter names to tensors)")
    return content


def load_weights_into(model: nn.Module, state_dict: dict[str, Tensor], source: str) -> None:
    """Load ``state_dict`` into ``model``, raising one error that names every mismatched layer.

    Raises:
        ValueError: missing, unexpected or differently shaped entries; the message lists them.
    """
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    wrong_shape = [
        f"{name} {tuple(state_dict[name].shape)} in file vs {tuple(tensor.shape)} in model"
        for name, tensor in expected.items()
        if name in state_dict and state_dict[name].shape != tensor.shape
    ]
    if missing or unexpected or wrong_shape:
        parts = []
        if wrong_shape:
            parts.append("shape mismatch: " + _first(wrong_shape, "; "))
        if missing:
            parts.append("missing: " + _first(missing, ", "))
        if unexpected:
            parts.append("unexpected: " + _first(unexpected, ", "))
        raise ValueError(
            f"weights from {source} do not fit this ZFNet ({'; '.join(parts)}); check variant= and num_classes="
        )
    model.load_state_dict(state_dict)


def _first(items: list[str], separator: str, limit: int = 4) -> str:
    shown = separator.join(items[:limit])
    return shown if len(items) <= limit else f"{shown}{separator}and {len(items) - limit} more"
