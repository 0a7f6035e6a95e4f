"""The generated shapes data set: deterministic, balanced, with exact ground truth, and usable by a DataLoader."""

from __future__ import annotations

import pickle
from pathlib import Path

import matplotlib.image
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils.data import DataLoader

from zf_attr.models.shapes import SHAPE_CLASSES, ShapeSample, ShapesDataset, save_examples


def tight_box(mask: torch.Tensor) -> tuple[int, int, int, int]:
    ys, xs = torch.nonzero(mask, as_tuple=True)
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def assert_consistent(sample: ShapeSample, size: int) -> None:
    assert sample.image.shape == (3, size, size)
    assert sample.image.dtype == torch.float32
    assert float(sample.image.min()) >= 0.0
    assert float(sample.image.max()) <= 1.0
    assert sample.mask.shape == (size, size)
    assert sample.mask.dtype == torch.bool
    assert bool(sample.mask.any())
    assert sample.box == tight_box(sample.mask)
    x0, y0, x1, y1 = sample.box
    assert 0 <= x0 < x1 <= size
    assert 0 <= y0 < y1 <= size
    assert 0 <= sample.label < len(SHAPE_CLASSES)
    assert sample.class_name == SHAPE_CLASSES[sample.label]


def test_classes() -> None:
    assert len(SHAPE_CLASSES) == 6
    assert len(set(SHAPE_CLASSES)) == 6
    assert ShapesDataset.classes == SHAPE_CLASSES


def test_deterministic() -> None:
    first, second = ShapesDataset(50, seed=3), ShapesDataset(50, seed=3)
    for index in (0, 7, 49):
        a, b, again = first.sample(index), second.sample(index), first.sample(index)
        for other in (b, again):
            assert torch.equal(a.image, other.image)
            assert a.image.numpy().tobytes() == other.image.numpy().tobytes()
            assert torch.equal(a.mask, other.mask)
            assert (a.box, a.label, a.class_name, a.index) == (other.box, other.label, other.class_name, other.index)


def test_item_depends_only_on_seed_and_index() -> None:
    short, long = ShapesDataset(10, seed=5), ShapesDataset(1000, seed=5)
    torch.manual_seed(123)
    a = short.sample(9)
    torch.manual_seed(456)
    b = long.sample(9)
    assert torch.equal(a.image, b.image)
    assert a.label == b.label


def test_global_state_untouched() -> None:
    state, threads = torch.get_rng_state(), torch.get_num_threads()
    ShapesDataset(4, seed=0)[2]
    ShapesDataset(4, seed=0).sample(3)
    assert torch.equal(state, torch.get_rng_state())
    assert torch.get_num_threads() == threads


def test_different_seeds_differ() -> None:
    a, b = ShapesDataset(20, seed=0), ShapesDataset(20, seed=1)
    labels_a = [a.sample(i).label for i in range(20)]
    labels_b = [b.sample(i).label for i in range(20)]
    assert labels_a != labels_b
    for index in range(3):
        assert not torch.equal(a.sample(index).image, b.sample(index).image)
    assert not torch.equal(a.sample(0).image, a.sample(1).image)


def test_mask_and_box() -> None:
    dataset = ShapesDataset(30, seed=2)
    for index in range(len(dataset)):
        sample = dataset.sample(index)
        assert sample.index == index
        assert_consistent(sample, 112)


def test_labels_balanced() -> None:
    dataset = ShapesDataset(120, seed=4)
    labels = torch.tensor([dataset.sample(i).label for i in range(len(dataset))])
    assert labels.min() >= 0
    assert labels.max() < len(SHAPE_CLASSES)
    counts = torch.bincount(labels, minlength=len(SHAPE_CLASSES))
    assert bool((counts > 0).all())
    assert counts.tolist() == [20] * 6  # every block of six holds each class once


