"""OcclusionSensitivity: equal to Captum's Occlusion, plus batching under a budget, progress and errors."""

from __future__ import annotations

import math

import pytest
import torch
from captum.attr import NoiseTunnel, Occlusion
from conftest import assert_bitwise_equal, assert_clean, quiet, snapshot
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

import zf_attr.attr.occlusion as occlusion_module
from zf_attr import OcclusionSensitivity
from zf_attr.errors import ZFAttrWarning
from zf_attr.occlusion import WindowGrid, iter_occluded, measured_forward


class SmallNet(nn.Module):
    """A conv model for images, optionally with a second (N, L) input; 5 classes."""

    def __init__(self, channels: int, length: int | None = None) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, 4, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(2)
        self.fc = nn.Linear(16, 5)
        self.side = nn.Linear(length, 5) if length else None

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None, scale: float = 1.0) -> torch.Tensor:
        out = self.fc(self.pool(torch.relu(self.conv(x))).flatten(1))
        if self.side is not None:
            out = out + self.side(y)
        return out * scale


def captum(model, inputs, **kwargs):
    with quiet():
        return Occlusion(model).attribute(inputs, **kwargs)


def axis(draw, size: int) -> tuple[int, int]:
    window = draw(st.integers(1, size))
    stride = draw(st.integers(1, window if window < size else size + 2))
    return window, stride


@st.composite
def cases(draw):
    n, c = draw(st.integers(1, 2)), draw(st.integers(1, 3))
    h, w = draw(st.integers(4, 12)), draw(st.integers(4, 12))
    dims = [axis(draw, size) for size in (c, h, w)]
    window, stride = tuple(d[0] for d in dims), tuple(d[1] for d in dims)
    image = torch.randn(n, c, h, w)
    kind = draw(st.sampled_from(["none", "scalar", "chw", "nchw", "c11"]))
    baseline = {
        "none": None,
        "scalar": draw(st.floats(-1, 1, width=32)),
        "chw": torch.randn(c, h, w),
        "nchw": torch.randn(n, c, h, w),
        "c11": torch.randn(1, c, 1, 1),
    }[kind]
    length = draw(st.one_of(st.none(), st.integers(3, 8)))
    if length is None:
        inputs, windows, strides, baselines = image, window, stride, baseline
        if draw(st.booleans()) and len(set(stride)) == 1:
            strides = stride[0]
    else:
        side_window, side_stride = axis(draw, length)
        inputs = (image, torch.randn(n, length))
        windows = (window, (side_window,))
        strides = (stride, side_stride)
        baselines = None if baseline is None else (baseline, draw(st.sampled_from([0.5, torch.randn(length)])))
    target = draw(
        st.sampled_from(["int", "list", "tensor", "tensor0"]).map(
            lambda form: {
                "int": 2,
                "list": [(i * 3) % 5 for i in range(n)],
                "tensor": torch.arange(n) % 5,
                "tensor0": torch.tensor(4),
            }[form]
        )
    )
    ppe = draw(st.sampled_from([1, 3, None]))
    return SmallNet(c, length).eval(), inputs, windows, strides, baselines, target, ppe


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases())
def test_equal_to_captum(case) -> None:
    model, inputs, windows, strides, baselines, target, ppe = case
    kwargs = dict(sliding_window_shapes=windows, strides=strides, baselines=baselines, target=target)
    expected = captum(model, inputs, perturbations_per_eval=ppe or 1, **kwargs)
    actual = OcclusionSensitivity(model).attribute(inputs, perturbations_per_eval=ppe, **kwargs)
    assert type(actual) is type(expected)
    as_tuple = lambda value: value if isinstance(value, tuple) else (value,)  # noqa: E731
    for a, e in zip(as_tuple(actual), as_tuple(expected), strict=True):
        assert a.shape == e.shape and a.dtype == e.dtype
        assert (a - e).abs().max() <= 1e-5


def test_last_window_is_cut_off_like_captum() -> None:
    grid = WindowGrid(shape=(1, 10), window=(1, 4), strides=(1, 4))
    assert grid.starts == ((0,), (0, 4, 8)) and grid.slices(2) == (slice(0, 1), slice(8, 10))
    model = lambda x: (x * torch.arange(10.0)).sum(-1).sum(-1)  # noqa: E731
    x = torch.randn(3, 1, 10)
    expected = captum(model, x, sliding_window_shapes=(1, 4), strides=(1, 4))
    torch.testing.assert_close(OcclusionSensitivity(model).attribute(x, (1, 4), strides=(1, 4)), expected)


