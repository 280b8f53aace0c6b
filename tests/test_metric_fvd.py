"""FVD: the I3D input convention, clips, streaming invariances, the loader, the registry.

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
from reenactbench.metrics.base import MetricContext, job_value, pooled_value
from reenactbench.metrics.fvd import I3D_KWARGS, FVDEvaluator, i3d_features, load_i3d
from reenactbench.metrics.registry import get_metric
from tests.synthetic import blob_video


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


def run_job(ev: FVDEvaluator, fake: np.ndarray, real: np.ndarray, batch: int = 16):
    ev.begin(real[0])
    for i in range(0, len(fake), batch):
        ev.add(fake[i : i + batch], real[i : i + batch])
    return ev.end()


def videos(seeds: range, n: int = 48, size: int = 32) -> list[np.ndarray]:
    return [blob_video(n, size, seed=s) for s in seeds]


def reference_fvd(fake: np.ndarray, real: np.ndarray) -> float:
    """StyleGAN-V's formula on feature rows: np.cov (ddof=1), scipy sqrtm, real part."""
    mu_g, mu_r = fake.mean(0), real.mean(0)
    s_g, s_r = np.cov(fake.astype(np.float64), rowvar=False), np.cov(real, rowvar=False)
    s = linalg.sqrtm(s_g @ s_r)
    return float(np.real(np.square(mu_g - mu_r).sum() + np.trace(s_g + s_r - s * 2)))


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
    assert part.info == {"clips": 2, "dropped_partial_frames": 8}
    direct = i3d_features(detector, real[:32].reshape(2, 16, 32, 32, 3))
    np.testing.assert_allclose(part.fake, direct, rtol=1e-5, atol=1e-7)


def test_short_job_has_no_clips_but_the_feature_width(detector) -> None:
    real = blob_video(10, 32, seed=0)
    part = run_job(FVDEvaluator(detector, clip=16), real, real)
    assert part.fake.shape == part.real.shape == (0, 8)
    assert part.info == {"clips": 0, "dropped_partial_frames": 10}


@pytest.mark.parametrize(("batch", "clips_per_batch"), [(1, 1), (5, 2), (48, 3), (100, 4)])
def test_batch_size_invariance(detector, batch: int, clips_per_batch: int) -> None:
    fake, real = blob_video(56, 32, seed=3), blob_video(56, 32, seed=4)
    ref = run_job(FVDEvaluator(detector, clip=16), fake, real, batch=16)
    ev = FVDEvaluator(detector, clip=16, clips_per_batch=clips_per_batch)
    part = run_job(ev, fake, real, batch=batch)
    np.testing.assert_allclose(part.fake, ref.fake, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(part.real, ref.real, rtol=1e-5, atol=1e-6)
    assert part.info == ref.info == {"clips": 3, "dropped_partial_frames": 8}


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
    assert fvd_ordered == pytest.approx(reference_fvd(*rows), rel=1e-6)
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
        "clips": 2,
        "dropped_partial_frames": 4,
        "no_face_frames": 0,
        "dropped_no_face_frames": 0,
    }
    blank = np.zeros_like(real[:20])
    part = run_job(ev, blank, blank)
    assert part.fake.shape == (0, 8)
    assert part.info["excluded_no_face_jobs"] == 1 and part.info["no_face_frames"] == 20
