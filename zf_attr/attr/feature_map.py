"""Zeiler & Fergus's projection of feature maps: many maps and locations from one forward pass."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from zf_attr._captum_compat import format_additional_forward_args, format_inputs, validate_model
from zf_attr._intercept import intercept
from zf_attr.attr._layers import capture_layer_output, resolve_layer
from zf_attr.attr._rule_attribution import validate_variant
from zf_attr.attr.receptive_field import ReceptiveField, ReceptiveFieldError, receptive_field
from zf_attr.errors import UnhonouredLayerWarning, ZFAttrWarning

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
    """

    projections: Tensor
    activations: Tensor
    locations: Tensor
    channels: Tensor
    boxes: Tensor | None
    layer: str
    mode: str


class FeatureMapDeconvnet:
    """Project chosen feature maps of a layer to pixel space, as in Zeiler & Fergus (2014, §2.1 and Fig. 2).

    For each chosen channel, the strongest activation of its map (or its ``k`` strongest locations, or the
    whole map) is kept, every other activation of the layer set to zero, and the result passed down the
    deconvnet (switch unpooling, rectified signal, transposed filters) to the input; the seed is the kept
    activation itself. All projections come from **one** forward pass that stops after the layer; the backward
    passes are batched with ``torch.autograd.grad(..., is_grads_batched=True)`` (vmap over the backward
    graph) in chunks of ``chunk_size`` seeds.

    Each example is projected on its own; the model must treat examples independently (eval mode).

    Args:
        model: the network; never modified (hooks are removed after every call, also on errors).
        layer: the layer, by its name (``"layer3"``, ``"features.28"``) or as a submodule; it must return a
            feature map ``(N, C, h, w)``.
        variant: ``"gradient"`` (default): layers other than rectifiers pass their true Jacobian (as Captum);
            ``"strict"``: normalisation layers are skipped on the way down, as in the paper.

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

    def __init__(self, model: nn.Module, layer: str | nn.Module, variant: str = "gradient") -> None:
        validate_model(model)
        validate_variant(variant)
        self.model = model
        self.layer_name, self.layer = resolve_layer(model, layer)
        self.variant = variant
        self._field: ReceptiveField | ReceptiveFieldError | None = None

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

    def attribute(
        self,
        inputs: Tensor,
        channels: int | Sequence[int] | Tensor | None = None,
        *,
        mode: str = "max",
        k: int = 1,
        additional_forward_args: Any = None,
        chunk_size: int = 32,
        vectorize: bool = True,
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
            vectorize: batch the backward passes with vmap; ``False`` runs them one by one (same result).

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
        leaf = images.detach().requires_grad_(True)
        interceptor = intercept(self.model, "deconvnet", skip_normalization=self.variant == "strict")
        with torch.enable_grad():
            with interceptor as trace:
                activation, _ = capture_layer_output(self.model, self.layer, (leaf, *extra_args), stop=True)
            if activation.dim() != 4:
                raise ValueError(
                    f"layer {self.layer_name!r} returns shape {tuple(activation.shape)}; FeatureMapDeconvnet needs a "
                    "feature map (N, C, h, w)"
                )
            chosen = _channels(channels, activation.shape[1], self.layer_name)
            values, flat = _strongest(activation.detach(), chosen, k)
            seeds = _SeedMaker(activation.detach(), chosen.repeat_interleave(k), flat, values, mode)
            projections = self._project(activation, leaf, seeds, chunk_size, vectorize)
        # Only non-rectifying activations below the layer are a problem here: a layer below the first rectifier
        # or max-pool is projected by its transposed filters, which is the paper's projection for such a layer.
        report = trace.unhonoured_report(type(self).__name__, "deconvnet") if trace.other_activations else None
        if report is not None:
            warnings.warn(report, UnhonouredLayerWarning, stacklevel=2)
        width = activation.shape[-1]
        locations = torch.stack([flat // width, flat % width], dim=-1)
        boxes = None
        if mode != "map":
            if field is None:
                warnings.warn(f"no receptive-field boxes: {field_problem}", ZFAttrWarning, stacklevel=2)
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
        )

    def _field_or_problem(self, example: tuple[Any, ...]) -> tuple[ReceptiveField | None, str]:
        try:
            return self.receptive_field(example), ""
        except ReceptiveFieldError as error:
            return None, str(error)

    @staticmethod
    def _project(activation: Tensor, leaf: Tensor, seeds: _SeedMaker, chunk_size: int, vectorize: bool) -> Tensor:
        """``(N, M, C, H, W)`` projections of the seeds, in chunks, from the one recorded graph."""
        count = seeds.count
        chunks = []
        for start in range(0, count, chunk_size):
            stop = min(start + chunk_size, count)
            seed = seeds.make(start, stop)
            keep = stop < count
            if vectorize:
                (grad,) = torch.autograd.grad(activation, leaf, seed, retain_graph=keep, is_grads_batched=True)
            else:
                grads = [
                    torch.autograd.grad(activation, leaf, seed[j], retain_graph=keep or j < len(seed) - 1)[0]
                    for j in range(len(seed))
                ]
                grad = torch.stack(grads)
            chunks.append(grad.detach())
        return torch.cat(chunks).transpose(0, 1)


def _single_input(inputs: Any, model: nn.Module) -> Tensor:
    if isinstance(inputs, tuple):
        raise TypeError("inputs must be one tensor of images (N, C, H, W); FeatureMapDeconvnet takes no tuples")
    _, (images,) = format_inputs(inputs, model)
    if images.dim() != 4:
        raise ValueError(f"inputs has shape {tuple(images.shape)}; FeatureMapDeconvnet needs images (N, C, H, W)")
    return images


def _channels(channels: Any, count: int, layer: str) -> Tensor:
    """Validated channel indices as a long tensor."""
    if channels is None:
        return torch.arange(count)
    if isinstance(channels, Tensor):
        if channels.is_floating_point() or channels.is_complex() or channels.dtype == torch.bool:
            raise TypeError(f"channels must hold integer indices, got dtype {channels.dtype}")
        items = channels.reshape(-1).tolist()
    elif isinstance(channels, int) and not isinstance(channels, bool):
        items = [channels]
    elif isinstance(channels, Sequence) and not isinstance(channels, str):
        items = list(channels)
    else:
        raise TypeError(f"channels must be an int, a sequence of ints or None, got {type(channels).__name__}")
    if not items:
        raise ValueError("channels is empty; pass at least one channel (or None for all)")
    for item in items:
        if isinstance(item, bool) or not isinstance(item, int):
            raise TypeError(f"channels must hold ints, got {item!r}")
        if not 0 <= item < count:
            raise ValueError(f"channels holds {item}, out of range for layer {layer!r} with {count} channels")
    return torch.tensor(items, dtype=torch.long)


def _strongest(activation: Tensor, chosen: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """Values and flat locations ``(N, len(chosen) * k)`` of each chosen map's ``k`` strongest activations."""
    maps = activation[:, chosen.to(activation.device)].flatten(2)  # (N, channels, h*w)
    if k > maps.shape[-1]:
        raise ValueError(f"k={k} exceeds the {maps.shape[-1]} locations of each map of the layer")
    values, flat = maps.topk(k, dim=-1)
    return values.flatten(1), flat.flatten(1)


class _SeedMaker:
    """Builds chunks of seeds ``(m, N, C, h, w)``: one kept activation (or map) per seed, zeros elsewhere."""

    def __init__(self, activation: Tensor, channels: Tensor, flat: Tensor, values: Tensor, mode: str) -> None:
        self.activation, self.channels, self.flat, self.values, self.mode = activation, channels, flat, values, mode
        self.count = len(channels)

    def make(self, start: int, stop: int) -> Tensor:
        n, c, h, w = self.activation.shape
        seed = self.activation.new_zeros(stop - start, n, c, h * w)
        for j, m in enumerate(range(start, stop)):
            channel = int(self.channels[m])
            if self.mode == "map":
                seed[j, :, channel] = self.activation[:, channel].flatten(1)
            else:
                seed[j, torch.arange(n, device=seed.device), channel, self.flat[:, m]] = self.values[:, m]
        return seed.reshape(stop - start, n, c, h, w)
