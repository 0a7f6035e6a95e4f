"""ZFNet: paper-exact sizes and parameter count, named layers, weight loading, and the training recipe."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from zf_attr.models import ZFNet, feature_sizes, zfnet
from zf_attr.models.training import TrainConfig, renormalize_filters, train


def output_sizes(model: ZFNet, size: int) -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {}
    handles = [
        getattr(model, name).register_forward_hook(lambda m, a, out, name=name: shapes.__setitem__(name, out.shape[1:]))
        for name in ("conv1", "pool1", "conv2", "pool2", "conv3", "conv4", "conv5", "pool5")
    ]
    try:
        with torch.no_grad():
            model(torch.zeros(1, 3, size, size))
    finally:
        for handle in handles:
            handle.remove()
    return shapes


def test_paper_sizes_and_parameter_count() -> None:
    model = zfnet().eval()
    assert sum(p.numel() for p in model.parameters()) == 62_357_608
    assert output_sizes(model, 224) == {
        "conv1": (96, 110, 110),
        "pool1": (96, 55, 55),
        "conv2": (256, 26, 26),
        "pool2": (256, 13, 13),
        "conv3": (384, 13, 13),
        "conv4": (384, 13, 13),
        "conv5": (256, 13, 13),
        "pool5": (256, 6, 6),
    }
    assert model.fc6.in_features == 256 * 6 * 6 and model.fc8.out_features == 1000


def test_variants_and_named_layers() -> None:
    wide = zfnet(variant="b", num_classes=10)
    assert (wide.conv3.out_channels, wide.conv4.out_channels, wide.conv5.out_channels) == (512, 1024, 512)
    names = [name for name, _ in wide.named_children()]
    for layer in ("conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8", "norm1", "norm2"):
        assert layer in names
    assert names.index("norm1") == names.index("pool1") + 1  # contrast normalisation after pooling
    assert isinstance(wide.norm1, nn.LocalResponseNorm)
    small = zfnet(variant="shapes", num_classes=6).eval()
    assert small(torch.randn(2, 3, 112, 112)).shape == (2, 6)
    assert feature_sizes(112)["pool5"] == 3


def test_paper_initialisation() -> None:
    model = zfnet(variant="shapes", num_classes=6)
    for layer in (model.conv1, model.conv3, model.fc7):
        assert layer.bias.abs().max() == 0
        assert abs(float(layer.weight.detach().std()) - 1e-2) < 2e-3


def test_wrong_input_size_is_explained() -> None:
    with pytest.raises(ValueError, match=r"expects images shaped \(N, 3, 224, 224\)"):
        zfnet()(torch.randn(1, 3, 112, 112))
    with pytest.raises(ValueError, match="variant='c'"):
        zfnet(variant="c")


def test_weights_round_trip_and_mismatch(tmp_path: Path) -> None:
    model = zfnet(variant="shapes", num_classes=6)
    path = tmp_path / "weights.pt"
    torch.save(model.state_dict(), path)
    loaded = zfnet(variant="shapes", num_classes=6, weights=path)
    for name, tensor in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor)
    checkpoint = tmp_path / "checkpoint.pt"
    torch.save({"model": model.state_dict(), "epoch": 3}, checkpoint)
    assert torch.equal(zfnet(variant="shapes", num_classes=6, weights=checkpoint).fc8.weight, model.fc8.weight)
    with pytest.raises(ValueError, match=r"fc8.weight \(6, 256\) in file vs \(10, 256\) in model"):
        zfnet(variant="shapes", num_classes=10, weights=path)
    with pytest.raises(
        ValueError,
        match=r"shape mismatch: conv1.weight \(32, 3, 7, 7\) in file vs \(96, 3, 7, 7\) in model.*and 11 more",
    ):
        zfnet(variant="b", num_classes=6, weights=path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        zfnet(weights=tmp_path / "missing.pt")


def test_renormalisation_keeps_every_filter_within_radius() -> None:
    model = zfnet(variant="shapes", num_classes=6)
    with torch.no_grad():
        model.conv1.weight[:5].mul_(50)
    small_before = model.conv2.weight.clone()
    assert renormalize_filters(model, 0.1) == 5
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            rms = module.weight.detach().pow(2).mean(dim=(1, 2, 3)).sqrt()
            assert float(rms.max()) <= 0.1 + 1e-6
    torch.testing.assert_close(model.conv1.weight[:5].pow(2).mean(dim=(1, 2, 3)).sqrt(), torch.full((5,), 0.1))
    assert torch.equal(model.conv2.weight, small_before)  # filters within the radius are untouched


class TinyData(torch.utils.data.Dataset):
    """Two linearly separable classes of 112×112 images: a bright left or right half."""

    def __len__(self) -> int:
        return 32

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = torch.zeros(3, 112, 112)
        label = index % 2
        image[:, :, label * 56 : (label + 1) * 56] = 2.0
        return image, label


def test_training_step_lowers_loss_renormalises_checkpoints_and_resumes(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = zfnet(variant="shapes", num_classes=2, dropout=0.0)
    data = TinyData()
    images, labels = next(iter(torch.utils.data.DataLoader(data, batch_size=32)))
    with torch.no_grad():
        loss_before = float(nn.functional.cross_entropy(model.eval()(images), labels))
    config = TrainConfig(epochs=2, batch_size=32, lr=5e-2)
    seen: list[int] = []
    result = train(
        model, data, data, config, checkpoint_dir=tmp_path, progress=False, callbacks=[lambda e, m: seen.append(e)]
    )
    with torch.no_grad():
        loss_after = float(nn.functional.cross_entropy(model.eval()(images), labels))
    assert loss_after < loss_before
    assert seen == [1, 2] and len(result.history) == 2
    assert (
        (tmp_path / "last.pt").is_file() and (tmp_path / "best.pt").is_file() and (tmp_path / "history.json").is_file()
    )
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            assert float(module.weight.detach().pow(2).mean(dim=(1, 2, 3)).sqrt().max()) <= 0.1 + 1e-6
    # resume: a third epoch continues from the checkpoint's history
    resumed = train(
        zfnet(variant="shapes", num_classes=2, dropout=0.0),
        data,
        data,
        TrainConfig(epochs=3, batch_size=32, lr=5e-2),
        checkpoint_dir=tmp_path,
        resume=True,
        progress=False,
    )
    assert [record["epoch"] for record in resumed.history] == [1, 2, 3]


def paper_deconvnet(model: ZFNet, image: torch.Tensor, target: int) -> torch.Tensor:
    """The paper's down-pass written out layer by layer: unpool (adding), rectify, transposed filters.

    Contrast normalisation is skipped on the way down, as in the paper (zf_attr's ``variant="strict"``).
    """
    import torch.nn.functional as F

    layers = list(model.children())
    inputs, switches = [], {}
    x = image
    with torch.no_grad():
        for index, layer in enumerate(layers):
            inputs.append(x)
            if isinstance(layer, nn.MaxPool2d):
                x, switches[index] = F.max_pool2d(
                    x, layer.kernel_size, layer.stride, ceil_mode=layer.ceil_mode, return_indices=True
                )
            else:
                x = layer(x)
        signal = torch.zeros_like(x)
        signal[:, target] = 1.0
        for index in reversed(range(len(layers))):
            layer, below = layers[index], inputs[index]
            if isinstance(layer, nn.Linear):
                signal = signal @ layer.weight
            elif isinstance(layer, nn.ReLU):
                signal = signal.clamp(min=0)
            elif isinstance(layer, nn.Flatten):
                signal = signal.reshape(below.shape)
            elif isinstance(layer, nn.MaxPool2d):
                flat = torch.zeros(below.shape[0], below.shape[1], below.shape[2] * below.shape[3], dtype=signal.dtype)
                flat.scatter_add_(2, switches[index].flatten(2), signal.flatten(2))
                signal = flat.reshape(below.shape)
            elif isinstance(layer, nn.Conv2d):
                stride, padding, kernel = layer.stride[0], layer.padding[0], layer.kernel_size[0]
                extra = below.shape[-1] - ((signal.shape[-1] - 1) * stride - 2 * padding + kernel)
                signal = F.conv_transpose2d(signal, layer.weight, stride=stride, padding=padding, output_padding=extra)
            # LocalResponseNorm and Dropout (eval): the signal passes unchanged
    return signal


def test_strict_deconvnet_on_zfnet_equals_the_papers_down_pass() -> None:
    from zf_attr import Deconvnet

    torch.manual_seed(3)
    model = zfnet(variant="shapes", num_classes=6).double().eval()
    model.reset_parameters("kaiming")
    model.double()
    image = torch.randn(1, 3, 112, 112, dtype=torch.float64)
    expected = paper_deconvnet(model, image, target=4)
    strict = Deconvnet(model, variant="strict").attribute(image, target=4)
    torch.testing.assert_close(strict, expected, rtol=1e-9, atol=1e-12)
    gradient_style = Deconvnet(model).attribute(image, target=4)
    assert (gradient_style - strict).abs().max() > 1e-6 * strict.abs().max()  # LRN's Jacobian differs
