"""``zf-attr explain``: attribution figures and arrays for image files, from the command line.

Models: ``zfnet`` (the bundled, trained ZFNet), any torchvision classifier name with a local weights file
(``--model resnet50 --weights resnet50.pth``), or ``package.module:factory`` (a function returning the model).
Images: files, folders (their image files) and glob patterns. Writes, per image, ``<stem>.png`` (the image and
one map per method), then ``attributions.npz`` (one array per image and method) and ``summary.json``.
"""

from __future__ import annotations

import glob
import importlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

__all__ = [
    "IMAGE_SUFFIXES",
    "METHODS",
    "ExplainError",
    "LoadedModel",
    "find_images",
    "load_model",
    "read_image",
    "run_explain",
    "run_occlusion_study",
]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
METHODS = ("deconvnet", "guided", "gradient", "occlusion")
_IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


class ExplainError(RuntimeError):
    """A problem with the user's arguments or files, reported on one line."""


@dataclass
class LoadedModel:
    """A model ready to explain, with the preprocessing it expects."""

    model: nn.Module
    size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    categories: tuple[str, ...] | None
    note: str


def load_model(name: str, weights: Path | None, size: int | None) -> LoadedModel:
    """Build the model named on the command line (see the module docstring); always in eval mode."""
    if name == "zfnet":
        from zf_attr.models import zfnet

        if weights is not None:
            model = zfnet(weights=weights)
            return LoadedModel(model.eval(), size or model.config.input_size, *_IMAGENET, None, f"ZFNet, {weights}")
        model = zfnet(weights="DEFAULT").eval()
        info = model.weights_info
        return LoadedModel(model, size or 112, info.mean, info.std, info.categories, "bundled ZFNet (shapes)")
    if ":" in name:
        module_name, _, factory = name.partition(":")
        try:
            model = getattr(importlib.import_module(module_name), factory)()
        except (ImportError, AttributeError) as error:
            raise ExplainError(f"--model {name!r}: cannot load {factory!r} from {module_name!r} ({error})") from error
        note = name
    else:
        import torchvision

        available = torchvision.models.list_models(module=torchvision.models)
        if name not in available:
            raise ExplainError(f"--model {name!r} is not a torchvision classifier, 'zfnet' or package.module:factory")
        kwargs: dict[str, Any] = {"weights": None}
        if name in ("googlenet", "inception_v3"):
            kwargs.update(aux_logits=False, init_weights=False)
        model = torchvision.models.get_model(name, **kwargs)
        note = f"torchvision {name}"
    if not isinstance(model, nn.Module):
        raise ExplainError(f"--model {name!r} did not give a torch.nn.Module")
    if weights is not None:
        from zf_attr.models.weights import load_state_dict_file

        try:
            model.load_state_dict(load_state_dict_file(weights))
        except (FileNotFoundError, ValueError, RuntimeError) as error:
            raise ExplainError(f"--weights {str(weights)!r}: {error}") from error
        note += f", weights {weights}"
    else:
        note += ", random-init weights (pass --weights for trained ones)"
    default_size = 299 if name == "inception_v3" else 224
    return LoadedModel(model.eval(), size or default_size, *_IMAGENET, None, note)


def find_images(patterns: Sequence[str]) -> list[Path]:
    """Expand files, folders and glob patterns into image files, in a stable order."""
    found: list[Path] = []
    for pattern in patterns:
        path = Path(pattern)
        if path.is_dir():
            found += sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        elif path.is_file():
            found.append(path)
        else:
            matches = sorted(Path(p) for p in glob.glob(pattern) if Path(p).is_file())
            if not matches:
                raise ExplainError(f"no such file, folder or matching images: {pattern!r}")
            found += matches
    if not found:
        raise ExplainError("no images found in the given folders")
    return list(dict.fromkeys(found))


def read_image(path: Path, loaded: LoadedModel) -> tuple[Tensor, Tensor]:
    """(image in [0, 1] for display, normalised model input), both (3, size, size)."""
    from PIL import Image, UnidentifiedImageError
    from torchvision.transforms import functional as TF

    try:
        with Image.open(path) as file:
            picture = file.convert("RGB")
    except (UnidentifiedImageError, OSError) as error:
        raise ExplainError(f"cannot read image {str(path)!r}: {error}") from error
    picture = TF.center_crop(TF.resize(picture, round(loaded.size * 256 / 224)), loaded.size)
    pixels = TF.to_tensor(picture)
    return pixels, TF.normalize(pixels, loaded.mean, loaded.std)


def _gradient(model: nn.Module, images: Tensor, target: int) -> Tensor:
    leaf = images.detach().requires_grad_(True)
    with torch.enable_grad():
        (gradient,) = torch.autograd.grad(model(leaf)[:, target].sum(), leaf)
    return gradient


