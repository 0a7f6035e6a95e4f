"""The atlas: mined activations projected and cropped, checked against per-image projections; the figure."""

from __future__ import annotations

import pytest
import torch
import torchvision
from conftest import assert_bitwise_equal, assert_clean, snapshot
from PIL import Image

from zf_attr import FeatureMapDeconvnet
from zf_attr.analysis import mine_top_k, plot_atlas, project_top_k, save_atlas
from zf_attr.analysis.atlas.figure import projection_to_display
from zf_attr.analysis.atlas.topk import TopKActivations


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    model = torchvision.models.vgg11().eval()
    images = torch.randn(6, 3, 32, 32)
    mined = mine_top_k(model, "features.5", images, k=3, channels=[4, 17], show_progress=False)
    return model, images, mined


def test_crops_equal_the_per_image_projection_of_each_maps_maximum(setup) -> None:
    model, images, mined = setup
    before = snapshot(model)
    atlas = project_top_k(model, mined, lambda i: (images[i], 0), chunk_size=2)
    projector = FeatureMapDeconvnet(model, "features.5")
    field = projector.receptive_field()
    for row, channel in enumerate(atlas.channels.tolist()):
        for slot in range(3):
            image_id = int(atlas.image_ids[row, slot])
            # independent route: the whole projection of this image's strongest activation of the channel
            reference = projector.attribute(images[image_id : image_id + 1], [channel], mode="max")
            assert reference.locations[0, 0].tolist() == atlas.locations[row, slot].tolist()
            assert float(reference.activations[0, 0]) == pytest.approx(float(atlas.values[row, slot]), rel=1e-5)
            x0, y0, x1, y1 = atlas.boxes[row, slot].tolist()
            assert (x0, y0, x1, y1) == field.box(*atlas.locations[row, slot].tolist(), image_size=(32, 32))
            full = reference.projections[0, 0]
            torch.testing.assert_close(atlas.projections[row][slot], full[:, y0:y1, x0:x1], rtol=1e-4, atol=1e-6)
            outside = full.clone()
            outside[:, y0:y1, x0:x1] = 0
            assert float(outside.abs().max()) == 0.0  # the crop holds the whole projection
            assert torch.equal(atlas.patches[row][slot], images[image_id][:, y0:y1, x0:x1])
    assert_bitwise_equal(model, before)
    assert_clean(model)


def test_channel_subset_and_empty_slots() -> None:
    model = torchvision.models.resnet18().eval()
    images = torch.randn(2, 3, 32, 32)
    mined = mine_top_k(model, "layer1", images, k=3, channels=[1, 2, 3], show_progress=False)
    atlas = project_top_k(model, mined, images, channels=[3])
    assert atlas.channels.tolist() == [3] and atlas.values.shape == (1, 3)
    assert atlas.projections[0][2] is None and atlas.patches[0][2] is None  # two images, k=3
    figure = plot_atlas(atlas)
    texts = {text.get_text() for sub in figure.subfigs for text in _texts(sub)}
    assert "layer1 · channel 3" in texts
    assert f"{float(atlas.values[0, 0]):.3g} · #{int(atlas.image_ids[0, 0])}" in texts


def _texts(subfigure):
    yield subfigure._suptitle
    for axis in subfigure.axes:
        yield axis.title
    for child in subfigure.subfigs:
        yield from _texts(child)


def test_wrong_data_is_refused(setup) -> None:
    model, images, mined = setup
    with pytest.raises(ValueError, match="mined value"):
        project_top_k(model, mined, images.flip(0))
    with pytest.raises(ValueError, match="not in dataset"):
        project_top_k(model, mined, images[:1])
    with pytest.raises(ValueError, match="channel 5 was not mined"):
        project_top_k(model, mined, images, channels=[5])
    with pytest.raises(TypeError, match="TopKActivations"):
        project_top_k(model, {"values": mined.values}, images)
    with pytest.raises(TypeError, match="expected an image"):
        project_top_k(model, mined, lambda i: "image")
    other = TopKActivations.empty("features.99", 3, [4, 17])
    with pytest.raises(ValueError, match="did you mean"):
        project_top_k(model, other, images)
    assert_clean(model)


def test_projection_display_keeps_zero_grey() -> None:
    shown = projection_to_display(torch.tensor([[[0.0, 4.0]], [[-4.0, 0.0]], [[0.0, 0.0]]]))
    assert shown[0, 0].tolist() == [0.5, 0.0, 0.5] and shown[0, 1].tolist() == [1.0, 0.5, 0.5]
    assert projection_to_display(torch.zeros(3, 2, 2)).tolist() == torch.full((2, 2, 3), 0.5).tolist()


def test_save_atlas_writes_a_labelled_png(setup, tmp_path) -> None:
    model, images, mined = setup
    atlas = project_top_k(model, mined, images)
    path = save_atlas(atlas, tmp_path / "atlas.png", channels=[17], dpi=60)
    with Image.open(path) as picture:
        assert picture.format == "PNG" and picture.width > 100
    with pytest.raises(ValueError, match="not in the atlas"):
        save_atlas(atlas, tmp_path / "x.png", channels=[3])
