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
import json
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import zf_attr

__all__ = ["COMMANDS", "Command", "build_parser", "main"]

PROG = "zf-attr"

_WEIGHTS_NOTE = "random-init weights; the bundled trained ZFNet comes with a later release"

# summary.json key of each demo method -> its column title in the figures
_DEMO_COLUMNS = {
    "gradient": "gradient",
    "captum_deconvolution": "Captum\nDeconvolution",
    "zf_attr_deconvnet": "zf_attr\nDeconvnet",
    "zf_attr_guided_backprop": "zf_attr\nGuidedBackprop",
}


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


def _relative_difference(attribution: Any, reference: Any) -> float:
    """``||attribution - reference|| / ||reference||`` over the whole batch (0 when both are zero)."""
    denominator = float(reference.norm())
    numerator = float((attribution - reference).norm())
    if denominator == 0.0:
        return 0.0 if numerator == 0.0 else float("inf")
    return numerator / denominator


def _prepare_out(out: Path) -> Path:
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise CommandError(f"cannot create output folder '{out}': {error.strerror or error}") from error
    if not out.is_dir():
        raise CommandError(f"output path '{out}' exists and is not a folder")
    return out


def _demo_models(seed: int) -> dict[str, Callable[[], Any]]:
    import torch
    import torchvision

    def googlenet() -> Any:
        torch.manual_seed(seed)
        return torchvision.models.googlenet(weights=None, aux_logits=False, init_weights=True).eval()

    def mobilenet_v2() -> Any:
        torch.manual_seed(seed)
        return torchvision.models.mobilenet_v2(weights=None).eval()

    return {"googlenet": googlenet, "mobilenet_v2": mobilenet_v2}


def _demo_attributions(model: Any, images: Any, targets: list[int]) -> dict[str, Any]:
    """Attribute ``targets`` with every method of :data:`_DEMO_COLUMNS`, keyed like it."""
    from captum.attr import Deconvolution, Saliency

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", module=r"captum(\.|$)")  # hook and requires_grad notices
        return {
            "gradient": Saliency(model).attribute(images, target=targets, abs=False),
            "captum_deconvolution": Deconvolution(model).attribute(images, target=targets),
            "zf_attr_deconvnet": zf_attr.Deconvnet(model).attribute(images, target=targets),
            "zf_attr_guided_backprop": zf_attr.GuidedBackprop(model).attribute(images, target=targets),
        }


def _run_demo(args: argparse.Namespace) -> int:
    """Compare gradient, Captum Deconvolution and zf_attr on two random-init torchvision models."""
    import torch

    from zf_attr._demo_data import make_demo_images, normalize
    from zf_attr.viz import save_attribution_grid

    out = _prepare_out(args.out)
    pixels, shapes = make_demo_images(seed=args.seed)
    images = normalize(pixels)
    summary: dict[str, Any] = {
        "zf_attr_version": zf_attr.__version__,
        "seed": args.seed,
        "weights": _WEIGHTS_NOTE,
        "images": shapes,
        "relative_difference": "||A - G|| / ||G|| over the batch, G = plain gradient (Saliency, abs=False)",
        "models": {},
    }
    for name, build in _demo_models(args.seed).items():
        model = build()
        with zf_attr.record_switches(model) as trace, torch.no_grad():  # the backward rule is left unchanged
            targets = model(images).argmax(dim=1).tolist()
        attributions = _demo_attributions(model, images, targets)
        gradient = attributions["gradient"]
        differences = {
            f"{key}_vs_gradient": _relative_difference(value, gradient)
            for key, value in attributions.items()
            if key != "gradient"
        }
        figure = out / f"deconvnet_{name}.png"
        lines = [
            f"{name}: zf_attr saw {len(trace.rectifiers)} rectifier calls and {len(trace.pools)} max-pool calls",
            "relative difference to the gradient: "
            f"Captum Deconvolution {differences['captum_deconvolution_vs_gradient']:.1e}, "
            f"zf_attr Deconvnet {differences['zf_attr_deconvnet_vs_gradient']:.2f}",
        ]
        if not trace.pools:
            lines.append("no max-pool switches, so the Deconvnet map depends on the target class, not on the image")
        lines.append(f"({_WEIGHTS_NOTE})")
        save_attribution_grid(
            pixels,
            {_DEMO_COLUMNS[key]: value for key, value in attributions.items()},
            figure,
            title="\n".join(lines),
            row_labels=[f"{shape}, target {target}" for shape, target in zip(shapes, targets, strict=True)],
        )
        print(figure, flush=True)
        summary["models"][name] = {
            "figure": figure.name,
            "targets": targets,
            **differences,
            "rectifier_calls": len(trace.rectifiers),
            "pool_calls": len(trace.pools),
        }
    summary_path = out / "summary.json"
    summary_path.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    print(summary_path)
    if not args.quiet:
        print(
            "Captum's Deconvolution only hooks nn.ReLU modules, so on GoogLeNet (functional F.relu) and "
            "MobileNetV2 (ReLU6) it returns the plain gradient;\n"
            f"zf_attr intercepts every rectifier and max-pool call and gives the real deconvnet ({_WEIGHTS_NOTE})."
        )
    return 0


#: Every subcommand, by name; add an entry (and its two functions) to add a subcommand.
COMMANDS: dict[str, Command] = {
    "demo": Command(
        help="compare plain gradient, Captum Deconvolution and zf_attr on GoogLeNet and MobileNetV2 (offline)",
        configure=_configure_demo,
        run=_run_demo,
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
