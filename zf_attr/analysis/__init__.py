"""The paper's analyses as tools: occlusion study, top-k mining, feature atlas, feature evolution, comparisons."""

from zf_attr.analysis.atlas import Atlas, project_top_k
from zf_attr.analysis.atlas_figure import plot_atlas, save_atlas
from zf_attr.analysis.comparison import ALL_METRICS, Comparison, compare
from zf_attr.analysis.comparison_methods import KNOWN_METHODS, centre_prior, random_map
from zf_attr.analysis.evolution import EvolutionSnapshot, FeatureEvolution
from zf_attr.analysis.mining import mine_top_k
from zf_attr.analysis.occlusion_study import OcclusionStudy, occlusion_study, project_feature_map
from zf_attr.analysis.tables import SummaryTable
from zf_attr.analysis.topk import TopKActivations

__all__ = [
    "ALL_METRICS",
    "KNOWN_METHODS",
    "Atlas",
    "Comparison",
    "EvolutionSnapshot",
    "FeatureEvolution",
    "OcclusionStudy",
    "SummaryTable",
    "TopKActivations",
    "centre_prior",
    "compare",
    "mine_top_k",
    "occlusion_study",
    "plot_atlas",
    "project_feature_map",
    "project_top_k",
    "random_map",
    "save_atlas",
]
