"""A deterministic, generated image data set of six shapes on clutter, with object masks and boxes.

Each image holds one object whose class is given by its *shape* alone: colour, texture, rotation, scale
and position are random and independent of the class. The background is cluttered on purpose (a smooth
colour gradient, low-frequency blotches, thin line segments and small elongated blobs, none of them one of
the classes' shapes), so that an attribution that points at the object, rather than at the clutter, is
measurably right: every sample carries the object's pixel ``mask`` and its tight bounding ``box``.

Item ``i`` depends only on ``(seed, i)`` (and ``image_size``, which only sets the resolution: the same
item at another size is the same scene, redrawn). Different seeds are independent splits; by convention
the training split is seed 0, validation seed 1, test seed 2, and any other seed is a fresh split.

Example:
    >>> from zf_attr.models.shapes import ShapesDataset
    >>> train = ShapesDataset(600, seed=0)
    >>> image, label = train[0]
    >>> tuple(image.shape), image.dtype, train.classes[label] in train.classes
    ((3, 112, 112), torch.float32, True)

"""

from __future__ import annotations

import hashlib
import math
import operator
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import torch
from torch import Tensor
from torch.nn.functional import interpolate
from torch.utils.data import Dataset

__all__ = ["SHAPE_CLASSES", "ShapeSample", "ShapesDataset", "save_examples"]

#: The object classes, in label order. They differ by shape only, and stay distinct under rotation and scale.
SHAPE_CLASSES: tuple[str, ...] = ("disc", "square", "triangle", "cross", "ring", "star")

_NUM_LINES = 4  # at most this many thin line segments in the background
_NUM_BLOBS = 3  # at most this many small elongated blobs in the background
_NUM_CANDIDATES = 8  # random object colours tried; the one farthest from the local background wins
_NUM_PARAMS = 128  # size-independent uniform draws per item (more than used, so the stream is fixed)


