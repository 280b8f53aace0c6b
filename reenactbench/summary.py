"""Job results and the run's tables: per_video.csv and summary.csv (design §7).

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
every metric. While a run is in progress ``note`` says ``partial: k/n jobs``.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from reenactbench.files import atomic_write_bytes, write_json
from reenactbench.metrics import MetricSpec
from reenactbench.metrics.base import JobPart, job_value, merged_info, pooled_value
from reenactbench.protocol import Pair

__all__ = ["JobResult", "PER_VIDEO_COLUMNS", "SUMMARY_COLUMNS", "summarise"]

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


@dataclass
class JobResult:
    """The evaluators' parts of one (method, pair), by metric key."""

    method: str
    pair: Pair
    n_frames: int
    parts: dict[str, JobPart]
    job_dir: Path | None = None  #: where it is stored (set by save / load)
    _values: dict[str, float] = field(default_factory=dict, repr=False)
    _released: set[str] = field(default_factory=set, repr=False)

    def value(self, key: str, kind: str) -> float:
        """The job value of metric ``key`` (computed once: a Fréchet distance is costly)."""
        if key not in self._values:
            self._values[key] = job_value(kind, self.full_part(key))
        return self._values[key]

    def release_rows(self, kinds: dict[str, str]) -> None:
        """Compute the job values of distribution metrics, then drop their feature rows
        from memory (:meth:`full_part` reads them back from disk when the pooled value
        is computed), so a run's memory does not grow with its number of jobs."""
        assert self.job_dir is not None, "save or load the result first"
        for key, part in self.parts.items():
            if kinds.get(key) == "distribution" and part.fake is not None:
                self.value(key, "distribution")
                part.fake = part.real = None
                self._released.add(key)

    def full_part(self, key: str) -> JobPart:
        """The part of ``key`` with its feature rows (read from ``parts.npz`` if released)."""
        part = self.parts[key]
        if key not in self._released:
            return part
        assert self.job_dir is not None
        with np.load(self.job_dir / "parts.npz") as z:
            fake, real = z.get(f"{key}.fake"), z.get(f"{key}.real")
        return JobPart(values=part.values, fake=fake, real=real, info=part.info)

    def save(self, job_dir: Path, fingerprint: str) -> None:
        """``result.json`` (per-frame values, info) + ``parts.npz`` (features, series);
        the JSON is written last, so its presence marks a complete job."""
        self.job_dir = job_dir
        arrays = {}
        for key, part in self.parts.items():
            for side in ("fake", "real"):
                value = getattr(part, side)
                if value is not None:
                    arrays[f"{key}.{side}"] = np.asarray(value)  # stored losslessly
        if arrays:
            buf = io.BytesIO()
            np.savez(buf, **arrays)
            atomic_write_bytes(job_dir / "parts.npz", buf.getvalue())
        write_json(
            job_dir / "result.json",
            {
                "fingerprint": fingerprint,
                "method": self.method,
                "driving": self.pair.driving,
                "source": self.pair.source,
                "source_frame": self.pair.source_frame,
                "n_frames": self.n_frames,
                "values": {
                    k: p.values.tolist() for k, p in self.parts.items() if p.values is not None
                },
                "info": {k: p.info for k, p in self.parts.items()},
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
        arrays: dict[str, np.ndarray] = {}
        if (job_dir / "parts.npz").is_file():
            with np.load(job_dir / "parts.npz") as z:
                arrays = {k: z[k] for k in z.files}
        parts = {}
        for key, info in data["info"].items():
            values = data["values"].get(key)
            parts[key] = JobPart(
                values=None if values is None else np.asarray(values, dtype=np.float64),
                fake=arrays.get(f"{key}.fake"),
                real=arrays.get(f"{key}.real"),
                info=info,
            )
        pair = Pair(data["driving"], data["source"], int(data["source_frame"]))
        return cls(data["method"], pair, int(data["n_frames"]), parts, job_dir)


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
    results: dict[str, list[JobResult]],
    skipped_methods: dict[str, str],
    skipped_metrics: dict[str, str] | None = None,
    n_jobs: int | None = None,
    bootstrap: int = 0,
    weight_flags: dict[str, str] | None = None,
    final: bool = True,
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
    """
    skipped_metrics = skipped_metrics or {}
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
                continue
            parts = [j.parts[spec.key] for j in done]
            values = np.array([j.value(spec.key, spec.kind) for j in done])
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
                    value, info = pooled_value(spec.kind, (j.full_part(spec.key) for j in done))
                else:
                    value, info = pooled_value(spec.kind, parts)
                info = {**merged_info(parts), **info}
            if spec.key in weight_flags:
                info["weights"] = weight_flags[spec.key]
            lo, hi = _bootstrap(spec.kind, robustness, parts, values, bootstrap)
            note = ""
            if n_jobs is not None and len(done) < n_jobs:
                note = f"partial: {len(done)}/{n_jobs} jobs"
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
