"""Models, images and preprocessing named on the command line.

Models: ``zfnet`` (the bundled, trained ZFNet), any torchvision classifier name with a local weights file
(``--model resnet50 --weights resnet50.pth``), or ``package.module:factory`` (a function returning the model).
Images: files, folders (their image files) and glob patterns. Preprocessing follows torchvision's classification
presets: resize the short side to ``resize`` (default ``size * 256 / 224``), centre-crop ``size``, scale to [0, 1],
normalise with ``mean`` and ``std`` (ImageNet's, or those the bundled weights were trained with).
"""

from __future__ import annotations

import glob
import importlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "IMAGE_SUFFIXES",
    "InputError",
    "LoadedModel",
    "Preprocessing",
    "find_images",
    "load_model",
    "pick_device",
    "read_image",
]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class InputError(RuntimeError):
    """A problem with the user's arguments or files, reported on one line."""


@dataclass(frozen=True)
class Preprocessing:
    """How an image file becomes a model input: resize the short side, centre-crop, normalise."""

    size: int
    resize: int
    mean: tuple[float, ...]
    std: tuple[float, ...]


@dataclass
class LoadedModel:
    """A model ready to explain (eval mode, on ``device``), with the preprocessing it expects."""

    model: nn.Module
    preprocessing: Preprocessing
    categories: tuple[str, ...] | None
    note: str
    device: torch.device

    @property
    def size(self) -> int:
        """Side of the (square) model input in pixels."""
        return self.preprocessing.size

    @property
    def mean(self) -> tuple[float, ...]:
        """Normalisation mean per channel."""
        return self.preprocessing.mean

    @property
    def std(self) -> tuple[float, ...]:
        """Normalisation standard deviation per channel."""
        return self.preprocessing.std

    def class_name(self, index: int) -> str:
        """The category name of class ``index`` when the weights carry names, else the index."""
        return self.categories[index] if self.categories is not None else str(index)


def pick_device(name: str) -> torch.device:
    """``"auto"`` → CUDA when available, else CPU; any other name is checked by torch."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as error:
        raise InputError(f"--device {name!r} is not a torch device (try cpu, cuda, cuda:1 or auto)") from error
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"--device {name!r}: CUDA is not available on this machine (use --device cpu)")
    return device


def load_model(
    name: str,
    weights: Path | None,
    size: int | None = None,
    *,
    resize: int | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    device: str = "cpu",
) -> LoadedModel:
    """Build the model named on the command line (see the module docstring): eval mode, on ``device``."""
    target_device = pick_device(device)
    categories: tuple[str, ...] | None = None
    default_mean, default_std = IMAGENET_MEAN, IMAGENET_STD
    if name == "zfnet":
        from zf_attr.models import zfnet

        if weights is not None:
            model = _with_weights_file(lambda: zfnet(weights=weights), weights)
            default_size, note = model.config.input_size, f"ZFNet, {weights}"
        else:
            model = zfnet(weights="DEFAULT")
            info = model.weights_info
            default_size, note = 112, "bundled ZFNet (shapes)"
            default_mean, default_std, categories = info.mean, info.std, info.categories
    else:
        model, note = _build(name)
        if weights is not None:
            from zf_attr.models.weights import load_state_dict_file

            _with_weights_file(lambda: model.load_state_dict(load_state_dict_file(weights)), weights)
            note += f", weights {weights}"
        else:
            note += ", random-init weights (pass --weights for trained ones)"
        default_size = 299 if name == "inception_v3" else 224
    side = size or default_size
    preprocessing = Preprocessing(
        size=side,
        resize=resize or round(side * 256 / 224),
        mean=_triple(mean, default_mean, "--mean"),
        std=_triple(std, default_std, "--std"),
    )
    if preprocessing.resize < side:
        raise InputError(f"--resize {preprocessing.resize} is smaller than the crop --size {side}")
    if any(value <= 0 for value in preprocessing.std):
        raise InputError(f"--std {list(preprocessing.std)} must be positive")
    return LoadedModel(model.eval().to(target_device), preprocessing, categories, note, target_device)


def _with_weights_file(load: Any, weights: Path) -> Any:
    try:
        return load()
    except (FileNotFoundError, ValueError, RuntimeError, KeyError) as error:
        raise InputError(f"--weights {str(weights)!r}: {' '.join(str(error).split())}") from error


def _build(name: str) -> tuple[nn.Module, str]:
    if ":" in name:
        module_name, _, factory = name.partition(":")
        try:
            model = getattr(importlib.import_module(module_name), factory)()
        except (ImportError, AttributeError) as error:
            raise InputError(f"--model {name!r}: cannot load {factory!r} from {module_name!r} ({error})") from error
        note = name
    else:
        import torchvision

        available = torchvision.models.list_models(module=torchvision.models)
        if name not in available:
            close = [candidate for candidate in available if name.lower() in candidate][:5]
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise InputError(
                f"--model {name!r} is not a torchvision classifier, 'zfnet' or package.module:factory{hint}"
            )
        kwargs: dict[str, Any] = {"weights": None}
        if name in ("googlenet", "inception_v3"):
            kwargs.update(aux_logits=False, init_weights=False)
        model = torchvision.models.get_model(name, **kwargs)
        note = f"torchvision {name}"
    if not isinstance(model, nn.Module):
        raise InputError(f"--model {name!r} did not give a torch.nn.Module")
    return model, note


def _triple(values: Sequence[float] | None, default: Sequence[float], flag: str) -> tuple[float, ...]:
    if values is None:
        return tuple(float(v) for v in default)
    if len(values) not in (1, 3):
        raise InputError(f"{flag} takes 1 or 3 numbers (one per RGB channel), got {len(values)}")
    return tuple(float(v) for v in values) * (3 // len(values))


def find_images(patterns: Sequence[str]) -> list[Path]:
    """Expand files, folders and glob patterns into image files, in a stable order."""
    found: list[Path] = []
    for pattern in patterns:
        path = Path(pattern)
        if path.is_dir():
            found += sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        elif path.is_file():
            found.append(path)
        else:
            matches = sorted(Path(p) for p in glob.glob(pattern) if Path(p).is_file())
            if not matches:
                raise InputError(f"no such file, folder or matching images: {pattern!r}")
            found += matches
    if not found:
        raise InputError("no images found in the given folders")
    return list(dict.fromkeys(found))


def read_image(path: Path, loaded: LoadedModel) -> tuple[Tensor, Tensor]:
    """(image in [0, 1] for display, normalised model input), both ``(3, size, size)``, on the CPU."""
    from PIL import Image, UnidentifiedImageError
    from torchvision.transforms import functional as TF

    try:
        with Image.open(path) as file:
            picture = file.convert("RGB")
    except (UnidentifiedImageError, OSError) as error:
        raise InputError(f"cannot read image {str(path)!r}: {error}") from error
    spec = loaded.preprocessing
    picture = TF.center_crop(TF.resize(picture, spec.resize), spec.size)
    pixels = TF.to_tensor(picture)
    return pixels, TF.normalize(pixels, spec.mean, spec.std)
