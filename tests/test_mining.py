"""Top-k mining: the exact total order, merging, streaming sources, resuming, and bad input."""

from __future__ import annotations

import random
from collections import OrderedDict
from typing import ClassVar

import pytest
import torch
import torchvision
from conftest import assert_bitwise_equal, assert_clean, snapshot
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from zf_attr.analysis.atlas.mining import _update, mine_top_k
from zf_attr.analysis.atlas.topk import TopKActivations
from zf_attr.attr._layers import capture_layer_output

IDENTITY = nn.Sequential(nn.Identity())  # layer "0" returns its input: the data *are* the activations


def small_net() -> nn.Module:
    layers = OrderedDict(
        conv1=nn.Conv2d(3, 8, 3, padding=1),
        relu1=nn.ReLU(),
        layer1=nn.Conv2d(8, 16, 3, stride=2),
        pool=nn.AdaptiveAvgPool2d(1),
        flatten=nn.Flatten(),
        fc=nn.Linear(16, 4),
    )
    return nn.Sequential(layers).eval()


def brute_force(maps: torch.Tensor, k: int, one_per_image: bool) -> list[list[tuple[float, int, int, int]]]:
    """Per channel, the k best (value, id, row, col) by value desc, id asc, (row, col) asc; plain Python."""
    n, c, h, w = maps.shape
    result = []
    for channel in range(c):
        entries = []
        for image in range(n):
            cells = [(float(maps[image, channel, r, q]), image, r, q) for r in range(h) for q in range(w)]
            if one_per_image:
                best = max(v for v, *_ in cells)
                cells = [min(cell for cell in cells if cell[0] == best)[0:4]]
            entries.extend(cells)
        entries.sort(key=lambda e: (-e[0], e[1], e[2], e[3]))
        result.append(entries[:k])
    return result


def as_entries(result: TopKActivations) -> list[list[tuple[float, int, int, int]]]:
    rows = []
    for i in range(len(result.channels)):
        rows.append(
            [
                (float(result.values[i, j]), int(result.image_ids[i, j]), *map(int, result.locations[i, j]))
                for j in range(result.k)
                if result.image_ids[i, j] >= 0
            ]
        )
    return rows


def mine_ids(maps: torch.Tensor, ids: list[int], k: int, one_per_image: bool, batch: int) -> TopKActivations:
    """Mine the images ``ids`` (global ids) of synthetic activations ``maps`` with the streaming update."""
    state = TopKActivations.empty("0", k, range(maps.shape[1]), one_per_image=one_per_image)
    for start in range(0, len(ids), batch):
        chunk = torch.tensor(ids[start : start + batch])
        state = _update(state, maps[chunk], chunk)
    return state


maps_strategy = st.tuples(
    st.integers(1, 9), st.integers(1, 3), st.integers(1, 3), st.integers(1, 3), st.integers(0, 2**31 - 1)
)


@settings(max_examples=60, deadline=None)
@given(
    shape=maps_strategy,
    k=st.integers(1, 6),
    one_per_image=st.booleans(),
    shards=st.integers(1, 4),
    seed=st.integers(0, 2**31 - 1),
)
def test_any_split_and_merge_order_gives_the_single_run(shape, k, one_per_image, shards, seed) -> None:
    n, c, h, w, data_seed = shape
    # few distinct values: many ties, so the tie order decides the result
    maps = torch.randint(-2, 3, (n, c, h, w), generator=torch.Generator().manual_seed(data_seed)).float()
    rng = random.Random(seed)
    single = mine_ids(maps, list(range(n)), k, one_per_image, batch=rng.randint(1, n))
    assert as_entries(single) == brute_force(maps, k, one_per_image)
    owner = [rng.randrange(shards) for _ in range(n)]
    parts = [
        mine_ids(maps, [i for i in range(n) if owner[i] == s], k, one_per_image, batch=rng.randint(1, 4))
        for s in range(shards)
    ]
    rng.shuffle(parts)
    merged = parts[0]
    for part in parts[1:]:
        merged = merged.merge(part) if rng.random() < 0.5 else part.merge(merged)
    assert merged.equal(single)


def test_mine_top_k_equals_brute_force_on_a_resnet() -> None:
    model = torchvision.models.resnet18().eval()
    images = torch.randn(7, 3, 32, 32)
    before = snapshot(model)
    mined = mine_top_k(model, "layer2", images, k=4, channels=[3, 0, 9], batch_size=7, show_progress=False)
    with torch.no_grad():
        activation, _ = capture_layer_output(model, model.layer2, (images,), stop=True)
    assert as_entries(mined) == brute_force(activation[:, [3, 0, 9]], 4, True)
    assert mined.channels.tolist() == [3, 0, 9] and mined.map_size == (4, 4) and mined.images_seen == 7
    assert_bitwise_equal(model, before)
    assert_clean(model)


