"""zf_attr.metrics: known answers, properties and bad input."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from tests.conftest import assert_bitwise_equal, assert_clean, snapshot
from zf_attr.metrics import (
    class_sensitivity,
    deletion_auc,
    insertion_auc,
    pointing_game,
    randomization_test,
    spearman,
    ssim,
)

# --- pointing game ------------------------------------------------------------------------------------------------


def peaked(points: list[tuple[int, int]], size: int = 64) -> torch.Tensor:
    maps = torch.rand(len(points), size, size) * 0.5
    for i, (y, x) in enumerate(points):
        maps[i, y, x] = 1.0
    return maps


def box_mask(box: tuple[int, int, int, int], size: int = 64) -> torch.Tensor:
    x0, y0, x1, y1 = box
    mask = torch.zeros(size, size, dtype=torch.bool)
    mask[y0:y1, x0:x1] = True
    return mask


def test_pointing_inside_outside_and_tolerance_band() -> None:
    mask = box_mask((20, 20, 30, 30))
    masks = mask.expand(4, 64, 64).clone()
    # inside; far outside; 10 px right of the box (within 15); exactly 15 px below the last row
    maps = peaked([(25, 25), (60, 60), (25, 39), (29 + 15, 25)])
    result = pointing_game(maps, masks=masks)
    assert result.hits.tolist() == [True, False, True, True]
    assert result.points.tolist() == [[25, 25], [60, 60], [25, 39], [44, 25]]
    assert result.accuracy == 0.75
    assert pointing_game(maps[:1], masks=masks[:1]).accuracy == 1.0
    assert pointing_game(maps[1:2], masks=masks[1:2]).accuracy == 0.0
    # the band's edge: 15 px away hits, 16 px misses; tolerance 0 asks for the object itself
    assert pointing_game(peaked([(29 + 16, 25)]), masks=masks[:1]).accuracy == 0.0
    assert pointing_game(maps[2:3], masks=masks[2:3], tolerance=0).accuracy == 0.0
    # Euclidean, not square: (11, 11) diagonally from the corner is 15.56 px away
    assert pointing_game(peaked([(29 + 11, 29 + 11)]), masks=masks[:1]).accuracy == 0.0
    assert pointing_game(peaked([(29 + 9, 29 + 12)]), masks=masks[:1]).accuracy == 1.0


def test_pointing_channels_are_summed_in_absolute_value() -> None:
    maps = torch.zeros(1, 3, 32, 32)
    maps[0, 0, 2, 2] = -5.0  # the largest |.|: outside the object
    maps[0, 1, 20, 20] = 3.0
    mask = box_mask((18, 18, 24, 24), 32)[None]
    assert pointing_game(maps, masks=mask, tolerance=0).points.tolist() == [[2, 2]]
    assert pointing_game(maps[:, 1], masks=mask, tolerance=0).accuracy == 1.0


def test_pointing_ties() -> None:
    maps = torch.zeros(1, 16, 16)
    maps[0, 0, 0] = maps[0, 10, 10] = 1.0
    mask = box_mask((9, 9, 12, 12), 16)[None]
    assert pointing_game(maps, masks=mask, tolerance=0).accuracy == 0.0  # first maximum: (0, 0)
    assert pointing_game(maps, masks=mask, tolerance=0, ties="any").accuracy == 1.0


@settings(max_examples=60, deadline=None)
@given(
    box=st.tuples(st.integers(0, 30), st.integers(0, 30), st.integers(1, 10), st.integers(1, 10)),
    point=st.tuples(st.integers(0, 39), st.integers(0, 39)),
    tolerance=st.sampled_from([0, 1, 2.5, 7, 15]),
    ties=st.sampled_from(["first", "any"]),
)
def test_boxes_equal_their_masks(box: tuple, point: tuple, tolerance: float, ties: str) -> None:
    x0, y0, w, h = box
    boxes = torch.tensor([[x0, y0, x0 + w, y0 + h]])
    maps = torch.zeros(1, 40, 40)
    maps[0, point[0], point[1]] = 1.0
    by_box = pointing_game(maps, boxes=boxes, tolerance=tolerance, ties=ties)
    by_mask = pointing_game(maps, masks=box_mask(tuple(boxes[0].tolist()), 40)[None], tolerance=tolerance, ties=ties)
    assert by_box.hits.tolist() == by_mask.hits.tolist()
    dx = max(x0 - point[1], 0, point[1] - (x0 + w - 1))
    dy = max(y0 - point[0], 0, point[0] - (y0 + h - 1))
    assert by_box.hits.item() == (math.hypot(dx, dy) <= tolerance)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), scale=st.floats(0.01, 100), shift=st.floats(-10, 10))
def test_pointing_is_invariant_to_monotone_rescaling(seed: int, scale: float, shift: float) -> None:
    generator = torch.Generator().manual_seed(seed)
    maps = torch.rand(5, 24, 24, generator=generator, dtype=torch.float64)
    masks = torch.rand(5, 24, 24, generator=generator) > 0.9
    masks[:, 0, 0] = True
    result = pointing_game(maps, masks=masks, tolerance=3)
    rescaled = pointing_game(torch.exp(maps * scale) + shift, masks=masks, tolerance=3)
    assert 0.0 <= result.accuracy <= 1.0
    assert rescaled.hits.tolist() == result.hits.tolist()


# --- deletion and insertion --------------------------------------------------------------------------------------


class RegionSum(nn.Module):
    """Logit 0 = the sum of pixels in rows 0-1, columns 0-1 (all channels); logit 1 = 0."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        region = x[:, :, :2, :2].sum((1, 2, 3))
        return torch.stack([region, torch.zeros_like(region)], 1)


