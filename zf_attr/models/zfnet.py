"""ZFNet (Zeiler & Fergus 2014, Fig. 3), paper-exact, in torchvision's builder style.

| layer | op | output at 224×224 |
|---|---|---|
| conv1 | 96 filters 7×7, stride 2, padding 1 → ReLU | 96×110×110 |
| pool1 | max 3×3, stride 2, ceil → contrast normalisation (``norm1``) | 96×55×55 |
| conv2 | 256 filters 5×5, stride 2 → ReLU | 256×26×26 |
| pool2 | max 3×3, stride 2, ceil → contrast normalisation (``norm2``) | 256×13×13 |
| conv3, conv4, conv5 | 384, 384, 256 filters 3×3, padding 1 → ReLU | 13×13 |
| pool5 | max 3×3, stride 2, ceil | 256×6×6 |
| fc6, fc7 | 4096 → ReLU → dropout 0.5 | 4096 |
| fc8 | ``num_classes`` (softmax in the loss) | C |

Contrast normalisation is ``nn.LocalResponseNorm`` with Krizhevsky et al.'s constants (n = 5, α = 1e-4 per
summed square, β = 0.75, k = 2; torch divides α by n, hence ``alpha=5e-4``), placed after pooling as in the
paper. Variant ``"b"`` widens conv3–5 to 512/1024/512 (paper Table 2). Variant ``"shapes"`` is the narrow
ZFNet of the same topology that the bundled weights use (input 112×112, 6 classes).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from torch import Tensor, nn

__all__ = ["VARIANTS", "ZFNet", "ZFNetConfig", "feature_sizes"]


@dataclass(frozen=True)
class ZFNetConfig:
    """Widths and input size of a ZFNet variant.

    Attributes:
        conv_widths: filters of conv1 … conv5.
        fc_width: units of fc6 and fc7.
        input_size: side of the square input crop; fixes the size of pool5's output and so fc6's input.
    """

    conv_widths: tuple[int, int, int, int, int] = (96, 256, 384, 384, 256)
    fc_width: int = 4096
    input_size: int = 224


VARIANTS: dict[str, ZFNetConfig] = {
    "a": ZFNetConfig(),
    "b": ZFNetConfig(conv_widths=(96, 256, 512, 1024, 512)),
    "shapes": ZFNetConfig(conv_widths=(32, 64, 96, 96, 64), fc_width=256, input_size=112),
}


def feature_sizes(input_size: int) -> dict[str, int]:
    """Spatial side of every layer's output for a square input of side ``input_size``.

    Example:
        >>> feature_sizes(224)
        {'conv1': 110, 'pool1': 55, 'conv2': 26, 'pool2': 13, 'conv3': 13, 'conv4': 13, 'conv5': 13, 'pool5': 6}
    """

    def conv(size: int, kernel: int, stride: int, padding: int) -> int:
        return (size + 2 * padding - kernel) // stride + 1

    def pool(size: int) -> int:  # 3×3, stride 2, ceil_mode (a window must start inside the input)
        out = -(-(size - 3) // 2) + 1
        return out - 1 if (out - 1) * 2 >= size else out

    sizes = {"conv1": conv(input_size, 7, 2, 1)}
    sizes["pool1"] = pool(sizes["conv1"])
    sizes["conv2"] = conv(sizes["pool1"], 5, 2, 0)
    sizes["pool2"] = pool(sizes["conv2"])
    sizes["conv3"] = sizes["conv4"] = sizes["conv5"] = sizes["pool2"]
    sizes["pool5"] = pool(sizes["conv5"])
    if min(sizes.values()) < 1:
        raise ValueError(f"input_size={input_size} is too small for ZFNet; use at least 64")
    return sizes


class ZFNet(nn.Module):
    """ZFNet with layers named as in the paper (``conv1`` … ``conv5``, ``fc6`` … ``fc8``).

    Build it with :func:`zf_attr.models.zfnet`. Every layer is a direct child, so attribution code can
    address ``"conv5"`` or ``"pool2"`` by name; rectifiers are separate ``nn.ReLU`` modules (``relu1`` …).

    Args:
        num_classes: outputs of fc8.
        config: widths and input size, see :data:`VARIANTS`.
        dropout: dropout probability of fc6 and fc7.

    Example:
        >>> import torch
        >>> from zf_attr.models import ZFNet, VARIANTS
        >>> model = ZFNet(num_classes=10, config=VARIANTS["shapes"]).eval()
        >>> model(torch.randn(2, 3, 112, 112)).shape
        torch.Size([2, 10])
    """

    def __init__(self, num_classes: int = 1000, config: ZFNetConfig = VARIANTS["a"], dropout: float = 0.5) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be at least 1, got {num_classes}")
        self.config = config
        c1, c2, c3, c4, c5 = config.conv_widths
        pool5 = feature_sizes(config.input_size)["pool5"]
        layers: OrderedDict[str, nn.Module] = OrderedDict(
            [
                ("conv1", nn.Conv2d(3, c1, 7, stride=2, padding=1)),
                ("relu1", nn.ReLU(inplace=True)),
                ("pool1", nn.MaxPool2d(3, 2, ceil_mode=True)),
                ("norm1", nn.LocalResponseNorm(5, alpha=5e-4, beta=0.75, k=2.0)),
                ("conv2", nn.Conv2d(c1, c2, 5, stride=2)),
                ("relu2", nn.ReLU(inplace=True)),
                ("pool2", nn.MaxPool2d(3, 2, ceil_mode=True)),
                ("norm2", nn.LocalResponseNorm(5, alpha=5e-4, beta=0.75, k=2.0)),
                ("conv3", nn.Conv2d(c2, c3, 3, padding=1)),
                ("relu3", nn.ReLU(inplace=True)),
                ("conv4", nn.Conv2d(c3, c4, 3, padding=1)),
                ("relu4", nn.ReLU(inplace=True)),
                ("conv5", nn.Conv2d(c4, c5, 3, padding=1)),
                ("relu5", nn.ReLU(inplace=True)),
                ("pool5", nn.MaxPool2d(3, 2, ceil_mode=True)),
                ("flatten", nn.Flatten(1)),
                ("fc6", nn.Linear(c5 * pool5 * pool5, config.fc_width)),
                ("relu6", nn.ReLU(inplace=True)),
                ("drop6", nn.Dropout(dropout)),
                ("fc7", nn.Linear(config.fc_width, config.fc_width)),
                ("relu7", nn.ReLU(inplace=True)),
                ("drop7", nn.Dropout(dropout)),
                ("fc8", nn.Linear(config.fc_width, num_classes)),
            ]
        )
        for name, layer in layers.items():
            self.add_module(name, layer)
        self.reset_parameters()

    def reset_parameters(self, scheme: str = "paper", std: float = 1e-2) -> None:
        """Re-initialise every conv and linear layer; biases are set to 0.

        Args:
            scheme: ``"paper"``: weights from N(0, std²) with std = 1e-2 (§3). ``"kaiming"``: He-normal weights
                (fan-in, ReLU gain), which a narrow net needs to leave the ln(C) loss plateau in few steps.
            std: standard deviation of the ``"paper"`` scheme.
        """
        if scheme not in ("paper", "kaiming"):
            raise ValueError(f"scheme={scheme!r} is not known; choose 'paper' or 'kaiming'")
        for layer in self.children():
            if isinstance(layer, (nn.Conv2d, nn.Linear)):
                if scheme == "paper":
                    nn.init.normal_(layer.weight, 0.0, std)
                else:
                    nn.init.kaiming_normal_(layer.weight, nonlinearity="relu")
                nn.init.zeros_(layer.bias)

    def forward(self, x: Tensor) -> Tensor:
        """Class scores (logits) for a batch ``(N, 3, input_size, input_size)``."""
        expected = self.config.input_size
        if x.dim() != 4 or x.shape[1] != 3 or x.shape[-2:] != (expected, expected):
            raise ValueError(
                f"ZFNet expects images shaped (N, 3, {expected}, {expected}), got {tuple(x.shape)}; resize or "
                f"crop to {expected}×{expected}"
            )
        for layer in self.children():
            x = layer(x)
        return x

    @property
    def num_classes(self) -> int:
        """Number of outputs of fc8."""
        return self.fc8.out_features
