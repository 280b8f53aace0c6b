"""Metric registry: every metric key of the paper, its direction, unit and label.

Every key of design §5 is registered here, implemented or not, so that tables can draw
arrows and units from one place and a requested metric that this version cannot compute
is reported as ``skipped: <reason>`` rather than silently dropped. A key that is not
registered at all is a user error (:class:`MetricError`).

An implemented metric either has ``fn`` (a pure per-frame function ``fn(fake, real) ->
(N,) float64`` on ``(N, H, W, 3) uint8`` RGB) or ``build`` (a factory of an
:class:`~reenactbench.metrics.base.Evaluator` from a ``MetricContext``: networks, weight
files, backends). How job parts aggregate is fixed by ``kind`` (metrics/base.py).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from reenactbench.errors import MetricError, ReenactbenchError

if TYPE_CHECKING:
    from reenactbench.metrics.base import Evaluator, MetricContext

__all__ = [
    "PAPER_ORDER",
    "MetricSpec",
    "register_metric",
    "get_metric",
    "metric_keys",
    "resolve_metrics",
]

FrameFn = Callable[[np.ndarray, np.ndarray], np.ndarray]
_KEY = re.compile(r"^[a-z0-9_]+$")


@dataclass(frozen=True)
class MetricSpec:
    """What a metric key means.

    Attributes:
        key: registry key, ``[a-z0-9_]+`` (e.g. ``"psnr"``).
        label: column label in tables (e.g. ``"PSNR"``).
        higher_is_better: direction, drawn as an arrow in tables.
        unit: unit or scale of the value (e.g. ``"dB"``, ``"0-255"``).
        kind: ``"frame"`` (per-frame values pooled over frames), ``"distribution"``
            (a set-level statistic) or ``"temporal"`` (per-video series statistic).
        fn: the per-frame function of a simple frame metric.
        build: factory ``build(ctx) -> Evaluator`` of any other implemented metric.
        weights: weight registry names it needs (checked before building).
        check: ``check(ctx) -> reason | None``: why it cannot run with these options
            (a missing package, backend or input folder), checked before building.
        unavailable: why this version cannot compute it at all, or ``None``.
        per_frame: its job part holds one value or feature row per frame, in frame
            order (frame metrics, FID), so a frame can be left out of it after the job
            (the source frame, reenactbench/job.py).
        packages: ``packages(ctx) -> reason | None``: a package the chosen backend
            needs is not installed. A usage error (exit 2, naming the extra), not a
            skip: the backend was asked for by name (protocol or flag).
    """

    key: str
    label: str
    higher_is_better: bool
    unit: str
    kind: str = "frame"
    fn: FrameFn | None = None
    build: Callable[[MetricContext], Evaluator] | None = None
    weights: Callable[[MetricContext], tuple[str, ...]] | tuple[str, ...] = ()
    check: Callable[[MetricContext], str | None] | None = None
    unavailable: str | None = None
    per_frame: bool | None = None  #: default: ``kind == "frame"``
    packages: Callable[[MetricContext], str | None] | None = None

    @property
    def frame_rows(self) -> bool:
        """Whether the job part has one value or row per frame (:attr:`per_frame`)."""
        return self.kind == "frame" if self.per_frame is None else self.per_frame

    @property
    def available(self) -> bool:
        """Implemented in this version (it may still lack weights at run time)."""
        return self.unavailable is None and (self.fn is not None or self.build is not None)

    def needed_weights(self, ctx: MetricContext) -> tuple[str, ...]:
        return self.weights(ctx) if callable(self.weights) else self.weights

    def why_not(self, ctx: MetricContext) -> str | None:
        """Why the metric cannot run with ``ctx``, or ``None``: not implemented, an
        option or package missing, or a weight file missing (with how to get it)."""
        if not self.available:
            return self.unavailable or "not implemented"
        if self.check is not None:
            reason = self.check(ctx)
            if reason:
                return reason
        from reenactbench.weights import weight_path

        for name in self.needed_weights(ctx):
            try:
                weight_path(name, ctx.weights)
            except ReenactbenchError as e:
                return str(e)
        return None

    def evaluator(self, ctx: MetricContext) -> Evaluator:
        """A fresh evaluator (call ``why_not`` first)."""
        from reenactbench.metrics.base import FrameFnEvaluator

        if self.fn is not None:
            return FrameFnEvaluator(self.fn)
        assert self.build is not None, f"metric {self.key} is not implemented"
        return self.build(ctx)


_REGISTRY: dict[str, MetricSpec] = {}


def register_metric(spec: MetricSpec, *, replace: bool = False) -> MetricSpec:
    """Add ``spec`` to the registry.

    Raises:
        ValueError: the key does not match ``[a-z0-9_]+`` or is already registered
            (unless ``replace=True``, used when an implementation supersedes the
            not-yet-implemented entry).
    """
    if not _KEY.match(spec.key):
        raise ValueError(f"metric key {spec.key!r} must match [a-z0-9_]+")
    if spec.key in _REGISTRY and not replace:
        raise ValueError(f"metric {spec.key!r} is already registered")
    _REGISTRY[spec.key] = spec
    return spec


def get_metric(key: str) -> MetricSpec:
    """The spec of ``key``; raises :class:`MetricError` naming the known keys."""
    try:
        return _REGISTRY[key]
    except KeyError:
        known = ", ".join(metric_keys())
        raise MetricError(f"unknown metric {key!r}; known metrics: {known}") from None


#: The paper's column order (Table 1; Table 2 puts rho_AU+GZ before rho_pose).
PAPER_ORDER = (
    "l1",
    "lpips",
    "id",
    "psnr",
    "ssim",
    "fid",
    "fvd",
    "fvd_mouth",
    "au_corr",
    "gaze_corr",
    "au_gaze_corr",
    "pose_corr",
)


def metric_keys() -> list[str]:
    """All registered keys: the paper's column order, then any others as registered."""
    rank = {k: i for i, k in enumerate(PAPER_ORDER)}
    return sorted(_REGISTRY, key=lambda k: rank.get(k, len(rank)))


def resolve_metrics(keys: list[str] | tuple[str, ...]) -> list[MetricSpec]:
    """Specs for ``keys`` (order kept, duplicates dropped); unknown keys raise."""
    seen: dict[str, MetricSpec] = {}
    for key in keys:
        key = key.strip()
        if key and key not in seen:
            seen[key] = get_metric(key)
    if not seen:
        raise MetricError("no metric requested; pass e.g. --metrics l1,psnr,ssim")
    return list(seen.values())


_LATER = "not implemented in reenactbench {version} (metric suite, issue #4)"


def _planned(key: str, label: str, higher: bool, unit: str, kind: str) -> None:
    from reenactbench import __version__

    register_metric(
        MetricSpec(key, label, higher, unit, kind, unavailable=_LATER.format(version=__version__))
    )


# Paper metrics not yet implemented: registered so tables know them and requests
# for them are reported as skipped with the reason.
_planned("lpips", "LPIPS", False, "AlexNet v0.1", "frame")
_planned("id", "L_ID", False, "1 - cos", "frame")
_planned("fid", "FID", False, "", "distribution")
_planned("fvd", "FVD", False, "", "distribution")
_planned("fvd_mouth", "FVD_M", False, "", "distribution")
_planned("au_corr", "rho_AU", True, "Pearson r", "temporal")
_planned("gaze_corr", "rho_GZ", True, "Pearson r", "temporal")
_planned("pose_corr", "rho_pose", True, "Pearson r", "temporal")
_planned("au_gaze_corr", "rho_AU+GZ", True, "Pearson r", "temporal")
