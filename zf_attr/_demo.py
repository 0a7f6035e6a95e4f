"""``zf-attr demo``: the bundled ZFNet on generated images, and zf_attr beside Captum on functional-ReLU models.

Writes (and prints the path of each file as soon as it exists):

* ``deconvnet_zfnet.png``: one generated image per class, with its object outline, and the target class's
  gradient, Deconvnet (gradient-style and strict) and guided-backprop maps of the shipped ZFNet;
* ``occlusion_study_zfnet.png``: the paper's Fig. 7 panels for one image: a 40×40 grey square slid over it;
* ``captum_vs_zf_attr_<model>.png``: on random-init GoogLeNet (functional ``F.relu``) and MobileNetV2
  (``ReLU6``), the plain gradient, Captum's ``Deconvolution`` (equal to the gradient there) and zf_attr's maps;
* ``summary.json``: the ZFNet's predictions, each method's share of attribution inside the object masks, and
  how far Captum's and zf_attr's deconvnets are from the gradient.
"""

from __future__ import annotations

import contextlib
import json
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

import zf_attr
from zf_attr.analysis import occlusion_study
from zf_attr.models import zfnet
from zf_attr.models.shapes import ShapesDataset

__all__ = ["DEMO_SEED_OFFSET", "mask_share", "run_demo"]

#: the demo's images come from ShapesDataset(seed=DEMO_SEED_OFFSET + seed): never seen in training (seeds 0–2)
DEMO_SEED_OFFSET = 100


def mask_share(attributions: Tensor, masks: Tensor) -> Tensor:
    """Share of each map's absolute attribution (summed over channels) that falls inside the object mask.

    Args:
        attributions: ``(N, C, H, W)``.
        masks: ``(N, H, W)`` booleans.

    Returns:
        ``(N,)`` values in [0, 1]; a uniform map scores the mask's area fraction.
    """
    energy = attributions.abs().sum(dim=1)
    total = energy.flatten(1).sum(dim=1).clamp_min(torch.finfo(energy.dtype).tiny)
    return (energy * masks).flatten(1).sum(dim=1) / total


def _one_per_class(dataset: ShapesDataset) -> list[int]:
    first: dict[int, int] = {}
    for index in range(len(dataset)):
        first.setdefault(dataset.sample(index).label, index)
        if len(first) == len(dataset.classes):
            break
    return [first[label] for label in sorted(first)]


def _relative_difference(attribution: Tensor, reference: Tensor) -> float:
    denominator = float(reference.norm())
    numerator = float((attribution - reference).norm())
    return (0.0 if numerator == 0.0 else float("inf")) if denominator == 0.0 else numerator / denominator


def _zfnet_methods(model: torch.nn.Module) -> dict[str, Callable[..., Tensor]]:
    from captum.attr import Saliency

    return {
        "gradient": lambda x, t: Saliency(model).attribute(x, target=t, abs=False),
        "Deconvnet": zf_attr.Deconvnet(model).attribute,
        "Deconvnet\n(strict)": zf_attr.Deconvnet(model, variant="strict").attribute,
        "GuidedBackprop": zf_attr.GuidedBackprop(model).attribute,
    }


def _captum_comparison(model: torch.nn.Module, images: Tensor, targets: list[int]) -> dict[str, Tensor]:
    from captum.attr import Deconvolution, Saliency

    return {
        "gradient": Saliency(model).attribute(images, target=targets, abs=False),
        "Captum\nDeconvolution": Deconvolution(model).attribute(images, target=targets),
        "zf_attr\nDeconvnet": zf_attr.Deconvnet(model).attribute(images, target=targets),
        "zf_attr\nGuidedBackprop": zf_attr.GuidedBackprop(model).attribute(images, target=targets),
    }


