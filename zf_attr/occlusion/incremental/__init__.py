"""Fast exact occlusion by incremental inference (after Krypton, Nakandala et al., SIGMOD 2019).

A window changes only a small rectangle of each early feature map. The engine caches every layer's output for
the unoccluded image and recomputes, per layer, only the rectangle a batch of windows can change; see
``docs/fast-occlusion.md``. Used automatically by :class:`zf_attr.OcclusionSensitivity` and
:func:`zf_attr.analysis.occlusion_study` when the model can be traced into supported ops.

Modules: :mod:`.regions` (projective-field arithmetic), :mod:`.graph` (tracing and the op table),
:mod:`.kernels` (per-op incremental computation), :mod:`.engine` (the driver), :mod:`.held` (the cache's memory),
:mod:`.flops` (FLOP accounting).
"""

from zf_attr.occlusion.incremental.engine import IncrementalEngine
from zf_attr.occlusion.incremental.flops import OcclusionFlops, occlusion_flops
from zf_attr.occlusion.incremental.graph import UnsupportedModelError, trace_ops
from zf_attr.occlusion.incremental.held import CacheTooLargeError
from zf_attr.occlusion.incremental.regions import AxisGeometry, affected_outputs, fit_regions, needed_inputs

__all__ = [
    "AxisGeometry",
    "CacheTooLargeError",
    "IncrementalEngine",
    "OcclusionFlops",
    "UnsupportedModelError",
    "affected_outputs",
    "fit_regions",
    "needed_inputs",
    "occlusion_flops",
    "trace_ops",
]
