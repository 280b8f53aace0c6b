"""reenactbench.video: round trips, resize, probe, listing and bad inputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from reenactbench.errors import InputError
from reenactbench.video import (
    RESIZE_MODE,
    VideoInfo,
    iter_frames,
    list_videos,
    probe,
    read_frames,
    read_image,
    resize,
    write_mp4,
    write_png_folder,
    write_video,
)


def noisy_frames(n: int, h: int = 24, w: int = 40, seed: int = 0) -> np.ndarray:
    """Full-range random frames: a PNG round trip must keep every value."""
    return np.random.default_rng(seed).integers(0, 256, (n, h, w, 3), dtype=np.uint8)


def smooth_frames(n: int, h: int = 64, w: int = 96) -> np.ndarray:
    """Slowly varying gradients (easy for H.264)."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    frames = []
    for t in range(n):
        r = 40 + 150 * xx / w + 2 * t
        g = 60 + 120 * yy / h
        b = 128 + 60 * np.sin((xx + yy) / 30 + t / 4)
        frames.append(np.stack([r, g, b], axis=-1).round().astype(np.uint8))
    return np.stack(frames)


# ---------------------------------------------------------------- round trips
def test_png_folder_round_trip_is_exact(tmp_path: Path) -> None:
    frames = noisy_frames(5)
    assert write_png_folder(frames, tmp_path / "v") == 5
    names = sorted(p.name for p in (tmp_path / "v").iterdir())
    assert names == [f"{i:06d}.png" for i in range(5)]
    back = read_frames(tmp_path / "v")
    assert back.dtype == np.uint8
    np.testing.assert_array_equal(back, frames)


def test_png_folder_start_index(tmp_path: Path) -> None:
    assert write_png_folder(noisy_frames(2), tmp_path / "v", start=7) == 2
    assert sorted(p.name for p in (tmp_path / "v").iterdir()) == ["000007.png", "000008.png"]


def test_write_video_without_suffix_is_png_folder(tmp_path: Path) -> None:
    frames = noisy_frames(3)
    assert write_video(iter(frames), tmp_path / "out") == 3
    np.testing.assert_array_equal(read_frames(tmp_path / "out"), frames)


def test_mp4_round_trip_is_close(tmp_path: Path) -> None:
    frames = smooth_frames(10)
    assert write_video(list(frames), tmp_path / "s.mp4", fps=30.0) == 10
    back = read_frames(tmp_path / "s.mp4")
    assert back.shape == frames.shape
    assert back.dtype == np.uint8
    err = np.abs(back.astype(np.int16) - frames.astype(np.int16)).mean()
    assert err < 3.0
    # lossy, but it is the same video: far from a different one
    assert np.abs(back.astype(np.int16) - frames[::-1].astype(np.int16)).mean() > 3 * err
    info = probe(tmp_path / "s.mp4")
    assert (info.n_frames, info.height, info.width, info.fps) == (10, 64, 96, 30.0)


def test_mp4_odd_size_is_padded_by_one_pixel(tmp_path: Path) -> None:
    frames = smooth_frames(4, h=33, w=47)
    assert write_mp4(frames, tmp_path / "odd.mp4") == 4
    back = read_frames(tmp_path / "odd.mp4")
    assert back.shape == (4, 34, 48, 3)
    err = np.abs(back[:, :33, :47].astype(np.int16) - frames.astype(np.int16)).mean()
    assert err < 3.0


def test_write_rejects_non_rgb_uint8(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="uint8"):
        write_png_folder([np.zeros((4, 4, 3), np.float32)], tmp_path / "f")
    with pytest.raises(ValueError, match="uint8"):
        write_png_folder([np.zeros((4, 4), np.uint8)], tmp_path / "g")


# ---------------------------------------------------------------- iter_frames
@pytest.fixture
def counted(tmp_path: Path) -> Path:
    """Frame folder whose frame i is filled with the value 10 * i."""
    frames = np.stack([np.full((20, 30, 3), 10 * i, np.uint8) for i in range(8)])
    write_png_folder(frames, tmp_path / "counted")
    return tmp_path / "counted"


