"""The paper's analyses as tools, one subpackage per study, each with its computation, result type and figure.

- :mod:`~zf_attr.analysis.atlas`: top-k mining over a data set and the top-9 atlas (Fig. 2);
- :mod:`~zf_attr.analysis.correspondence`: whether occluding the same part changes features alike (Table 1);
- :mod:`~zf_attr.analysis.diagnostics`: first-layer filters, their frequencies, dead maps and aliasing (Fig. 6);
- :mod:`~zf_attr.analysis.evolution`: feature evolution during training (Fig. 4);
- :mod:`~zf_attr.analysis.invariance`: feature distances and p(true class) under translation, scale, rotation
  (Fig. 5);
- :mod:`~zf_attr.analysis.occlusion`: the four-panel occlusion study (Fig. 7);
- :mod:`~zf_attr.analysis.comparison`: attribution methods side by side, with metrics and tables.

:mod:`~zf_attr.analysis.tables` (mean ± std tables as CSV, Markdown, LaTeX) is shared by the studies.
"""

from zf_attr.analysis.atlas import Atlas, TopKActivations, mine_top_k, plot_atlas, project_top_k, save_atlas
from zf_attr.analysis.comparison import ALL_METRICS, KNOWN_METHODS, Comparison, centre_prior, compare, random_map
from zf_attr.analysis.correspondence import CorrespondenceStudy, correspondence_study
from zf_attr.analysis.diagnostics import FilterDiagnostics, filter_diagnostics
from zf_attr.analysis.evolution import EvolutionSnapshot, FeatureEvolution
from zf_attr.analysis.invariance import InvarianceStudy, invariance_study
from zf_attr.analysis.occlusion import OcclusionStudy, occlusion_study, project_feature_map
from zf_attr.analysis.tables import SummaryTable

__all__ = [
    "ALL_METRICS",
    "KNOWN_METHODS",
    "Atlas",
    "Comparison",
    "CorrespondenceStudy",
    "EvolutionSnapshot",
    "FilterDiagnostics",
    "FeatureEvolution",
    "InvarianceStudy",
    "OcclusionStudy",
    "SummaryTable",
    "TopKActivations",
    "centre_prior",
    "compare",
    "correspondence_study",
    "filter_diagnostics",
    "invariance_study",
    "mine_top_k",
    "occlusion_study",
    "plot_atlas",
    "project_feature_map",
    "project_top_k",
    "random_map",
    "save_atlas",
]
