"""The weights shipped inside the package load offline and are as good as their card says."""

from __future__ import annotations

import json

import torch

from zf_attr.models import ZFNetWeights, zfnet
from zf_attr.models.shapes import ShapesDataset


def test_shipped_weights_load_offline_with_their_card() -> None:
    info = ZFNetWeights.DEFAULT.info
    assert info.path.is_file() and info.path.stat().st_size < 10 * 2**20
    card = json.loads(info.path.with_suffix(".json").read_text())
    assert card["metrics"] == info.metrics
    assert info.metrics["test_accuracy"] >= 0.95  # the target, measured on ShapesDataset(2000, seed=2)
    model = zfnet(weights=ZFNetWeights.SHAPES_112).eval()
    assert model.weights_info.categories == ShapesDataset.classes
    assert model.fc8.out_features == 6


def test_shipped_weights_reach_reported_accuracy_on_a_fresh_split() -> None:
    model = zfnet(weights="DEFAULT").eval()
    data = ShapesDataset(300, seed=7)  # never used in training, validation or the card's test split
    images = torch.stack([data[index][0] for index in range(len(data))])
    labels = torch.tensor([data[index][1] for index in range(len(data))])
    with torch.no_grad():
        accuracy = float((model(images).argmax(dim=1) == labels).float().mean())
    # 300 images: the standard error at 95% is about 1.3 points
    assert accuracy >= model.weights_info.metrics["test_accuracy"] - 0.05
