"""Temporal correlations of face attributes: ``au_corr``, ``gaze_corr``, ``pose_corr``,
``au_gaze_corr`` (design §5).

Per job, each evaluator returns ``JobPart(fake=(T, D), real=(T, D))`` (float32): the
generated and the driving video's series of its attributes (D = 17 AU intensities, 2 gaze angles,
3 head rotations, or 19 = AUs + gaze). ``metrics/base.py`` turns them into the number:
per video the mean over dimensions of the Pearson r over time (frames with a NaN are
dropped, constant series excluded and counted), then the mean over videos.

The attribute backend is ``ctx.options["temporal_backend"]`` (default ``landmarks``) and
is recorded with every number (``info["backend"]``):

* ``openface``: OpenFace 2.0 CSVs, the paper's tool (``reenactbench.faces.openface``).
  ``ctx.options["openface_dir"]`` holds ``real/<video>.csv`` (driving videos) and
  ``fake/<method>/<job>.csv`` (generated; ``job`` = the pair key, e.g.
  ``WRA_A_000__WRA_A_000_f000000``), or ``fake/<job>.csv``. The first T rows of each
  CSV are used, T = the job's frame count. The runner names the job with
  ``set_job(method, job, video)`` before ``begin``.
* ``landmarks``: offline, from dlib's 68 landmarks: head pose by PnP, gaze from a
  dark-pupil approximation (``reenactbench.faces.attributes``). Its gaze is
  **eye-in-head** (the pupil relative to the eye), not OpenFace's camera-frame gaze. No
  AUs: ``au_corr`` and ``au_gaze_corr`` are skipped with the reason.
* ``mediapipe``: offline, MediaPipe FaceMesh with irises
  (``reenactbench.faces.mediapipe_attributes``): head pose from the mesh's 3D points,
  **camera-frame** gaze like OpenFace's ``gaze_angle_x/y`` (OpenFace's eyeball model,
  composed with the head rotation). No AUs (skipped, as for ``landmarks``).
* ``pyfeat``: py-feat's ``Detector`` (needs its models from the HF hub; untested here).

Frame-based backends share one extractor per run through ``ctx.shared``: each frame's
attributes are computed once (cached by frame content), whichever of the four metrics
asks first, and reused for repeated frames (same driving video for several methods).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from reenactbench.errors import InputError
from reenactbench.faces.openface import (
    ATTRIBUTE_NAMES,
    AU_SLICE,
    GAZE_SLICE,
    POSE_SLICE,
    openface_fake_csv,
    openface_real_csv,
    read_openface_csv,
)
from reenactbench.metrics.base import JobPart, MetricContext
from reenactbench.metrics.framecache import FrameCache as AttributeCache
from reenactbench.metrics.registry import MetricSpec, register_metric

__all__ = [
    "BACKENDS",
    "DEFAULT_BACKEND",
    "DIMENSIONS",
    "AU_REASON",
    "temporal_backend",
    "temporal_packages",
    "temporal_unavailable",
    "AttributeCache",
    "FrameAttributeEvaluator",
    "OpenFaceEvaluator",
    "build_temporal",
]

BACKENDS = ("landmarks", "mediapipe", "openface", "pyfeat")
DEFAULT_BACKEND = "landmarks"
#: Columns of the 22 attribute columns (``ATTRIBUTE_NAMES``) each metric correlates.
DIMENSIONS = {
    "au_corr": AU_SLICE,
    "gaze_corr": GAZE_SLICE,
    "pose_corr": POSE_SLICE,
    "au_gaze_corr": slice(AU_SLICE.start, GAZE_SLICE.stop),
}
AU_REASON = "needs AU intensities: temporal_backend=openface (OpenFace 2.0 CSVs) or py-feat"
_LAYOUT = "OPENFACE_DIR/real/<video>.csv and OPENFACE_DIR/fake/<method>/<job>.csv"


def temporal_backend(ctx: MetricContext) -> str:
    """The backend named by ``ctx.options["temporal_backend"]`` (default ``landmarks``)."""
    return str(ctx.options.get("temporal_backend", DEFAULT_BACKEND)).strip().lower()


def temporal_packages(key: str, ctx: MetricContext) -> str | None:
    """The chosen frame-based backend's missing package (naming the extra), or ``None``;
    ``None`` too for an AU metric the backend cannot compute anyway (a skip)."""
    backend = temporal_backend(ctx)
    if key in ("au_corr", "au_gaze_corr") and backend in ("landmarks", "mediapipe"):
        return None
    if backend == "landmarks":
        from reenactbench.faces import faces_unavailable
        from reenactbench.faces.attributes import mean_face_unavailable

        reason = faces_unavailable() or (key == "pose_corr" and mean_face_unavailable())
        return f"temporal_backend=landmarks {reason}" if reason else None
    if backend == "mediapipe":
        from reenactbench.faces.mediapipe_attributes import mediapipe_unavailable

        return mediapipe_unavailable()
    return None


def temporal_unavailable(key: str, ctx: MetricContext) -> str | None:
    """Why metric ``key`` cannot run with ``ctx``'s backend options, or ``None``."""
    backend = temporal_backend(ctx)
    if backend == "landmarks":
        from reenactbench.faces import faces_unavailable
        from reenactbench.faces.attributes import mean_face_unavailable

        if key in ("au_corr", "au_gaze_corr"):
            return f"{AU_REASON} (temporal_backend=landmarks has no AUs)"
        if key == "pose_corr" and mean_face_unavailable():
            return mean_face_unavailable()
        return faces_unavailable()
    if backend == "mediapipe":
        from reenactbench.faces.mediapipe_attributes import mediapipe_unavailable

        if key in ("au_corr", "au_gaze_corr"):
            return f"{AU_REASON} (temporal_backend=mediapipe has no AUs)"
        return mediapipe_unavailable()
    if backend == "openface":
        root = ctx.options.get("openface_dir")
        if not root:
            return f"temporal_backend=openface needs the option openface_dir ({_LAYOUT})"
        if not (Path(root) / "real").is_dir():
            return f"openface_dir {root} has no real/ folder ({_LAYOUT})"
        return None
    if backend == "pyfeat":
        from reenactbench.faces.attributes import pyfeat_unavailable

        return pyfeat_unavailable()
    return f"unknown temporal_backend {backend!r}; use one of {', '.join(BACKENDS)}"


