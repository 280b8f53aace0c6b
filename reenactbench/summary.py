"""Job results and the run's tables: per_video.csv and summary.csv (design §7).

``per_video.csv``: one row per (method, pair, metric): the mean over that pair's frames.
``summary.csv``: one row per (method, metric):

* same-id / cross-id: ``value`` = mean over all frames of all videos (pooled),
  ``std`` = sample std (ddof=1) of the per-video means, ``n`` = videos;
* robustness: ``value`` = mean over the (source, driving) runs of each run's frame mean,
  ``std`` = sample std (ddof=1) over runs, ``n`` = runs (paper Table 3).

A metric that could not be computed has an empty value and ``note = "skipped: <why>"``;
a method that could not run gets such a row for every metric. While a run is in progress
``note`` says ``partial: k/n jobs``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from reenactbench.files import write_json
from reenactbench.metrics import MetricSpec
from reenactbench.protocol import Pair

__all__ = ["JobResult", "PER_VIDEO_COLUMNS", "SUMMARY_COLUMNS", "summarise"]

PER_VIDEO_COLUMNS = ("method", "video", "source", "source_frame", "metric", "value", "n_frames")
SUMMARY_COLUMNS = ("method", "metric", "value", "std", "n", "n_frames", "note")


@dataclass
class JobResult:
    """Per-frame values of one (method, pair): metric key -> ``(n_frames,) float64``."""

    method: str
    pair: Pair
    n_frames: int
    values: dict[str, np.ndarray]

    def save(self, job_dir: Path, fingerprint: str) -> None:
        write_json(
            job_dir / "result.json",
            {
                "fingerprint": fingerprint,
                "method": self.method,
                "driving": self.pair.driving,
                "source": self.pair.source,
                "source_frame": self.pair.source_frame,
                "n_frames": self.n_frames,
                "values": {k: v.tolist() for k, v in self.values.items()},
            },
        )

    @classmethod
    def load(cls, job_dir: Path, fingerprint: str) -> JobResult | None:
        """The stored result if present and made with the same inputs, else ``None``."""
        path = job_dir / "result.json"
        if not path.is_file():
            return None
        try:
            data = json.loads(path.read_text())
        except (json.JSONDecodeError, OSError):
            return None  # a torn write cannot happen (atomic), but a hand edit can
        if data.get("fingerprint") != fingerprint:
            return None
        pair = Pair(data["driving"], data["source"], int(data["source_frame"]))
        values = {k: np.asarray(v, dtype=np.float64) for k, v in data["values"].items()}
        return cls(data["method"], pair, int(data["n_frames"]), values)


def _std(x: np.ndarray) -> float | None:
    """Sample std (ddof=1); ``None`` for one value or non-finite values (PSNR of
    identical frames is +inf)."""
    return float(np.std(x, ddof=1)) if len(x) > 1 and np.all(np.isfinite(x)) else None


def summarise(
    kind: str,
    specs: list[MetricSpec],
    results: dict[str, list[JobResult]],
    skipped_methods: dict[str, str],
    n_jobs: int | None = None,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Rows of per_video.csv and summary.csv from the finished jobs.

    Args:
        kind: protocol kind ("same-id", "cross-id", "robustness").
        specs: requested metrics, in table order.
        results: method -> finished jobs (in pair order).
        skipped_methods: method -> why it could not run.
        n_jobs: jobs expected per method (for the ``partial`` note); ``None``: no note.
    """
    per_video: list[dict[str, Any]] = []
    summary: list[dict[str, Any]] = []
    for method in list(dict.fromkeys([*results, *skipped_methods])):
        jobs = results.get(method, [])
        for spec in specs:
            if method in skipped_methods:
                summary.append(
                    {
                        "method": method,
                        "metric": spec.key,
                        "note": f"skipped: {skipped_methods[method]}",
                    }
                )
                continue
            if not spec.available:
                summary.append(
                    {"method": method, "metric": spec.key, "note": f"skipped: {spec.unavailable}"}
                )
                continue
            frame_values = [j.values[spec.key] for j in jobs if spec.key in j.values]
            for j in jobs:
                if spec.key in j.values:
                    per_video.append(
                        {
                            "method": method,
                            "video": j.pair.driving,
                            "source": j.pair.source,
                            "source_frame": j.pair.source_frame,
                            "metric": spec.key,
                            "value": float(np.mean(j.values[spec.key])),
                            "n_frames": j.n_frames,
                        }
                    )
            if not frame_values:
                continue
            means = np.array([np.mean(v) for v in frame_values])
            pooled = np.concatenate(frame_values)
            value = float(np.mean(means)) if kind == "robustness" else float(np.mean(pooled))
            note = ""
            if n_jobs is not None and len(jobs) < n_jobs:
                note = f"partial: {len(jobs)}/{n_jobs} jobs"
            summary.append(
                {
                    "method": method,
                    "metric": spec.key,
                    "value": value,
                    "std": _std(means),
                    "n": len(means),
                    "n_frames": len(pooled),
                    "note": note,
                }
            )
    return per_video, summary
