"""Regenerate ``docs/images/feature_evolution_zfnet.png``: ``python -m zf_attr.analysis.evolution --out PATH``."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from zf_attr.analysis.evolution.tracker import FeatureEvolution


def main(argv: Sequence[str] | None = None) -> int:
    """Regenerate ``docs/images/feature_evolution_zfnet.png``: train the bundled ZFNet briefly and record it."""
    import argparse

    from zf_attr.models.shapes import ShapesDataset
    from zf_attr.models.shipped import materialize
    from zf_attr.models.training import TrainConfig, train
    from zf_attr.models.zfnet import VARIANTS, ZFNet

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--out", type=Path, default=Path("docs/images/feature_evolution_zfnet.png"))
    parser.add_argument("--layer", default="conv2")
    parser.add_argument("--maps", type=int, default=6, help="maps drawn, chosen at random (default 6)")
    parser.add_argument("--train-size", type=int, default=6000)
    parser.add_argument("--epochs", type=int, nargs="+", default=[0, 1, 2, 4, 7], help="epochs drawn (0: init)")
    parser.add_argument("--probes", type=int, default=120, help="probe images (ShapesDataset seed 4)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dpi", type=int, default=80)
    parser.add_argument("--batch-size", type=int, default=64, help="SGD batch (default 64)")
    args = parser.parse_args(argv)
    torch.manual_seed(args.seed)
    config = VARIANTS["shapes"]
    train_data = materialize(ShapesDataset(args.train_size, seed=0, image_size=config.input_size))
    val_data = materialize(ShapesDataset(300, seed=1, image_size=config.input_size))
    probes = materialize(ShapesDataset(args.probes, seed=4, image_size=config.input_size)).tensors[0]
    model = ZFNet(len(ShapesDataset.classes), config, dropout=0.0)  # the shipped weights' recipe
    model.reset_parameters("kaiming")
    evolution = FeatureEvolution(args.layer, probes, epochs=args.epochs)  # every map; a random few are drawn
    evolution(0, model)
    recipe = TrainConfig(epochs=max(args.epochs), batch_size=args.batch_size, plateau_patience=10, seed=args.seed)
    result = train(model, train_data, val_data, recipe, callbacks=[evolution])
    maps = len(evolution.snapshots[0].channels)
    channels = sorted(torch.randperm(maps, generator=torch.Generator().manual_seed(args.seed))[: args.maps].tolist())
    by_epoch = {record["epoch"]: record["val_error"] for record in result.history}
    errors = ", ".join(f"{by_epoch[e]:.2f} (ep. {e})" for e in args.epochs if e in by_epoch)
    title = (
        f"Feature evolution during training: ZFNet ('shapes' variant), layer {args.layer}, {args.maps} random maps.\n"
        f"Each tile: the map's strongest activation a over {args.probes} probe images (img = which one), projected\n"
        "and cropped to its receptive field; grey = 0, each tile scaled by its own max |projection|.\n"
        f"Validation error: {errors}"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    evolution.save(args.out, channels=channels, title=title, dpi=args.dpi)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
