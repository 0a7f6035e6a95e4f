"""Feature evolution during training (Zeiler & Fergus 2014, §4.2 and Fig. 4), as a training-loop callback.

At chosen epochs :class:`FeatureEvolution` finds, for each chosen feature map of a layer, its strongest
activation over a fixed set of probe images and projects it to pixel space with the deconvnet
(:meth:`zf_attr.FeatureMapDeconvnet.project_seeds`). The snapshots render as the paper's grid: one row per map,
one column per epoch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from zf_attr.attr._layers import capture_layer_output, resolve_layer
from zf_attr.attr._rectified import LayerMap
from zf_attr.attr.feature_map import FeatureMapDeconvnet
from zf_attr.attr.receptive_field import ReceptiveField, ReceptiveFieldError

__all__ = ["EvolutionSnapshot", "FeatureEvolution"]


@dataclass(frozen=True)
class EvolutionSnapshot:
    """What :class:`FeatureEvolution` recorded at one epoch, ``M`` maps, all on the CPU and detached.

    Attributes:
        epoch: the epoch the callback was called with.
        channels: ``(M,)`` the maps.
        values: ``(M,)`` each map's strongest activation over the probe images.
        images: ``(M,)`` index of the probe image holding it.
        locations: ``(M, 2)`` its ``(row, col)`` in the layer's map.
        projections: ``(M, C, H, W)`` its deconvnet projection (seeded with the activation itself).
        boxes: ``(M, 4)`` receptive-field box ``(x0, y0, x1, y1)`` in input pixels, or ``None`` where the field
            cannot be derived from the model's graph.
        inactive: ``(M,)`` True where the map is ≤ 0 on every probe image (no feature; its projection is zero).
        rectifier: the rectifier the maps were read after (``"relu"`` for ZFNet's ``convN``), ``None``: raw.
    """

    epoch: int
    channels: Tensor
    values: Tensor
    images: Tensor
    locations: Tensor
    projections: Tensor
    boxes: Tensor | None
    inactive: Tensor | None = None
    rectifier: str | None = None


class FeatureEvolution:
    """Record how the strongest activation of chosen feature maps, and its projection, evolve over training.

    Call it as ``callback(epoch, model)`` at the end of an epoch: from
    :func:`zf_attr.models.training.train` (``callbacks=[evolution]``) or any hand-written loop. At each chosen
    epoch it runs the probe images through the model once without gradients (in eval mode), takes each map's
    strongest activation over all of them, and projects every one of those with
    :class:`~zf_attr.FeatureMapDeconvnet` (one forward pass on the probe images involved, batched backward).
    The training mode of every submodule is restored afterwards; parameters, their gradients and
    ``requires_grad`` are never touched. Memory: one projection (one probe image's size) per map and epoch.

    Args:
        layer: the layer's name (``"conv5"``, ``"layer3"``).
        probe_images: the fixed probe set ``(N, C, H, W)``, moved to the model's device at each call.
        channels: the maps to follow (an int or a sequence of ints); ``None`` follows every map of the layer.
        epochs: the epochs to record; ``None`` records every call.
        variant: ``"gradient"`` or ``"strict"``, as for :class:`~zf_attr.FeatureMapDeconvnet`.
        batch_size: probe images per forward pass when searching the maxima (``None``: all at once).
        chunk_size: seeds per batched backward pass, see :meth:`~zf_attr.FeatureMapDeconvnet.project_seeds`.
        rectified: follow the map after the rectifier the layer's output goes straight into (ZFNet's ``convN`` →
            ReLU: the paper's rectified maps), if any; ``False``: the raw output.

    Example:
        >>> import torch
        >>> from zf_attr.analysis import FeatureEvolution
        >>> model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.MaxPool2d(2))
        >>> evolution = FeatureEvolution("2", torch.randn(5, 3, 16, 16), channels=[0, 3], epochs=(1, 3))
        >>> for epoch in (1, 2, 3):
        ...     evolution(epoch, model)       # after each epoch's training steps
        >>> evolution.epochs, tuple(evolution.values.shape), tuple(evolution.snapshots[0].projections.shape)
        ([1, 3], (2, 2), (2, 3, 16, 16))
    """

    #: Draws the grid: ``draw(evolution, channels, **options)`` returns a Figure; attached by the package from its
    #: figure module (which imports this type for typing only; this module never imports the figure).
    draw: ClassVar[Callable[..., Any]]

    def __init__(
        self,
        layer: str,
        probe_images: Tensor,
        channels: int | Sequence[int] | None = None,
        epochs: Iterable[int] | None = None,
        *,
        variant: str = "gradient",
        batch_size: int | None = None,
        chunk_size: int = 32,
        rectified: bool = True,
    ) -> None:
        if not isinstance(layer, str):
            raise TypeError(f"layer must be the layer's name (a str), got {type(layer).__name__}")
        if not isinstance(probe_images, Tensor) or probe_images.dim() != 4 or not len(probe_images):
            shape = tuple(probe_images.shape) if isinstance(probe_images, Tensor) else type(probe_images).__name__
            raise ValueError(f"probe_images must be a non-empty tensor of images (N, C, H, W), got {shape}")
        if isinstance(channels, int) and not isinstance(channels, bool):
            channels = [channels]
        if channels is not None:
            channels = list(channels)
            if not channels or any(isinstance(c, bool) or not isinstance(c, int) or c < 0 for c in channels):
                raise ValueError(f"channels must be None or non-negative ints, got {channels!r}")
        if epochs is not None:
            epochs = sorted(set(epochs))
            if not epochs or any(isinstance(e, bool) or not isinstance(e, int) for e in epochs):
                raise ValueError(f"epochs must be None or a non-empty collection of ints, got {epochs!r}")
        for name, value in (("batch_size", batch_size), ("chunk_size", chunk_size)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"{name}={value!r} must be a positive int")
        self.layer = layer
        self.probe_images = probe_images.detach()
        self.channels = channels
        self.chosen_epochs = epochs
        self.variant = variant
        self.batch_size = batch_size
        self.chunk_size = chunk_size
        self.rectified = rectified
        self.snapshots: list[EvolutionSnapshot] = []
        self._field: ReceptiveField | bool | None = False  # False: not derived yet; None: cannot be

    @property
    def epochs(self) -> list[int]:
        """The epochs recorded so far, in order."""
        return [snapshot.epoch for snapshot in self.snapshots]

    @property
    def receptive_field(self) -> ReceptiveField | None:
        """The layer's receptive field, once a snapshot has derived it (``None`` before, or where it cannot be)."""
        return self._field if isinstance(self._field, ReceptiveField) else None

    @property
    def values(self) -> Tensor:
        """``(epochs, maps)`` each map's strongest activation at each recorded epoch."""
        if not self.snapshots:
            raise ValueError("nothing recorded yet; call the callback at a chosen epoch first")
        return torch.stack([snapshot.values for snapshot in self.snapshots])

    def __call__(self, epoch: int, model: nn.Module) -> None:
        """Record ``model`` at the end of ``epoch`` if it is one of the chosen epochs."""
        if self.chosen_epochs is not None and epoch not in self.chosen_epochs:
            return
        modes = {module: module.training for module in model.modules()}
        try:
            model.eval()
            self.snapshots.append(self._snapshot(epoch, model))
        finally:
            for module, training in modes.items():
                module.training = training

    def _snapshot(self, epoch: int, model: nn.Module) -> EvolutionSnapshot:
        device = next((p.device for p in model.parameters()), self.probe_images.device)
        probes = self.probe_images.to(device)
        projector = FeatureMapDeconvnet(model, self.layer, self.variant, rectified=self.rectified)
        reading = projector.layer_map((probes[:1],))
        values, images, flat, width = self._strongest(model, probes, reading)
        channels = torch.arange(len(values)) if self.channels is None else torch.tensor(self.channels)
        if self.channels is not None and int(channels.max()) >= len(values):
            raise ValueError(f"channels holds {int(channels.max())}; layer {self.layer!r} has {len(values)} maps")
        values, images, flat = values[channels], images[channels], flat[channels]
        seeds = torch.stack([images, channels, flat], dim=1)
        projections = projector.project_seeds(probes, seeds, self.chunk_size)
        locations = torch.stack([flat // width, flat % width], dim=1)
        if self._field is False:
            try:
                self._field = projector.receptive_field((probes[:1],))
            except ReceptiveFieldError:
                self._field = None
        boxes = None if self._field is None else self._field.boxes(locations, tuple(probes.shape[-2:]))
        return EvolutionSnapshot(
            epoch=epoch,
            channels=channels,
            values=values.cpu(),
            images=images.cpu(),
            locations=locations.cpu(),
            projections=projections.detach().cpu(),
            boxes=boxes,
            inactive=(values <= 0).cpu(),
            rectifier=reading.rectifier,
        )

    def _strongest(self, model: nn.Module, probes: Tensor, reading: LayerMap) -> tuple[Tensor, Tensor, Tensor, int]:
        """Per map of the layer: the strongest activation over the probes, its image and flat location."""
        _, module = resolve_layer(model, self.layer)
        step = self.batch_size or len(probes)
        best = images = flat = None
        with torch.no_grad():
            for start in range(0, len(probes), step):
                output, _ = capture_layer_output(
                    model, module, (probes[start : start + step],), stop=True, transform=reading
                )
                if output.dim() != 4:
                    raise ValueError(f"layer {self.layer!r} returns shape {tuple(output.shape)}; need (N, C, h, w)")
                width = output.shape[-1]
                per_image, where = output.flatten(2).max(dim=2)  # (n, C)
                value, image = per_image.max(dim=0)  # (C,): the first image holding the maximum
                location = where.gather(0, image[None])[0]
                image = image + start
                if best is None:
                    best, images, flat = value, image, location
                else:
                    better = value > best
                    best = torch.where(better, value, best)
                    images, flat = torch.where(better, image, images), torch.where(better, location, flat)
        assert best is not None and images is not None and flat is not None
        return best.cpu(), images.cpu(), flat.cpu(), width

    def plot(
        self,
        channels: Sequence[int] | None = None,
        *,
        crop: bool = True,
        title: str | None = None,
        tile_inches: float = 1.1,
    ) -> Any:
        """Draw the maps × epochs grid; see :func:`zf_attr.analysis.evolution.figure.plot_evolution`."""
        return type(self).draw(self, channels, crop=crop, title=title, tile_inches=tile_inches)

    def save(self, path: str | Path, *, dpi: int = 100, **plot_options: Any) -> Path:
        """Draw the grid (see :meth:`plot` for the options) and write it to ``path`` (PNG by extension)."""
        path = Path(path)
        self.plot(**plot_options).savefig(path, dpi=dpi)
        return path
