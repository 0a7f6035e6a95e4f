"""The paper's Fig. 6 comparison on generated data: ZFNet's 7×7/2 first layer against AlexNet's 11×11/4.

Needs the weights of ``docs/scripts/train_first_layers.py`` (both trained with one recipe); runs
:func:`zf_attr.analysis.filter_diagnostics` on 120 generated probe images (seed 4) for both and for the bundled
ZFNet, writes ``docs/images/architecture_comparison.png`` and prints the Markdown table of docs/diagnostics.md::

    python docs/scripts/train_first_layers.py --out /tmp/zf-attr-first-layers --train-size 6000 --epochs 8
    python docs/scripts/make_architecture_comparison.py --weights /tmp/zf-attr-first-layers
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from PIL import Image

from zf_attr.analysis import filter_diagnostics
from zf_attr.analysis._probes import shapes_batch
from zf_attr.analysis.diagnostics import alexnet_style, save_diagnostics_comparison
from zf_attr.models import zfnet
from zf_attr.models.shapes import ShapesDataset
from zf_attr.models.zfnet import VARIANTS, ZFNet

OUT = Path(__file__).resolve().parents[1] / "images" / "architecture_comparison.png"


def main() -> None:
    """Diagnose the two trained first layers (and the bundled ZFNet), draw and print."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", type=Path, default=Path("/tmp/zf-attr-first-layers"))
    args = parser.parse_args()
    history = json.loads((args.weights / "history.json").read_text())
    zf = ZFNet(len(ShapesDataset.classes), VARIANTS["shapes"], dropout=0.0)
    zf.load_state_dict(torch.load(args.weights / "zfnet_7x2.pt", weights_only=True))
    alex = alexnet_style(len(ShapesDataset.classes))
    alex.load_state_dict(torch.load(args.weights / "alexnet_11x4.pt", weights_only=True))
    probes = shapes_batch(120, seed=4)[0]
    test, test_labels, _ = shapes_batch(600, seed=2)
    models = {"AlexNet-style 11×11/4": (alex, "alexnet_11x4"), "ZFNet 7×7/2": (zf, "zfnet_7x2")}
    results = {}
    rows = []
    for name, (model, key) in models.items():
        model.eval()
        results[name] = filter_diagnostics(model, probes)
        with torch.no_grad():
            error = float((model(test).argmax(dim=1) != test_labels).float().mean())
        summary = results[name].summary()
        layers, first = summary["layers"], summary["first_layer"]
        rows.append(
            f"| {name} | {history[key]['history'][-1]['val_error']:.3f} | {error:.3f} | "
            f"{layers['conv1']['dead']}/{layers['conv1']['maps']} | "
            f"{layers['conv2']['dead']}/{layers['conv2']['maps']} | "
            + " / ".join(f"{v:.2f}" for v in first["mean_band_energy"])
            + f" | {first['high_frequency_filters']} | {first['low_frequency_filters']} | "
            f"{layers['conv1']['stride_aliasing']:.3f} | {layers['conv2']['nyquist_energy']:.3f} |"
        )
    shipped = filter_diagnostics(zfnet(weights="DEFAULT").eval(), probes).summary()
    recipe = history["recipe"]
    title = (
        f"First-layer designs compared (as Zeiler & Fergus Fig. 6): both trained with one recipe on generated shapes "
        f"({recipe['train_size']} images, {recipe['epochs']} epochs, batch {recipe['batch_size']}); 120 probe images"
    )
    save_diagnostics_comparison(results, OUT, dpi=80, title=title)
    with Image.open(OUT) as picture:
        picture.convert("RGB").quantize(256).save(OUT, optimize=True)
    print(f"{OUT} ({OUT.stat().st_size // 1024} KB)")
    print("| first layer | val. error | test error (600) | dead conv1 | dead conv2 | conv1 band energy | high-freq. | "
          "low-freq. | conv1 stride aliasing | conv2 input near Nyquist |")  # fmt: skip
    print("|:--|" + "--:|" * 9)
    print("\n".join(rows))
    print("bundled ZFNet:", json.dumps(shipped))


if __name__ == "__main__":
    main()
