"""``zf-attr explain`` as a subprocess on the bundled model and generated image files."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from conftest import zf_attr_cli, zf_attr_main

from zf_attr.cli.explain import METHODS
from zf_attr.models.shapes import ShapesDataset


@pytest.fixture(scope="module")
def image_folder(shape_image_files: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The three shape images alone (the shared folder also holds their masks, which a recursive walk finds)."""
    folder = tmp_path_factory.mktemp("shapes-only")
    for index in range(3):
        shutil.copy(shape_image_files / f"shape{index}.png", folder / f"shape{index}.png")
    return folder


def test_explain_folder_with_every_method(image_folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = zf_attr_cli("explain", str(image_folder), "--method", *METHODS, "--out", str(out), "--workers", "0")
    assert result.returncode == 0, result.stderr
    stems = ["shape0", "shape1", "shape2"]
    expected = [str(out / f"{s}.{suffix}") for s in stems for suffix in ("png", "npz")]
    assert result.stdout.splitlines()[:8] == [*expected, str(out / "summary.json"), str(out / "report.html")]
    # the default model is the bundled demo one: said once, on stderr
    assert result.stderr.splitlines()[0].startswith("zf-attr: note: using the bundled ZFNet trained on 6 generated")
    arrays = np.load(out / "shape0.npz")
    assert sorted(arrays.files) == sorted(METHODS)
    assert arrays["deconvnet"].shape == (3, 112, 112)
    gradcam = arrays["gradcam"]  # Captum's LayerGradCam at pool5, upsampled to the image, rectified
    assert gradcam.shape == (1, 112, 112) and gradcam.min() >= 0 and gradcam.max() > 0
    assert not np.array_equal(arrays["strict"], arrays["deconvnet"])
    summary = json.loads((out / "summary.json").read_text())
    names = [ShapesDataset(3, seed=9).sample(i).class_name for i in range(3)]
    assert [entry["predicted"] for entry in summary["images"]] == names
    assert [entry["predicted_index"] for entry in summary["images"]] == [ShapesDataset.classes.index(n) for n in names]
    assert summary["model"] == "bundled ZFNet (shapes)" and summary["complete"] is True
    assert summary["failures"] == [] and (summary["total"], summary["done"]) == (3, 3)


def test_explain_torchvision_model_with_local_weights_and_glob(image_folder: Path, tmp_path: Path) -> None:
    torch.manual_seed(0)
    weights = tmp_path / "resnet18.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), weights)
    out = tmp_path / "out"
    pattern = str(image_folder / "shape[01].png")
    result = zf_attr_cli("explain", pattern, "--model", "resnet18", "--weights", str(weights), "--size", "64",
                         "--target", "7", "--out", str(out), "--quiet")  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.split()) == 6  # two figures, two arrays, the summary, the HTML report
    summary = json.loads((out / "summary.json").read_text())
    assert {entry["target"] for entry in summary["images"]} == {"7"}  # no class names: the index
    assert {entry["target_index"] for entry in summary["images"]} == {7}
    assert "weights" in summary["model"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["explain", "/nonexistent/x.png"],
            "zf-attr: error: no such file, folder or matching images: '/nonexistent/x.png'",
        ),
        (["explain", "IMAGES", "--model", "resnet9000"], "zf-attr: error: --model 'resnet9000' is not a torchvision"),
        (["explain", "IMAGES", "--target", "6"], "zf-attr: error: --target 6 is out of range for 6 classes"),
        (["explain", "IMAGES", "--target", "dog"], "zf-attr: error: --target 'dog' is neither a class index nor"),
        (["explain", "IMAGES", "--batch-size", "0"], "zf-attr: error: --batch-size must be at least 1"),
        (["explain", "IMAGES", "--model", "timm:no_such_net"], "zf-attr: error: --model 'timm:no_such_net'"),
        (["explain", "IMAGES", "--mean", "0.1", "0.2"], "zf-attr: error: --mean takes 1 or 3 numbers"),
        (["explain", "IMAGES", "--size", "112", "--resize", "100"], "zf-attr: error: --resize 100 is smaller than"),
        (["explain", "IMAGES", "--device", "tpu:9"], "zf-attr: error: --device 'tpu:9' is not a torch device"),
        (
            ["explain", "IMAGES", "--method", "gradcam", "--layer", "conv9"],
            "zf-attr: error: --layer: layer='conv9' is not a layer of the model; did you mean",
        ),
        (
            ["explain", "IMAGES", "--method", "occlusion", "--drill-down", "1", "0.1"],
            "zf-attr: error: --drill-down: DrillDown step must be an int >= 2",
        ),
        (  # checked even when no chosen method uses the layer
            ["explain", "IMAGES", "--method", "deconvnet", "--layer", "conv9"],
            "zf-attr: error: --layer: layer='conv9' is not a layer of the model; did you mean",
        ),
    ],
)
def test_explain_errors_are_one_line(image_folder: Path, tmp_path: Path, args: list[str], message: str) -> None:
    args = [str(image_folder / "shape0.png") if arg == "IMAGES" else arg for arg in args]
    result = zf_attr_main(*args, "--out", str(tmp_path / "out"))
    assert result.returncode == 1
    assert result.stderr.strip().startswith(message)
    assert len(result.stderr.strip().splitlines()) == 1


