"""What a long run writes so that nothing is lost: atomic files, a line-per-image manifest, a summary rebuilt from it.

Every output file is written to a temporary name beside it and renamed into place (:func:`atomic_write`), so a
file that exists is complete. After an image's files are in place, one JSON line describing it is appended to
the manifest (``manifest.jsonl``; rank ``r`` of a distributed run appends to ``manifest.rank<r>.jsonl``).
``summary.json`` is rebuilt from the manifests, streaming, in input order (:func:`write_summary`): memory stays
flat however many images a run has. ``--resume`` skips the inputs whose manifest line says done and whose files
are all present (:func:`finished_keys`); ``run.json`` records the settings, so a resumed run cannot mix them.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

import numpy as np

__all__ = [
    "Manifest",
    "atomic_write",
    "check_run_settings",
    "finished_keys",
    "read_records",
    "remove_temporaries",
    "save_arrays",
    "write_json_atomic",
    "write_summary",
]

MANIFEST_GLOB = "manifest*.jsonl"


def atomic_write(path: Path, write: Callable[[Path], Any]) -> Path:
    """Call ``write(temporary)`` with a temporary path beside ``path`` (same suffix), then rename it to ``path``.

    Example:
        >>> import tempfile
        >>> target = Path(tempfile.mkdtemp()) / "deep" / "a.txt"
        >>> atomic_write(target, lambda tmp: tmp.write_text("done")).read_text()
        'done'
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.stem}.tmp{os.getpid()}{path.suffix}")
    try:
        write(temporary)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return path


def remove_temporaries(out: Path) -> int:
    """Delete the temporary files a killed run left in ``out`` (call before any process writes); how many."""
    stale = [path for path in out.rglob(".*.tmp*") if path.is_file()]
    for path in stale:
        path.unlink(missing_ok=True)
    return len(stale)


