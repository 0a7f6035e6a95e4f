"""Image files decoded ahead of the model, by ``DataLoader`` workers, with failures returned instead of raised.

A file that cannot be read does not stop the loader: its item carries the error, and the command decides
(``--skip-errors``: list it and go on; otherwise stop). Items come back in input order.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from zf_attr.cli._images import InputError, decode_image, preprocess
from zf_attr.cli._models import Preprocessing

__all__ = ["Decoded", "ImageFiles", "batched", "decode_ahead"]


@dataclass
class Decoded:
    """One input after decoding: the display image and model input ``(3, S, S)``, or the error that stopped it.

    Example:
        >>> Decoded(0, None, None, None, "cannot read image 'x.png'").ok
        False
    """

    index: int
    pixels: Tensor | None
    inputs: Tensor | None
    size: tuple[int, int] | None
    error: str | None = None

    @property
    def ok(self) -> bool:
        """Decoded without error."""
        return self.error is None


class ImageFiles(Dataset[Decoded]):
    """Image files, decoded and preprocessed on demand (:class:`Decoded` items; errors kept, not raised).

    Example:
        >>> from zf_attr.cli._models import Preprocessing
        >>> files = ImageFiles([Path("missing.png")], Preprocessing(8, 8, (0.5,) * 3, (0.5,) * 3))
        >>> files[0].error.startswith("cannot read image")
        True
    """

    def __init__(self, paths: Sequence[Path], preprocessing: Preprocessing) -> None:
        self.paths, self.preprocessing = list(paths), preprocessing

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> Decoded:
        spec = self.preprocessing
        try:
            picture, size = decode_image(self.paths[index])
            pixels, inputs = preprocess(picture, spec.size, spec.resize, spec.mean, spec.std, spec.interpolation)
        except InputError as error:
            return Decoded(index, None, None, None, str(error))
        except Exception as error:  # a decoder bug on one file must not stop the others
            message = " ".join(f"{type(error).__name__}: {error}".split())
            return Decoded(index, None, None, None, f"cannot read image {str(self.paths[index])!r}: {message}")
        return Decoded(index, pixels, inputs, size)


def _single(item: Decoded) -> Decoded:
    return item


def decode_ahead(files: ImageFiles, workers: int) -> Iterable[Decoded]:
    """The items of ``files`` in order, decoded by ``workers`` processes ahead of their use (0: in this one)."""
    if workers == 0 or len(files) <= 1:
        return (files[index] for index in range(len(files)))
    return DataLoader(files, batch_size=None, num_workers=workers, collate_fn=_single, prefetch_factor=4)


def batched(items: Iterable[Decoded], size: int) -> Iterator[list[Decoded]]:
    """``items`` in lists of ``size`` (the last may be shorter).

    Example:
        >>> [len(batch) for batch in batched(iter(range(5)), 2)]
        [2, 2, 1]
    """
    batch: list[Decoded] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch
