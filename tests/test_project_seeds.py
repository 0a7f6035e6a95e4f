"""FeatureMapDeconvnet.project_seeds: arbitrary (image, channel, location) seeds, each seeded with its activation."""

from __future__ import annotations

import functools

import pytest
import torch
import torchvision
from conftest import assert_clean, relative_error
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from zf_attr import FeatureMapDeconvnet, NeuronDeconvnet
from zf_attr.attr._layers import capture_layer_output


@functools.cache
def _resnet() -> nn.Module:
    torch.manual_seed(0)
    return torchvision.models.resnet18().double().eval()


@functools.cache
def _tiny() -> nn.Module:
    """Conv, ReLU, overlapping max-pool, conv (signed output): the layer ``"3"`` is a conv's raw output."""
    torch.manual_seed(1)
    model = nn.Sequential(nn.Conv2d(2, 4, 3), nn.ReLU(), nn.MaxPool2d(3, 2), nn.Conv2d(4, 5, 3, padding=1))
    return model.double().eval()


def _neuron_reference(model: nn.Module, layer: str, images: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """Independent reference: NeuronDeconvnet on the seed's own image, seeded with the (detached) activation.

    A seed whose activation is <= 0 is no feature: its projection is zero.
    """
    neuron = NeuronDeconvnet(model, layer)
    expected = []
    for image, channel, row, col in rows.tolist():

        def selector(output: torch.Tensor, c: int = channel, r: int = row, w: int = col) -> torch.Tensor:
            return output[:, c, r, w] * output[:, c, r, w].detach().clamp_min(0)

        expected.append(neuron.attribute(images[image : image + 1], selector)[0])
    return torch.stack(expected)


def test_arbitrary_seeds_equal_the_neuron_and_attribute() -> None:
    model, images = _resnet(), torch.randn(3, 3, 32, 32, dtype=torch.float64)
    projector = FeatureMapDeconvnet(model, "layer2")  # 128 maps of 4×4
    rows4 = torch.tensor([[2, 5, 1, 3], [0, 5, 1, 3], [2, 100, 0, 0], [2, 5, 1, 3], [1, 127, 3, 3], [2, 7, 2, 1]])
    flat = torch.stack([rows4[:, 0], rows4[:, 1], rows4[:, 2] * 4 + rows4[:, 3]], dim=1)
    ours = projector.project_seeds(images, flat, chunk_size=2)
    assert ours.shape == (6, 3, 32, 32) and ours.abs().amax(dim=(1, 2, 3)).min() > 0
    assert relative_error(ours, _neuron_reference(model, "layer2", images, rows4)) < 1e-10
    assert torch.equal(projector.project_seeds(images, rows4, chunk_size=2), ours)  # (S, 4) rows
    assert torch.equal(ours[0], ours[3])  # a repeated seed
    # the strongest activation of each map, as attribute(mode="max") finds and projects it
    result = projector.attribute(images, [4, 9])
    rows = [[n, int(result.channels[m]), *result.locations[n, m].tolist()] for n in range(3) for m in range(2)]
    seeded = projector.project_seeds(images, torch.tensor(rows))
    assert relative_error(seeded, result.projections.flatten(0, 1)) < 1e-12
    assert_clean(model)


def test_chunking_looping_subsets_and_empty() -> None:
    model, images = _resnet(), torch.randn(4, 3, 32, 32, dtype=torch.float64)
    projector = FeatureMapDeconvnet(model, "layer1")  # 64 maps of 8×8
    seeds = torch.tensor([[3, 1, 10], [3, 2, 63], [1, 1, 10], [3, 1, 0], [1, 60, 5]])
    together = projector.project_seeds(images, seeds, chunk_size=32)
    for kwargs in ({"chunk_size": 1}, {"vectorize": False}):
        assert relative_error(projector.project_seeds(images, seeds, **kwargs), together) < 1e-12
    alone = projector.project_seeds(images[3:], seeds[[0, 1, 3]] - torch.tensor([3, 0, 0]))
    assert relative_error(alone, together[[0, 1, 3]]) < 1e-12
    empty = projector.project_seeds(images, torch.zeros(0, 3, dtype=torch.long))
    assert empty.shape == (0, 3, 32, 32) and empty.dtype == images.dtype
    assert_clean(model)


@settings(max_examples=15, deadline=None)
@given(
    seeds=st.lists(
        st.tuples(st.integers(0, 2), st.integers(0, 4), st.integers(0, 3), st.integers(0, 3)), min_size=1, max_size=7
    ),
    chunk_size=st.integers(1, 4),
)
def test_any_seed_set_equals_the_neuron_seeded_with_its_signed_activation(
    seeds: list[tuple[int, int, int, int]], chunk_size: int
) -> None:
    model = _tiny()
    images = torch.randn(3, 2, 11, 11, dtype=torch.float64, generator=torch.Generator().manual_seed(len(seeds)))
    rows = torch.tensor(seeds)
    ours = FeatureMapDeconvnet(model, "3").project_seeds(images, rows, chunk_size)  # 5 maps of 4×4
    assert relative_error(ours, _neuron_reference(model, "3", images, rows)) < 1e-10


@pytest.mark.parametrize(
    ("seeds", "error", "pattern"),
    [
        ([[0, 1, 2]], TypeError, "seeds must be an integer tensor"),
        (torch.tensor([[0.0, 1.0, 2.0]]), ValueError, "seeds must hold integer indices"),
        (torch.tensor([0, 1, 2]), ValueError, r"seeds has shape \(3,\)"),
        (torch.tensor([[0, 1]]), ValueError, r"seeds has shape \(1, 2\)"),
        (torch.tensor([[0, 1, 2], [2, 1, 2]]), ValueError, r"seeds\[1\].*image index 2.*inputs holds 2 images"),
        (torch.tensor([[-1, 1, 2]]), ValueError, r"seeds\[0\].*image index -1"),
        (torch.tensor([[0, 64, 2]]), ValueError, r"seeds\[0\].*channel.*64 channels"),
        (torch.tensor([[1, 3, 64]]), ValueError, r"seeds\[0\].*flat location 64.*8×8"),
        (torch.tensor([[1, 3, 0, 8]]), ValueError, r"seeds\[0\].*column 8"),
        (torch.tensor([[1, 3, 8, 0]]), ValueError, r"seeds\[0\].*row 8"),
    ],
)
def test_bad_seeds(seeds: object, error: type, pattern: str) -> None:
    model = _resnet()
    with pytest.raises(error, match=pattern):
        FeatureMapDeconvnet(model, "layer1").project_seeds(torch.randn(2, 3, 32, 32, dtype=torch.float64), seeds)
    assert_clean(model)


def test_inputs_untouched_and_signed_layer_values() -> None:
    model, images = _tiny(), torch.randn(2, 2, 11, 11, dtype=torch.float64)
    before = images.clone()
    out = FeatureMapDeconvnet(model, "3").project_seeds(images, torch.tensor([[1, 0, 0], [0, 4, 15]]))
    activation, _ = capture_layer_output(model, model[3], (images,), stop=True)
    assert out.shape == (2, 2, 11, 11) and activation.min() < 0 < activation.max()
    assert torch.equal(images, before) and not images.requires_grad and images.grad is None
    assert_clean(model)
