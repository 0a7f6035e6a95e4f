"""The ``zf-attr`` command line.

Subcommands are registered in :data:`COMMANDS`: each has a function that adds its arguments to a parser and a
function that runs it and returns the exit code. Exit codes: 0 success; 1 runtime error (one line
``zf-attr: error: ...`` on stderr; files finished before the failure stay on disk, with ``report.html``), or no
input done; 2 bad arguments (argparse's usage message); 3 some inputs skipped (``explain --skip-errors``);
130 interrupted.

Example:
    >>> from zf_attr.cli import build_parser
    >>> sorted(build_parser().parse_args(["explain", "images/", "--method", "deconvnet", "gradcam"]).method)
    ['deconvnet', 'gradcam']
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Callable
from typing import Any, NamedTuple

import zf_attr
from zf_attr.cli._common import EXIT_ERROR, EXIT_INTERRUPTED, CommandError
from zf_attr.cli.atlas import configure_atlas, run_atlas
from zf_attr.cli.bench import configure_bench, run_bench
from zf_attr.cli.compare import configure_compare, run_compare
from zf_attr.cli.correspondence import configure_correspondence, run_correspondence
from zf_attr.cli.diagnostics import configure_diagnostics, run_diagnostics
from zf_attr.cli.explain import configure_explain, run_explain
from zf_attr.cli.invariance import configure_invariance, run_invariance
from zf_attr.cli.occlusion_study import configure_occlusion_study, run_occlusion_study
from zf_attr.cli.train import configure_demo, configure_train, run_demo, run_train

__all__ = ["COMMANDS", "Command", "CommandError", "build_parser", "main"]

PROG = "zf-attr"


class Command(NamedTuple):
    """One subcommand: its one-line help, how to add its arguments, and how to run it."""

    help: str
    configure: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


#: Every subcommand, by name; add an entry (and its two functions) to add a subcommand.
COMMANDS: dict[str, Command] = {
    "demo": Command(
        "figures of the bundled ZFNet on generated images, and zf_attr beside Captum (offline, < 1 min)",
        configure_demo,
        run_demo,
    ),
    "explain": Command(
        "attribution figures (deconvnet, guided, gradient, Grad-CAM, occlusion) for image files, folders or globs",
        configure_explain,
        run_explain,
    ),
    "atlas": Command(
        "the top-k feature atlas of a layer over a folder of images (Fig. 2): mining, projections, receptive fields",
        configure_atlas,
        run_atlas,
    ),
    "occlusion-study": Command(
        "the paper's four-panel occlusion study (Fig. 7) of one image: figure and JSON",
        configure_occlusion_study,
        run_occlusion_study,
    ),
    "invariance": Command(
        "feature distances and p(class) under translation, scale and rotation (Fig. 5): figure, JSON, CSV",
        configure_invariance,
        run_invariance,
    ),
    "correspondence": Command(
        "do occlusions of one object part change different images' features alike (Table 1): tables and figure",
        configure_correspondence,
        run_correspondence,
    ),
    "diagnostics": Command(
        "first-layer filters, their frequencies, dead maps and aliasing (Fig. 6): figure and JSON",
        configure_diagnostics,
        run_diagnostics,
    ),
    "compare": Command(
        "deconvnet, occlusion, Grad-CAM and baselines side by side: figure and metric tables (CSV, Markdown, LaTeX)",
        configure_compare,
        run_compare,
    ),
    "train": Command(
        "train a ZFNet with the paper's recipe on an ImageFolder tree or generated shapes (checkpoints, resume)",
        configure_train,
        run_train,
    ),
    "bench": Command(
        "time zf_attr against Captum (deconvnet, guided backprop, occlusion) on your model and device, equal outputs",
        configure_bench,
        run_bench,
    ),
}


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
        0 on success, 1 on a runtime error (reported on stderr), 130 when interrupted. Bad arguments exit with 2
        through argparse (``SystemExit``), as do ``--help`` and ``--version`` (with 0).

    """
    args = build_parser().parse_args(argv)
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _show_warning
            return int(args.run(args))
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except CommandError as error:
        message = str(error)
    except Exception as error:  # one line for the user instead of a traceback
        message = f"{type(error).__name__}: {error}"
    print(f"{PROG}: error: {' '.join(message.split())}", file=sys.stderr)
    return EXIT_ERROR
