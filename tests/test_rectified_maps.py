"""Feature maps are read after the rectifier a layer's output goes into (the paper's maps are rectified)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from zf_attr import FeatureMapDeconvnet
from zf_attr.analysis import FeatureEvolution, mine_top_k, occlusion_study, project_feature_map, project_top_k
from zf_attr.attr._layers import capture_layer_output
from zf_attr.attr._rectified import layer_map
from zf_attr.models import zfnet
from zf_attr.models.shapes import ShapesDataset


@pytest.fixture(scope="module")
def model() -> nn.Module:
    return zfnet(weights="DEFAULT").eval()


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    data = ShapesDataset(4, seed=5)
    return torch.stack([data[i][0] for i in range(4)])


def raw_conv3(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return capture_layer_output(model, model.conv3, (images,), stop=True)[0]


class Functional(nn.Module):
    def __init__(self, after: str) -> None:
        super().__init__()
        self.conv, self.head, self.after = nn.Conv2d(1, 2, 3), nn.Conv2d(2, 2, 1), after

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        _ = y.shape, y.dim()  # metadata reads do not decide
        if self.after == "relu_":
            return self.head(y.relu_())
        if self.after == "relu6":
            return self.head(F.relu6(y))
        if self.after == "hardtanh":
            return self.head(F.hardtanh(y, 0.0, 2.0))
        if self.after == "leaky":
            return self.head(F.leaky_relu(y, 0.1))
        return self.head(y * 2)


@pytest.mark.parametrize(
    ("after", "rectifier", "high"),
    [("relu_", "relu", None), ("relu6", "relu6", 6.0), ("hardtanh", "hardtanh", 2.0), ("leaky", None, None),
     ("scale", None, None)],
)  # fmt: skip
def test_the_rectifier_after_a_layer_is_found_however_it_is_called(after: str, rectifier: str, high: float) -> None:
    net = Functional(after)
    found = layer_map(net, "conv", net.conv, (torch.randn(1, 1, 6, 6),))
    assert (found.rectifier, found.high) == (rectifier, high)
    assert found.low == (0.0 if rectifier else None)
    assert layer_map(net, "conv", net.conv, (torch.randn(1, 1, 6, 6),), rectified=False).rectifier is None


def test_zfnet_conv_layers_are_rectified_pool_and_logits_are_not(model: nn.Module, images: torch.Tensor) -> None:
    found = {name: layer_map(model, name, model.get_submodule(name), (images[:1],)).rectifier for name in
             ("conv1", "conv3", "conv5", "fc7", "pool5", "norm2", "fc8")}  # fmt: skip
    assert found == dict.fromkeys(("conv1", "conv3", "conv5", "fc7"), "relu") | dict.fromkeys(("pool5", "norm2", "fc8"))
    with pytest.raises(ValueError, match="was not called"):
        layer_map(model, "x", nn.ReLU(), (images[:1],))


def test_a_map_negative_everywhere_is_not_projected(model: nn.Module, images: torch.Tensor) -> None:
    raw = raw_conv3(model, images)
    maxima = raw.flatten(2).amax(-1)  # (N, C)
    image, channel = (maxima < 0).nonzero()[0].tolist()  # the defect of issue 14: a negative strongest activation
    rectified = FeatureMapDeconvnet(model, "conv3").attribute(images, [channel])
    assert rectified.rectifier == "relu" and float(rectified.activations[image, 0]) == 0.0
    assert bool(rectified.inactive[image, 0]) and not rectified.projections[image, 0].any()
    raw_result = FeatureMapDeconvnet(model, "conv3", rectified=False).attribute(images, [channel])
    assert raw_result.rectifier is None and float(raw_result.activations[image, 0]) == pytest.approx(
        float(maxima[image, channel])
    )
    assert bool(raw_result.inactive[image, 0]) and not raw_result.projections[image, 0].any()  # flagged, not drawn
    active = ~rectified.inactive[:, 0]  # positive seeds: the same projection either way
    torch.testing.assert_close(rectified.projections[active], raw_result.projections[active])


def test_project_seeds_zeroes_and_flags_seeds_at_or_below_zero(model: nn.Module, images: torch.Tensor) -> None:
    raw = raw_conv3(model, images).flatten(2)
    negative = (raw < 0).nonzero()[0].tolist()
    positive = (raw > 0).nonzero()[0].tolist()
    projector = FeatureMapDeconvnet(model, "conv3")
    out = projector.project_seeds(images, torch.tensor([negative, positive]))
    assert projector.last_inactive.tolist() == [True, False]
    assert float(projector.last_values[0]) == 0.0 and float(projector.last_values[1]) == pytest.approx(
        float(raw[tuple(positive)]), rel=1e-5
    )
    assert not out[0].any() and out[1].abs().sum() > 0
    full = project_feature_map(model, images, "conv3", positive[1])  # whole map, rectified seeds
    raw_full = project_feature_map(model, images, "conv3", positive[1], rectified=False)
    assert not torch.allclose(full, raw_full)  # the negative part of the map no longer seeds the projection


def test_mining_reads_the_rectified_map_and_records_it(model: nn.Module, images: torch.Tensor, tmp_path) -> None:
    mined = mine_top_k(model, "conv3", images, k=4, show_progress=False)
    assert mined.rectifier == "relu" and bool((mined.values >= 0).all())
    raw = mine_top_k(model, "conv3", images, k=4, show_progress=False, rectified=False)
    assert raw.rectifier is None and bool((raw.values < 0).any())
    assert torch.equal(mined.values, raw.values.clamp_min(0))
    mine_top_k(model, "conv3", images[:2], k=4, show_progress=False).save(tmp_path / "mined.pt")
    with pytest.raises(ValueError, match="rectifier"):
        mine_top_k(model, "conv3", images, k=4, show_progress=False, rectified=False,
                   resume_from=tmp_path / "mined.pt")  # fmt: skip
    channel = int((mined.values == 0).any(dim=1).nonzero()[0])  # a map ≤ 0 on some image
    atlas = project_top_k(model, mined, images, [channel])  # checks the mined values against the rectified map
    drawn = [bool(projection.any()) for projection in atlas.projections[0]]
    assert drawn == (mined.values[mined.row(channel)] > 0).tolist()


def test_occlusion_study_sums_the_rectified_map_and_says_predicted(model: nn.Module, images: torch.Tensor,
                                                                  tmp_path) -> None:  # fmt: skip
    study = occlusion_study(model, images[0], layer="conv5", window=56, stride=56)
    assert study.rectifier == "relu" and not study.target_given and bool((study.map_activation >= 0).all())
    with torch.no_grad():
        assert study.target == int(model(images[:1]).argmax())
    raw = occlusion_study(model, images[0], 1, layer="conv5", window=56, stride=56, rectified=False)
    assert raw.rectifier is None and raw.target_given and raw.target == 1
    assert bool((raw.map_activation < study.map_activation).any())
    assert study.save_figure(tmp_path / "study.png").stat().st_size > 0


def test_evolution_follows_the_rectified_map(model: nn.Module, images: torch.Tensor) -> None:
    evolution = FeatureEvolution("conv3", images, channels=list(range(12)))
    evolution(1, model)
    snapshot = evolution.snapshots[0]
    assert snapshot.rectifier == "relu" and bool((snapshot.values >= 0).all())
    assert torch.equal(snapshot.inactive, snapshot.values <= 0)
    for m in snapshot.inactive.nonzero().flatten().tolist():
        assert not snapshot.projections[m].any()
