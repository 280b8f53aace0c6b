"""The metric plug-in point: evaluators that stream one job and the aggregation rules.

A *job* is one (source, driving) pair of one method: the runner (and ``score``) calls
``begin(source)``, then ``add(fake, real)`` for each batch of frames in order, then
``end()``, which returns a :class:`JobPart`. How parts become numbers depends only on
the metric's kind (design §5):

* ``frame``: ``values`` holds one float per frame (``NaN`` = frame excluded, e.g. no
  face found; excluded frames are counted). Job value = mean over its frames; pooled
  value = mean over all frames of all jobs.
* ``distribution``: ``fake``/``real`` hold feature rows ``(M, D)`` (Inception pool3
  per frame, I3D per clip). Job value = Fréchet distance of that job's features;
  pooled value = Fréchet distance of the merged Gaussian statistics of all jobs.
* ``temporal``: ``fake``/``real`` hold per-frame series ``(T, D)``. Job value = mean
  over the D dimensions of the Pearson correlation over time (constant series are
  excluded and counted); pooled value = mean over jobs.

Evaluators are built once per run from a :class:`MetricContext` (device, weight
overrides, backend options) so that networks load once; ``ctx.shared`` lets several
metrics share one extractor (e.g. the face-attribute series of the correlations).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from reenactbench.metrics.frechet import (
    COVARIANCE_DDOF,
    GaussianStats,
    frechet_distance,
    frechet_from_rows,
)

__all__ = [
    "MetricContext",
    "JobPart",
    "Evaluator",
    "FrameFnEvaluator",
    "job_value",
    "pooled_value",
    "grouped_pearson",
    "pearson_over_time",
    "merged_info",
]


@dataclass
class MetricContext:
    """What evaluators may depend on besides the frames.

    Attributes:
        device: torch device string ("cpu", "cuda", "cuda:1").
        batch_size: frames per network batch.
        weights: weight name -> file overrides (``--weights NAME=PATH``).
        options: backend options, e.g. ``{"id_backend": "irse50",
            "temporal_backend": "landmarks", "openface_dir": "..."}``.
        kind: protocol kind; the ``id`` metric compares with the source frame in
            cross-id and with the ground-truth frame otherwise.
        fvd_clip: FVD clip length in frames.
        shared: objects shared between evaluators of one run (lazily filled).
    """

    device: str = "cpu"
    batch_size: int = 16
    weights: Mapping[str, Path] = field(default_factory=dict)
    options: Mapping[str, str] = field(default_factory=dict)
    kind: str = "same-id"
    fvd_clip: int = 16
    shared: dict[str, Any] = field(default_factory=dict)


@dataclass
class JobPart:
    """What one evaluator returns for one job (see the module doc for each kind).

    Attributes:
        values: ``(N,) float64`` per-frame values (frame metrics), NaN = excluded.
        fake, real: ``(M, D)`` features or ``(T, D)`` series (other kinds).
        info: JSON-able facts recorded with the number (backend, excluded counts).
    """

    values: np.ndarray | None = None
    fake: np.ndarray | None = None
    real: np.ndarray | None = None
    info: dict[str, Any] = field(default_factory=dict)


class Evaluator(Protocol):
    """Streams one job at a time; built once per run."""

    def begin(self, source: np.ndarray) -> None:
        """Start a job. ``source``: ``(E, E, 3) uint8`` source frame at eval resolution."""

    def add(self, fake: np.ndarray, real: np.ndarray) -> None:
        """``fake``, ``real``: ``(B, E, E, 3) uint8`` RGB, consecutive frames in order."""

    def end(self) -> JobPart:
        """Finish the job and return its part."""


class FrameFnEvaluator:
    """Wraps a pure per-frame function ``fn(fake, real) -> (B,) float64``."""

    def __init__(self, fn: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> None:
        self.fn = fn
        self._values: list[np.ndarray] = []

    def begin(self, source: np.ndarray) -> None:
        self._values = []

    def add(self, fake: np.ndarray, real: np.ndarray) -> None:
        self._values.append(np.asarray(self.fn(fake, real), dtype=np.float64))

    def end(self) -> JobPart:
        values = np.concatenate(self._values) if self._values else np.zeros(0)
        return JobPart(values=values)


def pearson_over_time(fake: np.ndarray, real: np.ndarray) -> tuple[float, int, int]:
    """Mean over dimensions of the Pearson correlation over time.

    Args:
        fake, real: ``(T, D)`` generated and driving series; rows with a NaN in either
            are dropped first.

    Returns:
        ``(mean r, excluded, frozen)``. A dimension whose *driving* series is constant
        has no motion to follow: r is undefined and it is excluded (counted). A
        *generated* series that is constant while the driving one moves is a frozen
        output: r = 0 (counted), so a method that does not move never escapes the
        metric. NaN if no dimension is usable (fewer than 2 usable frames).
    """
    fake = np.asarray(fake, dtype=np.float64)
    real = np.asarray(real, dtype=np.float64)
    ok = ~(np.isnan(fake).any(axis=1) | np.isnan(real).any(axis=1))
    fake, real = fake[ok], real[ok]
    if len(fake) < 2:  # r is undefined in every dimension (no or one usable frame)
        return float("nan"), fake.shape[1], 0
    rs: list[float] = []
    excluded = frozen = 0
    for d in range(fake.shape[1]):
        a, b = fake[:, d] - fake[:, d].mean(), real[:, d] - real[:, d].mean()
        if _constant(b, real[:, d]):
            excluded += 1
        elif _constant(a, fake[:, d]):
            frozen += 1
            rs.append(0.0)
        else:
            rs.append(float((a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum())))
    return (float(np.mean(rs)) if rs else float("nan")), excluded, frozen


def grouped_pearson(
    fake: np.ndarray, real: np.ndarray, groups: list[int] | None = None
) -> tuple[float, int, int]:
    """:func:`pearson_over_time`, or with ``groups`` (sizes of consecutive column groups,
    e.g. ``[17, 2]`` for AUs then gaze) the mean over groups of each group's mean r, so
    every group weighs the same whatever its number of series (``au_gaze_corr``)."""
    if not groups:
        return pearson_over_time(fake, real)
    rs, excluded, frozen, start = [], 0, 0, 0
    for size in groups:
        r, ex, fr = pearson_over_time(fake[:, start : start + size], real[:, start : start + size])
        start += size
        excluded, frozen = excluded + ex, frozen + fr
        if not np.isnan(r):
            rs.append(r)
    return (float(np.mean(rs)) if rs else float("nan")), excluded, frozen


def _constant(centred: np.ndarray, series: np.ndarray) -> bool:
    """No variation beyond float rounding (relative to the series' magnitude)."""
    scale = max(1.0, float(np.abs(series).max(initial=0.0)))
    return float(np.sqrt((centred * centred).sum())) <= 1e-9 * scale


def _stats(rows: np.ndarray) -> GaussianStats:
    stats = GaussianStats.empty(rows.shape[1])
    stats.add(rows)
    return stats


def job_value(kind: str, part: JobPart) -> float:
    """The value of one job (a per_video.csv entry; one run of the robustness study).
    NaN when undefined: no usable frame, fewer than 2 feature rows (a covariance needs
    two), or no non-constant series."""
    if kind == "frame":
        assert part.values is not None
        v = part.values[~np.isnan(part.values)]
        return float(v.mean()) if len(v) else float("nan")
    assert part.fake is not None and part.real is not None
    if kind == "distribution":
        if min(len(part.fake), len(part.real)) < 2:  # e.g. one 16-frame FVD clip
            return float("nan")
        return frechet_from_rows(part.fake, part.real, _ddof(part))
    return grouped_pearson(part.fake, part.real, part.info.get("series_groups"))[0]


def pooled_value(kind: str, parts: Iterable[JobPart]) -> tuple[float, dict[str, Any]]:
    """The value over all jobs (Tables 1-2) and facts about it (excluded counts).

    ``parts`` is iterated once; for distribution metrics it may be a generator that
    loads one job's features at a time (memory: two D x D sums plus one job)."""
    if kind == "frame":
        allv = np.concatenate([p.values for p in parts if p.values is not None])
        keep = ~np.isnan(allv)
        value = float(allv[keep].mean()) if keep.any() else float("nan")
        excluded, exact = int((~keep).sum()), int(np.isposinf(allv).sum())
        info = {"excluded_frames": excluded} if excluded else {}
        if exact:  # PSNR of a frame reproduced exactly: the mean is +inf (shown as ∞)
            info["exact_frames"] = exact
        return value, info
    if kind == "distribution":
        fake = real = None
        ddof = 1
        for p in parts:
            ddof = _ddof(p)
            assert p.fake is not None and p.real is not None
            if fake is None or real is None:
                fake, real = (
                    GaussianStats.empty(p.fake.shape[1]),
                    GaussianStats.empty(p.real.shape[1]),
                )
            fake.add(p.fake)
            real.add(p.real)
        assert fake is not None and real is not None
        return frechet_distance(fake, real, ddof), {"n_fake": fake.n, "n_real": real.n}
    values, excluded, frozen = [], 0, 0
    for p in parts:
        assert p.fake is not None and p.real is not None
        r, ex, fr = grouped_pearson(p.fake, p.real, p.info.get("series_groups"))
        excluded += ex
        frozen += fr
        if not np.isnan(r):
            values.append(r)
    value = float(np.mean(values)) if values else float("nan")
    info: dict[str, Any] = {"excluded_constant_driving": excluded} if excluded else {}
    if frozen:
        info["frozen_series_r0"] = frozen
    if len(values) < len(parts):
        info["excluded_videos"] = len(parts) - len(values)
    return value, info


def _ddof(part: JobPart) -> int:
    """The covariance convention a distribution part was made for (its ``info``
    ``covariance``: FVD's clip protocol; default ddof=1, pytorch-fid's)."""
    return COVARIANCE_DDOF[part.info.get("covariance", "ddof=1")]


def merged_info(parts: list[JobPart]) -> dict[str, Any]:
    """The jobs' ``info`` combined: integer counts are summed, other facts (backend
    names) kept when all jobs agree, else listed."""
    out: dict[str, Any] = {}
    for part in parts:
        for key, value in part.info.items():
            if isinstance(value, int) and not isinstance(value, bool):
                out[key] = out.get(key, 0) + value
            elif key not in out:
                out[key] = value
            elif out[key] != value:
                seen = out[key] if isinstance(out[key], list) else [out[key]]
                out[key] = seen if value in seen else [*seen, value]
    return out
