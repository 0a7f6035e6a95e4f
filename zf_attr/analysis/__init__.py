"""The paper's analyses as tools: the four-panel occlusion study (more to come: atlas, invariance, ...)."""

from zf_attr.analysis.occlusion_study import OcclusionStudy, occlusion_study, project_feature_map

__all__ = ["OcclusionStudy", "occlusion_study", "project_feature_map"]
