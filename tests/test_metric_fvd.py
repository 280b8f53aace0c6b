"""FVD: the I3D input convention, the clip protocols (aligned-all, stylegan-v) and their
covariance conventions, FVD-mouth clips, streaming invariances, the loader, the registry.

The real I3D (``i3d_torchscript.pt``) cannot be downloaded here, so the tests use a
seeded TorchScript stand-in with the same call signature and output layout whose
features depend on temporal differences (a 3-D convolution over frame differences).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import linalg
from torch import Tensor

from reenactbench.errors import InputError
from reenactbench.faces.mouth import MouthCropper, crop_square
from reenactbench.metrics.base import JobPart, MetricContext, job_value, pooled_value
from reenactbench.metrics.frechet import (
    COVARIANCE_DDOF,
    GaussianStats,
    frechet_distance,
    frechet_from_rows,
)
from reenactbench.metrics.fvd import (
    CLIP_PROTOCOLS,
    I3D_KWARGS,
    FVDEvaluator,
    build_fvd,
    capped_jobs,
    clip_protocol,
    clip_seed,
    i3d_features,
    load_i3d,
)
from reenactbench.metrics.registry import get_metric
from tests.synthetic import blob_video
from tests.test_mouth import frames_for, lookup, track


class StandinI3D(torch.nn.Module):
    """Test stand-in for StyleGAN-V's I3D: ``forward(x, rescale, resize, return_features)``
    on ``(B, 3, T, H, W)`` uint8 returns ``(B, dim)`` float32 features of the temporal
    differences (ReLU of a seeded 3-D conv, averaged over time and space)."""

    def __init__(self, dim: int = 8, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.conv = torch.nn.Conv3d(3, dim, kernel_size=(2, 4, 4), stride=(1, 4, 4))
        with torch.no_grad():
            self.conv.weight.copy_(torch.randn(self.conv.weight.shape, generator=g) * 0.2)
            self.conv.bias.copy_(torch.randn(dim, generator=g) * 0.05)

    def forward(
        self, x: Tensor, rescale: bool = False, resize: bool = False, return_features: bool = False
    ) -> Tensor:
        h = x.float()
        if rescale:
            h = h / 127.5 - 1.0
        if resize:
            h = F.interpolate(h, size=[h.shape[2], 32, 32], mode="trilinear", align_corners=False)
        d = h[:, :, 1:] - h[:, :, :-1]
        f = torch.relu(self.conv(d)).mean(dim=[2, 3, 4])
        if return_features:
            return f
        return torch.softmax(f, dim=1)


def script_save(module: torch.nn.Module, path: Path) -> Path:
    """``torch.jit.script(module).save(path)`` (torch warns that TorchScript is deprecated)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.script(module.eval()).save(str(path))
    return path


def write_standin_i3d(path: Path, dim: int = 8, seed: int = 0) -> Path:
    """Script :class:`StandinI3D` and save it as TorchScript at ``path``."""
    return script_save(StandinI3D(dim, seed), path)


@pytest.fixture(scope="module")
def i3d_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_standin_i3d(tmp_path_factory.mktemp("i3d") / "i3d_torchscript.pt")


@pytest.fixture(scope="module")
def detector(i3d_file: Path):
    return load_i3d(i3d_file)


def run_job(
    ev: FVDEvaluator, fake: np.ndarray, real: np.ndarray, batch: int = 16, key: str = "job"
) -> JobPart:
    ev.set_job("method", key, key)
    ev.begin(real[0])
    for i in range(0, len(fake), batch):
        ev.add(fake[i : i + batch], real[i : i + batch])
    return ev.end()


def videos(seeds: range, n: int = 48, size: int = 32) -> list[np.ndarray]:
    return [blob_video(n, size, seed=s) for s in seeds]


