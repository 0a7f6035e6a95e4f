"""Zeiler & Fergus's deconvnet, and guided backpropagation for comparisons, as Captum attributions."""

from __future__ import annotations

from zf_attr.attr._rule_attribution import RuleAttribution

__all__ = ["Deconvnet", "GuidedBackprop"]


class Deconvnet(RuleAttribution):
    """Deconvnet projection of a target score to input space (Zeiler & Fergus 2014), right on any CNN.

    Max-pool calls route the signal to their recorded switches (accumulating where overlapping windows share
    a maximum), every rectifier call rectifies the signal itself, convolutions and linear layers apply their
    transposed filters. Unlike Captum's ``Deconvolution`` it also sees functional rectifiers (``F.relu`` in
    GoogLeNet, Inception-v3, DenseNet) and ``ReLU6`` (MobileNetV2), where Captum silently returns the gradient.

    A drop-in for ``captum.attr.Deconvolution``: same ``attribute(inputs, target, additional_forward_args)``,
    works inside ``NoiseTunnel`` and with ``captum.metrics``.

    Args:
        model: the network (an ``nn.Module``); it is never modified: no module is swapped, no mode changed.
        variant: ``"gradient"`` (default): every layer except the rectifiers passes its true Jacobian, as in
            Captum, TorchRay and zennit. ``"strict"``: as in the paper, normalisation layers (LRN, BatchNorm,
            LayerNorm, GroupNorm, InstanceNorm) are skipped on the way down.
        nonrectifier_policy: what non-rectifying activations (SiLU, GELU, Hardswish, sigmoid gates) do on the
            way down: ``"gradient"`` (default; their true gradient), ``"rectify"`` (ReLU-like ones rectify the
            signal) or ``"error"``. Either way, one :class:`~zf_attr.UnhonouredLayerWarning` per call names them.

    Example:
        >>> import torch, torchvision
        >>> from zf_attr import Deconvnet
        >>> model = torchvision.models.googlenet(weights=None, aux_logits=False, init_weights=True).eval()
        >>> images = torch.randn(2, 3, 64, 64)
        >>> attributions = Deconvnet(model).attribute(images, target=[3, 7])
        >>> attributions.shape
        torch.Size([2, 3, 64, 64])
    """

    rule_name = "deconvnet"


class GuidedBackprop(RuleAttribution):
    """Guided backpropagation (Springenberg et al. 2015): the true gradient, rectified at every rectifier.

    Same interface, interception and arguments as :class:`Deconvnet`; provided for comparisons and as a
    drop-in for ``captum.attr.GuidedBackprop`` that is right on functional-ReLU and ReLU6 models.

    Example:
        >>> import torch, torchvision
        >>> from zf_attr import GuidedBackprop
        >>> model = torchvision.models.mobilenet_v2(weights=None).eval()
        >>> GuidedBackprop(model).attribute(torch.randn(1, 3, 64, 64), target=0).shape
        torch.Size([1, 3, 64, 64])
    """

    rule_name = "guided"