def test_per_example_output_with_target_none_and_additional_args() -> None:
    model = SmallNet(2, 4).eval()
    scalar = lambda x, y, scale: model(x, y, scale)[:, 1]  # noqa: E731  (N,) output, plain callable
    inputs = (torch.randn(2, 2, 6, 6), torch.randn(2, 4))
    kwargs = dict(sliding_window_shapes=((2, 3, 3), (2,)), strides=((1, 2, 2), 1), additional_forward_args=2.0)
    expected = captum(scalar, inputs, perturbations_per_eval=4, **kwargs)
    actual = OcclusionSensitivity(scalar).attribute(inputs, **kwargs)
    for a, e in zip(actual, expected, strict=True):
        assert (a - e).abs().max() <= 1e-5
    # a tensor extra argument with a batch dimension is repeated along with the occluded copies
    image_model = SmallNet(2).eval()
    with_tensor = lambda x, s: image_model(x) * s  # noqa: E731
    x, s = torch.randn(2, 2, 6, 6), torch.tensor([[1.0], [3.0]])
    expected = captum(with_tensor, x, sliding_window_shapes=(1, 2, 2), target=0, additional_forward_args=s,
                      perturbations_per_eval=5)  # fmt: skip
    actual = OcclusionSensitivity(with_tensor).attribute(x, (1, 2, 2), target=0, additional_forward_args=s)
    assert (actual - expected).abs().max() <= 1e-5


def test_disjoint_windows_of_a_linear_model_add_back_to_the_total_effect() -> None:
    # f(x) = <w, x> + b per example. With windows tiling the input (stride = window, no overlap), the position p in
    # window W gets f(x) - f(x with W filled) = sum_{q in W} w_q (x_q - b_q), so summing attribution / |W| over all
    # positions counts each window once: sum_p attr_p / |W(p)| = sum_q w_q (x_q - b_q) = f(x) - f(baseline).
    weight = torch.randn(2, 8, 12, dtype=torch.float64)
    model = lambda x: (x * weight).sum((1, 2, 3)) + 0.7  # noqa: E731
    x, baseline = torch.randn(3, 2, 8, 12, dtype=torch.float64), torch.randn(2, 8, 12, dtype=torch.float64)
    window = (1, 4, 3)
    attr = OcclusionSensitivity(model).attribute(x, window, strides=window, baselines=baseline)
    total_effect = model(x) - model(baseline.expand_as(x))
    torch.testing.assert_close(attr.sum((1, 2, 3)) / math.prod(window), total_effect)
    # and every position of a window carries that window's whole effect
    block = (weight * (x - baseline))[:, :1, :4, :3].sum((1, 2, 3))
    torch.testing.assert_close(attr[:, 0, 0, 0], block)
    # single-position windows give exactly w * (x - b), with float64 kept
    single = OcclusionSensitivity(model).attribute(x, (1, 1, 1), baselines=baseline)
    assert single.dtype == torch.float64
    torch.testing.assert_close(single, weight * (x - baseline))


class Recorder:
    """A forward_func that records the batch size of every call."""

    def __init__(self, model: nn.Module) -> None:
        self.model, self.batches = model, []

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self.batches.append(x.shape[0])
        return self.model(x)