def test_getitem_matches_sample() -> None:
    raw = ShapesDataset(5, seed=1, normalize=False)
    normalized = ShapesDataset(5, seed=1)
    mean = torch.tensor(ShapesDataset.MEAN)[:, None, None]
    std = torch.tensor(ShapesDataset.STD)[:, None, None]
    for index in range(5):
        sample = raw.sample(index)
        image, label = raw[index]
        assert torch.equal(image, sample.image)
        assert label == sample.label
        image, label = normalized[index]
        assert image.dtype == torch.float32
        assert torch.allclose(image, (sample.image - mean) / std, atol=1e-6)
        assert label == sample.label


def test_dataloader_batches() -> None:
    dataset = ShapesDataset(10, seed=0)
    loader = DataLoader(dataset, batch_size=4, num_workers=0)
    batches = list(loader)
    assert [tuple(images.shape) for images, _ in batches] == [(4, 3, 112, 112), (4, 3, 112, 112), (2, 3, 112, 112)]
    images, labels = batches[0]
    assert images.dtype == torch.float32
    assert labels.dtype == torch.int64
    assert labels.tolist() == [dataset[i][1] for i in range(4)]
    assert torch.equal(images[1], dataset[1][0])


def test_picklable_for_worker_processes() -> None:
    dataset = ShapesDataset(8, seed=9, image_size=48)
    copy = pickle.loads(pickle.dumps(dataset))
    assert len(copy) == 8
    assert torch.equal(copy[3][0], dataset[3][0])


def test_mean_std_constants() -> None:
    dataset = ShapesDataset(500, seed=0, normalize=False)
    images = torch.stack([dataset[i][0] for i in range(len(dataset))])
    mean = images.mean(dim=(0, 2, 3))
    std = images.std(dim=(0, 2, 3))
    assert torch.allclose(mean, torch.tensor(ShapesDataset.MEAN), atol=0.02)
    assert torch.allclose(std, torch.tensor(ShapesDataset.STD), atol=0.02)


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"length": 0}, "length"),
        ({"length": -3}, "length"),
        ({"length": 2.5}, "length"),
        ({"image_size": 31}, "image_size"),
        ({"image_size": 0}, "image_size"),
        ({"seed": "zero"}, "seed"),
    ],
)
def test_argument_validation(kwargs: dict, pattern: str) -> None:
    with pytest.raises(ValueError, match=pattern):
        ShapesDataset(**kwargs)


def test_indexing_like_a_sequence() -> None:
    dataset = ShapesDataset(6, seed=0, normalize=False)
    assert torch.equal(dataset[-1][0], dataset[5][0])
    assert dataset.sample(-6).index == 0
    for index in (6, 100, -7):
        with pytest.raises(IndexError):
            dataset[index]
        with pytest.raises(IndexError):
            dataset.sample(index)
    assert len(list(dataset)) == 6  # the old sequence protocol stops at IndexError
    with pytest.raises(TypeError):
        dataset[1.5]


def test_save_examples(tmp_path: Path) -> None:
    path = save_examples(tmp_path / "examples.png", n=4, seed=1)
    assert path == tmp_path / "examples.png"
    pixels = matplotlib.image.imread(path)
    assert pixels.ndim == 3
    assert pixels.shape[0] > 100
    assert pixels.shape[1] > 100
    with pytest.raises(ValueError, match="n must be"):
        save_examples(tmp_path / "bad.png", ShapesDataset(2), n=3)


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(min_value=0, max_value=2**40),
    index=st.integers(min_value=0, max_value=10**6),
    image_size=st.integers(min_value=32, max_value=128),
)
def test_property_mask_box_range(seed: int, index: int, image_size: int) -> None:
    dataset = ShapesDataset(index + 1, seed=seed, image_size=image_size, normalize=False)
    sample = dataset.sample(index)
    assert_consistent(sample, image_size)
    image, label = dataset[index]
    assert torch.equal(image, sample.image)
    assert label == sample.label
