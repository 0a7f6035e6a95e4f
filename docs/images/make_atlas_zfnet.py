"""Regenerate docs/images/atlas_zfnet.png: the top-9 atlas of four conv3 maps of the bundled ZFNet.

Mines every map of ``conv3`` over 1200 generated validation images (``ShapesDataset(seed=1)``), picks four maps
whose nine images mostly show one shape each (a different shape per map), projects their top 9 and saves the
figure, reduced to a 256-colour palette to keep the file small. About a minute on 2 CPU cores::

    python docs/images/make_atlas_zfnet.py
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from PIL import Image
from torch.utils.data import DataLoader

from zf_attr.analysis import mine_top_k, project_top_k, save_atlas
from zf_attr.models import zfnet
from zf_attr.models.shapes import ShapesDataset

OUT = Path(__file__).resolve().parent / "atlas_zfnet.png"


def main() -> None:
    """Mine, choose the channels, project, draw and shrink the PNG."""
    model = zfnet(weights="DEFAULT").eval()
    data = ShapesDataset(1200, seed=1)
    mined = mine_top_k(model, "conv3", DataLoader(data, batch_size=60), k=9)
    best: dict[str, tuple[float, int]] = {}
    for row, channel in enumerate(mined.channels.tolist()):
        shapes = Counter(data.classes[data[int(i)][1]] for i in mined.image_ids[row].tolist())
        shape, count = shapes.most_common(1)[0]
        score = count + float(mined.values[row, 0]) / 1000  # purity first, then strength
        if score > best.get(shape, (-1.0, -1))[0]:
            best[shape] = (score, channel)
    ranked = sorted(best.values(), reverse=True)[:4]
    channels = [channel for _, channel in ranked]
    atlas = project_top_k(model, mined, data, channels=channels)
    save_atlas(atlas, OUT, mean=data.MEAN, std=data.STD, dpi=90)
    with Image.open(OUT) as picture:
        picture.convert("RGB").quantize(256).save(OUT, optimize=True)
    print(f"channels {channels}: {OUT} ({OUT.stat().st_size // 1024} KB)")


if __name__ == "__main__":
    main()
