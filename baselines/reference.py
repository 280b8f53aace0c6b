"""Offline reference methods: bounds that need no weights.

``static`` repeats the source frame (no motion: a lower bound); ``oracle`` returns the
driving frames themselves (an upper bound for same-identity re-enactment, where the
driving frames are the ground truth).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

__all__ = ["StaticMethod", "OracleMethod"]


class _Reference:
    resolution = 256
    weights: tuple[str, ...] = ()

    def __init__(
        self, device: str = "cpu", weights: dict[str, Path] | None = None, resolution: int = 256
    ) -> None:
        self.device = device
        self.resolution = resolution


class StaticMethod(_Reference):
    """Yields the source frame once per driving frame."""

    name = "static"

    def reenact(self, source: np.ndarray, driving: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        """``source`` (R,R,3) uint8 -> one copy of it per driving frame."""
        for _ in driving:
            yield source


class OracleMethod(_Reference):
    """Yields each driving frame unchanged."""

    name = "oracle"

    def reenact(self, source: np.ndarray, driving: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        """Driving frames (R,R,3) uint8, returned as given."""
        yield from driving
