"""Architecture diagnostics (paper Fig. 6): planted dead and high-frequency filters, aliasing, bad input."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image
from torch import nn

from zf_attr.analysis import filter_diagnostics
from zf_attr.analysis.diagnostics import (
    alexnet_style,
    band_energy,
    near_nyquist_share,
    save_diagnostics_comparison,
    stride_aliasing,
)


def planted_model() -> nn.Module:
    """conv1: filter 0 dead (zero weights, negative bias), filter 1 a checkerboard, filters 2–3 smooth."""
    model = nn.Sequential(nn.Conv2d(3, 4, 5, stride=2), nn.ReLU(), nn.Conv2d(4, 3, 3), nn.ReLU()).double().eval()
    checker = torch.tensor([[1.0, -1.0], [-1.0, 1.0]], dtype=torch.float64).repeat(3, 3)[:5, :5]
    with torch.no_grad():
        model[0].weight.zero_()
        model[0].bias.copy_(torch.tensor([-1.0, 0.0, 0.0, 0.0]))
        model[0].weight[1] = checker
        model[0].weight[2] = 0.05
        grid = torch.arange(5, dtype=torch.float64) - 2
        model[0].weight[3] = 0.1 * torch.exp(-(grid[:, None] ** 2 + grid[None, :] ** 2) / (2 * 1.5**2))
        torch.manual_seed(0)
        model[2].weight.copy_(torch.rand_like(model[2].weight))
    return model


def probes() -> torch.Tensor:
    return torch.rand(6, 3, 32, 32, generator=torch.Generator().manual_seed(0), dtype=torch.float64)


def test_planted_dead_and_high_frequency_filters_are_flagged() -> None:
    result = filter_diagnostics(planted_model(), probes())
    assert result.layers == ["0", "2"] and result.strides == {"0": 2, "2": 1} and result.kernels == {"0": 5, "2": 3}
    assert result.dead_filters["0"] == [0] and float(result.activity["0"][0]) == 0.0
    assert result.high_frequency_filters == [1]
    assert result.low_frequency_filters == [2, 3]
    assert result.band_energy.shape == (4, 4) and torch.equal(result.band_energy[0], torch.zeros(4))
    torch.testing.assert_close(result.band_energy[1:].sum(dim=1), torch.ones(3))
    assert result.dead_filters["2"] == [] and result.stride_aliasing["2"] == 0.0
    summary = json.loads(json.dumps(result.to_dict()))
    assert summary["layers"]["0"]["dead"] == 1 and summary["first_layer"]["high_frequency_filters"] == 1


def test_weak_filters_count_as_near_dead() -> None:
    model = planted_model()
    with torch.no_grad():
        model[0].bias.zero_()
        model[0].weight[2] *= 1e-4  # active (bias 0 and positive images) but negligible
    result = filter_diagnostics(model, probes())
    assert 2 in result.dead_filters["0"]


def test_spectral_indicators_know_their_answers() -> None:
    stripes = torch.tensor([1.0, -1.0]).repeat(16)[None, None, None].expand(2, 3, 32, 32)
    assert near_nyquist_share(stripes) == pytest.approx(1.0)
    assert near_nyquist_share(torch.ones(1, 1, 8, 8)) == 0.0
    smooth = torch.cos(torch.arange(32) * 2 * torch.pi / 32)[None, None, None].expand(1, 1, 32, 32)
    assert near_nyquist_share(smooth) < 1e-12
    noise = torch.randn(4, 1, 64, 64, generator=torch.Generator().manual_seed(0))
    point = torch.zeros(1, 1, 3, 3)
    point[0, 0, 1, 1] = 1.0  # identity filter: white response, 3/4 of it above the Nyquist of stride 2
    assert stride_aliasing(noise, point, 2, 1) == pytest.approx(0.75, abs=0.03)
    assert stride_aliasing(noise, torch.ones(1, 1, 8, 8), 2, 0) < stride_aliasing(noise, point, 2, 1)
    shares = band_energy(torch.randn(64, 3, 7, 7, generator=torch.Generator().manual_seed(1)))
    assert shares.argmax(dim=1).eq(3).float().mean() > 0.5  # white noise: the widest (top) band dominates


def test_alexnet_style_variant_and_comparison_figure(tmp_path) -> None:
    model = alexnet_style().eval()
    assert (model.conv1.kernel_size, model.conv1.stride, model.conv2.stride) == ((11, 11), (4, 4), (1, 1))
    images = torch.randn(3, 3, 112, 112, generator=torch.Generator().manual_seed(0))
    assert model(images).shape == (3, 6)
    result = filter_diagnostics(model, images)
    assert result.layers == ["conv1", "conv2"] and result.filters.shape == (32, 3, 11, 11)
    path = save_diagnostics_comparison({"AlexNet-style": result, "again": result}, tmp_path / "c.png")
    with Image.open(path) as figure:
        assert figure.size[1] > 600
    assert result.save_figure(tmp_path / "d.png").exists()


@pytest.mark.parametrize(
    ("arguments", "error", "named"),
    [
        ({"probe_images": torch.zeros(2, 32)}, ValueError, "probe_images"),
        ({"probe_images": "images"}, TypeError, "probe_images"),
        ({"layers": ["1"]}, ValueError, "layers"),
        ({"layers": ["conv"]}, ValueError, "layers"),
        ({"layers": []}, ValueError, "layers"),
        ({"dead_rate": 2.0}, ValueError, "dead_rate"),
    ],
)
def test_bad_input_is_refused_naming_the_argument(arguments: dict, error: type, named: str) -> None:
    call = {"probe_images": probes()}
    call.update(arguments)
    with pytest.raises(error, match=named):
        filter_diagnostics(planted_model(), call.pop("probe_images"), **call)


def test_the_command_writes_figure_and_json(tmp_path, capsys) -> None:
    from zf_attr.cli import main

    out = tmp_path / "out"
    assert main(["diagnostics", "--probes", "4", "--out", str(out), "--quiet"]) == 0
    payload = json.loads((out / "diagnostics.json").read_text())
    assert list(payload["layers"]) == ["conv1", "conv2"] and payload["probes"] == 4
    assert (out / "diagnostics.png").stat().st_size > 0 and (out / "report.html").exists()
    assert main(["diagnostics", "--probes", "2", "--layers", "fc6", "--out", str(out), "--quiet"]) == 1
    assert "layers" in capsys.readouterr().err
