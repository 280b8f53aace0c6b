"""The HTML report of a run directory: ``report.html`` plus ``report_assets/``.

One page per run (:func:`write_html`): the paper-layout table (the same cells, paper rows,
intervals and footnotes as the Markdown table, rendered by pandas' Styler), the heatmaps
(robustness), the Table 3 spread per method as a box/strip plot (robustness), a video
grid per chosen driving video (source image | driving video | each method's output,
composed into one VP9 WebM so the panels play in sync), the chosen frame metric over time
for that video, and the per-video breakdown as a table that sorts by any column.

Everything the page shows comes from the run directory (``run.json``, ``summary.csv``,
``per_video.csv``, ``figures/``, the job records in ``cache/`` and the frames saved by
``--save-frames``) and, for the source and driving panels, the prepared data folder
(``data``; by default the one recorded in ``history.jsonl``). The page has no external
resource: styles and script are inlined, media sit in ``report_assets/``. A run of several
protocols gets an index page (:func:`write_index`) linking each run's page.

The page is a Jinja2 template with autoescaping on: every run-supplied text (method,
video and metric names, notes) is escaped; the table fragments come from Styler with
``escape="html"``.
"""

from __future__ import annotations

import hashlib
import re
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
from markupsafe import Markup
from pandas.io.formats.style import Styler

from reenactbench.files import atomic_write_text

__all__ = ["ASSETS", "PAGE", "INDEX", "write_html", "write_index"]

#: File names inside a run directory (and of the index page of a folder of runs).
PAGE, ASSETS, INDEX = "report.html", "report_assets", "index.html"
#: Default number of driving videos that get a video grid (first ones by name).
DEFAULT_GRIDS = 2
_TEMPLATES = Path(__file__).with_name("templates")


@dataclass(frozen=True)
class Figure:
    src: str
    alt: str
    caption: str


def _env() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(_TEMPLATES),
        autoescape=jinja2.select_autoescape(enabled_extensions=("html", "j2")),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
    )


def _version() -> str:
    from reenactbench import __version__

    return __version__


def asset_name(stem: str, key: str, suffix: str) -> str:
    """A file name for ``key`` (a video or method name, any characters): a safe slug plus
    a short hash, so two names never share a file."""
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", key).strip("._")[:40] or "x"
    digest = hashlib.sha256(key.encode()).hexdigest()[:8]
    return f"{stem}_{slug}_{digest}{suffix}"


# ------------------------------------------------------------------------ page parts
def _per_video_html(per_video: Any) -> Markup | None:
    """``per_video.csv`` pivoted to one row per job (method, driving video, source,
    source frame) and one column per metric, as a sortable table."""
    if per_video is None or per_video.empty:
        return None
    keys = [c for c in ("method", "video", "source", "source_frame") if c in per_video.columns]
    wide = per_video.pivot_table(
        index=keys, columns="metric", values="value", aggfunc="first", sort=True
    ).reset_index()
    wide.columns = [str(c) for c in wide.columns]
    styler = (  # a fixed uuid and no cell ids: the same run gives the same page
        Styler(wide, uuid="per_video", cell_ids=False)
        .hide(axis="index")
        .format(precision=4, na_rep="", escape="html")
        .format_index(escape="html", axis=1)
        .set_table_attributes('class="sortable per-video"')
    )
    return Markup(styler.to_html())


def _copy_asset(src: Path, assets: Path) -> str:
    assets.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, assets / src.name)
    return f"{ASSETS}/{src.name}"


def _heatmap_figures(run_dir: Path, assets: Path) -> list[Figure]:
    """The report's heatmap PNGs (``figures/``, drawn by :func:`write_heatmaps`), copied
    into the assets; the grid first."""
    figures = run_dir / "figures"
    if not figures.is_dir():
        return []
    found = sorted(figures.glob("heatmap*.png"), key=lambda p: (p.name != "heatmaps_grid.png", p))
    out = []
    for png in found:
        what = "all methods" if png.name == "heatmaps_grid.png" else png.stem[len("heatmap_") :]
        caption = f"Per-pixel L1 (0-255) averaged over each driving video's runs: {what}."
        out.append(Figure(_copy_asset(png, assets), f"L1 heatmap, {what}", caption))
    return out


