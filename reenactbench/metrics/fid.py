"""FID: Fréchet distance of pytorch-fid Inception pool3 features (design §5).

Every generated (fake) and ground-truth (real, driving) frame at the evaluation
resolution goes through the FID Inception (:mod:`reenactbench.metrics.inception`:
uint8 / 255, bilinear resize to 299, scaled to [-1, 1]); a job returns both feature
sets, ``JobPart(fake=(N, 2048) float32, real=(N, 2048) float32)``. The job value is the
Fréchet distance of that job's features; the pooled value (Tables 1-2) is the Fréchet
distance of the merged Gaussian statistics of all jobs (metrics/base.py, frechet.py).

torch is imported only when an evaluator is built, so importing this module is light.
"""

from __future__ import annotations

import importlib.util
from typing import TYPE_CHECKING, Any

import numpy as np

from reenactbench.metrics.base import JobPart, MetricContext
from reenactbench.metrics.frechet import GaussianStats, frechet_distance
from reenactbench.metrics.pixel import check_pair
from reenactbench.metrics.registry import MetricSpec, register_metric

if TYPE_CHECKING:
    from reenactbench.metrics.inception import FIDInception

__all__ = [
    "FEATURE_DIM",
    "FIDEvaluator",
    "inception_features",
    "fid_from_features",
    "build",
    "check",
]

#: pool3 feature size (pytorch-fid ``dims=2048``).
FEATURE_DIM = 2048


def inception_features(
    net: FIDInception, frames: np.ndarray, device: str = "cpu", batch_size: int = 16
) -> np.ndarray:
    """Pool3 features of frames, as pytorch-fid computes them from RGB images.

    Args:
        net: a loaded :class:`~reenactbench.metrics.inception.FIDInception` on ``device``.
        frames: ``(N, H, W, 3) uint8`` RGB.
        device: torch device of ``net``.
        batch_size: frames per forward pass.

    Returns:
        ``(N, 2048) float32``.
    """
    import torch

    out = np.empty((len(frames), FEATURE_DIM), dtype=np.float32)
    with torch.inference_mode():
        for i in range(0, len(frames), batch_size):
            batch = torch.from_numpy(np.ascontiguousarray(frames[i : i + batch_size]))
            x = batch.to(device).permute(0, 3, 1, 2).float().div(255)  # (B,3,H,W) in [0,1]
            out[i : i + len(batch)] = net(x).cpu().numpy()
    return out


def fid_from_features(fake: np.ndarray, real: np.ndarray) -> float:
    """Fréchet distance of two feature sets ``(N, D)`` and ``(M, D)`` (N, M >= 2)."""
    a, b = GaussianStats.empty(fake.shape[1]), GaussianStats.empty(real.shape[1])
    a.add(fake)
    b.add(real)
    return frechet_distance(a, b)


class FIDEvaluator:
    """Collects the Inception features of one job's fake and real frames."""

    def __init__(self, net: FIDInception, device: str = "cpu", batch_size: int = 16) -> None:
        self.net, self.device, self.batch_size = net, device, batch_size
        self._fake: list[np.ndarray] = []
        self._real: list[np.ndarray] = []

    def features(self, frames: np.ndarray) -> np.ndarray:
        """``(N, H, W, 3) uint8`` -> ``(N, 2048) float32``."""
        return inception_features(self.net, frames, self.device, self.batch_size)

    def begin(self, source: np.ndarray) -> None:
        self._fake, self._real = [], []

    def add(self, fake: np.ndarray, real: np.ndarray) -> None:
        check_pair(fake, real)
        self._fake.append(self.features(fake))
        self._real.append(self.features(real))

    def end(self) -> JobPart:
        empty = np.zeros((0, FEATURE_DIM), dtype=np.float32)
        fake = np.concatenate(self._fake) if self._fake else empty
        real = np.concatenate(self._real) if self._real else empty
        self._fake, self._real = [], []
        info: dict[str, Any] = {"features": "pytorch-fid inception pool3 (2048)"}
        return JobPart(fake=fake, real=real, info=info)


def check(ctx: MetricContext) -> str | None:
    """Why FID cannot run here (a missing package), or ``None``."""
    for pkg in ("torch", "torchvision", "pytorch_fid"):
        if importlib.util.find_spec(pkg) is None:
            dist = pkg.replace("_", "-")
            return f"package {dist} missing (pip install torch torchvision pytorch-fid)"
    return None


def build(ctx: MetricContext) -> FIDEvaluator:
    """The FID evaluator: loads the ``fid-inception`` weight once, on ``ctx.device``."""
    from reenactbench.metrics.inception import load_fid_inception
    from reenactbench.weights import weight_path

    net = load_fid_inception(weight_path("fid-inception", ctx.weights), ctx.device)
    return FIDEvaluator(net, ctx.device, ctx.batch_size)


register_metric(
    MetricSpec(
        "fid",
        "FID",
        False,
        "",
        "distribution",
        build=build,
        weights=("fid-inception",),
        check=check,
        per_frame=True,  # one feature row per frame
    ),
    replace=True,
)
