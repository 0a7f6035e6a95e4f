"""The top-k feature atlas (Zeiler & Fergus, Fig. 2): mined activations projected to pixels, with their patches.

:func:`project_top_k` takes a :class:`~zf_attr.analysis.TopKActivations` (from
:func:`~zf_attr.analysis.mine_top_k`), fetches each image it names once, projects every mined activation with
:meth:`~zf_attr.FeatureMapDeconvnet.project_seeds` (each seeded with its own value, the rest of the layer zero)
and crops the activation's receptive field from the projection and from the image. :func:`save_atlas` draws
them (:mod:`zf_attr.analysis.atlas.figure`).

Example:
    >>> import torch, torchvision
    >>> from zf_attr.analysis import mine_top_k, project_top_k
    >>> model = torchvision.models.resnet18().eval()
    >>> images = torch.randn(5, 3, 64, 64)
    >>> mined = mine_top_k(model, "layer1", images, k=2, channels=[0, 3], show_progress=False)
    >>> atlas = project_top_k(model, mined, images)
    >>> len(atlas.projections), len(atlas.projections[0]), tuple(atlas.boxes.shape), atlas.field.size
    (2, 2, (2, 2, 4), (43, 43))
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from zf_attr.analysis.atlas.topk import TopKActivations
from zf_attr.attr._layers import capture_layer_output
from zf_attr.attr.feature_map import FeatureMapDeconvnet
from zf_attr.attr.receptive_field import ReceptiveField, ReceptiveFieldError
from zf_attr.errors import ZFAttrWarning

__all__ = ["Atlas", "project_top_k"]


@dataclass(frozen=True, eq=False)
class Atlas:
    """Projections and image patches of the mined top-k activations of chosen channels of one layer.

    Row ``i`` belongs to ``channels[i]``, slot ``j`` to its ``j``-th strongest activation (the order of the
    :class:`~zf_attr.analysis.TopKActivations`). Empty slots (fewer than ``k`` images mined) hold ``None`` in the
    lists and ``-1`` in the tensors.

    Attributes:
        layer: the layer's name.
        channels: ``(C,)`` channels shown.
        values: ``(C, k)`` activation values.
        image_ids: ``(C, k)`` image ids in the data set.
        locations: ``(C, k, 2)`` ``(row, col)`` in the layer's map.
        boxes: ``(C, k, 4)`` receptive-field boxes ``(x0, y0, x1, y1)`` in image pixels (exclusive ends,
            clipped to the image; the whole image where the field is global or cannot be derived).
        field: the layer's :class:`~zf_attr.attr.receptive_field.ReceptiveField` (``None`` if unknown).
        projections: ``C`` lists of ``k`` deconvnet projections ``(3, h, w)`` cropped to their boxes.
        patches: ``C`` lists of ``k`` image patches ``(3, h, w)`` (the images as the data set returned them).

    Example:
        >>> import torch, torchvision
        >>> from zf_attr.analysis import mine_top_k, project_top_k
        >>> model = torchvision.models.vgg11().eval()
        >>> images = torch.randn(3, 3, 32, 32)
        >>> atlas = project_top_k(model, mine_top_k(model, "features.2", images, k=1, show_progress=False), images)
        >>> atlas.channels.shape, atlas.field.size          # features.2: conv 3×3 then max-pool 2×2
        (torch.Size([64]), (4, 4))
    """

    layer: str
    channels: Tensor
    values: Tensor
    image_ids: Tensor
    locations: Tensor
    boxes: Tensor
    field: ReceptiveField | None
    projections: list[list[Tensor | None]]
    patches: list[list[Tensor | None]]

    #: Draws the result: ``draw(result, path, **options)``, attached by the study's package from its figure
    #: module (which imports this type for typing only; this module never imports the figure: no import circle).
    draw: ClassVar[Callable[..., Any]]

    def save(self, path: Any, **kwargs: Any) -> Any:
        """Draw and save the atlas as a PNG; see :func:`~zf_attr.analysis.save_atlas` for the keyword arguments."""
        return type(self).draw(self, path, **kwargs)


def project_top_k(
    model: nn.Module,
    result: TopKActivations,
    dataset: Any,
    channels: int | Sequence[int] | None = None,
    *,
    variant: str = "gradient",
    images_per_pass: int = 8,
    chunk_size: int = 32,
    check_values: bool = True,
) -> Atlas:
    """Project each mined activation of ``result`` to pixel space and crop its receptive field.

    Args:
        model: the network that was mined (put in eval mode for the call and restored afterwards).
        result: the mined activations (their layer is projected).
        dataset: the mined data, indexable by image id (a ``Dataset``, a tensor, a list), or a callable
            ``id -> image``; items may be images ``(C, H, W)`` or ``(image, label)`` pairs.
        channels: channels of ``result`` to project (default: all it holds).
        variant: ``"gradient"`` or ``"strict"``, see :class:`~zf_attr.FeatureMapDeconvnet`.
        images_per_pass: images sharing one forward pass (memory grows with it).
        chunk_size: passed to :meth:`~zf_attr.FeatureMapDeconvnet.project_seeds`.
        check_values: recompute each activation and raise if it differs from the mined value (a different
            data set, order or transform than the one mined), beyond floating-point noise of batching.

    Returns:
        An :class:`Atlas`.

    Raises:
        TypeError: ``result`` is not a :class:`~zf_attr.analysis.TopKActivations` or ``dataset`` returns no image.
        ValueError: a channel that was not mined, the layer is not in ``model``, or (``check_values``) an image
            whose activation does not match the mined value.

    Example:
        >>> import torch, torchvision
        >>> from zf_attr.analysis import mine_top_k
        >>> model = torchvision.models.vgg11().eval()
        >>> images = torch.randn(4, 3, 32, 32)
        >>> mined = mine_top_k(model, "features.2", images, k=2, channels=[7], show_progress=False)
        >>> atlas = project_top_k(model, mined, images)
        >>> atlas.boxes[0, 0].tolist() == list(atlas.field.box(*atlas.locations[0, 0].tolist(), image_size=(32, 32)))
        True
    """
    if not isinstance(result, TopKActivations):
        raise TypeError(f"result must be a TopKActivations (from mine_top_k), got {type(result).__name__}")
    if isinstance(images_per_pass, bool) or not isinstance(images_per_pass, int) or images_per_pass < 1:
        raise ValueError(f"images_per_pass={images_per_pass!r} must be a positive int")
    # the map as it was mined: rectified (the paper's maps) or raw, see ``mine_top_k``
    projector = FeatureMapDeconvnet(model, result.layer, variant, rectified=result.rectifier is not None)
    rows = _rows(result, channels)
    slots = [(i, j) for i in rows for j in range(result.k) if int(result.image_ids[i, j]) >= 0]
    wanted = sorted({int(result.image_ids[i, j]) for i, j in slots})
    fetched = {image_id: _fetch(dataset, image_id) for image_id in wanted}
    projections: dict[tuple[int, int], Tensor] = {}
    boxes = torch.full((len(result.channels), result.k, 4), -1, dtype=torch.long)
    field = _field(projector, fetched)
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        for group in _groups(wanted, fetched, images_per_pass):
            inputs = torch.stack([fetched[image_id] for image_id in group])
            parameter = next(model.parameters(), None)
            if parameter is not None:
                inputs = inputs.to(parameter.device, parameter.dtype if inputs.is_floating_point() else None)
            position = {image_id: p for p, image_id in enumerate(group)}
            here = [(i, j) for i, j in slots if int(result.image_ids[i, j]) in position]
            seeds = torch.tensor(
                [
                    [position[int(result.image_ids[i, j])], int(result.channels[i]), *result.locations[i, j].tolist()]
                    for i, j in here
                ],
                dtype=torch.long,
            )
            if check_values:
                _check(model, projector, inputs, seeds, [result.values[i, j] for i, j in here], group)
            out = projector.project_seeds(inputs, seeds, chunk_size).detach().cpu()
            size = tuple(inputs.shape[-2:])
            for s, (i, j) in enumerate(here):
                projections[i, j] = out[s]
                row, col = result.locations[i, j].tolist()
                boxes[i, j] = torch.tensor(field.box(row, col, size) if field else (0, 0, size[1], size[0]))
    finally:
        for module, training in modes:
            module.train(training)
    crops: list[list[Tensor | None]] = []
    patches: list[list[Tensor | None]] = []
    for i in rows:
        crops.append([None] * result.k)
        patches.append([None] * result.k)
        for j in range(result.k):
            if (i, j) in projections:
                x0, y0, x1, y1 = boxes[i, j].tolist()
                crops[-1][j] = projections[i, j][:, y0:y1, x0:x1].clone()
                patches[-1][j] = fetched[int(result.image_ids[i, j])][:, y0:y1, x0:x1].detach().cpu().clone()
    index = torch.tensor(rows, dtype=torch.long)
    return Atlas(
        layer=result.layer,
        channels=result.channels[index],
        values=result.values[index],
        image_ids=result.image_ids[index],
        locations=result.locations[index],
        boxes=boxes[index],
        field=field,
        projections=crops,
        patches=patches,
    )


def _rows(result: TopKActivations, channels: Any) -> list[int]:
    if channels is None:
        return list(range(len(result.channels)))
    items = [channels] if isinstance(channels, int) else list(channels)
    for item in items:
        if isinstance(item, bool) or not isinstance(item, int):
            raise TypeError(f"channels must hold ints, got {item!r}")
    return [result.row(item) for item in items]


def _fetch(dataset: Any, image_id: int) -> Tensor:
    try:
        item = dataset(image_id) if callable(dataset) and not isinstance(dataset, (Tensor, nn.Module)) else None
        if item is None:
            item = dataset[image_id]
    except (IndexError, KeyError) as error:
        raise ValueError(
            f"image id {image_id} is not in dataset ({error}); pass the data set that was mined"
        ) from error
    if isinstance(item, (tuple, list)) and item:
        item = item[0]
    if not isinstance(item, Tensor) or item.dim() != 3:
        raise TypeError(
            f"dataset[{image_id}] gave {type(item).__name__}; expected an image (C, H, W) or an (image, label) pair"
        )
    return item


def _groups(wanted: list[int], fetched: dict[int, Tensor], size: int) -> list[list[int]]:
    """Image ids in groups of at most ``size`` sharing one image size."""
    by_shape: dict[tuple[int, ...], list[int]] = {}
    for image_id in wanted:
        by_shape.setdefault(tuple(fetched[image_id].shape), []).append(image_id)
    return [ids[start : start + size] for ids in by_shape.values() for start in range(0, len(ids), size)]


def _field(projector: FeatureMapDeconvnet, fetched: dict[int, Tensor]) -> ReceptiveField | None:
    example = next(iter(fetched.values()), None)
    try:
        field = projector.receptive_field(None if example is None else (example[None],))
    except ReceptiveFieldError as error:
        warnings.warn(f"atlas patches are whole images: {error}", ZFAttrWarning, stacklevel=3)
        return None
    return None if field.is_global else field


def _check(
    model: nn.Module,
    projector: FeatureMapDeconvnet,
    inputs: Tensor,
    seeds: Tensor,
    mined: list[Tensor],
    group: list[int],
) -> None:
    with torch.no_grad():
        activation, _ = capture_layer_output(model, projector.layer, (inputs,), stop=True)
    activation = projector.layer_map((inputs[:1],))(activation)
    width = activation.shape[-1]
    if seeds.numel() and (int(seeds[:, 2].max()) >= activation.shape[-2] or int(seeds[:, 3].max()) >= width):
        raise ValueError("a mined location lies outside the layer's map for these images; pass the data that was mined")
    found = activation[seeds[:, 0], seeds[:, 1], seeds[:, 2], seeds[:, 3]].detach().cpu().double()
    expected = torch.stack(mined).double()
    tolerance = 1e-4 * expected.abs().max().clamp_min(1.0)
    wrong = ((found - expected).abs() > tolerance).nonzero()
    if wrong.numel():
        s = int(wrong[0, 0])
        raise ValueError(
            f"image id {group[int(seeds[s, 0])]}: channel {int(seeds[s, 1])} at {tuple(seeds[s, 2:].tolist())} is "
            f"{float(found[s]):.6g}, the mined value {float(expected[s]):.6g}; dataset must return the images that "
            "were mined, by the same ids and with the same transforms (or pass check_values=False)"
        )
