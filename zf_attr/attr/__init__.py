"""Attribution classes with Captum's interface."""

from zf_attr.attr.deconvnet import Deconvnet, GuidedBackprop
from zf_attr.attr.feature_map import FeatureMapDeconvnet, FeatureMapProjections
from zf_attr.attr.neuron import NeuronDeconvnet
from zf_attr.attr.occlusion import OcclusionSensitivity

__all__ = [
    "Deconvnet",
    "FeatureMapDeconvnet",
    "FeatureMapProjections",
    "GuidedBackprop",
    "NeuronDeconvnet",
    "OcclusionSensitivity",
]
