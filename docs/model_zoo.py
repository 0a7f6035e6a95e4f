"""Generate ``docs/model-zoo.md``: what zf_attr does on each torchvision and timm model family, measured.

Every statement of the table comes from a run on a randomly initialised model (nothing downloaded):

- **deconvnet**: ``zf_attr.Deconvnet`` against the plain gradient of the same target. "true deconvnet" when they
  differ; "= gradient" when they are equal, with the reason: the rectifier calls zf_attr intercepted (ReLU
  modules, functional ``F.relu``, ``ReLU6`` through ``hardtanh``, ``LeakyReLU``) and the activations it named as
  having no deconvnet rule (its one ``UnhonouredLayerWarning``).
- **Captum's Deconvolution** on the same input: "right" (equal to zf_attr's), "plain gradient" (equal to the
  gradient while zf_attr's differs: the rectifiers Captum does not hook), or "partial" (neither).
- **max-pool switches**: how many max-pool calls ``zf_attr.record_switches`` saw (switches to unpool), or none.
- **occlusion engine**: which engine ``zf_attr.OcclusionSensitivity(engine="incremental")`` ran: the
  incremental one (``torch.fx`` traced the model into supported ops) or batched recomputation, with the reason.

Run from the repository root: ``python docs/model_zoo.py`` (a few minutes on a CPU; ``--only resnet18`` for one
row); it rewrites ``docs/model-zoo.md``. timm rows need ``pip install "zf-attr[timm]"`` and are left out without.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

import zf_attr

TORCHVISION = [
    ("AlexNet", "alexnet", 64), ("VGG", "vgg11", 64), ("ResNet", "resnet18", 64),
    ("ResNeXt", "resnext50_32x4d", 64), ("Wide ResNet", "wide_resnet50_2", 64), ("DenseNet", "densenet121", 64),
    ("GoogLeNet", "googlenet", 64), ("Inception-v3", "inception_v3", 96), ("MobileNetV2", "mobilenet_v2", 64),
    ("MobileNetV3", "mobilenet_v3_small", 64), ("ShuffleNetV2", "shufflenet_v2_x0_5", 64),
    ("SqueezeNet", "squeezenet1_1", 64), ("MNASNet", "mnasnet0_5", 64), ("EfficientNet", "efficientnet_b0", 64),
    ("EfficientNetV2", "efficientnet_v2_s", 64), ("RegNet", "regnet_x_400mf", 64),
    ("ConvNeXt", "convnext_tiny", 64), ("ViT", "vit_b_16", 224), ("Swin", "swin_t", 64), ("MaxViT", "maxvit_t", 224),
]  # fmt: skip
TIMM = [
    ("ResNet", "resnet18", 64), ("ResNet-D", "resnet18d", 64), ("VGG", "vgg11", 64), ("DenseNet", "densenet121", 64),
    ("Inception-v3", "inception_v3", 96), ("CSPNet", "cspresnet50", 64), ("DLA", "dla34", 64),
    ("RegNet", "regnetx_002", 64), ("MobileNetV3", "mobilenetv3_small_050", 64),
    ("EfficientNet", "efficientnet_b0", 64), ("ConvNeXt", "convnext_atto", 64), ("ViT", "vit_tiny_patch16_224", 224),
]  # fmt: skip

_RECTIFIERS = {
    torch.nn.functional.relu, torch.relu, torch.relu_, torch.nn.functional.relu_, torch.nn.functional.relu6,
    torch.nn.functional.hardtanh, torch.nn.functional.leaky_relu, torch.nn.functional.leaky_relu_,
}  # fmt: skip


class _CountRectifiers(TorchFunctionMode):
    """Counts the rectifier calls of a forward pass (modules call the functional forms)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        if func in _RECTIFIERS:
            self.calls += 1
        return func(*args, **(kwargs or {}))


@dataclass
class Row:
    """One model's measured properties."""

    source: str
    family: str
    name: str
    deconvnet: str
    why: str
    captum: str
    switches: str
    occlusion: str


def _close(a: torch.Tensor, b: torch.Tensor) -> bool:
    return bool((a - b).abs().max() <= 1e-5 * b.abs().max().clamp_min(1e-30))


