"""Attribution classes with Captum's interface."""

from zf_attr.attr.deconvnet import Deconvnet, GuidedBackprop
from zf_attr.attr.occlusion import OcclusionSensitivity

__all__ = ["Deconvnet", "GuidedBackprop", "OcclusionSensitivity"]