def region_first_map() -> torch.Tensor:
    maps = torch.zeros(1, 4, 4)
    maps[0, :2, :2] = 1.0
    return maps


def test_deletion_and_insertion_known_aucs() -> None:
    images = torch.ones(1, 2, 4, 4)  # region sum = 8 (4 pixels x 2 channels)
    good, bad = region_first_map(), 1.0 - region_first_map()
    kwargs = {"steps": 8, "score": "logit"}  # 2 pixels per step
    deletion = deletion_auc(RegionSum(), images, good, 0, **kwargs)
    assert deletion.fractions.tolist() == [k / 8 for k in range(9)]
    assert deletion.scores.tolist() == [[8, 4, 0, 0, 0, 0, 0, 0, 0]]
    assert deletion.auc.tolist() == [0.125 * (8 + 4) / 2 + 0.125 * (4 + 0) / 2]  # 1.0
    late = deletion_auc(RegionSum(), images, bad, 0, **kwargs)
    assert late.scores.tolist() == [[8, 8, 8, 8, 8, 8, 8, 4, 0]]
    assert late.auc.tolist() == [0.125 * (6 * 8 + 6 + 2)]  # 7.0
    insertion = insertion_auc(RegionSum(), images, good, 0, **kwargs)
    assert insertion.scores.tolist() == [[0, 4, 8, 8, 8, 8, 8, 8, 8]]
    assert insertion.auc.tolist() == [0.125 * (2 + 6 + 6 * 8)]  # 7.0
    # probabilities: softmax of (s, 0) is sigmoid(s)
    probability = deletion_auc(RegionSum(), images, good, [0], steps=8)
    expected = torch.sigmoid(torch.tensor([8.0, 4, 0, 0, 0, 0, 0, 0, 0], dtype=torch.float64))
    torch.testing.assert_close(probability.scores[0], expected, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(probability.auc, torch.trapezoid(expected, deletion.fractions).reshape(1))


def test_baselines_number_tensor_callable() -> None:
    images = torch.ones(1, 2, 4, 4)
    good = region_first_map()
    scalar = deletion_auc(RegionSum(), images, good, 0, steps=2, baseline=0.5, score="logit")
    assert scalar.scores.tolist() == [[8, 4, 4]]
    tensor = deletion_auc(RegionSum(), images, good, 0, steps=2, baseline=torch.tensor([0.5, 0.0]).reshape(2, 1, 1))
    blurred = insertion_auc(RegionSum(), images, good, 0, steps=2, baseline=lambda x: x * 0.25, score="logit")
    assert blurred.scores.tolist() == [[2, 8, 8]]
    assert tensor.scores.shape == (1, 3)


def test_curves_are_batched_deterministic_and_leave_the_model_alone() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 5)).train()
    before = snapshot(model)
    images = torch.randn(3, 3, 8, 8)
    maps = torch.randint(0, 3, (3, 8, 8)).float()  # many ties, broken by the seeded order
    one = deletion_auc(model, images, maps, [0, 1, 2], steps=10, batch_size=1, seed=3)
    many = deletion_auc(model, images, maps, torch.tensor([0, 1, 2]), steps=10, batch_size=64, seed=3)
    torch.testing.assert_close(one.scores, many.scores, rtol=1e-5, atol=1e-6)
    assert torch.equal(many.scores, deletion_auc(model, images, maps, [0, 1, 2], steps=10, seed=3).scores)
    assert not torch.equal(many.scores, deletion_auc(model, images, maps, [0, 1, 2], steps=10, seed=4).scores)
    # the two ends of the curve do not depend on the map
    full = model(images).softmax(1).gather(1, torch.tensor([[0], [1], [2]])).squeeze(1).double()
    torch.testing.assert_close(many.scores[:, 0], full.detach())
    assert model.training
    assert_bitwise_equal(model, before)
    assert_clean(model)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), steps=st.integers(1, 20), logit=st.booleans())
