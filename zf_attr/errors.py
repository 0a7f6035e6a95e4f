"""Warnings raised by zf_attr, so users can filter or escalate them precisely.

Example:
    >>> import warnings, zf_attr
    >>> warnings.simplefilter("error", zf_attr.UnhonouredLayerWarning)  # make them fatal in an audit script
"""

from __future__ import annotations

__all__ = ["UnhonouredLayerWarning", "ZFAttrWarning"]


class ZFAttrWarning(UserWarning):
    """Base class of every warning zf_attr emits."""


class UnhonouredLayerWarning(ZFAttrWarning):
    """A model has parts a method cannot honour (no rectifiers, non-rectifying activations).

    Emitted at most once per ``attribute`` call, naming the layers concerned and what was done there.
    """
