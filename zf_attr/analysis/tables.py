"""Summary tables of a comparison: mean ± std per method and metric, as CSV, Markdown and LaTeX, and back.

CSV keeps full precision (``repr`` of the floats); Markdown and LaTeX print ``mean ± std`` with a fixed number
of decimals and put the best mean of each column in bold where the metric has a direction (ties at the printed
precision are all bold). The readers parse each format back into a :class:`SummaryTable`.
"""

from __future__ import annotations

import csv
import io
import math
import re
from dataclasses import dataclass
from pathlib import Path

__all__ = ["METRICS", "SummaryTable", "parse_latex", "parse_markdown", "read_csv"]

#: Metric name -> (column title, True if higher is better / False if lower / None if no direction).
METRICS: dict[str, tuple[str, bool | None]] = {
    "pointing": ("pointing game", True),
    "deletion": ("deletion AUC", False),
    "insertion": ("insertion AUC", True),
    "class_sensitivity": ("class sensitivity ρ", False),
    "randomization": ("randomisation ρ", False),
}
_NOT_AVAILABLE = "n/a"


@dataclass(frozen=True)
class SummaryTable:
    """Mean, standard deviation and count of each metric for each method.

    Attributes:
        methods: the row names, in order.
        metrics: the column names (keys of :data:`METRICS`, or others without a known direction), in order.
        mean: ``mean[method][metric]``; NaN when there is no value.
        std: the sample standard deviation (``n - 1``), NaN for fewer than two values.
        count: the number of (non-NaN) per-image values.
        row_label: the title of the row-name column in Markdown and LaTeX (the CSV column is always ``method``).

    Example:
        >>> table = SummaryTable.from_values({"pointing": {"a": [1.0, 1.0], "b": [0.0, 1.0]}}, ("pointing",))
        >>> print(table.to_markdown())
        | method | pointing game ↑ |
        |:--|--:|
        | a | **1.000 ± 0.000** |
        | b | 0.500 ± 0.707 |
        >>> parse_markdown(table.to_markdown()).mean == table.mean, table.best("pointing")
        (True, {'a'})
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as folder:
        ...     sorted(path.name for path in table.save(folder, stem="t").values())
        ['t.csv', 't.md', 't.tex']
    """

    methods: tuple[str, ...]
    metrics: tuple[str, ...]
    mean: dict[str, dict[str, float]]
    std: dict[str, dict[str, float]]
    count: dict[str, dict[str, int]]
    row_label: str = "method"

    @classmethod
    def from_values(cls, values: dict[str, dict[str, list[float]]], metrics: tuple[str, ...]) -> SummaryTable:
        """Summarise per-image values ``values[metric][method]`` (NaNs are left out of every statistic).

        Example:
            >>> SummaryTable.from_values({"deletion": {"a": [0.1, 0.3, float("nan")]}}, ("deletion",)).count
            {'a': {'deletion': 2}}
        """
        methods = tuple(dict.fromkeys(method for metric in metrics for method in values[metric]))
        mean: dict[str, dict[str, float]] = {method: {} for method in methods}
        std: dict[str, dict[str, float]] = {method: {} for method in methods}
        count: dict[str, dict[str, int]] = {method: {} for method in methods}
        for metric in metrics:
            for method in methods:
                finite = [float(v) for v in values[metric].get(method, []) if not math.isnan(float(v))]
                n = len(finite)
                mu = sum(finite) / n if n else math.nan
                var = sum((v - mu) ** 2 for v in finite) / (n - 1) if n > 1 else math.nan
                mean[method][metric], std[method][metric], count[method][metric] = mu, math.sqrt(var), n
        return cls(methods, tuple(metrics), mean, std, count)

    def best(self, metric: str, decimals: int = 3) -> set[str]:
        """The methods with the best printed mean of ``metric`` (empty when the metric has no direction)."""
        higher = METRICS.get(metric, ("", None))[1]
        means = {m: round(self.mean[m][metric], decimals) for m in self.methods if not math.isnan(self.mean[m][metric])}
        if higher is None or not means:
            return set()
        target = max(means.values()) if higher else min(means.values())
        return {method for method, value in means.items() if value == target}

    def to_csv(self) -> str:
        """One row per method: ``method`` then ``<metric>_mean``, ``<metric>_std``, ``<metric>_n`` (full precision)."""
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["method", *[f"{m}_{part}" for m in self.metrics for part in ("mean", "std", "n")]])
        for method in self.methods:
            row: list[str] = [method]
            for metric in self.metrics:
                row += [
                    repr(self.mean[method][metric]),
                    repr(self.std[method][metric]),
                    str(self.count[method][metric]),
                ]
            writer.writerow(row)
        return buffer.getvalue()

    def to_markdown(self, decimals: int = 3) -> str:
        """A GitHub Markdown table; arrows give each metric's direction, the best means are bold."""
        best = {metric: self.best(metric, decimals) for metric in self.metrics}
        lines = [
            f"| {_escape_markdown(self.row_label)} | " + " | ".join(_title(m) for m in self.metrics) + " |",
            "|:--|" + "--:|" * len(self.metrics),
        ]
        for method in self.methods:
            cells = []
            for metric in self.metrics:
                text = _cell(self.mean[method][metric], self.std[method][metric], decimals, " ± ")
                cells.append(f"**{text}**" if method in best[metric] else text)
            lines.append(f"| {_escape_markdown(method)} | " + " | ".join(cells) + " |")
        return "\n".join(lines)

    def to_latex(self, decimals: int = 3) -> str:
        r"""A booktabs ``tabular`` (needs ``\usepackage{booktabs}``); the best means in ``\mathbf``."""
        best = {metric: self.best(metric, decimals) for metric in self.metrics}
        header = " & ".join(_latex_title(metric) for metric in self.metrics)
        lines = [
            r"\begin{tabular}{l" + "r" * len(self.metrics) + "}",
            r"\toprule",
            f"{_escape_latex(self.row_label.capitalize())} & {header} \\\\",
            r"\midrule",
        ]
        for method in self.methods:
            cells = []
            for metric in self.metrics:
                text = _cell(self.mean[method][metric], self.std[method][metric], decimals, r" \pm ")
                if text != _NOT_AVAILABLE:
                    text = f"$\\mathbf{{{text}}}$" if method in best[metric] else f"${text}$"
                cells.append(text)
            lines.append(f"{_escape_latex(method)} & " + " & ".join(cells) + r" \\")
        lines += [r"\bottomrule", r"\end{tabular}"]
        return "\n".join(lines)

    def save(self, directory: str | Path, stem: str = "comparison", decimals: int = 3) -> dict[str, Path]:
        """Write ``<stem>.csv``, ``<stem>.md`` and ``<stem>.tex`` into ``directory`` (created if needed)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        texts = {"csv": self.to_csv(), "md": self.to_markdown(decimals) + "\n", "tex": self.to_latex(decimals) + "\n"}
        paths = {}
        for suffix, text in texts.items():
            paths[suffix] = directory / f"{stem}.{suffix}"
            paths[suffix].write_text(text, encoding="utf-8")
        return paths


def read_csv(source: str | Path) -> SummaryTable:
    """Read a table written by :meth:`SummaryTable.to_csv` (a path, or the CSV text itself when it has newlines).

    Example:
        >>> table = SummaryTable.from_values({"insertion": {"a": [0.25, 0.75]}}, ("insertion",))
        >>> read_csv(table.to_csv()) == table
        True
    """
    text = source if isinstance(source, str) and "\n" in source else Path(source).read_text(encoding="utf-8")
    rows = list(csv.reader(io.StringIO(text)))
    header, body = rows[0], rows[1:]
    if not header or header[0] != "method" or (len(header) - 1) % 3:
        raise ValueError("not a comparison CSV: the header must be method, then <metric>_mean, _std, _n per metric")
    metrics = tuple(name[: -len("_mean")] for name in header[1::3])
    mean: dict[str, dict[str, float]] = {}
    std: dict[str, dict[str, float]] = {}
    count: dict[str, dict[str, int]] = {}
    for row in body:
        method = row[0]
        mean[method] = {m: float(row[1 + 3 * i]) for i, m in enumerate(metrics)}
        std[method] = {m: float(row[2 + 3 * i]) for i, m in enumerate(metrics)}
        count[method] = {m: int(row[3 + 3 * i]) for i, m in enumerate(metrics)}
    return SummaryTable(tuple(mean), metrics, mean, std, count)


def parse_markdown(text: str) -> SummaryTable:
    """Read the means and standard deviations back from :meth:`SummaryTable.to_markdown` (counts are unknown: -1).

    Example:
        >>> table = SummaryTable.from_values({"deletion": {"a b": [0.1, 0.2]}}, ("deletion",))
        >>> parse_markdown(table.to_markdown()).mean
        {'a b': {'deletion': 0.15}}
    """
    lines = [line.strip() for line in text.strip().splitlines() if line.strip().startswith("|")]
    titles = [cell.strip() for cell in lines[0].strip("|").split("|")][1:]
    by_title = {_title(name): name for name in METRICS}
    metrics = tuple(by_title.get(title, title) for title in titles)
    rows = [[cell.strip() for cell in re.split(r"(?<!\\)\|", line.strip("|"))] for line in lines[2:]]
    return _parsed(metrics, [(row[0].replace("\\|", "|"), row[1:]) for row in rows], "±")


def parse_latex(text: str) -> SummaryTable:
    """Read the means and standard deviations back from :meth:`SummaryTable.to_latex` (counts are unknown: -1).

    Example:
        >>> table = SummaryTable.from_values({"pointing": {"guided_backprop": [1.0, 0.0]}}, ("pointing",))
        >>> parse_latex(table.to_latex()).std
        {'guided_backprop': {'pointing': 0.707}}
    """
    lines = [line.strip() for line in text.splitlines()]
    start, end = lines.index(r"\midrule"), lines.index(r"\bottomrule")
    header = lines[start - 1].removesuffix(r"\\").split(" & ")[1:]
    titles = [re.sub(r"\$.*?\$", "", cell).strip() for cell in header]
    by_title = {METRICS[name][0].replace(" ρ", ""): name for name in METRICS}
    metrics = tuple(by_title.get(title, title.replace("\\_", "_")) for title in titles)
    rows = []
    for line in lines[start + 1 : end]:
        cells = [cell.strip() for cell in line.removesuffix(r"\\").split(" & ")]
        values = [re.sub(r"\\mathbf\{(.*)\}", r"\1", cell.strip("$")) for cell in cells[1:]]
        rows.append((re.sub(r"\\([_&%#$])", r"\1", cells[0]), values))
    return _parsed(metrics, rows, r"\pm")


def _parsed(metrics: tuple[str, ...], rows: list[tuple[str, list[str]]], plus_minus: str) -> SummaryTable:
    mean: dict[str, dict[str, float]] = {}
    std: dict[str, dict[str, float]] = {}
    count: dict[str, dict[str, int]] = {}
    for method, cells in rows:
        mean[method], std[method], count[method] = {}, {}, {}
        for metric, cell in zip(metrics, cells, strict=True):
            cell = cell.strip("* ")
            if cell == _NOT_AVAILABLE:
                mu, sigma = math.nan, math.nan
            elif plus_minus in cell:
                mu, sigma = (float(part) for part in cell.split(plus_minus))
            else:
                mu, sigma = float(cell), math.nan
            mean[method][metric], std[method][metric], count[method][metric] = mu, sigma, -1
    return SummaryTable(tuple(mean), metrics, mean, std, count)


def _title(metric: str) -> str:
    title, higher = METRICS.get(metric, (metric, None))
    return title + {True: " ↑", False: " ↓", None: ""}[higher]


def _latex_title(metric: str) -> str:
    title, higher = METRICS.get(metric, (metric, None))
    greek = r" $\rho$" if title.endswith(" ρ") else ""
    arrow = {True: r" $\uparrow$", False: r" $\downarrow$", None: ""}[higher]
    return _escape_latex(title.removesuffix(" ρ")) + greek + arrow


def _cell(mean: float, std: float, decimals: int, plus_minus: str) -> str:
    if math.isnan(mean):
        return _NOT_AVAILABLE
    if math.isnan(std):
        return f"{mean:.{decimals}f}"
    return f"{mean:.{decimals}f}{plus_minus}{std:.{decimals}f}"


def _escape_markdown(text: str) -> str:
    return text.replace("|", "\\|")


def _escape_latex(text: str) -> str:
    return re.sub(r"([_&%#$])", r"\\\1", text)
