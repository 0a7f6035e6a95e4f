"""The incremental occlusion engine: exact against plain recomputation, fallbacks, options, FLOP accounting."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
import torchvision
from captum.attr import Occlusion
from conftest import assert_bitwise_equal, assert_clean, quiet, relative_error, snapshot
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from zf_attr import OcclusionSensitivity
from zf_attr.analysis import occlusion_study
from zf_attr.errors import ZFAttrWarning
from zf_attr.models import zfnet
from zf_attr.occlusion import WindowGrid
from zf_attr.occlusion.incremental import (
    AxisGeometry,
    IncrementalEngine,
    UnsupportedModelError,
    affected_outputs,
    fit_regions,
    needed_inputs,
    occlusion_flops,
)
from zf_attr.occlusion.incremental.regions import batch_order, brute_force_affected

# --- region arithmetic -------------------------------------------------------------------------------------------


@st.composite
def geometries(draw):
    kernel, stride = draw(st.integers(1, 5)), draw(st.integers(1, 4))
    dilation = draw(st.integers(1, 3))
    axis = AxisGeometry(kernel, stride, draw(st.integers(0, (kernel - 1) * dilation)), dilation)
    size = draw(st.integers(axis.span, 24))
    lo = draw(st.integers(0, size - 1))
    hi = draw(st.integers(lo + 1, size))
    return axis, size, lo, hi


@settings(max_examples=200, deadline=None)
@given(geometries())
def test_affected_outputs_match_brute_force_and_a_real_convolution(case) -> None:
    axis, size, lo, hi = case
    out_size = (size + 2 * axis.padding - axis.span) // axis.stride + 1
    first, last = affected_outputs(lo, hi, axis, out_size)
    exact = brute_force_affected(lo, hi, axis, size, out_size)
    if exact != (0, 0):  # never misses an affected output; exact without dilation gaps
        assert first <= exact[0] and exact[1] <= last
        if axis.dilation == 1:
            assert (first, last) == exact
    # a conv1d perturbed inside [lo, hi) changes nothing outside [first, last)
    x = torch.randn(1, 1, size, dtype=torch.float64)
    weight = torch.rand(1, 1, axis.kernel, dtype=torch.float64) + 0.5
    y = x.clone()
    y[..., lo:hi] += 1.0
    conv = lambda t: F.conv1d(t, weight, None, axis.stride, axis.padding, axis.dilation)  # noqa: E731
    changed = (conv(x) != conv(y))[0, 0].nonzero().flatten().tolist()
    assert all(first <= o < last for o in changed)
    # the outputs [first, last) read exactly the inputs needed_inputs names
    if last > first:
        start, stop = needed_inputs(first, last, axis)
        reads = [
            o * axis.stride - axis.padding + j * axis.dilation for o in range(first, last) for j in range(axis.kernel)
        ]
        assert (start, stop) == (min(reads), max(reads) + 1)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 20), st.integers(0, 8)), min_size=1, max_size=6), st.integers(1, 30))
def test_fit_regions_one_length_inside_the_map(intervals, size) -> None:
    lo = torch.tensor([min(a, size - 1) for a, _ in intervals])
    hi = torch.tensor([min(a + n, size) for a, n in intervals])
    starts, length = fit_regions(lo, hi, size)
    assert 1 <= length <= size
    assert bool((starts >= 0).all() and (starts + length <= size).all())
    assert bool(((starts <= lo) & (starts + length >= hi)).all())  # every row's interval inside its region


# --- exact on real models ----------------------------------------------------------------------------------------


def occluded_reference(model, x, windows, fill):
    copies = x.repeat(len(windows), 1, 1, 1)
    n = x.shape[0]
    fill = torch.broadcast_to(torch.as_tensor(fill, dtype=x.dtype), x.shape)
    for k, window in enumerate(windows):
        rows = slice(k * n, (k + 1) * n)
        copies[(rows, *window)] = fill[(slice(None), *window)]
    with torch.no_grad():
        return model(copies)


def some_windows(grid: WindowGrid, count: int = 5) -> list:
    """Corners (incl. the cut-off last ones), the centre, and a spread of others."""
    ids = {0, grid.num_windows - 1, grid.num_windows // 2, grid.grid_shape[-1] - 1}
    ids |= set(range(0, grid.num_windows, max(1, grid.num_windows // count)))
    return [grid.slices(i) for i in sorted(ids)]


MODELS = {
    "resnet18": (lambda: torchvision.models.resnet18(num_classes=7), 32, (7, 6)),
    "vgg11": (lambda: torchvision.models.vgg11(num_classes=7), 32, (8, 5)),
    "googlenet": (
        lambda: torchvision.models.googlenet(num_classes=7, aux_logits=False, init_weights=False),
        40,
        (9, 7),
    ),
    "densenet121": (lambda: torchvision.models.densenet121(num_classes=7), 32, (6, 5)),
    "mobilenet_v2": (lambda: torchvision.models.mobilenet_v2(num_classes=7), 32, (7, 4)),
    "zfnet": (lambda: zfnet(weights="DEFAULT"), 112, (13, 10)),
}


def calibrate_batch_norm(model: nn.Module, size: int = 32) -> nn.Module:
    """Running statistics of random images (so activations neither vanish nor explode), then eval mode."""
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.momentum = None  # cumulative average
    model.train()
    with torch.no_grad():
        model(torch.randn(2, 3, size, size))
    return model.eval()


@pytest.fixture
def flush_denormals():
    """Tiny float64 values (MobileNetV2's late layers) take a CPU's slow denormal path: minutes instead of 1 s."""
    torch.set_flush_denormal(True)
    try:
        yield
    finally:
        torch.set_flush_denormal(False)  # torch's default


@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.usefixtures("flush_denormals")
def test_engine_equals_full_recomputation_in_float64(name: str) -> None:
    build, size, (window, stride) = MODELS[name]
    dtype, tolerance = torch.float64, 1e-10
    model = calibrate_batch_norm(build(), size).to(dtype)
    x = torch.randn(1 if name in ("densenet121", "googlenet", "mobilenet_v2") else 2, 3, size, size, dtype=dtype)
    assert (size - window) % stride != 0  # the last windows are cut off at the border
    grid = WindowGrid((3, size, size), (3, window, window), (3, stride, stride))
    heavy = name in ("densenet121", "googlenet", "mobilenet_v2")  # slow float64 (depthwise) convolutions
    windows = (
        [grid.slices(i) for i in (0, grid.num_windows // 2, grid.num_windows - 1)] if heavy else some_windows(grid)
    )
    _, error = engine_error_on_the_effect(model, x, windows, torch.randn(1, 3, 1, 1, dtype=dtype))
    assert error <= tolerance


def engine_error_on_the_effect(
    model: nn.Module, x: torch.Tensor, windows: list, fill: torch.Tensor
) -> tuple[IncrementalEngine, float]:
    """The engine for ``model`` on ``x``, and its error relative to the occlusion's effect (checked to be real)."""
    with torch.no_grad():
        unoccluded = model(x)
        engine = IncrementalEngine(model, x, unoccluded)
    expected = occluded_reference(model, x, windows, fill) - unoccluded.repeat(len(windows), 1)
    actual = engine.run(windows, fill) - unoccluded.repeat(len(windows), 1)
    assert expected.abs().max() > 1e-3 * unoccluded.abs().max()
    return engine, relative_error(actual, expected)


class EveryOp(nn.Module):
    """Every op of the table, with border effects: strides, padding, dilation, groups, ceil mode, concat, add."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 5, stride=2, padding=2)
        self.bn1 = nn.BatchNorm2d(8)
        self.act = nn.ReLU(inplace=True)
        self.pool1 = nn.MaxPool2d(3, stride=2, padding=1, ceil_mode=True)
        self.lrn = nn.LocalResponseNorm(3, alpha=1e-2, beta=0.75, k=2.0)
        self.dilated = nn.Conv2d(8, 8, 3, padding=2, dilation=2)
        self.grouped = nn.Conv2d(8, 8, 3, padding=1, groups=4)
        self.depthwise = nn.Conv2d(16, 16, 3, padding=1, groups=16)
        self.relu6 = nn.ReLU6()
        self.avg = nn.AvgPool2d(3, stride=1, padding=1)
        self.avg_ceil = nn.AvgPool2d(2, stride=2, ceil_mode=True)
        self.pool2 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.drop = nn.Dropout(0.5)
        self.hswish = nn.Hardswish()
        self.gap = nn.AdaptiveAvgPool2d(2)
        self.fc = nn.Linear(16 * 4, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.lrn(self.pool1(self.act(self.bn1(self.conv1(x)))))
        y = torch.cat([self.dilated(x), F.relu(self.grouped(x), inplace=True)], dim=1)
        y = self.relu6(self.depthwise(y)) + y
        y = self.hswish(self.avg(y)) * torch.sigmoid(y)
        y = self.pool2(self.avg_ceil(y) - 0.5)
        return self.fc(torch.flatten(self.drop(self.gap(y)), 1))


@pytest.mark.parametrize(("size", "window", "stride"), [(29, 5, 3), (23, 1, 1)])
def test_engine_equals_full_recomputation_on_every_supported_op(size: int, window: int, stride: int) -> None:
    model = calibrate_batch_norm(EveryOp()).double()
    ops = IncrementalEngine(model, torch.zeros(1, 3, size, size, dtype=torch.float64)).ops
    assert {op.kind for op in ops} == {"input", "spatial", "elementwise", "dense", "output"}
    x = torch.randn(1, 3, size, size, dtype=torch.float64)
    grid = WindowGrid((3, size, size), (2, window, window), (1, stride, stride))  # also partial channels
    windows = [grid.slices(i) for i in range(grid.num_windows)][:: max(1, grid.num_windows // 40)]
    expected = occluded_reference(model, x, windows, 0.25)
    actual = IncrementalEngine(model, x).run(windows, torch.tensor(0.25, dtype=torch.float64))
    assert relative_error(actual, expected) <= 1e-11


@pytest.mark.parametrize("build", [EveryOp, lambda: torchvision.models.vgg11(num_classes=7)], ids=["every-op", "vgg11"])
def test_dense_tail_on_all_windows_equals_batch_by_batch(build) -> None:
    torch.manual_seed(0)
    model = calibrate_batch_norm(build(), 32).double()
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    engine = IncrementalEngine(model, x)
    assert all(op.kind in ("dense", "const", "output") for op in engine.ops[engine.tail_start :])
    assert engine.ops[engine.tail_start - 1].kind not in ("dense", "const") and engine.tail_bytes_per_window > 0
    grid = WindowGrid((3, 32, 32), (3, 6, 6), (3, 5, 5))
    windows = [grid.slices(i) for i in range(0, grid.num_windows, 3)]  # 17 windows: sub-batches 5, 5, 5, 2
    fill = torch.tensor(0.5, dtype=torch.float64)
    expected = occluded_reference(model, x, windows, 0.5)
    assert relative_error(engine.run(windows, fill, sub_batch=5), expected) <= 1e-11
    assert relative_error(engine.run(windows, fill, sub_batch=5), engine.run(windows, fill)) <= 1e-12


@settings(max_examples=50, deadline=None)
@given(shape=st.tuples(st.integers(1, 3), st.integers(1, 12), st.integers(1, 12)), per_batch=st.integers(1, 40))
def test_batch_order_is_a_permutation_grouping_mirror_windows(shape, per_batch) -> None:
    grid = WindowGrid(shape, (1, 1, 1), (1, 1, 1))
    positions = [grid.position(i) for i in range(grid.num_windows)]
    order = batch_order(positions, grid.grid_shape, per_batch)
    assert sorted(order) == list(range(grid.num_windows))

    def distances(i: int) -> tuple[int, ...]:
        return tuple(min(p, n - 1 - p) for p, n in zip(positions[i], shape, strict=True))

    # windows at the same distances from the borders (mirror images, same region sizes) come one after another
    runs = [distances(i) for i in order]
    assert len(set(runs)) == sum(1 for a, b in zip([None, *runs], runs, strict=False) if a != b)


def test_attribution_equals_captum_and_leaves_the_model_untouched() -> None:
    model = calibrate_batch_norm(EveryOp())
    model.conv1.weight.requires_grad_(False)
    before = snapshot(model)
    x = torch.randn(2, 3, 30, 30)
    kwargs = dict(sliding_window_shapes=(3, 7, 7), strides=(3, 4, 4), target=[1, 3], baselines=0.3)
    method = OcclusionSensitivity(model, engine="incremental")
    actual = method.attribute(x, **kwargs)
    assert method.last_engine == "incremental" and method.last_approximation_error is None
    with quiet():
        expected = Occlusion(model).attribute(x, perturbations_per_eval=16, **kwargs)
    assert relative_error(actual, expected) <= 1e-4
    assert_bitwise_equal(model, before)
    assert_clean(model)
    assert not model.training and not model.conv1.weight.requires_grad and model.fc.weight.requires_grad
    assert not torch.nn.modules.module._global_forward_hooks


# --- fallback ----------------------------------------------------------------------------------------------------


class DataDependent(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        if x.shape[-1] > 1:  # Python control flow on a traced value: not traceable by torch.fx
            x = -x
        return self.fc(x.mean(dim=(2, 3)))


class Rolled(DataDependent):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.roll(self.conv(x), 1, dims=2).amax(dim=(2, 3)))


@pytest.mark.parametrize(("model", "reason"), [(DataDependent(), "torch.fx cannot trace"), (Rolled(), "roll")])
def test_untraceable_or_unknown_op_falls_back_once_with_a_note(model: nn.Module, reason: str) -> None:
    model.eval()
    x = torch.randn(1, 3, 12, 12)
    kwargs = dict(sliding_window_shapes=(3, 4, 4), strides=2, target=2)
    method = OcclusionSensitivity(model, engine="incremental")
    with pytest.warns(ZFAttrWarning, match=reason):
        actual = method.attribute(x, **kwargs)
    assert method.last_engine == "batched" and reason in method.last_engine_note
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # noted once, not on every call
        method.attribute(x, **kwargs)
    with quiet():
        expected = Occlusion(model).attribute(x, **kwargs)
    assert relative_error(actual, expected) <= 1e-5
    assert_clean(model)
    with pytest.raises(UnsupportedModelError, match=reason):
        IncrementalEngine(model, x)


def test_auto_choice_and_memory_budget() -> None:
    small = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(4 * 6 * 6, 2)).eval()
    method = OcclusionSensitivity(small)
    method.attribute(torch.randn(1, 3, 8, 8), (3, 2, 2), target=0)
    assert method.last_engine == "batched" and "small model" in method.last_engine_note
    model = torchvision.models.resnet18(num_classes=3).eval()
    x = torch.randn(1, 3, 48, 48)
    method = OcclusionSensitivity(model)
    auto = method.attribute(x, (3, 16, 16), strides=16, target=0)
    assert method.last_engine == "incremental"
    method = OcclusionSensitivity(model, engine="incremental")
    with pytest.warns(ZFAttrWarning, match="memory_budget"):
        tight = method.attribute(x, (3, 16, 16), strides=16, target=0, memory_budget=2**20)
    assert method.last_engine == "batched"
    assert relative_error(auto, tight) <= 1e-4


def test_the_default_budget_gives_the_engine_at_least_four_windows_a_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    """One window a batch cannot spread a batch's fixed cost (ConvNeXt-T at 224 ran at 60 % of its bound so)."""
    import zf_attr.analysis.occlusion.study as study_module
    import zf_attr.attr.occlusion as occlusion_module

    for module in (occlusion_module, study_module):  # a default budget below one window
        monkeypatch.setattr(module, "default_memory_budget", lambda device: 1)
    model = calibrate_batch_norm(torchvision.models.resnet18(num_classes=3))
    x = torch.randn(1, 3, 48, 48)
    kwargs = {"sliding_window_shapes": (3, 12, 12), "strides": 12, "target": 0}  # 16 windows
    method = OcclusionSensitivity(model, engine="incremental")
    default = method.attribute(x, **kwargs)
    assert (method.last_engine, method.last_perturbations_per_eval) == ("incremental", 4)
    batches: list[int] = []
    original = IncrementalEngine.run
    monkeypatch.setattr(IncrementalEngine, "run", lambda self, windows, *a, **k: batches.append(len(windows))
                        or original(self, windows, *a, **k))  # fmt: skip
    study = occlusion_study(model, x[0], 0, window=12, stride=12, engine="incremental")
    assert batches == [4, 4, 4, 4]
    explicit = OcclusionSensitivity(model, engine="batched")
    with pytest.warns(ZFAttrWarning, match="memory_budget"):  # an explicit budget is kept: one window a pass
        reference = explicit.attribute(x, memory_budget=1, **kwargs)
    assert explicit.last_perturbations_per_eval == 1
    assert relative_error(default, reference) <= 1e-4
    reference_study = occlusion_study(model, x[0], 0, window=12, stride=12, engine="batched")
    assert relative_error(study.target_probability, reference_study.target_probability) <= 1e-4


def test_bad_engine_options_name_the_argument() -> None:
    model = nn.Linear(2, 2)
    with pytest.raises(ValueError, match="engine"):
        OcclusionSensitivity(model, engine="fast")
    with pytest.raises(ValueError, match="approximate"):
        OcclusionSensitivity(model, approximate=1.5)
    with pytest.raises(ValueError, match="dtype"):
        OcclusionSensitivity(model, dtype=torch.int8)
    with pytest.raises(TypeError, match="channels_last"):
        OcclusionSensitivity(model, channels_last="yes")
    with pytest.raises(ValueError, match="engine"):
        occlusion_study(model, torch.randn(3, 8, 8), 0, window=4, stride=4, engine="fast")


# --- approximate mode, low precision, channels_last --------------------------------------------------------------


def test_approximate_bf16_and_channels_last_report_their_error() -> None:
    model = calibrate_batch_norm(torchvision.models.resnet18(num_classes=4))
    x = torch.randn(1, 3, 32, 32)
    kwargs = dict(sliding_window_shapes=(3, 8, 8), strides=(3, 8, 8), target=1)
    exact = OcclusionSensitivity(model, engine="incremental").attribute(x, **kwargs)
    full_cap = OcclusionSensitivity(model, engine="incremental", approximate=1.0)
    assert relative_error(full_cap.attribute(x, **kwargs), exact) <= 1e-4
    assert full_cap.last_approximation_error <= 1e-4
    capped = OcclusionSensitivity(model, engine="incremental", approximate=0.3)
    approximate = capped.attribute(x, **kwargs)
    assert 1e-4 < capped.last_approximation_error < 10
    assert relative_error(approximate, exact) > 1e-4
    low = OcclusionSensitivity(model, engine="incremental", dtype=torch.bfloat16, channels_last=True)
    result = low.attribute(x, **kwargs)
    assert result.dtype == torch.float32 and 0 < low.last_approximation_error < 1
    assert relative_error(result, exact) < 1
    fast_layout = OcclusionSensitivity(model, engine="incremental", channels_last=True)
    assert relative_error(fast_layout.attribute(x, **kwargs), exact) <= 1e-4


# --- FLOP accounting and the study -------------------------------------------------------------------------------


def test_flop_accounting_by_hand_and_the_issue_bounds() -> None:
    model = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.Flatten(), nn.Linear(2 * 8 * 8, 3)).eval()
    flops = occlusion_flops(model, (1, 8, 8), window=2, stride=2)  # 16 windows
    conv_full, linear_full = 8 * 8 * 2 * 9, 2 * 8 * 8 * 3
    changed = 0
    for r in range(0, 8, 2):
        for c in range(0, 8, 2):
            rows = brute_force_affected(r, r + 2, AxisGeometry(3, 1, 1), 8, 8)
            cols = brute_force_affected(c, c + 2, AxisGeometry(3, 1, 1), 8, 8)
            changed += (rows[1] - rows[0]) * (cols[1] - cols[0]) * 2 * 9
    assert flops.layers[0][1:] == (conv_full, changed)
    assert flops.layers[1][1:] == (linear_full, 16 * linear_full)
    assert flops.full_macs == 16 * (conv_full + linear_full)
    vgg = occlusion_flops(torchvision.models.vgg11(num_classes=10).eval(), (3, 224, 224), window=16, stride=16)
    assert vgg.bound == pytest.approx(11.0, rel=0.02)  # the issue's ~11x for VGG-11


