"""FeatureEvolution: the feature-evolution callback (paper Fig. 4) plugged into the training loop."""

from __future__ import annotations

import copy

import pytest
import torch
from conftest import assert_bitwise_equal, assert_clean, relative_error, snapshot
from torch import nn

from zf_attr import FeatureMapDeconvnet
from zf_attr.analysis import FeatureEvolution
from zf_attr.models.shapes import ShapesDataset
from zf_attr.models.training import TrainConfig, train


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Dropout(0.5), nn.Linear(8 * 8 * 8, 6),
    )  # fmt: skip


def _brute_force(model: nn.Module, layer: str, probes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each map's maximum over all probes and positions, and (image, flat location) of it, by plain inference."""
    model = copy.deepcopy(model).eval()
    with torch.no_grad():
        output = model[: int(layer) + 1](probes)  # (N, C, h, w)
    per_map = output.transpose(0, 1).flatten(1)  # (C, N * h * w)
    values, where = per_map.max(dim=1)
    spatial = output.shape[2] * output.shape[3]
    return values, torch.stack([where // spatial, where % spatial], dim=1)


def test_recorded_epochs_values_and_projections_in_train() -> None:
    data = ShapesDataset(16, seed=0, image_size=32)
    probes = torch.stack([ShapesDataset(6, seed=3, image_size=32)[i][0] for i in range(6)])
    model, states = _net(), {}
    evolution = FeatureEvolution("6", probes, channels=[0, 3, 5], epochs=(1, 2))
    config = TrainConfig(epochs=2, batch_size=8, rms_radius=None)
    train(
        model, data, data, config, callbacks=[evolution, lambda e, m: states.update({e: snapshot(m)})], progress=False
    )
    assert evolution.epochs == [1, 2] and evolution.values.shape == (2, 3)
    assert not torch.equal(evolution.values[0], evolution.values[1])  # training moved the features
    for snap in evolution.snapshots:
        reference = _net()
        reference.load_state_dict(states[snap.epoch])
        values, where = _brute_force(reference, "6", probes)
        assert torch.allclose(snap.values, values[[0, 3, 5]], rtol=1e-6, atol=0)
        assert torch.equal(snap.images, where[[0, 3, 5], 0])
        width = 8
        assert torch.equal(snap.locations[:, 0] * width + snap.locations[:, 1], where[[0, 3, 5], 1])
        for m, channel in enumerate([0, 3, 5]):
            image = int(snap.images[m])
            expected = FeatureMapDeconvnet(reference.eval(), "6").attribute(probes[image : image + 1], channel)
            assert relative_error(snap.projections[m], expected.projections[0, 0]) < 1e-5
        assert snap.boxes is not None and snap.boxes.shape == (3, 4)
    assert_clean(model)


def test_model_state_restored_and_untouched() -> None:
    model, probes = _net(), torch.randn(5, 3, 32, 32)
    model.train()
    model[1].eval()  # a frozen BatchNorm inside a training model: mixed modes come back as they were
    model[0].weight.requires_grad_(False)
    model(torch.randn(2, 3, 32, 32)).sum().backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    modes = {name: module.training for name, module in model.named_modules()}
    before = snapshot(model)
    evolution = FeatureEvolution("2", probes, epochs=None, batch_size=2)
    with torch.no_grad():
        evolution(7, model)
        assert not torch.is_grad_enabled()
    evolution(8, model)
    assert evolution.epochs == [7, 8] and evolution.values.shape == (2, 8)
    assert torch.equal(evolution.values[0], evolution.values[1])
    assert modes == {name: module.training for name, module in model.named_modules()}
    assert grads.keys() == {n for n, p in model.named_parameters() if p.grad is not None}
    assert all(torch.equal(p.grad, grads[n]) for n, p in model.named_parameters() if p.grad is not None)
    assert not model[0].weight.requires_grad and model[0].bias.requires_grad
    assert_bitwise_equal(model, before)
    values, _ = _brute_force(model, "2", probes)  # batch_size=2 over 5 probes: the same maxima
    assert torch.allclose(evolution.values[0], values, rtol=1e-6, atol=0)
    assert_clean(model)


def test_figure(tmp_path: object) -> None:
    model, probes = _net().eval(), torch.randn(4, 3, 32, 32)
    evolution = FeatureEvolution("2", probes, channels=[1, 2, 4], epochs=range(1, 10, 2))
    for epoch in range(1, 5):
        evolution(epoch, model)
    figure = evolution.plot(channels=[4, 1])
    assert len(figure.axes) == 2 * 2 and figure.axes[1].get_title() == "epoch 3"
    assert figure.axes[0].get_ylabel() == "map 4" and figure.axes[0].get_xlabel().startswith("a=")
    path = evolution.save(tmp_path / "evolution.png", crop=False)  # type: ignore[operator]
    assert path.read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(ValueError, match=r"channels \[7\] are not among the recorded maps"):
        evolution.plot(channels=[7])


def test_bad_input() -> None:
    probes = torch.randn(2, 3, 32, 32)
    with pytest.raises(ValueError, match="probe_images"):
        FeatureEvolution("2", probes[0])
    with pytest.raises(ValueError, match="channels"):
        FeatureEvolution("2", probes, channels=[-1])
    with pytest.raises(ValueError, match="epochs"):
        FeatureEvolution("2", probes, epochs=[])
    with pytest.raises(TypeError, match="layer"):
        FeatureEvolution(nn.ReLU(), probes)  # type: ignore[arg-type]
    evolution = FeatureEvolution("2", probes, channels=[8])
    with pytest.raises(ValueError, match="nothing recorded"):
        evolution.plot()
    model = _net()
    with pytest.raises(ValueError, match="channels holds 8"):
        evolution(1, model)
    assert model.training and evolution.epochs == []
    with pytest.raises(ValueError, match="not a layer of the model"):
        FeatureEvolution("layr", probes)(1, model)
    assert_clean(model)
