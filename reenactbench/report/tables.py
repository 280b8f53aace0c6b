"""Result tables in the paper's layout (Tables 1-3), as pandas DataFrames rendered as
Markdown, LaTeX, HTML and CSV.

A :class:`Table` has one row per method and one column per requested metric, in the
paper's column order. Values are kept in reenactbench's units (L1 on the 0..255 scale,
LPIPS and L_ID unscaled); only rendering applies the paper's print formats: fixed
decimals for Tables 1-2 and ``mean ± std`` with Table 3's powers of ten.
:func:`table_frame` gives the printed cells as a DataFrame and :func:`long_frame` the
numbers in tidy long form; the renderers are pandas' (``DataFrame.to_markdown``,
``Styler.to_latex``, ``Styler.to_html``, ``DataFrame.to_csv``) plus the title, caption
lines and footnotes.
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import pandas as pd
from jinja2 import Template
from markupsafe import Markup
from pandas.io.formats.style import Styler

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
    "STYLES",
    "Entry",
    "Row",
    "Table",
    "build_table",
    "footnotes",
    "format_value",
    "long_frame",
    "render_csv",
    "render_html",
    "render_latex",
    "render_markdown",
    "table_frame",
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


def _is_best(table: Table, row: Row, metric: str) -> bool:
    """Whether ``row``'s value of ``metric`` is the column's best measured one."""
    entry = row.entries.get(metric)
    if row.source != "ours" or entry is None or entry.skipped:
        return False
    return entry.value == _best(table, metric)


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
            if bold and _is_best(table, row, metric):
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


_LATEX_SPECIAL = {c: "\\" + c for c in "&%$#_{}"} | {
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "\\": r"\textbackslash{}",
    "\u2013": "--",
    "\u00b1": r"$\pm$",
    "\u2014": "---",
    "\u221e": r"$\infty$",
    "\u2212": "$-$",
    "\n": " ",  # one table row per line
    "\r": " ",
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


def _header_tex(table: Table) -> list[str]:
    heads = ["Method"]
    for k in table.metrics:
        spec = get_metric(k)
        arrow = r"$\uparrow$" if spec.higher_is_better else r"$\downarrow$"
        heads.append(f"{_tex_label(spec.label)} {arrow}{_scale_suffix(table.kind, k, latex=True)}")
    return heads


def _md(text: str) -> str:
    return text.replace("|", "\\|")


@dataclass(frozen=True)
class _Style:
    """How :func:`table_frame` prints cells for one output format.

    Attributes:
        mark: footnote marker of a number, e.g. ``" [1]"``.
        escape: escapes data text (labels, formatted numbers) for the format.
        bold: wraps the best measured value of a column, or ``None``.
        header: the header cells, ``"Method"`` first.
        separator: label of an empty row before the paper-only rows, or ``None``.
    """

    mark: Callable[[int], str]
    escape: Callable[[str], str]
    bold: Callable[[str], str] | None
    header: Callable[[Table], list[str]]
    separator: str | None = None


def _bracket(i: int) -> str:
    return f" [{i}]"


_STYLES: dict[str, _Style] = {
    "text": _Style(_bracket, str, None, _header_md),
    "md": _Style(_bracket, _md, lambda t: f"**{t}**", _header_md, "*paper*"),
    "latex": _Style(lambda i: rf"\textsuperscript{{{i}}}", _tex, None, _header_tex),
    "html": _Style(_bracket, str, None, _header_md, "paper"),
}
#: Styles of :func:`table_frame`.
STYLES = tuple(_STYLES)


def _layout(table: Table, separator: bool) -> Iterator[Row | None]:
    """The rows in print order; ``None`` (with ``separator``) before the paper-only rows."""
    in_paper = False
    for row in table.rows:
        if separator and row.paper_only and not in_paper:
            yield None
        in_paper = in_paper or row.paper_only
        yield row


def _display(table: Table, style: str) -> tuple[pd.DataFrame, list[str]]:
    """The printed cells (index = row labels) and the footnote texts, numbered from 1."""
    if style not in _STYLES:
        raise ValueError(f"unknown table style {style!r}; use one of {', '.join(STYLES)}")
    st, notes = _STYLES[style], _Notes()
    labels: list[str] = []
    cells: list[list[str]] = []
    for row in _layout(table, separator=st.separator is not None):
        if row is None:
            labels.append(st.separator or "")
            cells.append([""] * len(table.metrics))
        else:
            labels.append(st.escape(row.label))
            cells.append(_cells(table, row, notes, st.mark, st.escape, st.bold))
    heads = st.header(table)
    index = pd.Index(labels, name=heads[0], dtype=object)
    return pd.DataFrame(cells, index=index, columns=heads[1:], dtype=object), notes.texts


def table_frame(table: Table, style: str = "text") -> pd.DataFrame:
    """The table's printed cells as a DataFrame.

    Args:
        table: the table.
        style: ``"text"`` (plain: ``"13.83 [1]"``, ``"skipped [2]"``, ``"—"``; no separator
            row), ``"md"`` (best values in ``**bold**``, ``|`` escaped, a ``*paper*`` row
            before the paper-only rows), ``"latex"`` (escaped, ``\\textsuperscript``
            markers) or ``"html"`` (plain text, a ``paper`` row before the paper-only rows).

    Returns:
        One row per table row (index = printed labels, named ``"Method"``), one column per
        metric (its printed header, e.g. ``"L1 ↓"``); every cell a string. The marker
        numbers refer to :func:`footnotes`.

    Raises:
        ValueError: unknown style.
    """
    return _display(table, style)[0]


def footnotes(table: Table) -> tuple[str, ...]:
    """The footnote texts of a table, ``[1]`` first (skip reasons, notes, recorded facts)."""
    return tuple(_display(table, "text")[1])


def render_markdown(table: Table) -> str:
    """The table as GitHub Markdown; the best measured value of each column in bold."""
    frame, notes = _display(table, "md")
    body = frame.reset_index().to_markdown(
        index=False,
        tablefmt="pipe",
        disable_numparse=True,  # cells are printed text: keep "0.000" and "2.10 ± 0.40"
        colalign=("left", *["right"] * len(table.metrics)),
    )
    out = [f"**{_title(table)}**", ""]
    if table.caption:
        out += [f"{text}  " for text in table.caption] + [""]
    out.append(body)
    if notes:
        out.append("")
        out += [f"[{i}] {text}  " for i, text in enumerate(notes, 1)]
    return "\n".join(out) + "\n"


def _latex_paper_separator(tex: str, table: Table) -> str:
    """Insert ``\\midrule`` and an italic ``paper`` row before the paper-only rows."""
    first = next((i for i, r in enumerate(_layout(table, True)) if r is None), None)
    if first is None:
        return tex
    lines = tex.split("\n")
    at = lines.index(r"\midrule") + 1 + first  # one line per row: _tex drops newlines
    ncol = len(table.metrics) + 1
    lines[at:at] = [r"\midrule", rf"\multicolumn{{{ncol}}}{{l}}{{\textit{{paper}}}} \\"]
    return "\n".join(lines)


def render_latex(table: Table) -> str:
    """The table as a LaTeX ``table`` environment (needs ``booktabs``)."""
    frame, notes = _display(table, "latex")
    tex = (
        Styler(frame.reset_index(), cell_ids=False)
        .hide(axis="index")
        .to_latex(
            column_format="l" + "r" * len(table.metrics),
            position="t",
            position_float="centering",
            hrules=True,
            label=f"tab:{table.name}",
            caption=_tex(" ".join([_title(table) + ".", *table.caption])),
        )
    )
    tex = _latex_paper_separator(tex, table)
    if notes:
        lines = [rf"\textsuperscript{{{i}}}{_tex(t)}\\" for i, t in enumerate(notes, 1)]
        end = "\\end{table}\n"
        tex = tex.removesuffix(end) + "\n".join([r"\par\smallskip\footnotesize", *lines, end])
    return tex


#: Cell classes of :func:`render_html`, and the rules shipped with the table.
_HTML_RULES = [
    {"selector": "td.best", "props": "font-weight: bold;"},
    {"selector": "td.paper", "props": "font-style: italic;"},
    {"selector": "td.number", "props": "text-align: right;"},
]
_HTML_BLOCK = Template(
    '<div class="report-table" id="{{ name }}">\n{{ table }}'
    '{% for line in caption %}<p class="caption">{{ line }}</p>\n{% endfor %}'
    '{% if notes %}<ol class="footnotes">\n'
    "{% for text in notes %}<li>{{ text }}</li>\n{% endfor %}</ol>\n{% endif %}</div>\n",
    autoescape=True,
)


def _html_classes(table: Table, columns: pd.Index) -> pd.DataFrame:
    """CSS classes of the cells of ``table_frame(table, "html").reset_index()``: ``method``
    (labels), ``number``, ``best`` (the column's best measured value), ``paper`` (the
    paper's rows), ``separator`` (the empty ``paper`` row)."""
    classes = []
    for row in _layout(table, separator=True):
        if row is None:
            classes.append(["separator"] * len(columns))
            continue
        paper = " paper" if row.source == "paper" else ""
        numbers = [
            "number" + (" best" if _is_best(table, row, m) else "") + paper for m in table.metrics
        ]
        classes.append(["method" + paper, *numbers])
    return pd.DataFrame(classes, columns=columns, dtype=object)


def render_html(table: Table) -> str:
    """The table as an HTML fragment (no ``<html>``/``<body>``), for a report page.

    A ``<div class="report-table" id="<table name>">`` holding a ``<style>`` element, the
    ``<table class="results">`` with the title as its ``<caption>``, one
    ``<p class="caption">`` per caption line and the footnotes as
    ``<ol class="footnotes">`` (markers ``[1]`` in the cells). Cells carry the classes
    ``method``, ``number``, ``best`` (bold), ``paper`` and ``separator``. Every text from
    the run (labels, notes, protocol name) is HTML-escaped.
    """
    frame, notes = _display(table, "html")
    body = frame.reset_index()
    styler = (
        Styler(body, uuid=table.name, cell_ids=False)
        .hide(axis="index")
        .format(escape="html")
        .format_index(escape="html", axis=1)
        .set_caption(html.escape(_title(table)))
        .set_td_classes(_html_classes(table, body.columns))
        .set_table_styles(_HTML_RULES)
    )
    fragment = Markup(styler.to_html(table_attributes='class="results"'))
    return _HTML_BLOCK.render(name=table.name, table=fragment, caption=table.caption, notes=notes)


def long_frame(table: Table) -> pd.DataFrame:
    """The table's numbers in tidy long form: one row per (source, method, metric).

    Columns ``source,method,label,metric,value,std,n,note`` (:data:`CSV_COLUMNS`); values
    in reenactbench's units (never scaled), ``value``/``std`` float (NaN for a skipped
    metric, whose reason is in ``note``), ``n`` nullable integer; the paper's rows carry
    the table number in ``note`` and their label without ``" (paper)"``.
    """
    paper_note = f"Oorloff & Yacoob, ICCV 2023, Table {TABLE_NUMBERS[table.kind]}"
    records = []
    for row in table.rows:
        label = row.label.removesuffix(" (paper)") if row.source == "paper" else row.label
        for metric, e in row.entries.items():
            value, std = (None, None) if e.skipped else (e.value, e.std)
            note = paper_note if row.source == "paper" else e.note
            records.append((row.source, row.method, label, metric, value, std, e.n, note))
    frame = pd.DataFrame(records, columns=list(CSV_COLUMNS), dtype=object)
    text = {c: "str" for c in ("source", "method", "label", "metric", "note")}
    return frame.astype(text | {"value": "float64", "std": "float64", "n": "Int64"})


def render_csv(table: Table) -> str:
    """Tidy long CSV of :func:`long_frame`: one line per (source, method, metric).

    Columns ``source,method,label,metric,value,std,n,note``; a skipped metric has an
    empty value and its reason in ``note``; the paper's rows carry the table number.
    """
    return long_frame(table).to_csv(index=False, lineterminator="\n")
