"""zf_attr: Zeiler & Fergus's visualisation methods for PyTorch, as Captum-style attributions.

Example:
    >>> import torch, torchvision, zf_attr
    >>> model = torchvision.models.resnet18(weights=None).eval()
    >>> zf_attr.Deconvnet(model).attribute(torch.randn(1, 3, 64, 64), target=0).shape
    torch.Size([1, 3, 64, 64])
"""

from zf_attr._intercept import Interceptor, intercept, record_switches
from zf_attr.attr import (
    Deconvnet,
    FeatureMapDeconvnet,
    FeatureMapProjections,
    GuidedBackprop,
    NeuronDeconvnet,
    OcclusionSensitivity,
)
from zf_attr.errors import UnhonouredLayerWarning, ZFAttrWarning
from zf_attr.occlusion.drill_down import DrillDown
from zf_attr.rules import BackwardRule, get_rule
from zf_attr.switches import ActivationCall, ForwardTrace, PoolSwitches

__version__ = "0.1.0"

from zf_attr import analysis, metrics, models  # subpackages, usable after `import zf_attr`

__all__ = [
    "ActivationCall",
    "BackwardRule",
    "Deconvnet",
    "DrillDown",
    "FeatureMapDeconvnet",
    "FeatureMapProjections",
    "ForwardTrace",
    "GuidedBackprop",
    "Interceptor",
    "NeuronDeconvnet",
    "OcclusionSensitivity",
    "PoolSwitches",
    "UnhonouredLayerWarning",
    "ZFAttrWarning",
    "__version__",
    "analysis",
    "get_rule",
    "intercept",
    "metrics",
    "models",
    "record_switches",
]
