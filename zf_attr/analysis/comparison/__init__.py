"""Attribution methods side by side (deconvnet, occlusion, Grad-CAM, …): maps, metrics, tables and the grid figure."""

from zf_attr.analysis.comparison.figure import save_comparison_figure
from zf_attr.analysis.comparison.methods import KNOWN_METHODS, centre_prior, random_map
from zf_attr.analysis.comparison.study import ALL_METRICS, Comparison, compare

Comparison.draw = save_comparison_figure  # the result type never imports its figure: see Comparison.draw

__all__ = [
    "ALL_METRICS",
    "KNOWN_METHODS",
    "Comparison",
    "centre_prior",
    "compare",
    "random_map",
    "save_comparison_figure",
]
