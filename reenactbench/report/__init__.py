"""Reports of a run directory: tables in the paper's layout, L1 heatmap figures and an
HTML page.

``write_report(run_dir)`` reads ``run.json`` and ``summary.csv`` (and ``heatmaps/`` for
the robustness protocol) and writes ``tables/<table>.{csv,tex,md}``, ``figures/*.png``
and ``report.html`` with ``report_assets/`` (:mod:`reenactbench.report.html`). No typer
or rich here; matplotlib is imported only to draw figures.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from reenactbench.errors import InputError
from reenactbench.report.heatmaps import (
    load_heatmaps,
    plot_heatmap_grid,
    plot_method_heatmaps,
    shared_vmax,
)
from reenactbench.report.paper import KINDS, load_paper_table, method_label
from reenactbench.report.tables import (
    Entry,
    Table,
    build_table,
    format_value,
    render_csv,
    render_latex,
    render_markdown,
)

__all__ = [
    "DEFAULT_FORMATS",
    "FORMATS",
    "RunInfo",
    "Table",
    "build_table",
    "caption_lines",
    "format_value",
    "load_paper_table",
    "load_summary",
    "method_label",
    "read_run",
    "read_table",
    "write_heatmaps",
    "write_report",
]

#: Report format -> (file suffix, renderer).
FORMATS = {
    "csv": (".csv", render_csv),
    "latex": (".tex", render_latex),
    "md": (".md", render_markdown),
}
#: What ``report`` and ``run`` write by default.
DEFAULT_FORMATS = ("csv", "latex", "md", "html")
SUMMARY_COLUMNS = ("method", "metric", "value", "std", "n", "n_frames", "note")


@dataclass(frozen=True)
class RunInfo:
    """What a report needs from ``run.json``.

    Attributes:
        protocol: protocol name (``run["protocol"]["name"]``, e.g. ``"hdtf_same_id"``).
        kind: ``"same-id"``, ``"cross-id"`` or ``"robustness"``.
        methods: method names in the order run.
        metrics: requested metric keys in the order requested.
        caption: table caption lines from what the run recorded (:func:`caption_lines`).
    """

    protocol: str
    kind: str
    methods: tuple[str, ...]
    metrics: tuple[str, ...]
    caption: tuple[str, ...] = ()


#: Metrics with one value or feature row per frame (the source frame rule applies).
_PER_FRAME = {"l1", "psnr", "ssim", "lpips", "id", "fid"}
_TEMPORAL = {"au_corr", "gaze_corr", "pose_corr", "au_gaze_corr"}
_FVD_CLIPS = {
    "aligned-all": "every non-overlapping clip, aligned between generated and ground truth",
    "stylegan-v": "StyleGAN-V's protocol (one clip per video at a seeded offset, ddof 0)",
}


def caption_lines(run: dict) -> tuple[str, ...]:
    """What a run did that changes what its numbers mean, one line each (under every
    table): the conventions of its metrics (docs/metrics.md) and short videos used whole
    (protocol ``allow_short``)."""
    proto, metrics = run.get("protocol", {}), set(run.get("metrics", ()))
    lines = []
    if proto.get("kind") != "cross-id" and metrics & _PER_FRAME:
        if proto.get("score_source_frame"):
            lines.append("The driving frame that is the source is scored (score_source_frame).")
        else:
            lines.append(
                "Frame metrics and FID leave out the driving frame that is the source (an "
                "input, not a prediction)."
            )
    if "psnr" in metrics:
        lines.append("PSNR of a frame reproduced exactly is \u221e (counted), never ranked.")
    if "id" in metrics:
        lines.append(
            "ID: a generated frame without a detected face scores 1 (no identity); frames "
            "whose reference has no face are left out (both counted)."
        )
    if metrics & {"fvd", "fvd_mouth"}:
        clips = proto.get("fvd_clips", "aligned-all")
        lines.append(f"FVD clips: {_FVD_CLIPS.get(clips, clips)}.")
    if metrics & _TEMPORAL:
        lines.append(
            "Correlations: a driving series that does not vary is left out; a generated "
            "series that does not vary while the driving one does counts as r = 0."
        )
    if "au_gaze_corr" in metrics:
        pooling = proto.get("au_gaze_pooling", "groups")
        how = "the mean of rho_AU and rho_GZ" if pooling == "groups" else "the mean of 19 r"
        lines.append(f"rho_AU+GZ is {how} (au_gaze_pooling = {pooling}).")
    if proto.get("kind") == "robustness" and metrics & {"fid", "fvd", "fvd_mouth"}:
        lines.append(
            "FID and FVD here are per (source, driving) run, on few samples (e.g. 500 "
            "frames for 2048-d features, 31 clips for 400-d): biased upwards by sample size; "
            "compare methods only at equal frame counts."
        )
    short = run.get("short_videos") or {}
    if short:
        frames = run.get("setup", {}).get("frames", "?")
        named = [f"{v} ({n})" for v, n in short.items()]
        more = f" and {len(named) - 5} more" if len(named) > 5 else ""
        lines.append(
            f"{len(short)} video(s) have fewer than {frames} frames and are used whole: "
            f"{', '.join(named[:5])}{more}."
        )
    return tuple(lines)


def _not_a_run(run_dir: Path, missing: str) -> InputError:
    return InputError(
        f"{run_dir} is not a run directory (no {missing}); run `reenactbench run ...` first"
    )


def read_run(run_dir: Path) -> RunInfo:
    """Parse ``run_dir/run.json``.

    Raises:
        InputError: the file is missing, not JSON, lacks a key, or names an unknown kind.
    """
    path = run_dir / "run.json"
    if not path.is_file():
        raise _not_a_run(run_dir, "run.json")
    try:
        run = json.loads(path.read_text(encoding="utf-8"))
        info = RunInfo(
            protocol=str(run["protocol"]["name"]),
            kind=str(run["protocol"]["kind"]),
            methods=tuple(run["methods"]),
            metrics=tuple(run["metrics"]),
            caption=caption_lines(run),
        )
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise InputError(
            f"{path}: cannot read protocol.name/kind, methods, metrics ({e}); "
            "re-run `reenactbench run ...`"
        ) from None
    if info.kind not in KINDS:
        raise InputError(f"{path}: protocol kind {info.kind!r} is not one of {', '.join(KINDS)}")
    return info


def _float(text: str) -> float | None:
    value = float(text) if text.strip() else math.nan
    return None if math.isnan(value) else value


def _info_text(raw: str) -> str:
    """summary.csv's JSON ``info`` as one footnote line, e.g. ``backend: irse50;
    excluded_frames: 12``."""
    if not raw.strip():
        return ""
    try:
        info = json.loads(raw)
    except json.JSONDecodeError:
        return raw
    return "; ".join(f"{k}: {v}" for k, v in sorted(info.items()))


def load_summary(path: Path) -> dict[tuple[str, str], Entry]:
    """Parse a ``summary.csv`` (columns ``method,metric,value,std,n,n_frames,note``).

    Returns:
        (method, metric) -> entry; empty or NaN values become ``None``.

    Raises:
        InputError: missing file or column, a non-numeric value, a duplicate row.
    """
    if not path.is_file():
        raise _not_a_run(path.parent, "summary.csv")
    entries: dict[tuple[str, str], Entry] = {}
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = [c for c in SUMMARY_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise InputError(f"{path}: missing column(s) {', '.join(missing)}; re-run the run")
        for line, row in enumerate(reader, start=2):
            if None in row:
                raise InputError(
                    f"{path}:{line}: more fields than columns; quote notes that hold commas"
                )
            key = (row["method"], row["metric"])
            if key in entries:
                raise InputError(f"{path}:{line}: duplicate row for {key[0]} / {key[1]}")
            try:
                n = int(row["n"]) if row["n"].strip() else None
                lo, hi = _float(row.get("ci_low") or ""), _float(row.get("ci_high") or "")
                ci = (lo, hi) if lo is not None and hi is not None else None
                entries[key] = Entry(
                    _float(row["value"]), _float(row["std"]), n, row["note"], ci,
                    _info_text(row.get("info") or ""),
                )  # fmt: skip
            except ValueError as e:
                raise InputError(f"{path}:{line}: {e}; fix or re-run the run") from None
    return entries


def write_heatmaps(heatmap_dir: Path, figures_dir: Path, methods: Sequence[str] = ()) -> list[Path]:
    """Draw ``figures_dir/heatmap_<method>.png`` per method and ``heatmaps_grid.png``.

    Args:
        heatmap_dir: the run's ``heatmaps/`` folder (``<method>/<video>.npy``).
        figures_dir: output folder.
        methods: preferred method order (rows of the grid).

    Returns:
        The PNG files written (none when no map was found).
    """
    maps = load_heatmaps(heatmap_dir, methods)
    if not maps:
        return []
    vmax = shared_vmax(maps)
    written = [
        plot_method_heatmaps(m, videos, vmax, figures_dir / f"heatmap_{m}.png")
        for m, videos in maps.items()
    ]
    written.append(plot_heatmap_grid(maps, vmax, figures_dir / "heatmaps_grid.png"))
    return written


def read_table(run_dir: Path, paper: bool = False) -> tuple[RunInfo, list[str], Table]:
    """A run's ``run.json``, its methods in report order (the run's, then any other
    method of ``summary.csv``) and its paper-layout table (with the paper's rows when
    ``paper``): what every report format and :func:`~reenactbench.report.load.load_run`
    start from."""
    info = read_run(run_dir)
    measured = load_summary(run_dir / "summary.csv")
    extra = [m for m, _ in measured if m not in info.methods]
    methods = [*info.methods, *dict.fromkeys(extra)]
    table = build_table(
        info.kind, info.protocol, methods, info.metrics, measured, paper, info.caption
    )
    return info, methods, table


def write_report(
    run_dir: Path,
    formats: Sequence[str] = DEFAULT_FORMATS,
    paper: bool = False,
    *,
    data_dir: Path | None = None,
    videos: Sequence[str] = (),
    metric: str = "l1",
    index_href: str | None = None,
) -> list[Path]:
    """Write the tables (and heatmap figures, if any) of a run directory, and its HTML page.

    Args:
        run_dir: folder with ``run.json`` and ``summary.csv`` (and optionally ``heatmaps/``,
            ``per_video.csv``, ``cache/``).
        formats: any of ``"csv"``, ``"latex"``, ``"md"``, ``"html"``.
        paper: print the paper's numbers beside ours (Tables 1-3 of Oorloff & Yacoob).
        data_dir, videos, metric, index_href: the HTML page's data folder, grid videos,
            plotted frame metric and index link (:func:`reenactbench.report.html.write_html`).

    Returns:
        The files written: ``tables/<table>.<ext>`` in the order of ``formats``, then
        ``figures/heatmap_<method>.png`` and ``figures/heatmaps_grid.png``, then
        ``report.html`` and its assets.

    Raises:
        InputError: unknown format, not a run directory, malformed inputs.
    """
    run_dir = Path(run_dir)
    wanted = list(dict.fromkeys(f.strip().lower() for f in formats if f.strip()))
    unknown = [f for f in wanted if f not in (*FORMATS, "html")]
    if unknown or not wanted:
        raise InputError(
            f"unknown report format {', '.join(unknown) or '(none)'}; use csv, latex, md or html"
        )
    _, methods, table = read_table(run_dir, paper)
    written = []
    for fmt in (f for f in wanted if f != "html"):
        suffix, render = FORMATS[fmt]
        out = run_dir / "tables" / f"{table.name}{suffix}"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(render(table), encoding="utf-8")
        written.append(out)
    heatmap_dir = run_dir / "heatmaps"
    if heatmap_dir.is_dir():
        written += write_heatmaps(heatmap_dir, run_dir / "figures", methods)
    if "html" in wanted:
        from reenactbench.report.html import write_html

        written += write_html(
            run_dir, table, methods, data_dir=data_dir, videos=videos, metric=metric,
            index_href=index_href,
        )  # fmt: skip
    return written