def _check_batch(fake: np.ndarray, real: np.ndarray) -> None:
    for name, a in (("fake", fake), ("real", real)):
        if a.dtype != np.uint8 or a.ndim != 4 or a.shape[-1] != 3:
            raise InputError(f"{name} frames must be (B,H,W,3) uint8 RGB, got {a.shape} {a.dtype}")
    if len(fake) != len(real):
        raise InputError(f"{len(fake)} fake frames but {len(real)} real frames in one batch")


def _part(fake: np.ndarray, real: np.ndarray, info: dict[str, Any]) -> JobPart:
    """Series as ``float32`` (the precision the runner's job cache stores, so a resumed
    run gives bit-identical numbers) and counts of frames with a NaN (no face)."""
    bad_f, bad_r = np.isnan(fake).any(axis=1), np.isnan(real).any(axis=1)
    info = dict(info)
    if bad_f.any() or bad_r.any():
        info["nan_frames_fake"] = int(bad_f.sum())
        info["nan_frames_real"] = int(bad_r.sum())
    return JobPart(fake=fake.astype(np.float32), real=real.astype(np.float32), info=info)


class FrameAttributeEvaluator:
    """Series of one metric's columns from a frame-based backend (landmarks, mediapipe,
    pyfeat).

    Args:
        key: metric key (selects the columns, :data:`DIMENSIONS`).
        cache: the run's shared :class:`AttributeCache`.
        backend: backend name recorded in ``info``.
    """

    def __init__(self, key: str, cache: AttributeCache, backend: str) -> None:
        self.cols = DIMENSIONS[key]
        self.cache = cache
        self.backend = backend
        self.extra: dict[str, Any] = {}  #: more info facts (pooling)
        self._fake: list[np.ndarray] = []
        self._real: list[np.ndarray] = []

    def begin(self, source: np.ndarray) -> None:
        self._fake, self._real = [], []

    def add(self, fake: np.ndarray, real: np.ndarray) -> None:
        _check_batch(fake, real)
        self._fake.append(self.cache(fake)[:, self.cols])
        self._real.append(self.cache(real)[:, self.cols])

    def end(self) -> JobPart:
        width = len(ATTRIBUTE_NAMES[self.cols])
        fake = np.concatenate(self._fake) if self._fake else np.zeros((0, width))
        real = np.concatenate(self._real) if self._real else np.zeros((0, width))
        return _part(fake, real, {"backend": self.backend, **self.extra})


