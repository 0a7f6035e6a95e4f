"""Correspondence of object parts across images (paper §4.3, Table 1): parts, the study, its table and figure."""

from zf_attr.analysis.correspondence.figure import save_correspondence_figure
from zf_attr.analysis.correspondence.parts import random_regions, shapes_parts
from zf_attr.analysis.correspondence.study import (
    NORMALIZATIONS,
    CorrespondenceStudy,
    correspondence_study,
    sign_hamming,
)

CorrespondenceStudy.draw = save_correspondence_figure  # the result type never imports its figure

__all__ = [
    "NORMALIZATIONS",
    "CorrespondenceStudy",
    "correspondence_study",
    "random_regions",
    "save_correspondence_figure",
    "shapes_parts",
    "sign_hamming",
]
