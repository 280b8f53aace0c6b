"""Scoring shared by the runner and ``reenactbench score``: build each requested
metric's evaluator once, then stream jobs through all of them.

Works on ``(B, E, E, 3) uint8`` RGB batches at the evaluation resolution E. Metrics that
cannot run (not implemented, weights or packages missing, backend options incomplete)
are returned as ``skipped`` with their reason and never produce numbers.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from itertools import zip_longest
from pathlib import Path
from typing import Any

import numpy as np

from reenactbench.errors import InputError
from reenactbench.metrics import MetricSpec, get_metric, resolve_metrics
from reenactbench.metrics.base import (
    Evaluator,
    JobPart,
    MetricContext,
    job_value,
    merged_info,
    pooled_value,
)
from reenactbench.metrics.fvd import capped_jobs
from reenactbench.video import RESIZE_MODE, iter_frames, list_videos, lossy_video
from reenactbench.weights import weight_path, weight_record

__all__ = [
    "JobScorer",
    "build_evaluators",
    "prepare_metrics",
    "score_folders",
    "weight_flags",
]


def prepare_metrics(
    specs: Sequence[MetricSpec], ctx: MetricContext
) -> tuple[list[MetricSpec], dict[str, str], dict[str, dict[str, str]]]:
    """Sort the requested metrics into those that can run with ``ctx`` and the rest.

    Returns:
        ``(runnable specs, skipped {key: reason}, weights {name: record})`` where a
        weight record is ``{"path", "sha256", "status": ok|unpinned|mismatch}``.
        Nothing heavy is loaded: build evaluators with :func:`build_evaluators`.

    Raises:
        InputError: a backend chosen by name lacks a package (names the extra).
    """
    runnable: list[MetricSpec] = []
    skipped: dict[str, str] = {}
    weights: dict[str, dict[str, str]] = {}
    for spec in specs:
        missing = spec.packages(ctx) if spec.packages is not None else None
        if missing:
            raise InputError(f"metric {spec.key}: {missing}")
        reason = spec.why_not(ctx)
        if reason:
            skipped[spec.key] = reason
            continue
        for name in spec.needed_weights(ctx):
            if name not in weights:
                weights[name] = weight_record(name, weight_path(name, ctx.weights))
        runnable.append(spec)
    return runnable, skipped, weights


def build_evaluators(specs: Sequence[MetricSpec], ctx: MetricContext) -> dict[str, Evaluator]:
    """One evaluator per runnable metric (networks load here, once per run)."""
    return {spec.key: spec.evaluator(ctx) for spec in specs}


def weight_flags(
    specs: Sequence[MetricSpec], ctx: MetricContext, records: dict[str, dict[str, str]]
) -> dict[str, str]:
    """Metric key -> e.g. ``"i3d unpinned"`` / ``"fid-inception sha256 MISMATCH"`` for
    every metric whose weights are not verified against a published hash."""
    flags: dict[str, str] = {}
    for spec in specs:
        notes = []
        for name in spec.needed_weights(ctx):
            status = records[name]["status"]
            if status == "unpinned":
                notes.append(f"{name} unpinned (sha256 {records[name]['sha256'][:12]})")
            elif status == "mismatch":
                notes.append(f"{name} sha256 MISMATCH")
        if notes:
            flags[spec.key] = "; ".join(notes)
    return flags


class JobScorer:
    """Feeds one job's frames to every evaluator."""

    def __init__(self, evaluators: dict[str, Evaluator]) -> None:
        self.evaluators = evaluators

    def begin(self, source: np.ndarray, job: tuple[str, str, str] | None = None) -> None:
        """``source``: ``(E, E, 3) uint8``; ``job``: (method, job key, driving video) for
        evaluators that read per-job inputs (OpenFace CSVs)."""
        for ev in self.evaluators.values():
            set_job = getattr(ev, "set_job", None)
            if job is not None and callable(set_job):
                set_job(*job)
            ev.begin(source)

    def add(self, fake: np.ndarray, real: np.ndarray) -> None:
        for ev in self.evaluators.values():
            ev.add(fake, real)

    def end(self, leave_out: int | None = None) -> dict[str, JobPart]:
        """The job's parts; ``leave_out``: a frame index that metrics with one value or
        row per frame (frame metrics, FID) drop, counted as ``source_frame_left_out``
        (the driving frame that is the job's source, docs/metrics.md)."""
        parts = {key: ev.end() for key, ev in self.evaluators.items()}
        if leave_out is not None:
            for key, part in parts.items():
                if get_metric(key).frame_rows:
                    parts[key] = _drop_frame(part, leave_out)
        return parts


