"""The paper's analyses as tools: the four-panel occlusion study (more to come: atlas, invariance, ...)."""

from zf_attr.analysis.comparison import ALL_METRICS, Comparison, compare
from zf_attr.analysis.comparison_methods import KNOWN_METHODS, centre_prior, random_map
from zf_attr.analysis.evolution import EvolutionSnapshot, FeatureEvolution
from zf_attr.analysis.occlusion_study import OcclusionStudy, occlusion_study, project_feature_map
from zf_attr.analysis.tables import SummaryTable

__all__ = [
    "ALL_METRICS",
    "KNOWN_METHODS",
    "Comparison",
    "EvolutionSnapshot",
    "FeatureEvolution",
    "OcclusionStudy",
    "SummaryTable",
    "centre_prior",
    "compare",
    "occlusion_study",
    "project_feature_map",
    "random_map",
]
