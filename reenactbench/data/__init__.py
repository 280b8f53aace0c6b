"""Data sets: prepared layouts and plain folders (``dataset``), FOMM-style preprocessing
of raw videos (``prepare``), and the built-in demo data set of real faces (``demo``).

Import the submodules directly, e.g. ``from reenactbench.data.prepare import
prepare_videos``; this package imports nothing heavy on its own.
"""

from __future__ import annotations

__all__: list[str] = []
