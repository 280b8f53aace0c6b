"""Line and spread plots of a run for the HTML report.

* :func:`plot_frame_series`: one line per method over the frame index (per-frame values
  of one driving video, :func:`reenactbench.report.media.frame_series`). Non-finite
  values (NaN: a frame left out, e.g. the source frame; inf: PSNR of an exact frame) are
  gaps in the line.
* :func:`plot_spread`: per method a box plot (median, quartiles, whiskers at 1.5 IQR)
  with every value drawn over it as a point, jittered sideways by a fixed-seed generator
  (:data:`JITTER_SEED`, the same jitter for the same values), for Table 3's spread over
  (source, driving) runs. Non-finite values are left out.

Methods are labelled with the paper's names (:func:`~reenactbench.report.paper.method_label`).
As in :mod:`reenactbench.report.heatmaps`, matplotlib is imported only when drawing and only
its Agg canvas is used (no pyplot); PNGs are rendered to memory and written atomically
(:func:`~reenactbench.files.atomic_write_bytes`).
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from reenactbench.errors import InputError
from reenactbench.files import atomic_write_bytes
from reenactbench.report.paper import method_label

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["JITTER_SEED", "plot_frame_series", "plot_spread"]

JITTER_SEED = 0
_JITTER = 0.12  # half-width of the sideways jitter, in box widths
_DPI = 100
_MARKERS_UP_TO = 100  # frames: longer series are drawn as lines only


def _figure(width: float, height: float) -> Figure:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=_DPI)
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, out: Path) -> Path:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    atomic_write_bytes(Path(out), buf.getvalue())
    return Path(out)


def _finite(values: Sequence[float] | np.ndarray) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64).ravel()
    return arr[np.isfinite(arr)]


def plot_frame_series(
    series: Mapping[str, np.ndarray], metric_label: str, title: str, out: Path
) -> Path:
    """One line per method: ``metric_label`` over the frame index.

    Args:
        series: method -> ``(N,)`` per-frame values (lengths may differ).
        metric_label: y axis label, e.g. ``"L1 (0-255)"``.
        title: figure title.
        out: PNG path to write.

    Returns:
        ``out``.

    Raises:
        InputError: no method has a finite value.
    """
    if not any(_finite(v).size for v in series.values()):
        raise InputError(f"{out}: no finite {metric_label} values to plot; check the run")
    from matplotlib.ticker import MaxNLocator

    fig = _figure(6.4, 3.6)
    ax = fig.subplots()
    for method, values in series.items():
        y = np.asarray(values, dtype=np.float64).ravel()
        y = np.where(np.isfinite(y), y, np.nan)
        marker = "." if y.size <= _MARKERS_UP_TO else None  # a frame between gaps shows
        ax.plot(np.arange(y.size), y, label=method_label(method), linewidth=1.2, marker=marker)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("frame")
    ax.set_ylabel(metric_label)
    ax.set_title(title, fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    return _save(fig, out)


def plot_spread(
    values: Mapping[str, Sequence[float]], metric_label: str, title: str, out: Path
) -> Path:
    """Per method a box plot of ``values`` with the values as jittered points over it.

    Args:
        values: method -> one value per (source, driving) run; non-finite values and
            methods without a finite value are left out.
        metric_label: y axis label.
        title: figure title.
        out: PNG path to write.

    Returns:
        ``out``.

    Raises:
        InputError: no method has a finite value.
    """
    kept = {m: _finite(v) for m, v in values.items()}
    kept = {m: v for m, v in kept.items() if v.size}
    if not kept:
        raise InputError(f"{out}: no finite {metric_label} values to plot; check the run")
    fig = _figure(max(4.0, 1.1 * len(kept) + 1.5), 3.6)
    ax = fig.subplots()
    positions = np.arange(1, len(kept) + 1)
    ax.boxplot(list(kept.values()), positions=positions, widths=0.5, showfliers=False)
    for pos, arr in zip(positions, kept.values(), strict=True):
        rng = np.random.default_rng(JITTER_SEED)  # per method: independent of the others
        x = pos + rng.uniform(-_JITTER, _JITTER, arr.size)
        ax.scatter(x, arr, s=14, alpha=0.7, zorder=3)
    ax.set_xticks(positions, [method_label(m) for m in kept], rotation=20, ha="right")
    ax.set_ylabel(metric_label)
    ax.set_title(title, fontsize=10)
    ax.grid(True, axis="y", alpha=0.3)
    fig.tight_layout()
    return _save(fig, out)
