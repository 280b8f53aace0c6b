"""The ``id`` metric: both backends on seeded weights, parity with insightface's own
``ArcFaceONNX.get_feat``, same-id vs cross-id references, no-face exclusion, registry."""

from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from reenactbench.faces.align import five_points
from reenactbench.metrics.base import MetricContext, job_value, pooled_value
from reenactbench.metrics.identity import (
    ArcFaceEmbedder,
    IdentityEvaluator,
    IRSE50Embedder,
    id_distance,
)
from reenactbench.metrics.registry import get_metric
from tests.test_irse50 import reference_frames, seeded_state_dict

GREY = np.full((256, 256, 3), 128, np.uint8)  # no face


class TinyArcFace(torch.nn.Module):
    """A seeded stand-in for w600k_r50 with its signature: (B,3,112,112) -> (B,512)."""

    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.conv1 = torch.nn.Conv2d(3, 16, 3, 2, 1)
        self.act = torch.nn.PReLU(16)
        self.conv2 = torch.nn.Conv2d(16, 32, 3, 2, 1)
        self.pool = torch.nn.AdaptiveAvgPool2d(4)
        self.fc = torch.nn.Linear(32 * 16, 512)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.conv2(self.act(self.conv1(x))))
        return self.fc(x.flatten(1))


@pytest.fixture(scope="module")
def irse50_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("id") / "model_ir_se50.pth"
    torch.save(seeded_state_dict(), path)
    return path


@pytest.fixture(scope="module")
def arcface_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("id") / "w600k_r50.onnx"
    with warnings.catch_warnings():  # the TorchScript exporter is deprecated, still works
        warnings.simplefilter("ignore", DeprecationWarning)
        _export(path)
    return path


def _export(path: Path) -> None:
    torch.onnx.export(
        TinyArcFace().eval(),
        (torch.zeros(1, 3, 112, 112),),
        str(path),
        input_names=["input.1"],
        output_names=["embedding"],
        dynamic_axes={"input.1": {0: "batch"}, "embedding": {0: "batch"}},
        dynamo=False,
    )


@pytest.fixture(scope="module")
def frames() -> np.ndarray:
    return reference_frames()  # (4, 256, 256, 3) uint8, astronaut crops, one face each


@pytest.fixture
def no_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REENACTBENCH_HOME", str(tmp_path / "home"))


def test_id_distance_closed_form() -> None:
    a = np.array([[1.0, 0.0], [1.0, 0.0], [3.0, 4.0], [1.0, 1.0]])
    b = np.array([[2.0, 0.0], [0.0, 1.0], [-3.0, -4.0], [np.nan, np.nan]])
    got = id_distance(a, b)
    np.testing.assert_allclose(got[:3], [0.0, 1.0, 2.0], atol=1e-12)
    assert np.isnan(got[3])


def test_five_points_from_68() -> None:
    lm = np.zeros((68, 2), np.float32)
    lm[36:42] = [10, 20]
    lm[42:48] = [30, 22]
    lm[30] = [20, 30]
    lm[48] = [12, 40]
    lm[54] = [28, 41]
    lm[36] = [8, 20]  # the eye centre is the mean of its 6 points
    want = [[10 - 2 / 6, 20], [30, 22], [20, 30], [12, 40], [28, 41]]
    np.testing.assert_allclose(five_points(lm), want, atol=1e-6)
    with pytest.raises(ValueError, match="68"):
        five_points(np.zeros((5, 2)))


def test_registry_reasons(no_cache: None) -> None:
    spec = get_metric("id")
    assert spec.available and spec.kind == "frame" and not spec.higher_is_better
    reason = spec.why_not(MetricContext())
    assert reason is not None and reason.startswith("weights missing: ir-se50")
    reason = spec.why_not(MetricContext(options={"id_backend": "insightface"}))
    assert reason is not None and "arcface-r50" in reason and "w600k_r50.onnx" in reason
    reason = spec.why_not(MetricContext(options={"id_backend": "facenet"}))
    assert reason == "unknown id_backend 'facenet'; choose one of irse50, insightface"


def test_registry_ready_with_weights(no_cache: None, irse50_file: Path) -> None:
    assert get_metric("id").why_not(MetricContext(weights={"ir-se50": irse50_file})) is None


def _run(ev: IdentityEvaluator, source: np.ndarray, fake: np.ndarray, real: np.ndarray):
    ev.begin(source)
    for s in (slice(0, 2), slice(2, None)):  # two batches, in order
        ev.add(fake[s], real[s])
    return ev.end()


