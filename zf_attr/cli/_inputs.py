"""Models, images and preprocessing named on the command line (see :mod:`._models` and :mod:`._images`).

Preprocessing follows torchvision's classification presets: resize the short side to ``resize`` (default
``size * 256 / 224``, or the named weights' own), centre-crop ``size``, scale to [0, 1], normalise with ``mean``
and ``std`` (ImageNet's, or those the weights were trained with).
"""

from __future__ import annotations

from pathlib import Path

from torch import Tensor

from zf_attr.cli._images import IMAGE_SUFFIXES, InputError, InputFile, collect_inputs, decode_image, find_images
from zf_attr.cli._images import preprocess as _preprocess
from zf_attr.cli._models import IMAGENET_MEAN, IMAGENET_STD, LoadedModel, Preprocessing, load_model, pick_device

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "IMAGE_SUFFIXES",
    "InputError",
    "InputFile",
    "LoadedModel",
    "Preprocessing",
    "collect_inputs",
    "find_images",
    "load_model",
    "pick_device",
    "read_image",
]


def read_image(path: Path, loaded: LoadedModel) -> tuple[Tensor, Tensor]:
    """(image in [0, 1] for display, normalised model input), both ``(3, size, size)``, on the CPU."""
    picture, _ = decode_image(path)
    spec = loaded.preprocessing
    return _preprocess(picture, spec.size, spec.resize, spec.mean, spec.std, spec.interpolation)
