"""Where the spatial dims are in each value, and which ops are spatially pointwise there.

The kernels hold every image-shaped value with its spatial dims last (``(R, C, h, w)``, or ``(R, g, c, h, w)``
inside a channel shuffle): layout ``"last2"``. ConvNeXt permutes its maps to channels-last ``(N, H, W, C)`` for a
layer norm and two linear layers over the channels, then back; such a value has layout ``"nhwc"`` and the engine
holds it permuted to ``(N, C, H, W)`` (a view), so patches, caches and kernels stay the same: the ops that read or
write it get its true layout (:func:`wrap_call`). Values that are not image-shaped (after flatten, global pooling)
have no layout (``None``); ops reading them run on whole values.

:func:`classify` decides, from the op's rule (:mod:`.table`) and the true shapes of the unoccluded pass, whether
an op the table marks ``"elementwise"`` is pointwise in space where it runs, and the layout of its output.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from torch import Tensor

from zf_attr.occlusion.incremental.graph import Op, UnsupportedModelError

__all__ = ["Layout", "classify", "internal_shape", "to_internal", "to_true", "wrap_call"]

Layout = str | None


def spatial_dims(layout: Layout, ndim: int) -> tuple[int, int]:
    """The positions of the two spatial dims in a value of ``layout`` with ``ndim`` dims."""
    return (1, 2) if layout == "nhwc" else (ndim - 2, ndim - 1)


def to_true(layout: Layout, value: Any) -> Any:
    """A value as the model computes it, from the engine's representation."""
    return value.permute(0, 2, 3, 1) if layout == "nhwc" and isinstance(value, Tensor) else value


def to_internal(layout: Layout, value: Any) -> Any:
    """The engine's representation (spatial dims last) of a value as the model computes it."""
    return value.permute(0, 3, 1, 2) if layout == "nhwc" and isinstance(value, Tensor) else value


def internal_shape(layout: Layout, shape: tuple[int, ...]) -> tuple[int, ...]:
    """The shape of the engine's representation of a value of ``shape``."""
    return (shape[0], shape[3], shape[1], shape[2]) if layout == "nhwc" else shape


def wrap_call(call: Callable[[list[Any]], Any], inputs: Sequence[Layout], output: Layout) -> Callable[..., Any]:
    """``call`` (on true values) as a call on the engine's representation, for ops that read or write ``"nhwc"``."""
    if "nhwc" not in (*inputs, output):
        return call

    def internal(values: list[Any]) -> Any:
        return to_internal(output, call([to_true(layout, v) for layout, v in zip(inputs, values, strict=True)]))

    return internal


def classify(
    op: Op, layouts: Sequence[Layout], shapes: Sequence[tuple[int, ...]], consts: Sequence[Any], out: tuple[int, ...]
) -> tuple[str, Layout]:
    """``(kind, layout of the output)`` of an op, given its inputs' layouts and true shapes.

    Args:
        op: the op, with its kind and rule as traced.
        layouts: each input's layout (``None`` for constants).
        shapes: each input's true shape (``()`` for constants).
        consts: each input's value if it is a model constant, else ``None``.
        out: the op's true output shape.

    Raises:
        UnsupportedModelError: the op moves or reduces the batch dim (it would mix the windows' rows).
    """
    if op.kind == "spatial":
        return ("spatial", "last2") if list(layouts) == ["last2"] and len(out) == 4 else ("dense", None)
    if op.kind != "elementwise":
        return op.kind, None
    sized = [k for k in op.size_only if consts[k] is None]
    tensors = [k for k, const in enumerate(consts) if const is None and k not in op.size_only]
    kinds = {layouts[k] for k in tensors}
    rule = op.rule
    if rule[0] == "reshape" and tensors and (not out or out[0] != shapes[tensors[0]][0]):
        raise UnsupportedModelError(f"{op.name}: reshapes across the batch dim (the windows' rows would mix)")
    if not tensors or len(kinds) != 1 or None in kinds:
        _check_batch(op, rule, max((len(shapes[k]) for k in tensors), default=0))
        return "dense", None
    (layout,) = kinds
    first = shapes[tensors[0]]
    ndim = len(first)
    _check_batch(op, rule, ndim)
    space = spatial_dims(layout, ndim)
    if not all(_same_grid(shapes[k], first, space) for k in tensors):
        return "dense", None
    for k in sized:  # read for its sizes: gathered on the same rectangle, so they must share the grid
        if layouts[k] is None or _grid(shapes[k], layouts[k]) != _grid(first, layout):
            return "dense", None
    if rule[0] in ("permute", "transpose"):
        order = _order(rule, ndim)
        moved = (order.index(space[0]), order.index(space[1]))
        target: Layout = "last2" if moved == (ndim - 2, ndim - 1) else "nhwc" if moved == (1, 2) and ndim == 4 else None
        return ("elementwise", target) if target is not None else ("dense", None)
    if rule[0] == "reshape":
        sizes = rule[1]
        dynamic = len(sizes) == len(out) and all(sizes[p] in (None, -1) for p in (0, len(out) - 2, len(out) - 1))
        keeps = len(out) >= 3 and out[0] == first[0] and tuple(out[-2:]) == tuple(first[-2:])
        return ("elementwise", "last2") if layout == "last2" and dynamic and keeps else ("dense", None)
    mixes = {d % ndim for d in rule[1]}
    if rule[0] == "reduce" and not rule[2]:
        return "dense", None  # the reduced dims disappear: the layout is lost
    if mixes & set(space) or len(out) != ndim or not _same_grid(out, first, space):
        return "dense", None
    if not all(_broadcasts(value, ndim, space) for value in consts if value is not None):
        return "dense", None
    return "elementwise", layout


def _order(rule: tuple[Any, ...], ndim: int) -> list[int]:
    if rule[0] == "transpose":
        order = list(range(ndim))
        a, b = rule[1] % ndim, rule[2] % ndim
        order[a], order[b] = order[b], order[a]
        return order
    return [d % ndim for d in rule[1]]


def _check_batch(op: Op, rule: tuple[Any, ...], ndim: int) -> None:
    if ndim == 0:
        return
    if rule[0] in ("permute", "transpose") and _order(rule, ndim)[0] != 0:
        raise UnsupportedModelError(f"{op.name}: moves the batch dim (the windows' rows would mix)")
    if rule[0] in ("pointwise", "reduce") and 0 in {d % ndim for d in rule[1]}:
        raise UnsupportedModelError(f"{op.name}: mixes values across the batch dim (the windows' rows would mix)")


def _same_grid(shape: tuple[int, ...], reference: tuple[int, ...], space: tuple[int, int]) -> bool:
    """Same number of dims, batch size and spatial sizes."""
    return len(shape) == len(reference) and shape[0] == reference[0] and all(shape[d] == reference[d] for d in space)


def _grid(shape: tuple[int, ...], layout: Layout) -> tuple[int, ...]:
    """Batch size and spatial sizes."""
    return (shape[0], *(shape[d] for d in spatial_dims(layout, len(shape))))


def _broadcasts(value: Any, ndim: int, space: tuple[int, int]) -> bool:
    """A constant operand is the same at every position and for every example (size 1 there, or absent)."""
    if not isinstance(value, Tensor):
        return True
    if value.dim() > ndim:
        return False
    offset = ndim - value.dim()
    return all(value.shape[d - offset] == 1 for d in (0, *space) if d >= offset)