def test_auc_lies_between_the_curve_extremes(seed: int, steps: int, logit: bool) -> None:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Flatten(), nn.Linear(2 * 5 * 5, 3))
    images, maps = torch.randn(2, 2, 5, 5), torch.randn(2, 2, 5, 5)
    for metric in (deletion_auc, insertion_auc):
        curve = metric(model, images, maps, 1, steps=steps, score="logit" if logit else "probability")
        assert curve.scores.shape == (2, steps + 1)
        assert torch.all(curve.auc >= curve.scores.min(1).values - 1e-9)
        assert torch.all(curve.auc <= curve.scores.max(1).values + 1e-9)
        if not logit:
            assert torch.all((curve.auc >= 0) & (curve.auc <= 1))


# --- sanity checks -----------------------------------------------------------------------------------------------


def gradient(model: nn.Module, images: torch.Tensor, target: int) -> torch.Tensor:
    images = images.clone().requires_grad_()
    model(images)[:, target].sum().backward()
    return images.grad


def edges(model: nn.Module, images: torch.Tensor, target: int) -> torch.Tensor:
    """A planted method that ignores the model: the horizontal + vertical finite differences of the image."""
    dx = (images[..., :, 1:] - images[..., :, :-1]).abs()
    dy = (images[..., 1:, :] - images[..., :-1, :]).abs()
    return dx[..., :-1, :] + dy[..., :, :-1]


def test_randomisation_separates_weight_following_from_planted_methods() -> None:
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 4))
    before = snapshot(model)
    images = torch.randn(2, 3, 32, 32)
    follows = randomization_test(model, gradient, images, 1)
    assert follows.layers == ["1"]
    assert follows.spearman.shape == (1, 2) and follows.ssim.shape == (1, 2)
    assert abs(float(follows.mean())) < 0.15
    planted = randomization_test(model, edges, images, 1)
    assert planted.mean().tolist() == [1.0]
    assert planted.mean("ssim").tolist() == [1.0]
    assert_bitwise_equal(model, before)
    assert_clean(model)


