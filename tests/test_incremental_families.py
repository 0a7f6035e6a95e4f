"""The incremental engine on modern CNN families: channels-last layer norm, layer scale, stochastic depth,
squeeze-excitation gates, spatial means and channel shuffles, exact against plain recomputation in float64."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
import torchvision
from test_incremental_occlusion import (  # noqa: F401  (flush_denormals: a fixture used by name)
    calibrate_batch_norm,
    engine_error_on_the_effect,
    flush_denormals,
    occluded_reference,
    relative_error,
)
from torch import nn
from torchvision.models.convnext import CNBlock, CNBlockConfig, ConvNeXt

from zf_attr.occlusion.incremental import IncrementalEngine, UnsupportedModelError, occlusion_flops
from zf_attr.occlusion.incremental.layouts import classify
from zf_attr.occlusion.windows import WindowGrid


def small_convnext() -> nn.Module:
    """ConvNeXt's blocks (depthwise 7×7, channels-last layer norm and linears, layer scale, stochastic depth)."""
    model = ConvNeXt([CNBlockConfig(16, 32, 2), CNBlockConfig(32, None, 1)], stochastic_depth_prob=0.2, num_classes=7)
    for module in model.modules():
        if isinstance(module, CNBlock):  # a layer scale of 1e-6 would hide the blocks from the check
            module.layer_scale.data.uniform_(0.5, 1.5)
    return model


FAMILIES: dict[str, tuple[Callable[[], nn.Module], bool, torch.dtype]] = {
    # (build, stays incremental up to the head, dtype): float32 where float64 depthwise convolutions take minutes
    "convnext": (small_convnext, True, torch.float64),
    "efficientnet_b0": (lambda: torchvision.models.efficientnet_b0(num_classes=7), False, torch.float32),
    "mnasnet0_5": (lambda: torchvision.models.mnasnet0_5(num_classes=7), True, torch.float32),
    "shufflenet_v2_x0_5": (lambda: torchvision.models.shufflenet_v2_x0_5(num_classes=7), True, torch.float32),
    "mobilenet_v3_small": (lambda: torchvision.models.mobilenet_v3_small(num_classes=7), False, torch.float32),
    "regnet_y_400mf": (lambda: torchvision.models.regnet_y_400mf(num_classes=7), False, torch.float32),
}
TOLERANCE = {torch.float64: 1e-10, torch.float32: 1e-4}  # of the occlusion's effect; a wrong region is ~1


