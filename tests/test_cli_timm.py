"""``--model timm:NAME`` and the deconvnet on timm CNNs (skipped without the optional extra ``zf-attr[timm]``)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import quiet
from PIL import Image

import zf_attr
from zf_attr.cli import main

timm = pytest.importorskip("timm")


def test_deconvnet_on_a_timm_resnet_is_the_module_hooked_one() -> None:
    """timm's ResNets use ReLU and MaxPool2d modules: Captum's Deconvolution is right there, and zf_attr equals it."""
    from captum.attr import Deconvolution

    model = timm.create_model("test_resnet", num_classes=5).eval()
    images = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    ours = zf_attr.Deconvnet(model).attribute(images, target=[1, 3])
    with quiet():
        captum = Deconvolution(model).attribute(images, target=[1, 3])
    torch.testing.assert_close(ours, captum, rtol=1e-4, atol=1e-6)
    leaf = images.clone().requires_grad_(True)
    (gradient,) = torch.autograd.grad(model(leaf)[:, 1].sum(), leaf)
    assert not torch.allclose(ours[:1], gradient[:1])  # a real deconvnet, not the gradient


def test_explain_with_a_timm_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (80, 80, 3), dtype=np.uint8)).save(tmp_path / "a.png")
    out = tmp_path / "out"
    code = main(["explain", str(tmp_path / "a.png"), "--model", "timm:test_resnet", "--size", "64",
                 "--method", "deconvnet", "--no-figures", "--workers", "0", "--out", str(out), "--quiet"])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["model"].startswith("timm test_resnet, random-init weights")
    assert np.load(out / "a.npz")["deconvnet"].shape == (3, 64, 64)
    assert main(["explain", str(tmp_path / "a.png"), "--model", "timm:resnet_9000", "--out", str(out)]) == 1
    assert capsys.readouterr().err.startswith("zf-attr: error: --model 'timm:resnet_9000' is not a timm model")


def test_timm_missing_names_the_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    monkeypatch.setitem(sys.modules, "timm", None)
    assert main(["explain", str(tmp_path / "a.png"), "--model", "timm:test_resnet", "--out", str(tmp_path / "o")]) == 1
    assert capsys.readouterr().err == "zf-attr: error: --model timm:NAME needs timm: pip install 'zf-attr[timm]'\n"
