"""Throughput of the ``id`` metric per backend at 256x256, on seeded weights.

No real ArcFace weights are available offline, so both ArcFace networks carry seeded
random weights of the official architecture (the cost does not depend on the values):
``irse50``: pSp's IR-SE50 (``torch.manual_seed(0)`` default initialisation, saved as a
state dict); ``insightface``: an IResNet-50 shaped like buffalo_l's ``w600k_r50``
(arcface_torch ``iresnet50``, fp32), exported to ONNX with a dynamic batch axis.
``dlib`` runs its real model (``dlib_face_recognition_resnet_model_v1.dat`` from the
``[faces]`` extra; dlib's CPU build).

Prints frames/s (one frame = one (fake, real) pair of a same-id job: dlib detection on
both images, two embeddings) of the whole evaluator, and of its parts: dlib detection
(+ 68 landmarks for insightface, + 5-point shape and aligned chip for dlib), the
embedding network alone, and, for the insightface backend, insightface's own
``ArcFaceONNX.get_feat`` on the same aligned crops. For dlib, also one frame through
the whole embedder (detection + alignment + descriptor).

    python bench/identity.py --frames 32 --batch-size 16 [--backends dlib]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from machine import cpu_name  # bench/machine.py
from torch import nn

import reenactbench.metrics.identity  # noqa: F401  (registers "id")
from reenactbench.metrics.base import Evaluator, MetricContext
from reenactbench.metrics.registry import get_metric


def face_frames(n: int) -> np.ndarray:
    """``(n, 256, 256, 3) uint8``: four crops of skimage's astronaut photo, repeated."""
    from skimage import data

    a = data.astronaut()
    crops = [a[0:256, 96:352], a[20:276, 110:366], a[40:296, 60:316], a[0:256, 96:352, :][:, ::-1]]
    return np.ascontiguousarray(np.stack([crops[i % 4] for i in range(n)]))


