"""The run's tables from its job records: per_video.csv and summary.csv (design §7).

``per_video.csv``: one row per (method, pair, metric): that job's value (frame metrics:
the mean over its frames; FID/FVD: the Fréchet distance of its features; correlations:
the mean over dimensions). ``summary.csv``: one row per (method, metric):

* same-id / cross-id: ``value`` = the metric over all jobs (frame metrics pooled over all
  frames, FID/FVD over the merged features, correlations averaged over videos),
  ``std`` = sample std (ddof=1) of the per-job values, ``n`` = jobs (videos);
* robustness: ``value`` = mean of the per-run values, ``std`` = sample std (ddof=1) over
  runs, ``n`` = runs (paper Table 3).

``ci_low``/``ci_high``: percentile bootstrap 95 % interval over jobs (``--bootstrap N``;
empty when off). ``info``: JSON facts recorded with the number (backend, excluded frames
or series, weight checksum status). A metric that could not be computed has an empty
value and ``note = "skipped: <why>"``; a method that could not run gets such a row for
every metric. While a run is in progress ``note`` says ``partial: k/n jobs``; jobs whose
records no longer count (made with other metric settings, code or frames) are named in
the note as ``stale`` with the command that brings them up to date.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from reenactbench.cache import JobRecord
from reenactbench.metrics import MetricSpec
from reenactbench.metrics.base import JobPart, merged_info, pooled_value
from reenactbench.metrics.fvd import capped_jobs

__all__ = ["PER_VIDEO_COLUMNS", "SUMMARY_COLUMNS", "summarise"]

PER_VIDEO_COLUMNS = ("method", "video", "source", "source_frame", "metric", "value", "n_frames")
SUMMARY_COLUMNS = (
    "method",
    "metric",
    "value",
    "std",
    "n",
    "n_frames",
    "ci_low",
    "ci_high",
    "info",
    "note",
)


def _std(x: np.ndarray) -> float | None:
    """Sample std (ddof=1); ``None`` for one value or non-finite values (PSNR of
    identical frames is +inf)."""
    return float(np.std(x, ddof=1)) if len(x) > 1 and np.all(np.isfinite(x)) else None


def _bootstrap(
    kind: str, robustness: bool, parts: list[JobPart], job_values: np.ndarray, n: int
) -> tuple[float | None, float | None]:
    """Percentile 95 % interval of the table value over ``n`` resamples of the jobs
    (seeded, so tables are reproducible)."""
    if n <= 0 or len(parts) < 2 or (kind == "distribution" and not robustness):
        return None, None  # FID/FVD: one D x D eigendecomposition per resample: too slow
    rng = np.random.default_rng(0)
    stats = []
    for _ in range(n):
        idx = rng.integers(0, len(parts), len(parts))
        if robustness:
            stats.append(float(np.mean(job_values[idx])))
        else:
            stats.append(pooled_value(kind, [parts[i] for i in idx])[0])
    arr = np.array(stats)
    arr = arr[np.isfinite(arr)]
    if not len(arr):
        return None, None
    return float(np.percentile(arr, 2.5)), float(np.percentile(arr, 97.5))


def summarise(
    kind: str,
    specs: list[MetricSpec],
    results: dict[str, list[JobRecord]],
    skipped_methods: dict[str, str],
    skipped_metrics: dict[str, str] | None = None,
    n_jobs: int | None = None,
    bootstrap: int = 0,
    weight_flags: dict[str, str] | None = None,
    final: bool = True,
    stale: dict[str, str] | None = None,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Rows of per_video.csv and summary.csv from the finished jobs.

    Args:
        kind: protocol kind ("same-id", "cross-id", "robustness").
        specs: requested metrics, in table order.
        results: method -> finished jobs (in pair order).
        skipped_methods: method -> why it could not run.
        skipped_metrics: metric key -> why it could not run.
        n_jobs: jobs expected per method (for the ``partial`` note); ``None``: no note.
        bootstrap: bootstrap resamples for the 95 % interval (0: off).
        weight_flags: metric key -> a flag about its weights (unpinned / mismatch).
        final: ``False`` for the tables rewritten after each job: the pooled FID/FVD
            (a D x D eigendecomposition) is then left for the final write.
        stale: method -> why some of its records no longer count (and how to redo them).
    """
    skipped_metrics = skipped_metrics or {}
    stale = stale or {}
    weight_flags = weight_flags or {}
    per_video: list[dict[str, Any]] = []
    summary: list[dict[str, Any]] = []
    for method in list(dict.fromkeys([*results, *skipped_methods])):
        jobs = results.get(method, [])
        for spec in specs:
            row: dict[str, Any] = {"method": method, "metric": spec.key}
            if method in skipped_methods:
                summary.append({**row, "note": f"skipped: {skipped_methods[method]}"})
                continue
            if spec.key in skipped_metrics:
                summary.append({**row, "note": f"skipped: {skipped_metrics[spec.key]}"})
                continue
            done = [j for j in jobs if spec.key in j.parts]
            if not done:
                if method in stale:
                    summary.append({**row, "n": 0, "note": f"partial: 0/{n_jobs}; {stale[method]}"})
                continue
            parts = [j.parts[spec.key] for j in done]
            values = np.array([j.value(spec.key) for j in done])
            for j, v in zip(done, values, strict=True):
                per_video.append(
                    {
                        "method": method,
                        "video": j.pair.driving,
                        "source": j.pair.source,
                        "source_frame": j.pair.source_frame,
                        "metric": spec.key,
                        "value": float(v),
                        "n_frames": j.n_frames,
                    }
                )
            robustness = kind == "robustness"
            if robustness:
                finite = values[~np.isnan(values)]
                value = float(np.mean(finite)) if len(finite) else float("nan")
                info = merged_info(parts)
            elif spec.kind == "distribution" and not final:
                value, info = None, merged_info(parts)
            else:
                if spec.kind == "distribution":  # one job's feature rows at a time
                    keep = capped_jobs([j.pair.key for j in done], [p.info for p in parts])
                    value, info = pooled_value(
                        spec.kind, (done[i].full_part(spec.key) for i in keep)
                    )
                else:
                    value, info = pooled_value(spec.kind, parts)
                info = {**merged_info(parts), **info}
            if spec.key in weight_flags:
                info["weights"] = weight_flags[spec.key]
            lo, hi = _bootstrap(spec.kind, robustness, parts, values, bootstrap)
            note = ""
            if n_jobs is not None and len(done) < n_jobs:
                note = f"partial: {len(done)}/{n_jobs} jobs"
                if method in stale:
                    note += f"; {stale[method]}"
            elif value is None:
                note = "pending: computed when the run ends"
            elif np.isnan(value):
                note = "undefined: no job gave a value (see info: excluded frames or series)"
            summary.append(
                {
                    **row,
                    "value": value,
                    "std": _std(values[~np.isnan(values)]),
                    "n": len(values),
                    "n_frames": sum(j.n_frames for j in done),
                    "ci_low": lo,
                    "ci_high": hi,
                    "info": json.dumps(info, sort_keys=True) if info else "",
                    "note": note,
                }
            )
    return per_video, summary
