"""Shared fixtures and assertions for the zf_attr test suite."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from torch import nn

# Subprocesses (the CLI, torchrun's ranks) import this tree's zf_attr, not a copy installed earlier.
_SOURCE = str(Path(__file__).resolve().parents[1])
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [_SOURCE, os.environ.get("PYTHONPATH")]))


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def hooks_left(model: nn.Module) -> dict[str, int]:
    """Every hook still registered on any module of ``model``, by module name."""
    left = {}
    for name, module in model.named_modules():
        count = sum(
            len(getattr(module, attribute, {}))
            for attribute in (
                "_forward_hooks",
                "_forward_pre_hooks",
                "_backward_hooks",
                "_backward_pre_hooks",
                "_forward_hooks_always_called",
                "_forward_hooks_with_kwargs",
                "_forward_pre_hooks_with_kwargs",
            )
        )
        if count:
            left[name or "<model>"] = count
    return left


def assert_clean(model: nn.Module) -> None:
    """No hook on any module and no torch function mode left active."""
    assert hooks_left(model) == {}
    assert torch._C._len_torch_function_stack() == 0


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}


def assert_bitwise_equal(model: nn.Module, before: dict[str, torch.Tensor]) -> None:
    after = model.state_dict()
    assert after.keys() == before.keys()
    for name, tensor in before.items():
        assert torch.equal(after[name], tensor), f"{name} changed"


@contextmanager
def quiet() -> Iterator[None]:
    """Silence third-party warnings (Captum warns on every call)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    scale = expected.abs().max().clamp_min(torch.finfo(expected.dtype).tiny)
    return float((actual - expected).abs().max() / scale)


def zf_attr_cli(*args: str, timeout: float = 600, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``zf-attr ARGS`` as a subprocess (``python -m zf_attr.cli``, in ``cwd``) and return its result."""
    command = [sys.executable, "-m", "zf_attr.cli", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False, cwd=cwd)


def zf_attr_main(*args: str) -> subprocess.CompletedProcess[str]:
    """Run ``zf-attr ARGS`` in this process (``zf_attr.cli.main``), as :func:`zf_attr_cli` reports a subprocess.

    For the error paths: the same code and messages without a fresh interpreter's import of torch (about 4 s). The
    global random state is restored afterwards (``--seed`` seeds torch).
    """
    import io
    from contextlib import redirect_stderr, redirect_stdout

    from zf_attr.cli import main

    stdout, stderr = io.StringIO(), io.StringIO()
    with torch.random.fork_rng(devices=[]), redirect_stdout(stdout), redirect_stderr(stderr):
        try:
            code = main(list(args))
        except SystemExit as exit_:  # argparse: usage errors, --help
            code = exit_.code if isinstance(exit_.code, int) else 1
    return subprocess.CompletedProcess(["zf-attr", *args], code, stdout.getvalue(), stderr.getvalue())


@pytest.fixture(scope="session")
def shape_image_files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with ``shape0..2.png`` (generated 112 px shapes, seed 9), their masks in ``masks/`` and a text file."""
    from torchvision.transforms.functional import to_pil_image

    from zf_attr.models.shapes import ShapesDataset

    folder = tmp_path_factory.mktemp("images")
    (folder / "masks").mkdir()
    data = ShapesDataset(3, seed=9)
    for index in range(3):
        sample = data.sample(index)
        to_pil_image(sample.image).save(folder / f"shape{index}.png")
        to_pil_image(sample.mask.to(torch.uint8) * 255).save(folder / "masks" / f"shape{index}.png")
    (folder / "notes.txt").write_text("not an image, and not picked up from the folder")
    return folder
