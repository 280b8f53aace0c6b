"""The one exception family of reenactbench.

Library code raises these for expected failures (bad input, missing weights, bad
protocol files); their text names the file at fault and the fix. The CLI prints them
as one line and exits with ``exit_code``. Any other exception is a bug and keeps its
traceback.
"""

from __future__ import annotations

__all__ = [
    "ReenactbenchError",
    "InputError",
    "ProtocolError",
    "MethodError",
    "MethodUnavailable",
    "MetricError",
    "WeightsMissing",
]


class ReenactbenchError(Exception):
    """Base class of expected, user-facing failures."""

    exit_code: int = 2


class InputError(ReenactbenchError):
    """A video, image, folder or data set cannot be used as given."""


class ProtocolError(ReenactbenchError):
    """A protocol file is malformed or cannot be satisfied by the data."""


class MethodError(ReenactbenchError):
    """A method name, plug-in path or method option is wrong."""


class MethodUnavailable(MethodError):
    """A method cannot run here (a missing optional dependency): runs skip it."""


class MetricError(ReenactbenchError):
    """A metric key is unknown."""


class WeightsMissing(ReenactbenchError):
    """A weight file a method or metric needs is not present."""

    def __init__(self, name: str, hint: str | None = None) -> None:
        self.name = name
        super().__init__(
            hint or f"weights missing: {name} (reenactbench weights import {name} FILE)"
        )