def test_study_on_the_engine_equals_the_batched_study() -> None:
    model = calibrate_batch_norm(torchvision.models.resnet18(num_classes=5))
    image = torch.randn(3, 48, 48)
    batched = occlusion_study(model, image, 2, window=12, stride=9, engine="batched")
    fast = occlusion_study(model, image, 2, window=12, stride=9, engine="incremental")
    assert fast.layer == "layer4"
    assert relative_error(fast.map_activation, batched.map_activation) <= 1e-4
    assert relative_error(fast.target_probability, batched.target_probability) <= 1e-4
    assert torch.equal(fast.top_class, batched.top_class)
    assert_clean(model)


def test_auto_measures_both_engines_and_keeps_the_numbers() -> None:
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None).eval()
    image = torch.randn(1, 3, 48, 48)
    kwargs = {"sliding_window_shapes": (3, 6, 6), "strides": (3, 2, 2), "target": 3}  # 22 x 22 windows
    auto = OcclusionSensitivity(model)
    measured = auto.attribute(image, perturbations_per_eval=16, **kwargs)  # 484 windows >= 4 x (16 + 16): measured
    assert auto.last_engine in ("incremental", "batched")
    assert auto.last_engine_note.startswith("engine='auto' measured ") and auto.last_engine in auto.last_engine_note
    reference = OcclusionSensitivity(model, engine="batched").attribute(image, **kwargs)
    assert (measured - reference).abs().max() <= 1e-4 * reference.abs().max()