def measure(source: str, family: str, name: str, model: nn.Module, size: int) -> Row:
    """Run the four checks of the module docstring on ``model`` (eval mode) at ``size`` pixels."""
    from captum.attr import Deconvolution

    torch.manual_seed(0)
    images = torch.randn(1, 3, size, size)
    counter = _CountRectifiers()
    with torch.no_grad(), counter:
        target = int(model(images).argmax())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ours = zf_attr.Deconvnet(model).attribute(images, target=target)
    unhonoured = [str(w.message) for w in caught if issubclass(w.category, zf_attr.UnhonouredLayerWarning)]
    leaf = images.clone().requires_grad_(True)
    (gradient,) = torch.autograd.grad(model(leaf)[0, target], leaf)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = Deconvolution(model).attribute(images, target=target)
    equal_gradient = _close(ours, gradient)
    why = f"{counter.calls} rectifier calls"
    if unhonoured:
        text = " ".join(unhonoured[0].split()).removeprefix("Deconvnet: ")
        why += "; " + (text if len(text) <= 200 else text[:199] + "…")
    captum = "right" if _close(theirs, ours) else "plain gradient" if _close(theirs, gradient) else "partial"
    with torch.no_grad(), zf_attr.record_switches(model) as trace:
        model(images)
    pools = len(trace.pool_names)
    occlusion = zf_attr.OcclusionSensitivity(model, engine="incremental")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            occlusion.attribute(images, (3, size // 2, size // 2), strides=(3, size // 2, size // 2), target=target)
    except Exception as error:  # reported in the table, as measured
        engine = f"fails: {type(error).__name__}: {' '.join(str(error).split())[:100]}"
    else:
        engine = str(occlusion.last_engine)
        if engine != "incremental" and occlusion.last_engine_note:
            engine += f" ({' '.join(occlusion.last_engine_note.split())[:120]})"
    return Row(
        source, family, name, "= gradient" if equal_gradient else "true deconvnet", why, captum,
        f"{pools} max-pool calls" if pools else "none", engine,
    )  # fmt: skip


def _torchvision(name: str) -> nn.Module:
    import torchvision

    kwargs: dict[str, Any] = {"weights": None}
    if name in ("googlenet", "inception_v3"):
        kwargs.update(aux_logits=False, init_weights=True)
    return torchvision.models.get_model(name, **kwargs).eval()


def _timm(name: str) -> nn.Module:
    import timm

    return timm.create_model(name, pretrained=False).eval()


def render(rows: list[Row]) -> str:
    """The Markdown page."""
    lines = [
        "# Model zoo: what zf_attr does on each family",
        "",
        "<!-- generated by `python docs/model_zoo.py`: do not edit by hand -->",
        "",
        "Measured on one randomly initialised model per family (nothing downloaded; the answers depend on the",
        "architecture, not on the weights), by `docs/model_zoo.py`, which rewrites this page. Columns:",
        "",
        "- **deconvnet**: zf_attr's `Deconvnet` against the plain gradient: *true deconvnet* when they differ,",
        "  *= gradient* when the model has no rectifier the rule could act on. **why**: the rectifier calls zf_attr",
        "  intercepts (modules, functional `F.relu`, `ReLU6`, `LeakyReLU`) and the first activations it names as",
        "  having no deconvnet rule (its one `UnhonouredLayerWarning`).",
        "- **Captum**: Captum's `Deconvolution` on the same input: *right* (equal to zf_attr's), *plain gradient*",
        "  (the rectifiers are functional or `ReLU6`, which Captum does not hook), or *partial* (some hooked, some",
        "  not).",
        "- **switches**: the max-pool calls whose switches the deconvnet unpools through (`record_switches`).",
        '- **occlusion**: the engine `OcclusionSensitivity(engine="incremental")` ran: *incremental* (recomputes',
        "  only what each window changes) or *batched* (Captum's recomputation, batched), with the reason.",
        "",
    ]
    for source in dict.fromkeys(row.source for row in rows):
        lines += [f"## {source}", "", "| family | model | deconvnet | why | Captum | switches | occlusion |",
                  "| --- | --- | --- | --- | --- | --- | --- |"]  # fmt: skip
        for row in (r for r in rows if r.source == source):
            cells = [row.family, f"`{row.name}`", row.deconvnet, row.why, row.captum, row.switches, row.occlusion]
            lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Measure every family (or ``--only NAME``) and write the page."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", default=None, help="model names to measure (default: all)")
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("model-zoo.md"))
    args = parser.parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    plan: list[tuple[str, str, str, int, Any]] = [("torchvision", f, n, s, _torchvision) for f, n, s in TORCHVISION]
    try:
        import timm  # noqa: F401

        plan += [("timm", f, n, s, _timm) for f, n, s in TIMM]
    except ImportError:
        print("timm is not installed: its rows are left out", file=sys.stderr)
    rows = []
    for source, family, name, size, build in plan:
        if args.only is not None and name not in args.only:
            continue
        rows.append(measure(source, family, name, build(name), size))
        print(f"{source} {name}: {rows[-1].deconvnet}, Captum {rows[-1].captum}", file=sys.stderr, flush=True)
    args.out.write_text(render(rows), encoding="utf-8")
    print(args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
