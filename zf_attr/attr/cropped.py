"""Receptive-field-cropped deconvnet projections: each seed's backward pass runs on a crop around its field.

A seed at the layer's unit ``(r, c)`` depends only on the input pixels inside that unit's receptive field, so
its projection can be computed on a crop of the image that contains the field, and pasted back into zeros.

**Geometry.** Per axis, with the field's cumulative stride ``J`` (``jump``) and unit ``i`` seeing pixels
``[J*i + lo, J*i + hi]``, the crop of a seed at unit ``r`` is ``[a, a + S)`` with ``a = J*r + floor(lo/J)*J``
and ``S = ceil((hi - lo + J) / J) * J``: it holds the whole field and starts on a multiple of ``J``, so every
intermediate layer's grid of the cropped network is the full network's shifted by a whole number of units (the
crop's unit ``r - a/J`` *is* the full network's unit ``r``). A crop that would start before the image starts
at 0; one that would end past the image is ``[a2, H)`` with ``a2`` the largest multiple of ``J`` at most
``H - S`` (one shared size), so there are at most two crop sizes per axis. An axis whose crop would not be
smaller than the image is not cropped.

**Exactness.** Every unit in the seed's backward cone has its field inside the seed's field, which is inside
the crop. Inside the image such a unit never reads the crop's zero padding (it would need a field reaching
before ``a`` or past ``a + S``); where the crop touches an image border it contains that border, so the
cropped network pads (or clips a ``ceil_mode`` pooling window) exactly as the full one does. The cropped
network therefore computes the same values, the same max-pool switches and the same rectifier masks for the
whole cone, and the projection equals the full one, pasted at the crop into zeros. Each crop's forward value
at its seed is also compared with the full forward's (:class:`CropError` if they disagree).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from zf_attr.attr._layers import capture_layer_output, children_chain
from zf_attr.attr.receptive_field import ReceptiveField

__all__ = [
    "CROP_FRACTION",
    "CropError",
    "axis_crops",
    "choose_crop",
    "crop_area_fraction",
    "crop_extent",
    "crop_runner",
    "project_cropped",
    "take_rows",
]

#: ``crop=None`` crops only where a seed's crop covers less than this fraction of the image's area.
CROP_FRACTION = 0.5


class CropError(ValueError):
    """Projections cannot be computed on crops (the message says why)."""


def crop_extent(jump: int, lo: int, hi: int) -> int:
    """Crop side ``S`` along one axis: the smallest multiple of ``jump`` that holds any unit's field.

    Example:
        >>> crop_extent(4, -21, 21)   # ResNet-18 layer1: a 43-pixel field, cumulative stride 4
        48
    """
    return -(-(hi - lo + jump) // jump) * jump


def axis_crops(units: Tensor, jump: int, lo: int, hi: int, length: int) -> tuple[Tensor, Tensor]:
    """Start and size of each seed's crop along one axis (see the module docstring).

    Args:
        units: the seeds' unit indices along the axis in the layer's map, integer tensor ``(S,)``.
        jump: the field's cumulative stride along this axis (see
            :class:`~zf_attr.attr.receptive_field.ReceptiveField`).
        lo: offset of the first pixel seen by unit 0 (negative with padding).
        hi: offset of the last pixel seen by unit 0, inclusive.
        length: the image's length along the axis.

    Returns:
        ``(starts, sizes)``, two int64 tensors ``(S,)``: crop ``s`` is ``[starts[s], starts[s] + sizes[s])``.

    Example:
        >>> starts, sizes = axis_crops(torch.tensor([0, 10, 50, 55]), 4, -21, 21, 224)
        >>> starts.tolist(), sizes.tolist()
        ([0, 16, 176, 176], [48, 48, 48, 48])
    """
    units = units.long()
    size = crop_extent(jump, lo, hi)
    if size >= length:
        return torch.zeros_like(units), torch.full_like(units, length)
    starts = (jump * units + (lo // jump) * jump).clamp_min(0)
    last = (length - size) // jump * jump
    over = starts + size > length
    return torch.where(over, last, starts), torch.where(over, length - last, size)


def crop_area_fraction(field: ReceptiveField, image_size: tuple[int, int]) -> float:
    """Area of an interior seed's crop over the image's area (1 for a global field).

    Example:
        >>> crop_area_fraction(ReceptiveField((4, 4), (-21, -21), (21, 21)), (96, 96))
        0.25
    """
    if field.is_global:
        return 1.0
    sides = [min(crop_extent(field.jump[a], field.lo[a], field.hi[a]), image_size[a]) for a in range(2)]
    return sides[0] * sides[1] / (image_size[0] * image_size[1])


def choose_crop(
    crop: bool | None, field: ReceptiveField | None, problem: str, image_size: tuple[int, int], has_extra_args: bool
) -> ReceptiveField | None:
    """The field to crop with, or ``None`` for whole-image backward passes.

    Args:
        crop: ``None``: crop when the field is local and an interior crop is smaller than :data:`CROP_FRACTION`
            of the image, and no ``additional_forward_args`` are given; ``True``: crop whenever the field
            allows; ``False``: never.
        field: the layer's field, ``None`` where it cannot be derived (``problem`` says why).
        problem: why there is no field.
        image_size: ``(H, W)``.
        has_extra_args: the model gets ``additional_forward_args``.

    Raises:
        TypeError: ``crop`` is not ``None`` or a bool.
        ValueError: ``crop=True`` and the field is global or cannot be derived.

    Example:
        >>> field = ReceptiveField((4, 4), (-21, -21), (21, 21))
        >>> choose_crop(None, field, "", (224, 224), False) is field, choose_crop(None, field, "", (56, 56), False)
        (True, None)
    """
    if crop is not None and not isinstance(crop, bool):
        raise TypeError(f"crop={crop!r} must be None (automatic), True or False")
    if crop is False:
        return None
    why = problem if field is None else "the layer's receptive field is the whole image" if field.is_global else ""
    if why:
        if crop:
            raise ValueError(f"crop=True is not possible: {why}; pass crop=None or crop=False")
        return None
    if crop is None and (has_extra_args or crop_area_fraction(field, image_size) >= CROP_FRACTION):  # type: ignore[arg-type]
        return None
    return field


def take_rows(arg: Any, rows: Tensor, count: int) -> Any:
    """The rows ``rows`` of a per-example argument (a tensor with ``count`` rows); anything else as is.

    Example:
        >>> take_rows(torch.tensor([10, 20, 30]), torch.tensor([2, 2, 0]), 3).tolist(), take_rows(0.5, None, 3)
        ([30, 30, 10], 0.5)
    """
    if isinstance(arg, Tensor) and arg.dim() > 0 and arg.shape[0] == count:
        return arg[rows.to(arg.device)]
    return arg


def crop_runner(
    model: nn.Module,
    layer_name: str,
    layer: nn.Module,
    images: Tensor,
    extra_args: tuple[Any, ...],
    field: ReceptiveField,
) -> Callable[..., Any]:
    """What runs crops up to the layer: ``model`` itself if its forward accepts a crop, else its children.

    The first image's interior crop is run through the model (without gradients, stopping at the layer). A
    model whose forward checks the input size (ZFNet) rejects it; if the model's children, run on the first
    image, form a plain chain up to the one holding the layer (each taking the previous one's output, the
    first the image itself), crops are run through that chain instead.

    Args:
        model: the network.
        layer_name: the layer's dotted name.
        layer: the layer.
        images: ``(N, C, H, W)``.
        extra_args: extra forward arguments (tensors with ``N`` rows are taken at the first image).
        field: the layer's (local) receptive field.

    Raises:
        CropError: the forward rejects the crop and the children do not form a plain chain.

    Example:
        >>> from zf_attr.attr.receptive_field import receptive_field
        >>> model = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.ReLU())
        >>> crop_runner(model, "0", model[0], torch.randn(1, 1, 8, 8), (), receptive_field(model, "0")) is model
        True
    """
    image = images[:1]
    first = tuple(take_rows(arg, torch.zeros(1, dtype=torch.long), len(images)) for arg in extra_args)
    sides = [min(crop_extent(field.jump[a], field.lo[a], field.hi[a]), images.shape[2 + a]) for a in range(2)]
    try:
        with torch.no_grad():
            capture_layer_output(model, layer, (image[..., : sides[0], : sides[1]], *first), stop=True)
        return model
    except Exception as error:  # any rejection of the crop: try the chain, else report it
        rejection = f"{type(error).__name__}: {error}"
    try:
        chain = [] if extra_args else children_chain(model, layer_name, (image, *first))
    except Exception:  # not a chain, or the model fails: no chain
        chain = []
    if not chain:
        raise CropError(
            f"the model's forward rejects a {sides[0]}×{sides[1]} crop ({rejection}) and its children do not form "
            "a plain chain up to the layer"
        )
    calls = [child for _, child, _ in chain]

    def run(x: Tensor) -> Tensor:
        for child in calls:
            x = child(x)
        return x

    return run


def project_cropped(
    forward: Callable[[Tensor, tuple[Any, ...]], tuple[Tensor, Tensor]],
    images: Tensor,
    extra_args: tuple[Any, ...],
    seeds: Tensor,
    field: ReceptiveField,
    reference: Tensor,
    chunk_size: int,
) -> Tensor:
    """Projections ``(S, C, H, W)`` of seeds, each computed on its crop and pasted into zeros.

    Crops of one size are projected together, up to ``chunk_size`` at a time: one forward pass of the stacked
    crops up to the layer, each crop seeded with its own activation at its seed, one backward pass of the
    summed seed (the examples of a batch are independent, so it gives every crop's projection).

    Args:
        forward: ``forward(crops, extra_args) -> (activation, leaf)``: the layer's output for a batch of crops,
            its graph recorded under the deconvnet rule, and the input leaf (``crops`` as a tensor needing grad).
        images: ``(N, C, H, W)``.
        extra_args: extra forward arguments; tensors with ``N`` rows are gathered per crop.
        seeds: int64 ``(S, 3)`` rows ``(image, channel, row * w + col)`` of units of the layer's ``h × w`` map.
        field: the layer's (local) receptive field.
        reference: the full forward's layer output ``(N, c, h, w)``: each crop's value at its seed is checked
            against it.
        chunk_size: crops per forward/backward pass.

    Raises:
        CropError: a crop's activation at its seed differs from the full forward's (the model is not
            translation-equivariant as its receptive field says).

    Example:
        >>> from zf_attr.attr.receptive_field import receptive_field
        >>> model = torch.nn.Sequential(torch.nn.Conv2d(1, 1, 3, padding=1), torch.nn.ReLU()).double()
        >>> images = torch.rand(1, 1, 16, 16, dtype=torch.float64)
        >>> def forward(x, extra):
        ...     leaf = x.detach().requires_grad_(True)
        ...     return model(leaf), leaf
        >>> seeds = torch.tensor([[0, 0, 7 * 16 + 2]])
        >>> out = project_cropped(forward, images, (), seeds, receptive_field(model, "1"), model(images), 8)
        >>> leaf = images.clone().requires_grad_(True)
        >>> full = torch.autograd.grad(model(leaf)[0, 0, 7, 2] ** 2 / 2, leaf)[0]   # seeded with its value
        >>> out.shape, bool(torch.allclose(out[0], full[0]))
        (torch.Size([1, 1, 16, 16]), True)
    """
    count, _, height, width = images.shape
    reference = reference.detach()
    seeds = seeds.cpu().long()
    seeds = torch.stack(
        [seeds[:, 0], seeds[:, 1], seeds[:, 2] // reference.shape[-1], seeds[:, 2] % reference.shape[-1]], 1
    )
    top, tall = axis_crops(seeds[:, 2], field.jump[0], field.lo[0], field.hi[0], height)
    left, wide = axis_crops(seeds[:, 3], field.jump[1], field.lo[1], field.hi[1], width)
    out = images.new_zeros(len(seeds), *images.shape[1:])
    scale = float(reference.abs().max()) if reference.numel() else 0.0
    tolerance = torch.finfo(reference.dtype).eps ** 0.5 * max(scale, torch.finfo(reference.dtype).tiny)
    for size in torch.stack([tall, wide], dim=1).unique(dim=0).tolist():
        members = ((tall == size[0]) & (wide == size[1])).nonzero().squeeze(1)
        for chunk in members.split(chunk_size):
            image, channel, row, col = seeds[chunk].unbind(1)
            y0, x0 = top[chunk], left[chunk]
            boxes = list(zip(image.tolist(), y0.tolist(), x0.tolist(), strict=True))
            crops = torch.stack([images[n, :, y : y + size[0], x : x + size[1]] for n, y, x in boxes])
            activation, leaf = forward(crops, tuple(take_rows(arg, image, count) for arg in extra_args))
            where = (torch.arange(len(chunk)), channel, row - y0 // field.jump[0], col - x0 // field.jump[1])
            where = tuple(index.to(activation.device) for index in where)
            values = activation.detach()[where]
            expected = reference[tuple(index.to(reference.device) for index in seeds[chunk].unbind(1))]
            worst = float((values - expected.to(values.device)).abs().max())
            if not worst <= tolerance:
                raise CropError(
                    f"a crop's activation at its seed differs from the full forward pass's by {worst:.3g} (more "
                    f"than {tolerance:.3g}): the layer's units are not determined by their receptive field alone"
                )
            seed = torch.zeros_like(activation)
            seed[where] = values
            (grad,) = torch.autograd.grad(activation, leaf, seed)
            for k, (_, y, x) in enumerate(boxes):
                out[int(chunk[k]), :, y : y + size[0], x : x + size[1]] = grad[k]
    return out
