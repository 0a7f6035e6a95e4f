"""What the subcommands share: errors, output folders, model arguments and the record of files written."""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from zf_attr.cli._inputs import InputError, LoadedModel, load_model

__all__ = [
    "CommandError",
    "Outputs",
    "add_model_arguments",
    "add_output_arguments",
    "check_layer",
    "demo_note",
    "open_model",
    "seed_everything",
    "prepare_out",
    "write_json",
]

#: Exit codes of ``zf-attr``.
EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


class CommandError(RuntimeError):
    """A runtime failure with a message meant for the user (reported as ``zf-attr: error: <message>``)."""


def prepare_out(out: Path) -> Path:
    """Create the output folder (and its parents) or fail with a one-line reason."""
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise CommandError(f"cannot create output folder '{out}': {error.strerror or error}") from error
    if not out.is_dir():
        raise CommandError(f"output path '{out}' exists and is not a folder")
    return out


def add_model_arguments(parser: argparse.ArgumentParser, *, layer_help: str | None = None, seed: bool = False) -> None:
    """``--model --weights --classes --size --resize --mean --std --device`` (``--layer`` with ``layer_help``).

    Args:
        parser: the subcommand's parser.
        layer_help: help of ``--layer``; ``None``: no ``--layer``.
        seed: also add ``--seed`` (for subcommands that do not have their own).
    """
    group = parser.add_argument_group("model and preprocessing")
    group.add_argument(
        "--model",
        default=None,
        help="zfnet (the bundled demo ZFNet, trained on 6 generated shapes; the default), a torchvision name, "
        "timm:NAME (needs zf-attr[timm]) or package.module:factory",
    )
    group.add_argument(
        "--weights",
        default=None,
        help="a local weights file (.pt/.pth/.safetensors), or torchvision weights by name: DEFAULT, IMAGENET1K_V1, "
        "ResNet50_Weights.IMAGENET1K_V2 (from the torch hub cache, $TORCH_HOME); timm:NAME takes 'pretrained'",
    )
    group.add_argument(
        "--classes",
        type=Path,
        default=None,
        metavar="FILE",
        help="class names, one a line or a JSON list (default: the weights' own, if any)",
    )
    group.add_argument("--size", type=int, default=None, help="crop side in pixels (default: the model's, e.g. 224)")
    group.add_argument("--resize", type=int, default=None, help="short side before the crop (default: size*256/224)")
    group.add_argument("--mean", type=float, nargs="+", default=None, help="normalisation mean (default: ImageNet's)")
    group.add_argument("--std", type=float, nargs="+", default=None, help="normalisation std (default: ImageNet's)")
    group.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default: auto = cuda if present)")
    if layer_help is not None:
        group.add_argument("--layer", default=None, help=layer_help)
    if seed:
        group.add_argument("--seed", type=int, default=0, help="seed of everything random, e.g. random-init weights")


def add_output_arguments(parser: argparse.ArgumentParser, default_out: str) -> None:
    """``--out DIR`` and ``--quiet``."""
    parser.add_argument(
        "--out", type=Path, default=Path(default_out), metavar="DIR", help=f"output folder (default: ./{default_out})"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bars; print only the paths written")


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's generators (all devices)."""
    import random

    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def open_model(args: argparse.Namespace, device: str | None = None) -> LoadedModel:
    """The model and preprocessing of :func:`add_model_arguments`'s flags (seeded first by ``--seed``, if any).

    Args:
        args: the parsed arguments.
        device: overrides ``--device`` (a rank's own GPU under torchrun).
    """
    if getattr(args, "seed", None) is not None:
        seed_everything(args.seed)
    try:
        return load_model(
            args.model or "zfnet", args.weights, args.size, resize=args.resize, mean=args.mean, std=args.std,
            device=device or args.device, classes=getattr(args, "classes", None),
        )  # fmt: skip
    except InputError as error:
        raise CommandError(str(error)) from error


def demo_note(args: argparse.Namespace, loaded: LoadedModel) -> None:
    """One line on stderr when the default bundled demo model is used (not under ``--quiet``)."""
    from zf_attr.cli._models import DEMO_NOTE

    if args.model is None and loaded.demo and not getattr(args, "quiet", False):
        print(f"zf-attr: note: {DEMO_NOTE}", file=sys.stderr, flush=True)


def check_layer(loaded: LoadedModel, layer: str | None, used_by: str | None = None) -> None:
    """Check ``--layer`` before any work: a typo fails at once, with the closest valid names.

    Args:
        loaded: the model of the run.
        layer: the value of ``--layer`` (``None``: not given, nothing to check).
        used_by: when ``--layer`` is given but no chosen method uses it, a warning naming the methods that would
            (e.g. ``"--method gradcam"``); ``None`` when the layer is used.

    Raises:
        CommandError: ``layer`` is not a module of the model (``--layer: ... did you mean [...]?``).
    """
    if layer is None:
        return
    from zf_attr.attr._layers import resolve_layer

    try:
        resolve_layer(loaded.model, layer)
    except ValueError as error:
        raise CommandError(f"--layer: {error}") from error
    if used_by is not None:
        warnings.warn(f"--layer {layer} is ignored: only {used_by} uses it", UserWarning, stacklevel=2)


def write_json(path: Path, data: Any) -> Path:
    """Write ``data`` as indented JSON (UTF-8, trailing newline) and return the path."""
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    return path


class Outputs:
    """The files a subcommand writes: each printed as it is finished; a self-contained HTML page at the end.

    Use :meth:`session`: the report page ``report.html`` is written on the way out, also when the command fails
    midway, so that what finished stays on disk and is browsable.
    """

    def __init__(self, out: Path, title: str) -> None:
        self.out = prepare_out(out)
        self.title = title
        self.files: list[Path] = []
        self.summary: dict[str, Any] = {}
        self.error: str | None = None

    def add(self, path: Path) -> Path:
        """Record a finished file and print its path."""
        self.files.append(path)
        print(path, flush=True)
        return path

    @contextmanager
    def session(self) -> Iterator[Outputs]:
        """Yield ``self``; write ``report.html`` afterwards, noting the error if the body failed."""
        from zf_attr.cli._report import write_report

        try:
            yield self
        except BaseException as error:
            self.error = f"{type(error).__name__}: {error}" if not isinstance(error, CommandError) else str(error)
            raise
        finally:
            page = write_report(self.out / "report.html", self.title, self.files, self.summary, error=self.error)
            print(page, flush=True)