def test_memory_budget_limits_the_batch_and_leaves_results_unchanged() -> None:
    model = nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(32, 4)).eval()  # fmt: skip
    x = torch.randn(2, 3, 16, 16)
    _, per_copy, per_pass = measured_forward(lambda: model(x), (x,))
    conv_output = 2 * 32 * 16 * 16 * 4
    assert per_copy >= 5 * conv_output + x.numel() * 4  # the estimate sees the largest activation
    assert per_pass == 32 * 3 * 3 * 3 * 4  # oneDNN's copy of the convolution's weights
    kwargs = dict(sliding_window_shapes=(3, 4, 4), strides=(3, 2, 2), target=1)  # 49 windows
    large, small = Recorder(model), Recorder(model)
    expected = OcclusionSensitivity(large).attribute(x, **kwargs)
    budget = 6 * per_copy + per_pass + 1  # and one copy for what the unoccluded pass left with the allocator
    method = OcclusionSensitivity(small)
    actual = method.attribute(x, memory_budget=budget, **kwargs)
    assert method.last_perturbations_per_eval == 5
    assert max(small.batches[1:]) == 5 * 2 < max(large.batches[1:]) == 49 * 2
    assert all((batch // 2 + 1) * per_copy <= budget for batch in small.batches[1:])
    assert sum(small.batches[1:]) == 49 * 2
    torch.testing.assert_close(actual, expected, rtol=0, atol=1e-6)
    torch.testing.assert_close(actual, captum(model, x, **kwargs), rtol=0, atol=1e-5)
    # a budget below one copy still makes progress, one window at a time
    tiny = Recorder(model)
    with pytest.warns(ZFAttrWarning, match="below the"):
        OcclusionSensitivity(tiny).attribute(x, memory_budget=1, **kwargs)
    assert set(tiny.batches[1:]) == {2}


def test_progress_counts_windows(monkeypatch: pytest.MonkeyPatch) -> None:
    bars = []

    class FakeBar:
        def __init__(self, total: int, desc: str, disable: bool) -> None:
            self.total, self.desc, self.disable, self.n, self.closed = total, desc, disable, 0, False
            bars.append(self)

        def update(self, n: int) -> None:
            self.n += n

        def close(self) -> None:
            self.closed = True

    monkeypatch.setattr(occlusion_module, "tqdm", FakeBar)
    model = SmallNet(3).eval()
    OcclusionSensitivity(model).attribute(torch.randn(1, 3, 10, 10), (3, 4, 4), strides=(3, 3, 3), target=0,
                                          perturbations_per_eval=4, show_progress=True)  # fmt: skip
    (bar,) = bars
    assert (bar.total, bar.n, bar.disable, bar.closed) == (9, 9, False, True)  # 3 x 3 windows, not 300 elements
    assert "Occlusion" in bar.desc


def test_progress_bar_on_stderr(capsys: pytest.CaptureFixture) -> None:
    OcclusionSensitivity(SmallNet(1).eval()).attribute(torch.randn(1, 1, 6, 6), (1, 2, 2), strides=2, target=0,
                                                       show_progress=True)  # fmt: skip
    assert "9/9" in capsys.readouterr().err


def test_iter_occluded_never_modifies_inputs() -> None:
    x = torch.randn(2, 1, 4, 4)
    before = x.clone()
    grid = WindowGrid((1, 4, 4), (1, 2, 2), (1, 2, 2))
    batches = list(iter_occluded((x,), [grid], (torch.zeros(()).expand_as(x),), 3))
    assert [ids for ids, _ in batches] == [[0, 1, 2], [3]]
    assert torch.equal(x, before)
    first = batches[0][1][0]
    assert torch.equal(first[2:4, :, :2, 2:], torch.zeros(2, 1, 2, 2)) and torch.equal(first[2:4, :, 2:], x[:, :, 2:])


@pytest.mark.parametrize(
    ("kwargs", "argument"),
    [
        (dict(sliding_window_shapes=(1, 9, 2)), "sliding_window_shapes"),
        (dict(sliding_window_shapes=(1, 2)), "sliding_window_shapes"),
        (dict(sliding_window_shapes=(1, 0, 2)), "sliding_window_shapes"),
        (dict(sliding_window_shapes=(1, 2, 2), strides=0), "strides"),
        (dict(sliding_window_shapes=(1, 2, 2), strides=(1, 3, 1)), "strides"),
        (dict(sliding_window_shapes=(1, 2, 2), strides=(1, 1)), "strides"),
        (dict(sliding_window_shapes=(1, 2, 2), baselines=torch.zeros(3, 3)), "baselines"),
        (dict(sliding_window_shapes=(1, 2, 2), baselines=(0, 0)), "baselines"),
        (dict(sliding_window_shapes=(1, 2, 2), perturbations_per_eval=0), "perturbations_per_eval"),
        (dict(sliding_window_shapes=(1, 2, 2), memory_budget=-5), "memory_budget"),
        (dict(sliding_window_shapes=(1, 2, 2)), "target"),  # target=None with 5 outputs per example
        (dict(sliding_window_shapes=(1, 2, 2), target=7), "target"),
    ],
)
def test_bad_arguments_name_the_argument(kwargs: dict, argument: str) -> None:
    with pytest.raises(ValueError, match=argument):
        OcclusionSensitivity(SmallNet(1).eval()).attribute(torch.randn(2, 1, 6, 6), **kwargs)


def test_captum_asserts_on_what_we_reject() -> None:
    model = SmallNet(1).eval()
    x = torch.randn(1, 1, 6, 6)
    for kwargs in (dict(sliding_window_shapes=(1, 9, 2)), dict(sliding_window_shapes=(1, 2, 2), strides=(1, 3, 1))):
        with pytest.raises(AssertionError):
            captum(model, x, target=0, **kwargs)
    # a stride larger than the window is fine along an axis the window spans (one position there)
    kwargs = dict(sliding_window_shapes=(1, 6, 2), strides=(1, 9, 2), target=0)
    torch.testing.assert_close(OcclusionSensitivity(model).attribute(x, **kwargs), captum(model, x, **kwargs))


def test_bad_inputs_and_outputs() -> None:
    model = SmallNet(1).eval()
    with pytest.raises(TypeError, match=r"inputs has dtype torch\.int64 but the model has convolutions"):
        OcclusionSensitivity(model).attribute(torch.zeros(1, 1, 6, 6, dtype=torch.long), (1, 2, 2), target=0)
    with pytest.raises(ValueError, match="single value for the whole batch"):
        OcclusionSensitivity(lambda x: model(x).sum()).attribute(torch.randn(2, 1, 6, 6), (1, 2, 2))
    with pytest.raises(TypeError, match="forward_func"):
        OcclusionSensitivity(42)


def test_exception_in_forward_leaves_the_model_untouched() -> None:
    class Fails(SmallNet):
        calls = 0

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            self.calls += 1
            if self.calls == 2:
                raise RuntimeError("boom")
            return super().forward(x)

    model = Fails(1).train()
    before = snapshot(model)
    x = torch.randn(1, 1, 6, 6)
    x_before = x.clone()
    with pytest.raises(RuntimeError, match="boom"):
        OcclusionSensitivity(model).attribute(x, (1, 2, 2), target=0, perturbations_per_eval=2)
    assert model.training and all(m.training for m in model.modules())
    assert_bitwise_equal(model, before)
    assert_clean(model)
    assert not torch.nn.modules.module._global_forward_hooks
    assert torch.equal(x, x_before)


def test_model_mode_and_hooks_untouched_after_success() -> None:
    model = SmallNet(2).eval()
    before = snapshot(model)
    OcclusionSensitivity(model).attribute(torch.randn(1, 2, 6, 6), (2, 3, 3), strides=3, target=0)
    assert not model.training
    assert_bitwise_equal(model, before)
    assert_clean(model)
    assert not torch.nn.modules.module._global_forward_hooks


def test_inside_noise_tunnel() -> None:
    model = SmallNet(3).eval()
    x = torch.randn(2, 3, 8, 8)
    kwargs = dict(nt_samples=3, sliding_window_shapes=(3, 4, 4), strides=2, target=[1, 4])
    torch.manual_seed(1)
    with quiet():
        expected = NoiseTunnel(Occlusion(model)).attribute(x, **kwargs)
    torch.manual_seed(1)
    actual = NoiseTunnel(OcclusionSensitivity(model)).attribute(x, **kwargs)
    assert (actual - expected).abs().max() <= 1e-5


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu() -> None:
    model = SmallNet(3, 5).eval()
    inputs = (torch.randn(2, 3, 8, 8), torch.randn(2, 5))
    kwargs = dict(sliding_window_shapes=((3, 3, 3), (2,)), strides=((1, 2, 2), 1), target=[0, 3])
    expected = OcclusionSensitivity(model).attribute(inputs, **kwargs)
    actual = OcclusionSensitivity(model.cuda()).attribute(tuple(t.cuda() for t in inputs), **kwargs)
    for a, e in zip(actual, expected, strict=True):
        assert a.device.type == "cuda"
        torch.testing.assert_close(a.cpu(), e, rtol=1e-4, atol=1e-5)
