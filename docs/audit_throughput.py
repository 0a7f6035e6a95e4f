"""Images per second of ``zf-attr explain --method deconvnet`` against a plain loop over Captum's Deconvolution.

The loop is what an auditing script would otherwise do: for each file, read and preprocess it (torchvision's
preset), run Captum's ``Deconvolution`` on that one image, save the map. ``zf-attr explain`` does the same work
plus a thumbnail and a manifest line per image, with images decoded ahead by DataLoader workers and a batch of
images per backward pass. Both run on the same random-init model and the same generated images, in one
process, alternately (``--repeats``), and the fastest round of each is kept.

Run from the repository root: ``python docs/audit_throughput.py [--model resnet18] [--images 32] [--device cpu]``;
it prints a Markdown table (quoted in ``docs/auditing.md``).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import shutil
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import torchvision
from PIL import Image


def plain_loop(files: list[Path], model: torch.nn.Module, out: Path, device: torch.device) -> None:
    """The baseline: one image at a time through Captum's Deconvolution."""
    from captum.attr import Deconvolution

    preset = torchvision.models.ResNet18_Weights.IMAGENET1K_V1.transforms()
    method = Deconvolution(model)
    out.mkdir(parents=True, exist_ok=True)
    for file in files:
        with Image.open(file) as picture:
            batch = preset(picture.convert("RGB"))[None].to(device)
        with torch.no_grad():
            target = int(model(batch).argmax())
        attribution = method.attribute(batch, target=target)[0].detach().cpu().numpy()
        np.savez_compressed(out / f"{file.stem}.npz", deconvnet=attribution)


def explain(folder: Path, model_name: str, out: Path, device: str, batch: int, workers: int) -> None:
    """``zf-attr explain`` in this process."""
    from zf_attr.cli import main

    with contextlib.redirect_stdout(io.StringIO()):
        code = main(["explain", str(folder), "--model", model_name, "--method", "deconvnet", "--no-figures",
                     "--batch-size", str(batch), "--workers", str(workers), "--device", device, "--out", str(out),
                     "--quiet"])  # fmt: skip
    if code != 0:
        raise RuntimeError(f"zf-attr explain exited with {code}")


def main() -> None:
    """Time both, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp())
    rng = np.random.default_rng(0)
    files = []
    for index in range(args.images):
        files.append(root / "images" / f"{index:04d}.jpg")
        files[-1].parent.mkdir(exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (300, 400, 3), dtype=np.uint8)).save(files[-1], quality=90)
    torch.manual_seed(0)
    device = torch.device(args.device)
    model = torchvision.models.get_model(args.model, weights=None).eval().to(device)
    best = {"captum loop": float("inf"), "zf-attr explain": float("inf")}
    warnings.simplefilter("ignore")
    for round_ in range(args.repeats):
        for name in best:
            out = root / f"out-{name.split()[0]}-{round_}"
            start = time.perf_counter()
            if name == "captum loop":
                plain_loop(files, model, out, device)
            else:
                explain(root / "images", args.model, out, args.device, args.batch_size, args.workers)
            best[name] = min(best[name], time.perf_counter() - start)
            shutil.rmtree(out)
    shutil.rmtree(root)
    print(f"{args.model}, {args.images} images 400x300 -> 224, {args.device}, torch {torch.__version__}\n")
    print("| run | seconds | images/s |\n| --- | --- | --- |")
    for name, seconds in best.items():
        print(f"| {name} | {seconds:.1f} | {args.images / seconds:.2f} |")


if __name__ == "__main__":
    main()
