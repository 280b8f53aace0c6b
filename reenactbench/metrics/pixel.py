"""Pixel metrics: L1, PSNR, SSIM on uint8 RGB frames (design §5).

Each function takes ``fake, real``: ``(N, H, W, 3) uint8`` RGB of equal shape, and
returns ``(N,)`` float64, one value per frame. The runner averages over all frames.
"""

from __future__ import annotations

import numpy as np
from skimage.metrics import structural_similarity

from reenactbench.errors import InputError
from reenactbench.metrics.registry import MetricSpec, register_metric

__all__ = ["check_pair", "l1", "psnr", "ssim"]


def check_pair(fake: np.ndarray, real: np.ndarray) -> None:
    """Raise :class:`InputError` unless both are ``(N, H, W, 3) uint8`` of one shape."""
    for name, a in (("fake", fake), ("real", real)):
        if a.dtype != np.uint8 or a.ndim != 4 or a.shape[-1] != 3:
            raise InputError(f"{name} frames must be (N,H,W,3) uint8 RGB, got {a.shape} {a.dtype}")
    if fake.shape != real.shape:
        raise InputError(f"fake frames {fake.shape} and real frames {real.shape} differ in shape")


def l1(fake: np.ndarray, real: np.ndarray) -> np.ndarray:
    """Per-frame mean |fake - real| over pixels and channels, 0..255 scale."""
    check_pair(fake, real)
    diff = np.abs(fake.astype(np.int16) - real.astype(np.int16))
    return diff.mean(axis=(1, 2, 3), dtype=np.float64)


def psnr(fake: np.ndarray, real: np.ndarray) -> np.ndarray:
    """Per-frame PSNR in dB with data range 255; identical frames give +inf."""
    check_pair(fake, real)
    diff = fake.astype(np.float64) - real.astype(np.float64)
    mse = np.mean(diff * diff, axis=(1, 2, 3))
    with np.errstate(divide="ignore"):
        return 10.0 * np.log10(255.0**2 / mse)


def ssim(fake: np.ndarray, real: np.ndarray) -> np.ndarray:
    """Per-frame SSIM exactly as skimage's ``structural_similarity`` with
    ``gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255,
    channel_axis=-1`` on the uint8 RGB frames (Wang et al. 2004 settings)."""
    check_pair(fake, real)
    out = np.empty(len(fake), dtype=np.float64)
    for i, (f, r) in enumerate(zip(fake, real, strict=True)):
        out[i] = structural_similarity(
            f,
            r,
            gaussian_weights=True,
            sigma=1.5,
            use_sample_covariance=False,
            data_range=255,
            channel_axis=-1,
        )
    return out


register_metric(MetricSpec("l1", "L1", False, "0-255", "frame", fn=l1))
register_metric(MetricSpec("psnr", "PSNR", True, "dB", "frame", fn=psnr))
register_metric(MetricSpec("ssim", "SSIM", True, "", "frame", fn=ssim))
