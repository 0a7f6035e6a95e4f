"""The suite's models: torchvision's with random (seeded) weights, and the bundled, trained ZFNet.

Nothing is downloaded. Each model has a probe layer (neuron and feature-map projections, mining) and a Grad-CAM
layer, chosen so that no in-place operation later rewrites their outputs. Captum hooks only ``nn.ReLU`` modules,
so on GoogLeNet (functional ``F.relu``) it computes the plain gradient; its reference there runs on a *twin*: the
same weights with every ``BasicConv2d``'s ``F.relu`` replaced by an ``nn.ReLU`` module (same forward output, and
the deconvnet Captum means to compute).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache, partial

import torch
import torchvision
from torch import Tensor, nn

from zf_attr.models import zfnet
from zf_attr.models.shapes import ShapesDataset

__all__ = ["MODELS", "OCCLUSION_ONLY", "ModelSpec", "build", "captum_twin", "images_and_targets", "shapes_batches"]

#: torchvision models measured by the occlusion cases alone (random weights).
OCCLUSION_ONLY = ("vgg11", "mnasnet1_0", "shufflenet_v2_x1_0", "mobilenet_v3_large", "regnet_y_400mf")


@dataclass(frozen=True)
class ModelSpec:
    """One model of the suite.

    Attributes:
        name: the suite's name (also in case names).
        builder: builds the model (random weights, seeded by the caller), in float32.
        layer: the probe layer: neuron and feature-map projections, mining (``None``: occlusion cases only).
        gradcam_layer: the layer Grad-CAM reads.
        size: input side (``None``: the suite's size for the mode).
        trained: the model carries trained weights and is fed its own generated images.
    """

    name: str
    builder: Callable[[], nn.Module]
    layer: str | None = None
    gradcam_layer: str | None = None
    size: int | None = None
    trained: bool = False


MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec("resnet18", lambda: torchvision.models.resnet18(weights=None), "layer3", "layer4"),
        ModelSpec("vgg16", lambda: torchvision.models.vgg16(weights=None), "features.23", "features.29"),
        ModelSpec(
            "googlenet",
            lambda: torchvision.models.googlenet(weights=None, aux_logits=False, init_weights=True),
            "inception4a",
            "inception5b",
        ),
        ModelSpec("convnext_tiny", lambda: torchvision.models.convnext_tiny(weights=None), "features.5", "features.7"),
        ModelSpec(
            "efficientnet_b0", lambda: torchvision.models.efficientnet_b0(weights=None), "features.5", "features.8"
        ),
        ModelSpec("zfnet", lambda: zfnet(variant="shapes", weights="DEFAULT"), "pool5", "pool5", 112, True),
        # occlusion only: the other families the incremental engine covers, and VGG-11 (its largest FLOP bound)
        *(ModelSpec(name, partial(getattr(torchvision.models, name), weights=None)) for name in OCCLUSION_ONLY),
    )
}


def build(name: str, seed: int = 0) -> nn.Module:
    """The model ``name`` in eval mode, float32, on the CPU; random weights seeded with ``seed``."""
    torch.manual_seed(seed)
    return MODELS[name].builder().eval().float()


class _ReLUConv(nn.Module):
    """GoogLeNet's ``BasicConv2d`` with its functional ``F.relu`` as an ``nn.ReLU`` module (same weights)."""

    def __init__(self, basic: nn.Module) -> None:
        super().__init__()
        self.conv, self.bn, self.relu = basic.conv, basic.bn, nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        return self.relu(self.bn(self.conv(x)))


def captum_twin(name: str, model: nn.Module) -> nn.Module:
    """The model Captum's deconvnet methods run on: ``model`` itself, or GoogLeNet's ``nn.ReLU`` twin."""
    if name != "googlenet":
        return model
    twin = copy.deepcopy(model)
    for path, module in list(twin.named_modules()):
        if type(module).__name__ == "BasicConv2d":
            parent, _, child = path.rpartition(".")
            setattr(twin.get_submodule(parent), child, _ReLUConv(module))
    return twin


def images_and_targets(name: str, batch: int, size: int, seed: int, classes: int) -> tuple[Tensor, Tensor]:
    """Inputs of ``name``: generated shapes and their labels (trained models), else random images and classes."""
    if MODELS[name].trained:
        data = ShapesDataset(batch, seed=seed + 5, image_size=size)
        samples = [data[i] for i in range(batch)]
        return torch.stack([image for image, _ in samples]), torch.tensor([int(label) for _, label in samples])
    generator = torch.Generator().manual_seed(seed + 1)
    images = torch.randn(batch, 3, size, size, generator=generator)
    return images, torch.randint(0, classes, (batch,), generator=generator)


@lru_cache(maxsize=2)
def shapes_batches(count: int, size: int, batch: int, seed: int) -> tuple[Tensor, ...]:
    """``count`` generated shapes images of side ``size`` in batches of ``batch`` (the data mining reads; kept for
    the next model, as rendering 1024 images takes seconds)."""
    data = ShapesDataset(count, seed=seed + 1000, image_size=size)
    return tuple(torch.stack([data[i][0] for i in range(count)]).split(batch))