def frame_ids(frames) -> list[int]:
    return [int(f[0, 0, 0]) // 10 for f in frames]


def test_iter_frames_max_frames_and_start(counted: Path) -> None:
    assert frame_ids(iter_frames(counted)) == list(range(8))
    assert frame_ids(iter_frames(counted, max_frames=3)) == [0, 1, 2]
    assert frame_ids(iter_frames(counted, start=5)) == [5, 6, 7]
    assert frame_ids(iter_frames(counted, max_frames=2, start=3)) == [3, 4]
    assert frame_ids(iter_frames(counted, max_frames=100, start=6)) == [6, 7]
    assert read_frames(counted, max_frames=4).shape == (4, 20, 30, 3)


def test_iter_frames_start_past_end_raises(counted: Path) -> None:
    with pytest.raises(InputError, match="after frame 8") as e:
        list(iter_frames(counted, start=8))
    assert str(counted) in str(e.value)


def test_iter_frames_size(counted: Path) -> None:
    square = read_frames(counted, size=16)
    assert square.shape == (8, 16, 16, 3)
    assert frame_ids(square) == list(range(8))  # flat frames stay flat
    assert read_frames(counted, size=(10, 12), max_frames=2).shape == (2, 10, 12, 3)


def test_iter_frames_mp4_start(tmp_path: Path) -> None:
    frames = smooth_frames(8, h=32, w=32)
    write_mp4(frames, tmp_path / "v.mp4")
    part = read_frames(tmp_path / "v.mp4", start=5, max_frames=2, size=16)
    assert part.shape == (2, 16, 16, 3)
    want = np.stack([resize(f, 16) for f in frames[5:7]])
    assert np.abs(part.astype(np.int16) - want.astype(np.int16)).mean() < 3.0


# ---------------------------------------------------------------- resize
def test_resize_is_antialiased() -> None:
    yy, xx = np.mgrid[0:64, 0:64]
    board = np.repeat((((yy + xx) % 2) * 255).astype(np.uint8)[..., None], 3, axis=-1)
    small = resize(board, 16)
    assert small.shape == (16, 16, 3)
    assert small.dtype == np.uint8
    # antialiased: every pixel is mid-grey; an aliased (nearest/point) resize gives 0 or 255
    assert small.min() >= 120
    assert small.max() <= 136
    assert abs(small.astype(np.float64).mean() - 127.5) < 1.0
    assert RESIZE_MODE == "pil-bicubic-antialias"


def test_resize_identity_and_shapes() -> None:
    frame = noisy_frames(1, h=32, w=48)[0]
    assert resize(frame, (32, 48)) is frame
    square = noisy_frames(1, h=32, w=32)[0]
    assert resize(square, 32) is square
    assert resize(frame, (16, 24)).shape == (16, 24, 3)
    assert resize(frame, 64).shape == (64, 64, 3)
    flat = np.full((40, 40, 3), (12, 200, 77), np.uint8)
    np.testing.assert_array_equal(resize(flat, 17), np.full((17, 17, 3), (12, 200, 77), np.uint8))


# ---------------------------------------------------------------- probe / listing
def test_probe_folder(tmp_path: Path) -> None:
    write_png_folder(noisy_frames(6, h=24, w=40), tmp_path / "v")
    info = probe(tmp_path / "v")
    assert info == VideoInfo(tmp_path / "v", 6, 24, 40, 25.0)


def test_probe_file_default_fps(tmp_path: Path) -> None:
    write_mp4(smooth_frames(7, h=32, w=48), tmp_path / "v.mp4")
    info = probe(tmp_path / "v.mp4")
    assert (info.n_frames, info.height, info.width, info.fps) == (7, 32, 48, 25.0)


def test_list_videos_ignores_other_and_hidden_files(tmp_path: Path) -> None:
    write_mp4(smooth_frames(2, 16, 16), tmp_path / "b.mp4")
    write_png_folder(noisy_frames(2, 8, 8), tmp_path / "a")
    write_png_folder(noisy_frames(2, 8, 8), tmp_path / ".hidden_frames")
    (tmp_path / ".hidden.mp4").write_bytes((tmp_path / "b.mp4").read_bytes())
    (tmp_path / "notes.txt").write_text("not a video")
    (tmp_path / "c.npy").write_bytes(b"\x00" * 10)
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "readme.md").write_text("x")
    assert list_videos(tmp_path) == [tmp_path / "a", tmp_path / "b.mp4"]
    (tmp_path / "empty_dir").mkdir()  # a video whose frames were never written
    with pytest.raises(InputError, match="empty_dir: no frames"):
        list_videos(tmp_path)


