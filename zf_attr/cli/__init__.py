"""The ``zf-attr`` command line.

Subcommands are registered in :data:`COMMANDS`: each has a function that adds its arguments to a parser
and a function that runs it and returns the exit code. Exit codes: 0 success, 2 bad arguments, 1 runtime
error (one line ``zf-attr: error: ...`` on stderr; files finished before the failure stay on disk).

Example:
    >>> from zf_attr.cli import main
    >>> main(["demo", "--out", "zf-attr-demo", "--quiet"])  # doctest: +SKIP
    0

"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import zf_attr

__all__ = ["COMMANDS", "Command", "build_parser", "main"]

PROG = "zf-attr"


class Command(NamedTuple):
    """One subcommand: its one-line help, how to add its arguments, and how to run it."""

    help: str
    configure: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


class CommandError(RuntimeError):
    """A runtime failure with a message meant for the user (reported as ``zf-attr: error: <message>``)."""


# --------------------------------------------------------------------------------------------- demo
def _configure_demo(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("zf-attr-demo"),
        metavar="DIR",
        help="folder for the figures and summary.json, created if missing (default: ./zf-attr-demo)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic images and the weights (default: 0)")
    parser.add_argument("--quiet", action="store_true", help="print only the paths of the files written")


def _prepare_out(out: Path) -> Path:
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise CommandError(f"cannot create output folder '{out}': {error.strerror or error}") from error
    if not out.is_dir():
        raise CommandError(f"output path '{out}' exists and is not a folder")
    return out


def _run_demo(args: argparse.Namespace) -> int:
    """The bundled ZFNet on generated images, and zf_attr beside Captum on functional-ReLU models."""
    from zf_attr._demo import run_demo

    out = _prepare_out(args.out)
    run_demo(out, seed=args.seed, report=lambda path: print(path, flush=True))
    if not args.quiet:
        print(
            "deconvnet_zfnet.png: the shipped ZFNet's maps for one generated image per class (object outline in "
            "cyan);\ncaptum_vs_zf_attr_*.png: Captum's Deconvolution equals the plain gradient on GoogLeNet "
            "(functional F.relu) and MobileNetV2 (ReLU6); zf_attr's Deconvnet does not."
        )
    return 0


# --------------------------------------------------------------------------------------------- train
def _configure_train(parser: argparse.ArgumentParser) -> None:
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


def _run_train(args: argparse.Namespace) -> int:
    """Train a ZFNet with the paper's recipe (SGD, RMS renormalisation, annealing on plateau)."""
    from zf_attr.models import VARIANTS, ZFNet
    from zf_attr.models.shapes import ShapesDataset
    from zf_attr.models.training import TrainConfig, imagefolder_datasets, train

    if args.data is not None:
        variant = args.variant or "a"
        if not args.data.is_dir():
            raise CommandError(f"--data {str(args.data)!r} is not a folder")
        try:
            train_data, val_data = imagefolder_datasets(args.data, crop=VARIANTS[variant].input_size)
        except FileNotFoundError as error:
            raise CommandError(str(error)) from error
        num_classes = len(train_data.classes)  # type: ignore[attr-defined]
    else:
        variant = args.variant or "shapes"
        size = VARIANTS[variant].input_size if variant in VARIANTS else 112
        train_data = ShapesDataset(args.shapes, seed=0, image_size=size)
        val_data = ShapesDataset(1000, seed=1, image_size=size)
        num_classes = len(ShapesDataset.classes)
    if variant not in VARIANTS:
        raise CommandError(f"--variant {variant!r} is not a ZFNet variant; choose one of {sorted(VARIANTS)}")
    model = ZFNet(num_classes, VARIANTS[variant])
    model.reset_parameters(args.init)
    config = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, workers=args.workers)
    out = _prepare_out(args.out)
    result = train(
        model, train_data, val_data, config, checkpoint_dir=out, resume=args.resume, device=args.device,
        progress=not args.quiet,
    )  # fmt: skip
    print(out / "best.pt")
    print(out / "history.json")
    if not args.quiet:
        print(f"best validation error {result.best_val_error:.4f} at epoch {result.best_epoch}")
    return 0


# --------------------------------------------------------------------------------------------- explain
def _configure_explain(parser: argparse.ArgumentParser) -> None:
    from zf_attr._explain import METHODS

    parser.add_argument("images", nargs="+", help="image files, folders of images, or glob patterns")
    parser.add_argument(
        "--model", default="zfnet", help="zfnet (bundled), a torchvision name, or package.module:factory"
    )
    parser.add_argument("--weights", type=Path, default=None, help="local weights file (.pt/.pth/.safetensors)")
    parser.add_argument(
        "--method", nargs="+", choices=METHODS, default=["deconvnet", "guided", "gradient"], help="methods to run"
    )
    parser.add_argument("--target", type=int, default=None, help="class to explain (default: the predicted one)")
    parser.add_argument("--size", type=int, default=None, help="input side in pixels (default: the model's)")
    parser.add_argument("--out", type=Path, default=Path("zf-attr-explain"), metavar="DIR", help="output folder")
    parser.add_argument("--quiet", action="store_true", help="print only the paths of the files written")


