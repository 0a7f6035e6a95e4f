"""``explain_func`` for `Quantus <https://github.com/understandable-machine-intelligence-lab/Quantus>`_ metrics.

Quantus evaluates explanations by calling ``explain_func(model=model, inputs=x_batch, targets=y_batch,
**explain_func_kwargs)`` with NumPy arrays and expects a NumPy array of attributions back. :func:`explain_func`
does that for zf_attr's methods and for any Captum attribution class, chosen by ``method``:

- zf_attr: ``"deconvnet"`` (:class:`zf_attr.Deconvnet`), ``"strict"`` (``variant="strict"``), ``"guided"``
  (:class:`zf_attr.GuidedBackprop`), ``"occlusion"`` (:class:`zf_attr.OcclusionSensitivity`; pass
  ``sliding_window_shapes`` and ``strides``), or those class names;
- Captum: any class name of ``captum.attr`` taking the model as its only argument (``"Saliency"``,
  ``"IntegratedGradients"``, ``"Deconvolution"``, ...).

Quantus itself is not imported here: the function only follows its calling convention.

Example:
    >>> import numpy as np, torch
    >>> model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
    ...                             torch.nn.Flatten(), torch.nn.LazyLinear(5)).eval()
    >>> _ = model(torch.zeros(1, 3, 8, 8))
    >>> x, y = np.random.rand(2, 3, 8, 8).astype(np.float32), np.array([1, 3])
    >>> explain_func(model=model, inputs=x, targets=y, method="deconvnet").shape
    (2, 1, 8, 8)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = ["METHODS", "explain_func"]

#: zf_attr's methods by short name: ``(class name, constructor keyword arguments)``.
METHODS: dict[str, tuple[str, dict[str, Any]]] = {
    "deconvnet": ("Deconvnet", {}),
    "strict": ("Deconvnet", {"variant": "strict"}),
    "guided": ("GuidedBackprop", {}),
    "occlusion": ("OcclusionSensitivity", {}),
}


def _method(model: nn.Module, name: str) -> Any:
    import zf_attr

    if name in METHODS:
        class_name, options = METHODS[name]
        return getattr(zf_attr, class_name)(model, **options)
    if name in ("Deconvnet", "GuidedBackprop", "OcclusionSensitivity"):
        return getattr(zf_attr, name)(model)
    import captum.attr

    method = getattr(captum.attr, name, None)
    if not isinstance(method, type):
        raise ValueError(
            f"method={name!r} is neither a zf_attr method ({', '.join(METHODS)}) nor a captum.attr class name"
        )
    return method(model)


def explain_func(
    model: nn.Module,
    inputs: np.ndarray | torch.Tensor,
    targets: np.ndarray | torch.Tensor | Sequence[int] | int,
    *,
    method: str = "deconvnet",
    reduce_axes: Sequence[int] | None = (1,),
    keepdims: bool = True,
    device: str | torch.device | None = None,
    **kwargs: Any,
) -> np.ndarray:
    """Attributions of ``inputs`` for ``targets`` with ``method``, as Quantus expects them.

    Args:
        model: the classifier, in the mode it is to be explained in (left as it is).
        inputs: ``(N, C, H, W)`` images.
        targets: one class per image (or one for all).
        method: see the module docstring.
        reduce_axes: axes summed in the result (default: the channels, as Quantus's own ``explain``);
            ``None`` or ``()`` keeps the input's shape.
        keepdims: keep the summed axes with length 1.
        device: where to run (default: the model's device).
        **kwargs: passed to the method's ``attribute`` (e.g. ``sliding_window_shapes`` and ``strides`` for
            occlusion, ``baselines`` for Captum's methods).

    Returns:
        ``float32`` attributions, ``(N, 1, H, W)`` by default.

    Raises:
        ValueError: an unknown ``method``.
    """
    if device is None:
        parameter = next(model.parameters(), None)
        device = parameter.device if parameter is not None else torch.device("cpu")
    batch = torch.as_tensor(np.asarray(inputs) if not isinstance(inputs, torch.Tensor) else inputs)
    batch = batch.to(device=device, dtype=torch.float32)
    labels = torch.as_tensor(np.asarray(targets) if not isinstance(targets, torch.Tensor) else targets)
    labels = labels.reshape(-1).to(device=device, dtype=torch.long)
    if labels.numel() == 1 and batch.shape[0] > 1:
        labels = labels.expand(batch.shape[0])
    attributions = _method(model, method).attribute(batch, target=labels, **kwargs)
    result = attributions.detach().float().cpu().numpy()
    if reduce_axes:
        result = result.sum(axis=tuple(reduce_axes), keepdims=keepdims)
    return result
