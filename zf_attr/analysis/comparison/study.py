"""Compare attribution methods on one model and one batch: maps, per-image metrics, tables and a figure.

:func:`compare` runs any mix of zf_attr methods, Captum attribution objects (layer methods such as
``LayerGradCam`` are upsampled to the image), callables and the centre-prior and random-map baselines, then scores
every method with the metrics of :mod:`zf_attr.metrics`. The result holds the maps, the per-image values and a
:class:`~zf_attr.analysis.tables.SummaryTable` (CSV, Markdown, LaTeX); ``result.save_figure`` draws the grid.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from zf_attr._captum_compat import validate_model
from zf_attr.analysis.comparison.methods import MethodSpec, resolve_methods
from zf_attr.analysis.tables import SummaryTable
from zf_attr.metrics import (
    RandomizationResult,
    class_sensitivity,
    deletion_auc,
    insertion_auc,
    pointing_game,
    randomization_test,
)
from zf_attr.metrics._common import class_indices

__all__ = ["ALL_METRICS", "Comparison", "compare"]

#: Every metric :func:`compare` knows, in table order; ``"randomization"`` is slow and only run when asked for.
ALL_METRICS: tuple[str, ...] = ("pointing", "deletion", "insertion", "class_sensitivity", "randomization")


@dataclass(frozen=True)
class Comparison:
    """The outcome of :func:`compare` (everything on the CPU).

    Attributes:
        methods: the method names, in column order.
        images: ``(N, C, H, W)`` the images as passed.
        targets: ``(N,)`` the explained classes.
        maps: method name -> its maps at the images' resolution, ``(N, H, W)`` or ``(N, C, H, W)``.
        values: metric -> method -> ``(N,)`` float64 per-image values (NaN where a method has none).
        metrics: the metrics computed, in table order.
        masks: ``(N, H, W)`` bool object masks, if given.
        boxes: ``(N, 4)`` boxes, if given.
        other_targets: ``(N,)`` the classes of the class-sensitivity check, if run.
        randomization: method name -> the full per-layer :class:`~zf_attr.metrics.RandomizationResult`.
        notes: method name -> why a value is missing.
        tolerance: the pointing game's tolerance in pixels (the figure's hit/miss markers use it too).

    Example:
        >>> import torch
        >>> model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU(),
        ...                             torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten()).eval()
        >>> result = compare(model, torch.rand(2, 3, 16, 16), [0, 1], ["gradient"], metrics=["deletion"], steps=4)
        >>> result.methods, result.values["deletion"]["gradient"].shape
        (['gradient', 'centre', 'random'], torch.Size([2]))
        >>> result.summary().count["centre"]
        {'deletion': 2}
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as folder:
        ...     sorted(path.suffix for path in result.save_tables(folder).values())
        ['.csv', '.md', '.tex']
    """

    methods: list[str]
    images: Tensor
    targets: Tensor
    maps: dict[str, Tensor]
    values: dict[str, dict[str, Tensor]]
    metrics: tuple[str, ...]
    masks: Tensor | None = None
    boxes: Tensor | None = None
    other_targets: Tensor | None = None
    randomization: dict[str, RandomizationResult] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)
    tolerance: float = 15

    #: Draws the result: ``draw(result, path, **options)``, attached by the study's package from its figure
    #: module (which imports this type for typing only; this module never imports the figure: no import circle).
    draw: ClassVar[Callable[..., Path]]

    def summary(self) -> SummaryTable:
        """Mean ± sample std per method and metric (NaNs left out), ready for ``to_markdown`` / ``save``."""
        values = {m: {k: v.tolist() for k, v in self.values[m].items()} for m in self.metrics}
        return SummaryTable.from_values(values, self.metrics)

    def randomization_summary(self) -> SummaryTable:
        """Spearman correlation with the original maps after each cascade step: one column per randomised layer.

        Column ``"fc8"`` is after randomising the output layer only, the next after it and the layer below, and
        so on (requires ``"randomization"`` in the metrics; methods without the test are left out).

        Example:
            >>> import torch
            >>> model = torch.nn.Sequential(torch.nn.Conv2d(3, 2, 3), torch.nn.ReLU(), torch.nn.Flatten()).eval()
            >>> result = compare(model, torch.rand(1, 3, 6, 6), 0, ["gradient"], metrics=["randomization"])
            >>> result.randomization_summary().metrics
            ('0',)
        """
        if not self.randomization:
            raise ValueError("no randomisation test was run: pass metrics=[..., 'randomization'] to compare")
        layers = next(iter(self.randomization.values())).layers
        values = {
            layer: {name: result.spearman[i].tolist() for name, result in self.randomization.items()}
            for i, layer in enumerate(layers)
        }
        return SummaryTable.from_values(values, tuple(layers))

    def save_tables(self, directory: str | Path, stem: str = "comparison", decimals: int = 3) -> dict[str, Path]:
        """Write the summary as ``<stem>.csv``, ``.md`` and ``.tex`` into ``directory``; return the paths."""
        return self.summary().save(directory, stem, decimals)

    def save_figure(self, path: str | Path, **kwargs: Any) -> Path:
        """Draw the images × methods grid; see :func:`zf_attr.analysis.comparison.figure.save_comparison_figure`."""
        return type(self).draw(self, path, **kwargs)


def compare(
    model: nn.Module,
    images: Tensor,
    targets: Any,
    methods: Any,
    *,
    masks: Tensor | None = None,
    boxes: Tensor | None = None,
    metrics: Sequence[str] | None = None,
    baselines: Sequence[str] = ("centre", "random"),
    other_targets: Any = None,
    seed: int = 0,
    tolerance: float = 15,
    steps: int = 32,
    perturbation_baseline: Any = 0.0,
    batch_size: int = 64,
    randomization_layers: Sequence[str] | None = None,
    show_progress: bool = False,
) -> Comparison:
    """Compute every method's maps for ``images`` and score them; see ``docs/comparison.md``.

    The model is used as given (put it in ``eval()`` mode yourself) and checked bitwise unchanged afterwards,
    with its training flags and ``requires_grad`` flags. Everything runs on the images' device.

    Args:
        model: the classifier, ``(N, C, H, W) -> (N, classes)``.
        images: ``(N, C, H, W)`` floating-point images, preprocessed as the model expects.
        targets: the class explained per image: an int, a list of N ints or an integer tensor.
        methods: a dict column name -> method, or a list of method names. A method is a name from
            :data:`~zf_attr.analysis.comparison.methods.KNOWN_METHODS`, a zf_attr or Captum attribution object
            (anything with ``attribute(inputs, target=...)``; Captum layer attributions such as ``LayerGradCam``
            are upsampled bilinearly with ``LayerAttribution.interpolate``), a callable
            ``(images, targets) -> maps``, or a pair ``(method, {attribute kwargs})``.
        masks: ``(N, H, W)`` bool object masks, for the pointing game and the figure's outlines.
        boxes: ``(N, 4)`` boxes ``(x0, y0, x1, y1)`` for the pointing game (instead of masks).
        metrics: any of :data:`ALL_METRICS`. Default: all but ``"randomization"``, and ``"pointing"`` only
            when masks or boxes are given.
        baselines: reference methods appended as columns: ``"centre"`` (a centred Gaussian, sigma a quarter of
            the side) and ``"random"`` (uniform noise drawn from ``seed``).
        other_targets: the classes compared with ``targets`` in the class-sensitivity check; default the
            least likely class of each image.
        seed: the seed of the random baseline, the perturbation tie-breaking and the randomisation test.
        tolerance: the pointing game's tolerance in pixels.
        steps: the number of steps of the deletion and insertion curves.
        perturbation_baseline: what deleted pixels become (and insertion starts from): a number, a tensor or a
            callable, see :func:`~zf_attr.metrics.deletion_auc`.
        batch_size: perturbed images per forward pass.
        randomization_layers: the layers of the randomisation test (default: every parameterised layer).
        show_progress: show a tqdm bar (on stderr) counting each method's maps, then its scores.

    Returns:
        A :class:`Comparison`; ``values["randomization"]`` is each image's Spearman correlation after every
        listed layer has been randomised (the full curves are in ``randomization``). A plain callable, or an
        object whose ``forward_func`` is not the model (or its bound method), cannot be rebuilt on a randomised
        copy of the model: its value is NaN, with a note.

    Raises:
        TypeError: ``model`` not an ``nn.Module``, images not a float tensor, a method of an unusable type.
        ValueError: an unknown method or metric name, maps of the wrong size, the pointing game requested
            without masks or boxes, images not ``(N, C, H, W)``.
        RuntimeError: the model changed during the comparison (a method modified it).

    Example:
        >>> import torch
        >>> from zf_attr.analysis import compare
        >>> model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        ...                             torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten()).eval()
        >>> masks = torch.zeros(2, 16, 16, dtype=torch.bool)
        >>> masks[:, 4:12, 4:12] = True
        >>> result = compare(model, torch.rand(2, 3, 16, 16), [0, 1], ["deconvnet"], masks=masks, steps=4)
        >>> result.metrics, result.values["pointing"]["centre"].tolist()
        (('pointing', 'deletion', 'insertion', 'class_sensitivity'), [1.0, 1.0])
    """
    validate_model(model)
    if not isinstance(images, Tensor) or not images.is_floating_point():
        raise TypeError("images must be a floating-point torch.Tensor of shape (N, C, H, W)")
    if images.dim() != 4 or images.shape[0] == 0:
        raise ValueError(f"images has shape {tuple(images.shape)}; it must be (N, C, H, W) with N >= 1")
    images = images.detach()
    num = images.shape[0]
    target_tensor = class_indices(targets, num, images.device, "targets")
    metrics = _metrics(metrics, masks is not None or boxes is not None)
    before = _model_state(model)
    specs = resolve_methods(model, images, methods, baselines, seed)
    names = [spec.name for spec in specs]
    if len(set(names)) != len(names):
        raise ValueError(f"method names must be unique, got {names}")
    values: dict[str, dict[str, Tensor]] = {metric: {} for metric in metrics}
    randomised: dict[str, RandomizationResult] = {}
    notes: dict[str, str] = {}
    perturbation = {"steps": steps, "baseline": perturbation_baseline, "batch_size": batch_size, "seed": seed}
    progress = tqdm(total=2 * len(specs), desc="compare", unit="step", disable=not show_progress, leave=False)
    try:
        maps = {}
        for spec in specs:
            progress.set_postfix_str(f"maps: {spec.name}")
            maps[spec.name] = spec.maps(images, target_tensor)
            progress.update()
        other = _other_targets(model, images, other_targets) if "class_sensitivity" in metrics else None
        for spec in specs:
            progress.set_postfix_str(f"scores: {spec.name}")
            found = maps[spec.name]
            if "pointing" in metrics:
                hits = pointing_game(found, masks=_on(masks, images), boxes=_on(boxes, images), tolerance=tolerance)
                values["pointing"][spec.name] = hits.hits.double()
            if "deletion" in metrics:
                values["deletion"][spec.name] = deletion_auc(model, images, found, target_tensor, **perturbation).auc
            if "insertion" in metrics:
                values["insertion"][spec.name] = insertion_auc(model, images, found, target_tensor, **perturbation).auc
            if other is not None:
                values["class_sensitivity"][spec.name] = class_sensitivity(spec.maps, images, target_tensor, other)
            if "randomization" in metrics:
                result = _randomize(model, spec, images, target_tensor, randomization_layers, seed)
                if result is None:
                    notes[spec.name] = (
                        "cannot be rebuilt on a randomised copy of the model (a plain callable, or a forward function "
                        "that is not the model or its bound method): no randomisation test"
                    )
                    values["randomization"][spec.name] = torch.full((num,), float("nan"), dtype=torch.float64)
                else:
                    randomised[spec.name] = result
                    values["randomization"][spec.name] = result.spearman[-1]
            progress.update()
    finally:
        progress.close()
    _check_unchanged(model, before)
    return Comparison(
        methods=names,
        images=images.cpu(),
        targets=target_tensor.cpu(),
        maps={name: found.cpu() for name, found in maps.items()},
        values={metric: {name: v.cpu() for name, v in by_method.items()} for metric, by_method in values.items()},
        metrics=metrics,
        masks=None if masks is None else masks.cpu(),
        boxes=None if boxes is None else boxes.cpu(),
        other_targets=None if other is None else other.cpu(),
        randomization=randomised,
        notes=notes,
        tolerance=tolerance,
    )


def _metrics(metrics: Sequence[str] | None, localised: bool) -> tuple[str, ...]:
    if metrics is None:
        return tuple(m for m in ALL_METRICS[:-1] if localised or m != "pointing")
    metrics = (metrics,) if isinstance(metrics, str) else tuple(metrics)
    unknown = [m for m in metrics if m not in ALL_METRICS]
    if unknown:
        raise ValueError(f"metrics holds unknown {unknown}; choose from {list(ALL_METRICS)}")
    if "pointing" in metrics and not localised:
        raise ValueError(
            "the pointing game needs masks= ((N, H, W) bool) or boxes= ((N, 4)); pass one or drop 'pointing'"
        )
    return tuple(m for m in ALL_METRICS if m in metrics)


def _on(tensor: Tensor | None, images: Tensor) -> Tensor | None:
    return None if tensor is None else tensor.to(images.device)


def _other_targets(model: nn.Module, images: Tensor, other_targets: Any) -> Tensor:
    if other_targets is not None:
        return class_indices(other_targets, images.shape[0], images.device, "other_targets")
    with torch.no_grad():
        return model(images).argmin(1)


def _randomize(
    model: nn.Module, spec: MethodSpec, images: Tensor, targets: Tensor, layers: Sequence[str] | None, seed: int
) -> RandomizationResult | None:
    if spec.rebound(model, model) is None:
        return None

    def attribution_fn(copy: nn.Module, x: Tensor, t: Tensor) -> Tensor:
        rebound = spec.rebound(model, copy)
        assert rebound is not None
        return rebound.maps(x, t)

    return randomization_test(model, attribution_fn, images, targets, layers=layers, seed=seed, similarity="spearman")


def _model_state(model: nn.Module) -> tuple[dict[str, Tensor], list[bool], list[bool]]:
    state = {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}
    return state, [m.training for m in model.modules()], [p.requires_grad for p in model.parameters()]


def _check_unchanged(model: nn.Module, before: tuple[dict[str, Tensor], list[bool], list[bool]]) -> None:
    state, training, grads = _model_state(model)
    same = state.keys() == before[0].keys() and all(torch.equal(state[k], v) for k, v in before[0].items())
    if not same or training != before[1] or grads != before[2]:
        raise RuntimeError("the model changed during compare: one of the methods modified its weights or flags")
