"""Metrics for comparing attribution methods: localisation, faithfulness and sanity checks.

- :func:`pointing_game`: does the map's maximum hit the object (masks or boxes, TorchRay's tolerance)?
- :func:`deletion_auc`, :func:`insertion_auc`: RISE-style curves of the target score as pixels go or come.
- :func:`randomization_test`: Adebayo et al.'s cascading model-parameter randomisation, per layer.
- :func:`class_sensitivity`: do the maps change with the explained class (Nie et al.)?

See ``docs/metrics.md``.
"""

from zf_attr.metrics._common import spearman, ssim
from zf_attr.metrics.perturbation import PerturbationCurve, deletion_auc, insertion_auc
from zf_attr.metrics.pointing import PointingResult, pointing_game
from zf_attr.metrics.sanity import RandomizationResult, class_sensitivity, randomization_test

__all__ = [
    "PerturbationCurve",
    "PointingResult",
    "RandomizationResult",
    "class_sensitivity",
    "deletion_auc",
    "insertion_auc",
    "pointing_game",
    "randomization_test",
    "spearman",
    "ssim",
]
