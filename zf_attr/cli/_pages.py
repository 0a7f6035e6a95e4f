"""A light HTML report for runs of any size: small thumbnails, one page per ``per_page`` images, class names.

``report.html`` is the index: the run's numbers, the failures, and links to ``report/page-0001.html``, ...; each
page shows its images as thumbnails (``report/thumbs/<key>.jpg``: the image beside each method's map, a few
kB each, written as each image finishes) captioned with the file, the predicted and explained class names, and
linking to the full figure and arrays. Pages only reference files, so the report stays light at 10^6 images.
"""

from __future__ import annotations

import datetime as dt
import html
import json
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np
from torch import Tensor

import zf_attr
from zf_attr.cli._runlog import atomic_write

__all__ = ["save_thumbnail", "thumbnail_path", "write_paged_report"]

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1300px; color: #222; padding: 0 1em; }
h1 { font-size: 1.4em; } h2 { font-size: 1.1em; margin-top: 1.5em; border-bottom: 1px solid #ddd; }
.grid { display: flex; flex-wrap: wrap; gap: 12px; }
.card { width: 300px; font-size: .8em; } .card img { max-width: 300px; border: 1px solid #eee; }
.card .file { font-family: monospace; word-break: break-all; color: #555; }
.error { background: #fdecea; border: 1px solid #f5c2c0; padding: .8em 1em; }
.meta { color: #666; font-size: .9em; } nav a { margin-right: .6em; }
table { border-collapse: collapse; font-size: .85em; } td, th { border: 1px solid #ddd; padding: .2em .5em; }
"""

_THUMB = 96
_FAILURES_SHOWN = 1000
#: black → purple → orange → pale yellow, close to matplotlib's ``inferno``.
_RAMP = np.array([[0, 0, 4], [87, 16, 110], [188, 55, 84], [249, 142, 9], [252, 255, 164]], dtype=np.float64)


def thumbnail_path(out: Path, key: str) -> Path:
    """Where the thumbnail of the input ``key`` goes."""
    return out / "report" / "thumbs" / f"{key}.jpg"


def _colour(heat: np.ndarray) -> np.ndarray:
    position = np.clip(heat, 0.0, 1.0) * (len(_RAMP) - 1)
    low = np.floor(position).astype(int).clip(0, len(_RAMP) - 2)
    fraction = (position - low)[..., None]
    return (_RAMP[low] * (1 - fraction) + _RAMP[low + 1] * fraction).astype(np.uint8)


def save_thumbnail(path: Path, pixels: Tensor, maps: Mapping[str, Tensor]) -> Path:
    """The image (``(3, H, W)`` in [0, 1]) beside each map's magnitude, ``96`` px high, as a JPEG, atomically."""
    from PIL import Image

    from zf_attr.viz import attribution_to_image

    panels = [np.asarray(pixels.permute(1, 2, 0).clamp(0, 1).numpy() * 255, dtype=np.uint8)]
    panels += [_colour(attribution_to_image(value.float())) for value in maps.values()]
    tiles = [Image.fromarray(panel).resize((_THUMB, _THUMB), Image.Resampling.BILINEAR) for panel in panels]
    strip = Image.new("RGB", (_THUMB * len(tiles) + 2 * (len(tiles) - 1), _THUMB), (255, 255, 255))
    for index, tile in enumerate(tiles):
        strip.paste(tile, (index * (_THUMB + 2), 0))
    return atomic_write(path, lambda tmp: strip.save(tmp, format="JPEG", quality=85))


def _page_name(number: int) -> str:
    return f"report/page-{number:04d}.html"


def _head(title: str) -> list[str]:
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        f'<p class="meta">zf_attr {zf_attr.__version__} · {stamp}</p>',
    ]


def _chunks(records: Iterator[dict[str, Any]], size: int) -> Iterator[list[dict[str, Any]]]:
    chunk: list[dict[str, Any]] = []
    for record in records:
        chunk.append(record)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _write_page(out: Path, title: str, number: int, count: int, records: Sequence[Mapping[str, Any]]) -> None:
    links = " ".join(
        f'<a href="page-{other:04d}.html">{label}</a>'
        for other, label in ((number - 1, "previous"), (number + 1, "next"))
        if 1 <= other <= count
    )
    parts = [*_head(title), f'<nav><a href="../report.html">index</a> {links}</nav>', '<div class="grid">']
    parts += [_card(record, "../") for record in records]
    text = "\n".join([*parts, "</div></body></html>"]) + "\n"
    atomic_write(out / _page_name(number), lambda tmp: tmp.write_text(text, encoding="utf-8"))


def _card(record: Mapping[str, Any], prefix: str) -> str:
    thumb = prefix + quote(f"report/thumbs/{record['key']}.jpg")
    target = prefix + quote(str(record.get("figure") or record.get("arrays")))
    caption = f"predicted <b>{html.escape(str(record.get('predicted')))}</b>"
    if record.get("target") != record.get("predicted"):
        caption += f", explained <b>{html.escape(str(record.get('target')))}</b>"
    if "target_probability" in record:
        caption += f" (p={record['target_probability']:.2f})"
    return (
        f'<div class="card"><a href="{html.escape(target)}"><img loading="lazy" '
        f'src="{html.escape(thumb)}" alt="{html.escape(record["key"])}"></a><br>'
        f'<span class="file">{html.escape(str(record.get("file")))}</span><br>{caption}</div>'
    )


def write_paged_report(
    out: Path,
    title: str,
    summary_path: Path,
    header: Mapping[str, Any],
    *,
    per_page: int = 100,
    methods: Sequence[str] = (),
) -> Path:
    """Write ``out/report.html`` and ``out/report/page-*.html`` from ``summary.json``, streaming its records.

    Args:
        out: the run's output folder.
        title: heading of the pages.
        summary_path: the ``summary.json`` written by :func:`zf_attr.cli._runlog.write_summary`.
        header: the run's numbers: ``model``, ``total``, ``done``, ``failed``, ``missing`` and any ``error``.
        per_page: images per page; a run with at most that many has them on the index itself.
        methods: column names of the thumbnails, after the image.

    Returns:
        The index page.
    """
    index_parts = _head(title)
    if header.get("error"):
        index_parts.append(f'<p class="error"><b>The run stopped early:</b> {html.escape(str(header["error"]))}</p>')
    counts = ", ".join(f"{name} {header.get(name, 0)}" for name in ("total", "done", "failed", "missing"))
    index_parts.append(f"<p>{html.escape(str(header.get('model', '')))}: {counts}. "
                       '<a href="summary.json">summary.json</a></p>')  # fmt: skip
    if methods:
        index_parts.append(f"<p class='meta'>Thumbnails: image, {html.escape(', '.join(methods))}.</p>")
    done = int(header.get("done", 0))
    count = max(1, -(-done // per_page))
    chunks = _chunks(_stream(summary_path, "images"), per_page)
    if count == 1:
        index_parts += ['<div class="grid">', *(_card(r, "") for chunk in chunks for r in chunk), "</div>"]
    else:
        index_parts.append("<h2>Pages</h2><nav>")
        for number, chunk in enumerate(chunks, 1):
            _write_page(out, f"{title}: page {number} of {count}", number, count, chunk)
            index_parts.append(f'<a href="{_page_name(number)}">{number}</a> ({html.escape(chunk[0]["key"])} …)')
        index_parts.append("</nav>")
    if header.get("failed"):
        index_parts.append(f"<h2>Failures ({header['failed']})</h2><table><tr><th>file</th><th>error</th></tr>")
        for number, failure in enumerate(_stream(summary_path, "failures")):
            if number == _FAILURES_SHOWN:
                index_parts.append("<tr><td colspan=2>… the others are in summary.json</td></tr>")
                break
            index_parts.append(
                f"<tr><td>{html.escape(str(failure['file']))}</td><td>{html.escape(str(failure['error']))}</td></tr>"
            )
        index_parts.append("</table>")
    index_parts.append("</body></html>")
    text = "\n".join(index_parts) + "\n"
    return atomic_write(out / "report.html", lambda tmp: tmp.write_text(text, encoding="utf-8"))


def _stream(path: Path, section: str) -> Iterator[dict[str, Any]]:
    """The records of one list of a summary written by ``write_summary`` (one record a line), streaming."""
    inside = False
    with path.open(encoding="utf-8") as file:
        for line in file:
            stripped = line.strip().rstrip(",")
            if stripped.startswith(f'"{section}": ['):
                inside = True
            elif inside and stripped.startswith("{"):
                yield json.loads(stripped)
            elif inside:
                return