def test_auto_times_the_engine_on_windows_of_typical_cost(monkeypatch: pytest.MonkeyPatch) -> None:
    """In row-major order the timed windows were the top border's, cheap because the border clips them."""
    from zf_attr.occlusion.incremental.engine import IncrementalEngine

    runs: list[list[tuple[slice, ...]]] = []
    original = IncrementalEngine.run
    monkeypatch.setattr(IncrementalEngine, "run", lambda self, windows, *a, **k: runs.append(list(windows))
                        or original(self, windows, *a, **k))  # fmt: skip
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None).eval()
    OcclusionSensitivity(model).attribute(  # 8 x 8 windows: 28 on the border, 36 inside
        torch.randn(1, 3, 64, 64), (3, 8, 8), strides=(3, 8, 8), target=3, perturbations_per_eval=1
    )
    warm_up, timed = runs[0], runs[1]  # then two batched batches, then the winner's
    assert len(timed) == 1 and timed != warm_up
    rows, cols = timed[0][1].start // 8, timed[0][2].start // 8
    assert min(rows, cols, 7 - rows, 7 - cols) >= 1  # the median window by distance to the border is inside


def test_a_module_whose_output_is_unused_is_traced() -> None:
    """timm's dla34 calls a projection whose result it drops: dead code, not a KeyError."""
    from zf_attr.occlusion.incremental.graph import trace_ops

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv, self.unused, self.flatten = nn.Conv2d(3, 4, 3), nn.Conv2d(3, 4, 1), nn.Flatten()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            self.unused(x)
            return self.flatten(self.conv(x))

    ops, outputs = trace_ops(Net().eval())
    assert "unused" not in outputs and [op.kind for op in ops] == ["input", "spatial", "dense", "output"]
