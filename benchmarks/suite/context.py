"""One run of the suite: its settings (quick or full, CPU or CUDA), the models and inputs in use, a planted fault.

Cases ask the context for models and inputs; it keeps those of one model at a time (the registry orders cases by
model), so a full run never holds VGG-16 and ConvNeXt at once. On CUDA it turns TF32 off (float32 cases compare
zf_attr with Captum at float32 accuracy; the bf16 cases say what lower precision costs).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from benchmarks.suite import models

__all__ = ["PLANT_VARIABLE", "Context", "Settings"]

#: Environment variable: cases whose name contains its value get a perturbed zf_attr output (tests the checks).
PLANT_VARIABLE = "ZF_BENCH_PLANT_MISMATCH"


@dataclass(frozen=True)
class Settings:
    """What a run measures; :meth:`for_run` picks them from the mode and the device.

    Attributes:
        size: input side of the torchvision models (a model's own ``size`` wins).
        batch: images per call in the gradient cases.
        warmup: untimed runs per call, the checked one included.
        repeats: timed runs per call; times are their medians.
        heavy_repeats: timed runs of the heavy cases (occlusion, projections, mining).
        heavy_warmup: untimed runs of the heavy cases, the checked one included.
        window: occlusion window side (all channels).
        stride: occlusion stride.
        captum_ppe: Captum ``perturbations_per_eval`` tried beside its default 1; the fastest is its best.
        projection_channels: maps projected per image (``None``: every map of the layer).
        projection_k: projections per map.
        captum_calls: Captum ``NeuronDeconvolution`` calls timed per projection case (the loop is estimated).
        mining_images: images mined.
        mining_batch: images per batch while mining.
        tolerance: largest relative error of float32 gradient-type cases.
        occlusion_tolerance: largest relative error of float32 occlusion and projections.
        bf16_tolerance: largest error of bfloat16 occlusion against float32, relative to the largest score.
    """

    size: int
    batch: int
    warmup: int
    repeats: int
    heavy_repeats: int
    heavy_warmup: int
    window: int
    stride: int
    captum_ppe: tuple[int, ...]
    projection_channels: int | None
    projection_k: int
    captum_calls: int
    mining_images: int
    mining_batch: int
    tolerance: float
    occlusion_tolerance: float
    bf16_tolerance: float

    @classmethod
    def for_run(cls, quick: bool, device: torch.device) -> Settings:
        """Quick (tiny inputs, a smoke test of every kind of case) or full settings for ``device``."""
        cuda = device.type == "cuda"
        common = dict(window=16, stride=8, tolerance=1e-4 if cuda else 1e-5, occlusion_tolerance=1e-4,
                      heavy_warmup=2 if cuda else 1)  # fmt: skip
        if quick:
            return cls(size=64, batch=1, warmup=1, repeats=3, heavy_repeats=3, captum_ppe=(8, 16),
                       projection_channels=16, projection_k=2, captum_calls=8, mining_images=64, mining_batch=32,
                       bf16_tolerance=2e-2, **common)  # fmt: skip
        return cls(size=224, batch=8 if cuda else 2, warmup=3 if cuda else 2, repeats=7 if cuda else 5,
                   heavy_repeats=3, captum_ppe=(16, 64, 256) if cuda else (8, 16), projection_channels=64,
                   projection_k=9, captum_calls=24, mining_images=1024 if cuda else 256,
                   mining_batch=128 if cuda else 32, bf16_tolerance=2e-2, **common)  # fmt: skip


class Context:
    """Settings, device and the current model's objects for one run of the suite.

    Args:
        device: where the cases run.
        quick: quick or full settings.
        seed: seeds models and inputs.
    """

    def __init__(self, device: torch.device, quick: bool, seed: int = 0) -> None:
        self.device, self.quick, self.seed = device, quick, seed
        self.settings = Settings.for_run(quick, device)
        self.plant = os.environ.get(PLANT_VARIABLE) or None
        self._model_name: str | None = None
        self._cache: dict[Any, Any] = {}
        if device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = False
            torch.backends.cudnn.allow_tf32 = False

    # ------------------------------------------------------------------------------------------ per model
    def cached(self, name: str, key: Any, make: Callable[[], Any]) -> Any:
        """``make()`` once per ``key`` while ``name`` is the current model (switching models drops the cache)."""
        if name != self._model_name:
            self._cache.clear()
            self._model_name = name
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
        if key not in self._cache:
            self._cache[key] = make()
        return self._cache[key]

    def size(self, name: str) -> int:
        """Input side for ``name``."""
        return models.MODELS[name].size or self.settings.size

    def model(self, name: str) -> nn.Module:
        """The model on the run's device (float32, eval)."""
        return self.cached(name, "model", lambda: models.build(name, self.seed).to(self.device))

    def cpu_model(self, name: str) -> nn.Module:
        """The model on the CPU (FLOP counting traces there): the model itself, or a CPU copy of it."""
        if self.device.type == "cpu":
            return self.model(name)
        return self.cached(name, "cpu model", lambda: models.build(name, self.seed))

    def twin(self, name: str) -> nn.Module:
        """What Captum's deconvnet methods run on (see :func:`~benchmarks.suite.models.captum_twin`)."""
        return self.cached(name, "twin", lambda: models.captum_twin(name, self.model(name)))

    def classes(self, name: str) -> int:
        """Outputs of the model (classes)."""

        def count() -> int:
            with torch.no_grad():
                probe = torch.zeros(1, 3, self.size(name), self.size(name), device=self.device)
                return int(self.model(name)(probe).shape[1])

        return self.cached(name, "classes", count)

    def inputs(self, name: str, batch: int) -> tuple[Tensor, Tensor]:
        """``batch`` images for ``name`` and one target class each, on the device."""

        def make() -> tuple[Tensor, Tensor]:
            images, targets = models.images_and_targets(name, batch, self.size(name), self.seed, self.classes(name))
            return images.to(self.device), targets.to(self.device)

        return self.cached(name, ("inputs", batch), make)

    # ------------------------------------------------------------------------------------------ checks
    def planted(self, case: str) -> bool:
        """Whether ``case`` gets a planted mismatch (``ZF_BENCH_PLANT_MISMATCH`` is part of its name)."""
        return self.plant is not None and self.plant in case

    def ours(self, case: str, call: Callable[[], Any]) -> Callable[[], Any]:
        """zf_attr's call of ``case``, its output perturbed by 1 % of its largest value when planted."""
        if not self.planted(case):
            return call
        return lambda: perturb(call())

    def synchronize(self) -> None:
        """Wait for the device (CUDA) to finish."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


def perturb(output: Any) -> Any:
    """``output`` with its main tensor moved by 1 % of its largest magnitude (plus 1e-3): a planted mismatch."""
    if isinstance(output, Tensor):
        return output + 0.01 * output.detach().abs().max() + 1e-3
    for field in ("projections", "values"):
        if dataclasses.is_dataclass(output) and hasattr(output, field):
            return dataclasses.replace(output, **{field: perturb(getattr(output, field))})
    raise TypeError(f"cannot plant a mismatch in a {type(output).__name__}")
