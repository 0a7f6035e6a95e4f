"""Deconvnet on a plain conv/ReLU/max-pool CNN equals the paper's chain written out by hand.

Down-pass per layer (Zeiler & Fergus §2.1): unpool with the recorded switches (accumulating where overlapping
windows chose the same input location) → rectify → transposed filters.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from torch import nn

import zf_attr
from zf_attr import Deconvnet


def unpool_accumulating(signal: torch.Tensor, indices: torch.Tensor, input_shape: torch.Size) -> torch.Tensor:
    """Independent unpool: a Python loop over every pooled unit, adding its value at its switch."""
    out = torch.zeros(input_shape, dtype=signal.dtype)
    width = input_shape[-1]
    for n in range(signal.shape[0]):
        for c in range(signal.shape[1]):
            for i in range(signal.shape[2]):
                for j in range(signal.shape[3]):
                    flat = int(indices[n, c, i, j])
                    out[n, c, flat // width, flat % width] += signal[n, c, i, j]
    return out


class SmallCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.relu1 = nn.ReLU(inplace=True)
        self.pool1 = nn.MaxPool2d(3, 2)  # overlapping windows
        self.conv2 = nn.Conv2d(4, 6, 3)
        self.relu2 = nn.ReLU()
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.fc = nn.Linear(6 * 3 * 3, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool1(self.relu1(self.conv1(x)))
        x = self.pool2(self.relu2(self.conv2(x)))
        return self.fc(torch.flatten(x, 1))


def hand_deconvnet(model: SmallCNN, image: torch.Tensor, target: int) -> torch.Tensor:
    with torch.no_grad():
        a1 = model.conv1(image)
        r1 = a1.clamp(min=0)
        p1, i1 = F.max_pool2d(r1, 3, 2, return_indices=True)
        a2 = model.conv2(p1)
        r2 = a2.clamp(min=0)
        p2, i2 = F.max_pool2d(r2, 3, 2, ceil_mode=True, return_indices=True)
        signal = model.fc.weight[target].reshape(p2.shape[1:]).unsqueeze(0)
        signal = unpool_accumulating(signal, i2, r2.shape).clamp(min=0)
        signal = F.conv_transpose2d(signal, model.conv2.weight)
        signal = unpool_accumulating(signal, i1, r1.shape).clamp(min=0)
        return F.conv_transpose2d(signal, model.conv1.weight, padding=1)


def test_small_cnn_equals_hand_written_chain() -> None:
    model = SmallCNN().double().eval()
    image = torch.randn(1, 3, 20, 20, dtype=torch.float64)
    expected = hand_deconvnet(model, image, target=2)
    actual = Deconvnet(model).attribute(image, target=2)
    torch.testing.assert_close(actual, expected, rtol=1e-12, atol=1e-12)


def test_shared_maxima_accumulate_where_max_unpool_overwrites() -> None:
    """Overlapping 3x3/2 windows on a constant-peaked input choose the same location: values must add."""
    x = torch.zeros(1, 1, 5, 5, dtype=torch.float64)
    x[0, 0, 2, 2] = 1.0  # every window covering the centre picks it
    with zf_attr.record_switches(lambda t: F.max_pool2d(t, 3, 2)) as trace:
        F.max_pool2d(x, 3, 2)  # a plain callable is intercepted too
    switches = trace.pools[0]
    signal = torch.ones(switches.output_shape, dtype=torch.float64)
    accumulated = switches.unpool(signal)
    assert accumulated[0, 0, 2, 2] == 4.0  # four windows share the centre
    overwritten = F.max_unpool2d(signal, switches.indices, 3, 2, output_size=x.shape[-2:])
    assert overwritten[0, 0, 2, 2] == 1.0  # what a naive unpool would do
    torch.testing.assert_close(accumulated, unpool_accumulating(signal, switches.indices, x.shape))


pool_geometry = st.tuples(
    st.integers(1, 4),  # kernel
    st.integers(1, 4),  # stride
    st.integers(0, 2),  # padding
    st.integers(1, 2),  # dilation
    st.booleans(),  # ceil_mode
    st.integers(6, 12),  # height
    st.integers(6, 12),  # width
)


@settings(max_examples=40, deadline=None)
@given(pool_geometry)
def test_switches_and_unpool_match_max_pool(geometry: tuple) -> None:
    kernel, stride, padding, dilation, ceil_mode, height, width = geometry
    padding = min(padding, kernel // 2)
    assume(dilation * (kernel - 1) + 1 <= min(height, width) + 2 * padding)
    x = torch.randn(2, 3, height, width, dtype=torch.float64).round(decimals=1)  # ties happen
    pool = nn.MaxPool2d(kernel, stride, padding, dilation, ceil_mode=ceil_mode)
    with zf_attr.record_switches(pool) as trace:
        out = pool(x)
    expected_out, expected_indices = F.max_pool2d(
        x, kernel, stride, padding, dilation, ceil_mode=ceil_mode, return_indices=True
    )
    switches = trace.pool("<model>")
    assert torch.equal(out, expected_out)
    assert torch.equal(switches.indices, expected_indices)
    assert (switches.kernel_size, switches.stride, switches.padding, switches.dilation) == (
        (kernel, kernel),
        (stride, stride),
        (padding, padding),
        (dilation, dilation),
    )
    # unpool is the transpose of max-pooling: equal to autograd's backward, and to the loop
    signal = torch.randn(out.shape, dtype=torch.float64)
    leaf = x.clone().requires_grad_(True)
    (gradient,) = torch.autograd.grad(
        (F.max_pool2d(leaf, kernel, stride, padding, dilation, ceil_mode) * signal).sum(), leaf
    )
    torch.testing.assert_close(switches.unpool(signal), gradient)
    torch.testing.assert_close(switches.unpool(signal), unpool_accumulating(signal, switches.indices, x.shape))


@settings(max_examples=25, deadline=None)
@given(st.integers(2, 4), st.integers(1, 3), st.integers(9, 14), st.integers(0, 4))
def test_deconvnet_matches_chain_for_any_window(kernel: int, stride: int, size: int, target: int) -> None:
    conv = nn.Conv2d(2, 3, 3, padding=1).double()
    pool = nn.MaxPool2d(kernel, stride)
    x = torch.randn(1, 2, size, size, dtype=torch.float64)
    with torch.no_grad():
        pooled_shape = pool(conv(x)).shape
    head = nn.Linear(pooled_shape.numel(), 5).double()
    model = nn.Sequential(conv, nn.ReLU(), pool, nn.Flatten(), head).eval()

    with torch.no_grad():
        r = conv(x).clamp(min=0)
        _, indices = F.max_pool2d(r, kernel, stride, return_indices=True)
        signal = head.weight[target].reshape(pooled_shape)
        signal = unpool_accumulating(signal, indices, r.shape).clamp(min=0)
        expected = F.conv_transpose2d(signal, conv.weight, padding=1)
    actual = Deconvnet(model).attribute(x, target=target)
    torch.testing.assert_close(actual, expected, rtol=1e-10, atol=1e-12)
