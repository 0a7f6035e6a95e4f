"""Former home of :mod:`zf_attr.analysis.comparison.methods`, kept so that existing imports keep working."""

from zf_attr.analysis.comparison.methods import (
    BASELINES,
    KNOWN_METHODS,
    MethodSpec,
    centre_prior,
    random_map,
    resolve_methods,
)

__all__ = ["BASELINES", "KNOWN_METHODS", "MethodSpec", "centre_prior", "random_map", "resolve_methods"]