def _spread_figure(per_video: Any, metric: str, assets: Path, label: str) -> Figure | None:
    """Robustness: the per-run values of ``metric`` per method (box + points)."""
    from reenactbench.report.plots import plot_spread

    rows = per_video[per_video["metric"] == metric] if per_video is not None else None
    if rows is None or rows.empty:
        return None
    values = {m: list(g["value"].dropna()) for m, g in rows.groupby("method", sort=False)}
    out = plot_spread(values, label, f"{label} per (source, driving) run", assets / "spread.png")
    caption = (
        f"{label} of each (source, driving) run, per method: the spread behind Table 3's "
        "mean ± std."
    )
    return Figure(f"{ASSETS}/{out.name}", f"{label} spread per method", caption)


@dataclass(frozen=True)
class Grid:
    video: str
    src: str
    n_frames: int
    fps: float
    panels: tuple[str, ...]
    missing: tuple[str, ...]
    notes: tuple[str, ...]
    series: Figure | None


def _series_figure(
    run_dir: Path, video: str, metric: str, label: str, assets: Path
) -> Figure | None:
    """``metric`` per frame on ``video``, one line per method (from the job records)."""
    from reenactbench.report.media import frame_series
    from reenactbench.report.plots import plot_frame_series

    series = {m: v for m, v in frame_series(run_dir, metric, video).items() if len(v)}
    if not series:
        return None
    out = assets / asset_name("series", video, ".png")
    plot_frame_series(series, label, f"{label} per frame, driving video {video}", out)
    caption = (
        f"{label} of each generated frame of {video} (the job's per-frame values; the "
        "source frame, not scored, is a gap)."
    )
    return Figure(f"{ASSETS}/{out.name}", f"{label} over time on {video}", caption)


def _grids(
    run_dir: Path,
    videos: Sequence[str],
    methods: Sequence[str],
    data_dir: Path | None,
    metric: str,
    assets: Path,
) -> tuple[list[Grid], list[str]]:
    """A video grid (and the metric over time) per driving video that has saved frames of
    some method; notes for what is not shown and how to get it."""
    from reenactbench.metrics import get_metric
    from reenactbench.report.media import chosen_pair, grid_for_video, pair_frames

    label = get_metric(metric).label
    if not (run_dir / "cache").is_dir() or not (run_dir / "pairs.csv").is_file():
        return [], [
            "No video grid: this run directory has no job records (cache/) or pairs.csv; "
            "make the page in the run's own --out folder."
        ]
    grids: list[Grid] = []
    unsaved: set[str] = set()
    for video in videos:
        pair = chosen_pair(run_dir, video)
        saved = {m: pair_frames(run_dir, m, pair) is not None for m in methods}
        unsaved.update(m for m, ok in saved.items() if not ok)
        if not any(saved.values()):
            continue
        out = assets / asset_name("grid", video, ".webm")
        result = grid_for_video(run_dir, video, methods, data_dir, out)
        grids.append(
            Grid(
                video, f"{ASSETS}/{result.path.name}", result.n_frames, result.fps,
                result.panels, result.missing, result.notes,
                _series_figure(run_dir, video, metric, label, assets),
            )
        )  # fmt: skip
    notes = []
    if unsaved:
        notes.append(
            f"No saved frames for {', '.join(sorted(unsaved))}: run the same `reenactbench "
            "run ...` command again with --save-frames (only the jobs whose frames were not "
            "saved run again), then `reenactbench report RUN --format html`."
        )
    if data_dir is None:
        notes.append(
            "The source and driving panels need the prepared data folder: pass `--data DIR` "
            "(the run's own folder, recorded in history.jsonl, was not found)."
        )
    return grids, notes


