"""Landmarks users bring: a ``<frame>.txt`` file beside a frame image holds its 68 points
in upstream PIRender's keypoint format (136 numbers, ``x y`` per point, pixels of that
image, y down; whitespace or commas between numbers). A method that detects landmarks
uses the file instead of detecting (``Method.set_inputs``, docs/adapters.md)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from PIL import Image

from reenactbench.errors import InputError

__all__ = ["SidecarInputs", "read_landmarks_txt", "sidecar_landmarks"]

_SEP = re.compile(r"[\s,]+")


def read_landmarks_txt(path: Path) -> np.ndarray:
    """``(68, 2) float32`` points of a sidecar file.

    Raises:
        InputError: unreadable, not 136 numbers, or non-finite values (names the file).
    """
    path = Path(path)
    try:
        tokens = [t for t in _SEP.split(path.read_text()) if t]
        values = np.array([float(t) for t in tokens], dtype=np.float64)
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"{path}: cannot read landmarks ({e})") from None
    except ValueError as e:
        raise InputError(f"{path}: landmarks must be numbers ({e})") from None
    if values.size != 136 or not np.isfinite(values).all():
        raise InputError(
            f"{path}: {values.size} numbers; a landmark file holds 136 finite numbers "
            "(x y for each of the 68 points, pixels, y down)"
        )
    return values.reshape(68, 2).astype(np.float32)


def sidecar_landmarks(frame: Path | None, size: int) -> np.ndarray | None:
    """The sidecar points of the image file ``frame``, scaled to a ``size`` x ``size``
    frame (as the method sees it after ``video.resize``), or ``None`` when there is no
    file ``frame.with_suffix(".txt")``."""
    if frame is None:
        return None
    txt = Path(frame).with_suffix(".txt")
    if not txt.is_file():
        return None
    points = read_landmarks_txt(txt)
    with Image.open(frame) as im:
        w, h = im.size
    return points * np.array([size / w, size / h], dtype=np.float32)


class SidecarInputs:
    """Mixin of the adapters that read landmark sidecars: the optional ``set_inputs`` hook
    (docs/adapters.md) records the next job's image files, :meth:`given_landmarks` reads
    the sidecar of one of them."""

    _files: tuple[Path | None, list[Path] | None] = (None, None)

    def set_inputs(self, source: Path | None, driving: list[Path] | None) -> None:
        """The files of the next job's frames (``None`` for a video file): a
        ``<frame>.txt`` beside a frame image holds its landmarks, used instead of
        detecting them."""
        self._files = (source, driving)

    def given_landmarks(self, index: int | None, size: int) -> np.ndarray | None:
        """The sidecar points of driving frame ``index`` (``None``: the source frame),
        scaled to a ``size`` x ``size`` frame, or ``None`` (no file, or a video input).

        Raises:
            InputError: a sidecar that is not 136 finite numbers (names the file).
        """
        source, driving = self._files
        if index is None:
            return sidecar_landmarks(source, size)
        if driving is None or index >= len(driving):
            return None
        return sidecar_landmarks(driving[index], size)
