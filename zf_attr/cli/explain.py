"""``zf-attr explain`` and ``zf-attr occlusion-study``: attribution figures, arrays and numbers for image files.

``explain`` writes, per image, ``<stem>.png`` (the image and one map per method) as soon as it is done; then
``attributions.npz`` (one array per image and method), ``summary.json`` and ``report.html``. A run that fails
midway still writes the arrays, summary and report of the images it finished.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from zf_attr.cli._common import (
    CommandError,
    Outputs,
    add_model_arguments,
    add_output_arguments,
    check_layer,
    open_model,
    write_json,
)
from zf_attr.cli._inputs import InputError, LoadedModel, find_images, read_image

__all__ = ["METHODS", "configure_explain", "configure_occlusion_study", "run_explain", "run_occlusion_study"]

#: Methods of ``zf-attr explain --method``.
METHODS = ("deconvnet", "strict", "guided", "gradient", "gradcam", "occlusion")

Runner = Callable[[Tensor, int], Tensor]


def configure_explain(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``zf-attr explain``."""
    parser.add_argument("images", nargs="+", help="image files, folders of images, or glob patterns")
    parser.add_argument(
        "--method", nargs="+", choices=METHODS, default=["deconvnet", "guided", "gradient"],
        help="methods to run: deconvnet (gradient-style), strict (paper's), guided backprop, the plain gradient, "
        "Captum's Grad-CAM (at --layer, upsampled) and occlusion (default: deconvnet guided gradient)",
    )  # fmt: skip
    parser.add_argument("--target", type=int, default=None, help="class to explain (default: the predicted one)")
    parser.add_argument("--window", type=int, default=None, help="occlusion window side (default: size / 8)")
    parser.add_argument("--stride", type=int, default=None, help="occlusion stride (default: window / 2)")
    parser.add_argument(
        "--drill-down", nargs=2, type=float, default=None, metavar=("STEP", "REFINE"),
        help="coarse-then-fine occlusion: every STEP-th window, then the REFINE fraction of the others where the "
        "map is strong, the rest interpolated (e.g. 3 0.1); its measured error goes to summary.json",
    )  # fmt: skip
    add_model_arguments(parser, layer_help="Grad-CAM layer, e.g. layer4 or features.28 (default: last conv block)")
    add_output_arguments(parser, "zf-attr-explain")


