"""Invariance to translation, scale and rotation (paper Fig. 5): the transforms, the study and its figure."""

from zf_attr.analysis.invariance.figure import save_invariance_figure
from zf_attr.analysis.invariance.study import InvarianceStudy, invariance_study
from zf_attr.analysis.invariance.transforms import TRANSFORMS, default_sweeps, transform_images

InvarianceStudy.draw = save_invariance_figure  # the result type never imports its figure

__all__ = [
    "TRANSFORMS",
    "InvarianceStudy",
    "default_sweeps",
    "invariance_study",
    "save_invariance_figure",
    "transform_images",
]
