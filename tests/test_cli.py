"""The ``zf-attr`` command line, run as a subprocess, and the figure helpers it uses."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

import zf_attr
import zf_attr.cli
from zf_attr.cli import main
from zf_attr.viz import attribution_to_image, image_to_display, save_attribution_grid

MODELS = ("googlenet", "mobilenet_v2")


class Run:
    """``python -m zf_attr.cli ARGS`` started at once in the background; ``result`` waits for it."""

    def __init__(self, *args: str, out: Path | None = None) -> None:
        self.out = out  # the demo's --out folder
        self.args = [sys.executable, "-m", "zf_attr.cli", *args]
        self.process = subprocess.Popen(self.args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self._result: subprocess.CompletedProcess[str] | None = None

    @property
    def result(self) -> subprocess.CompletedProcess[str]:
        if self._result is None:
            stdout, stderr = self.process.communicate(timeout=180)
            self._result = subprocess.CompletedProcess(self.args, self.process.returncode, stdout, stderr)
        return self._result


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Run]]:
    """Start every command of this module together, so the short ones overlap the demo (the slow one)."""
    root = tmp_path_factory.mktemp("cli")
    blocker = root / "a-file"
    blocker.write_text("not a folder")
    started = {
        "help": Run("--help"),
        "demo-help": Run("demo", "--help"),
        "demo": Run("demo", "--out", str(root / "nested" / "out"), "--quiet", out=root / "nested" / "out"),
        "unwritable": Run("demo", "--out", str(blocker / "out"), "--quiet"),
        "train": Run(
            "train",
            "--shapes",
            "48",
            "--epochs",
            "1",
            "--batch-size",
            "16",
            "--out",
            str(root / "train"),
            "--quiet",
            out=root / "train",
        ),
        "train-missing-data": Run("train", "--data", str(root / "missing"), "--quiet"),
    }
    yield started
    for run in started.values():
        if run.process.poll() is None:
            run.process.kill()
            run.process.communicate()


@pytest.mark.parametrize("name", ["help", "demo-help"])
def test_help_exits_zero(runs: dict[str, Run], name: str) -> None:
    result = runs[name].result
    assert result.returncode == 0, result.stderr
    assert "usage: zf-attr" in result.stdout


def test_version_and_bad_arguments_in_process(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as version:
        main(["--version"])
    assert version.value.code == 0
    assert capsys.readouterr().out.strip() == f"zf-attr {zf_attr.__version__}"
    for argv in (["demo", "--seed", "not-a-number"], [], ["no-such-command"]):
        with pytest.raises(SystemExit) as bad:
            main(argv)
        assert bad.value.code == 2, argv
    assert "invalid int value" in capsys.readouterr().err


def test_demo_writes_figures_and_summary(runs: dict[str, Run]) -> None:
    result, out = runs["demo"].result, runs["demo"].out
    assert out is not None
    assert result.returncode == 0, result.stderr
    figures = [out / "deconvnet_zfnet.png", out / "occlusion_study_zfnet.png"]
    figures += [out / f"captum_vs_zf_attr_{name}.png" for name in MODELS]
    written = [*figures, out / "summary.json", out / "report.html"]
    assert result.stdout.split() == [str(path) for path in written]  # --quiet: paths only
    page = (out / "report.html").read_text()
    assert page.count('<img src="data:image/png;base64,') == len(figures)  # self-contained: figures embedded
    assert "captum_vs_zf_attr_googlenet.png" in page and "summary.json" in page
    matplotlib_image = pytest.importorskip("matplotlib.image")
    for figure in figures:
        pixels = matplotlib_image.imread(figure)
        assert pixels.ndim == 3 and pixels.shape[0] > 300 and pixels.shape[1] > 500
        assert float(pixels[..., :3].std()) > 0.05  # not a blank canvas
    # MobileNetV2 has no max-pool: the one zf_attr warning says what that means, on one line
    assert result.stderr.strip().splitlines() == [
        "zf-attr: warning: Deconvnet: the model has no max-pool calls, so no switches carry the image into the "
        "projection: on a conv/ReLU/BatchNorm network every image gets the same map for a given target."
    ]


def test_demo_summary(runs: dict[str, Run]) -> None:
    result, out = runs["demo"].result, runs["demo"].out
    assert out is not None
    assert result.returncode == 0, result.stderr
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    zfnet = summary["zfnet"]
    assert zfnet["classes"] == ["disc", "square", "triangle", "cross", "ring", "star"]
    assert zfnet["test_accuracy_reported"] >= 0.95
    assert sum(p == c for p, c in zip(zfnet["predicted"], zfnet["classes"], strict=True)) >= 5
    study = summary["occlusion_study"]
    assert study["layer"] == "pool5" and study["unoccluded"]["target_probability"] > 0.9
    assert study["lowest_target_probability"] < study["unoccluded"]["target_probability"]
    for method, shares in zfnet["mask_share"].items():
        assert all(0.0 <= share <= 1.0 for share in shares), method
    comparison = summary["captum_comparison"]
    assert set(comparison) == set(MODELS)
    for name, stats in comparison.items():
        differences = stats["relative_difference_to_gradient"]
        assert differences["Captum Deconvolution"] < 1e-6, name  # Captum misses F.relu / ReLU6
        assert differences["zf_attr Deconvnet"] > 1e-3, name
        assert stats["rectifier_calls"] > 0, name
    assert comparison["googlenet"]["pool_calls"] > 0
    assert comparison["mobilenet_v2"]["pool_calls"] == 0


def test_mask_share_known_answer() -> None:
    from zf_attr._demo import mask_share

    maps = torch.zeros(2, 3, 4, 4)
    maps[0, :, :2, :2] = 1.0  # all inside the mask
    maps[1, 0] = -1.0  # uniform: the mask's area share
    masks = torch.zeros(2, 4, 4, dtype=torch.bool)
    masks[:, :2, :2] = True
    torch.testing.assert_close(mask_share(maps, masks), torch.tensor([1.0, 0.25]))


def test_train_on_generated_shapes_writes_checkpoints(runs: dict[str, Run]) -> None:
    result, out = runs["train"].result, runs["train"].out
    assert out is not None
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [str(out / "best.pt"), str(out / "history.json")]
    history = json.loads((out / "history.json").read_text())
    assert [record["epoch"] for record in history] == [1] and 0.0 <= history[0]["val_error"] <= 1.0
    assert (out / "last.pt").is_file()


def test_train_missing_data_is_one_line_error(runs: dict[str, Run]) -> None:
    result = runs["train-missing-data"].result
    assert result.returncode == 1
    assert (
        result.stderr.strip()
        == f"zf-attr: error: --data {str(Path(runs['train-missing-data'].args[-2]))!r} is not a folder"
    )


def test_unwritable_out_exits_one(runs: dict[str, Run]) -> None:
    result = runs["unwritable"].result
    assert result.returncode == 1
    assert result.stderr.startswith("zf-attr: error:")
    assert len(result.stderr.strip().splitlines()) == 1
    assert result.stdout == ""


def test_attribution_to_image_zero_map_has_no_nan() -> None:
    heat = attribution_to_image(torch.zeros(3, 8, 8))
    assert heat.shape == (8, 8)
    assert not np.isnan(heat).any()
    assert np.all(heat == 0.0)
    assert np.all(attribution_to_image(torch.zeros(8, 8), sign="all") == 0.0)


def test_attribution_to_image_ranges() -> None:
    attribution = torch.randn(3, 16, 16, generator=torch.Generator().manual_seed(0))
    heat = attribution_to_image(attribution)
    assert heat.shape == (16, 16)
    assert heat.min() >= 0.0 and heat.max() == pytest.approx(1.0)
    signed = attribution_to_image(attribution, sign="all")
    assert signed.min() >= -1.0 and signed.max() <= 1.0 and signed.min() < 0.0
    with pytest.raises(ValueError, match="sign"):
        attribution_to_image(attribution, sign="positive")


def test_image_to_display_undoes_normalisation() -> None:
    image = torch.rand(3, 5, 7)
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
    normalised = (image - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None]
    shown = image_to_display(normalised, mean, std)
    assert shown.shape == (5, 7, 3)
    np.testing.assert_allclose(shown, image.permute(1, 2, 0).double().numpy(), atol=1e-6)


def test_grid_without_matplotlib_names_the_extra(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)  # makes the import fail
    with pytest.raises(ImportError, match=r"zf-attr\[viz\]"):
        save_attribution_grid(torch.rand(1, 3, 8, 8), {"gradient": torch.rand(1, 3, 8, 8)}, tmp_path / "grid.png")


def test_grid_small_figure(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    images = torch.rand(2, 3, 16, 16)
    maps = {"gradient": torch.randn(2, 3, 16, 16), "zeros": torch.zeros(2, 3, 16, 16)}
    path = save_attribution_grid(images, maps, tmp_path / "grid.png", title="two\nlines", row_labels=["a", "b"])
    assert path == tmp_path / "grid.png" and path.stat().st_size > 1000
    with pytest.raises(ValueError, match="attributions"):
        save_attribution_grid(images, {"gradient": maps["gradient"][:1]}, tmp_path / "bad.png")


@pytest.mark.parametrize("name", sorted(zf_attr.cli.COMMANDS))
def test_every_subcommand_has_help(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([name, "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert text.startswith(f"usage: zf-attr {name}") and zf_attr.cli.COMMANDS[name].help.split()[0] in text


def test_interrupt_exits_130_and_runtime_errors_exit_1(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def interrupted(args: object) -> int:
        raise KeyboardInterrupt

    def broken(args: object) -> int:
        raise ValueError("something\nspread over lines")

    demo = zf_attr.cli.COMMANDS["demo"]
    monkeypatch.setitem(zf_attr.cli.COMMANDS, "demo", zf_attr.cli.Command(demo.help, demo.configure, interrupted))
    assert main(["demo"]) == 130
    assert capsys.readouterr().err == "zf-attr: interrupted\n"
    monkeypatch.setitem(zf_attr.cli.COMMANDS, "demo", zf_attr.cli.Command(demo.help, demo.configure, broken))
    assert main(["demo"]) == 1
    assert capsys.readouterr().err == "zf-attr: error: ValueError: something spread over lines\n"
