"""``zf-attr atlas``: the top-k feature atlas of a layer over a folder of images (the paper's Fig. 2).

Mines the ``k`` strongest activations of every chosen feature map of ``--layer`` over the images (memory bounded
by k × channels; ``mined.pt`` checkpointed as it goes, ``--resume`` continues an interrupted run), then projects
each to pixel space with the deconvnet and crops its receptive field. Writes ``atlas.png`` (projections beside
image patches, per channel), ``mined.pt`` (:class:`~zf_attr.analysis.TopKActivations`), ``atlas.json`` (per
channel: values, image files, locations, boxes), ``atlas.npz`` and ``report.html``. Under ``torchrun`` the
processes mine disjoint shards and rank 0 writes the merged result.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from zf_attr.cli._common import (
    CommandError,
    Outputs,
    add_model_arguments,
    add_output_arguments,
    check_layer,
    demo_note,
    open_model,
    prepare_out,
    write_json,
)
from zf_attr.cli._distributed import World, join_world
from zf_attr.cli._inputs import InputError, LoadedModel, find_images, read_image

__all__ = ["configure_atlas", "parse_channels", "run_atlas"]

_SHOWN_BY_DEFAULT = 16


def parse_channels(specs: list[str] | None) -> list[int] | None:
    """``["0-3", "7"]`` → ``[0, 1, 2, 3, 7]`` (ranges inclusive); ``None`` stays ``None``.

    Example:
        >>> parse_channels(["0-3", "7", "5"])
        [0, 1, 2, 3, 7, 5]
    """
    if specs is None:
        return None
    channels: list[int] = []
    for spec in specs:
        for part in spec.split(","):
            first, dash, last = part.strip().partition("-")
            try:
                channels += list(range(int(first), int(last) + 1)) if dash else [int(first)]
            except ValueError as error:
                raise CommandError(f"--channels {spec!r}: use channel numbers and ranges like 0-15") from error
    return list(dict.fromkeys(channels))


class _ImageFiles(Dataset):
    """Image files read and preprocessed on demand (so mining a folder never holds it in memory)."""

    def __init__(self, paths: list[Path], loaded: LoadedModel) -> None:
        self.paths, self.loaded = paths, loaded

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> Tensor:
        return read_image(self.paths[index], self.loaded)[1]


def configure_atlas(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``zf-attr atlas``."""
    parser.add_argument("images", nargs="*", help="image files, folders or globs (or use --shapes)")
    parser.add_argument("--shapes", type=int, default=None, metavar="N", help="N generated images (bundled ZFNet)")
    parser.add_argument("--k", type=int, default=9, help="activations kept per feature map (default: 9)")
    parser.add_argument("--channels", nargs="+", default=None, metavar="C",
                        help=f"feature maps to mine and draw, e.g. 0-15 40 (default: mine all, draw the first "
                        f"{_SHOWN_BY_DEFAULT})")  # fmt: skip
    parser.add_argument("--batch-size", type=int, default=32, help="images per forward pass (default: 32)")
    parser.add_argument("--workers", type=int, default=0, help="image-reading processes (default: 0)")
    parser.add_argument("--variant", choices=("gradient", "strict"), default="gradient", help="deconvnet variant")
    parser.add_argument(
        "--all-locations",
        action="store_true",
        help="keep the k strongest locations wherever they are (default: one per image, as the paper)",
    )
    parser.add_argument("--resume", action="store_true", help="continue from OUT/mined.pt of an interrupted run")
    add_model_arguments(
        parser, layer_help="the layer, e.g. layer3 or features.28 (default: the last conv block)", seed=True
    )
    add_output_arguments(parser, "zf-attr-atlas")


def _data(args: argparse.Namespace, loaded: LoadedModel) -> tuple[Any, list[str], Any]:
    if (args.shapes is None) == (not args.images):
        raise CommandError("give either image files (IMAGES) or --shapes N, not both or neither")
    if args.shapes is not None:
        from zf_attr.models.shapes import ShapesDataset

        if args.shapes < 1:
            raise CommandError(f"--shapes must be at least 1, got {args.shapes}")
        data = ShapesDataset(args.shapes, seed=2, image_size=loaded.size)
        return _Images(data), [f"shapes[{i}]" for i in range(args.shapes)], data
    try:
        paths = find_images(args.images)
    except InputError as error:
        raise CommandError(str(error)) from error
    files = _ImageFiles(paths, loaded)
    return files, [str(path) for path in paths], files