def test_all_locations_mode_can_hold_one_image_several_times() -> None:
    maps = torch.zeros(3, 1, 2, 2)
    maps[1, 0] = torch.tensor([[5.0, 4.0], [0.0, 3.0]])
    maps[2, 0, 1, 1] = 3.5
    anywhere = mine_top_k(IDENTITY, "0", maps, k=3, one_per_image=False, show_progress=False)
    assert as_entries(anywhere) == [[(5.0, 1, 0, 0), (4.0, 1, 0, 1), (3.5, 2, 1, 1)]]
    per_image = mine_top_k(IDENTITY, "0", maps, k=3, show_progress=False)
    assert as_entries(per_image) == [[(5.0, 1, 0, 0), (3.5, 2, 1, 1), (0.0, 0, 0, 0)]]


def test_fewer_images_than_k_leave_empty_slots_last() -> None:
    mined = mine_top_k(IDENTITY, "0", torch.ones(2, 2, 3, 3), k=4, show_progress=False)
    assert mined.filled.tolist() == [[True, True, False, False]] * 2
    assert mined.image_ids[0].tolist() == [0, 1, -1, -1] and mined.values[0, 2] == float("-inf")


def test_sources_agree_and_ids_are_global_positions() -> None:
    maps = torch.randn(10, 3, 4, 4)
    expected = mine_top_k(IDENTITY, "0", maps, k=3, batch_size=10, show_progress=False)
    labels = torch.zeros(10, dtype=torch.long)
    sources = {
        "dataset": TensorDataset(maps, labels),
        "loader": DataLoader(TensorDataset(maps, labels), batch_size=3),
        "shuffled-free loader of images": DataLoader(maps, batch_size=4),
        "generator of images": (image for image in maps),
        "list of (image, label)": [(image, 0) for image in maps],
        "list of batches": [maps[:6], maps[6:]],
    }
    for name, data in sources.items():
        mined = mine_top_k(IDENTITY, "0", data, k=3, batch_size=4, show_progress=False)
        assert mined.equal(expected), name


def test_images_of_several_sizes() -> None:
    images = [torch.randn(3, 4, 4), torch.randn(3, 4, 4), torch.randn(3, 5, 6), torch.randn(3, 4, 4)]
    mined = mine_top_k(IDENTITY, "0", images, k=4, batch_size=8, show_progress=False)
    assert mined.map_size is None and mined.images_seen == 4
    best = [max(range(4), key=lambda i: (float(images[i][c].max()), -i)) for c in range(3)]
    assert mined.image_ids[:, 0].tolist() == best


def test_resume_from_checkpoint_equals_one_run(tmp_path) -> None:
    maps = torch.randn(11, 2, 3, 3)
    full = mine_top_k(IDENTITY, "0", maps, k=3, batch_size=2, show_progress=False)
    path = tmp_path / "mined.pt"
    first = mine_top_k(IDENTITY, "0", maps[:5], k=3, batch_size=2, checkpoint=path, show_progress=False)
    assert TopKActivations.load(path).equal(first) and first.images_seen == 5

    class CountingDataset(TensorDataset):
        loaded: ClassVar[list[int]] = []

        def __getitem__(self, index):
            self.loaded.append(index)
            return super().__getitem__(index)

    data = CountingDataset(maps)
    resumed = mine_top_k(IDENTITY, "0", data, k=3, batch_size=2, resume_from=path, show_progress=False)
    assert resumed.equal(full)
    assert min(CountingDataset.loaded) == 5  # the images already seen are not even loaded
    stream = mine_top_k(IDENTITY, "0", iter(maps), k=3, batch_size=2, resume_from=first, show_progress=False)
    assert stream.equal(full)


def test_checkpoint_every_n_batches(tmp_path) -> None:
    seen = []

    def batches():
        for _ in range(4):
            if (tmp_path / "c.pt").exists():
                seen.append(TopKActivations.load(tmp_path / "c.pt").images_seen)
            yield torch.randn(2, 1, 2, 2)

    mine_top_k(IDENTITY, "0", batches(), k=1, checkpoint=tmp_path / "c.pt", checkpoint_every=2, show_progress=False)
    assert seen == [4, 4]  # written after batch 2 (read before batches 3 and 4), then at the end
    assert TopKActivations.load(tmp_path / "c.pt").images_seen == 8


def test_save_load_round_trip_and_refusals(tmp_path) -> None:
    mined = mine_top_k(IDENTITY, "0", torch.randn(4, 2, 3, 3), k=2, show_progress=False)
    assert TopKActivations.load(mined.save(tmp_path / "m.pt")).equal(mined)
    other_k = mine_top_k(IDENTITY, "0", torch.randn(4, 2, 3, 3), k=3, show_progress=False)
    with pytest.raises(ValueError, match="k=3"):
        mined.merge(other_k)
    with pytest.raises(ValueError, match="overlap"):
        mined.merge(mined)
    with pytest.raises(ValueError, match="channels"):
        mined.merge(mine_top_k(IDENTITY, "0", torch.randn(4, 2, 3, 3), k=2, channels=[1], show_progress=False))
    model = nn.Sequential(nn.Conv2d(2, 2, 1), nn.ReLU())
    with pytest.raises(ValueError, match="layer='1'"):
        mine_top_k(model, "1", torch.randn(4, 2, 3, 3), k=2, resume_from=tmp_path / "m.pt", show_progress=False)
    torch.save({"something": 1}, tmp_path / "x.pt")
    with pytest.raises(ValueError, match="not a saved TopKActivations"):
        TopKActivations.load(tmp_path / "x.pt")
    with pytest.raises(TypeError, match="TopKActivations"):
        mined.merge("m.pt")


