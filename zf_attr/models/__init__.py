"""Reference models: ZFNet (paper-exact), its shipped weights, and the generated data set they were trained on.

Example:
    >>> import torch
    >>> from zf_attr.models import zfnet
    >>> model = zfnet()                                   # paper-exact, 1000 classes, random init
    >>> sum(p.numel() for p in model.parameters())
    62357608
"""

from __future__ import annotations

from pathlib import Path

from zf_attr.models.weights import WeightsInfo, ZFNetWeights, load_state_dict_file, load_weights_into
from zf_attr.models.zfnet import VARIANTS, ZFNet, ZFNetConfig, feature_sizes

__all__ = [
    "VARIANTS",
    "WeightsInfo",
    "ZFNet",
    "ZFNetConfig",
    "ZFNetWeights",
    "feature_sizes",
    "zfnet",
]


def zfnet(
    *,
    num_classes: int | None = None,
    variant: str | None = None,
    weights: ZFNetWeights | str | Path | None = None,
    progress: bool = True,
    dropout: float = 0.5,
) -> ZFNet:
    """Build a ZFNet, optionally with weights, in torchvision's builder style (nothing is downloaded).

    Args:
        num_classes: outputs of fc8 (default 1000; with shipped weights, theirs).
        variant: ``"a"`` (paper, default), ``"b"`` (conv3–5 widened to 512/1024/512) or ``"shapes"`` (the
            narrow 112×112 net of the shipped weights).
        weights: ``None`` (random init as in the paper), a :class:`ZFNetWeights` member or its name
            (``"DEFAULT"``, ``"SHAPES_112"``), or the path of a local ``.pt``/``.pth``/``.safetensors`` file.
        progress: accepted for torchvision compatibility; loading is local and instant.
        dropout: dropout probability of fc6 and fc7.

    Returns:
        The model, in training mode as torchvision's builders return it; with shipped weights its
        :class:`WeightsInfo` is available as ``model.weights_info``.

    Raises:
        ValueError: unknown variant or weights name, ``num_classes``/``variant`` contradicting the shipped
            weights, or a weights file whose layers do not fit (the message names them).

    Example:
        >>> model = zfnet(weights="DEFAULT").eval()
        >>> model.weights_info.categories
        ('disc', 'square', 'triangle', 'cross', 'ring', 'star')
    """
    del progress  # nothing to download
    if isinstance(weights, str) and not _looks_like_path(weights):
        try:
            weights = ZFNetWeights[weights.upper()]
        except KeyError:
            names = [member.name for member in ZFNetWeights]
            raise ValueError(f"weights={weights!r} names no shipped checkpoint ({names}) and is not a file") from None
    if isinstance(weights, ZFNetWeights):
        info = weights.info
        if variant is not None and variant != info.variant:
            raise ValueError(f"weights {weights.name} are for variant={info.variant!r}, not variant={variant!r}")
        if num_classes is not None and num_classes != info.num_classes:
            raise ValueError(
                f"weights {weights.name} predict {info.num_classes} classes, not num_classes={num_classes}"
            )
        model = ZFNet(info.num_classes, VARIANTS[info.variant], dropout=dropout)
        load_weights_into(model, weights.get_state_dict(), source=f"ZFNetWeights.{weights.name}")
        model.weights_info = info
        return model
    variant = variant or "a"
    if variant not in VARIANTS:
        raise ValueError(f"variant={variant!r} is not a ZFNet variant; choose one of {sorted(VARIANTS)}")
    model = ZFNet(1000 if num_classes is None else num_classes, VARIANTS[variant], dropout=dropout)
    if weights is not None:
        load_weights_into(model, load_state_dict_file(weights), source=f"file {str(weights)!r}")
    return model


def _looks_like_path(text: str) -> bool:
    return Path(text).suffix in (".pt", ".pth", ".safetensors", ".bin") or "/" in text or "\\" in text