class _IBlock(nn.Module):  # arcface_torch IBasicBlock: BN-conv-BN-PReLU-conv(stride)-BN
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.res = nn.Sequential(
            nn.BatchNorm2d(cin),
            nn.Conv2d(cin, cout, 3, 1, 1, bias=False),
            nn.BatchNorm2d(cout),
            nn.PReLU(cout),
            nn.Conv2d(cout, cout, 3, stride, 1, bias=False),
            nn.BatchNorm2d(cout),
        )
        self.down = (
            nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
            if stride != 1 or cin != cout
            else nn.Identity()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.res(x) + self.down(x)


def iresnet50() -> nn.Module:
    """IResNet-50 with w600k_r50's shape: (B,3,112,112) -> (B,512)."""
    layers: list[nn.Module] = [
        nn.Conv2d(3, 64, 3, 1, 1, bias=False),
        nn.BatchNorm2d(64),
        nn.PReLU(64),
    ]
    cin = 64
    for cout, n in ((64, 3), (128, 4), (256, 14), (512, 3)):
        layers += [_IBlock(cin, cout, 2)] + [_IBlock(cout, cout, 1) for _ in range(n - 1)]
        cin = cout
    layers += [nn.BatchNorm2d(512), nn.Flatten(), nn.Linear(512 * 7 * 7, 512), nn.BatchNorm1d(512)]
    return nn.Sequential(*layers)


def _rate(
    fn: Callable[[], object], n: int, repeat: int = 2
) -> float:  # best of `repeat` runs, frames/s
    fn()  # warm-up
    best = min(_timed(fn) for _ in range(repeat))
    return n / best


def _timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _job(ev: Evaluator, frames: np.ndarray, batch: int) -> None:
    ev.begin(frames[0])
    for i in range(0, len(frames), batch):
        ev.add(frames[i : i + batch], frames[::-1][i : i + batch])
    ev.end()


def bench_irse50(tmp: Path, frames: np.ndarray, batch: int) -> dict[str, float]:
    from reenactbench.faces import detect_faces

    torch.manual_seed(0)
    path = tmp / "model_ir_se50.pth"
    from reenactbench.nn.irse50 import Backbone

    torch.save(Backbone().state_dict(), path)
    ctx = MetricContext(weights={"ir-se50": path}, batch_size=batch)
    ev = get_metric("id").evaluator(ctx)
    n = len(frames)
    return {
        "evaluator (pairs)": _rate(lambda: _job(ev, frames, batch), n),
        "dlib detection": _rate(lambda: [detect_faces(f) for f in frames], n),
        "IR-SE50 embedding": _rate(lambda: ev.embedder.embed(frames), n),
    }


def bench_insightface(tmp: Path, frames: np.ndarray, batch: int) -> dict[str, float]:
    from insightface.model_zoo import get_model

    from reenactbench.faces import detect_landmarks

    torch.manual_seed(0)
    path = tmp / "w600k_r50.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            iresnet50().eval(),
            (torch.zeros(1, 3, 112, 112),),
            str(path),
            input_names=["input.1"],
            output_names=["embedding"],
            dynamic_axes={"input.1": {0: "batch"}, "embedding": {0: "batch"}},
            dynamo=False,
        )
    ctx = MetricContext(
        weights={"arcface-r50": path}, batch_size=batch, options={"id_backend": "insightface"}
    )
    ev = get_metric("id").evaluator(ctx)
    crops, _ = ev.embedder.crops(frames)
    bgr = [c[..., ::-1].copy() for c in crops]
    ref = get_model(str(path), providers=["CPUExecutionProvider"])
    n = len(frames)

    def get_feat() -> None:
        for i in range(0, n, batch):
            ref.get_feat(bgr[i : i + batch])

    return {
        "evaluator (pairs)": _rate(lambda: _job(ev, frames, batch), n),
        "dlib detection + 68 landmarks": _rate(lambda: [detect_landmarks(f) for f in frames], n),
        "alignment (norm_crop)": _rate(lambda: ev.embedder.crops(frames), n),
        "ArcFace embedding (ours)": _rate(lambda: ev.embedder.embed_crops(crops), n),
        "ArcFace get_feat (insightface)": _rate(get_feat, n),
    }


def bench_dlib(tmp: Path, frames: np.ndarray, batch: int) -> dict[str, float]:
    from reenactbench.faces import detect_faces
    from reenactbench.faces.dlib_descriptor import descriptors, face_chip

    del tmp  # no weight file
    ctx = MetricContext(batch_size=batch, options={"id_backend": "dlib"})
    ev = get_metric("id").evaluator(ctx)
    chips = [face_chip(f) for f in frames]
    n = len(frames)
    return {
        "evaluator (pairs)": _rate(lambda: _job(ev, frames, batch), n),
        "embedder (1 frame: all steps)": _rate(lambda: ev.embedder(frames), n),
        "dlib detection": _rate(lambda: [detect_faces(f) for f in frames], n),
        "detection + 5 points + chip": _rate(lambda: [face_chip(f) for f in frames], n),
        "dlib descriptor (150x150 chip)": _rate(lambda: descriptors(chips), n),
    }


BENCHES = {"irse50": bench_irse50, "insightface": bench_insightface, "dlib": bench_dlib}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=32, help="frames per measurement")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--backends", nargs="+", choices=list(BENCHES), default=list(BENCHES))
    args = parser.parse_args()
    print(
        f"machine: {cpu_name()}, {os.cpu_count()} cores, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), seeded weights, 256x256 frames"
    )
    frames = face_frames(args.frames)
    with tempfile.TemporaryDirectory() as tmp:
        for backend in args.backends:
            for part, fps in BENCHES[backend](Path(tmp), frames, args.batch_size).items():
                print(f"id[{backend}] {part:32s} {fps:8.1f} frames/s")


if __name__ == "__main__":
    main()
