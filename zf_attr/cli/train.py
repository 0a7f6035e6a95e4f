"""``zf-attr demo`` and ``zf-attr train``: the offline demonstration and the paper's ZFNet training recipe."""

from __future__ import annotations

import argparse
from pathlib import Path

from zf_attr.cli._common import CommandError, prepare_out

__all__ = ["configure_demo", "configure_train", "run_demo", "run_train"]


def configure_demo(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``zf-attr demo``."""
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("zf-attr-demo"),
        metavar="DIR",
        help="folder for the figures, summary.json and report.html, created if missing (default: ./zf-attr-demo)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic images and the weights (default: 0)")
    parser.add_argument("--quiet", action="store_true", help="print only the paths of the files written")


def run_demo(args: argparse.Namespace) -> int:
    """The bundled ZFNet on generated images, and zf_attr beside Captum on functional-ReLU models."""
    from zf_attr._demo import run_demo as demo
    from zf_attr.cli._common import Outputs

    outputs = Outputs(args.out, "zf-attr demo: the bundled ZFNet, and zf_attr beside Captum")
    with outputs.session():
        outputs.summary = demo(outputs.out, seed=args.seed, report=outputs.add)
    if not args.quiet:
        print(
            "deconvnet_zfnet.png: the shipped ZFNet's maps for one generated image per class (object outline in "
            "cyan);\ncaptum_vs_zf_attr_*.png: Captum's Deconvolution equals the plain gradient on GoogLeNet "
            "(functional F.relu) and MobileNetV2 (ReLU6); zf_attr's Deconvnet does not."
        )
    return 0


def configure_train(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``zf-attr train``."""
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", type=Path, metavar="DIR", help="ImageFolder root with train/ and val/ (ImageNet)")
    source.add_argument(
        "--shapes", type=int, metavar="N", help="train on N generated ShapesDataset images (validation: 1000, seed 1)"
    )
    parser.add_argument("--out", type=Path, default=Path("zf-attr-train"), metavar="DIR", help="checkpoints folder")
    parser.add_argument("--variant", default=None, help="ZFNet variant: a (paper), b (wide), shapes (narrow, 112x112)")
    parser.add_argument("--epochs", type=int, default=70, help="epochs (default: 70, as the paper)")
    parser.add_argument("--batch-size", type=int, default=128, help="batch size (default: 128)")
    parser.add_argument("--lr", type=float, default=1e-2, help="initial learning rate (default: 1e-2)")
    parser.add_argument("--init", choices=("paper", "kaiming"), default="paper", help="initialisation (default: paper)")
    parser.add_argument("--workers", type=int, default=0, help="data loader processes (default: 0)")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda (default: cpu)")
    parser.add_argument("--resume", action="store_true", help="continue from OUT/last.pt")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def run_train(args: argparse.Namespace) -> int:
    """Train a ZFNet with the paper's recipe (SGD, RMS renormalisation, annealing on plateau)."""
    from zf_attr.models import VARIANTS, ZFNet
    from zf_attr.models.shapes import ShapesDataset
    from zf_attr.models.training import TrainConfig, imagefolder_datasets, train

    if args.data is not None:
        variant = args.variant or "a"
        if not args.data.is_dir():
            raise CommandError(f"--data {str(args.data)!r} is not a folder")
        if variant not in VARIANTS:
            raise CommandError(f"--variant {variant!r} is not a ZFNet variant; choose one of {sorted(VARIANTS)}")
        try:
            train_data, val_data = imagefolder_datasets(args.data, crop=VARIANTS[variant].input_size)
        except FileNotFoundError as error:
            raise CommandError(str(error)) from error
        num_classes = len(train_data.classes)  # type: ignore[attr-defined]
    else:
        variant = args.variant or "shapes"
        if variant not in VARIANTS:
            raise CommandError(f"--variant {variant!r} is not a ZFNet variant; choose one of {sorted(VARIANTS)}")
        size = VARIANTS[variant].input_size
        train_data = ShapesDataset(args.shapes, seed=0, image_size=size)
        val_data = ShapesDataset(1000, seed=1, image_size=size)
        num_classes = len(ShapesDataset.classes)
    model = ZFNet(num_classes, VARIANTS[variant])
    model.reset_parameters(args.init)
    config = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, workers=args.workers)
    out = prepare_out(args.out)
    result = train(
        model, train_data, val_data, config, checkpoint_dir=out, resume=args.resume, device=args.device,
        progress=not args.quiet,
    )  # fmt: skip
    print(out / "best.pt")
    print(out / "history.json")
    if not args.quiet:
        print(f"best validation error {result.best_val_error:.4f} at epoch {result.best_epoch}")
    return 0
