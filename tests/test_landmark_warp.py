from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from reenactbench.baselines.landmark_warp import LandmarkWarpMethod, piecewise_affine_warp

from reenactbench.errors import InputError
from reenactbench.methods import load_method, method_info
from reenactbench.video import read_frames, read_image

pytestmark = pytest.mark.faces


@pytest.fixture(scope="module")
def source(demo_data: Path) -> np.ndarray:
    return read_image(demo_data / "256" / "man_000" / "000000.png")


def test_registered() -> None:
    info = method_info("landmark-warp")
    assert info.unavailable is None and info.weights == () and info.resolution == 256
    assert isinstance(load_method("landmark-warp"), LandmarkWarpMethod)


def test_identity_warp_is_exact() -> None:
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (32, 48, 3), dtype=np.uint8)
    pts = np.array([[0, 0], [47, 0], [47, 31], [0, 31], [20, 15]], dtype=np.float64)
    tri = np.array([[0, 1, 4], [1, 2, 4], [2, 3, 4], [3, 0, 4]])
    np.testing.assert_array_equal(piecewise_affine_warp(img, pts, pts, tri), img)
    # moving the centre point moves the content under it
    moved = pts.copy()
    moved[4] = (24, 15)
    out = piecewise_affine_warp(img, pts, moved, tri)
    np.testing.assert_array_equal(out[15, 24], img[15, 20])


def test_static_driving_returns_the_source(source: np.ndarray) -> None:
    out = list(LandmarkWarpMethod().reenact(source, [source] * 3))
    assert len(out) == 3
    for frame in out:
        assert frame.shape == (256, 256, 3) and frame.dtype == np.uint8
        assert np.abs(frame.astype(np.int16) - source).mean() < 2


def test_real_driving_moves_the_face(source: np.ndarray, demo_data: Path) -> None:
    driving = read_frames(demo_data / "256" / "man_001")
    consumed = []

    def stream():
        for f in driving:
            consumed.append(1)
            yield f

    it = LandmarkWarpMethod().reenact(source, stream())
    first = next(it)
    assert len(consumed) == 1  # streaming: one driving frame per output frame
    out = np.stack([first, *it])
    assert out.shape == (len(driving), 256, 256, 3) and out.dtype == np.uint8
    diff_src = np.abs(out.astype(np.int16) - source).mean(axis=(1, 2, 3))
    assert diff_src[0] < 2  # the first driving frame is the motion reference
    assert diff_src[1:].max() > 2  # later frames move away from the static copy
    # frames differ from each other (not a static copy)
    assert np.abs(out[1:].astype(np.int16) - out[:-1]).mean() > 0.5


def test_speed(source: np.ndarray, demo_data: Path) -> None:
    driving = read_frames(demo_data / "256" / "woman_000")
    method = LandmarkWarpMethod()
    t = time.perf_counter()
    n = sum(1 for _ in method.reenact(source, iter(driving)))
    ms = (time.perf_counter() - t) / n * 1000
    assert ms < 200, f"{ms:.0f} ms/frame"  # ~12 ms measured on 2 cores; generous bound


def test_source_without_face() -> None:
    flat = np.full((256, 256, 3), 120, np.uint8)
    with pytest.raises(InputError, match="source frame has no detectable face"):
        list(LandmarkWarpMethod().reenact(flat, [flat]))


def test_driving_without_face_reuses_previous(source: np.ndarray, demo_data: Path) -> None:
    drv = read_frames(demo_data / "256" / "man_001", max_frames=6)
    flat = np.full((256, 256, 3), 120, np.uint8)
    out = list(LandmarkWarpMethod().reenact(source, [flat, drv[0], drv[5], flat]))
    assert len(out) == 4
    np.testing.assert_array_equal(out[0], source)  # no face seen yet: unchanged
    np.testing.assert_array_equal(out[3], out[2])  # no face: previous landmarks


def test_wrong_frame_size(source: np.ndarray) -> None:
    with pytest.raises(InputError, match="256, 256, 3"):
        list(LandmarkWarpMethod().reenact(source[:128], [source]))
