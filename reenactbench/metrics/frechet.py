"""Streaming Gaussian statistics and the Fréchet distance (FID, FVD).

Features go into mergeable running sums in float64 (n, Σx, Σxxᵀ), so memory does not
grow with the number of frames and videos or ranks merge exactly. The Fréchet distance
is a pure function of two Gaussians, tested on closed-form cases.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import linalg

__all__ = ["GaussianStats", "frechet_distance", "frechet_from_moments"]


@dataclass
class GaussianStats:
    """Running sums of ``D``-dimensional features: ``n``, ``s`` (D,), ``ss`` (D, D)."""

    n: int
    s: np.ndarray
    ss: np.ndarray

    @classmethod
    def empty(cls, dim: int) -> GaussianStats:
        return cls(0, np.zeros(dim, dtype=np.float64), np.zeros((dim, dim), dtype=np.float64))

    def add(self, features: np.ndarray) -> None:
        """Add a batch ``(B, D)`` of feature rows."""
        f = np.asarray(features, dtype=np.float64)
        if f.ndim != 2 or f.shape[1] != len(self.s):
            raise ValueError(f"features must be (B, {len(self.s)}), got {f.shape}")
        self.n += len(f)
        self.s += f.sum(axis=0)
        self.ss += f.T @ f

    def merged(self, other: GaussianStats) -> GaussianStats:
        """Exact statistics of the union of both sets."""
        return GaussianStats(self.n + other.n, self.s + other.s, self.ss + other.ss)

    def mean_cov(self) -> tuple[np.ndarray, np.ndarray]:
        """Mean ``(D,)`` and unbiased covariance ``(D, D)`` (ddof=1, as ``np.cov``)."""
        if self.n < 2:
            raise ValueError(f"need at least 2 feature rows for a covariance, have {self.n}")
        mu = self.s / self.n
        cov = (self.ss - self.n * np.outer(mu, mu)) / (self.n - 1)
        return mu, cov


def frechet_from_moments(
    mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray, eps: float = 1e-6
) -> float:
    """d² = ‖μ1 − μ2‖² + Tr(Σ1 + Σ2 − 2 (Σ1 Σ2)^½).

    A singular product is retried with ``eps`` added to both diagonals (as pytorch-fid);
    a large imaginary component raises ``ValueError``.
    """
    diff = mu1 - mu2
    covmean = linalg.sqrtm(sigma1.dot(sigma2))
    if not np.isfinite(covmean).all():
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = linalg.sqrtm((sigma1 + offset).dot(sigma2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError(f"imaginary component {np.max(np.abs(covmean.imag))} in sqrtm")
        covmean = covmean.real
    return float(diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


def frechet_distance(a: GaussianStats, b: GaussianStats) -> float:
    """Fréchet distance between the Gaussians fitted to two feature sets."""
    mu1, s1 = a.mean_cov()
    mu2, s2 = b.mean_cov()
    return frechet_from_moments(mu1, s1, mu2, s2)
