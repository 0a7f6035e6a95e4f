"""The AlexNet-style first layers the paper's Fig. 6 compares ZFNet against, on ZFNet's other layers.

AlexNet's first layer is 11×11 with stride 4 and its second layer has stride 1; ZFNet's are 7×7 with stride 2
and stride 2 (paper §4.1, Fig. 6). :func:`alexnet_style` builds a :class:`~zf_attr.models.ZFNet` with AlexNet's
first two strides, so every other layer, the feature sizes from ``pool1`` on and the training recipe are shared.
"""

from __future__ import annotations

from torch import nn

from zf_attr.models.zfnet import VARIANTS, ZFNet, ZFNetConfig

__all__ = ["alexnet_style"]


def alexnet_style(num_classes: int = 6, config: ZFNetConfig = VARIANTS["shapes"], dropout: float = 0.0) -> ZFNet:
    """A ZFNet whose ``conv1`` is 11×11 with stride 4 (padding 2) and ``conv2`` 5×5 with stride 1 (padding 2).

    With these AlexNet strides ``pool2`` has the same size as ZFNet's (6×6 at 112 pixels, 13×13 at 224), so
    ``conv3`` … ``fc8`` keep their shapes; ``pool1`` is half ZFNet's size (13×13 against 27×27 at 112 pixels).
    Weights are He-normal, biases 0 (the shipped weights' initialisation).

    Args:
        num_classes: outputs of fc8.
        config: widths and input size (default: the bundled ``"shapes"`` variant, 112 px).
        dropout: dropout of fc6 and fc7 (0: the shipped weights' recipe).

    Example:
        >>> import torch
        >>> net = alexnet_style().eval()
        >>> net.conv1, net(torch.randn(1, 3, 112, 112)).shape
        (Conv2d(3, 32, kernel_size=(11, 11), stride=(4, 4), padding=(2, 2)), torch.Size([1, 6]))
    """
    model = ZFNet(num_classes, config, dropout=dropout)
    first, second = config.conv_widths[:2]
    model.conv1 = nn.Conv2d(3, first, 11, stride=4, padding=2)
    model.conv2 = nn.Conv2d(first, second, 5, stride=1, padding=2)
    model.reset_parameters("kaiming")
    return model
