"""Train the two first layers the paper's Fig. 6 compares, with one recipe, for docs/diagnostics.md.

ZFNet's 7×7/2 first layer (the bundled ``"shapes"`` ZFNet, untrained) and an AlexNet-style 11×11/4 first layer
(:func:`zf_attr.analysis.diagnostics.variants.alexnet_style`) are trained from the same seed on the same
generated images (``ShapesDataset``, train seed 0, validation 300 images of seed 1, 112 px) with the shipped
weights' recipe (He-normal init, no dropout, SGD lr 1e-2, momentum 0.9, filter RMS renormalisation to 0.1) but a
budget that fits 2 CPU cores: ``--train-size`` images, ``--epochs`` epochs, batch 64. Writes ``zfnet_7x2.pt``,
``alexnet_11x4.pt`` and ``history.json`` into ``--out`` (weights are not committed; rerun to get them)::

    python docs/scripts/train_first_layers.py --out /tmp/zf-attr-first-layers
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from zf_attr.analysis.diagnostics.variants import alexnet_style
from zf_attr.models.shapes import ShapesDataset
from zf_attr.models.shipped import materialize
from zf_attr.models.training import TrainConfig, train
from zf_attr.models.zfnet import VARIANTS, ZFNet


def main() -> None:
    """Train both models and write their weights and histories."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("/tmp/zf-attr-first-layers"))
    parser.add_argument("--train-size", type=int, default=3000)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    config = VARIANTS["shapes"]
    train_data = materialize(ShapesDataset(args.train_size, seed=0, image_size=config.input_size))
    val_data = materialize(ShapesDataset(300, seed=1, image_size=config.input_size))
    histories = {}
    for name in ("zfnet_7x2", "alexnet_11x4"):
        torch.manual_seed(args.seed)
        if name == "zfnet_7x2":
            model = ZFNet(len(ShapesDataset.classes), config, dropout=0.0)
            model.reset_parameters("kaiming")
        else:
            model = alexnet_style(len(ShapesDataset.classes), config)
        recipe = TrainConfig(epochs=args.epochs, batch_size=64, plateau_patience=10, seed=args.seed)
        began = time.perf_counter()
        result = train(model, train_data, val_data, recipe, progress=False)
        torch.save(model.state_dict(), args.out / f"{name}.pt")
        histories[name] = {"history": result.history, "seconds": round(time.perf_counter() - began, 1)}
        print(name, result.history[-1], flush=True)
    recipe_note = {"train_size": args.train_size, "epochs": args.epochs, "seed": args.seed, "batch_size": 64}
    (args.out / "history.json").write_text(json.dumps({"recipe": recipe_note, **histories}, indent=2) + "\n")


if __name__ == "__main__":
    main()
