"""Per-pixel L1 heatmaps of the robustness protocol (paper Fig. 1, right).

The runner writes ``heatmaps/<method>/<video>.npy``: ``(H, W) float32``, the per-pixel L1
error on the 0..255 scale averaged over channels, frames and the source frames of that
driving video. Every figure of one report shares one colour scale, 0 .. the 99th
percentile of all maps of all methods, so that methods can be compared by colour.
matplotlib is imported only when a figure is drawn, and only its Agg canvas is used (no
pyplot, no global backend switch).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from reenactbench.errors import InputError
from reenactbench.report.paper import method_label

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["CMAP", "load_heatmaps", "plot_heatmap_grid", "plot_method_heatmaps", "shared_vmax"]

Heatmaps = Mapping[str, Mapping[str, np.ndarray]]  # method -> video -> (H, W) float32, 0..255
CMAP = "inferno"
PERCENTILE = 99.0
COLORBAR_LABEL = "L1 (0-255)"
_PANEL_INCHES = 2.0


def load_heatmaps(
    heatmap_dir: Path, methods: Sequence[str] = ()
) -> dict[str, dict[str, np.ndarray]]:
    """Read ``heatmap_dir/<method>/<video>.npy``.

    Args:
        heatmap_dir: the run's ``heatmaps/`` folder.
        methods: preferred method order (others follow alphabetically).

    Returns:
        method -> video (file stem, sorted) -> ``(H, W) float32`` map on the 0..255 scale;
        methods without maps are left out.

    Raises:
        InputError: a file is not a 2-D array, or one method's maps differ in shape.
    """
    found = sorted(p.name for p in heatmap_dir.iterdir() if p.is_dir())
    order = [m for m in methods if m in found] + [m for m in found if m not in methods]
    maps: dict[str, dict[str, np.ndarray]] = {}
    for method in order:
        videos: dict[str, np.ndarray] = {}
        for path in sorted((heatmap_dir / method).glob("*.npy")):
            arr = np.load(path, allow_pickle=False)
            if arr.ndim != 2 or arr.size == 0:
                raise InputError(
                    f"{path}: expected an (H, W) L1 heatmap, got shape {arr.shape}; "
                    "re-run the robustness protocol"
                )
            videos[path.stem] = arr.astype(np.float32, copy=False)
        shapes = {a.shape for a in videos.values()}
        if len(shapes) > 1:
            raise InputError(
                f"{heatmap_dir / method}: heatmaps differ in shape {sorted(shapes)}; "
                "re-run the robustness protocol for this method"
            )
        if videos:
            maps[method] = videos
    return maps


def shared_vmax(maps: Heatmaps) -> float:
    """Upper end of the shared colour scale: the 99th percentile over all maps' pixels.

    Returns:
        The percentile on the 0..255 scale, or 1.0 when every map is zero (so the colour
        scale stays valid).
    """
    pixels = np.concatenate([a.ravel() for v in maps.values() for a in v.values()])
    vmax = float(np.percentile(pixels, PERCENTILE))
    return vmax if vmax > 0 else 1.0


def _figure(rows: int, cols: int) -> Figure:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(_PANEL_INCHES * cols + 1.0, _PANEL_INCHES * rows + 0.4), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _draw(
    fig: Figure,
    grid: list[list[np.ndarray | None]],
    titles: list[list[str]],
    row_labels: Sequence[str],
    vmax: float,
    out: Path,
) -> Path:
    """Draw ``grid`` (rows x cols of maps, ``None`` = empty panel) and save a PNG."""
    axes = fig.subplots(len(grid), len(grid[0]), squeeze=False)
    image = None
    for r, row in enumerate(grid):
        for c, arr in enumerate(row):
            ax = axes[r][c]
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(titles[r][c], fontsize=8)
            if arr is None:
                ax.set_axis_off()
                continue
            image = ax.imshow(arr, cmap=CMAP, vmin=0.0, vmax=vmax, interpolation="nearest")
        if row_labels:
            axes[r][0].set_ylabel(row_labels[r], fontsize=9)
    assert image is not None
    fig.colorbar(image, ax=axes.ravel().tolist(), shrink=0.9, label=COLORBAR_LABEL, extend="max")
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, format="png")
    return out


def plot_method_heatmaps(
    method: str, videos: Mapping[str, np.ndarray], vmax: float, out: Path
) -> Path:
    """One method's maps side by side, the mean over its videos as the last panel.

    Args:
        method: registry name (titled with the paper's label).
        videos: video -> ``(H, W)`` map on the 0..255 scale, all of one shape.
        vmax: upper end of the colour scale (see :func:`shared_vmax`).
        out: PNG path to write.

    Returns:
        ``out``.
    """
    arrays = list(videos.values())
    panels: list[np.ndarray | None] = [*arrays, np.mean(arrays, axis=0)]
    titles = [*videos, "mean"]
    fig = _figure(1, len(panels))
    fig.suptitle(f"{method_label(method)}: per-pixel L1", fontsize=10)
    return _draw(fig, [panels], [titles], [], vmax, out)


def plot_heatmap_grid(maps: Heatmaps, vmax: float, out: Path) -> Path:
    """All methods (rows) by driving videos (columns) on one colour scale.

    Args:
        maps: method -> video -> ``(H, W)`` map on the 0..255 scale; a video a method
            lacks is an empty panel.
        vmax: upper end of the colour scale (see :func:`shared_vmax`).
        out: PNG path to write.

    Returns:
        ``out``.
    """
    videos = sorted({v for per in maps.values() for v in per})
    grid = [[per.get(v) for v in videos] for per in maps.values()]
    titles = [videos if r == 0 else [""] * len(videos) for r in range(len(grid))]
    fig = _figure(len(grid), len(videos))
    return _draw(fig, grid, titles, [method_label(m) for m in maps], vmax, out)
