"""Attribution classes with Captum's interface."""

from zf_attr.attr.deconvnet import Deconvnet, GuidedBackprop

__all__ = ["Deconvnet", "GuidedBackprop"]