# ---------------------------------------------------------------------------- pages
def _chosen_videos(per_video: Any, videos: Sequence[str]) -> list[str]:
    """``videos`` as given (unknown names are an error), else the first
    :data:`DEFAULT_GRIDS` driving videos of the run by name."""
    from reenactbench.errors import InputError

    known = sorted(set(per_video["video"])) if per_video is not None and len(per_video) else []
    if not videos:
        return known[:DEFAULT_GRIDS]
    unknown = [v for v in videos if v not in known]
    if unknown:
        raise InputError(
            f"--video {', '.join(unknown)}: not a driving video of this run; "
            f"choose from {', '.join(known[:10]) or '(none)'}"
        )
    return list(dict.fromkeys(videos))


def write_html(
    run_dir: Path,
    table: Any,
    methods: Sequence[str],
    *,
    data_dir: Path | None = None,
    videos: Sequence[str] = (),
    metric: str = "l1",
    index_href: str | None = None,
) -> list[Path]:
    """Write ``run_dir/report.html`` and its ``report_assets/`` (see the module docstring).

    Args:
        run_dir: a run directory (``run.json``, ``summary.csv``; the rest is optional).
        table: the run's :class:`~reenactbench.report.tables.Table` (paper rows included
            when the report was asked for them).
        methods: the methods in report order.
        data_dir: the prepared data (source and driving panels); default: the folder
            recorded in ``history.jsonl``, when it exists.
        videos: driving videos that get a grid; default: the first two by name. A grid
            plays at the driving video's frame rate (the data's manifest; else 25 fps).
        metric: the frame metric plotted over time, and the spread plot's metric.
        index_href: link back to an index page, if any.

    Returns:
        ``report.html`` followed by the asset files written.
    """
    from reenactbench.metrics import get_metric
    from reenactbench.report.load import read_per_video
    from reenactbench.report.media import run_data_dir
    from reenactbench.report.tables import render_html

    run_dir = Path(run_dir)
    assets = run_dir / ASSETS
    shutil.rmtree(assets, ignore_errors=True)  # assets of an earlier report
    assets.mkdir(parents=True)
    data_dir = data_dir if data_dir is not None else run_data_dir(run_dir)
    per_video = read_per_video(run_dir)  # the table is the caller's: not rebuilt here
    label = get_metric(metric).label
    grids, notes = _grids(
        run_dir, _chosen_videos(per_video, videos), methods, data_dir, metric, assets
    )
    spread = None
    if table.kind == "robustness":
        spread = _spread_figure(per_video, metric, assets, label)
    page = (
        _env()
        .get_template("report.html.j2")
        .render(
            title=f"{table.protocol}: {run_dir.name}",
            protocol=table.protocol,
            kind=table.kind,
            methods=list(methods),
            version=_version(),
            run_name=run_dir.name,
            index_href=index_href,
            table_html=Markup(render_html(table)),
            heatmaps=_heatmap_figures(run_dir, assets),
            spread=spread,
            grids=grids,
            grid_notes=notes,
            per_video_html=_per_video_html(per_video),
        )
    )
    atomic_write_text(run_dir / PAGE, page)
    return [run_dir / PAGE, *sorted(p for p in assets.iterdir() if p.is_file())]


def write_index(root: Path, run_dirs: Sequence[Path], title: str | None = None) -> Path:
    """``root/index.html`` linking the ``report.html`` of each run in ``run_dirs``
    (folders below ``root``)."""
    from reenactbench.report import read_run

    runs = []
    for run_dir in run_dirs:
        info = read_run(run_dir)
        runs.append(
            {
                "href": f"{run_dir.relative_to(root).as_posix()}/{PAGE}",
                "name": run_dir.name,
                "protocol": info.protocol,
                "kind": info.kind,
                "methods": list(info.methods),
            }
        )
    page = (
        _env()
        .get_template("index.html.j2")
        .render(title=title or f"reenactbench runs in {root.name}", runs=runs, version=_version())
    )
    atomic_write_text(root / INDEX, page)
    return root / INDEX