def test_randomisation_cascades_from_the_output_and_is_seeded() -> None:
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 16 * 16, 4)
    ).eval()
    before = snapshot(model)
    images = torch.randn(2, 3, 16, 16)
    result = randomization_test(model, gradient, images, 0, similarity="spearman")
    assert result.layers == ["4", "1", "0"]
    assert result.ssim is None and result.spearman.shape == (3, 2)
    again = randomization_test(model, gradient, images, 0, similarity=["spearman"])
    assert torch.equal(result.spearman, again.spearman)
    other = randomization_test(model, gradient, images, 0, similarity="spearman", seed=1)
    assert not torch.equal(result.spearman, other.spearman)
    chosen = randomization_test(model, gradient, images, 0, layers=["0"], cascading=False)
    assert chosen.layers == ["0"]
    assert_bitwise_equal(model, before)
    assert not model.training
    with pytest.raises(ValueError, match="ssim was not computed"):
        result.mean("ssim")


def test_randomisation_detects_a_function_that_touches_the_original() -> None:
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 2))

    def sneaky(m: nn.Module, x: torch.Tensor, t: int) -> torch.Tensor:
        with torch.no_grad():
            model[1].weight.add_(1.0)
        return x

    with pytest.raises(RuntimeError, match="changed"):
        randomization_test(model, sneaky, torch.randn(1, 3, 2, 2), 0)


def test_class_sensitivity() -> None:
    images = torch.randn(3, 3, 16, 16)
    independent = class_sensitivity(lambda x, t: edges(None, x, t), images, 0, 1)
    assert independent.tolist() == [1.0, 1.0, 1.0]
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, 4))
    dependent = class_sensitivity(lambda x, t: gradient(model, x, t), images, 0, torch.tensor([3, 3, 3]))
    assert dependent.shape == (3,)
    assert torch.all(dependent < 0.5)


def test_spearman_and_ssim_helpers() -> None:
    a = torch.tensor([[1.0, 2.0, 2.0, 3.0]])
    assert spearman(a, torch.tensor([[1.0, 2.0, 3.0, 4.0]])).item() == pytest.approx(math.sqrt(0.9))  # ties averaged
    assert math.isnan(spearman(a, torch.ones(1, 4)).item())
    maps = torch.rand(2, 9, 9)
    assert ssim(maps, maps * 3 + 1).tolist() == pytest.approx([1.0, 1.0])
    assert float(ssim(maps, torch.rand(2, 9, 9)).max()) < 0.9


# --- bad input -----------------------------------------------------------------------------------------------


def test_pointing_bad_input() -> None:
    maps, masks = torch.rand(2, 8, 8), torch.ones(2, 8, 8, dtype=torch.bool)
    with pytest.raises(ValueError, match="exactly one of masks"):
        pointing_game(maps)
    with pytest.raises(ValueError, match="both"):
        pointing_game(maps, masks=masks, boxes=torch.tensor([[0, 0, 1, 1]] * 2))
    with pytest.raises(TypeError, match="masks has dtype"):
        pointing_game(maps, masks=masks.float())
    with pytest.raises(ValueError, match="masks has shape"):
        pointing_game(maps, masks=masks[:, :4])
    with pytest.raises(ValueError, match=r"masks\[1\] is empty"):
        pointing_game(maps, masks=torch.stack([masks[0], ~masks[1]]))
    with pytest.raises(ValueError, match="boxes has shape"):
        pointing_game(maps, boxes=torch.tensor([0, 0, 1, 1]))
    with pytest.raises(ValueError, match=r"boxes\[0\]"):
        pointing_game(maps, boxes=torch.tensor([[3, 0, 3, 1], [0, 0, 1, 1]]))
    with pytest.raises(TypeError, match="maps has dtype"):
        pointing_game(maps.long(), masks=masks)
    with pytest.raises(ValueError, match="maps has shape"):
        pointing_game(maps[0], masks=masks)
    with pytest.raises(ValueError, match="tolerance"):
        pointing_game(maps, masks=masks, tolerance=-1)
    with pytest.raises(ValueError, match="ties"):
        pointing_game(maps, masks=masks, ties="last")


