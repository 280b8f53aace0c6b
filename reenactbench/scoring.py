"""Frame-metric accumulation shared by the runner and ``reenactbench score``.

Works on ``(B, H, W, 3) uint8`` RGB batches at the evaluation resolution and keeps one
float64 value per frame and metric (500 frames x a few metrics per video: tiny), so
per-video and pooled means are exact and independent of the batch size.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from itertools import zip_longest
from pathlib import Path
from typing import Any

import numpy as np

from reenactbench.errors import InputError
from reenactbench.metrics import MetricSpec, resolve_metrics
from reenactbench.video import RESIZE_MODE, iter_frames, list_videos

__all__ = ["FrameScorer", "pooled_mean", "score_folders"]


class FrameScorer:
    """Per-frame values of the available frame metrics among ``specs``.

    Metrics that are unavailable or not frame-level are ignored here; the caller
    reports them as skipped.
    """

    def __init__(self, specs: Sequence[MetricSpec]) -> None:
        self.specs = [s for s in specs if s.kind == "frame" and s.available]
        self._values: dict[str, list[np.ndarray]] = {s.key: [] for s in self.specs}
        self.n_frames = 0

    def add(self, fake: np.ndarray, real: np.ndarray) -> None:
        """Score one batch: ``fake``, ``real`` ``(B, H, W, 3) uint8`` of equal shape."""
        for spec in self.specs:
            assert spec.fn is not None
            self._values[spec.key].append(np.asarray(spec.fn(fake, real), dtype=np.float64))
        self.n_frames += len(fake)

    def values(self) -> dict[str, np.ndarray]:
        """Metric key -> ``(N,) float64`` per-frame values, in frame order."""
        return {
            k: np.concatenate(v) if v else np.zeros(0, dtype=np.float64)
            for k, v in self._values.items()
        }


def pooled_mean(per_frame: Sequence[np.ndarray]) -> float:
    """Mean over all frames of several videos (frame-weighted, design §5)."""
    allv = np.concatenate([np.asarray(v, dtype=np.float64) for v in per_frame])
    return float(allv.mean()) if len(allv) else float("nan")


def _video_names(folder: Path) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for path in list_videos(folder):
        name = path.stem if path.is_file() else path.name
        if name in found:
            raise InputError(f"{path}: two videos in {folder} are named {name!r}; rename one")
        found[name] = path
    return found


def score_folders(
    real_dir: Path,
    fake_dir: Path,
    metrics: Sequence[str],
    resolution: int = 256,
    max_frames: int | None = None,
    batch_size: int = 16,
    on_progress: Callable[[str, int, int], None] | None = None,
) -> dict[str, Any]:
    """Score every fake video against the real video of the same name.

    Both folders hold videos (files or frame folders) matched by name (file stem or
    folder name); every pair must have the same number of frames (after ``max_frames``).
    Frames are resized (``video.resize``) to ``resolution`` before scoring.

    Returns:
        ``{"metrics": {key: pooled mean}, "skipped": {key: reason}, "per_video":
        {video: {key: mean}}, "n_frames": N, "resolution": R, "resize": mode,
        "backends": {}, "weights": {}}`` (the ``score --json`` schema, design §1).

    Raises:
        InputError: unmatched names, differing frame counts, unreadable videos.
        MetricError: unknown metric key.
    """
    specs = resolve_metrics(list(metrics))
    real, fake = _video_names(Path(real_dir)), _video_names(Path(fake_dir))
    if set(real) != set(fake):
        only_real, only_fake = sorted(set(real) - set(fake)), sorted(set(fake) - set(real))
        parts = []
        if only_fake:
            parts.append(f"{len(only_fake)} fake video(s) without a real one (e.g. {only_fake[0]})")
        if only_real:
            parts.append(f"{len(only_real)} real video(s) without a fake one (e.g. {only_real[0]})")
        raise InputError(
            f"{fake_dir} and {real_dir} do not match by name: {'; '.join(parts)}; "
            "name each fake video like its ground truth"
        )
    per_frame: dict[str, list[np.ndarray]] = {s.key: [] for s in specs}
    per_video: dict[str, dict[str, float]] = {}
    n_total = 0
    for i, name in enumerate(sorted(real)):
        scorer = FrameScorer(specs)
        fakes = iter_frames(fake[name], max_frames=max_frames, size=resolution)
        reals = iter_frames(real[name], max_frames=max_frames, size=resolution)
        buf_f: list[np.ndarray] = []
        buf_r: list[np.ndarray] = []
        n = 0
        for f, r in zip_longest(fakes, reals):
            if f is None or r is None:
                raise InputError(
                    f"{fake[name]}: frame count differs from {real[name]} (they differ after "
                    f"frame {n}); give both the same frames or pass --max-frames"
                )
            buf_f.append(f)
            buf_r.append(r)
            n += 1
            if len(buf_f) == batch_size:
                scorer.add(np.stack(buf_f), np.stack(buf_r))
                buf_f.clear()
                buf_r.clear()
        if buf_f:
            scorer.add(np.stack(buf_f), np.stack(buf_r))
        values = scorer.values()
        per_video[name] = {k: float(np.mean(v)) for k, v in values.items()}
        for k, v in values.items():
            per_frame[k].append(v)
        n_total += n
        if on_progress:
            on_progress("score", i + 1, len(real))
    return {
        "metrics": {s.key: pooled_mean(per_frame[s.key]) for s in specs if s.available},
        "skipped": {s.key: s.unavailable for s in specs if not s.available},
        "per_video": per_video,
        "n_frames": n_total,
        "resolution": resolution,
        "resize": RESIZE_MODE,
        "backends": {},
        "weights": {},
    }