def reference_fvd(fake: np.ndarray, real: np.ndarray, ddof: int = 1) -> float:
    """The Fréchet distance of StyleGAN-V's ``compute_fvd`` on feature rows (scipy sqrtm,
    real part) with an ``np.cov`` covariance of the given ``ddof``. StyleGAN-V's own
    ``FeatureStats.get_mean_cov`` is ddof=0 (raw_cov / n - outer(mean, mean));
    pytorch-fid's np.cov is ddof=1."""
    fake, real = fake.astype(np.float64), real.astype(np.float64)
    mu_g, mu_r = fake.mean(0), real.mean(0)
    s_g, s_r = np.cov(fake, rowvar=False, ddof=ddof), np.cov(real, rowvar=False, ddof=ddof)
    s = linalg.sqrtm(s_g @ s_r)
    return float(np.real(np.square(mu_g - mu_r).sum() + np.trace(s_g + s_r - s * 2)))


ALIGNED = {"clips": "aligned-all", "covariance": "ddof=1"}
STYLEGAN_V = {"clips": "stylegan-v", "covariance": "ddof=0"}


def test_detector_input_convention() -> None:
    seen = {}

    def fake_detector(x: Tensor, **kwargs: bool) -> Tensor:
        seen["x"], seen["kwargs"] = x.clone(), kwargs
        return torch.zeros(len(x), 400)

    clips = blob_video(32, 24, seed=1).reshape(2, 16, 24, 24, 3)
    out = i3d_features(fake_detector, clips)
    assert out.shape == (2, 400) and out.dtype == np.float32
    x = seen["x"]
    assert seen["kwargs"] == {"rescale": True, "resize": True, "return_features": True}
    assert x.dtype == torch.uint8 and tuple(x.shape) == (2, 3, 16, 24, 24)  # (C, 3, T, H, W)
    assert np.array_equal(x[1, :, 5].permute(1, 2, 0).numpy(), clips[1, 5])  # RGB 0..255
    assert I3D_KWARGS == seen["kwargs"]


def test_clip_count_and_partial_clip_dropped(detector) -> None:
    real = blob_video(40, 32, seed=0)
    part = run_job(FVDEvaluator(detector, clip=16), real, real, batch=7)
    assert part.fake.shape == part.real.shape == (2, 8)  # floor(40 / 16) clips
    assert part.fake.dtype == np.float32
    assert part.info == {**ALIGNED, "n_clips": 2, "dropped_partial_frames": 8}
    direct = i3d_features(detector, real[:32].reshape(2, 16, 32, 32, 3))
    np.testing.assert_allclose(part.fake, direct, rtol=1e-5, atol=1e-7)


def test_short_job_has_no_clips_but_the_feature_width(detector) -> None:
    real = blob_video(10, 32, seed=0)
    part = run_job(FVDEvaluator(detector, clip=16), real, real)
    assert part.fake.shape == part.real.shape == (0, 8)
    assert part.info == {**ALIGNED, "n_clips": 0, "dropped_partial_frames": 10}