@pytest.mark.faces
def test_irse50_same_id_cross_id_and_no_face(irse50_file: Path, frames: np.ndarray) -> None:
    spec = get_metric("id")
    ctx = MetricContext(weights={"ir-se50": irse50_file}, batch_size=3)
    same = spec.evaluator(ctx)
    emb = same.embedder.embed(frames)  # (4, 512), no detection
    fake = np.stack([frames[0], frames[1], GREY, frames[3]])
    real = np.stack([frames[0], frames[2], frames[2], GREY])
    part = _run(same, frames[1], fake, real)
    assert part.info == {"backend": "irse50", "no_face": 2}
    assert part.values is not None and part.values.shape == (4,)
    assert abs(part.values[0]) < 1e-6  # identical frames
    np.testing.assert_allclose(part.values[1], 1 - emb[1] @ emb[2], atol=1e-6)
    assert np.isnan(part.values[2]) and np.isnan(part.values[3])  # grey fake / grey real
    assert job_value("frame", part) == pytest.approx(np.nanmean(part.values))
    assert pooled_value("frame", [part])[1] == {"excluded_frames": 2}
    assert 0.2 < part.values[1] < 0.6  # pinned scale of the seeded network

    cross = spec.evaluator(dataclasses.replace(ctx, kind="cross-id"))
    assert cross.embedder is same.embedder  # loaded once per run (ctx.shared)
    part = _run(cross, frames[1], fake, real)
    want = 1 - emb[[0, 1, 3]] @ emb[1]  # against the source, whatever the real frames are
    np.testing.assert_allclose(part.values[[0, 1, 3]], want, atol=1e-6)
    assert abs(part.values[1]) < 1e-6 and np.isnan(part.values[2])
    assert part.info["no_face"] == 1

    part = _run(cross, GREY, fake, real)  # a faceless source excludes the whole job
    assert np.isnan(part.values).all() and part.info["no_face"] == 4


def test_irse50_needs_256(irse50_file: Path) -> None:
    from reenactbench.errors import InputError

    with pytest.raises(InputError, match="256x256"):
        IRSE50Embedder(irse50_file).embed(np.zeros((1, 128, 128, 3), np.uint8))


@pytest.mark.faces
@pytest.mark.filterwarnings("ignore:.*estimate.*deprecated:FutureWarning")
def test_insightface_parity_with_get_feat(arcface_file: Path, frames: np.ndarray) -> None:
    from insightface.model_zoo import get_model
    from insightface.utils.face_align import norm_crop

    from reenactbench.faces import detect_landmarks

    ours = ArcFaceEmbedder(arcface_file, batch_size=3)
    crops, found = ours.crops(frames)
    assert found.all() and crops.shape == (4, 112, 112, 3)
    # insightface's own pipeline on the same 5 points: norm_crop, then get_feat on BGR
    ref_model = get_model(str(arcface_file), providers=["CPUExecutionProvider"])
    kps = [five_points(detect_landmarks(f)) for f in frames]
    ref_crops = [
        norm_crop(f[..., ::-1].copy(), landmark=k, image_size=112)
        for f, k in zip(frames, kps, strict=True)
    ]
    np.testing.assert_array_equal(crops, np.stack(ref_crops)[..., ::-1])
    ref = ref_model.get_feat(ref_crops)  # (4, 512) raw
    emb, found = ours(frames)
    assert emb.shape == (4, 512)
    np.testing.assert_allclose(emb, ref, atol=1e-5, rtol=0)
    # the channel order matters for this seeded network: a swap would be caught
    swapped = ours.embed_crops(crops[..., ::-1].copy())
    assert np.abs(swapped - ref).max() > 1e-2

    ev = get_metric("id").evaluator(
        MetricContext(weights={"arcface-r50": arcface_file}, options={"id_backend": "insightface"})
    )
    fake = np.stack([frames[0], frames[1], frames[3], GREY])
    real = np.stack([frames[0], frames[2], frames[0], frames[1]])
    part = _run(ev, frames[0], fake, real)
    sim = [ref_model.compute_sim(ref[i], ref[j]) for i, j in ((0, 0), (1, 2), (3, 0))]
    np.testing.assert_allclose(part.values[:3], 1 - np.array(sim), atol=1e-5)
    assert abs(part.values[0]) < 1e-6 and np.isnan(part.values[3])
    assert part.info == {"backend": "insightface", "no_face": 1}


def test_insightface_rejects_other_models(tmp_path: Path) -> None:
    from reenactbench.errors import InputError

    bad = tmp_path / "w600k_r50.onnx"
    bad.write_bytes(b"junk")
    with pytest.raises(InputError, match="w600k_r50.onnx"):
        ArcFaceEmbedder(bad)


def test_bad_frames(irse50_file: Path) -> None:
    from reenactbench.errors import InputError

    ev = IdentityEvaluator(IRSE50Embedder(irse50_file))
    ev.begin(GREY)
    with pytest.raises(InputError, match="uint8"):
        ev.add(np.zeros((1, 256, 256, 3), np.float32), np.zeros((1, 256, 256, 3), np.uint8))
    with pytest.raises(InputError, match="differ"):
        ev.add(np.zeros((1, 256, 256, 3), np.uint8), np.zeros((2, 256, 256, 3), np.uint8))
