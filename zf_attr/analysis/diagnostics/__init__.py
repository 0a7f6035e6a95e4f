"""Architecture diagnostics (paper §4.1, Fig. 6): filters, their frequencies, dead maps, aliasing, and figures."""

from zf_attr.analysis.diagnostics.figure import filter_grid, save_diagnostics_comparison, save_diagnostics_figure
from zf_attr.analysis.diagnostics.spectra import BAND_EDGES, band_energy, near_nyquist_share, stride_aliasing
from zf_attr.analysis.diagnostics.study import FilterDiagnostics, filter_diagnostics
from zf_attr.analysis.diagnostics.variants import alexnet_style

FilterDiagnostics.draw = save_diagnostics_figure  # the result type never imports its figure

__all__ = [
    "BAND_EDGES",
    "FilterDiagnostics",
    "alexnet_style",
    "band_energy",
    "filter_diagnostics",
    "filter_grid",
    "near_nyquist_share",
    "save_diagnostics_comparison",
    "save_diagnostics_figure",
    "stride_aliasing",
]
