"""The comparison runner, its tables and figure: plumbing with known answers, bad input, a clean model."""

from __future__ import annotations

import math

import pytest
import torch
from captum.attr import GuidedBackprop, GuidedGradCam, LayerAttribution, LayerGradCam, Saliency
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import zf_attr
from tests.conftest import assert_bitwise_equal, assert_clean, quiet, snapshot
from zf_attr.analysis import KNOWN_METHODS, SummaryTable, centre_prior, compare, random_map
from zf_attr.analysis.comparison.figure import save_comparison_figure
from zf_attr.analysis.comparison.methods import MethodSpec
from zf_attr.analysis.tables import parse_latex, parse_markdown, read_csv
from zf_attr.metrics import deletion_auc, insertion_auc

SIZE = 32


def small_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(4, 4, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4, 3),
    ).eval()


def square_masks(num: int, top: int, left: int, side: int = 8) -> torch.Tensor:
    masks = torch.zeros(num, SIZE, SIZE, dtype=torch.bool)
    masks[:, top : top + side, left : left + side] = True
    return masks


def peak_at(y: int, x: int):
    def method(images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        maps = torch.rand(images.shape[0], SIZE, SIZE) * 0.5
        maps[:, y, x] = 1.0
        return maps

    return method


@pytest.fixture
def images() -> torch.Tensor:
    return torch.rand(3, 3, SIZE, SIZE)


def test_planted_peaks_score_the_pointing_game_exactly(images: torch.Tensor) -> None:
    masks = square_masks(3, 20, 20)
    result = compare(
        small_model(), images, [0, 1, 2], {"inside": peak_at(22, 25), "outside": peak_at(2, 3)},
        masks=masks, metrics=["pointing"], baselines=(), tolerance=0,
    )  # fmt: skip
    assert result.values["pointing"]["inside"].tolist() == [1.0, 1.0, 1.0]
    assert result.values["pointing"]["outside"].tolist() == [0.0, 0.0, 0.0]
    assert result.summary().mean == {"inside": {"pointing": 1.0}, "outside": {"pointing": 0.0}}


def test_centre_prior_hits_a_centred_object_and_misses_a_corner_one(images: torch.Tensor) -> None:
    model = small_model()
    centred = compare(model, images, 0, {}, masks=square_masks(3, 12, 12), metrics=["pointing"], tolerance=0)
    corner = compare(model, images, 0, {}, masks=square_masks(3, 0, 0), metrics=["pointing"], tolerance=0)
    assert centred.values["pointing"]["centre"].tolist() == [1.0, 1.0, 1.0]
    assert corner.values["pointing"]["centre"].tolist() == [0.0, 0.0, 0.0]
    # boxes work as masks do
    boxes = torch.tensor([[12, 12, 20, 20]] * 3)
    assert compare(model, images, 0, {}, boxes=boxes, metrics=["pointing"]).values["pointing"]["centre"].all()


def test_baselines_are_deterministic_and_well_formed() -> None:
    images = torch.zeros(2, 3, 9, 7)
    prior = centre_prior(images)
    assert prior.shape == (2, 9, 7) and float(prior[0, 4, 3]) == 1.0
    assert torch.allclose(prior, prior.flip(1)) and torch.allclose(prior, prior.flip(2))
    assert torch.equal(random_map(images, 3), random_map(images, 3))
    assert not torch.equal(random_map(images, 3), random_map(images, 4))


def test_metric_values_equal_direct_metric_calls(images: torch.Tensor) -> None:
    model = small_model()
    with quiet():
        result = compare(model, images, [0, 1, 2], ["gradient"], metrics=["deletion", "insertion"], steps=5, seed=3)
        maps = Saliency(model).attribute(images, target=[0, 1, 2], abs=False)
    assert torch.equal(result.maps["gradient"], maps)
    for name, expected in (("gradient", maps), ("random", random_map(images, 3)), ("centre", centre_prior(images))):
        deletion = deletion_auc(model, images, expected, [0, 1, 2], steps=5, seed=3).auc
        insertion = insertion_auc(model, images, expected, [0, 1, 2], steps=5, seed=3).auc
        assert torch.equal(result.values["deletion"][name], deletion)
        assert torch.equal(result.values["insertion"][name], insertion)


def test_layer_maps_are_upsampled_and_relu_applied(images: torch.Tensor) -> None:
    model = small_model()
    gradcam = LayerGradCam(model, model[3])
    result = compare(model, images, [0, 1, 2], {"cam": gradcam, "named": ("gradcam", {"layer": "3"})}, metrics=[])
    small = gradcam.attribute(images, target=[0, 1, 2], relu_attributions=True)
    expected = LayerAttribution.interpolate(small, (SIZE, SIZE), interpolate_mode="bilinear")[:, 0]
    assert small.shape[-1] == SIZE // 2 and result.maps["cam"].shape == (3, SIZE, SIZE)
    assert torch.equal(result.maps["cam"], expected) and torch.equal(result.maps["named"], expected)
    assert (result.maps["cam"] >= 0).all()


def test_captum_attribution_objects_are_columns_as_they_are(images: torch.Tensor) -> None:
    model = small_model()
    captum = {
        "guided backprop": GuidedBackprop(model),
        "guided Grad-CAM": GuidedGradCam(model, model[3]),
        "saliency": Saliency(model),
        "gradient": (Saliency(model), {"abs": False}),
        "Grad-CAM": LayerGradCam(model, model[3]),
    }
    with quiet():
        result = compare(model, images, [0, 1, 2], captum, metrics=["deletion"], steps=4)
        direct = {
            name: (method[0] if isinstance(method, tuple) else method).attribute(
                images, target=[0, 1, 2], **(method[1] if isinstance(method, tuple) else {})
            )
            for name, method in captum.items()
            if name != "Grad-CAM"
        }
    assert result.methods == [*captum, "centre", "random"]
    for name, maps in direct.items():
        assert maps.shape == (3, 3, SIZE, SIZE) and torch.equal(result.maps[name], maps), name
    assert result.maps["Grad-CAM"].shape == (3, SIZE, SIZE)
    assert all(result.values["deletion"][name].shape == (3,) for name in result.methods)


def test_progress_bar_only_when_asked(images: torch.Tensor, capsys: pytest.CaptureFixture[str]) -> None:
    model = small_model()
    compare(model, images[:1], 0, ["deconvnet"], metrics=["deletion"], steps=2)
    assert capsys.readouterr().err == ""
    compare(model, images[:1], 0, ["deconvnet"], metrics=["deletion"], steps=2, show_progress=True)
    err = capsys.readouterr().err
    assert "compare" in err and "maps: deconvnet" in err and "scores: random" in err and "5/6" in err  # 3 columns


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_compare_runs_on_the_images_device() -> None:
    images, masks = torch.rand(2, 3, SIZE, SIZE), square_masks(2, 12, 12)
    cpu_model, gpu_model = small_model(), small_model().cuda()
    kwargs = {"masks": masks, "steps": 4, "metrics": ["pointing", "deletion", "insertion", "class_sensitivity"]}
    with quiet():
        cpu = compare(cpu_model, images, [0, 1], {"cam": LayerGradCam(cpu_model, cpu_model[3])}, **kwargs)
        kwargs["masks"] = masks.cuda()
        gpu = compare(gpu_model, images.cuda(), [0, 1], {"cam": LayerGradCam(gpu_model, gpu_model[3])}, **kwargs)
    assert gpu.images.device.type == "cpu" and next(gpu_model.parameters()).is_cuda
    for name in cpu.methods:
        torch.testing.assert_close(gpu.maps[name], cpu.maps[name], rtol=1e-4, atol=1e-5)
        for metric in ("deletion", "insertion"):
            torch.testing.assert_close(gpu.values[metric][name], cpu.values[metric][name], rtol=1e-3, atol=1e-4)
    assert torch.equal(gpu.maps["random"], cpu.maps["random"])  # the seeded baseline does not depend on the device


def test_class_sensitivity_of_baselines_and_of_a_class_dependent_map(images: torch.Tensor) -> None:
    def by_class(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        centre = 8.0 + 16.0 * (t % 2).reshape(-1, 1, 1)  # a bump at x = 8 for even classes, x = 24 for odd ones
        return torch.exp(-((torch.arange(SIZE).reshape(1, 1, -1) - centre) ** 2) / 20).expand(-1, SIZE, -1)

    model = small_model()
    result = compare(
        model, images, [0, 1, 2], {"planted": by_class}, metrics=["class_sensitivity"], other_targets=[1, 0, 1]
    )
    assert result.values["class_sensitivity"]["centre"].tolist() == [1.0, 1.0, 1.0]
    assert result.values["class_sensitivity"]["random"].tolist() == [1.0, 1.0, 1.0]
    assert (result.values["class_sensitivity"]["planted"] < 0).all()
    default = compare(model, images, [0, 1, 2], {"planted": by_class}, metrics=["class_sensitivity"], baselines=())
    assert torch.equal(default.other_targets, model(images).argmin(1))  # the least likely class


def test_model_unchanged_and_methods_rebound_for_the_randomisation_test(images: torch.Tensor) -> None:
    model = small_model()
    before = snapshot(model)
    flags = [p.requires_grad for p in model.parameters()]
    methods = {
        "deconvnet": zf_attr.Deconvnet(model),
        "cam": LayerGradCam(model, model[3]),
        "gradient": (Saliency(model), {"abs": False}),
        "edge": peak_at(1, 1),
    }
    result = compare(model, images[:2], [0, 1], methods, metrics=["randomization"])
    assert_bitwise_equal(model, before)
    assert_clean(model)
    assert not model.training and [p.requires_grad for p in model.parameters()] == flags
    assert result.randomization["deconvnet"].layers == ["7", "3", "0"]
    assert result.values["randomization"]["centre"].tolist() == [1.0, 1.0]  # a baseline ignores the weights
    assert (result.values["randomization"]["gradient"] < 0.9).all()  # the rebound copy's gradient follows its weights
    copy = small_model()
    spec = MethodSpec("cam", methods["cam"], kind="layer")
    rebound = spec.rebound(model, copy)
    assert rebound.method.layer is copy[3] and rebound.method.forward_func is copy and spec.method.layer is model[3]
    assert MethodSpec("closure", Saliency(lambda x: model(x))).rebound(model, copy) is None
    assert MethodSpec("bound", Saliency(model.forward)).rebound(model, copy).method.forward_func.__self__ is copy
    assert math.isnan(result.values["randomization"]["edge"][0]) and "edge" in result.notes
    assert result.randomization_summary().metrics == ("7", "3", "0")


def test_a_method_that_changes_the_model_is_reported(images: torch.Tensor) -> None:
    model = small_model()

    def vandal(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            model[0].bias.add_(1.0)
        return x

    with pytest.raises(RuntimeError, match="model changed"):
        compare(model, images, 0, {"vandal": vandal}, metrics=[])


def test_same_seed_same_numbers_other_seed_other_random_map(images: torch.Tensor) -> None:
    model = small_model()
    first, second, other = (
        compare(model, images, 1, ["deconvnet"], metrics=["deletion"], steps=4, seed=s) for s in (0, 0, 1)
    )
    assert all(torch.equal(first.values["deletion"][m], second.values["deletion"][m]) for m in first.methods)
    assert not torch.equal(first.maps["random"], other.maps["random"])


def test_bad_input_gives_clear_errors(images: torch.Tensor) -> None:
    model = small_model()
    with pytest.raises(ValueError, match=r"not known; choose one of .*'deconvnet'"):
        compare(model, images, 0, ["gradcamm"], metrics=[])
    with pytest.raises(ValueError, match=r"returned maps of shape \(3, 16, 16\).*upsample"):
        compare(model, images, 0, {"small": lambda x, t: torch.rand(3, 16, 16)}, metrics=[])
    with pytest.raises(ValueError, match="pointing game needs masks"):
        compare(model, images, 0, ["deconvnet"], metrics=["pointing"])
    with pytest.raises(ValueError, match="masks has shape"):
        compare(model, images, 0, [], masks=torch.ones(3, 16, 16, dtype=torch.bool), metrics=["pointing"])
    with pytest.raises(ValueError, match="unknown"):
        compare(model, images, 0, [], metrics=["pointingg"])
    with pytest.raises(ValueError, match="known baselines"):
        compare(model, images, 0, [], baselines=["center"])
    with pytest.raises(TypeError, match=r"\(method, \{attribute kwargs\}\)"):
        compare(model, images, 0, {"x": (Saliency(model), 3)}, metrics=[])
    with pytest.raises(TypeError, match="method name"):
        compare(model, images, 0, {"x": 3}, metrics=[])
    with pytest.raises(TypeError, match="floating-point"):
        compare(model, images.long(), 0, ["deconvnet"], metrics=[])
    with pytest.raises(ValueError, match="unique"):
        compare(model, images, 0, ["deconvnet", "deconvnet"], metrics=[])
    assert set(KNOWN_METHODS) >= {"deconvnet", "gradcam", "centre", "random"}


def test_every_known_method_runs(images: torch.Tensor) -> None:
    with quiet():
        result = compare(small_model(), images[:1], 2, list(KNOWN_METHODS), metrics=[], baselines=())
    for name in KNOWN_METHODS:
        assert result.maps[name].shape[0] == 1 and result.maps[name].shape[-2:] == (SIZE, SIZE), name


def test_tables_parse_back_to_the_same_numbers(images: torch.Tensor) -> None:
    masks = square_masks(3, 12, 12)
    result = compare(small_model(), images, [0, 1, 2], ["deconvnet"], masks=masks, steps=4, tolerance=0)
    table = result.summary()
    assert table.metrics == ("pointing", "deletion", "insertion", "class_sensitivity")
    back = read_csv(table.to_csv())
    for method in table.methods:
        for metric in table.metrics:
            assert back.mean[method][metric] == table.mean[method][metric]
            assert back.std[method][metric] == table.std[method][metric] or math.isnan(table.std[method][metric])
            assert back.count[method][metric] == table.count[method][metric] == 3
    assert_rounded(parse_markdown(table.to_markdown()), table, 3)
    assert_rounded(parse_latex(table.to_latex(decimals=2)), table, 2)
    assert table.mean["centre"]["pointing"] == 1.0 and "centre" in table.best("pointing")  # a centred object


def assert_rounded(parsed: SummaryTable, table: SummaryTable, decimals: int) -> None:
    assert parsed.methods == table.methods and parsed.metrics == table.metrics
    for method in table.methods:
        for metric in table.metrics:
            for kind in ("mean", "std"):
                got, want = getattr(parsed, kind)[method][metric], getattr(table, kind)[method][metric]
                assert (math.isnan(got) and math.isnan(want)) or got == round(want, decimals), (method, metric, kind)


values = st.lists(st.floats(-5, 5, allow_nan=False) | st.just(math.nan), min_size=0, max_size=5)


@settings(max_examples=40, deadline=None)
@given(st.dictionaries(st.sampled_from(["a_b", "c|d", "e&f", "centre"]), values, min_size=1, max_size=4))
def test_tables_round_trip_property(columns: dict[str, list[float]]) -> None:
    metrics = ("deletion", "insertion", "my_metric")
    table = SummaryTable.from_values({m: columns for m in metrics}, metrics)
    assert_rounded(parse_markdown(table.to_markdown()), table, 3)
    assert_rounded(parse_latex(table.to_latex()), table, 3)
    csv = read_csv(table.to_csv())
    assert csv.methods == table.methods and csv.count == table.count
    markdown = table.to_markdown()
    for metric in ("deletion", "insertion"):  # the best printed mean is bold, and only it
        for method in table.methods:
            cell = markdown.splitlines()[2 + table.methods.index(method)].split(" | ")[1 + metrics.index(metric)]
            assert cell.startswith("**") == (method in table.best(metric))


def test_latex_is_booktabs_with_escaped_names() -> None:
    table = SummaryTable.from_values({"pointing": {"guided_backprop": [1.0, 0.0], "centre": [1.0, 1.0]}}, ("pointing",))
    latex = table.to_latex()
    assert latex.splitlines()[:2] == [r"\begin{tabular}{lr}", r"\toprule"]
    assert r"guided\_backprop & $0.500 \pm 0.707$ \\" in latex
    assert r"centre & $\mathbf{1.000 \pm 0.000}$ \\" in latex and r"\bottomrule" in latex


def test_figure_is_written_and_checks_its_arguments(images: torch.Tensor, tmp_path) -> None:
    from PIL import Image

    masks = square_masks(3, 12, 12)
    result = compare(small_model(), images, [0, 1, 2], ["deconvnet", "gradcam"], masks=masks, metrics=[])
    path = result.save_figure(tmp_path / "grid.png", max_images=2, class_names=["a", "b", "c"], overlay=True)
    with Image.open(path) as picture:
        width, height = picture.size
    assert width > height > 0  # 2 rows, 5 columns
    small = save_comparison_figure(result, tmp_path / "small.png", methods=["centre"], palette=True, dpi=50)
    assert small.stat().st_size < path.stat().st_size
    with pytest.raises(ValueError, match="not in the comparison"):
        save_comparison_figure(result, tmp_path / "x.png", methods=["occlusion"])
    with pytest.raises(ValueError, match="max_images"):
        save_comparison_figure(result, tmp_path / "x.png", max_images=0)


def test_the_documented_run_writes_its_tables_and_figure(tmp_path) -> None:
    from zf_attr.analysis.comparison.shapes import main, shapes_comparison

    lines = []
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one 112-px image: one thread is faster, and far faster on a loaded machine
    try:
        with quiet():
            result = shapes_comparison(
                tmp_path, num_images=1, figure_images=1, steps=2, occlusion=False, randomization=False,
                report=lines.append,
            )  # fmt: skip
    finally:
        torch.set_num_threads(threads)
    written = sorted(path.name for path in tmp_path.iterdir())
    assert written == [f"comparison_zfnet.{suffix}" for suffix in ("csv", "md", "png", "tex")]
    assert lines[-1] == result.summary().to_markdown() == (tmp_path / "comparison_zfnet.md").read_text().strip()
    assert result.methods[:2] == ["deconvnet", "guided backprop"] and result.masks.shape == (1, 112, 112)
    with pytest.raises(SystemExit):
        main(["--images", "2"])  # --out is required


@settings(max_examples=8, deadline=None)
@given(st.integers(12, 40), st.integers(12, 40), st.integers(1, 3))
def test_layer_maps_reach_any_image_size(height: int, width: int, num: int) -> None:
    model = small_model()
    images = torch.rand(num, 3, height, width)
    result = compare(model, images, 0, {"cam": LayerGradCam(model, model[3])}, metrics=[], baselines=("centre",))
    assert result.maps["cam"].shape == result.maps["centre"].shape == (num, height, width)


def test_figure_markers_agree_with_the_pointing_values(images: torch.Tensor, monkeypatch, tmp_path) -> None:
    from zf_attr.analysis.comparison import figure as comparison_figure

    result = compare(small_model(), images, 0, {}, masks=square_masks(3, 0, 0), metrics=["pointing"], tolerance=0)
    assert result.tolerance == 0 and result.values["pointing"]["centre"].tolist() == [0.0, 0.0, 0.0]
    drawn = []
    original = comparison_figure._points
    monkeypatch.setattr(comparison_figure, "_points", lambda *args: drawn.append(original(*args)) or drawn[-1])
    result.save_figure(tmp_path / "grid.png", methods=["centre"])
    assert [hit for _, hit in drawn[0]] == [False, False, False]  # at 15 px (the function's default) they would hit
    assert all(hit for _, hit in original(result, result.maps["centre"], 15))
