"""Per-frame face attributes for the temporal correlations: head pose and gaze from
68 landmarks (the offline ``landmarks`` backend), and the optional py-feat backend.

Every extractor returns rows in :data:`reenactbench.faces.openface.ATTRIBUTE_NAMES`
order, ``(B, 22) float64``: 17 AU intensities, 2 gaze angles, 3 head rotations; NaN
where a value is unavailable (no face; AUs under the landmark backend).

**Head pose** (``landmarks`` backend): perspective-n-point fit of a generic 3D 68-point
face to the dlib landmarks by Levenberg-Marquardt (``scipy.optimize.least_squares``) on
rotation vector + translation, started from a weak-perspective (scaled orthographic)
solution. Camera: OpenFace's default intrinsics when none are known,
``f = 500 * (W / 640 + H / 480) / 2`` pixels, principal point at the image centre. The 3D
face is insightface's ``meanshape_68.pkl`` (x right, y down as in the image, z towards
the viewer); we negate z so it lives in OpenCV's camera frame (x right, y down, z away
from the camera: a frontal face has R = I) and symmetrise it (average with its mirror
image, landmark labels swapped) so that a mirrored frame gives exactly mirrored angles.
Angles follow OpenFace: ``R = Rx(pitch) @ Ry(yaw) @ Rz(roll)``, radians.

**Gaze** (``landmarks`` backend): an approximation. dlib's 68 points have no iris, so
each pupil is the centroid of the darkest pixels inside the eye contour (points 36-41,
42-47; pixels at or below the eye's :data:`PUPIL_PERCENTILE`-th grey-level percentile).
Its offset from the eye-contour centroid, along the eye-corner axis and its normal, is
divided by the eye width (corner distance) and height (mean lid gap) and averaged over
both eyes (an eye is skipped when closed: height < :data:`CLOSED_EYE_RATIO` x width).
Angles are ``arcsin(clip(GAZE_GAIN * offset))``: the gains take a 12 mm eyeball radius,
a 30 mm eye width and a 10 mm eye height, so ``GAZE_GAIN = (2.5, 0.83)``. They are not
calibrated; Pearson correlation is invariant to the scale, and nearly so to this mild
non-linearity. Signs follow OpenFace: x positive towards the image right, y positive
downwards. The result is eye-in-head gaze, not OpenFace's camera-frame gaze.
"""

from __future__ import annotations

import importlib.util
import pickle
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from reenactbench.errors import InputError
from reenactbench.faces.openface import ATTRIBUTE_NAMES, AU_NAMES

__all__ = [
    "MIRROR_68",
    "PUPIL_PERCENTILE",
    "CLOSED_EYE_RATIO",
    "GAZE_GAIN",
    "mean_face_path",
    "mean_face_unavailable",
    "mean_face_68",
    "camera_focal",
    "head_pose",
    "euler_from_matrix",
    "gaze_angles",
    "landmark_attributes",
    "pyfeat_unavailable",
    "PyFeatAttributes",
]

#: Index of each iBUG-68 point's mirror partner (left-right swap).
MIRROR_68 = np.array(
    list(range(16, -1, -1))  # jaw
    + list(range(26, 16, -1))  # brows
    + [27, 28, 29, 30]  # nose bridge
    + [35, 34, 33, 32, 31]  # nostrils
    + [45, 44, 43, 42, 47, 46]  # right eye <- left eye
    + [39, 38, 37, 36, 41, 40]  # left eye <- right eye
    + [54, 53, 52, 51, 50, 49, 48, 59, 58, 57, 56, 55]  # outer lips
    + [64, 63, 62, 61, 60, 67, 66, 65]  # inner lips
)
PUPIL_PERCENTILE = 20.0
CLOSED_EYE_RATIO = 0.12
GAZE_GAIN = (2.5, 0.83)

_R_EYE, _L_EYE = np.arange(36, 42), np.arange(42, 48)


def mean_face_path() -> Path | None:
    """insightface's ``data/objects/meanshape_68.pkl``, or ``None`` if not installed."""
    try:
        spec = importlib.util.find_spec("insightface")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "data/objects/meanshape_68.pkl"
    return path if path.is_file() else None


def mean_face_unavailable() -> str | None:
    """Why head pose cannot be estimated here, or ``None``."""
    if mean_face_path() is None:
        return (
            "head pose needs the 3D mean face meanshape_68.pkl shipped by insightface: "
            "pip install insightface"
        )
    return None