@contextlib.contextmanager
def _quiet_captum() -> Iterator[None]:
    """Silence Captum's per-call notices (hooks set, requires_grad set); zf_attr's own warnings still show."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", module=r"captum(\.|$)")
        yield


def _random_init_models(seed: int) -> Iterator[tuple[str, torch.nn.Module]]:
    import torchvision

    torch.manual_seed(seed)
    yield "googlenet", torchvision.models.googlenet(weights=None, aux_logits=False, init_weights=True).eval()
    torch.manual_seed(seed)
    yield "mobilenet_v2", torchvision.models.mobilenet_v2(weights=None).eval()


def run_demo(out: Path, seed: int = 0, report: Callable[[Path], None] = print) -> dict[str, Any]:
    """Write the demo's figures and summary into ``out`` and return the summary.

    Args:
        out: an existing folder.
        seed: picks the demo images (ShapesDataset seed ``DEMO_SEED_OFFSET + seed``) and the random-init weights.
        report: called with each file's path as soon as it is written.
    """
    from zf_attr.viz import save_attribution_grid

    dataset = ShapesDataset(60, seed=DEMO_SEED_OFFSET + seed, normalize=False)
    indices = _one_per_class(dataset)
    samples = [dataset.sample(index) for index in indices]
    pixels = torch.stack([sample.image for sample in samples])
    masks = torch.stack([sample.mask for sample in samples])
    labels = [sample.label for sample in samples]

    model = zfnet(weights="DEFAULT").eval()
    info = model.weights_info
    images = info.normalize(pixels)
    with torch.no_grad():
        probabilities = model(images).softmax(dim=1)
    with _quiet_captum():
        maps = {name: method(images, labels) for name, method in _zfnet_methods(model).items()}
    shares = {name.replace("\n", " "): mask_share(value, masks) for name, value in maps.items()}
    area = masks.flatten(1).float().mean(dim=1)
    predicted = probabilities.argmax(dim=1).tolist()
    rows = [
        f"{info.categories[label]}: p={float(probabilities[i, label]):.2f}"
        + ("" if predicted[i] == label else f"\n(predicted {info.categories[predicted[i]]})")
        for i, label in enumerate(labels)
    ]
    title = (
        "Bundled ZFNet (shapes, 112×112): maps of the true class, object outline in cyan\n"
        "share of |attribution| inside the object: "
        + ", ".join(f"{name} {float(share.mean()):.2f}" for name, share in shares.items())
        + f" (uniform map: {float(area.mean()):.2f})"
    )
    figure = save_attribution_grid(
        pixels, maps, out / "deconvnet_zfnet.png", title=title, row_labels=rows, masks=list(masks)
    )
    report(figure)
    study_index = 2  # the triangle: occluding its corners turns it into other shapes
    study = occlusion_study(
        model, images[study_index], labels[study_index], window=40, stride=6, class_names=info.categories
    )
    study_path = study.save_figure(out / "occlusion_study_zfnet.png", mean=info.mean, std=info.std)
    report(study_path)
    summary: dict[str, Any] = {
        "zf_attr_version": zf_attr.__version__,
        "seed": seed,
        "zfnet": {
            "figure": figure.name,
            "weights": "ZFNetWeights.DEFAULT",
            "test_accuracy_reported": info.metrics.get("test_accuracy"),
            "images": [f"ShapesDataset(60, seed={DEMO_SEED_OFFSET + seed}).sample({i})" for i in indices],
            "classes": [info.categories[label] for label in labels],
            "predicted": [info.categories[index] for index in predicted],
            "true_class_probability": [round(float(probabilities[i, label]), 4) for i, label in enumerate(labels)],
            "mask_share": {name: [round(float(v), 4) for v in share] for name, share in shares.items()},
            "mask_area": [round(float(v), 4) for v in area],
        },
        "occlusion_study": {
            "figure": study_path.name,
            "image": f"ShapesDataset(60, seed={DEMO_SEED_OFFSET + seed}).sample({indices[study_index]})",
            "window": study.window,
            "stride": study.stride,
            "layer": study.layer,
            "feature_map": study.feature_map,
            "unoccluded": study.unoccluded,
            "lowest_target_probability": round(float(study.target_probability.min()), 4),
            "classes_seen": sorted({info.categories[int(c)] for c in study.top_class.flatten()}),
        },
        "captum_comparison": {},
    }
    with _quiet_captum():
        for name, network in _random_init_models(seed):
            with zf_attr.record_switches(network) as trace, torch.no_grad():  # one pass: targets and the trace
                targets = network(images).argmax(dim=1).tolist()
            comparison = _captum_comparison(network, images, targets)
            gradient = comparison["gradient"]
            differences = {
                key.replace("\n", " "): _relative_difference(value, gradient)
                for key, value in comparison.items()
                if key != "gradient"
            }
            lines = [
                f"{name} (random-init weights): zf_attr saw {len(trace.rectifiers)} rectifier calls and "
                f"{len(trace.pools)} max-pool calls",
                "relative difference to the gradient: "
                + ", ".join(f"{key} {value:.2g}" for key, value in differences.items()),
            ]
            if not trace.pools:
                lines.append("no max-pool switches: the Deconvnet map depends on the target class, not on the image")
            path = save_attribution_grid(
                pixels,
                comparison,
                out / f"captum_vs_zf_attr_{name}.png",
                title="\n".join(lines),
                row_labels=[info.categories[label] for label in labels],
                masks=list(masks),
            )
            report(path)
            summary["captum_comparison"][name] = {
                "figure": path.name,
                "relative_difference_to_gradient": differences,
                "rectifier_calls": len(trace.rectifiers),
                "pool_calls": len(trace.pools),
            }
    summary_path = out / "summary.json"
    summary_path.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    report(summary_path)
    return summary
