"""The paper's occlusion study (Fig. 7): one sweep of a grey square, four panels, and its figure."""

from zf_attr.analysis.occlusion.figure import save_occlusion_study
from zf_attr.analysis.occlusion.study import OcclusionStudy, occlusion_study, project_feature_map

OcclusionStudy.draw = save_occlusion_study  # the result type never imports its figure

__all__ = ["OcclusionStudy", "occlusion_study", "project_feature_map", "save_occlusion_study"]
