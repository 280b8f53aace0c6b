"""The fast Fréchet routes equal SciPy's sqrtm formula (pytorch-fid's)."""

from __future__ import annotations

import numpy as np
import pytest

from reenactbench.metrics.frechet import (
    GaussianStats,
    frechet_distance,
    frechet_from_moments,
    frechet_from_rows,
)


def _stats(x: np.ndarray) -> GaussianStats:
    s = GaussianStats.empty(x.shape[1])
    s.add(x)
    return s


@pytest.mark.parametrize(("n1", "n2", "dim"), [(40, 30, 64), (200, 150, 16), (12, 12, 300)])
def test_fast_routes_match_sqrtm(n1: int, n2: int, dim: int) -> None:
    rng = np.random.default_rng(dim)
    x1 = rng.normal(size=(n1, dim))
    x2 = rng.normal(size=(n2, dim)) @ rng.normal(size=(dim, dim)) * 0.2 + 0.5
    a, b = _stats(x1), _stats(x2)
    reference = frechet_from_moments(*a.mean_cov(), *b.mean_cov())
    assert frechet_distance(a, b) == pytest.approx(reference, rel=1e-7)
    assert frechet_from_rows(x1, x2) == pytest.approx(reference, rel=1e-7)


def test_closed_forms() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(50, 8))
    assert abs(frechet_from_rows(x, x)) < 1e-9
    shift = np.arange(8.0)
    assert frechet_from_rows(x, x + shift) == pytest.approx(shift @ shift, rel=1e-9)
    with pytest.raises(ValueError, match="at least 2"):
        frechet_from_rows(x[:1], x)
