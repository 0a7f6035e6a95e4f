"""FLOP accounting: full recomputation vs the changed regions, summed over every window of a sweep.

Counts the multiply-accumulates of convolutions and linear layers (the arithmetic that dominates; FLOPs are
twice as many, which cancels in the ratio). Per window, each layer's changed region is the exact bounding box
of what the window can change there (its projective field, as the engine computes it but without the
per-batch rounding up to a common size); once it covers the whole map, or after flatten / linear / global
pooling, the layer counts in full. ``full / incremental`` is the speed-up an exact engine can reach at best.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from zf_attr.occlusion.incremental.engine import IncrementalEngine
from zf_attr.occlusion.incremental.graph import Op
from zf_attr.occlusion.incremental.regions import affected_outputs
from zf_attr.occlusion.windows import WindowGrid

__all__ = ["OcclusionFlops", "occlusion_flops", "window_regions"]

_BIG = 1 << 40


@dataclass(frozen=True)
class OcclusionFlops:
    """Multiply-accumulates of an occlusion sweep, per layer and in total.

    Attributes:
        layers: ``(op name, MACs of one full pass, MACs of the changed regions summed over all windows)``.
        num_windows: windows in the sweep.
    """

    layers: tuple[tuple[str, int, int], ...]
    num_windows: int

    @property
    def full_macs(self) -> int:
        """MACs of plain recomputation: one full pass per window."""
        return self.num_windows * sum(full for _, full, _ in self.layers)

    @property
    def incremental_macs(self) -> int:
        """MACs of the changed regions over all windows."""
        return sum(changed for _, _, changed in self.layers)

    @property
    def bound(self) -> float:
        """``full_macs / incremental_macs``: the best speed-up exact incremental inference can reach."""
        return self.full_macs / max(1, self.incremental_macs)


def occlusion_flops(model: nn.Module, input_shape: tuple[int, int, int], window: int, stride: int) -> OcclusionFlops:
    """Full vs changed-region MACs of a square-window sweep (all channels occluded) over one image.

    Args:
        model: a model the engine supports (see :class:`~zf_attr.occlusion.incremental.IncrementalEngine`).
        input_shape: ``(C, H, W)`` of one image.
        window: side of the square window.
        stride: step between windows (Captum's geometry: the last window is cut off at the border).

    Example:
        >>> import torchvision
        >>> model = torchvision.models.vgg11(weights=None).eval()
        >>> flops = occlusion_flops(model, (3, 64, 64), window=16, stride=16)
        >>> flops.num_windows, round(flops.bound, 1) > 1
        (16, True)
    """
    device = next(model.parameters(), torch.empty(0)).device
    engine = IncrementalEngine(model, torch.zeros(1, *input_shape, device=device))  # the ops as the engine runs them
    ops, shapes = engine.ops, engine.shapes  # shapes as the engine holds them: spatial dims last
    grid = WindowGrid(tuple(input_shape), (input_shape[0], window, window), (1, stride, stride))
    boxes = [[s[1].start, s[1].stop, s[2].start, s[2].stop] for s in map(grid.slices, range(grid.num_windows))]
    regions = window_regions(ops, shapes, torch.tensor(boxes, dtype=torch.long))
    layers = []
    for i, op in enumerate(ops):
        out = shapes[i]
        if op.macs_per_output:
            per_position = op.macs_per_output * (math.prod(out[1:-2]) if len(out) >= 4 else 1)
            full = op.macs_per_output * int(torch.tensor(out[1:]).prod())
            region = regions[i]
            if isinstance(region, Tensor):
                area = (region[:, 1] - region[:, 0]).clamp_min(0) * (region[:, 3] - region[:, 2]).clamp_min(0)
                changed = int(area.sum()) * per_position
            else:
                changed = full * grid.num_windows if region == "full" else 0
            layers.append((op.name, full, changed))
    return OcclusionFlops(tuple(layers), grid.num_windows)


def window_regions(ops: list[Op], shapes: list[tuple[int, ...]], boxes: Tensor) -> list[Tensor | str | None]:
    """Each op's changed region per window: ``(windows, 4)`` rows ``(r0, r1, c0, c1)``, ``"full"`` or ``None``.

    ``boxes`` are the windows' input rectangles ``(windows, 4)``; ``shapes`` the ops' output shapes. The exact
    per-window projective fields (no common batch size, no shifting), as :func:`occlusion_flops` counts them.
    """
    regions: list[Tensor | str | None] = [None] * len(ops)
    for i, op in enumerate(ops):
        ins = [regions[j] for j in op.inputs]
        out = shapes[i]
        if op.kind == "input":
            regions[i] = boxes
        elif op.kind == "const" or all(r is None for r in ins):
            regions[i] = None
        elif op.kind == "elementwise" and len(out) >= 4 and all(r is None or isinstance(r, Tensor) for r in ins):
            regions[i] = _union([r for r in ins if isinstance(r, Tensor)])
        elif op.kind == "spatial" and isinstance(ins[0], Tensor) and len(out) == 4 and op.geometry is not None:
            box = ins[0]
            r0, r1 = affected_outputs(box[:, 0], box[:, 1], op.geometry[0], out[2])
            c0, c1 = affected_outputs(box[:, 2], box[:, 3], op.geometry[1], out[3])
            regions[i] = torch.stack([r0, r1, c0, c1], dim=1)
        else:
            regions[i] = "full"
    return regions


def _union(boxes: list[Tensor]) -> Tensor:
    """Per-row bounding box of several ``(rows, 4)`` boxes, ignoring empty ones."""
    cleaned = []
    for box in boxes:
        empty = ((box[:, 1] <= box[:, 0]) | (box[:, 3] <= box[:, 2]))[:, None]
        cleaned.append(torch.where(empty, torch.tensor([_BIG, -_BIG, _BIG, -_BIG]), box))
    stacked = torch.stack(cleaned)
    return torch.stack(
        [stacked[:, :, 0].amin(0), stacked[:, :, 1].amax(0), stacked[:, :, 2].amin(0), stacked[:, :, 3].amax(0)], dim=1
    )