class OpenFaceEvaluator:
    """Series of one metric's columns read from OpenFace 2.0 CSVs (layout: module doc).

    Frames are only counted; ``end`` reads the first T rows of the job's CSVs.

    Args:
        key: metric key (selects the columns, :data:`DIMENSIONS`).
        root: the OpenFace folder (``options["openface_dir"]``).
        csv_cache: a dict shared through ``ctx.shared`` (path -> parsed table).
    """

    def __init__(self, key: str, root: Path, csv_cache: dict[Path, np.ndarray]) -> None:
        self.cols = DIMENSIONS[key]
        self.extra: dict[str, Any] = {}  #: more info facts (pooling)
        self.root = Path(root)
        self.csv_cache = csv_cache
        self._job: tuple[str, str, str] | None = None
        self._n = 0

    def set_job(self, method: str, job: str, video: str) -> None:
        """Name the next job: ``method`` (method name), ``job`` (pair key, the fake CSV's
        stem), ``video`` (driving video, the real CSV's stem). Call before ``begin``."""
        self._job = (method, job, video)

    def begin(self, source: np.ndarray) -> None:
        self._n = 0

    def add(self, fake: np.ndarray, real: np.ndarray) -> None:
        _check_batch(fake, real)
        self._n += len(fake)

    def _rows(self, path: Path) -> np.ndarray:
        if path not in self.csv_cache:
            if not path.is_file():
                raise InputError(f"{path}: OpenFace CSV missing; run OpenFace ({_LAYOUT})")
            if len(self.csv_cache) >= 64:
                self.csv_cache.pop(next(iter(self.csv_cache)))
            self.csv_cache[path] = read_openface_csv(path)
        table = self.csv_cache[path]
        if len(table) < self._n:
            raise InputError(
                f"{path}: {len(table)} OpenFace rows but the job has {self._n} frames; "
                "run OpenFace on all frames of the video"
            )
        return table[: self._n, self.cols]

    def end(self) -> JobPart:
        if self._job is None:
            raise InputError(
                "temporal_backend=openface needs the job's name: call "
                "set_job(method, job, video) before begin()"
            )
        method, job, video = self._job
        self._job = None  # never reuse a stale job name
        fake = self._rows(openface_fake_csv(self.root, method, job))
        real = self._rows(openface_real_csv(self.root, video))
        return _part(fake, real, {"backend": "openface", **self.extra})


def _shared_cache(ctx: MetricContext, backend: str) -> AttributeCache:
    name = f"temporal.{backend}"
    if name not in ctx.shared:
        if backend == "pyfeat":
            from reenactbench.faces.attributes import PyFeatAttributes

            ctx.shared[name] = AttributeCache(PyFeatAttributes(ctx.device))
        elif backend == "mediapipe":
            from reenactbench.faces.mediapipe_attributes import MediaPipeAttributes

            ctx.shared[name] = AttributeCache(MediaPipeAttributes())
        else:
            from reenactbench.faces.attributes import landmark_attributes

            ctx.shared[name] = AttributeCache(landmark_attributes)
    return ctx.shared[name]


def build_temporal(key: str, ctx: MetricContext) -> FrameAttributeEvaluator | OpenFaceEvaluator:
    """The evaluator of metric ``key`` for ``ctx``'s backend (check it first with
    :func:`temporal_unavailable`)."""
    backend = temporal_backend(ctx)
    evaluator: FrameAttributeEvaluator | OpenFaceEvaluator
    if backend == "openface":
        csvs = ctx.shared.setdefault("temporal.openface_csv", {})
        evaluator = OpenFaceEvaluator(key, Path(ctx.options["openface_dir"]), csvs)
    elif backend in BACKENDS:
        evaluator = FrameAttributeEvaluator(key, _shared_cache(ctx, backend), backend)
    else:
        raise InputError(f"unknown temporal_backend {backend!r}; use one of {', '.join(BACKENDS)}")
    evaluator.extra = _pooling(key, ctx)
    return evaluator


def _pooling(key: str, ctx: MetricContext) -> dict[str, Any]:
    """``au_gaze_corr`` with ``au_gaze_pooling = "groups"`` (default): the AU and gaze
    series are two groups that weigh the same (``series_groups``, metrics/base.py)."""
    pooling = str(ctx.options.get("au_gaze_pooling", "groups"))
    if pooling not in ("groups", "series"):
        raise InputError(f"au_gaze_pooling {pooling!r}: use groups or series")
    if key != "au_gaze_corr" or pooling == "series":
        return {}
    return {"series_groups": [AU_SLICE.stop - AU_SLICE.start, GAZE_SLICE.stop - GAZE_SLICE.start]}


def _register(key: str, label: str) -> None:
    register_metric(
        MetricSpec(
            key,
            label,
            True,
            "Pearson r",
            "temporal",
            build=lambda ctx: build_temporal(key, ctx),
            check=lambda ctx: temporal_unavailable(key, ctx),
            packages=lambda ctx: temporal_packages(key, ctx),
        ),
        replace=True,
    )


_register("au_corr", "rho_AU")
_register("gaze_corr", "rho_GZ")
_register("pose_corr", "rho_pose")
_register("au_gaze_corr", "rho_AU+GZ")
