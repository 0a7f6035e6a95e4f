"""Progress of a long run: a tqdm bar on a terminal, one plain line every ~10 s or 5% in a log.

On a terminal the paths printed on stdout go through ``tqdm.write``, so the bar and the paths never interleave.
When stderr is not a terminal (piped to a log, a batch scheduler), a line such as
``zf-attr: 150/3000 images (5%), 2.4 images/s, ETA 0:19:47`` is printed every ``interval`` seconds or every 5%
of the work, whichever comes first.
"""

from __future__ import annotations

import datetime as dt
import sys
import time
from typing import Any, TextIO

__all__ = ["Progress"]


class Progress:
    """Counts finished items and reports them on stderr; prints result paths on stdout without clashing.

    Args:
        total: items to do.
        enabled: report progress at all (``False`` under ``--quiet`` and on ranks other than 0).
        unit: what is counted, for the messages.
        interval: seconds between two log lines when stderr is not a terminal.
        stream: where progress goes (default: ``sys.stderr``).

    Example:
        >>> import io
        >>> log = io.StringIO()
        >>> progress = Progress(20, unit="images", stream=log)
        >>> for _ in range(2):
        ...     progress.update()
        >>> progress.close()
        >>> log.getvalue().splitlines()[0].split(",")[0]
        'zf-attr: 1/20 images (5%)'
    """

    def __init__(
        self,
        total: int,
        *,
        enabled: bool = True,
        unit: str = "images",
        interval: float = 10.0,
        stream: TextIO | None = None,
    ) -> None:
        self.total, self.unit, self.interval = total, unit, interval
        self.stream = stream if stream is not None else sys.stderr
        self.done = 0
        self._start = self._last_time = time.monotonic()
        self._last_step = 0
        self._bar: Any = None
        self._log = enabled and total > 0 and not _isatty(self.stream)
        if enabled and total > 0 and _isatty(self.stream):
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total, unit=unit.rstrip("s") or unit, desc=unit, file=self.stream, leave=False)

    def print(self, line: str) -> None:
        """Print ``line`` on stdout (a finished file's path), above the bar on a terminal."""
        if self._bar is not None:
            self._bar.write(line, file=sys.stdout)
            sys.stdout.flush()
        else:
            print(line, flush=True)

    def warn(self, line: str) -> None:
        """Print ``line`` on stderr (a warning or a skipped input), above the bar on a terminal."""
        if self._bar is not None:
            self._bar.write(line, file=self.stream)
        else:
            print(line, file=self.stream, flush=True)

    def update(self, count: int = 1) -> None:
        """Count ``count`` more items done."""
        self.done += count
        if self._bar is not None:
            self._bar.update(count)
            return
        if not self._log:
            return
        now = time.monotonic()
        step = self.done * 20 // self.total  # 5% steps
        if step > self._last_step or now - self._last_time >= self.interval or self.done == self.total:
            self._last_step, self._last_time = step, now
            print(self.line(now), file=self.stream, flush=True)

    def line(self, now: float | None = None) -> str:
        """``zf-attr: done/total unit (percent), rate, ETA``."""
        elapsed = (now if now is not None else time.monotonic()) - self._start
        rate = self.done / elapsed if elapsed > 0 else 0.0
        left = (self.total - self.done) / rate if rate > 0 else None
        eta = str(dt.timedelta(seconds=round(left))) if left is not None else "?"
        percent = 100 * self.done // max(self.total, 1)
        return f"zf-attr: {self.done}/{self.total} {self.unit} ({percent}%), {rate:.3g} {self.unit}/s, ETA {eta}"

    def close(self) -> None:
        """Remove the bar."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