def _methods(
    loaded: LoadedModel,
    names: Sequence[str],
    layer: str | None,
    window: int | None,
    stride: int | None,
    occlusion: Any = None,
) -> dict[str, Runner]:
    import zf_attr

    model = loaded.model
    occlusion = occlusion if occlusion is not None else zf_attr.OcclusionSensitivity(model)
    side = window or max(4, loaded.size // 8)
    step = stride or max(1, side // 2)
    if side > loaded.size or step < 1:
        raise CommandError(f"--window {side} / --stride {step} do not fit a {loaded.size}-pixel image")
    builders: dict[str, Callable[[], Runner]] = {
        "deconvnet": lambda: lambda x, t: zf_attr.Deconvnet(model).attribute(x, target=t),
        "strict": lambda: lambda x, t: zf_attr.Deconvnet(model, variant="strict").attribute(x, target=t),
        "guided": lambda: lambda x, t: zf_attr.GuidedBackprop(model).attribute(x, target=t),
        "gradient": lambda: lambda x, t: _gradient(model, x, t),
        "gradcam": lambda: _gradcam(loaded, layer),
        "occlusion": lambda: lambda x, t: occlusion.attribute(x, (3, side, side), strides=(3, step, step), target=t),
    }
    return {name: builders[name]() for name in names}


def _gradient(model: nn.Module, images: Tensor, target: int) -> Tensor:
    leaf = images.detach().requires_grad_(True)
    with torch.enable_grad():
        (gradient,) = torch.autograd.grad(model(leaf)[:, target].sum(), leaf)
    return gradient


def _gradcam(loaded: LoadedModel, layer: str | None) -> Runner:
    from captum.attr import LayerAttribution, LayerGradCam

    from zf_attr.attr._layers import default_feature_layer, resolve_layer

    model = loaded.model
    if layer is None:
        probe = torch.zeros(1, 3, loaded.size, loaded.size, device=loaded.device)
        layer = default_feature_layer(model, (probe,))
    try:
        _, module = resolve_layer(model, layer)
    except ValueError as error:
        raise CommandError(f"--layer: {error}") from error
    gradcam = LayerGradCam(model, module)

    def run(images: Tensor, target: int) -> Tensor:
        maps = gradcam.attribute(images, target=target, relu_attributions=True)
        return LayerAttribution.interpolate(maps, tuple(images.shape[-2:]), interpolate_mode="bilinear")

    return run


def run_explain(args: argparse.Namespace) -> int:
    """Attribution figures, arrays and a JSON summary for image files."""
    from zf_attr.viz import save_attribution_grid

    try:
        images = find_images(args.images)
    except InputError as error:
        raise CommandError(str(error)) from error
    loaded = open_model(args)
    check_layer(loaded, args.layer, None if "gradcam" in args.method else "--method gradcam")
    occlusion = _occlusion(loaded, args.drill_down, "occlusion" in args.method)
    runners = _methods(loaded, args.method, args.layer, args.window, args.stride, occlusion)
    outputs = Outputs(args.out, f"zf-attr explain: {', '.join(args.method)} on {loaded.note}")
    arrays: dict[str, np.ndarray] = {}
    records: list[dict[str, Any]] = []
    outputs.summary = {"model": loaded.note, "methods": list(args.method), "images": records}
    with outputs.session():
        try:
            for path in tqdm(images, desc="images", unit="image", disable=True if args.quiet else None, leave=False):
                pixels, batch = _read(path, loaded)
                batch = batch[None].to(loaded.device)
                with torch.no_grad():
                    probabilities = loaded.model(batch).softmax(dim=1)[0]
                predicted = int(probabilities.argmax())
                chosen = predicted if args.target is None else args.target
                if not 0 <= chosen < probabilities.numel():
                    raise CommandError(f"--target {chosen} is out of range for {probabilities.numel()} classes")
                maps = {name: run(batch, chosen)[0].detach().cpu() for name, run in runners.items()}
                figure = save_attribution_grid(
                    [pixels],
                    {method: [value] for method, value in maps.items()},
                    outputs.out / f"{path.stem}.png",
                    title=f"{path.name}: target {loaded.class_name(chosen)} (p={float(probabilities[chosen]):.2f})"
                    f"; {loaded.note}",
                    row_labels=[f"predicted {loaded.class_name(predicted)}"],
                )
                outputs.add(figure)
                arrays.update({f"{path.stem}/{method}": value.numpy() for method, value in maps.items()})
                records.append(
                    {
                        "file": str(path),
                        "figure": figure.name,
                        "predicted": loaded.class_name(predicted),
                        "target": loaded.class_name(chosen),
                        "target_probability": round(float(probabilities[chosen]), 6),
                        **_occlusion_record(occlusion, "occlusion" in maps),
                    }
                )
        finally:
            if records:
                arrays_path = outputs.out / "attributions.npz"
                np.savez_compressed(arrays_path, **arrays)
                outputs.add(arrays_path)
            outputs.summary["complete"] = len(records) == len(images)
            outputs.add(write_json(outputs.out / "summary.json", outputs.summary))
    if not args.quiet:
        print(f"{len(images)} image(s) explained with {', '.join(args.method)} on {loaded.note}")
    return 0


def _occlusion(loaded: LoadedModel, drill_down: Sequence[float] | None, used: bool) -> Any:
    """The occlusion method of a run: exact, or a ``DrillDown`` from ``--drill-down STEP REFINE``."""
    import zf_attr

    if drill_down is None:
        return zf_attr.OcclusionSensitivity(loaded.model)
    if not used:
        raise CommandError("--drill-down applies to --method occlusion, which is not chosen")
    step, refine = drill_down
    if step != int(step):
        raise CommandError(f"--drill-down STEP must be a whole number, got {step:g}")
    try:
        setting = zf_attr.DrillDown(int(step), refine)
    except ValueError as error:
        raise CommandError(f"--drill-down: {error}") from error
    return zf_attr.OcclusionSensitivity(loaded.model, approximate=setting)


def _occlusion_record(occlusion: Any, ran: bool) -> dict[str, Any]:
    """What the summary says of an image's occlusion: windows evaluated and, if approximate, the error."""
    if not ran:
        return {}
    record: dict[str, Any] = {"occlusion_windows_evaluated": occlusion.last_windows_evaluated}
    if occlusion.last_approximation_error is not None:
        record["occlusion_reported_error"] = round(occlusion.last_approximation_error, 6)
    return record


def _read(path: Path, loaded: LoadedModel) -> tuple[Tensor, Tensor]:
    try:
        return read_image(path, loaded)
    except InputError as error:
        raise CommandError(str(error)) from error


def configure_occlusion_study(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``zf-attr occlusion-study``."""
    parser.add_argument("image", type=Path, help="one image file")
    parser.add_argument("--target", type=int, default=None, help="true class (default: the predicted one)")
    parser.add_argument("--window", type=int, default=None, help="occluder side in pixels (default: size / 3)")
    parser.add_argument("--stride", type=int, default=None, help="occluder step in pixels (default: window / 6)")
    parser.add_argument("--fill", type=float, default=0.0, help="occluder value after normalisation (default 0)")
    add_model_arguments(parser, layer_help="layer of panels (b) and (c) (default: the last conv block)")
    add_output_arguments(parser, "zf-attr-occlusion")


def run_occlusion_study(args: argparse.Namespace) -> int:
    """The paper's four-panel occlusion study (Fig. 7) of one image: a figure and a JSON summary."""
    from zf_attr.analysis import occlusion_study

    if not args.image.is_file():
        raise CommandError(f"no such image file: {str(args.image)!r}")
    loaded = open_model(args)
    check_layer(loaded, args.layer)
    window = args.window or max(4, loaded.size // 3)
    stride = args.stride or max(1, window // 6)
    _, batch = _read(args.image, loaded)
    batch = batch.to(loaded.device)
    outputs = Outputs(args.out, f"zf-attr occlusion-study: {args.image.name} on {loaded.note}")
    with outputs.session():
        target = args.target
        if target is None:
            with torch.no_grad():
                target = int(loaded.model(batch[None]).argmax(dim=1))
        try:
            study = occlusion_study(
                loaded.model, batch, target, layer=args.layer, window=window, stride=stride, fill=args.fill,
                class_names=loaded.categories, show_progress=not args.quiet and sys.stderr.isatty(),
            )  # fmt: skip
        except ValueError as error:
            raise CommandError(str(error)) from error
        stem = args.image.stem
        outputs.add(study.save_figure(outputs.out / f"{stem}_occlusion.png", mean=loaded.mean, std=loaded.std))
        outputs.summary = {
            "file": str(args.image),
            "model": loaded.note,
            "target": study.class_name(target),
            "layer": study.layer,
            "feature_map": study.feature_map,
            "window": window,
            "stride": stride,
            "fill": args.fill,
            "unoccluded": study.unoccluded,
            "row_starts": list(study.row_starts),
            "col_starts": list(study.col_starts),
            "map_activation": study.map_activation.tolist(),
            "target_probability": study.target_probability.tolist(),
            "top_class": [[study.class_name(int(c)) for c in row] for row in study.top_class],
        }
        outputs.add(write_json(outputs.out / f"{stem}_occlusion.json", outputs.summary))
    return 0
