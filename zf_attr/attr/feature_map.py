"""Zeiler & Fergus's projection of feature maps: many maps and locations from one forward pass."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from zf_attr._captum_compat import format_additional_forward_args, format_inputs, validate_model
from zf_attr._guard import caller_stacklevel, check_tensors, guarded
from zf_attr._intercept import intercept
from zf_attr.attr._batched import _backward, _MapSeeds, _project_rows
from zf_attr.attr._layers import capture_layer_output, check_channels, resolve_layer
from zf_attr.attr._rectified import LayerMap, layer_map
from zf_attr.attr._rule_attribution import validate_variant
from zf_attr.attr._seeds import check_range, seed_rows, strongest
from zf_attr.attr.cropped import CropError, choose_crop, crop_runner, project_cropped, take_rows
from zf_attr.attr.receptive_field import ReceptiveField, ReceptiveFieldError, receptive_field
from zf_attr.errors import UnhonouredLayerWarning, ZFAttrWarning
from zf_attr.switches import ForwardTrace

__all__ = ["MODES", "FeatureMapDeconvnet", "FeatureMapProjections"]

#: ``"max"``: each map's strongest activation; ``"topk"``: its ``k`` strongest, each projected separately;
#: ``"map"``: the whole map (all its activations at once).
MODES: tuple[str, ...] = ("max", "topk", "map")


@dataclass(frozen=True)
class FeatureMapProjections:
    """Result of :meth:`FeatureMapDeconvnet.attribute`, ``M = len(channels) * k`` projections per image.

    Projection ``m`` belongs to channel ``channels[m]``; for ``"topk"`` the ``k`` projections of a channel are
    consecutive, strongest first.

    Attributes:
        projections: ``(N, M, C, H, W)``, deconvnet projections in input space.
        activations: ``(N, M)``, the projected activation (``"map"``: the map's strongest activation).
        locations: ``(N, M, 2)`` ``(row, col)`` in the layer's map of that activation.
        channels: ``(M,)`` the channel of each projection.
        boxes: ``(N, M, 4)`` receptive-field box ``(x0, y0, x1, y1)`` of each location in input pixels
            (exclusive ends, clipped to the image); ``None`` for ``"map"`` (a whole map has no single box) and
            where the field cannot be derived from the model's graph (a :class:`~zf_attr.ZFAttrWarning` says why).
        layer: the layer's name.
        mode: ``"max"``, ``"topk"`` or ``"map"``.
        inactive: ``(N, M)`` True where the projected activation is ≤ 0: no feature responds there, so the
            projection is zero instead of a sign-inverted picture.
        rectifier: the rectifier the map was read after (``"relu"`` for ZFNet's ``convN``), ``None`` for the
            layer's raw output.
    """

    projections: Tensor
    activations: Tensor
    locations: Tensor
    channels: Tensor
    boxes: Tensor | None
    layer: str
    mode: str
    inactive: Tensor | None = None
    rectifier: str | None = None


class FeatureMapDeconvnet:
    """Project chosen feature maps of a layer to pixel space, as in Zeiler & Fergus (2014, §2.1 and Fig. 2).

    For each chosen channel, the strongest activation of its map (or its ``k`` strongest locations, or the
    whole map) is kept, every other activation of the layer set to zero, and the result passed down the
    deconvnet (switch unpooling, rectified signal, transposed filters) to the input; the seed is the kept
    activation itself. All projections come from **one** forward pass that stops after the layer; the backward
    passes are batched with :func:`torch.func.vmap` over ``torch.autograd.grad`` on CUDA (one backward pass of
    the recorded graph for a whole chunk of ``chunk_size`` seeds) and run one by one on a CPU (faster there).

    Where the layer's receptive field is small against the image (``"max"``/``"topk"`` and
    :meth:`project_seeds`, ``crop=None``), each seed is instead projected on a crop of its image that holds its
    field, aligned to the layer's stride, ``chunk_size`` crops of a size per forward and backward pass, and
    pasted into zeros: the same projection up to float rounding, because every unit of the seed's backward cone
    sees only pixels of the crop (:mod:`zf_attr.attr.cropped` gives the argument). ``last_cropped`` says whether
    the last call cropped.

    The map is the **rectified** one when the layer's output goes straight into a rectifier (ZFNet's ``convN`` →
    in-place ReLU, VGG's convolutions): a hook on the layer sees the output before that ReLU, but the paper's
    feature maps are rectified (``rectified=False`` reads the raw output). Either way a seed ≤ 0 is not a
    feature: its projection is zero and ``inactive`` flags it (:meth:`project_seeds`: ``last_inactive``).

    Each example is projected on its own; the model must treat examples independently (eval mode).

    Args:
        model: the network; never modified (hooks are removed after every call, also on errors).
        layer: the layer, by its name (``"layer3"``, ``"features.28"``) or as a submodule; it must return a
            feature map ``(N, C, h, w)``.
        variant: ``"gradient"`` (default): layers other than rectifiers pass their true Jacobian (as Captum);
            ``"strict"``: normalisation layers are skipped on the way down, as in the paper.
        rectified: read the map after the rectifier (ReLU, ReLU6, ``hardtanh(0, ·)``) the layer's output goes
            straight into, if any (default, the paper's maps); ``False``: the layer's raw output.

    Example:
        >>> import torch, torchvision
        >>> from zf_attr import FeatureMapDeconvnet
        >>> model = torchvision.models.resnet18().eval()
        >>> result = FeatureMapDeconvnet(model, "layer2").attribute(torch.randn(2, 3, 64, 64), [0, 5], mode="topk", k=3)
        >>> tuple(result.projections.shape), tuple(result.locations.shape), result.channels.tolist()
        ((2, 6, 3, 64, 64), (2, 6, 2), [0, 0, 0, 5, 5, 5])
        >>> tuple(result.boxes.shape)
        (2, 6, 4)
    """

    def __init__(
        self, model: nn.Module, layer: str | nn.Module, variant: str = "gradient", *, rectified: bool = True
    ) -> None:
        validate_model(model)
        validate_variant(variant)
        self.model = model
        self.layer_name, self.layer = resolve_layer(model, layer)
        self.variant = variant
        self._field: ReceptiveField | ReceptiveFieldError | None = None
        self.last_cropped: bool | None = None
        self.rectified = rectified
        self._map: LayerMap | None = None
        self.last_values: Tensor | None = None
        self.last_inactive: Tensor | None = None

    def layer_map(self, example_inputs: tuple[Any, ...]) -> LayerMap:
        """How the layer's map is read: after the rectifier that follows the layer, or raw (derived once, cached).

        Args:
            example_inputs: arguments of one forward pass (one example suffices).
        """
        if self._map is None:
            self._map = layer_map(self.model, self.layer_name, self.layer, example_inputs, rectified=self.rectified)
        return self._map

    def receptive_field(self, example_inputs: tuple[Any, ...] | None = None) -> ReceptiveField:
        """The layer's receptive field (computed once, then cached).

        Raises:
            ReceptiveFieldError: it cannot be derived from the model's graph.
        """
        if self._field is None:
            try:
                self._field = receptive_field(self.model, self.layer_name, example_inputs)
            except ReceptiveFieldError as error:
                self._field = error
        if isinstance(self._field, ReceptiveFieldError):
            raise self._field
        return self._field

    @guarded
    def attribute(
        self,
        inputs: Tensor,
        channels: int | Sequence[int] | Tensor | None = None,
        *,
        mode: str = "max",
        k: int = 1,
        additional_forward_args: Any = None,
        chunk_size: int = 32,
        vectorize: bool | None = None,
        crop: bool | None = None,
    ) -> FeatureMapProjections:
        """Project the chosen feature maps of every image.

        Args:
            inputs: images ``(N, C, H, W)``.
            channels: the maps to project: an int, a sequence of ints, or ``None`` for every map of the layer.
            mode: ``"max"`` (strongest activation), ``"topk"`` (the ``k`` strongest, each separately) or
                ``"map"`` (the whole map).
            k: locations per map for ``"topk"``; must be 1 otherwise.
            additional_forward_args: extra model arguments after the inputs (one value or a tuple).
            chunk_size: projections computed together in one batched backward pass (memory grows with it).
            vectorize: batch the whole-image backward passes with vmap (``True``) or run them one by one
                (``False``, same result); ``None``: vmap on CUDA, one by one elsewhere (on a 2-core CPU the loop
                was 1.3× faster: vmap's batched intermediates of a 224×224 image leave the caches).
            crop: project ``"max"``/``"topk"`` seeds on crops around their receptive fields (see the class
                docstring): ``None`` (default) where a crop is under half the image and no
                ``additional_forward_args`` are given, ``True`` whenever the field is local, ``False`` never.

        Returns:
            A :class:`FeatureMapProjections`.

        Raises:
            TypeError, ValueError: bad inputs, channels, mode or k; the message names the argument.
        """
        if mode not in MODES:
            raise ValueError(f"mode={mode!r} is not known; choose one of {list(MODES)}")
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"k={k!r} must be a positive int")
        if k != 1 and mode != "topk":
            raise ValueError(f"k={k} applies to mode='topk' only; mode={mode!r} takes k=1")
        if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
            raise ValueError(f"chunk_size={chunk_size!r} must be a positive int")
        images = _single_input(inputs, self.model)
        extra_args = format_additional_forward_args(additional_forward_args)
        # The field first, outside the interception (it may run the model once, see ``receptive_field``).
        field, field_problem = (None, "") if mode == "map" else self._field_or_problem((images.detach(), *extra_args))
        if mode == "map" and crop:
            raise ValueError("crop=True applies to modes 'max' and 'topk': a whole map has no single receptive field")
        size = tuple(images.shape[-2:])
        crop_field = choose_crop(False if mode == "map" else crop, field, field_problem, size, bool(extra_args))
        reading = self._reading(images, extra_args)
        activation, leaf, trace = self._forward(images, extra_args, record=crop_field is None)
        self.last_cropped = False
        with torch.enable_grad():
            chosen = check_channels(channels, activation.shape[1], self.layer_name)
            read = reading(activation.detach())
            values, flat = strongest(read, chosen, k)
            count = len(chosen) * k
            if mode == "map":
                maker = _MapSeeds(read, chosen)
                chunks = _backward(activation, leaf, maker, count, chunk_size, vectorize)
                projections = torch.cat([grad for _, _, grad in chunks]).transpose(0, 1)
            else:
                n = activation.shape[0]
                rows = torch.stack(
                    [
                        torch.arange(n, device=flat.device).repeat_interleave(count),
                        chosen.repeat_interleave(k).to(flat.device).repeat(n),
                        flat.reshape(-1),
                    ],
                    dim=1,
                )
                projections = self._project(
                    activation, leaf, images, extra_args, rows, crop_field, crop, chunk_size, vectorize
                )
                projections = projections.reshape(n, count, *projections.shape[1:])
        inactive = values <= 0  # not a feature: no projection (a raw negative seed would project sign-inverted)
        projections[inactive.to(projections.device)] = 0
        self._warn_unhonoured(trace)
        width = activation.shape[-1]
        locations = torch.stack([flat // width, flat % width], dim=-1)
        boxes = None
        if mode != "map":
            if field is None:
                warnings.warn(
                    f"no receptive-field boxes: {field_problem}", ZFAttrWarning, stacklevel=caller_stacklevel()
                )
            else:
                boxes = field.boxes(locations, tuple(images.shape[-2:]))
        return FeatureMapProjections(
            projections=projections,
            activations=values,
            locations=locations,
            channels=chosen.repeat_interleave(k),
            boxes=boxes,
            layer=self.layer_name,
            mode=mode,
            inactive=inactive,
            rectifier=reading.rectifier,
        )

    def _field_or_problem(self, example: tuple[Any, ...]) -> tuple[ReceptiveField | None, str]:
        try:
            return self.receptive_field(example), ""
        except ReceptiveFieldError as error:
            return None, str(error)

    def _reading(self, images: Tensor, extra_args: tuple[Any, ...]) -> LayerMap:
        first = torch.zeros(1, dtype=torch.long)
        return self.layer_map((images[:1].detach(), *(take_rows(arg, first, len(images)) for arg in extra_args)))

    @guarded
    def project_seeds(
        self,
        inputs: Tensor,
        seeds: Tensor,
        chunk_size: int = 32,
        *,
        additional_forward_args: Any = None,
        vectorize: bool | None = None,
        crop: bool | None = None,
    ) -> Tensor:
        """Project arbitrary activations of the layer, each seeded with its own value, to pixel space.

        Seed ``s`` keeps the activation at ``seeds[s]``, sets every other activation of the layer to zero and
        passes the result down the deconvnet: exactly what :meth:`attribute` with ``mode="max"`` does for that
        location. One forward pass (stopping after the layer) serves all seeds; it runs on the images the
        seeds refer to. The backward passes are batched: seeds are dealt into *slots* holding at most one seed
        per image, and ``chunk_size`` slots go down together (vmap), so the cost is that of
        ``max(seeds per image)`` backward passes of the images used.

        Args:
            inputs: images ``(N, C, H, W)``.
            seeds: integer tensor ``(S, 3)`` of rows ``(image_index, channel, flat_location)`` with
                ``flat_location = row * w + col`` in the layer's ``h × w`` map, or ``(S, 4)`` of rows
                ``(image_index, channel, row, col)``. Rows may repeat images or whole seeds, in any order.
            chunk_size: slots (each up to one seed per image) per batched backward pass; memory grows with it.
            additional_forward_args: extra model arguments after the inputs (one value or a tuple).
            vectorize: batch the whole-image backward passes with vmap (``True``) or run them one by one
                (``False``, same result); ``None``: vmap on CUDA, one by one elsewhere (on a 2-core CPU the loop
                was 1.3× faster: vmap's batched intermediates of a 224×224 image leave the caches).
            crop: project on crops around the seeds' receptive fields, as in :meth:`attribute`.

        Returns:
            Projections ``(S, C, H, W)``, in the order of ``seeds`` (``(0, C, H, W)`` for no seeds); zero for a
            seed whose (rectified, see the class) activation is ≤ 0. ``last_values`` holds the seeds'
            activations, ``last_inactive`` flags those ≤ 0.

        Raises:
            TypeError, ValueError: bad inputs or seeds (shape, dtype, an index out of range); the message
                names the argument.

        Example:
            >>> import torch, torchvision
            >>> from zf_attr import FeatureMapDeconvnet
            >>> model = torchvision.models.resnet18().eval()
            >>> projector = FeatureMapDeconvnet(model, "layer2")   # 128 maps of 8×8 for 64×64 images
            >>> seeds = torch.tensor([[0, 5, 27], [1, 5, 0], [0, 100, 63]])   # (image, channel, row * 8 + col)
            >>> projector.project_seeds(torch.randn(2, 3, 64, 64), seeds).shape
            torch.Size([3, 3, 64, 64])
        """
        if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
            raise ValueError(f"chunk_size={chunk_size!r} must be a positive int")
        images = _single_input(inputs, self.model)
        extra_args = format_additional_forward_args(additional_forward_args)
        count = len(images)
        rows = seed_rows(seeds, count)
        if not len(rows):
            self.last_values, self.last_inactive = images.new_zeros(0), torch.zeros(0, dtype=torch.bool)
            return images.new_zeros((0, *images.shape[1:]))
        used, rows[:, 0] = rows[:, 0].unique(return_inverse=True)
        if len(used) < count:  # examples are independent: only the images the seeds refer to
            images = images[used.to(images.device)]
            extra_args = tuple(take_rows(arg, used, count) for arg in extra_args)
        field, problem = (None, "") if crop is False else self._field_or_problem((images.detach(), *extra_args))
        crop_field = choose_crop(crop, field, problem, tuple(images.shape[-2:]), bool(extra_args))
        reading = self._reading(images, extra_args)
        activation, leaf, trace = self._forward(images, extra_args, record=crop_field is None)
        _, channels, height, width = activation.shape
        if rows.shape[1] == 4:
            size = f"the layer's map is {height}×{width}"
            check_range(rows, 2, height, "row", size, seeds)
            check_range(rows, 3, width, "column", size, seeds)
            rows = torch.stack([rows[:, 0], rows[:, 1], rows[:, 2] * width + rows[:, 3]], dim=1)
        check_range(rows, 1, channels, "channel", f"layer {self.layer_name!r} has {channels} channels", seeds)
        why = f"the layer's map is {height}×{width}, flat_location = row * {width} + col"
        check_range(rows, 2, height * width, "flat location", why, seeds)
        projections = self._project(activation, leaf, images, extra_args, rows, crop_field, crop, chunk_size, vectorize)
        device_rows = rows.to(activation.device)
        values = reading(activation.detach()).flatten(2)[device_rows[:, 0], device_rows[:, 1], device_rows[:, 2]]
        self.last_values, self.last_inactive = values, values <= 0
        projections[self.last_inactive.to(projections.device)] = 0  # not a feature: no projection
        self._warn_unhonoured(trace)
        return projections

    def _project(
        self, activation: Tensor, leaf: Tensor, images: Tensor, extra_args: tuple[Any, ...], rows: Tensor,
        field: ReceptiveField | None, crop: bool | None, chunk_size: int, vectorize: bool | None = None,
    ) -> Tensor:  # fmt: skip
        """Projections of seed rows ``(image, channel, flat)``: on crops where ``field`` is given, else whole."""
        self.last_cropped = False
        if field is not None:
            try:
                runner = crop_runner(self.model, self.layer_name, self.layer, images, extra_args, field)
                forward = lambda x, extra: self._forward(x, extra, runner)[:2]  # noqa: E731
                out = project_cropped(forward, images, extra_args, rows, field, activation.detach(), chunk_size)
                self.last_cropped = True
                return out
            except CropError as error:
                if crop:
                    raise ValueError(f"crop=True is not possible: {error}; pass crop=None or crop=False") from error
            activation, leaf, _ = self._forward(images, extra_args)  # crops not possible after all: whole images
        with torch.enable_grad():
            return _project_rows(activation, leaf, rows.to(activation.device), chunk_size, vectorize)

    def _forward(
        self, images: Tensor, extra_args: tuple[Any, ...], runner: Any = None, record: bool = True
    ) -> tuple[Tensor, Tensor, ForwardTrace]:
        """The layer's output (its graph recorded under the deconvnet rule unless not ``record``), input leaf, trace.

        ``runner`` runs the model up to the layer (default: the model; see :func:`~zf_attr.attr.cropped.crop_runner`).
        """
        leaf = images.detach().requires_grad_(record)
        interceptor = intercept(self.model, "deconvnet", skip_normalization=self.variant == "strict")
        with torch.set_grad_enabled(record):
            with interceptor as trace:
                model = self.model if runner is None else runner
                activation, _ = capture_layer_output(model, self.layer, (leaf, *extra_args), stop=True)
        if activation.dim() != 4:
            raise ValueError(
                f"layer {self.layer_name!r} returns shape {tuple(activation.shape)}; FeatureMapDeconvnet needs a "
                "feature map (N, C, h, w)"
            )
        return activation, leaf, trace

    def _warn_unhonoured(self, trace: ForwardTrace) -> None:
        # Only non-rectifying activations below the layer are a problem here: a layer below the first rectifier
        # or max-pool is projected by its transposed filters, which is the paper's projection for such a layer.
        report = trace.unhonoured_report(type(self).__name__, "deconvnet") if trace.other_activations else None
        if report is not None:
            warnings.warn(report, UnhonouredLayerWarning, stacklevel=caller_stacklevel())


def _single_input(inputs: Any, model: nn.Module) -> Tensor:
    if isinstance(inputs, tuple):
        raise TypeError("inputs must be one tensor of images (N, C, H, W); FeatureMapDeconvnet takes no tuples")
    _, (images,) = format_inputs(inputs, model)
    check_tensors(model, {"inputs": images})
    if images.dim() != 4:
        raise ValueError(f"inputs has shape {tuple(images.shape)}; FeatureMapDeconvnet needs images (N, C, H, W)")
    return images