@cache
def mean_face_68() -> np.ndarray:
    """The generic 3D face, ``(68, 3) float64``, OpenCV camera axes (x right, y down,
    z away from the camera), centred, symmetric under :data:`MIRROR_68`, width ~1.25.

    Raises:
        InputError: insightface (which ships the file) is not installed.
    """
    path = mean_face_path()
    if path is None:
        raise InputError(str(mean_face_unavailable()))
    with path.open("rb") as f:
        m = np.asarray(pickle.load(f), dtype=np.float64).reshape(68, 3)
    m = m * np.array([1.0, 1.0, -1.0])  # z towards the viewer -> z away from the camera
    mirrored = m[MIRROR_68] * np.array([-1.0, 1.0, 1.0])
    m = (m + mirrored) / 2.0
    return m - m.mean(axis=0)


def camera_focal(height: int, width: int) -> float:
    """OpenFace's default focal length in pixels for an ``height x width`` image."""
    return 500.0 * (width / 640.0 + height / 480.0) / 2.0


def _rodrigues(v: np.ndarray) -> np.ndarray:
    theta = float(np.linalg.norm(v))
    if theta < 1e-12:
        return np.eye(3)
    k = v / theta
    kx = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + np.sin(theta) * kx + (1 - np.cos(theta)) * (kx @ kx)


def _matrix_to_rotvec(r: np.ndarray) -> np.ndarray:
    from scipy.spatial.transform import Rotation

    return Rotation.from_matrix(r).as_rotvec()


def euler_from_matrix(r: np.ndarray) -> np.ndarray:
    """``(pitch, yaw, roll)`` radians of ``R = Rx(pitch) @ Ry(yaw) @ Rz(roll)``, ``(3,)``."""
    yaw = np.arcsin(np.clip(r[0, 2], -1.0, 1.0))
    pitch = np.arctan2(-r[1, 2], r[2, 2])
    roll = np.arctan2(-r[0, 1], r[0, 0])
    return np.array([pitch, yaw, roll])


def head_pose(landmarks: np.ndarray, height: int, width: int) -> np.ndarray:
    """Head rotation from 68 landmarks by PnP on the generic face (see module doc).

    Args:
        landmarks: ``(68, 2)`` (x, y) pixels, iBUG order.
        height, width: image size in pixels (sets the camera intrinsics).

    Returns:
        ``(3,) float64`` (pitch, yaw, roll) in radians, OpenFace's ``pose_Rx/Ry/Rz``.
    """
    from scipy.optimize import least_squares

    model = mean_face_68()
    pts = np.asarray(landmarks, dtype=np.float64).reshape(68, 2)
    f = camera_focal(height, width)
    c = np.array([(width - 1) / 2.0, (height - 1) / 2.0])  # image centre, pixel-index coords
    # Weak perspective: pts - mean ~= model @ A.T, A = s * R[:2].
    x = pts - pts.mean(axis=0)
    a = np.linalg.lstsq(model, x, rcond=None)[0].T  # (2, 3)
    n0, n1 = np.linalg.norm(a, axis=1)
    r1, r2 = a[0] / n0, a[1] / n1
    u, _, vt = np.linalg.svd(np.stack([r1, r2, np.cross(r1, r2)]))
    r0 = u @ vt
    if np.linalg.det(r0) < 0:
        r0 = u @ np.diag([1.0, 1.0, -1.0]) @ vt
    tz = f / ((n0 + n1) / 2.0)
    t0 = np.array([*((pts.mean(axis=0) - c) * tz / f), tz])
    scale = float(np.sqrt((x**2).sum(axis=1).mean()))  # residuals in face-size units

    def residuals(p: np.ndarray) -> np.ndarray:
        cam = model @ _rodrigues(p[:3]).T + p[3:]
        proj = f * cam[:, :2] / cam[:, 2:3] + c
        return ((proj - pts) / scale).ravel()

    p0 = np.concatenate([_matrix_to_rotvec(r0), t0])
    sol = least_squares(residuals, p0, method="lm", x_scale=np.r_[1.0, 1.0, 1.0, tz, tz, tz])
    return euler_from_matrix(_rodrigues(sol.x[:3]))


def _eye_offset(gray: np.ndarray, eye: np.ndarray) -> np.ndarray | None:
    """Normalised pupil offset ``(dx, dy)`` of one eye, or ``None`` (closed / off image)."""
    from skimage.draw import polygon

    out_c, in_c = eye[0], eye[3]
    width = float(np.linalg.norm(in_c - out_c))
    height = float((np.linalg.norm(eye[1] - eye[5]) + np.linalg.norm(eye[2] - eye[4])) / 2.0)
    if width < 2.0 or height < CLOSED_EYE_RATIO * width:
        return None
    rr, cc = polygon(eye[:, 1], eye[:, 0], shape=gray.shape)
    if len(rr) < 4:
        return None
    vals = gray[rr, cc]
    dark = vals <= np.percentile(vals, PUPIL_PERCENTILE)
    pupil = np.array([cc[dark].mean(), rr[dark].mean()])
    ux = (in_c - out_c) if in_c[0] >= out_c[0] else (out_c - in_c)  # points to image right
    ux = ux / np.linalg.norm(ux)
    uy = np.array([-ux[1], ux[0]])  # image-down normal
    d = pupil - eye.mean(axis=0)
    return np.array([d @ ux / width, d @ uy / height])