def test_curve_bad_input() -> None:
    model, images, maps = RegionSum(), torch.ones(2, 2, 4, 4), torch.rand(2, 4, 4)
    with pytest.raises(ValueError, match="maps has shape"):
        deletion_auc(model, images, torch.rand(2, 8, 8), 0)
    with pytest.raises(ValueError, match="maps has shape"):
        insertion_auc(model, images, torch.rand(3, 4, 4), 0)
    with pytest.raises(ValueError, match="steps"):
        deletion_auc(model, images, maps, 0, steps=0)
    with pytest.raises(ValueError, match="batch_size"):
        deletion_auc(model, images, maps, 0, batch_size=0)
    with pytest.raises(ValueError, match="score"):
        deletion_auc(model, images, maps, 0, score="prob")
    with pytest.raises(TypeError, match="images has dtype"):
        deletion_auc(model, images.long(), maps, 0)
    with pytest.raises(ValueError, match="images has shape"):
        deletion_auc(model, images[0], maps, 0)
    with pytest.raises(ValueError, match="target has 3 entries"):
        deletion_auc(model, images, maps, [0, 1, 0])
    with pytest.raises(TypeError, match="target"):
        deletion_auc(model, images, maps, 0.5)
    with pytest.raises(ValueError, match="out of range"):
        deletion_auc(model, images, maps, 7)
    with pytest.raises(ValueError, match="baseline"):
        deletion_auc(model, images, maps, 0, baseline=torch.zeros(3, 4, 4))
    with pytest.raises(ValueError, match="baseline callable"):
        deletion_auc(model, images, maps, 0, baseline=lambda x: x[0])
    with pytest.raises(TypeError, match="model must be callable"):
        deletion_auc("resnet", images, maps, 0)
    with pytest.raises(ValueError, match="scores"):
        deletion_auc(nn.Flatten(0), images, maps, 0)


def test_sanity_bad_input() -> None:
    model, images = nn.Sequential(nn.Flatten(), nn.Linear(12, 2)), torch.randn(1, 3, 2, 2)
    with pytest.raises(TypeError, match="model"):
        randomization_test(lambda x: x, gradient, images, 0)
    with pytest.raises(TypeError, match="attribution_fn"):
        randomization_test(model, None, images, 0)
    with pytest.raises(ValueError, match="not a module"):
        randomization_test(model, gradient, images, 0, layers=["fc"])
    with pytest.raises(ValueError, match="without parameters"):
        randomization_test(model, gradient, images, 0, layers=["0"])
    with pytest.raises(ValueError, match="similarity"):
        randomization_test(model, gradient, images, 0, similarity=("pearson",))
    with pytest.raises(TypeError, match="attribution_fn"):
        class_sensitivity(None, images, 0, 1)
    with pytest.raises(ValueError, match="shapes"):
        class_sensitivity(lambda x, t: x[:, :, : t + 1], images, 0, 1)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 8 * 8, 5))
    images, maps = torch.randn(2, 3, 8, 8), torch.rand(2, 8, 8)
    masks = torch.rand(2, 8, 8) > 0.5
    masks[:, 0, 0] = True
    cpu = deletion_auc(model, images, maps, [0, 1], steps=6)
    gpu = deletion_auc(model.cuda(), images.cuda(), maps.cuda(), torch.tensor([0, 1]), steps=6)
    torch.testing.assert_close(gpu.auc, cpu.auc, rtol=1e-4, atol=1e-5)
    assert pointing_game(maps.cuda(), masks=masks.cuda(), tolerance=1).hits.tolist() == (
        pointing_game(maps, masks=masks, tolerance=1).hits.tolist()
    )
    result = randomization_test(model, gradient, images.cuda(), 0)
    assert result.spearman.shape == (2, 2) and next(model.parameters()).is_cuda