@pytest.mark.parametrize(("batch", "clips_per_batch"), [(1, 1), (5, 2), (48, 3), (100, 4)])
def test_batch_size_invariance(detector, batch: int, clips_per_batch: int) -> None:
    fake, real = blob_video(56, 32, seed=3), blob_video(56, 32, seed=4)
    ref = run_job(FVDEvaluator(detector, clip=16), fake, real, batch=16)
    ev = FVDEvaluator(detector, clip=16, clips_per_batch=clips_per_batch)
    part = run_job(ev, fake, real, batch=batch)
    np.testing.assert_allclose(part.fake, ref.fake, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(part.real, ref.real, rtol=1e-5, atol=1e-6)
    assert part.info == ref.info == {**ALIGNED, "n_clips": 3, "dropped_partial_frames": 8}


def test_identical_sets_give_zero(detector) -> None:
    ev = FVDEvaluator(detector, clip=16)
    parts = [run_job(ev, v, v) for v in videos(range(6))]
    value, info = pooled_value("distribution", parts)
    fake = np.concatenate([p.fake for p in parts]).astype(np.float64)
    scale = float(np.trace(np.cov(fake, rowvar=False)))
    assert info == {"n_fake": 18, "n_real": 18}
    assert scale > 1e-3
    assert abs(value) < 1e-6 * scale


def test_shuffled_frames_raise_fvd_and_parity_with_stylegan_v_formula(detector) -> None:
    ev = FVDEvaluator(detector, clip=16, clips_per_batch=2)
    reals, fakes = videos(range(6)), videos(range(10, 16))
    rng = np.random.default_rng(0)
    ordered = [run_job(ev, f, r) for f, r in zip(fakes, reals, strict=True)]
    shuffled = [
        run_job(ev, f[rng.permutation(len(f))], r) for f, r in zip(fakes, reals, strict=True)
    ]
    fvd_ordered, _ = pooled_value("distribution", ordered)
    fvd_shuffled, _ = pooled_value("distribution", shuffled)
    assert fvd_shuffled > 3 * fvd_ordered > 0
    # pinned for the seeded stand-in (torch 2.14.1, CPU): ordered 4.488e-4, shuffled 9.928e-2
    assert fvd_ordered == pytest.approx(4.4879e-4, rel=1e-3)
    assert fvd_shuffled == pytest.approx(9.9283e-2, rel=1e-3)
    rows = [np.concatenate([getattr(p, k) for p in ordered]) for k in ("fake", "real")]
    assert fvd_ordered == pytest.approx(reference_fvd(*rows, ddof=1), rel=1e-6)
    # one job's value is the Fréchet distance of its own clips (3 clips here)
    assert np.isfinite(job_value("distribution", ordered[0]))


def test_loader_rejects_corrupt_file(tmp_path: Path) -> None:
    bad = tmp_path / "i3d_torchscript.pt"
    bad.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(InputError) as e:
        load_i3d(bad)
    msg = str(e.value)
    assert str(bad) in msg and "\n" not in msg and "not a TorchScript file" in msg
    assert "reenactbench weights fetch i3d" in msg


def test_loader_rejects_state_dict_and_wrong_signature(tmp_path: Path) -> None:
    sd = tmp_path / "sd.pt"
    torch.save(StandinI3D().state_dict(), sd)
    with pytest.raises(InputError, match="not a TorchScript file"):
        load_i3d(sd)

    class Other(torch.nn.Module):
        def forward(self, x: Tensor) -> Tensor:
            return x

    other = script_save(Other(), tmp_path / "other.pt")
    with pytest.raises(InputError, match=r"other\.pt: its forward\(\) takes \['x'\]"):
        load_i3d(other)


def test_registry_builds_once_and_reports_missing_weights(
    i3d_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REENACTBENCH_HOME", str(tmp_path))
    fvd, mouth = get_metric("fvd"), get_metric("fvd_mouth")
    assert fvd.available and mouth.available and fvd.kind == mouth.kind == "distribution"
    assert not fvd.higher_is_better
    assert "weights missing: i3d" in fvd.why_not(MetricContext())
    ctx = MetricContext(weights={"i3d": i3d_file}, batch_size=64)
    assert fvd.why_not(ctx) is None
    ev = fvd.evaluator(ctx)
    assert ev.clips_per_batch == 4 and ev.clip == 16 and ev.cropper is None
    assert fvd.evaluator(ctx).detector is ev.detector  # loaded once per run
    assert ev.protocol.name == "aligned-all"  # the default
    ctx.options = {"fvd_clips": "stylegan-v"}
    assert fvd.evaluator(ctx).protocol.name == mouth.evaluator(ctx).protocol.name == "stylegan-v"


@pytest.mark.faces
def test_fvd_mouth_on_real_frames(feat_video, i3d_file: Path) -> None:
    from reenactbench.video import read_frames, resize

    frames = read_frames(feat_video("single_face.mp4"), max_frames=36)[:, :, 140:500]
    real = np.stack([resize(f, 256) for f in frames])
    ctx = MetricContext(weights={"i3d": i3d_file}, batch_size=16)
    ev = get_metric("fvd_mouth").evaluator(ctx)
    assert ev.cropper.size == 128
    part = run_job(ev, real, real, batch=8)
    assert part.fake.shape == (2, 8) and np.array_equal(part.fake, part.real)
    assert part.info == {
        **ALIGNED,
        "n_clips": 2,
        "dropped_partial_frames": 4,
        "no_face_frames_fake": 0,
        "no_face_frames_real": 0,
        "no_box_frames": 0,
        "excluded_no_face_clips": 0,
    }
    blank = np.zeros_like(real[:20])
    part = run_job(ev, blank, blank)
    assert part.fake.shape == (0, 8)
    assert part.info["excluded_no_face_jobs"] == 1 and part.info["no_face_frames_real"] == 20
    part = run_job(ev, blank, real[:20])  # a generated video without a face
    assert part.fake.shape == (0, 8) and part.info["excluded_no_face_jobs"] == 1
    assert part.info["excluded_no_face_clips"] == 1 and part.info["no_face_frames_fake"] == 20


# --- clip protocols: covariance conventions -------------------------------------------


def _rows(n: int, dim: int, seed: int, shift: float = 0.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(n, dim)) @ rng.normal(size=(dim, dim)) * 0.3 + shift).astype(
        np.float32
    )


@pytest.mark.parametrize(("name", "ddof"), [("aligned-all", 1), ("stylegan-v", 0)])
def test_protocol_covariance_convention_matches_numpy(name: str, ddof: int) -> None:
    protocol = clip_protocol(name)
    assert protocol.ddof == ddof == COVARIANCE_DDOF[protocol.info["covariance"]]
    # pooled rows of several jobs (6 clips x 5 jobs, 12-d), as the table value pools them
    fakes = [_rows(6, 12, seed=i, shift=0.2) for i in range(5)]
    reals = [_rows(6, 12, seed=10 + i) for i in range(5)]
    a, b = GaussianStats.empty(12), GaussianStats.empty(12)
    for f, r in zip(fakes, reals, strict=True):
        a.add(f)
        b.add(r)
    fake, real = np.concatenate(fakes), np.concatenate(reals)
    want = reference_fvd(fake, real, ddof=ddof)
    other = reference_fvd(fake, real, ddof=1 - ddof)
    assert abs(want - other) > 1e-3 * abs(want)  # the convention matters at n = 30
    assert frechet_distance(a, b, ddof=protocol.ddof) == pytest.approx(want, rel=1e-7)
    # the fast per-job route (fewer rows than dimensions) agrees
    f6, r6 = fakes[0].astype(np.float64), reals[0].astype(np.float64)
    small = reference_fvd(f6, r6, ddof=ddof)
    assert frechet_from_rows(f6, r6, ddof=protocol.ddof) == pytest.approx(small, rel=1e-6)
    # StyleGAN-V's FeatureStats.get_mean_cov, written out: raw_cov / n - outer(mean, mean)
    if ddof == 0:
        x = fake.astype(np.float64)
        mean = x.sum(0) / len(x)
        cov = (x.T @ x) / len(x) - np.outer(mean, mean)
        mu, sigma = a.mean_cov(ddof=0)
        np.testing.assert_allclose(mu, mean, rtol=1e-12)
        np.testing.assert_allclose(sigma, cov, rtol=1e-9, atol=1e-12)


def test_unknown_protocol_is_a_one_line_input_error(i3d_file: Path) -> None:
    with pytest.raises(InputError) as e:
        clip_protocol("random")
    msg = str(e.value)
    assert "\n" not in msg and "'random'" in msg and "aligned-all" in msg and "stylegan-v" in msg
    ctx = MetricContext(weights={"i3d": i3d_file}, options={"fvd_clips": "stylegan"})
    with pytest.raises(InputError, match="aligned-all, stylegan-v"):
        build_fvd(ctx)
    assert set(CLIP_PROTOCOLS) == {"aligned-all", "stylegan-v"}
    assert clip_protocol(None).name == "aligned-all"


# --- stylegan-v: one seeded clip per video ----------------------------------------------


def _stylegan_v(detector, **kwargs) -> FVDEvaluator:
    return FVDEvaluator(detector, clip=16, protocol="stylegan-v", **kwargs)


def test_stylegan_v_one_clip_at_the_seeded_offset(detector) -> None:
    fake, real = blob_video(53, 32, seed=3), blob_video(53, 32, seed=4)
    ev = _stylegan_v(detector)
    part = run_job(ev, fake, real, batch=7, key="vid_a__vid_b_f000000")
    assert part.fake.shape == part.real.shape == (1, 8)
    assert part.info == {**STYLEGAN_V, "n_clips": 1}
    # the offset: argmin of the seeded draws over the 53 - 16 + 1 positions
    offset = int(np.argmin(_draws("vid_a__vid_b_f000000", 53 - 16 + 1)))
    assert ev.offset == offset
    np.testing.assert_allclose(part.fake, i3d_features(detector, fake[None, offset : offset + 16]))
    np.testing.assert_allclose(part.real, i3d_features(detector, real[None, offset : offset + 16]))
    # one row: a per-job value is undefined (pooled values only)
    assert np.isnan(job_value("distribution", part))


def test_stylegan_v_is_deterministic_and_independent_of_job_order(detector) -> None:
    vids = {f"v{i}": (blob_video(40 + 3 * i, 32, seed=i), blob_video(40 + 3 * i, 32, seed=20 + i))
            for i in range(6)}  # fmt: skip

    def run_all(order: list[str], batch: int) -> tuple[dict[str, np.ndarray], dict[str, int]]:
        ev = _stylegan_v(detector)
        rows, offsets = {}, {}
        for key in order:
            rows[key] = run_job(ev, *vids[key], batch=batch, key=key).fake
            offsets[key] = ev.offset
        return rows, offsets

    keys = list(vids)
    rows1, off1 = run_all(keys, batch=16)
    rows2, off2 = run_all(keys[::-1], batch=5)  # another order and batch size
    rows3, _ = run_all(keys, batch=16)  # a second run
    assert off1 == off2
    assert len(set(off1.values())) > 2  # offsets differ between jobs
    for key in keys:
        assert rows1[key].shape == (1, 8)
        np.testing.assert_array_equal(rows1[key], rows3[key])
        np.testing.assert_allclose(rows1[key], rows2[key], rtol=1e-6, atol=1e-7)
    # the offset follows the job key only, not the method
    ev = _stylegan_v(detector)
    ev.set_job("other-method", "v2", "v2")
    ev.begin(vids["v2"][1][0])
    ev.add(*vids["v2"])
    ev.end()
    assert ev.offset == off1["v2"]


def test_stylegan_v_needs_the_job_key_and_skips_short_videos(detector) -> None:
    ev = _stylegan_v(detector)
    with pytest.raises(ValueError, match="set_job"):
        ev.begin(np.zeros((32, 32, 3), np.uint8))
    short = blob_video(15, 32, seed=0)
    part = run_job(ev, short, short)
    assert part.fake.shape == (0, 8)
    assert part.info == {**STYLEGAN_V, "n_clips": 0, "excluded_short_jobs": 1}


def test_stylegan_v_cap_keeps_2048_clips_deterministically() -> None:
    keys = [f"drv{i:04d}__src{i:04d}_f000000" for i in range(2300)]
    infos = [{**STYLEGAN_V, "n_clips": 0 if i % 10 == 0 else 1} for i in range(2300)]
    kept = capped_jobs(keys, infos)
    assert len(kept) == 2048 and kept == sorted(kept)
    assert all(infos[i]["n_clips"] == 1 for i in kept)  # jobs without a clip take no slot
    # independent of the order of the jobs
    perm = np.random.default_rng(0).permutation(2300)
    kept_perm = capped_jobs([keys[i] for i in perm], [infos[i] for i in perm])
    assert {keys[perm[i]] for i in kept_perm} == {keys[i] for i in kept}
    # the rule: the 2048 jobs with clips of smallest sha256("fvd-cap:" + key)
    import hashlib

    def rank(key: str) -> bytes:
        return hashlib.sha256(f"fvd-cap:{key}".encode()).digest()

    with_clip = sorted((i for i in range(2300) if infos[i]["n_clips"]), key=lambda i: rank(keys[i]))
    assert set(kept) == set(with_clip[:2048])
    # under the cap, or with aligned-all, every job is kept
    assert capped_jobs(keys[:100], [{**STYLEGAN_V, "n_clips": 1}] * 100) == list(range(100))
    assert capped_jobs(keys, [{**ALIGNED, "n_clips": 31}] * 2300) == list(range(2300))
    assert capped_jobs(keys[:3], [{}, {}, {}]) == [0, 1, 2]  # other metrics (FID)


# --- FVD-mouth: per-video boxes, clips aligned with the full-frame clips ---------------


def _mouth_ev(detector, real_t, fake_t, **kwargs) -> FVDEvaluator:
    cropper = MouthCropper(size=32, half_window=4, max_leading=10, detect=lookup(real_t, fake_t))
    return FVDEvaluator(detector, clip=16, cropper=cropper, **kwargs)


def test_fvd_mouth_crops_each_video_with_its_own_box(detector) -> None:
    real_t, fake_t = track(32, set()), track(32, set(), shift=20.0)
    real, fake = frames_for(32), frames_for(32, seed=9, side=1)
    ev = _mouth_ev(detector, real_t, fake_t)
    part = run_job(ev, fake, real, batch=8)
    c = ev.cropper
    assert part.fake.shape == (2, 8) and c.fake_boxes != c.real_boxes
    own = np.stack([crop_square(fake[t], c.fake_boxes[t], 32) for t in range(32)])
    truths = np.stack([crop_square(fake[t], c.real_boxes[t], 32) for t in range(32)])
    np.testing.assert_allclose(part.fake, i3d_features(detector, own.reshape(2, 16, 32, 32, 3)))
    assert not np.allclose(part.fake, i3d_features(detector, truths.reshape(2, 16, 32, 32, 3)))
    reals = np.stack([crop_square(real[t], c.real_boxes[t], 32) for t in range(32)])
    np.testing.assert_allclose(part.real, i3d_features(detector, reals.reshape(2, 16, 32, 32, 3)))


@pytest.mark.parametrize("batch", [3, 16])
def test_fvd_mouth_leading_no_face_frames_do_not_shift_clips(detector, batch: int) -> None:
    """Ground truth without a face in frames 0-4 (filled) / 0-20 (first box at 17: frames
    0-6 have none): mouth clip k always covers frames 16k .. 16k + 15."""
    real, fake = frames_for(56), frames_for(56, seed=9, side=1)
    for gap, excluded in ((5, 0), (21, 1)):
        real_t, fake_t = track(56, set(range(gap))), track(56, set(), seed=4)
        ev = _mouth_ev(detector, real_t, fake_t)
        part = run_job(ev, fake, real, batch=batch)
        c = ev.cropper
        kept = [k for k in range(3) if all(c.real_boxes[16 * k : 16 * k + 16])]
        assert len(kept) == 3 - excluded and part.fake.shape == (len(kept), 8)
        assert part.info["excluded_no_face_clips"] == excluded
        assert part.info["dropped_partial_frames"] == 56 - 48
        assert part.info["no_box_frames"] == (0 if gap == 5 else 7)
        for row, k in enumerate(kept):
            t = range(16 * k, 16 * k + 16)
            crops = np.stack([crop_square(real[i], c.real_boxes[i], 32) for i in t])
            np.testing.assert_allclose(part.real[row], i3d_features(detector, crops[None])[0])
        # stylegan-v: the full-frame offset when that clip is valid, else the valid
        # position with the smallest draw (a key whose full-frame clip starts in 0-6)
        key = next(f"k{i}" for i in range(1000) if np.argmin(_draws(f"k{i}", 41)) < 7)
        full = _stylegan_v(detector)
        run_job(full, fake, real, batch=batch, key=key)
        ev = _mouth_ev(detector, real_t, fake_t, protocol="stylegan-v")
        part = run_job(ev, fake, real, batch=batch, key=key)
        assert part.fake.shape == (1, 8) and full.offset == np.argmin(_draws(key, 41))
        if gap == 5:
            assert ev.offset == full.offset
        else:
            assert ev.offset == 7 + np.argmin(_draws(key, 41)[7:])
        assert all(ev.cropper.real_boxes[ev.offset : ev.offset + 16])


def _draws(key: str, positions: int) -> np.ndarray:
    """The stylegan-v draws of a job's clip positions 0 .. positions - 1."""
    return np.random.default_rng(clip_seed(key)).random(positions)
