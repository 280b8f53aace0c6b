from __future__ import annotations

import numpy as np
import pytest

from reenactbench.faces import (
    detect_faces,
    detect_landmarks,
    expression_pose_features,
    face_landmarks,
    faces_unavailable,
    farthest_point_sampling,
)
from reenactbench.faces.features import FEATURE_NAMES
from reenactbench.video import read_frames


@pytest.fixture(scope="module")
def man_frame(feat_video) -> np.ndarray:
    return read_frames(feat_video("single_face.mp4"), max_frames=1)[0]


@pytest.mark.faces
def test_faces_available() -> None:
    assert faces_unavailable() is None


@pytest.mark.faces
def test_detector_finds_the_one_face(man_frame: np.ndarray) -> None:
    assert man_frame.shape == (360, 640, 3)
    faces = detect_faces(man_frame)
    assert len(faces) == 1
    x0, y0, x1, y1 = faces[0].box
    # known location of the face in frame 0 (about x 194-393, y 112-293)
    assert 180 <= x0 <= 230 and 380 <= x1 <= 410
    assert 95 <= y0 <= 130 and 280 <= y1 <= 310
    assert faces[0].score > 0


@pytest.mark.faces
def test_no_face_in_a_flat_image() -> None:
    assert detect_faces(np.full((200, 200, 3), 128, np.uint8)) == []
    assert detect_landmarks(np.full((200, 200, 3), 128, np.uint8)) is None


@pytest.mark.faces
def test_landmarks_inside_the_box(man_frame: np.ndarray) -> None:
    box = detect_faces(man_frame)[0].box
    lm = face_landmarks(man_frame, box)
    assert lm.shape == (68, 2) and lm.dtype == np.float32
    x0, y0, x1, y1 = box
    pad = 0.15 * (x1 - x0)
    assert (lm[:, 0] >= x0 - pad).all() and (lm[:, 0] <= x1 + pad).all()
    assert (lm[:, 1] >= y0 - pad).all() and (lm[:, 1] <= y1 + pad).all()
    # anatomy: eyes above the nose tip above the mouth; subject's right eye on image left
    assert lm[36:48, 1].mean() < lm[30, 1] < lm[48:68, 1].mean()
    assert lm[36:42, 0].mean() < lm[42:48, 0].mean()
    np.testing.assert_array_equal(detect_landmarks(man_frame), lm)


def _toy_face() -> np.ndarray:
    rng = np.random.default_rng(0)
    lm = rng.uniform(0, 100, size=(68, 2))
    lm[36], lm[45] = (30, 40), (70, 40)  # outer eye corners, level
    lm[30] = (50, 60)  # nose tip, centred
    return lm


def test_features_shape_and_invariances() -> None:
    lm = _toy_face()
    f = expression_pose_features(lm)
    assert f.shape == (136 + len(FEATURE_NAMES),) and f.dtype == np.float64
    yaw, pitch, roll = f[136:139]
    assert yaw == pytest.approx(0.0) and pitch == pytest.approx(0.5) and roll == pytest.approx(0)
    # translation and scale do not change the descriptor
    np.testing.assert_allclose(expression_pose_features(lm * 3 + 17), f, atol=1e-9)
    # rotation changes roll only among the proxies that are rotation-invariant
    a = 0.3
    rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    g = expression_pose_features(lm @ rot.T)
    assert g[138] == pytest.approx(a)
    np.testing.assert_allclose(np.delete(g[136:], 2), np.delete(f[136:], 2), atol=1e-9)
    with pytest.raises(ValueError):
        expression_pose_features(np.zeros((68, 2)))
    with pytest.raises(ValueError):
        expression_pose_features(np.zeros((5, 2)))


def test_fps_picks_extremes_first_and_is_deterministic() -> None:
    x = np.array([[0.0], [1.0], [2.0], [3.0], [10.0]])
    assert farthest_point_sampling(x, 2) == [4, 0]
    assert farthest_point_sampling(x, 3) == [4, 0, 3]  # 3 is 3 from 0, 7 from 10
    assert farthest_point_sampling(x, 2, first=1) == [1, 4]
    rng = np.random.default_rng(1)
    f = rng.normal(size=(40, 144))
    picks = farthest_point_sampling(f, 5)
    assert len(set(picks)) == 5 and picks == farthest_point_sampling(f, 5)


def test_fps_ties_and_duplicates() -> None:
    # symmetric set: both ends are equally far from the mean -> the lower index wins
    assert farthest_point_sampling(np.array([[-1.0], [0.0], [1.0]]), 2) == [0, 2]
    # all rows equal: still k distinct indices, lowest first
    assert farthest_point_sampling(np.ones((4, 3)), 4) == [0, 1, 2, 3]


@pytest.mark.parametrize("k", [0, 6])
def test_fps_rejects_bad_k(k: int) -> None:
    with pytest.raises(ValueError):
        farthest_point_sampling(np.zeros((5, 2)), k)


def test_fps_rejects_nan_and_bad_first() -> None:
    with pytest.raises(ValueError):
        farthest_point_sampling(np.array([[np.nan], [1.0]]), 1)
    with pytest.raises(ValueError):
        farthest_point_sampling(np.zeros((3, 1)), 1, first=3)


@pytest.mark.faces
def test_fps_on_real_frames_picks_diverse_expressions(feat_video) -> None:
    frames = read_frames(feat_video("single_face.mp4"), max_frames=72)[::4]
    feats = np.stack([expression_pose_features(detect_landmarks(f)) for f in frames])
    picks = farthest_point_sampling(feats, 5)
    assert len(set(picks)) == 5
    mouth = feats[:, 136 + FEATURE_NAMES.index("mouth_open")]
    # the chosen set spans a wider range of mouth opening than the first 5 frames
    assert np.ptp(mouth[picks]) > np.ptp(mouth[:5])
