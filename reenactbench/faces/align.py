"""ArcFace 5-point alignment from dlib's 68 landmarks (insightface backend of ``id``).

insightface's recognition models are trained on 112x112 crops aligned by a similarity
transform of 5 points onto ``face_align.arcface_dst``: left eye centre, right eye centre,
nose tip, left and right mouth corner, in image order (left = smaller x; the subject's
right eye). From the iBUG 68-point scheme these are the means of points 36-41 and 42-47,
point 30, and points 48 and 54. The warp itself is insightface's ``norm_crop`` (needs the
``insightface`` package, imported on use).
"""

from __future__ import annotations

import warnings

import numpy as np

__all__ = ["five_points", "arcface_crop"]


def five_points(landmarks68: np.ndarray) -> np.ndarray:
    """The ArcFace 5 points of 68 iBUG landmarks.

    Args:
        landmarks68: ``(68, 2)`` (x, y) pixels.

    Returns:
        ``(5, 2) float32`` (x, y) pixels: eye centres (image left, right), nose tip
        (point 30), mouth corners (points 48, 54).
    """
    lm = np.asarray(landmarks68, dtype=np.float64)
    if lm.shape != (68, 2):
        raise ValueError(f"landmarks must be (68, 2), got {lm.shape}")
    return np.stack(
        [lm[36:42].mean(axis=0), lm[42:48].mean(axis=0), lm[30], lm[48], lm[54]]
    ).astype(np.float32)


def arcface_crop(image: np.ndarray, landmarks68: np.ndarray, size: int = 112) -> np.ndarray:
    """insightface's ``norm_crop`` of ``image`` at the 5 points of ``landmarks68``.

    Args:
        image: ``(H, W, 3) uint8`` (any channel order; kept as given).
        landmarks68: ``(68, 2)`` (x, y) pixels of one face in ``image``.
        size: output side (112 for insightface's recognition models).

    Returns:
        ``(size, size, 3) uint8``, same channel order as ``image``.
    """
    from insightface.utils.face_align import norm_crop

    with warnings.catch_warnings():  # insightface 2.1 calls skimage's deprecated estimate()
        warnings.filterwarnings("ignore", message=".*estimate.*deprecated", category=FutureWarning)
        return norm_crop(image, landmark=five_points(landmarks68), image_size=size)
