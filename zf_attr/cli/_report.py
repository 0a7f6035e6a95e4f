"""One self-contained HTML page per command run: every figure embedded, the summary, the other files listed."""

from __future__ import annotations

import base64
import datetime as dt
import html
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import zf_attr

__all__ = ["write_report"]

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222; padding: 0 1em; }
h1 { font-size: 1.5em; } h2 { font-size: 1.1em; margin-top: 2em; border-bottom: 1px solid #ddd; }
figure { margin: 1.5em 0; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { font-family: monospace; color: #555; margin-top: .3em; }
pre { background: #f6f8fa; padding: 1em; overflow-x: auto; font-size: .85em; max-height: 30em; }
.error { background: #fdecea; border: 1px solid #f5c2c0; padding: .8em 1em; }
.meta { color: #666; font-size: .9em; }
"""


def write_report(
    path: Path, title: str, files: Sequence[Path], summary: dict[str, Any], *, error: str | None = None
) -> Path:
    """Write ``path``: the PNG ``files`` embedded (base64), the others linked, ``summary`` as JSON, any error.

    Args:
        path: the page to write (``.html``).
        title: heading of the page.
        files: files the run wrote, in order; PNGs are embedded, the rest linked relative to the page.
        summary: JSON-serialisable numbers shown on the page.
        error: the one-line error when the run stopped midway (shown in a banner).

    Returns:
        ``path``.

    Example:
        >>> import tempfile, pathlib
        >>> folder = pathlib.Path(tempfile.mkdtemp())
        >>> page = write_report(folder / "report.html", "demo", [], {"images": 0})
        >>> "<h1>demo</h1>" in page.read_text()
        True
    """
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        f'<p class="meta">zf_attr {zf_attr.__version__} · {stamp}</p>',
    ]
    if error is not None:
        parts.append(f'<p class="error"><b>The run stopped early:</b> {html.escape(error)}<br>'
                     "Everything below finished before that.</p>")  # fmt: skip
    figures = [file for file in files if file.suffix.lower() == ".png" and file.is_file()]
    others = [file for file in files if file not in figures and file.resolve() != path.resolve()]
    if figures:
        parts.append("<h2>Figures</h2>")
    for figure in figures:
        data = base64.b64encode(figure.read_bytes()).decode("ascii")
        parts.append(
            f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(figure.name)}">'
            f"<figcaption>{html.escape(figure.name)}</figcaption></figure>"
        )
    if summary:
        parts.append("<h2>Summary</h2>")
        parts.append(f"<pre>{html.escape(json.dumps(summary, indent=2, default=str))}</pre>")
    if others:
        parts.append("<h2>Other files</h2><ul>")
        for other in others:
            link = _relative(other, path.parent)
            parts.append(f'<li><a href="{html.escape(link)}">{html.escape(link)}</a></li>')
        parts.append("</ul>")
    parts.append("</body></html>")
    path.write_text("\n".join(parts) + "\n", encoding="utf-8")
    return path


def _relative(file: Path, folder: Path) -> str:
    try:
        return file.resolve().relative_to(folder.resolve()).as_posix()
    except ValueError:
        return file.resolve().as_uri()