@pytest.mark.parametrize("name", list(FAMILIES))
@pytest.mark.usefixtures("flush_denormals")
def test_engine_equals_full_recomputation(name: str) -> None:
    build, incremental_to_the_head, dtype = FAMILIES[name]
    torch.manual_seed(0)
    model = calibrate_batch_norm(build(), 64).to(dtype)
    x = torch.randn(1, 3, 64, 64, dtype=dtype)
    grid = WindowGrid((3, 64, 64), (3, 12, 12), (3, 10, 10))  # the last windows are cut off at the border
    windows = [grid.slices(i) for i in (0, 7, grid.num_windows // 2, grid.num_windows - 1)]
    engine, error = engine_error_on_the_effect(model, x, windows, torch.randn(1, 3, 1, 1, dtype=dtype))
    assert error <= TOLERANCE[dtype]
    first_dense = next(i for i, op in enumerate(engine.ops) if op.kind == "dense")
    if incremental_to_the_head:  # no op before global pooling runs on whole maps
        assert first_dense >= engine.tail_start - 1, engine.ops[first_dense].name
    else:  # the first squeeze-excitation gate scales every position: whole maps from there on (still exact)
        assert "avgpool" in engine.ops[first_dense].name or "mean" in engine.ops[first_dense].name
    if name == "convnext":
        assert engine.layouts.count("nhwc") >= 12  # 3 blocks × (layer norm, 2 linears, GELU) and the norms


def test_convnext_layer_captures_come_back_in_their_true_layout() -> None:
    torch.manual_seed(0)
    model = small_convnext().eval().double()
    x = torch.randn(1, 3, 48, 48, dtype=torch.float64)
    name = "features.1.0.block.3"  # the first linear of a block: an (N, H, W, 4C) value
    engine = IncrementalEngine(model, x, keep_modules=[name])
    window = WindowGrid((3, 48, 48), (3, 8, 8), (3, 8, 8)).slices(5)
    _, (captured,) = engine.run([window], torch.zeros(()), extra=[engine.node_of_module(name)])
    occluded = x.clone()
    occluded[:, window[0], window[1], window[2]] = 0
    seen = []
    handle = model.get_submodule(name).register_forward_hook(lambda module, args, output: seen.append(output))
    try:
        with torch.no_grad():
            model(occluded)
    finally:
        handle.remove()
    assert captured.shape == seen[0].shape and captured.shape[-1] == 4 * 16
    assert relative_error(captured, seen[0]) <= 1e-12


class ChannelsLastHead(nn.Module):
    """A permute that is not ConvNeXt's, a layer norm over width (not pointwise), a mean over channels."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3, padding=1)
        self.norm = nn.LayerNorm(10)
        self.fc = nn.Linear(6, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.norm(self.conv(x))  # normalises each row over its 10 columns: whole maps
        y = y.mean(1, keepdim=True) * y  # over channels: pointwise
        z = y.permute(0, 3, 2, 1)  # (N, W, H, C): width and height swapped
        return self.fc(z).flatten(1)


def test_ops_that_mix_positions_run_on_whole_maps_and_stay_exact() -> None:
    torch.manual_seed(0)
    model = ChannelsLastHead().eval().double()
    x = torch.randn(2, 3, 10, 10, dtype=torch.float64)
    engine = IncrementalEngine(model, x)
    kinds = {op.name: op.kind for op in engine.ops}
    assert kinds["norm"] == "dense" and kinds["permute"] == "dense" and kinds["conv"] == "spatial"
    grid = WindowGrid((3, 10, 10), (3, 3, 3), (3, 3, 3))
    windows = [grid.slices(i) for i in range(grid.num_windows)]
    expected = occluded_reference(model, x, windows, 0.0)
    assert relative_error(engine.run(windows, torch.zeros((), dtype=torch.float64)), expected) <= 1e-12


class MixesTheBatch(nn.Module):
    def __init__(self, how: str) -> None:
        super().__init__()
        self.conv, self.how = nn.Conv2d(3, 4, 3), how

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        if self.how == "permute":
            return y.permute(1, 0, 2, 3).flatten(1)
        if self.how == "mean":
            return y - y.mean(0, keepdim=True)
        return y.reshape(-1, 4)


@pytest.mark.parametrize("how", ["permute", "mean", "reshape"])
def test_an_op_mixing_the_examples_is_refused(how: str) -> None:
    with pytest.raises(UnsupportedModelError, match="batch"):
        IncrementalEngine(MixesTheBatch(how).eval(), torch.randn(2, 3, 8, 8))


def test_a_constant_that_varies_over_space_is_not_pointwise() -> None:
    op = IncrementalEngine(nn.Sequential(nn.Conv2d(3, 4, 1)).eval(), torch.randn(1, 3, 4, 4)).ops[1]
    op.kind, op.rule = "elementwise", ("pointwise", ())
    shape = (1, 4, 4, 4)
    assert classify(op, ["last2", None], [shape, ()], [None, torch.ones(4, 1, 1)], shape) == ("elementwise", "last2")
    assert classify(op, ["last2", None], [shape, ()], [None, torch.ones(4, 4, 1)], shape) == ("dense", None)
    assert classify(op, ["last2", None], [shape, ()], [None, torch.ones(2, 4, 1, 1)], shape) == ("dense", None)


def test_flop_bounds_count_the_new_families() -> None:
    flops = occlusion_flops(small_convnext().eval(), (3, 64, 64), window=8, stride=8)
    assert flops.bound > 1.2 and len(flops.layers) == 2 + 3 * 3 + 1  # stem, down-sampling, 3 per block, head
