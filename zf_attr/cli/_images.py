"""Image files named on the command line: finding them, naming their outputs, and decoding them without loss.

Folders are walked recursively in sorted order (hidden files and folders skipped, symbolic links to folders
followed once); glob patterns are expanded
sorted. Each input gets a *key*: its path relative to the folder or glob root it came from, without the suffix
(``photos/cats/1.png`` given as ``photos/`` → ``cats/1``; a file named directly → its stem). Outputs mirror
the keys (``out/cats/1.png``), so two inputs whose keys coincide (``a/x.png`` and ``b/x.png`` named directly,
``x.png`` beside ``x.jpg``, or keys equal up to letter case) would overwrite each other: :func:`collect_inputs`
refuses them before any work.

Decoding (:func:`decode_image`): EXIF orientation applied; 16-bit and 32-bit integer images scaled from their
full range (not clipped at 255); float images (``F``, e.g. float TIFF) taken as they are when in [0, 1], else
stretched from their minimum to their maximum; palette images through their palette; transparency (LA, RGBA,
PA, palette with a transparent colour) composited over white; CMYK, YCbCr and the rest converted to RGB.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "IMAGE_SUFFIXES",
    "InputError",
    "InputFile",
    "collect_inputs",
    "decode_image",
    "find_images",
    "preprocess",
]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")

_FULL_RANGE = {"I;16": 65535.0, "I;16L": 65535.0, "I;16B": 65535.0, "I;16N": 65535.0}


class InputError(RuntimeError):
    """A problem with the user's arguments or files, reported on one line."""


@dataclass(frozen=True)
class InputFile:
    """One image to process: its path and the key its outputs are named after (``cats/1`` → ``out/cats/1.png``).

    Example:
        >>> InputFile(Path("photos/cats/1.png"), "cats/1").folder
        'cats'
    """

    path: Path
    key: str

    @property
    def folder(self) -> str:
        """Name of the folder holding the image (what ``--target from-folder`` reads)."""
        return self.path.parent.name


def _walk(folder: Path, exclude: set[Path]) -> list[Path]:
    """Image files under ``folder``, recursively, sorted by their relative path; hidden entries skipped."""
    found: list[Path] = []
    seen = {folder.resolve()}
    for root, dirs, files in os.walk(folder, followlinks=True):  # symlinked class folders, as ImageFolder
        here = Path(root)
        kept = []
        for name in dirs:
            real = (here / name).resolve()
            if not name.startswith(".") and real not in exclude and real not in seen:  # a link cycle ends here
                seen.add(real)
                kept.append(name)
        dirs[:] = kept
        found += [here / f for f in files if not f.startswith(".") and Path(f).suffix.lower() in IMAGE_SUFFIXES]
    return sorted(found, key=lambda p: p.relative_to(folder).parts)


def _glob_root(pattern: str) -> Path:
    """The longest leading part of ``pattern`` without wildcards: what glob matches are named relative to."""
    parts = Path(pattern).parts
    fixed = list(parts[: next((i for i, p in enumerate(parts) if glob.has_magic(p)), len(parts))])
    return Path(*fixed) if fixed else Path(".")


def _key(path: Path, root: Path) -> str:
    return path.relative_to(root).with_suffix("").as_posix()


def collect_inputs(patterns: Sequence[str], *, exclude: Path | Sequence[Path] = ()) -> list[InputFile]:
    """Expand files, folders and glob patterns into :class:`InputFile` s with unique output keys.

    Args:
        patterns: what the user named: image files, folders (walked recursively) and glob patterns (``**``
            matches any depth).
        exclude: folders never entered (the run's output folder, a masks folder, inside an input folder).

    Returns:
        The inputs in order: the patterns in the order given, each expanded sorted; a file reached twice is kept
        once.

    Raises:
        InputError: a pattern matches nothing, nothing is found, or two inputs would write the same outputs.

    Example:
        >>> import tempfile
        >>> root = Path(tempfile.mkdtemp())
        >>> for name in ("cats/1.png", "dogs/1.png", "dogs/2.jpg"):
        ...     (root / name).parent.mkdir(exist_ok=True)
        ...     _ = (root / name).write_bytes(b"")
        >>> [item.key for item in collect_inputs([str(root)])]
        ['cats/1', 'dogs/1', 'dogs/2']
    """
    excluded = {path.resolve() for path in ([exclude] if isinstance(exclude, Path) else exclude)}
    found: list[InputFile] = []
    for pattern in patterns:
        path = Path(pattern)
        if path.is_dir():
            found += [InputFile(p, _key(p, path)) for p in _walk(path, excluded)]
        elif path.is_file():
            found.append(InputFile(path, path.stem))
        else:
            root = _glob_root(pattern)
            matches = sorted((Path(p) for p in glob.glob(pattern, recursive=True)), key=lambda p: p.parts)
            matches = [p for p in matches if p.is_file()]
            if not matches:
                raise InputError(f"no such file, folder or matching images: {pattern!r}")
            found += [InputFile(p, _key(p, root)) for p in matches]
    if not found:
        raise InputError("no images found in the given folders")
    unique: dict[Path, InputFile] = {}
    for item in found:
        unique.setdefault(item.path.resolve(), item)
    inputs = list(unique.values())
    _refuse_collisions(inputs)
    return inputs


