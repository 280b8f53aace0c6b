"""A run directory's tables as pandas DataFrames: ``reenactbench.load_run(DIR)``.

Reads ``run.json``, ``summary.csv`` and ``per_video.csv`` of a directory written by
``reenactbench run`` (nothing is recomputed, no weights or data are needed) and gives
the same tables the report prints (docs/reports.md, "From Python: load_run").
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from reenactbench.errors import InputError
from reenactbench.report import RunInfo, read_table
from reenactbench.report.tables import (
    Table,
    build_table,
    footnotes,
    long_frame,
    table_frame,
)

__all__ = ["RunTables", "load_run", "read_per_video"]

#: Columns of summary.csv and per_video.csv that hold text; every other column is numeric.
_TEXT = {"method", "metric", "info", "note", "video", "source"}
#: Numeric columns that count something (nullable integers).
_COUNTS = {"n", "n_frames", "source_frame"}
PER_VIDEO_COLUMNS = ("method", "video", "source", "source_frame", "metric", "value", "n_frames")


@dataclass(frozen=True, eq=False)
class RunTables:
    """The tables of one run directory.

    Attributes:
        info: what ``run.json`` says (protocol, kind, methods, metrics, caption lines).
        summary: ``summary.csv``, one row per (method, metric): text columns as ``str``
            (a method named ``"NA"`` stays ``"NA"``), ``value``, ``std``, ``ci_low``,
            ``ci_high`` as float (NaN where blank), ``n`` and ``n_frames`` as ``Int64``.
        per_video: ``per_video.csv`` typed the same way (one row per job and metric); an
            empty frame with its columns when the run has none.
        table: the printed table (paper layout, :func:`~reenactbench.report.tables.
            table_frame`): index = method labels, columns = metric headers, string cells
            with footnote markers ``[i]`` (texts in :attr:`footnotes`).
        long: the table's numbers in tidy long form (``tables/<table>.csv``).
        footnotes: the footnote texts, ``[1]`` first.
        layout: the :class:`~reenactbench.report.tables.Table` behind ``table``, for the
            renderers (``render_markdown(run.layout)``).
    """

    info: RunInfo
    summary: pd.DataFrame
    per_video: pd.DataFrame
    table: pd.DataFrame
    long: pd.DataFrame
    footnotes: tuple[str, ...]
    layout: Table

    def paper_table(self) -> pd.DataFrame:
        """:attr:`table` with the paper's rows (``"<label> (paper)"``) beside ours."""
        t = self.layout
        measured = {
            (r.method, k): e for r in t.rows if r.source == "ours" for k, e in r.entries.items()
        }
        methods = [r.method for r in t.rows if r.source == "ours"]
        return table_frame(build_table(t.kind, t.protocol, methods, t.metrics, measured, True))


def _read_csv(path: Path, columns: tuple[str, ...] = ()) -> pd.DataFrame:
    """A CSV with its text columns kept verbatim and the others numeric (NaN if blank).

    Args:
        path: the file; when missing, an empty frame with ``columns``.
        columns: the columns of an empty frame.
    """
    if not path.is_file():
        return pd.DataFrame({c: _typed(pd.Series(name=c, dtype=str)) for c in columns})
    try:
        raw = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8")
        return pd.DataFrame({c: _typed(raw[c]) for c in raw.columns})
    except (ValueError, TypeError) as e:  # pandas' ParserError is a ValueError
        raise InputError(f"{path}: {e}; fix or re-run the run") from None


def _typed(column: pd.Series) -> pd.Series:
    """A column as text (``_TEXT``), nullable integers (``_COUNTS``) or floats (parsed as
    :func:`float` does, like ``load_summary``: ``nan``, ``inf``; blank is NaN)."""
    if column.name in _TEXT:
        return column.astype(str)
    try:
        numbers = pd.Series(
            [float(t) if t.strip() else math.nan for t in column],
            index=column.index, name=column.name, dtype="float64",
        )  # fmt: skip
        return numbers.astype("Int64") if column.name in _COUNTS else numbers
    except (ValueError, TypeError) as e:  # not a number; a count that is not an integer
        raise ValueError(f"column {column.name}: {e}") from None


def read_per_video(run_dir: Path) -> pd.DataFrame:
    """``per_video.csv`` typed as :attr:`RunTables.per_video` (empty, with its columns,
    when the run has none)."""
    return _read_csv(Path(run_dir) / "per_video.csv", PER_VIDEO_COLUMNS)


def load_run(run_dir: str | Path, paper: bool = False) -> RunTables:
    """Load the tables of a run directory as DataFrames.

    Args:
        run_dir: a folder written by ``reenactbench run`` (``run.json``, ``summary.csv``;
            ``per_video.csv`` if the run has one).
        paper: include the paper's rows in :attr:`RunTables.table` and ``long``
            (``--paper`` of ``reenactbench report``).

    Returns:
        The run's tables (:class:`RunTables`).

    Raises:
        InputError: not a run directory, or a malformed ``run.json`` / ``summary.csv``
            (one line naming the file and the fix).
    """
    run_dir = Path(run_dir)
    info, _, layout = read_table(run_dir, paper)
    frame = table_frame(layout)
    return RunTables(
        info=info,
        summary=_read_csv(run_dir / "summary.csv"),
        per_video=read_per_video(run_dir),
        table=frame,
        long=long_frame(layout),
        footnotes=footnotes(layout),
        layout=layout,
    )
