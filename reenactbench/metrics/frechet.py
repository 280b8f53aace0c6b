"""Streaming Gaussian statistics and the Fréchet distance (FID, FVD).

Features go into mergeable running sums in float64 (n, Σx, Σxxᵀ), so memory does not
grow with the number of frames and videos or ranks merge exactly. The Fréchet distance
is a pure function of two Gaussians, tested on closed-form cases.

Covariance convention: ``ddof=1`` (unbiased, ``np.cov``; pytorch-fid) by default;
``ddof=0`` (divide by n; StyleGAN2-ADA / StyleGAN-V ``FeatureStats.get_mean_cov``) on
request. A metric names its convention in its ``info`` as ``"covariance": "ddof=0"``
(:data:`COVARIANCE_DDOF` maps the label to the number).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import linalg

__all__ = [
    "COVARIANCE_DDOF",
    "GaussianStats",
    "frechet_distance",
    "frechet_from_moments",
    "frechet_from_rows",
]

#: Covariance conventions by the label a metric records (``info["covariance"]``).
COVARIANCE_DDOF = {"ddof=1": 1, "ddof=0": 0}


def _check_ddof(ddof: int, n: int) -> None:
    if ddof not in (0, 1):
        raise ValueError(f"ddof must be 0 or 1, got {ddof}")
    if n < 2:
        raise ValueError(f"need at least 2 feature rows for a covariance, have {n}")


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

    def mean_cov(self, ddof: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """Mean ``(D,)`` and covariance ``(D, D)``: scatter / (n − ddof); ddof=1 is
        ``np.cov``'s unbiased estimate, ddof=0 StyleGAN-V's."""
        _check_ddof(ddof, self.n)
        mu = self.s / self.n
        cov = (self.ss - self.n * np.outer(mu, mu)) / (self.n - ddof)
        return mu, cov


def frechet_from_moments(
    mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray, eps: float = 1e-6
) -> float:
    """d² = ‖μ1 − μ2‖² + Tr(Σ1 + Σ2 − 2 (Σ1 Σ2)^½)  (pytorch-fid's formula, SciPy sqrtm).

    A singular product is retried with ``eps`` added to both diagonals (as pytorch-fid);
    a large imaginary component raises ``ValueError``. Kept as the reference for
    :func:`frechet_distance`, which computes the same trace faster.
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


def _trace_sqrt_product(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
    """Tr (Σ1 Σ2)^½ for symmetric PSD Σ1, Σ2: Σ1 Σ2 is similar to S Σ2 S with S = Σ1^½,
    a symmetric PSD matrix, so the trace is Σ √λ over its eigenvalues (two ``eigh`` calls
    instead of a general ``sqrtm``: several times faster at D = 2048)."""
    w, v = linalg.eigh(sigma1)
    s = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    ev = linalg.eigvalsh(s @ sigma2 @ s)
    return float(np.sqrt(np.clip(ev, 0, None)).sum())


def frechet_distance(a: GaussianStats, b: GaussianStats, ddof: int = 1) -> float:
    """Fréchet distance between the Gaussians fitted to two feature sets (covariance
    convention ``ddof``, :meth:`GaussianStats.mean_cov`)."""
    mu1, s1 = a.mean_cov(ddof)
    mu2, s2 = b.mean_cov(ddof)
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2 * _trace_sqrt_product(s1, s2))


def frechet_from_rows(x1: np.ndarray, x2: np.ndarray, ddof: int = 1) -> float:
    """Fréchet distance of the Gaussians fitted to feature rows ``x1`` (n1, D) and ``x2``
    (n2, D), same covariance convention ``ddof`` as :func:`frechet_distance`.

    With centred rows A, B, Σ1 Σ2 = AᵀA BᵀB / ((n1−d)(n2−d)) (d = ddof) has the nonzero
    eigenvalues of (A Bᵀ)(A Bᵀ)ᵀ, so Tr (Σ1 Σ2)^½ is the sum of the singular values of
    A Bᵀ over √((n1−d)(n2−d)): an n1 x n2 problem, fast when there are fewer rows than
    dimensions (one 500-frame video against 2048-d Inception features).
    """
    x1 = np.asarray(x1, dtype=np.float64)
    x2 = np.asarray(x2, dtype=np.float64)
    n1, n2 = len(x1), len(x2)
    if min(n1, n2) < 2:
        raise ValueError(f"need at least 2 feature rows per set, have {n1} and {n2}")
    _check_ddof(ddof, n1)
    if max(n1, n2) >= x1.shape[1]:
        s1, s2 = GaussianStats.empty(x1.shape[1]), GaussianStats.empty(x2.shape[1])
        s1.add(x1)
        s2.add(x2)
        return frechet_distance(s1, s2, ddof)
    a, b = x1 - x1.mean(axis=0), x2 - x2.mean(axis=0)
    diff = x1.mean(axis=0) - x2.mean(axis=0)
    tr1 = float((a * a).sum()) / (n1 - ddof)
    tr2 = float((b * b).sum()) / (n2 - ddof)
    cross = linalg.svdvals(a @ b.T).sum() / np.sqrt((n1 - ddof) * (n2 - ddof))
    return float(diff @ diff + tr1 + tr2 - 2 * cross)