def test_explain_occlusion_drill_down_reports_its_error(image_folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = zf_attr_cli("explain", str(image_folder / "shape1.png"), "--method", "occlusion", "--window", "16",
                         "--stride", "4", "--drill-down", "3", "0.2", "--out", str(out), "--quiet")  # fmt: skip
    assert result.returncode == 0, result.stderr
    (entry,) = json.loads((out / "summary.json").read_text())["images"]
    assert 0 < entry["occlusion_windows_evaluated"] < 625  # 25 x 25 windows on the 112-pixel image
    assert 0 <= entry["occlusion_reported_error"] < 1
    assert np.load(out / "shape1.npz")["occlusion"].shape == (3, 112, 112)


def test_unreadable_image_stops_with_finished_work_on_disk(image_folder: Path, tmp_path: Path) -> None:
    broken = tmp_path / "zz_broken.png"
    broken.write_text("not a png")
    out = tmp_path / "out"
    result = zf_attr_cli(
        "explain", str(image_folder / "shape0.png"), str(broken), "--model", "zfnet", "--out", str(out)
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith(f"zf-attr: error: cannot read image '{broken}'")
    assert (out / "shape0.png").is_file()  # the image finished before the failure stays
    assert list(np.load(out / "shape0.npz").files)[:1] == ["deconvnet"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["complete"] is False and [entry["figure"] for entry in summary["images"]] == ["shape0.png"]
    assert summary["not_done"] == [str(broken)] and "cannot read image" in summary["error"]
    page = (out / "report.html").read_text()
    assert "The run stopped early" in page and "cannot read image" in page and "report/thumbs/shape0.jpg" in page


def test_occlusion_study_command(image_folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "study"
    result = zf_attr_cli("occlusion-study", str(image_folder / "shape2.png"), "--window", "40", "--stride", "12",
                         "--out", str(out))  # fmt: skip
    assert result.returncode == 0, result.stderr
    written = [out / "shape2_occlusion.png", out / "shape2_occlusion.json", out / "report.html"]
    assert result.stdout.split() == [str(path) for path in written]
    summary = json.loads((out / "shape2_occlusion.json").read_text())
    assert summary["layer"] == "pool5" and summary["window"] == 40
    rows, cols = len(summary["row_starts"]), len(summary["col_starts"])
    assert np.array(summary["target_probability"]).shape == (rows, cols) == (7, 7)
    assert summary["target"] == summary["predicted"] == ShapesDataset(3, seed=9).sample(2).class_name
    assert summary["target_given"] is False and summary["target_index"] == summary["predicted_index"]
    wrong = zf_attr_cli("occlusion-study", str(image_folder / "shape2.png"), "--layer", "conv9", "--out", str(out))
    assert wrong.returncode == 1
    assert wrong.stderr.strip() == (
        "zf-attr: error: --layer: layer='conv9' is not a layer of the model; did you mean "
        "['conv5', 'conv4', 'conv3', 'conv2', 'conv1']?"
    )


def test_explain_warns_that_an_unused_layer_is_ignored(image_folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = zf_attr_cli("explain", str(image_folder / "shape0.png"), "--method", "deconvnet", "--layer", "conv5",
                         "--out", str(out), "--quiet")  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "zf-attr: warning: --layer conv5 is ignored: only --method gradcam uses it"


def test_model_from_a_package_module_factory(image_folder: Path, tmp_path: Path) -> None:
    (tmp_path / "my_models.py").write_text(
        "import torch\n"
        "def tiny():\n"
        "    torch.manual_seed(0)\n"
        "    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.MaxPool2d(2),\n"
        "                               torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(4, 5))\n"
    )
    out = tmp_path / "out"
    args = ["explain", str(image_folder / "shape1.png"), "--model", "my_models:tiny", "--size", "32"]
    result = zf_attr_cli(*args, "--method", "deconvnet", "gradcam", "--out", str(out), "--quiet", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["model"].startswith("my_models:tiny") and summary["images"][0]["target"] in "01234"
    arrays = np.load(out / "shape1.npz")
    assert arrays["deconvnet"].shape == (3, 32, 32) and arrays["gradcam"].shape == (1, 32, 32)
    missing = zf_attr_cli(*args[:2], "--model", "my_models:huge", "--out", str(out), cwd=tmp_path)
    assert missing.returncode == 1
    assert missing.stderr.startswith("zf-attr: error: --model 'my_models:huge': cannot load 'huge' from 'my_models'")


def test_default_preprocessing_is_torchvisions_classification_preset(image_folder: Path, tmp_path: Path) -> None:
    from PIL import Image
    from torchvision.transforms._presets import ImageClassification

    from zf_attr.cli._inputs import load_model, read_image

    loaded = load_model("resnet18", None, device="cpu")
    preset = torchvision.models.ResNet18_Weights.IMAGENET1K_V1.transforms()  # builds the preset, no download
    assert (loaded.size, loaded.preprocessing.resize) == (preset.crop_size[0], preset.resize_size[0]) == (224, 256)
    assert loaded.mean == tuple(preset.mean) and loaded.std == tuple(preset.std)
    big = tmp_path / "wide.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (300, 400, 3), dtype=np.uint8)).save(big)
    pixels, batch = read_image(big, loaded)
    with Image.open(big) as picture:
        expected = preset(picture.convert("RGB"))
    assert pixels.shape == batch.shape == (3, 224, 224)
    torch.testing.assert_close(batch, expected, rtol=1e-5, atol=1e-5)
    custom = load_model("resnet18", None, 64, resize=80, mean=[0.5], std=[0.25], device="cpu")
    expected = ImageClassification(crop_size=64, resize_size=80, mean=[0.5] * 3, std=[0.25] * 3)
    with Image.open(big) as picture:
        torch.testing.assert_close(read_image(big, custom)[1], expected(picture.convert("RGB")), rtol=1e-5, atol=1e-5)