def _methods(model: nn.Module, names: Sequence[str], size: int) -> dict[str, Callable[[Tensor, int], Tensor]]:
    import zf_attr

    window = max(4, size // 8)
    builders: dict[str, Callable[[Tensor, int], Tensor]] = {
        "deconvnet": lambda x, t: zf_attr.Deconvnet(model).attribute(x, target=t),
        "guided": lambda x, t: zf_attr.GuidedBackprop(model).attribute(x, target=t),
        "gradient": lambda x, t: _gradient(model, x, t),
        "occlusion": lambda x, t: zf_attr.OcclusionSensitivity(model).attribute(
            x, sliding_window_shapes=(3, window, window), strides=(3, window // 2, window // 2), target=t
        ),
    }
    return {name: builders[name] for name in names}


def run_explain(
    loaded: LoadedModel,
    images: Sequence[Path],
    methods: Sequence[str],
    out: Path,
    target: int | None,
    report: Callable[[Path], None],
) -> dict[str, Any]:
    """Explain every image with every method; write figures as they finish, then the arrays and summary."""
    from zf_attr.viz import save_attribution_grid

    runners = _methods(loaded.model, methods, loaded.size)
    arrays: dict[str, np.ndarray] = {}
    summary: dict[str, Any] = {"model": loaded.note, "methods": list(methods), "images": []}
    for path in images:
        pixels, batch = read_image(path, loaded)
        with torch.no_grad():
            probabilities = loaded.model(batch[None]).softmax(dim=1)[0]
        predicted = int(probabilities.argmax())
        chosen = predicted if target is None else target
        if not 0 <= chosen < probabilities.numel():
            raise ExplainError(f"--target {chosen} is out of range for {probabilities.numel()} classes")
        maps = {name: run(batch[None], chosen)[0].detach() for name, run in runners.items()}
        name = _class_name(loaded, chosen)
        figure = save_attribution_grid(
            [pixels],
            {method: [value] for method, value in maps.items()},
            out / f"{path.stem}.png",
            title=f"{path.name}: target {name} (p={float(probabilities[chosen]):.2f}); {loaded.note}",
            row_labels=[f"predicted {_class_name(loaded, predicted)}"],
        )
        report(figure)
        for method, value in maps.items():
            arrays[f"{path.stem}/{method}"] = value.cpu().numpy()
        summary["images"].append(
            {
                "file": str(path),
                "figure": figure.name,
                "predicted": _class_name(loaded, predicted),
                "target": name,
                "target_probability": round(float(probabilities[chosen]), 6),
            }
        )
    arrays_path = out / "attributions.npz"
    np.savez_compressed(arrays_path, **arrays)
    report(arrays_path)
    summary_path = out / "summary.json"
    summary_path.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    report(summary_path)
    return summary


def _class_name(loaded: LoadedModel, index: int) -> str:
    return loaded.categories[index] if loaded.categories is not None else str(index)


def run_occlusion_study(
    loaded: LoadedModel,
    image: Path,
    out: Path,
    *,
    target: int | None,
    layer: str | None,
    window: int,
    stride: int,
    fill: float,
    report: Callable[[Path], None],
) -> dict[str, Any]:
    """The four-panel occlusion study of one image file: a figure and a JSON summary with the panels' arrays."""
    from zf_attr.analysis import occlusion_study

    _, batch = read_image(image, loaded)
    if target is None:
        with torch.no_grad():
            target = int(loaded.model(batch[None]).argmax(dim=1))
    try:
        study = occlusion_study(
            loaded.model, batch, target, layer=layer, window=window, stride=stride, fill=fill,
            class_names=loaded.categories, show_progress=False,
        )  # fmt: skip
    except ValueError as error:
        raise ExplainError(str(error)) from error
    figure = study.save_figure(out / f"{image.stem}_occlusion.png", mean=loaded.mean, std=loaded.std)
    report(figure)
    summary = {
        "file": str(image),
        "model": loaded.note,
        "target": study.class_name(target),
        "layer": study.layer,
        "feature_map": study.feature_map,
        "window": window,
        "stride": stride,
        "fill": fill,
        "unoccluded": study.unoccluded,
        "row_starts": list(study.row_starts),
        "col_starts": list(study.col_starts),
        "map_activation": study.map_activation.tolist(),
        "target_probability": study.target_probability.tolist(),
        "top_class": [[study.class_name(int(c)) for c in row] for row in study.top_class],
    }
    path = out / f"{image.stem}_occlusion.json"
    path.write_text(json.dumps(summary) + "\n", encoding="utf-8")
    report(path)
    return summary
