"""Occlusion sweeps: window geometry, batching under a memory budget, and the occluded-batch iterator.

Internal building blocks of :class:`zf_attr.OcclusionSensitivity`, shared with the occlusion study.
"""

from zf_attr.occlusion.batching import (
    budget_for_copies,
    copies_per_batch,
    default_memory_budget,
    expand_additional_forward_args,
    expand_target,
    measured_forward,
    release_freed_memory,
)
from zf_attr.occlusion.drill_down import DrillDown, DrillDownPlan
from zf_attr.occlusion.sweep import format_baselines, iter_occluded, locate_window
from zf_attr.occlusion.windows import WindowGrid, format_window_grids

__all__ = [
    "DrillDown",
    "DrillDownPlan",
    "WindowGrid",
    "budget_for_copies",
    "copies_per_batch",
    "default_memory_budget",
    "expand_additional_forward_args",
    "expand_target",
    "format_baselines",
    "format_window_grids",
    "iter_occluded",
    "locate_window",
    "measured_forward",
    "release_freed_memory",
]