def _drop_frame(part: JobPart, index: int) -> JobPart:
    """``part`` without frame ``index`` (its value, or its fake and real rows)."""
    rows = part.values if part.values is not None else part.fake
    if rows is None or index >= len(rows):
        return part
    keep = np.arange(len(rows)) != index
    return JobPart(
        values=None if part.values is None else part.values[keep],
        fake=None if part.fake is None else part.fake[keep],
        real=None if part.real is None else part.real[keep],
        info={**part.info, "source_frame_left_out": 1},
    )


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
    ctx: MetricContext | None = None,
) -> dict[str, Any]:
    """Score every fake video against the real video of the same name.

    Both folders hold videos (files or frame folders) matched by name (file stem or
    folder name); every pair must have the same number of frames (after ``max_frames``).
    Frames are resized (``video.resize``) to ``resolution`` before scoring. The first
    real frame of each video plays the source (used by nothing in same-id scoring).

    Args:
        ctx: device, weight overrides and backend options (default: CPU, cache).

    Returns:
        ``{"metrics": {key: value}, "skipped": {key: reason}, "per_video": {video:
        {key: value}}, "n_frames": N, "resolution": R, "resize": mode, "backends":
        {key: info}, "weights": {name: sha256}}`` (the ``score --json`` schema,
        design §1); frame metrics are pooled over frames, distribution metrics over
        all videos' features, correlations averaged over videos.

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
    ctx = ctx or MetricContext(batch_size=batch_size)
    warnings = [
        f"{fake[name]}: {why} is lossy; scores of re-encoded frames are not the method's "
        "(write PNG frames: docs/metrics.md)"
        for name in sorted(fake)
        if (why := lossy_video(fake[name]))
    ]
    runnable, skipped, weights = prepare_metrics(specs, ctx)
    evaluators = build_evaluators(runnable, ctx)
    scorer = JobScorer(evaluators)
    by_metric: dict[str, list[JobPart]] = {k: [] for k in evaluators}
    per_video: dict[str, dict[str, float]] = {}
    n_total = 0
    for i, name in enumerate(sorted(real)):
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
            if n == 0:
                scorer.begin(r, ("", name, name))  # OpenFace: DIR/fake/<video>.csv
            buf_f.append(f)
            buf_r.append(r)
            n += 1
            if len(buf_f) == batch_size:
                scorer.add(np.stack(buf_f), np.stack(buf_r))
                buf_f.clear()
                buf_r.clear()
        if buf_f:
            scorer.add(np.stack(buf_f), np.stack(buf_r))
        parts = scorer.end()
        per_video[name] = {}
        for key, part in parts.items():
            by_metric[key].append(part)
            per_video[name][key] = job_value(get_metric(key).kind, part)
        n_total += n
        if on_progress:
            on_progress("score", i + 1, len(real))
    values: dict[str, float] = {}
    backends: dict[str, dict[str, Any]] = {}
    for key, parts_ in by_metric.items():
        keep = capped_jobs(sorted(real), [p.info for p in parts_])  # FVD clip cap
        values[key], info = pooled_value(get_metric(key).kind, [parts_[i] for i in keep])
        info.update(merged_info(parts_))
        if info:
            backends[key] = info
    return {
        "metrics": values,
        "skipped": skipped,
        "per_video": per_video,
        "n_frames": n_total,
        "resolution": resolution,
        "resize": RESIZE_MODE,
        "backends": backends,
        "weights": {name: rec["sha256"] for name, rec in weights.items()},
        "weights_status": {name: rec["status"] for name, rec in weights.items()},
        "warnings": warnings,
    }