def test_list_videos_bad_folders(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(InputError, match="no videos found") as e:
        list_videos(tmp_path)
    assert str(tmp_path) in str(e.value)
    with pytest.raises(InputError, match="not a folder") as e:
        list_videos(tmp_path / "missing")
    assert str(tmp_path / "missing") in str(e.value)


# ---------------------------------------------------------------- bad inputs
def _raises_naming(path: Path, fn, match: str | None = None) -> InputError:
    with pytest.raises(InputError, match=match) as e:
        fn()
    assert str(path) in str(e.value)
    assert "\n" not in str(e.value)
    return e.value


def test_corrupt_video(tmp_path: Path) -> None:
    bad = tmp_path / "corrupt.mp4"
    bad.write_bytes(np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    _raises_naming(bad, lambda: read_frames(bad), "cannot decode")
    _raises_naming(bad, lambda: probe(bad), "cannot decode")


def test_truncated_video(tmp_path: Path) -> None:
    good = tmp_path / "good.mp4"
    write_mp4(smooth_frames(6, 32, 32), good)
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(good.read_bytes()[:200])
    _raises_naming(cut, lambda: read_frames(cut))


def test_empty_file(tmp_path: Path) -> None:
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    _raises_naming(empty, lambda: read_frames(empty))
    _raises_naming(empty, lambda: probe(empty))


def test_empty_frame_folder(tmp_path: Path) -> None:
    folder = tmp_path / "frames"
    folder.mkdir()
    (folder / "info.txt").write_text("no frames here")
    _raises_naming(folder, lambda: read_frames(folder), "no frames")
    _raises_naming(folder, lambda: probe(folder), "no PNG/JPG")


def test_folder_with_two_frame_sizes(tmp_path: Path) -> None:
    folder = tmp_path / "mixed"
    write_png_folder(noisy_frames(2, 16, 16), folder)
    write_png_folder(noisy_frames(1, 16, 20), folder, start=2)
    err = _raises_naming(folder / "000002.png", lambda: read_frames(folder), "differs")
    assert "20x16" in str(err) and "16x16" in str(err)


@pytest.mark.parametrize("mode", ["L", "RGBA", "I;16", "P"])
def test_read_image_rejects_non_rgb(tmp_path: Path, mode: str) -> None:
    path = tmp_path / f"img_{mode.replace(';', '')}.png"
    Image.new(mode, (8, 8)).save(path)
    _raises_naming(path, lambda: read_image(path), f"mode is {mode}")


def test_non_rgb_frame_in_folder(tmp_path: Path) -> None:
    folder = tmp_path / "gray"
    write_png_folder(noisy_frames(1, 8, 8), folder)
    Image.new("L", (8, 8)).save(folder / "000001.png")
    _raises_naming(folder / "000001.png", lambda: read_frames(folder), "mode is L")


def test_read_image_round_trip_and_garbage(tmp_path: Path) -> None:
    frame = noisy_frames(1, 9, 13)[0]
    Image.fromarray(frame).save(tmp_path / "ok.png")
    np.testing.assert_array_equal(read_image(tmp_path / "ok.png"), frame)
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"definitely not a png")
    _raises_naming(junk, lambda: read_image(junk), "cannot read image")


def test_missing_paths(tmp_path: Path) -> None:
    missing = tmp_path / "nothing_here.mp4"
    _raises_naming(missing, lambda: read_frames(missing), "no such")
    _raises_naming(missing, lambda: probe(missing), "no such")
    _raises_naming(tmp_path / "gone", lambda: probe(tmp_path / "gone"), "no such")
    _raises_naming(tmp_path / "no.png", lambda: read_image(tmp_path / "no.png"), "no such")


@pytest.mark.parametrize("name", ["out.avi", "out.png", "frames.d"])
def test_write_video_bad_suffix(tmp_path: Path, name: str) -> None:
    _raises_naming(tmp_path / name, lambda: write_video(noisy_frames(1), tmp_path / name))
    assert not (tmp_path / name).exists()
