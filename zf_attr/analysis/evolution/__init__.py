"""Feature evolution during training (paper Fig. 4): the training-loop callback and its maps × epochs grid."""

from zf_attr.analysis.evolution.figure import plot_evolution
from zf_attr.analysis.evolution.tracker import EvolutionSnapshot, FeatureEvolution

FeatureEvolution.draw = plot_evolution  # the tracker never imports its figure

__all__ = ["EvolutionSnapshot", "FeatureEvolution", "plot_evolution"]
