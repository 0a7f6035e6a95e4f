"""Window geometry of an occlusion sweep: where Captum's ``Occlusion`` places its sliding windows.

Per input, along every non-batch axis of size ``D`` with window ``w`` and stride ``s``, there are
``ceil((D - w) / s) + 1`` windows starting at ``0, s, 2s, ...``. When ``(D - w)`` is not a multiple of ``s`` the
last window starts past ``D - w`` and is **cut off** at the border (Captum pads its window tensor with negative
padding), so it is smaller than ``w`` rather than shifted back to fit. Windows are numbered in row-major order
(the last axis moves fastest), so ``ids.reshape(grid.grid_shape)`` lays them out as a map.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import torch
from torch import Tensor

__all__ = ["WindowGrid", "format_window_grids"]


@dataclass(frozen=True)
class WindowGrid:
    """The sliding windows over one input's non-batch shape.

    Args:
        shape: the input's shape without the batch dimension.
        window: the window's extent along each of those axes.
        strides: the step along each axis.

    Example:
        >>> grid = WindowGrid(shape=(1, 10), window=(1, 4), strides=(1, 4))
        >>> grid.starts, grid.num_windows
        (((0,), (0, 4, 8)), 3)
        >>> grid.slices(2)  # the last window is cut off at the border
        (slice(0, 1, None), slice(8, 10, None))
        >>> grid.coverage().tolist()
        [[1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]]
    """

    shape: tuple[int, ...]
    window: tuple[int, ...]
    strides: tuple[int, ...]

    @cached_property
    def starts(self) -> tuple[tuple[int, ...], ...]:
        """Start index of every window position, per axis."""
        return tuple(
            tuple(step * s for step in range(math.ceil((d - w) / s) + 1))
            for d, w, s in zip(self.shape, self.window, self.strides, strict=True)
        )

    @property
    def grid_shape(self) -> tuple[int, ...]:
        """Number of window positions along each axis."""
        return tuple(len(axis) for axis in self.starts)

    @property
    def num_windows(self) -> int:
        """Total number of windows (product of :attr:`grid_shape`; 1 for a 0-axis input)."""
        return math.prod(self.grid_shape)

    def position(self, window_id: int) -> tuple[int, ...]:
        """Grid index (one entry per axis) of window ``window_id`` (row-major numbering)."""
        if not 0 <= window_id < self.num_windows:
            raise IndexError(f"window_id {window_id} out of range for {self.num_windows} windows")
        index = []
        for count in reversed(self.grid_shape):
            window_id, rest = divmod(window_id, count)
            index.append(rest)
        return tuple(reversed(index))

    @property
    def central_window(self) -> int:
        """Id of the window at the middle of every axis: the one whose changes spread furthest (memory estimates).

        Example:
            >>> WindowGrid((3, 8, 8), (3, 2, 2), (3, 2, 2)).central_window  # a 4 x 4 grid: position (0, 2, 2)
            10
        """
        window_id = 0
        for count in self.grid_shape:
            window_id = window_id * count + count // 2
        return window_id

    def slices(self, window_id: int) -> tuple[slice, ...]:
        """Index of window ``window_id`` into a non-batch slice of the input (cut off at the border)."""
        return tuple(
            slice(axis[i], min(axis[i] + w, d))
            for axis, i, w, d in zip(self.starts, self.position(window_id), self.window, self.shape, strict=True)
        )

    def coverage(self, device: torch.device | str | None = None, dtype: torch.dtype = torch.float32) -> Tensor:
        """Number of windows covering each position, shaped like :attr:`shape` (all ≥ 1 for valid strides)."""
        result = torch.ones((), dtype=dtype, device=device)
        for axis_starts, w, d in zip(self.starts, self.window, self.shape, strict=True):
            counts = torch.zeros(d, dtype=dtype, device=device)
            for start in axis_starts:
                counts[start : start + w] += 1
            result = result.unsqueeze(-1) * counts
        return result


def format_window_grids(
    inputs: tuple[Tensor, ...], sliding_window_shapes: Any, strides: Any, was_tuple: bool
) -> tuple[WindowGrid, ...]:
    """Validate Captum-style ``sliding_window_shapes`` and ``strides`` and build one grid per input.

    Accepts Captum's forms: for one tensor, a tuple of ints; for a tuple of tensors, a tuple of tuples.
    ``strides`` is ``None`` (1 everywhere), an int, a tuple of ints (one per axis for one tensor, one per input
    for several), or a tuple of per-input ints / tuples.

    Raises:
        ValueError: naming ``sliding_window_shapes`` or ``strides`` for anything Captum would assert on (window
            larger than the input; a stride larger than the window where the window does not span the axis),
            and for windows or strides below 1.
    """
    n = len(inputs)
    where = (lambda i: f" for inputs[{i}]") if was_tuple else (lambda i: "")
    shapes = sliding_window_shapes
    if not isinstance(shapes, tuple) or (shapes and not isinstance(shapes[0], (int, tuple))):
        raise ValueError(
            f"sliding_window_shapes must be a tuple of ints (one per non-batch dimension), or a tuple of such "
            f"tuples for tuple inputs; got {sliding_window_shapes!r}"
        )
    if not shapes or isinstance(shapes[0], int):
        shapes = (shapes,)
    if len(shapes) != n:
        raise ValueError(f"sliding_window_shapes has {len(shapes)} window shapes but inputs has {n} tensors")
    if strides is None:
        strides = (1,) * n
    if n == 1 and not (isinstance(strides, tuple) and len(strides) == 1):
        strides = (strides,)
    if not isinstance(strides, tuple) or len(strides) != n:
        raise ValueError(f"strides must give one int or tuple per input tensor ({n}), got {strides!r}")
    grids = []
    for i, (tensor, window, stride) in enumerate(zip(inputs, shapes, strides, strict=True)):
        dims = tuple(tensor.shape[1:])
        if not isinstance(window, tuple) or len(window) != len(dims) or not all(_is_int(w) for w in window):
            raise ValueError(
                f"sliding_window_shapes{where(i)} is {window!r} but should be a tuple of {len(dims)} ints "
                f"(input shape {tuple(tensor.shape)}: the window covers every dimension but the batch)"
            )
        if _is_int(stride):
            stride = (stride,) * len(dims)
        if not isinstance(stride, tuple) or len(stride) != len(dims) or not all(_is_int(s) for s in stride):
            raise ValueError(
                f"strides{where(i)} is {stride!r}; it must be an int or a tuple of {len(dims)} ints "
                f"(input shape {tuple(tensor.shape)})"
            )
        if any(w < 1 for w in window):
            raise ValueError(f"sliding_window_shapes{where(i)} is {window!r}; every extent must be at least 1")
        if any(w > d for w, d in zip(window, dims, strict=True)):
            raise ValueError(f"sliding_window_shapes{where(i)} {window!r} exceeds the input dimensions {dims}")
        if any(s < 1 for s in stride):
            raise ValueError(f"strides{where(i)} is {stride!r}; every stride must be at least 1")
        if any(s > w and w < d for s, w, d in zip(stride, window, dims, strict=True)):
            raise ValueError(
                f"strides{where(i)} {stride!r} is larger than sliding_window_shapes {window!r} along a dimension "
                f"the window does not span, which would leave positions unoccluded (Captum asserts the same)"
            )
        grids.append(WindowGrid(dims, tuple(int(w) for w in window), tuple(int(s) for s in stride)))
    return tuple(grids)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