def write_json_atomic(path: Path, data: Any) -> Path:
    """Write ``data`` as indented JSON (UTF-8, trailing newline), atomically."""
    return atomic_write(path, lambda tmp: tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8"))


def save_arrays(path: Path, arrays: Mapping[str, np.ndarray]) -> Path:
    """One image's arrays (one per method) as a compressed ``.npz``, atomically."""

    def write(temporary: Path) -> None:
        with temporary.open("wb") as file:
            np.savez_compressed(file, **arrays)

    return atomic_write(path, write)


class Manifest:
    """The manifest of one process: one JSON line per finished (or failed) input, appended and flushed.

    Example:
        >>> import tempfile
        >>> out = Path(tempfile.mkdtemp())
        >>> with Manifest(out) as manifest:
        ...     manifest.append({"key": "a", "status": "done", "outputs": []})
        >>> [record["key"] for _, _, record in read_records(out)]
        ['a']
    """

    def __init__(self, out: Path, rank: int = 0) -> None:
        self.path = out / ("manifest.jsonl" if rank == 0 else f"manifest.rank{rank}.jsonl")
        self._file: TextIO | None = None

    def append(self, record: Mapping[str, Any]) -> None:
        """Append ``record`` as one line and flush it to the operating system."""
        if self._file is None:
            needs_newline = self.path.is_file() and self.path.stat().st_size > 0 and not _ends_with_newline(self.path)
            self._file = self.path.open("a", encoding="utf-8")
            if needs_newline:  # a line cut short by a killed run: end it, readers skip it
                self._file.write("\n")
        self._file.write(json.dumps(record, separators=(",", ":")) + "\n")
        self._file.flush()

    def close(self) -> None:
        """Close the file (appending again reopens it)."""
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> Manifest:
        return self

    def __exit__(self, *exc: object) -> bool:
        self.close()
        return False


def _ends_with_newline(path: Path) -> bool:
    with path.open("rb") as file:
        file.seek(-1, os.SEEK_END)
        return file.read(1) == b"\n"


def manifests(out: Path) -> list[Path]:
    """Every manifest in ``out`` (all ranks, all runs), sorted."""
    return sorted(out.glob(MANIFEST_GLOB))


def read_records(out: Path) -> Iterator[tuple[int, int, dict[str, Any]]]:
    """``(manifest number, byte offset, record)`` of every complete line of every manifest of ``out``."""
    for number, path in enumerate(manifests(out)):
        with path.open("rb") as file:
            offset = 0
            for line in file:
                try:
                    record = json.loads(line)
                except (json.JSONDecodeError, UnicodeDecodeError):
                    record = None  # a line cut short: the input is redone
                if isinstance(record, dict) and "key" in record and line.endswith(b"\n"):
                    yield number, offset, record
                offset += len(line)


def finished_keys(out: Path) -> set[str]:
    """Keys of the inputs that are done: a manifest line says so and every file it lists exists."""
    done: set[str] = set()
    for _, _, record in read_records(out):
        if record.get("status") == "done" and all((out / name).is_file() for name in record.get("outputs", [])):
            done.add(record["key"])
    return done


def check_run_settings(out: Path, settings: Mapping[str, Any], *, resume: bool, writer: bool) -> str | None:
    """Check ``out`` against this run: ``None`` if it may go on, else the reason it may not (one line).

    A fresh run refuses a folder holding an earlier run's manifest (it would mix two runs); ``--resume``
    refuses different settings. ``writer`` (rank 0) records the settings in ``run.json``.
    """
    recorded = out / "run.json"
    if resume:
        if recorded.is_file():
            before = json.loads(recorded.read_text(encoding="utf-8"))
            changed = sorted(name for name in set(before) | set(settings) if before.get(name) != settings.get(name))
            if changed:
                return f"--resume: {out} was made with other settings ({', '.join(changed)}); use another --out"
    elif manifests(out):
        return (
            f"{out} holds an earlier run ({manifests(out)[0].name}): pass --resume to continue it, "
            "or choose another --out"
        )
    if writer:
        write_json_atomic(recorded, dict(settings))
    return None


def write_summary(
    path: Path, header: Mapping[str, Any], keys: Sequence[str], files: Sequence[str], *, error: str | None = None
) -> dict[str, int]:
    """Rebuild ``summary.json`` from the manifests of ``path.parent``, in input order, without holding the records.

    Args:
        path: ``OUT/summary.json``.
        header: the run's description (model, methods, ...), written first.
        keys: every input's key, in input order.
        files: every input's file, in the same order (for inputs with no record).
        error: a run-level error that stopped the run, if any.

    Returns:
        ``{"total", "done", "failed", "missing"}``: inputs done, failed (under ``--skip-errors``) and neither.
    """
    out = path.parent
    latest: dict[str, tuple[int, int, bool]] = {}
    for number, offset, record in read_records(out):
        ok = record.get("status") == "done"
        if ok or not latest.get(record["key"], (0, 0, False))[2]:
            latest[record["key"]] = (number, offset, ok)
    sources = [path.open("rb") for path in manifests(out)]
    counts = {"total": len(keys), "done": 0, "failed": 0, "missing": 0}

    def lines(want_ok: bool) -> Iterator[str]:
        for key in keys:
            where = latest.get(key)
            if where is None or where[2] != want_ok:
                continue
            source = sources[where[0]]
            source.seek(where[1])
            record = json.loads(source.readline())
            record.pop("status", None)
            record.pop("outputs", None)
            if not want_ok:
                record = {"file": record.get("file"), "error": record.get("error")}
            yield json.dumps(record)

    for key in keys:
        where = latest.get(key)
        counts["missing" if where is None else "done" if where[2] else "failed"] += 1
    head = {**header, **counts, "complete": counts["done"] == counts["total"]}
    if error is not None:
        head["error"] = error
    missing = [file for key, file in zip(keys, files, strict=True) if key not in latest]

    def write(temporary: Path) -> None:
        with temporary.open("w", encoding="utf-8") as file:
            text = json.dumps(head, indent=2)
            file.write(text[:-2] + ",\n")
            for name, want_ok in (("images", True), ("failures", False)):
                file.write(f'  "{name}": [')
                for index, line in enumerate(lines(want_ok)):
                    file.write(("\n    " if index == 0 else ",\n    ") + line)
                file.write("\n  ],\n" if counts["done" if want_ok else "failed"] else "],\n")
            file.write(f'  "not_done": {json.dumps(missing)}\n}}\n')

    try:
        atomic_write(path, write)
    finally:
        for source in sources:
            source.close()
    return counts
