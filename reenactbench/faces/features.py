"""Pose and expression descriptors from 68 landmarks, and diverse-frame selection.

Used by the robustness protocol to choose source frames that differ in head pose and
expression: ``expression_pose_features`` per frame, then ``farthest_point_sampling``.
Pure numpy; landmarks follow the iBUG 68-point order (see ``dlib_faces``).
"""

from __future__ import annotations

import numpy as np

__all__ = ["FEATURE_NAMES", "expression_pose_features", "farthest_point_sampling"]

# iBUG 68 indices (0-based; "right" = the subject's right = image left).
_R_EYE_OUT, _R_EYE_IN, _L_EYE_IN, _L_EYE_OUT = 36, 39, 42, 45
_NOSE_TIP = 30
_MOUTH_L, _MOUTH_R, _LIP_IN_TOP, _LIP_IN_BOTTOM = 48, 54, 62, 66
_R_EYE_LIDS = ((37, 41), (38, 40))
_L_EYE_LIDS = ((43, 47), (44, 46))
_R_BROW, _L_BROW = slice(17, 22), slice(22, 27)
_R_EYE, _L_EYE = slice(36, 42), slice(42, 48)

#: Names of the 8 proxies appended after the 136 normalised landmark coordinates.
FEATURE_NAMES = (
    "yaw",  # nose-tip x offset from the eye-corner midpoint / inter-ocular distance
    "pitch",  # nose-tip y offset below the eye-corner midpoint / inter-ocular distance
    "roll",  # angle of the outer-eye-corner line, radians
    "mouth_open",  # inner-lip gap / mouth width
    "eye_open_r",  # mean lid gap / inter-ocular distance
    "eye_open_l",
    "brow_r",  # eye centre y - brow y (mean over points) / inter-ocular distance
    "brow_l",
)


def expression_pose_features(landmarks: np.ndarray) -> np.ndarray:
    """Descriptor of head pose and expression of one face.

    Args:
        landmarks: ``(68, 2)`` (x, y) pixels, iBUG order.

    Returns:
        ``(144,) float64``: the landmarks minus their centroid divided by their RMS
        distance to it (136 values, x0, y0, x1, ...), then the 8 ``FEATURE_NAMES``
        proxies, measured after undoing the roll (rotation about the eye midpoint).

    Raises:
        ValueError: wrong shape, or degenerate landmarks (all at one point).
    """
    lm = np.asarray(landmarks, dtype=np.float64)
    if lm.shape != (68, 2):
        raise ValueError(f"landmarks must be (68, 2), got {lm.shape}")
    centred = lm - lm.mean(axis=0)
    rms = float(np.sqrt((centred**2).sum(axis=1).mean()))
    eye_vec = lm[_L_EYE_OUT] - lm[_R_EYE_OUT]
    iod = float(np.hypot(*eye_vec))
    if rms < 1e-9 or iod < 1e-9:
        raise ValueError("degenerate landmarks: all points coincide")
    shape = (centred / rms).reshape(-1)

    roll = float(np.arctan2(eye_vec[1], eye_vec[0]))
    c, s = np.cos(-roll), np.sin(-roll)
    mid = (lm[_L_EYE_OUT] + lm[_R_EYE_OUT]) / 2
    up = (lm - mid) @ np.array([[c, s], [-s, c]]) / iod  # de-rolled, eye midpoint at 0, iod = 1

    yaw = up[_NOSE_TIP, 0]
    pitch = up[_NOSE_TIP, 1]
    mouth_w = np.hypot(*(up[_MOUTH_R] - up[_MOUTH_L]))
    mouth_open = np.hypot(*(up[_LIP_IN_BOTTOM] - up[_LIP_IN_TOP])) / max(mouth_w, 1e-9)
    eye_r = np.mean([np.hypot(*(up[a] - up[b])) for a, b in _R_EYE_LIDS])
    eye_l = np.mean([np.hypot(*(up[a] - up[b])) for a, b in _L_EYE_LIDS])
    brow_r = up[_R_EYE, 1].mean() - up[_R_BROW, 1].mean()
    brow_l = up[_L_EYE, 1].mean() - up[_L_BROW, 1].mean()
    proxies = np.array([yaw, pitch, roll, mouth_open, eye_r, eye_l, brow_r, brow_l])
    return np.concatenate([shape, proxies]).astype(np.float64)


def farthest_point_sampling(features: np.ndarray, k: int, first: int | None = None) -> list[int]:
    """Choose ``k`` mutually distant rows, greedily and deterministically.

    Each column is standardised (minus its mean, divided by its standard deviation;
    constant columns are left at 0). The first pick is ``first``, or the row farthest
    from the mean; each next pick is the row whose distance to its nearest picked row is
    largest. Ties go to the lowest index; a row is never picked twice.

    Args:
        features: ``(N, D)`` real values, e.g. stacked ``expression_pose_features``.
        k: number of rows to pick, ``1 <= k <= N``.
        first: index of the first pick, or ``None``.

    Returns:
        ``k`` distinct row indices in pick order.

    Raises:
        ValueError: bad shape, non-finite values, ``k`` or ``first`` out of range.
    """
    f = np.asarray(features, dtype=np.float64)
    if f.ndim != 2 or len(f) == 0:
        raise ValueError(f"features must be (N, D) with N >= 1, got {f.shape}")
    if not np.isfinite(f).all():
        raise ValueError("features contain NaN or infinite values")
    n = len(f)
    if not 1 <= k <= n:
        raise ValueError(f"k must be in 1..{n}, got {k}")
    if first is not None and not 0 <= first < n:
        raise ValueError(f"first must be in 0..{n - 1}, got {first}")
    std = f.std(axis=0)
    z = (f - f.mean(axis=0)) / np.where(std > 0, std, 1.0)
    start = int(np.argmax((z**2).sum(axis=1))) if first is None else int(first)
    picks = [start]
    nearest = np.sqrt(((z - z[start]) ** 2).sum(axis=1))
    nearest[start] = -np.inf
    while len(picks) < k:
        nxt = int(np.argmax(nearest))  # first maximum: lowest index wins ties
        picks.append(nxt)
        nearest = np.minimum(nearest, np.sqrt(((z - z[nxt]) ** 2).sum(axis=1)))
        nearest[picks] = -np.inf
    return picks
