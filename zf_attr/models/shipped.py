"""Regenerate the shipped ZFNet weights from a seed: ``python -m zf_attr.models.shipped --seed 0``.

Trains the narrow ``"shapes"`` ZFNet (:data:`zf_attr.models.VARIANTS`) with the recipe of
:mod:`zf_attr.models.training` on :class:`~zf_attr.models.shapes.ShapesDataset` (train seed 0, validation seed
1), measures its accuracy on a fresh test split (seed 2), and writes the state dict and a JSON card (metrics,
recipe, history) into ``zf_attr/models/checkpoints/``.

Two deviations from the paper's recipe, stated in the card, both because the narrow net (32–96 filters,
256-unit fc layers) otherwise never leaves the ln(6) loss plateau within a 2-core budget:

* He-normal initialisation instead of N(0, 1e-2): under the paper's init the logits start at ~1e-5 (the signal
  shrinks ~5× per layer) and the loss was 1.7918 after 4 epochs;
* no dropout on fc6/fc7 while training: with dropout 0.5 on 256 units the loss was 1.779 after 200 SGD steps,
  against 1.444 without (same seed, lr 1e-2, momentum 0.9, batch 128, RMS renormalisation; lr 3e-3 or 1024-unit
  fc layers with dropout did not help either: 1.784 and 1.772).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from torch.utils.data import TensorDataset

from zf_attr.models.shapes import ShapesDataset
from zf_attr.models.training import TrainConfig, evaluate, train
from zf_attr.models.zfnet import VARIANTS, ZFNet

__all__ = ["make_shipped_weights", "materialize"]

WEIGHTS_DIR = Path(__file__).resolve().parent / "checkpoints"


def materialize(dataset: ShapesDataset) -> TensorDataset:
    """Render every item once into memory (the generator is deterministic, so this changes nothing but speed)."""
    images, labels = zip(*(dataset[index] for index in range(len(dataset))), strict=True)
    return TensorDataset(torch.stack(images), torch.tensor(labels))


class _Flipped(torch.utils.data.Dataset):
    """Random horizontal flips (the paper's augmentation) over an in-memory data set."""

    def __init__(self, data: TensorDataset, seed: int) -> None:
        self.data = data
        self.flips = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image, label = self.data[index]
        if torch.rand((), generator=self.flips) < 0.5:
            image = image.flip(-1)
        return image, label


def make_shipped_weights(
    seed: int = 0,
    *,
    train_size: int = 12_000,
    epochs: int = 40,
    out_dir: Path = WEIGHTS_DIR,
    checkpoint_dir: Path | None = None,
    progress: bool = True,
) -> dict:
    """Train the shipped ZFNet from ``seed`` and write ``zfnet_shapes_112.pt`` and its JSON card.

    Args:
        seed: seed of the initialisation and the data order.
        train_size: training images (ShapesDataset seed 0).
        epochs: training epochs.
        out_dir: where the weights and card go.
        checkpoint_dir: training checkpoints (an interrupted run resumes); default ``./.zf-attr-train-shapes``.
        progress: print per-epoch progress.

    Returns:
        The card written (metrics, recipe, history).
    """
    began = time.perf_counter()
    torch.manual_seed(seed)
    config = VARIANTS["shapes"]
    train_data = materialize(ShapesDataset(train_size, seed=0, image_size=config.input_size))
    val_data = materialize(ShapesDataset(1_000, seed=1, image_size=config.input_size))
    test_data = materialize(ShapesDataset(2_000, seed=2, image_size=config.input_size))
    model = ZFNet(len(ShapesDataset.classes), config, dropout=0.0)  # see the module docstring
    model.reset_parameters("kaiming")
    recipe = TrainConfig(
        epochs=epochs, batch_size=128, lr=1e-2, momentum=0.9, rms_radius=0.1, plateau_patience=5, seed=seed
    )
    checkpoint_dir = checkpoint_dir or Path(".zf-attr-train-shapes")
    flipped = _Flipped(train_data, seed)
    result = train(model, flipped, val_data, recipe, checkpoint_dir=checkpoint_dir, resume=True, progress=progress)
    model.load_state_dict(torch.load(checkpoint_dir / "best.pt", map_location="cpu", weights_only=True))
    loader = torch.utils.data.DataLoader(test_data, batch_size=256)
    test = evaluate(model, loader)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), out_dir / "zfnet_shapes_112.pt")
    card = {
        "metrics": {
            "test_accuracy": round(1.0 - test["error"], 4),
            "test_split": "ShapesDataset(2000, seed=2), never seen in training or validation",
            "val_accuracy": round(1.0 - result.best_val_error, 4),
            "best_epoch": result.best_epoch,
        },
        "recipe": (
            f"python -m zf_attr.models.shipped --seed {seed} --train-size {train_size} --epochs {epochs}: SGD lr 1e-2 "
            "momentum 0.9 batch 128, zero biases, filter RMS renormalisation to 0.1 after every step, lr /10 on a "
            "validation plateau (patience 5), random horizontal flips. Deviations (see zf_attr/models/shipped.py): "
            "He-normal init instead of N(0, 1e-2), and no dropout on fc6/fc7 while training; with either paper "
            "setting the narrow net stays on the ln(6) loss plateau in a 2-core budget"
        ),
        "data": f"ShapesDataset: train {train_size} images (seed 0), validation 1000 (seed 1), 112x112, 6 classes",
        "history": result.history,
        "train_seconds": round(time.perf_counter() - began, 1),
        "torch": torch.__version__,
    }
    (out_dir / "zfnet_shapes_112.json").write_text(json.dumps(card, indent=2) + "\n")
    return card


def main(argv: list[str] | None = None) -> int:
    """Command line: ``python -m zf_attr.models.shipped [--seed 0] [--train-size N] [--epochs E]``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train-size", type=int, default=12_000)
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--out-dir", type=Path, default=WEIGHTS_DIR)
    args = parser.parse_args(argv)
    card = make_shipped_weights(args.seed, train_size=args.train_size, epochs=args.epochs, out_dir=args.out_dir)
    print(json.dumps(card["metrics"], indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
