"""Result tables in the paper's layout (Tables 1-3), rendered as Markdown, LaTeX and CSV.

A :class:`Table` has one row per method and one column per requested metric, in the
paper's column order. Values are kept in reenactbench's units (L1 on the 0..255 scale,
LPIPS and L_ID unscaled); only rendering applies the paper's print formats: fixed
decimals for Tables 1-2 and ``mean ± std`` with Table 3's powers of ten.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from reenactbench.metrics import PAPER_ORDER, get_metric
from reenactbench.report.paper import (
    ROBUSTNESS_EXPONENTS,
    TABLE_NUMBERS,
    PaperCell,
    load_paper_table,
    method_label,
    table_name,
)

__all__ = [
    "Entry",
    "Row",
    "Table",
    "build_table",
    "format_value",
    "render_csv",
    "render_latex",
    "render_markdown",
]

#: Decimals the paper prints per metric (Tables 1-2; Table 3's unscaled metrics too).
DECIMALS: dict[str, int] = {"l1": 2, "psnr": 1, "fid": 1, "fvd": 1, "fvd_mouth": 1}
_DEFAULT_DECIMALS = 3  # lpips, id, ssim, correlations
_SCALED_DECIMALS = 1  # Table 3's scaled metrics
MISSING = "\u2014"  # em dash: the metric was not measured / not reported
CSV_COLUMNS = ("source", "method", "label", "metric", "value", "std", "n", "note")
_TITLES = {
    "same-id": "same-identity re-enactment",
    "cross-id": "cross-identity re-enactment",
    "robustness": "one-shot robustness",
}
_POOLING = {
    "same-id": "mean over all frames",
    "cross-id": "mean over all frames",
    "robustness": "mean \u00b1 sample std over (source, driving) runs",
}


@dataclass(frozen=True)
class Entry:
    """One cell: a value in reenactbench's units, or the reason it was skipped.

    Attributes:
        value: the number (``None`` when skipped).
        std: its std (same units), or ``None``.
        n: videos (same/cross-id) or runs (robustness) behind it; ``None`` for the paper.
        note: ``""``, ``"skipped: <reason>"``, or another remark shown as a footnote.
    """

    value: float | None
    std: float | None = None
    n: int | None = None
    note: str = ""
    ci: tuple[float, float] | None = None  #: bootstrap 95 % interval, if computed
    info: str = ""  #: facts recorded with the number (backend, exclusions), one line

    @property
    def skipped(self) -> bool:
        return self.value is None or self.note.startswith("skipped")


@dataclass(frozen=True)
class Row:
    """One table row.

    Attributes:
        source: ``"ours"`` (measured) or ``"paper"``.
        method: registry method name.
        label: printed label (``"FOMM"``, ``"FOMM (paper)"``).
        entries: metric key -> entry; a missing key prints as an em dash.
        paper_only: a paper row whose method was not run (listed after ours).
    """

    source: str
    method: str
    label: str
    entries: Mapping[str, Entry] = field(default_factory=dict)
    paper_only: bool = False


@dataclass(frozen=True)
class Table:
    """A result table of one protocol.

    Attributes:
        kind: ``"same-id"``, ``"cross-id"`` or ``"robustness"``.
        protocol: protocol name (e.g. ``"hdtf_same_id"``).
        metrics: column keys in the paper's order.
        rows: measured rows (each followed by its paper row if any), then paper-only rows.
        caption: lines printed under the title: what the run did that changes what the
            numbers mean (e.g. short videos used whole).
    """

    kind: str
    protocol: str
    metrics: tuple[str, ...]
    rows: tuple[Row, ...]
    caption: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        """File stem, e.g. ``"table1_same_id"``."""
        return table_name(self.kind)


def _paper_order(metrics: Sequence[str]) -> tuple[str, ...]:
    rank = {k: i for i, k in enumerate(PAPER_ORDER)}
    unique = list(dict.fromkeys(metrics))
    return tuple(sorted(unique, key=lambda k: (rank.get(k, len(rank)), unique.index(k))))


def build_table(
    kind: str,
    protocol: str,
    methods: Sequence[str],
    metrics: Sequence[str],
    measured: Mapping[tuple[str, str], Entry],
    paper: bool = False,
    caption: Sequence[str] = (),
) -> Table:
    """Arrange measured (and optionally the paper's) numbers in the paper's layout.

    Args:
        kind: protocol kind, selects the paper's table and the print format.
        protocol: protocol name, shown in titles.
        methods: measured methods, in row order.
        metrics: requested metric keys; columns follow ``PAPER_ORDER``.
        measured: (method, metric) -> entry, in reenactbench's units.
        paper: add the paper's numbers: a ``"<label> (paper)"`` row under each measured
            method the paper reports, then the paper's other methods.
        caption: lines printed under the title (:attr:`Table.caption`).

    Returns:
        The table.

    Raises:
        InputError: ``kind`` has no paper table.
    """
    table_name(kind)  # an unknown kind fails here, with or without paper rows
    columns = _paper_order(metrics)
    reported = load_paper_table(kind) if paper else {}
    rows: list[Row] = []
    for method in methods:
        entries = {k: measured[(method, k)] for k in columns if (method, k) in measured}
        rows.append(Row("ours", method, method_label(method), entries))
        if method in reported:
            rows.append(_paper_row(method, reported[method], columns, paper_only=False))
    rows += [
        _paper_row(m, cells, columns, paper_only=True)
        for m, cells in reported.items()
        if m not in methods
    ]
    return Table(kind, protocol, columns, tuple(rows), tuple(caption))


def _paper_row(
    method: str, cells: Mapping[str, PaperCell], columns: Sequence[str], paper_only: bool
) -> Row:
    entries = {k: Entry(cells[k].value, cells[k].std) for k in columns if k in cells}
    return Row("paper", method, f"{method_label(method)} (paper)", entries, paper_only)


def format_value(kind: str, metric: str, value: float, std: float | None = None) -> str:
    """Print a number as the paper does.

    Args:
        kind: protocol kind; ``"robustness"`` prints ``mean ± std`` divided by
            ``10**ROBUSTNESS_EXPONENTS[metric]`` (e.g. LPIPS 0.075, std 0.021 -> "7.5 ± 2.1").
        metric: metric key, selects the decimals (l1 2; psnr, fid, fvd, fvd_mouth 1; else 3).
        value: the number in reenactbench's units.
        std: its std; printed only for robustness.

    Returns:
        The formatted text; an infinite value (PSNR of exact frames) prints ``∞``.
    """
    if math.isinf(value):
        return "\u221e" if value > 0 else "\u2212\u221e"
    if kind != "robustness":
        return _fixed(value, DECIMALS.get(metric, _DEFAULT_DECIMALS))
    if metric in ROBUSTNESS_EXPONENTS:
        factor = 10.0 ** ROBUSTNESS_EXPONENTS[metric]
        digits = _SCALED_DECIMALS
    else:
        factor, digits = 1.0, DECIMALS.get(metric, _DEFAULT_DECIMALS)
    text = _fixed(value / factor, digits)
    if std is not None:
        text += f" \u00b1 {_fixed(std / factor, digits)}"
    return text


def _fixed(x: float, digits: int) -> str:
    """``x`` with ``digits`` decimals; a value that rounds to zero prints without a sign
    (1 - cos of identical embeddings is -1e-16, not "-0.000")."""
    return f"{x:.{digits}f}" if round(x, digits) != 0 else f"{0.0:.{digits}f}"


def _scale_suffix(kind: str, metric: str, latex: bool) -> str:
    if kind != "robustness" or metric not in ROBUSTNESS_EXPONENTS:
        return ""
    e = ROBUSTNESS_EXPONENTS[metric]
    if latex:
        return f" $\\times 10^{{{e}}}$"
    sup = str.maketrans(
        "-0123456789", "\u207b\u2070\u00b9\u00b2\u00b3\u2074\u2075\u2076\u2077\u2078\u2079"
    )
    return f" \u00d710{str(e).translate(sup)}"


def _best(table: Table, metric: str) -> float | None:
    """Best measured value of a column when at least two complete measured rows have one
    (a method with partial or stale jobs is never ranked)."""
    entries = [r.entries[metric] for r in table.rows if r.source == "ours" and metric in r.entries]
    values = [
        e.value
        for e in entries
        if e.value is not None
        and math.isfinite(e.value)  # an exact reproduction (PSNR ∞) is not a ranking
        and not e.skipped
        and not e.note.startswith("partial")
    ]
    if len(values) < 2:
        return None
    return max(values) if get_metric(metric).higher_is_better else min(values)


class _Notes:
    """Footnote numbers for distinct note texts, in order of first use."""

    def __init__(self) -> None:
        self.texts: list[str] = []

    def number(self, note: str) -> int:
        text = note.removeprefix("skipped:").strip() or "no value in summary.csv"
        if text not in self.texts:
            self.texts.append(text)
        return self.texts.index(text) + 1


def _cells(
    table: Table,
    row: Row,
    notes: _Notes,
    mark: Callable[[int], str],
    escape: Callable[[str], str],
    bold: Callable[[str], str] | None,
) -> list[str]:
    """Cell texts of ``row``.

    Args:
        table: the table (kind and columns).
        row: the row to print.
        notes: collects footnote texts; ``mark(number)`` is appended to the cell.
        mark: footnote marker markup, e.g. ``" [1]"``.
        escape: escapes a formatted number for the output format.
        bold: wraps the best measured value of a column, or ``None`` for no bolding.
    """
    out = []
    for metric in table.metrics:
        entry = row.entries.get(metric)
        if entry is None:
            out.append(escape(MISSING))
            continue
        if entry.skipped:
            text = "n/a" if entry.note.startswith("undefined") else "skipped"
        else:
            assert entry.value is not None
            text = escape(format_value(table.kind, metric, entry.value, entry.std))
            if bold and row.source == "ours" and entry.value == _best(table, metric):
                text = bold(text)
            if entry.ci is not None:
                lo, hi = (format_value(table.kind, metric, v) for v in entry.ci)
                text += escape(f" [{lo}, {hi}]")
        if entry.note or entry.value is None:
            text += mark(notes.number(entry.note))
        if entry.info and not entry.skipped:
            text += mark(notes.number(entry.info))
        out.append(text)
    return out


def _header_md(table: Table) -> list[str]:
    heads = ["Method"]
    for k in table.metrics:
        spec = get_metric(k)
        arrow = "\u2191" if spec.higher_is_better else "\u2193"
        heads.append(f"{spec.label} {arrow}{_scale_suffix(table.kind, k, latex=False)}")
    return heads


def _title(table: Table) -> str:
    n = TABLE_NUMBERS[table.kind]
    return f"Table {n}: {_TITLES[table.kind]} (protocol {table.protocol}; {_POOLING[table.kind]})"


def render_markdown(table: Table) -> str:
    """The table as GitHub Markdown; the best measured value of each column in bold."""
    notes = _Notes()

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

    out = [f"**{_title(table)}**", ""]
    if table.caption:
        out += [f"{text}  " for text in table.caption] + [""]
    out.append(line(_header_md(table)))
    out.append("|" + "---|" + "---:|" * len(table.metrics))
    in_paper = False
    for row in table.rows:
        if row.paper_only and not in_paper:
            out.append(line(["*paper*"] + [""] * len(table.metrics)))
            in_paper = True
        cells = _cells(table, row, notes, lambda i: f" [{i}]", str, lambda t: f"**{t}**")
        out.append(line([row.label, *cells]))
    if notes.texts:
        out.append("")
        out += [f"[{i}] {text}  " for i, text in enumerate(notes.texts, 1)]
    return "\n".join(out) + "\n"


_LATEX_SPECIAL = {c: "\\" + c for c in "&%$#_{}"} | {
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "\\": r"\textbackslash{}",
    "\u2013": "--",
    "\u00b1": r"$\pm$",
    "\u2014": "---",
    "\u221e": r"$\infty$",
    "\u2212": "$-$",
}


def _tex(text: str) -> str:
    return "".join(_LATEX_SPECIAL.get(c, c) for c in text)


def _tex_label(label: str) -> str:
    """Registry label to LaTeX: ``"rho_AU"`` -> ``$\\rho_{\\mathrm{AU}}$``."""
    if "_" not in label:
        return _tex(label)
    base, sub = label.split("_", 1)
    base = r"\rho" if base == "rho" else rf"\mathrm{{{base}}}"
    return rf"${base}_{{\mathrm{{{sub}}}}}$"


def render_latex(table: Table) -> str:
    """The table as a LaTeX ``table`` environment (needs ``booktabs``)."""
    notes = _Notes()
    heads = ["Method"]
    for k in table.metrics:
        spec = get_metric(k)
        arrow = r"$\uparrow$" if spec.higher_is_better else r"$\downarrow$"
        heads.append(f"{_tex_label(spec.label)} {arrow}{_scale_suffix(table.kind, k, latex=True)}")
    ncol = len(heads)
    out = [
        r"\begin{table}[t]",
        r"\centering",
        rf"\caption{{{_tex(' '.join([_title(table) + '.', *table.caption]))}}}",
        rf"\label{{tab:{table.name}}}",
        rf"\begin{{tabular}}{{l{'r' * len(table.metrics)}}}",
        r"\toprule",
        " & ".join(heads) + r" \\",
        r"\midrule",
    ]
    in_paper = False
    for row in table.rows:
        if row.paper_only and not in_paper:
            out += [r"\midrule", rf"\multicolumn{{{ncol}}}{{l}}{{\textit{{paper}}}} \\"]
            in_paper = True
        cells = _cells(table, row, notes, lambda i: rf"\textsuperscript{{{i}}}", _tex, None)
        out.append(" & ".join([_tex(row.label), *cells]) + r" \\")
    out += [r"\bottomrule", r"\end{tabular}"]
    if notes.texts:
        out.append(r"\par\smallskip\footnotesize")
        out += [rf"\textsuperscript{{{i}}}{_tex(t)}\\" for i, t in enumerate(notes.texts, 1)]
    out.append(r"\end{table}")
    return "\n".join(out) + "\n"


def _num(x: float | None) -> str:
    return "" if x is None or math.isnan(x) else repr(x)


def render_csv(table: Table) -> str:
    """Tidy long CSV: one line per (source, method, metric), values in our units.

    Columns ``source,method,label,metric,value,std,n,note``; a skipped metric has an
    empty value and its reason in ``note``; the paper's rows carry the table number.
    """
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    paper_note = f"Oorloff & Yacoob, ICCV 2023, Table {TABLE_NUMBERS[table.kind]}"
    for row in table.rows:
        label = row.label.removesuffix(" (paper)") if row.source == "paper" else row.label
        for metric, e in row.entries.items():
            value, std = (None, None) if e.skipped else (e.value, e.std)
            note = paper_note if row.source == "paper" else e.note
            n = "" if e.n is None else str(e.n)
            writer.writerow(
                [row.source, row.method, label, metric, _num(value), _num(std), n, note]
            )
    return buf.getvalue()
