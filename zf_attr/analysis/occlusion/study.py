"""The paper's four-panel occlusion study (Zeiler & Fergus 2014, Fig. 7) from one sweep of a grey square.

For every position of the occluder, one batched sweep records (b) the total activation of the feature map of
the chosen layer that responds most strongly to the unoccluded image, (d) the probability of the target class
and (e) the most probable class; (c) is that feature map's deconvnet projection on the unoccluded image. The
map is the rectified one when the layer's output goes straight into a rectifier (ZFNet's ``convN``), as the
paper's maps are; ``rectified=False`` reads the raw output.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from zf_attr._captum_compat import validate_model
from zf_attr._guard import check_tensors
from zf_attr._intercept import intercept
from zf_attr.attr._layers import capture_layer_output, default_feature_layer, resolve_layer
from zf_attr.attr._rectified import LayerMap, layer_map
from zf_attr.attr._rule_attribution import validate_variant
from zf_attr.occlusion import (
    WindowGrid,
    default_memory_budget,
    iter_occluded,
    measured_forward,
    release_freed_memory,
)
from zf_attr.occlusion.incremental.select import (
    count_macs,
    fit_engine,
    select_engine,
    validate_engine_options,
    windows_per_batch,
)

__all__ = ["OcclusionStudy", "occlusion_study", "project_feature_map"]


@dataclass(frozen=True)
class OcclusionStudy:
    """Everything one occlusion sweep measured; maps are indexed by occluder position ``(row, col)``.

    Attributes:
        image: the image as passed ``(C, H, W)``.
        target: the class whose probability panel (d) shows: the one given, else the predicted class.
        layer: name of the layer of panel (b).
        feature_map: channel of ``layer`` with the largest activation for the unoccluded image.
        window: side of the square occluder, in pixels.
        stride: step between occluder positions, in pixels.
        fill: value the occluded pixels take.
        row_starts: top pixel row of the occluder at each grid row (the last window may be cut off by the border).
        col_starts: left pixel column of the occluder at each grid column.
        map_activation: (b) total activation of ``feature_map`` per position, ``(rows, cols)``.
        projection: (c) deconvnet projection of ``feature_map`` on the unoccluded image, ``(C, H, W)``.
        target_probability: (d) probability of ``target`` per position.
        top_class: (e) most probable class per position.
        top_probability: probability of ``top_class`` per position.
        unoccluded: the same quantities for the unoccluded image.
        class_names: names of the classes, if given.
        target_given: whether ``target`` was given (``False``: it is the model's prediction for the image).
        rectifier: the rectifier the layer's map was read after (``"relu"`` for ZFNet's ``convN``), ``None`` for
            the raw output.
        inactive: the strongest map is ≤ 0 everywhere on the unoccluded image (no feature): panel (c) is zero.

    Example:
        >>> import torch, torchvision
        >>> model = torchvision.models.resnet18(weights=None, num_classes=4).eval()
        >>> study = occlusion_study(model, torch.randn(3, 32, 32), target=1, window=16, stride=16)
        >>> study.map_activation.shape, study.window_slices(1, 0)
        (torch.Size([2, 2]), (slice(16, 32, None), slice(0, 16, None)))
    """

    image: Tensor
    target: int
    layer: str
    feature_map: int
    window: int
    stride: int
    fill: float
    row_starts: tuple[int, ...]
    col_starts: tuple[int, ...]
    map_activation: Tensor
    projection: Tensor
    target_probability: Tensor
    top_class: Tensor
    top_probability: Tensor
    unoccluded: dict[str, float]
    class_names: tuple[str, ...] | None = None
    target_given: bool = True
    rectifier: str | None = None
    inactive: bool = False

    #: Draws the result: ``draw(result, path, **options)``, attached by the study's package from its figure
    #: module (which imports this type for typing only; this module never imports the figure: no import circle).
    draw: ClassVar[Callable[..., Path]]

    def window_slices(self, row: int, col: int) -> tuple[slice, slice]:
        """Pixel rows and columns the occluder covers at grid position ``(row, col)``."""
        height, width = self.image.shape[-2:]
        top, left = self.row_starts[row], self.col_starts[col]
        return slice(top, min(top + self.window, height)), slice(left, min(left + self.window, width))

    def occluded_image(self, row: int, col: int) -> Tensor:
        """The image with the occluder at grid position ``(row, col)``."""
        image = self.image.clone()
        image[(slice(None), *self.window_slices(row, col))] = self.fill
        return image

    def class_name(self, index: int) -> str:
        """Name of class ``index`` (its number when no names were given)."""
        return self.class_names[index] if self.class_names is not None else str(index)

    def save_figure(
        self, path: str | Path, *, mean: Sequence[float] | None = None, std: Sequence[float] | None = None
    ) -> Path:
        """Save the five-panel figure (image, b, c, d, e) as a PNG; see :mod:`zf_attr.analysis.occlusion.figure`."""
        return type(self).draw(self, path, mean=mean, std=std)


def occlusion_study(
    model: nn.Module,
    image: Tensor,
    target: int | None = None,
    *,
    layer: str | nn.Module | None = None,
    window: int = 16,
    stride: int = 8,
    fill: float = 0.0,
    variant: str = "gradient",
    memory_budget: int | None = None,
    class_names: Sequence[str] | None = None,
    show_progress: bool = False,
    engine: str = "auto",
    rectified: bool = True,
) -> OcclusionStudy:
    """Slide a square occluder over ``image`` and measure the four quantities of the paper's Fig. 7.

    Args:
        model: a classifier returning logits ``(N, classes)``; left untouched (no mode change, hooks removed).
        image: one image ``(C, H, W)`` (or ``(1, C, H, W)``), preprocessed as the model expects.
        target: the class whose probability panel (d) shows (the true class, in the paper); ``None``: the class
            the model predicts for the unoccluded image (the figure then says "predicted").
        layer: the layer of panels (b) and (c), by name or module; default: the last layer with a spatial
            output (the last convolutional block: ``"pool5"`` of ZFNet, ``"layer4"`` of a ResNet).
        window: side of the square occluder in pixels (all channels are occluded).
        stride: step between occluder positions in pixels.
        fill: value of the occluded pixels; 0 is the data set mean after mean subtraction (the paper's grey).
        variant: deconvnet variant of the projection (``"gradient"`` or ``"strict"``, see :class:`zf_attr.Deconvnet`).
        memory_budget: bytes one batched forward pass may use (default: 512 MiB on CPU, a quarter of the free
            memory on CUDA); occluder positions are batched under it.
        class_names: names of the classes, for the figure.
        show_progress: a progress bar counting occluder positions.
        engine: ``"auto"``, ``"incremental"`` or ``"batched"``, as for :class:`zf_attr.OcclusionSensitivity`: the
            incremental engine (``docs/fast-occlusion.md``) recomputes only what each occluder position changes.
        rectified: read the layer's map after the rectifier its output goes straight into, if any (ZFNet's
            ``convN`` → ReLU; the default, the paper's maps); ``False``: the raw output, negative values included.

    Returns:
        An :class:`OcclusionStudy`; ``study.save_figure(path)`` draws it.

    Example:
        >>> import torch
        >>> from zf_attr.models import zfnet
        >>> from zf_attr.models.shapes import ShapesDataset
        >>> model = zfnet(weights="DEFAULT").eval()
        >>> image, label = ShapesDataset(1, seed=5)[0]
        >>> study = occlusion_study(model, image, label, window=24, stride=16)
        >>> study.layer, tuple(study.target_probability.shape)
        ('pool5', (7, 7))
    """
    validate_model(model)
    validate_variant(variant)
    validate_engine_options(engine, None, None, False)
    if not isinstance(image, Tensor) or not image.is_floating_point():
        raise TypeError("image must be a floating-point tensor (C, H, W), preprocessed as the model expects")
    if image.dim() == 4 and image.shape[0] == 1:
        image = image[0]
    if image.dim() != 3:
        raise ValueError(f"image has shape {tuple(image.shape)}; pass one image (C, H, W)")
    height, width = image.shape[-2:]
    if not 1 <= window <= min(height, width):
        raise ValueError(f"window={window} must be between 1 and the image side {min(height, width)}")
    if not 1 <= stride <= window:
        raise ValueError(f"stride={stride} must be between 1 and window={window} (larger strides skip pixels)")
    if target is not None and (isinstance(target, bool) or not isinstance(target, int)):
        raise TypeError(f"target={target!r} must be an int class index, or None for the predicted class")
    check_tensors(model, {"image": image})
    batch = image.detach()[None]
    layer_name, module = (
        resolve_layer(model, layer)
        if layer is not None
        else resolve_layer(model, default_feature_layer(model, (batch,)))
    )
    reading = layer_map(model, layer_name, module, (batch,), rectified=rectified)
    with torch.no_grad(), count_macs() as macs:
        (activation, logits), bytes_per_copy, bytes_per_pass = measured_forward(
            lambda: capture_layer_output(model, module, (batch,), transform=lambda out: out.detach().clone()), (batch,)
        )
    if not isinstance(logits, Tensor) or logits.dim() != 2:
        raise ValueError("model must return logits shaped (N, classes); call model.eval() for auxiliary outputs")
    target_given = target is not None
    if target is None:
        target = int(logits[0].argmax())
    if isinstance(target, bool) or not isinstance(target, int) or not 0 <= target < logits.shape[1]:
        raise ValueError(f"target={target} is out of range for {logits.shape[1]} classes")
    if activation.dim() != 4:
        raise ValueError(
            f"layer {layer_name!r} outputs shape {tuple(activation.shape)}; choose a conv layer (N, C, H, W)"
        )
    activation = reading(activation)
    feature_map = int(activation[0].flatten(1).amax(dim=1).argmax())
    probabilities = logits.softmax(dim=1)[0]

    grid = WindowGrid(
        shape=tuple(batch.shape[1:]), window=(batch.shape[1], window, window), strides=(1, stride, stride)
    )
    budget = memory_budget if memory_budget is not None else default_memory_budget(batch.device)
    fill_value = torch.tensor(fill, dtype=batch.dtype, device=batch.device)
    state = _EngineChoice(engine)
    incremental = select_engine(
        state, engine, model, (batch,), (), logits, macs[0], keep_modules=(layer_name,), memory_budget=memory_budget
    )
    if incremental is not None:
        engine_bytes = incremental.bytes_per_copy(grid.slices(grid.central_window), fill_value)
        incremental, budget = fit_engine(state, incremental, memory_budget, budget, engine_bytes)
        if incremental is None:
            release_freed_memory(batch.device)  # the dropped cache, before the batches
        else:
            bytes_per_copy = engine_bytes
    copies, _ = windows_per_batch(
        budget, memory_budget, bytes_per_copy, bytes_per_pass, grid.num_windows, incremental is not None
    )
    totals, target_p, top_p = (torch.empty(grid.num_windows, device=batch.device) for _ in range(3))
    top_class = torch.empty(grid.num_windows, dtype=torch.long, device=batch.device)
    progress = _progress(grid.num_windows, show_progress)
    with torch.no_grad():
        for ids, total, scores in _sweep(
            model, module, incremental, layer_name, batch, grid, fill_value, copies, feature_map, reading
        ):
            p = scores.softmax(dim=1)
            index = torch.tensor(ids, device=batch.device)
            totals[index], target_p[index] = total.to(totals.dtype), p[:, target].to(target_p.dtype)
            best_probability, best_class = p.max(dim=1)
            top_p[index], top_class[index] = best_probability.to(top_p.dtype), best_class
            if progress is not None:
                progress.update(len(ids))
    if progress is not None:
        progress.close()
    rows_cols = grid.grid_shape[1:]
    return OcclusionStudy(
        image=image.detach(),
        target=target,
        layer=layer_name,
        feature_map=feature_map,
        window=window,
        stride=stride,
        fill=fill,
        row_starts=grid.starts[1],
        col_starts=grid.starts[2],
        map_activation=totals.reshape(rows_cols).cpu(),
        projection=project_feature_map(model, batch, module, feature_map, variant, rectified=rectified)[0].cpu(),
        target_probability=target_p.reshape(rows_cols).cpu(),
        top_class=top_class.reshape(rows_cols).cpu(),
        top_probability=top_p.reshape(rows_cols).cpu(),
        unoccluded={
            "map_activation": float(activation[0, feature_map].sum()),
            "target_probability": float(probabilities[target]),
            "top_class": int(probabilities.argmax()),
            "top_probability": float(probabilities.max()),
        },
        class_names=tuple(class_names) if class_names is not None else None,
        target_given=target_given,
        rectifier=reading.rectifier,
        inactive=bool(activation[0, feature_map].max() <= 0),
    )


def project_feature_map(
    model: nn.Module,
    images: Tensor,
    layer: str | nn.Module,
    channel: int,
    variant: str = "gradient",
    *,
    rectified: bool = True,
) -> Tensor:
    """Deconvnet projection of one feature map: keep channel ``channel`` of ``layer``, zero the rest, go down.

    The forward pass stops after ``layer``; the map's own activations seed the projection (Zeiler & Fergus §2.1):
    the rectified map when the layer's output goes straight into a rectifier and ``rectified`` (the default),
    else the raw output. An image whose map is ≤ 0 everywhere (no feature) gets a zero projection.

    Example:
        >>> import torch
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.ReLU(inplace=True))
        >>> project_feature_map(net, torch.randn(2, 1, 8, 8), "0", 1).shape
        torch.Size([2, 1, 8, 8])
    """
    name, module = resolve_layer(model, layer)
    reading = layer_map(model, name, module, (images[:1].detach(),), rectified=rectified)
    leaf = images.detach().requires_grad_(True)
    with torch.enable_grad():
        with intercept(model, "deconvnet", skip_normalization=variant == "strict"):
            activation, _ = capture_layer_output(model, module, (leaf,), stop=True)
        seed = torch.zeros_like(activation)
        seed[:, channel] = reading(activation[:, channel].detach())
        (projection,) = torch.autograd.grad(activation, leaf, seed)
    inactive = seed[:, channel].flatten(1).amax(dim=1) <= 0  # not a feature: no projection
    projection[inactive] = 0
    return projection


class _EngineChoice:
    """Where :func:`~zf_attr.occlusion.incremental.select.select_engine` records its choice for the study."""

    def __init__(self, engine: str) -> None:
        self.engine = engine
        self.last_engine: str | None = None
        self.last_engine_note: str | None = None


def _sweep(
    model: nn.Module,
    module: nn.Module,
    engine: Any,
    layer_name: str,
    batch: Tensor,
    grid: WindowGrid,
    fill: Tensor,
    copies: int,
    feature_map: int,
    reading: LayerMap,
) -> Any:
    """Yield ``(window ids, feature-map totals, logits)`` per batch, incrementally or by plain forward passes."""
    if engine is None:
        for ids, (occluded,) in iter_occluded((batch,), [grid], (fill,), copies):
            total, scores = capture_layer_output(
                model, module, (occluded,), transform=lambda out: reading(out[:, feature_map]).sum(dim=(-2, -1))
            )
            yield ids, total, scores
        return
    node = engine.node_of_module(layer_name)
    for first in range(0, grid.num_windows, copies):
        ids = list(range(first, min(first + copies, grid.num_windows)))
        scores, (activation,) = engine.run([grid.slices(i) for i in ids], fill, extra=[node])
        yield ids, reading(activation[:, feature_map]).sum(dim=(-2, -1)), scores


def _progress(total: int, show: bool) -> Any:
    if not show:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="occlusion study", unit="window")