def gaze_angles(image: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """Approximate gaze ``(x, y)`` in radians from the pupils' dark-pixel centroids.

    Args:
        image: ``(H, W, 3) uint8`` RGB.
        landmarks: ``(68, 2)`` (x, y) pixels, iBUG order.

    Returns:
        ``(2,) float64``: x positive towards the image right, y positive downwards; NaN
        when both eyes are closed or off the image. See the module doc for the model.
    """
    gray = image.astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    pts = np.asarray(landmarks, dtype=np.float64)
    offs = [o for idx in (_R_EYE, _L_EYE) if (o := _eye_offset(gray, pts[idx])) is not None]
    if not offs:
        return np.full(2, np.nan)
    off = np.mean(offs, axis=0) * np.asarray(GAZE_GAIN)
    return np.arcsin(np.clip(off, -1.0, 1.0))


def landmark_attributes(frames: np.ndarray) -> np.ndarray:
    """Attribute rows of the ``landmarks`` backend.

    Args:
        frames: ``(B, H, W, 3) uint8`` RGB.

    Returns:
        ``(B, 22) float64`` in ``ATTRIBUTE_NAMES`` order: AU columns NaN, gaze and pose
        in radians, a NaN row where no face is detected (pose NaN without insightface's
        mean face, gaze NaN when both eyes are closed).
    """
    from reenactbench.faces.dlib_faces import detect_landmarks

    out = np.full((len(frames), len(ATTRIBUTE_NAMES)), np.nan)
    na = len(AU_NAMES)
    pose = mean_face_unavailable() is None
    for i, frame in enumerate(frames):
        lm = detect_landmarks(frame)
        if lm is None:
            continue
        out[i, na : na + 2] = gaze_angles(frame, lm)
        if pose:
            out[i, na + 2 :] = head_pose(lm, frame.shape[0], frame.shape[1])
    return out


# --- py-feat (optional; cannot be exercised offline: its models come from the HF hub) ---

_PYFEAT_MODELS = ("xgb_au", "l2cs", "mobilefacenet", "retinaface")
#: py-feat AU column for each OpenFace AU (py-feat has AU43 "eyes closed", not AU45).
_PYFEAT_AUS = tuple(n[:4] if n != "AU45_r" else "AU43" for n in AU_NAMES)


def pyfeat_unavailable() -> str | None:
    """Why the py-feat backend cannot run (not installed, models not downloaded)."""
    spec = importlib.util.find_spec("feat")
    if spec is None or not spec.submodule_search_locations:
        return "temporal_backend=pyfeat needs py-feat: pip install py-feat"
    res = Path(list(spec.submodule_search_locations)[0]) / "resources"
    names = [p.name for p in res.iterdir()] if res.is_dir() else []
    missing = [m for m in _PYFEAT_MODELS if not any(m in n for n in names)]
    if missing:
        return (
            f"py-feat models missing in {res} ({', '.join(missing)}); run feat.Detector() "
            "once with network access to download them"
        )
    return None


class PyFeatAttributes:
    """py-feat ``Detector`` (xgb AUs, L2CS gaze, pose MLP) as an attribute extractor.

    AU intensities are py-feat's (0..1 probabilities, AU43 in place of AU45); gaze is
    ``(gaze_yaw, gaze_pitch)`` and pose ``(Pitch, Yaw, Roll)`` converted to radians.
    Untested here: py-feat's models cannot be downloaded offline.
    """

    def __init__(self, device: str = "cpu") -> None:
        from feat import Detector

        self.detector: Any = Detector(emotion_model=None, identity_model=None, device=device)

    def __call__(self, frames: np.ndarray) -> np.ndarray:
        """``(B, H, W, 3) uint8`` -> ``(B, 22) float64`` (NaN row: no face)."""
        import torch

        images = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2)
        fex = self.detector.detect(
            images.float(), data_type="tensor", batch_size=len(frames), progress_bar=False
        )
        out = np.full((len(frames), len(ATTRIBUTE_NAMES)), np.nan)
        fex = fex.assign(_area=fex["FaceRectWidth"] * fex["FaceRectHeight"])
        for frame, rows in fex.groupby("frame"):
            row = rows.sort_values("_area", ascending=False).iloc[0]
            if not np.isfinite(row["_area"]):
                continue
            aus = [row.get(c, np.nan) for c in _PYFEAT_AUS]
            gaze = [row["gaze_yaw"], row["gaze_pitch"]]
            pose = np.radians([row["Pitch"], row["Yaw"], row["Roll"]])
            out[int(frame)] = np.r_[aus, gaze, pose]
        return out