def test_model_mode_restored_and_batchnorm_stats_untouched() -> None:
    model = torchvision.models.resnet18().train()
    model.layer1.requires_grad_(False)
    before = snapshot(model)
    mine_top_k(model, "layer1", torch.randn(3, 3, 32, 32), k=1, show_progress=False)
    assert model.training and all(module.training for module in model.modules())
    assert not any(p.requires_grad for p in model.layer1.parameters()) and model.conv1.weight.requires_grad
    assert_bitwise_equal(model, before)  # eval mode during the run: running statistics not updated
    assert_clean(model)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"layer": "layer9"}, ValueError, "did you mean"),
        ({"k": 0}, ValueError, "k=0"),
        ({"channels": [16]}, ValueError, "out of range"),
        ({"channels": [1, 1]}, ValueError, "twice"),
        ({"channels": 1.5}, TypeError, "channels"),
        ({"data": torch.randn(0, 3, 16, 16)}, ValueError, "no images"),
        ({"data": iter([])}, ValueError, "no images"),
        ({"data": [("no image", 0)]}, TypeError, "image tensor"),
        ({"data": 3}, TypeError, "data must be"),
        ({"layer": "fc"}, ValueError, "feature map"),
        ({"batch_size": 0}, ValueError, "batch_size"),
        ({"resume_from": "missing.pt"}, ValueError, "does not exist"),
    ],
)
def test_bad_input(kwargs, error, match) -> None:
    model = small_net()
    arguments = {"layer": "layer1", "data": torch.randn(2, 3, 16, 16), "k": 2, "show_progress": False} | kwargs
    with pytest.raises(error, match=match):
        mine_top_k(model, **arguments)
    assert_clean(model)


def test_nan_activations_are_refused() -> None:
    maps = torch.zeros(3, 1, 2, 2)
    maps[1, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match=r"NaN activations for image ids \[1\]"):
        mine_top_k(IDENTITY, "0", maps, k=1, show_progress=False)


def test_resume_refuses_other_channels_or_mode(tmp_path) -> None:
    mined = mine_top_k(IDENTITY, "0", torch.randn(4, 3, 3, 3), k=2, channels=[0, 2], show_progress=False)
    more = torch.randn(6, 3, 3, 3)  # the same data continued: its first 4 images are skipped
    with pytest.raises(ValueError, match="channels"):
        mine_top_k(IDENTITY, "0", more, k=2, resume_from=mined, show_progress=False)
    with pytest.raises(ValueError, match="one_per_image=True"):
        mine_top_k(IDENTITY, "0", more, k=2, channels=[0, 2], one_per_image=False, resume_from=mined)


def test_runs_over_parts_of_a_data_set_merge_into_the_whole(tmp_path) -> None:
    maps = torch.randn(9, 2, 3, 3)
    whole = mine_top_k(IDENTITY, "0", maps, k=4, batch_size=9, show_progress=False)
    dataset = TensorDataset(maps)
    first = mine_top_k(IDENTITY, "0", dataset, k=4, indices=range(0, 9, 3), show_progress=False)
    second = mine_top_k(IDENTITY, "0", DataLoader(dataset, batch_size=2), k=4, indices=[8, 2, 4, 5, 1, 7])
    assert sorted(first.image_ids.unique().tolist()) <= [0, 3, 6]
    assert second.merge(first).equal(whole) and first.merge(second).equal(whole)
    with pytest.raises(ValueError, match="out of range"):
        mine_top_k(IDENTITY, "0", maps, k=1, indices=[9], show_progress=False)
    with pytest.raises(ValueError, match="twice"):
        mine_top_k(IDENTITY, "0", maps, k=1, indices=[1, 1], show_progress=False)
    with pytest.raises(TypeError, match="indices= needs"):
        mine_top_k(IDENTITY, "0", iter(maps), k=1, indices=[1], show_progress=False)


def test_loaders_that_would_give_wrong_ids_or_shards() -> None:
    from torch.utils.data import DistributedSampler

    from zf_attr.errors import ZFAttrWarning

    dataset = TensorDataset(torch.randn(6, 1, 2, 2))
    sampler = DistributedSampler(dataset, num_replicas=4, rank=0, shuffle=False)
    with pytest.raises(TypeError, match="DistributedSampler"):
        mine_top_k(IDENTITY, "0", DataLoader(dataset, sampler=sampler), k=1, show_progress=False)
    with pytest.warns(ZFAttrWarning, match="shuffled"):
        shuffled = mine_top_k(IDENTITY, "0", DataLoader(dataset, shuffle=True), k=1, show_progress=False)
    assert shuffled.images_seen == 6
