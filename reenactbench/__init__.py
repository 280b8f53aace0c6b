"""reenactbench: reference benchmark for one-shot face video re-enactment."""

from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from reenactbench.report.load import load_run

try:
    __version__ = version("reenactbench")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__", "load_run"]


def __getattr__(name: str) -> object:
    """``reenactbench.load_run``, imported on first use (pandas stays out of
    ``import reenactbench``)."""
    if name == "load_run":
        from reenactbench.report.load import load_run

        return load_run
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
