"""The paper's top-9 atlas (Fig. 2): the strongest activations mined over a data set, their projections, the figure.

Mining streams a data set once (resumable, sharded over processes under ``torchrun``); projection fetches each
image it names once and projects every mined activation; the figure shows projections beside image patches.
"""

from zf_attr.analysis.atlas.figure import plot_atlas, save_atlas
from zf_attr.analysis.atlas.mining import mine_top_k
from zf_attr.analysis.atlas.projection import Atlas, project_top_k
from zf_attr.analysis.atlas.topk import TopKActivations

Atlas.draw = save_atlas  # the result type never imports its figure: see Atlas.draw

__all__ = ["Atlas", "TopKActivations", "mine_top_k", "plot_atlas", "project_top_k", "save_atlas"]
