"""OpenFace 2.0 CSV import: the AU / gaze / head-pose series the paper's correlations use.

OpenFace 2.0 (``FeatureExtraction -f video.mp4``) writes one CSV row per frame. Its
header names carry a leading space (``" AU01_r"``, ``" gaze_angle_x"``, ``" pose_Rx"``);
names are stripped here. Per frame we keep the 22 attribute columns of
:data:`ATTRIBUTE_NAMES`, in this order:

* the 17 AU intensities ``AU01_r`` .. ``AU45_r`` (0..5 scale),
* the 2 gaze angles ``gaze_angle_x``, ``gaze_angle_y`` (radians, camera frame; older
  OpenFace 2.0 builds write only the per-eye unit vectors ``gaze_0_*``/``gaze_1_*``:
  the angles are then derived as OpenFace's ``GazeAnalysis::GetGazeAngle`` does,
  ``g = (gaze_0 + gaze_1) / 2``, ``x = atan2(g_x, -g_z)``, ``y = atan2(g_y, -g_z)``),
* the 3 head rotations ``pose_Rx``, ``pose_Ry``, ``pose_Rz`` (pitch, yaw, roll in radians,
  ``R = Rx @ Ry @ Rz`` in the camera frame: x right, y down, z away from the camera).

Rows with ``success == 0`` (tracking failed) become NaN rows. The output's column names
follow OpenFace (TadasBaltrusaitis/OpenFace, academic non-commercial licence); this
module only reads its CSV format.

Layout of an OpenFace folder (``options["openface_dir"]``):

    OPENFACE_DIR/real/<video>.csv            ground truth: the driving video
    OPENFACE_DIR/fake/<method>/<job>.csv     one generated video (job = pair key)
    OPENFACE_DIR/fake/<job>.csv              fallback (e.g. ``reenactbench score``)
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from reenactbench.errors import InputError

__all__ = [
    "AU_NAMES",
    "GAZE_NAMES",
    "POSE_NAMES",
    "ATTRIBUTE_NAMES",
    "AU_SLICE",
    "GAZE_SLICE",
    "POSE_SLICE",
    "read_openface_csv",
    "openface_real_csv",
    "openface_fake_csv",
]

#: The 17 AU intensity columns of OpenFace 2.0 (0..5 scale), in its order.
AU_NAMES = tuple(
    f"AU{n:02d}_r" for n in (1, 2, 4, 5, 6, 7, 9, 10, 12, 14, 15, 17, 20, 23, 25, 26, 45)
)
#: Gaze angles (radians): x = left-right, y = up-down (positive = looking down).
GAZE_NAMES = ("gaze_angle_x", "gaze_angle_y")
#: Head rotation (radians): pitch, yaw, roll with ``R = Rx @ Ry @ Rz``.
POSE_NAMES = ("pose_Rx", "pose_Ry", "pose_Rz")
#: The 22 columns of every attribute series ``(T, 22)``, in this order.
ATTRIBUTE_NAMES = AU_NAMES + GAZE_NAMES + POSE_NAMES
AU_SLICE = slice(0, 17)
GAZE_SLICE = slice(17, 19)
POSE_SLICE = slice(19, 22)

_GAZE_VECTORS = tuple(f"gaze_{e}_{a}" for e in (0, 1) for a in "xyz")


def _column(header: list[str], name: str, path: Path) -> int:
    try:
        return header.index(name)
    except ValueError:
        raise InputError(
            f"{path}: no {name!r} column; give OpenFace 2.0 FeatureExtraction output "
            "(run it with -aus -gaze -pose or with no output flags)"
        ) from None


def read_openface_csv(path: Path) -> np.ndarray:
    """Read the attribute series of one OpenFace 2.0 CSV.

    Args:
        path: an OpenFace 2.0 ``FeatureExtraction`` CSV (one face, one row per frame).

    Returns:
        ``(N, 22) float64`` in :data:`ATTRIBUTE_NAMES` order (AU intensities 0..5, gaze
        and pose in radians); rows whose ``success`` is 0 are NaN.

    Raises:
        InputError: unreadable file, missing columns, non-numeric values, or several
            faces per frame (``FaceLandmarkVidMulti`` output).
    """
    path = Path(path)
    try:
        with path.open(newline="") as f:
            rows = list(csv.reader(f))
    except OSError as e:
        raise InputError(f"{path}: cannot read OpenFace CSV ({e.strerror})") from None
    if not rows:
        raise InputError(f"{path}: empty OpenFace CSV; rerun OpenFace FeatureExtraction")
    header = [h.strip() for h in rows[0]]
    body = [r for r in rows[1:] if r and any(c.strip() for c in r)]
    if "face_id" in header and len(body) > 1:
        fi = header.index("face_id")
        if len({r[fi].strip() for r in body}) > 1:
            raise InputError(
                f"{path}: several faces per frame; use OpenFace FeatureExtraction (one face)"
            )
    aus = [_column(header, n, path) for n in AU_NAMES]
    pose = [_column(header, n, path) for n in POSE_NAMES]
    has_angles = all(n in header for n in GAZE_NAMES)
    gaze = [_column(header, n, path) for n in (GAZE_NAMES if has_angles else _GAZE_VECTORS)]
    success = header.index("success") if "success" in header else None
    cols = aus + gaze + pose
    try:
        table = np.array([[float(r[c]) for c in cols] for r in body], dtype=np.float64)
        ok = (
            np.array([float(r[success]) for r in body]) != 0
            if success is not None
            else np.ones(len(body), dtype=bool)
        )
    except (ValueError, IndexError) as e:
        raise InputError(f"{path}: malformed OpenFace CSV row ({e}); rerun OpenFace") from None
    table = table.reshape(len(body), len(cols))
    if not has_angles:
        g = (table[:, 17:20] + table[:, 20:23]) / 2.0  # mean of the two eyes' unit vectors
        angles = np.stack([np.arctan2(g[:, 0], -g[:, 2]), np.arctan2(g[:, 1], -g[:, 2])], 1)
        table = np.concatenate([table[:, :17], angles, table[:, 23:]], axis=1)
    table[~ok] = np.nan
    return table


def openface_real_csv(root: Path, video: str) -> Path:
    """``root/real/<video>.csv``: the ground-truth (driving video) CSV."""
    return Path(root) / "real" / f"{video}.csv"


def openface_fake_csv(root: Path, method: str, job: str) -> Path:
    """``root/fake/<method>/<job>.csv`` if it exists, else ``root/fake/<job>.csv``."""
    path = Path(root) / "fake" / method / f"{job}.csv"
    if method and path.is_file():
        return path
    flat = Path(root) / "fake" / f"{job}.csv"
    return flat if flat.is_file() else path