def _derive_seed(seed: int, index: int, salt: str) -> int:
    """A 63-bit generator seed that depends only on ``(salt, seed, index)``, well mixed by a hash."""
    digest = hashlib.blake2b(f"{salt}:{seed}:{index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & (2**63 - 1)


def _label(seed: int, index: int) -> int:
    """Labels are a fresh permutation of the classes in every block of ``len(SHAPE_CLASSES)`` items: balanced."""
    n = len(SHAPE_CLASSES)
    generator = torch.Generator().manual_seed(_derive_seed(seed, index // n, "label"))
    return int(torch.randperm(n, generator=generator)[index % n])


@lru_cache(maxsize=8)
def _grid(size: int) -> tuple[Tensor, Tensor]:
    """Pixel-centre coordinates ``(x, y)``, each ``(size, size)``, in pixel units."""
    coords = torch.arange(size, dtype=torch.float32) + 0.5
    y, x = torch.meshgrid(coords, coords, indexing="ij")
    return x, y


def _shape_distance(name: str, u: Tensor, v: Tensor, radius: float) -> Tensor:
    """Signed distance (pixels, negative inside) to a shape centred at 0, circumscribed by ``radius``."""
    r = torch.sqrt(u * u + v * v)
    if name == "disc":
        return r - radius
    if name == "ring":
        return torch.maximum(r - radius, 0.5 * radius - r)
    if name == "cross":
        half_width = 0.3 * radius
        half_length = math.sqrt(radius**2 - half_width**2)
        au, av = u.abs(), v.abs()
        return torch.minimum(
            torch.maximum(au - half_length, av - half_width), torch.maximum(au - half_width, av - half_length)
        )
    sides = {"square": 4, "triangle": 3, "star": 5}[name]
    sector = 2 * math.pi / sides
    phi = torch.remainder(torch.atan2(v, u), sector)
    if name == "star":
        # Fold into [0, pi/5]: the edge runs from the tip (radius, 0) to the inner vertex at angle pi/5.
        phi = torch.minimum(phi, sector - phi)
        inner = 0.45 * radius
        tip_x, tip_y = radius, 0.0
        dx, dy = inner * math.cos(sector / 2) - tip_x, inner * math.sin(sector / 2) - tip_y
        norm = math.hypot(dx, dy)
        nx, ny = dy / norm, -dx / norm  # outward normal of the edge
        return nx * (r * torch.cos(phi) - tip_x) + ny * (r * torch.sin(phi) - tip_y)
    # Regular polygon: distance to the edge of the sector the point lies in.
    return r * torch.cos(phi - sector / 2) - radius * math.cos(math.pi / sides)


@contextmanager
def _single_threaded() -> Iterator[None]:
    """Run torch ops on one thread, then restore the thread count.

    Drawing one image is too little work to split across threads: one thread is faster, and it stays fast
    when other processes load the CPU, where torch's intra-op thread pool slows small ops down a hundredfold.
    It also makes every item bitwise the same in the main process and in DataLoader workers (one thread).
    """
    threads = torch.get_num_threads()
    if threads > 1:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        if threads > 1:
            torch.set_num_threads(threads)


def _render(seed: int, index: int, size: int) -> tuple[Tensor, Tensor, int]:
    """Draw item ``index`` of split ``seed``: ``(image in [0, 1] (3, H, W), mask (H, W) bool, label)``."""
    label = _label(seed, index)
    generator = torch.Generator().manual_seed(_derive_seed(seed, index, "item"))
    params = iter(torch.rand(_NUM_PARAMS, generator=generator).tolist())

    def uniform(low: float, high: float) -> float:
        return low + (high - low) * next(params)

    def colour(low: float = 0.0, high: float = 1.0) -> Tensor:
        return torch.tensor([uniform(low, high) for _ in range(3)])

    x, y = _grid(size)
    # Background: a smooth gradient between two colours, plus low-frequency blotches.
    start, end = colour(0.1, 0.9), colour(0.1, 0.9)
    angle = uniform(0.0, 2 * math.pi)
    ramp = ((x - size / 2) * math.cos(angle) + (y - size / 2) * math.sin(angle)) / size + 0.5
    image = start[:, None, None] + (end - start)[:, None, None] * ramp.clamp(0.0, 1.0)
    blotches = torch.rand(1, 3, 4, 4, generator=generator)
    blotches = interpolate(blotches, size=(size, size), mode="bicubic", align_corners=False)[0]
    image = image + uniform(0.15, 0.35) * (blotches - 0.5)

    # Distractors behind the object: thin line segments and small elongated blobs (never a class's shape).
    num_lines, num_blobs = 2 + int(3 * next(params)), 1 + int(3 * next(params))
    for k in range(_NUM_LINES):
        x0, y0 = uniform(0, size), uniform(0, size)
        length, direction = size * uniform(0.15, 0.45), uniform(0.0, 2 * math.pi)
        width, tint = uniform(0.5, 1.0), colour()
        if k >= num_lines:
            continue
        ux, uy = math.cos(direction), math.sin(direction)
        along = ((x - x0) * ux + (y - y0) * uy).clamp(0.0, length)
        distance = torch.sqrt((x - x0 - along * ux) ** 2 + (y - y0 - along * uy) ** 2)
        alpha = (width + 0.5 - distance).clamp(0.0, 1.0)
        image = image + (tint[:, None, None] - image) * alpha
    for k in range(_NUM_BLOBS):
        bx, by = uniform(0, size), uniform(0, size)
        major = size * uniform(0.03, 0.07)
        minor, direction, tint = major * uniform(0.3, 0.55), uniform(0.0, math.pi), colour()
        if k >= num_blobs:
            continue
        c, s = math.cos(direction), math.sin(direction)
        du, dv = ((x - bx) * c + (y - by) * s) / major, (-(x - bx) * s + (y - by) * c) / minor
        alpha = ((1.0 - torch.sqrt(du * du + dv * dv)) * minor + 0.5).clamp(0.0, 1.0)
        image = image + (tint[:, None, None] - image) * alpha
    image = image.clamp(0.0, 1.0)

    # The object: random scale, position (its circumscribed circle lies inside the image) and rotation.
    name = SHAPE_CLASSES[label]
    radius = size * uniform(0.125, 0.30)
    cx, cy = uniform(radius + 1, size - radius - 1), uniform(radius + 1, size - radius - 1)
    rotation = uniform(0.0, 2 * math.pi)
    c, s = math.cos(rotation), math.sin(rotation)
    u, v = (x - cx) * c + (y - cy) * s, -(x - cx) * s + (y - cy) * c
    distance = _shape_distance(name, u, v, radius)
    alpha = (0.5 - distance).clamp(0.0, 1.0)
    mask = distance < 0.0

    # Its colour: of several random candidates, the one farthest from the background it covers.
    candidates = torch.tensor([[uniform(0.0, 1.0) for _ in range(3)] for _ in range(_NUM_CANDIDATES)])
    local = image[:, mask].mean(dim=1)
    base = candidates[torch.linalg.vector_norm(candidates - local, dim=1).argmax()]
    shade = base * 0.55 if next(params) < 0.5 else base * 0.55 + 0.45
    # Its texture, t in [0, 1]: plain, stripes, checker (both fixed to the object) or blocky noise.
    texture, strength = int(4 * next(params)), uniform(0.4, 0.9)
    period = radius * uniform(0.25, 0.6)
    stripe_angle = uniform(0.0, math.pi)
    noise = torch.rand(1, 1, 12, 12, generator=generator)
    if texture == 0:
        pattern = None
    elif texture == 1:
        phase = (u * math.cos(stripe_angle) + v * math.sin(stripe_angle)) * (2 * math.pi / period)
        pattern = 0.5 + 0.5 * torch.sin(phase)
    elif texture == 2:
        scale = math.pi / period
        pattern = (torch.sin(u * scale) * torch.sin(v * scale) > 0).float()
    else:
        pattern = interpolate(noise, size=(size, size), mode="nearest")[0, 0]
    if pattern is None:
        foreground = base[:, None, None].expand(3, size, size)
    else:
        foreground = base[:, None, None] + (shade - base)[:, None, None] * (strength * pattern)
    image = image + (foreground - image) * alpha

    # Light pixel noise.
    image = image + 0.02 * torch.randn(3, size, size, generator=generator)
    return image.clamp(0.0, 1.0), mask, label


def _box(mask: Tensor) -> tuple[int, int, int, int]:
    """The tight bounding box ``(x0, y0, x1, y1)`` of a non-empty ``(H, W)`` mask, ``x1``/``y1`` exclusive."""
    columns = mask.any(dim=0).nonzero()
    rows = mask.any(dim=1).nonzero()
    return int(columns[0]), int(rows[0]), int(columns[-1]) + 1, int(rows[-1]) + 1


@dataclass(frozen=True)
class ShapeSample:
    """One item of a :class:`ShapesDataset`, with its ground truth.

    Attributes:
        image: ``(3, H, W)`` float32 in [0, 1], not normalised.
        label: the class index into :data:`SHAPE_CLASSES`.
        class_name: ``SHAPE_CLASSES[label]``.
        mask: ``(H, W)`` bool, True on the object's pixels (the clutter is never in it).
        box: ``(x0, y0, x1, y1)``, the tight bounding box of ``mask``; ``x1`` and ``y1`` are exclusive.
        index: the item's index in its data set.

    Example:
        >>> sample = ShapesDataset(10, seed=2).sample(3)
        >>> x0, y0, x1, y1 = sample.box
        >>> bool(sample.mask[y0:y1, x0:x1].sum() == sample.mask.sum()), sample.class_name == SHAPE_CLASSES[sample.label]
        (True, True)

    """

    image: Tensor
    label: int
    class_name: str
    mask: Tensor
    box: tuple[int, int, int, int]
    index: int


class ShapesDataset(Dataset):
    """Generated images of one shape each on clutter, drawn on the fly and deterministically.

    Item ``i`` depends only on ``(seed, i, image_size)``: each item draws from its own
    ``torch.Generator`` seeded from a hash of ``(seed, i)``, never from the global RNG, so the data set can
    be indexed in any order, by any number of DataLoader workers. Seeds are independent splits: train on
    seed 0, validate on seed 1, test on seed 2; any other seed is a fresh split. Labels are balanced (each
    block of six consecutive items holds every class once, in a random order).

    Args:
        length: the number of items.
        seed: which split.
        image_size: height and width in pixels (at least 32).
        normalize: whether ``dataset[i]`` returns the image normalised with :attr:`MEAN` and :attr:`STD`
            (:meth:`sample` always returns it in [0, 1]).

    Example:
        >>> from torch.utils.data import DataLoader
        >>> dataset = ShapesDataset(12, seed=1, image_size=64)
        >>> images, labels = next(iter(DataLoader(dataset, batch_size=4)))
        >>> tuple(images.shape), labels.tolist() == [dataset.sample(i).label for i in range(4)]
        ((4, 3, 64, 64), True)

    """

    #: Per-channel mean and standard deviation of the generated images (measured on 5000 items of seed 0).
    MEAN: tuple[float, float, float] = (0.499, 0.498, 0.501)
    STD: tuple[float, float, float] = (0.216, 0.217, 0.217)
    #: The class names, in label order.
    classes: tuple[str, ...] = SHAPE_CLASSES

    def __init__(self, length: int = 1000, *, seed: int = 0, image_size: int = 112, normalize: bool = True) -> None:
        if isinstance(length, bool) or not isinstance(length, int) or length < 1:
            raise ValueError(f"length must be an int >= 1, got {length!r}")
        if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 32:
            raise ValueError(f"image_size must be an int >= 32, got {image_size!r}")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"seed must be an int, got {seed!r}")
        self.length = length
        self.seed = seed
        self.image_size = image_size
        self.normalize = bool(normalize)

    def __len__(self) -> int:
        return self.length

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(length={self.length}, seed={self.seed}, "
            f"image_size={self.image_size}, normalize={self.normalize})"
        )

    def _index(self, index: int) -> int:
        index = operator.index(index)
        if index < 0:
            index += self.length
        if not 0 <= index < self.length:
            raise IndexError(f"index {index} is out of range for a {type(self).__name__} of length {self.length}")
        return index

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        """The image (normalised if ``normalize``) and label of item ``index``."""
        index = self._index(index)
        with _single_threaded():
            image, _, label = _render(self.seed, index, self.image_size)
            if self.normalize:
                mean = torch.tensor(self.MEAN)[:, None, None]
                std = torch.tensor(self.STD)[:, None, None]
                image = (image - mean) / std
        return image, label

    def sample(self, index: int) -> ShapeSample:
        """Item ``index`` with its ground truth; the image is in [0, 1], never normalised."""
        index = self._index(index)
        with _single_threaded():
            image, mask, label = _render(self.seed, index, self.image_size)
            box = _box(mask)
        return ShapeSample(image, label, SHAPE_CLASSES[label], mask, box, index)


def save_examples(path: str | Path, dataset: ShapesDataset | None = None, n: int = 12, *, seed: int = 0) -> Path:
    """Save a labelled PNG grid of the first ``n`` items, with each object's mask outline and box.

    Args:
        path: where to write the PNG.
        dataset: the data set to show; by default a ``ShapesDataset`` of split ``seed``.
        n: how many items to show (at most ``len(dataset)``).
        seed: the split shown when ``dataset`` is None.

    Returns:
        The path written.

    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    if dataset is None:
        dataset = ShapesDataset(max(n, 1), seed=seed)
    if n < 1 or n > len(dataset):
        raise ValueError(f"n must be between 1 and len(dataset)={len(dataset)}, got {n}")
    columns = min(n, 6)
    rows = math.ceil(n / columns)
    figure = Figure(figsize=(2.2 * columns, 2.4 * rows))
    FigureCanvasAgg(figure)
    for i in range(n):
        sample = dataset.sample(i)
        axes = figure.add_subplot(rows, columns, i + 1)
        axes.imshow(sample.image.permute(1, 2, 0).numpy(), interpolation="nearest")
        axes.contour(sample.mask.float().numpy(), levels=[0.5], colors="white", linewidths=0.8)
        x0, y0, x1, y1 = sample.box
        axes.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, edgecolor="yellow", linewidth=1.0))
        axes.set_title(f"{sample.index}: {sample.class_name}", fontsize=9)
        axes.set_axis_off()
    figure.tight_layout()
    path = Path(path)
    figure.savefig(path, dpi=100)
    return path