class _Images(Dataset):
    """The images of an ``(image, label)`` data set."""

    def __init__(self, data: Any) -> None:
        self.data = data

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int) -> Tensor:
        return self.data[index][0]


def run_atlas(args: argparse.Namespace) -> int:
    """Mine, project and draw the atlas; write the figure, the mined result, the numbers and the report.

    Under ``torchrun`` every process mines its share of the images (``mined.rank<r>-of-<n>.pt`` checkpoints) and
    gets the merged result; rank 0 alone projects, draws and writes the outputs.
    """
    if args.k < 1 or args.batch_size < 1 or args.workers < 0:
        raise CommandError("--k and --batch-size must be at least 1, --workers at least 0")
    world = join_world(args.device)
    try:
        return _run_atlas(args, world)
    finally:
        world.close()


def _run_atlas(args: argparse.Namespace, world: World) -> int:
    from zf_attr.analysis import mine_top_k, project_top_k, save_atlas
    from zf_attr.attr._layers import default_feature_layer

    channels = parse_channels(args.channels)
    loaded = open_model(args, device=world.device(args.device))
    check_layer(loaded, args.layer)
    images, names, _ = _data(args, loaded)
    layer = args.layer
    if layer is None:
        layer = default_feature_layer(loaded.model, (images[0][None].to(loaded.device),))
    out = prepare_out(args.out)
    checkpoint = out / "mined.pt"
    shard_file = out / f"mined.rank{world.rank}-of-{world.size}.pt" if world.distributed else checkpoint
    if args.resume and not shard_file.is_file():
        raise CommandError(f"--resume: no {shard_file} to continue from (run without --resume first)")
    loader = torch.utils.data.DataLoader(images, batch_size=args.batch_size, num_workers=args.workers)
    progress = not args.quiet and sys.stderr.isatty() and world.rank == 0

    def mine() -> Any:
        try:
            return mine_top_k(
                loaded.model, layer, loader, k=args.k, channels=channels, one_per_image=not args.all_locations,
                checkpoint=checkpoint, checkpoint_every=10, resume_from=checkpoint if args.resume else None,
                show_progress=progress, distributed=world.distributed,
            )  # fmt: skip
        except InputError as error:
            raise CommandError(str(error)) from error
        except ValueError as error:
            raise CommandError(f"--layer/--channels: {error}" if "layer" in str(error) else str(error)) from error

    if world.rank != 0:
        mine()
        return 0
    demo_note(args, loaded)
    outputs = Outputs(out, f"zf-attr atlas: {layer} of {loaded.note}, top {args.k} over {len(names)} images")
    with outputs.session():
        mined = mine()
        if world.distributed:
            mined.save(checkpoint)  # the merged result, as a single process would have written it
        outputs.add(checkpoint)
        shown = [int(c) for c in mined.channels.tolist()][: len(channels) if channels else _SHOWN_BY_DEFAULT]
        atlas = project_top_k(loaded.model, mined, images, shown, variant=args.variant)
        outputs.add(save_atlas(atlas, outputs.out / "atlas.png", mean=loaded.mean, std=loaded.std))
        np.savez_compressed(
            outputs.out / "atlas.npz", channels=atlas.channels.numpy(), values=atlas.values.numpy(),
            image_ids=atlas.image_ids.numpy(), locations=atlas.locations.numpy(), boxes=atlas.boxes.numpy(),
        )  # fmt: skip
        outputs.add(outputs.out / "atlas.npz")
        outputs.summary = _summary(atlas, names, loaded, len(names), args.k)
        outputs.add(write_json(outputs.out / "atlas.json", outputs.summary))
    if not args.quiet:
        print(f"layer {layer}: top {args.k} of {len(mined.channels)} feature maps over {len(names)} images; "
              f"{len(shown)} drawn in atlas.png")  # fmt: skip
    return 0


def _summary(atlas: Any, names: list[str], loaded: LoadedModel, count: int, k: int) -> dict[str, Any]:
    """Per drawn channel, its top activations with the image each came from, location and receptive-field box."""
    channels = []
    for row, channel in enumerate(atlas.channels.tolist()):
        entries = [
            {
                "value": round(float(atlas.values[row, slot]), 6),
                "image": names[image_id],
                "image_id": image_id,
                "location": atlas.locations[row, slot].tolist(),
                "box": atlas.boxes[row, slot].tolist(),
            }
            for slot, image_id in enumerate(atlas.image_ids[row].tolist())
            if image_id >= 0
        ]
        channels.append({"channel": channel, "top": entries})
    return {"model": loaded.note, "layer": atlas.layer, "k": k, "images": count, "channels": channels}
