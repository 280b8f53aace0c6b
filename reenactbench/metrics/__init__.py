"""Metrics: importing this package registers every built-in metric.

``metric_keys()`` lists them in the paper's column order (``PAPER_ORDER``).
"""

from reenactbench.metrics import fid, fvd, identity, lpips, pixel, temporal
from reenactbench.metrics.registry import (
    PAPER_ORDER,
    MetricSpec,
    get_metric,
    metric_keys,
    register_metric,
    resolve_metrics,
)

__all__ = [
    "PAPER_ORDER",
    "MetricSpec",
    "get_metric",
    "metric_keys",
    "fid",
    "fvd",
    "identity",
    "lpips",
    "pixel",
    "temporal",
    "register_metric",
    "resolve_metrics",
]