def _refuse_collisions(inputs: Sequence[InputFile]) -> None:
    seen: dict[str, InputFile] = {}
    for item in inputs:
        if item.key in ("", ".") or item.key.startswith("../"):
            raise InputError(f"cannot name the outputs of {str(item.path)!r} (key {item.key!r})")
        other = seen.setdefault(item.key.casefold(), item)
        if other is not item:
            raise InputError(
                f"{str(other.path)!r} and {str(item.path)!r} would both write the outputs '{item.key}.*'; "
                "name their folder instead of the files, or rename one (nothing was written)"
            )


def find_images(patterns: Sequence[str], *, exclude: Path | Sequence[Path] = ()) -> list[Path]:
    """The paths of :func:`collect_inputs` (files, folders walked recursively, glob patterns), in order."""
    return [item.path for item in collect_inputs(patterns, exclude=exclude)]


def _float_pixels(picture: Any) -> Tensor:
    """A one-band integer or float PIL image as a ``(1, H, W)`` float tensor in [0, 1]."""
    values = np.asarray(picture, dtype=np.float64)
    if picture.mode in _FULL_RANGE:
        scaled = values / _FULL_RANGE[picture.mode]
    elif picture.mode == "I":  # 32-bit integers: 16-bit files often open so; scale by the smallest full range
        top = float(values.max(initial=0.0))
        scaled = values / (65535.0 if top <= 65535 else 2.0**32 - 1)
    else:  # "F": floats, taken as they are when in [0, 1]
        low, high = float(values.min(initial=0.0)), float(values.max(initial=0.0))
        if not np.isfinite(values).all():
            raise InputError("the image holds NaN or infinite values")
        scaled = values if low >= 0.0 and high <= 1.0 else (values - low) / max(high - low, 1e-12)
    return torch.from_numpy(np.clip(scaled, 0.0, 1.0).astype(np.float32))[None]


def decode_image(path: Path) -> tuple[Any, tuple[int, int]]:
    """Read ``path`` as an RGB PIL image or, for high-bit-depth and float images, a ``(3, H, W)`` tensor in [0, 1].

    Returns:
        The picture and its size ``(width, height)`` in pixels.

    Raises:
        InputError: the file cannot be read as an image.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(path) as file:
            file.load()
            picture = ImageOps.exif_transpose(file) or file
            mode = picture.mode
            if mode in _FULL_RANGE or mode in ("I", "F"):
                return _float_pixels(picture).expand(3, -1, -1).contiguous(), picture.size
            if mode == "P":
                picture = picture.convert("RGBA" if "transparency" in picture.info else "RGB")
            elif mode in ("LA", "La", "PA", "RGBa"):
                picture = picture.convert("RGBA")
            if picture.mode == "RGBA":
                background = Image.new("RGBA", picture.size, (255, 255, 255, 255))
                picture = Image.alpha_composite(background, picture)
            return picture.convert("RGB"), picture.size
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as error:
        raise InputError(f"cannot read image {str(path)!r}: {' '.join(str(error).split())}") from error


def preprocess(
    picture: Any,
    size: int,
    resize: int,
    mean: Sequence[float],
    std: Sequence[float],
    interpolation: str = "bilinear",
) -> tuple[Tensor, Tensor]:
    """(image in [0, 1] for display, normalised model input), both ``(3, size, size)``: resize, centre-crop.

    PIL images follow torchvision's classification preset exactly; float tensors (high-bit-depth files) are
    resized in PIL's 32-bit float mode, channel by channel, with the same filter.
    """
    from PIL import Image
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms import functional as TF

    mode = InterpolationMode(interpolation)
    if isinstance(picture, Tensor):
        bands = []
        for band in picture:
            image = TF.center_crop(TF.resize(Image.fromarray(band.numpy()), resize, mode), size)
            bands.append(torch.from_numpy(np.asarray(image, dtype=np.float32).copy()))
        pixels = torch.stack(bands).clamp(0.0, 1.0)
    else:
        pixels = TF.to_tensor(TF.center_crop(TF.resize(picture, resize, mode), size))
    return pixels, TF.normalize(pixels, list(mean), list(std))