def _run_explain(args: argparse.Namespace) -> int:
    """Attribution figures, arrays and a JSON summary for image files."""
    from zf_attr._explain import ExplainError, find_images, load_model, run_explain

    try:
        images = find_images(args.images)
        loaded = load_model(args.model, args.weights, args.size)
        out = _prepare_out(args.out)
        run_explain(loaded, images, args.method, out, args.target, report=lambda path: print(path, flush=True))
    except ExplainError as error:
        raise CommandError(str(error)) from error
    if not args.quiet:
        print(f"{len(images)} image(s) explained with {', '.join(args.method)} on {loaded.note}")
    return 0


# --------------------------------------------------------------------------------------------- occlusion-study
def _configure_occlusion_study(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("image", type=Path, help="one image file")
    parser.add_argument(
        "--model", default="zfnet", help="zfnet (bundled), a torchvision name, or package.module:factory"
    )
    parser.add_argument("--weights", type=Path, default=None, help="local weights file (.pt/.pth/.safetensors)")
    parser.add_argument("--target", type=int, default=None, help="true class (default: the predicted one)")
    parser.add_argument("--layer", default=None, help="layer of panels (b) and (c) (default: the last conv block)")
    parser.add_argument("--window", type=int, default=None, help="occluder side in pixels (default: size / 3)")
    parser.add_argument("--stride", type=int, default=None, help="occluder step in pixels (default: window / 6)")
    parser.add_argument("--fill", type=float, default=0.0, help="occluder value after normalisation (default 0)")
    parser.add_argument("--size", type=int, default=None, help="input side in pixels (default: the model's)")
    parser.add_argument("--out", type=Path, default=Path("zf-attr-occlusion"), metavar="DIR", help="output folder")


def _run_occlusion_study(args: argparse.Namespace) -> int:
    """The paper's four-panel occlusion study (Fig. 7) of one image."""
    from zf_attr._explain import ExplainError, load_model, run_occlusion_study

    try:
        if not args.image.is_file():
            raise ExplainError(f"no such image file: {str(args.image)!r}")
        loaded = load_model(args.model, args.weights, args.size)
        window = args.window or max(4, loaded.size // 3)
        stride = args.stride or max(1, window // 6)
        out = _prepare_out(args.out)
        run_occlusion_study(
            loaded, args.image, out, target=args.target, layer=args.layer, window=window, stride=stride,
            fill=args.fill, report=lambda path: print(path, flush=True),
        )  # fmt: skip
    except ExplainError as error:
        raise CommandError(str(error)) from error
    return 0


#: Every subcommand, by name; add an entry (and its two functions) to add a subcommand.
COMMANDS: dict[str, Command] = {
    "demo": Command(
        help="figures of the bundled ZFNet on generated images, and zf_attr beside Captum (offline, < 1 min)",
        configure=_configure_demo,
        run=_run_demo,
    ),
    "explain": Command(
        help="attribution figures (deconvnet, guided, gradient, occlusion) for image files, folders or globs",
        configure=_configure_explain,
        run=_run_explain,
    ),
    "occlusion-study": Command(
        help="the paper's four-panel occlusion study (Fig. 7) of one image: figure and JSON",
        configure=_configure_occlusion_study,
        run=_run_occlusion_study,
    ),
    "train": Command(
        help="train a ZFNet with the paper's recipe on an ImageFolder tree or generated shapes (checkpoints, resume)",
        configure=_configure_train,
        run=_run_train,
    ),
}


# --------------------------------------------------------------------------------------------- main
def build_parser() -> argparse.ArgumentParser:
    """Build the argument parser of ``zf-attr``, with one subparser per entry of :data:`COMMANDS`."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Zeiler & Fergus's deconvnet as Captum-style attributions, right on every torchvision CNN.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {zf_attr.__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, command in COMMANDS.items():
        subparser = subparsers.add_parser(name, help=command.help, description=command.help)
        command.configure(subparser)
        subparser.set_defaults(run=command.run)
    return parser


def _show_warning(message: Warning | str, category: type[Warning], *args: Any, **kwargs: Any) -> None:
    """Print a warning as one line ``zf-attr: warning: ...`` on stderr, without the source line."""
    print(f"{PROG}: warning: {' '.join(str(message).split())}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    """Run ``zf-attr`` with ``argv`` (default: ``sys.argv[1:]``) and return the exit code.

    Args:
        argv: the arguments after the program name.

    Returns:
        0 on success, 1 on a runtime error (reported on stderr). Bad arguments exit with 2 through
        argparse (``SystemExit``), as do ``--help`` and ``--version`` (with 0).

    """
    args = build_parser().parse_args(argv)
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _show_warning
            return int(args.run(args))
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except CommandError as error:
        message = str(error)
    except Exception as error:  # one line for the user instead of a traceback
        message = f"{type(error).__name__}: {error}"
    print(f"{PROG}: error: {' '.join(message.split())}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    raise SystemExit(main())
