"""PIRenderer: strict loading of the official checkpoint layout, the 73-d descriptor window
(clamped at clip ends) and cross-id crop ratio, and parity with upstream's FaceGenerator on
seeded weights and a real face.

Regenerate the parity fixture (see tests/fixtures/README.md):
``python -m tests.test_pirenderer --regenerate UPSTREAM_CHECKOUT DEPS`` where the checkout
holds RenYurui/PIRender at 9e59f194f1a0eb32769a6f058ae55c124cd3d298 (``generators util
config data``) and ``DEPS`` is a ``pip install --target`` folder with pyyaml and lmdb.
"""

from __future__ import annotations

import hashlib
import re
import subprocess
import sys
import tempfile
import zlib
from collections.abc import Callable
from itertools import islice
from pathlib import Path

import numpy as np
import pytest
import torch
from reenactbench.baselines.pirenderer.descriptor import (
    SEMANTIC_RADIUS,
    descriptor,
    descriptors,
    find_crop_norm_ratio,
    window_index,
)
from reenactbench.baselines.pirenderer.model import (
    FACE,
    FaceGenerator,
    load_pirenderer,
    to_input,
    to_uint8,
)

from reenactbench.errors import InputError

FIXTURE = Path(__file__).parent / "fixtures" / "pirenderer_upstream_reference.npz"
NUM_FRAMES = 40  # rows of the seeded driving clip
SAME_IDX = (0, 1, 20, 38, 39)  # frames rendered same-id (both clip ends, window clamped)
CROSS_IDX = (0, 39)  # frames rendered cross-id (crop scale normalised)
SHORT = 5  # a clip shorter than the 27-frame window
GRID = slice(1, None, 4)  # fixture pixels: rows/cols 1, 5, ..., 253 of the outputs


def seeded_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    """``net_G_ema`` in upstream's layout; each tensor float32 from numpy PCG64 seeded with
    ``(seed, crc32(key))``. Conv/linear weights N(0, 1/fan_in) (x2 before LeakyReLU
    stacks), biases N(0, 0.01^2); ADAIN ``mlp_gamma``/``mlp_beta`` x0.3 so ``1 + gamma``
    stays positive-ish; LayerNorm2d weight 1 + N(0, 0.1^2), bias N(0, 0.1^2); the flow head
    x1.5 (flow std about 5 pixels at 256) and the final RGB conv x0.5 (tanh not saturated)."""
    out = {}
    for key, ref in FaceGenerator(**FACE).state_dict().items():
        rng = np.random.default_rng((seed, zlib.crc32(key.encode())))
        shape = tuple(ref.shape)
        z = rng.standard_normal(shape).astype(np.float32)
        if len(shape) == 3 and shape[1:] == (1, 1):  # LayerNorm2d
            v = (1 + 0.1 * z) if key.endswith("weight") else 0.1 * z
        elif len(shape) == 1:
            v = 0.01 * z
        else:
            transposed = ".decoder.decoder" in key and (".conv_1." in key or ".conv_s." in key)
            fan_in = np.prod(shape[2:]) * (shape[0] / 4 if transposed else shape[1])
            v = z * np.float32((2 / fan_in) ** 0.5)
            if "mlp_gamma" in key or "mlp_beta" in key:
                v = v * 0.3
            if key.startswith("warpping_net.flow_out"):
                v = v * 1.5
            if ".final." in key:
                v = v * 0.5
        out[key] = torch.from_numpy(np.ascontiguousarray(v, dtype=np.float32))
    return out


def seeded_checkpoint(seed: int = 0) -> dict:
    """Upstream's ``_save_checkpoint`` layout (``trainers/base.py``)."""
    sd = seeded_state_dict(seed)
    return {
        "net_G": {k: v + 0.001 for k, v in sd.items()},
        "net_G_ema": sd,
        "opt_G": {"state": {}, "param_groups": []},
        "sch_G": {"step_size": 300000, "gamma": 0.2, "last_epoch": 400000},
        "current_epoch": 190,
        "current_iteration": 400000,
    }


def seeded_rows(seed: int, n: int) -> np.ndarray:
    """``(n, 260) float32`` coefficient rows: a random walk (smooth in time), crop scale
    ``s`` around 1 (column 257), everything else O(0.3)."""
    rng = np.random.default_rng(seed)
    rows = np.cumsum(rng.standard_normal((n, 260)) * 0.05, 0) + rng.standard_normal(260) * 0.3
    rows[:, 257] = 1 + 0.1 * rng.standard_normal(n)
    return rows.astype(np.float32)


def source_image() -> np.ndarray:
    """``(256, 256, 3) uint8``: skimage's astronaut, face centred (exact slice)."""
    from skimage import data

    return np.ascontiguousarray(data.astronaut()[0:256, 96:352])


# Child process: upstream code only, run from the checkout (never imported into our tree).
_CHILD = r"""
import sys, types
import numpy as np, torch
up, deps, tmp = sys.argv[1:4]
sys.path[:0] = [up, deps]
import yaml
from generators.face_model import FaceGenerator
from data.vox_video_dataset import VoxVideoDataset
param = yaml.safe_load(open(up + "/config/face.yaml"))
net = FaceGenerator(**param["gen"]["param"])
ck = torch.load(tmp + "/ckpt.pt", map_location="cpu")
net.load_state_dict(ck["net_G_ema"], strict=True)
net = net.eval()
d = np.load(tmp + "/inputs.npz")
ds = VoxVideoDataset.__new__(VoxVideoDataset)  # no lmdb: only the semantic helpers
ds.semantic_radius = param["data"]["semantic_radius"]
ds.norm_crop_param = True
rows, src_rows = d["rows"], d["source_rows"]
ds.cross_id = False
same = [ds.transform_semantic(rows, int(i), None) for i in d["same_idx"]]
ratio = ds.find_crop_norm_ratio(src_rows, rows)
ds.cross_id = True
cross = [ds.transform_semantic(rows, int(i), ratio) for i in d["cross_idx"]]
seq = {n: np.array([ds.obtain_seq_index(i, n) for i in range(n)])
       for n in (len(rows), int(d["short"]))}
x = torch.from_numpy(d["source"]).float()  # already ToTensor + Normalize, (1,3,256,256)
fake, warp = [], []
with torch.no_grad():
    for sem in same + cross:  # inference.py: one frame at a time
        o = net(x, sem[None])
        fake.append(o["fake_image"].cpu().clamp_(-1, 1))
        warp.append(o["warp_image"].cpu().clamp_(-1, 1))
def u8(v):  # inference.py write2video
    v = v[:, :3].cpu().float().detach().numpy()
    return ((np.transpose(v, (0, 2, 3, 1)) + 1) / 2.0 * 255.0).astype(np.uint8)
fake, warp = torch.cat(fake), torch.cat(warp)
layout = [k + ":" + "x".join(map(str, v.shape)) for k, v in net.state_dict().items()]
np.savez(tmp + "/out.npz", fake_u8=u8(fake), warp_u8=u8(warp),
         fake_crop=fake[:, :, 112:144, 112:144].numpy(),
         warp_crop=warp[:, :, 112:144, 112:144].numpy(),
         desc=torch.stack(same + cross).numpy(), ratio=ratio, layout=np.array(layout),
         seq_long=seq[len(rows)], seq_short=seq[int(d["short"])])
"""


def regenerate(upstream: Path, deps: Path, out: Path = FIXTURE) -> None:
    """Run upstream's FaceGenerator and descriptor code on the seeded inputs; write the fixture."""
    src = source_image()
    with tempfile.TemporaryDirectory() as tmp:
        torch.save(seeded_checkpoint(0), Path(tmp) / "ckpt.pt")
        np.savez(
            Path(tmp) / "inputs.npz",
            rows=seeded_rows(1, NUM_FRAMES),
            source_rows=seeded_rows(2, 1),
            source=to_input(src[None]).numpy(),
            same_idx=np.array(SAME_IDX),
            cross_idx=np.array(CROSS_IDX),
            short=SHORT,
        )
        subprocess.run(
            [sys.executable, "-c", _CHILD, str(upstream), str(deps), tmp], check=True, cwd=tmp
        )
        r = dict(np.load(Path(tmp) / "out.npz"))
    for name in ("fake", "warp"):  # keep the fixture small: a pixel grid and a 16x16 crop
        r[f"{name}_u8"] = r[f"{name}_u8"][:, GRID, GRID]
        r[f"{name}_crop"] = r[f"{name}_crop"][:, :, :16, :16]
    r["source_sha256"] = np.array(hashlib.sha256(src.tobytes()).hexdigest())
    np.savez_compressed(out, **r)


# ---------------------------------------------------------------------------- tests


@pytest.fixture(scope="module")
def ref() -> dict[str, np.ndarray]:
    return dict(np.load(FIXTURE))


@pytest.fixture(scope="module")
def ckpt_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("pirenderer") / "epoch_00190_iteration_000400000_checkpoint.pt"
    torch.save(seeded_checkpoint(0), path)
    return path


def test_seeded_checkpoint_loads_strictly(ckpt_file: Path) -> None:
    net = load_pirenderer(ckpt_file)
    sd = torch.load(ckpt_file, weights_only=True)["net_G_ema"]
    key = "editing_net.decoder.final.model.0.weight"
    assert torch.equal(net.state_dict()[key], sd[key])  # net_G_ema, not net_G
    assert not net.training and len(net.state_dict()) == 304


def test_layout_equals_upstream(ref: dict[str, np.ndarray]) -> None:
    ours = [
        f"{k}:{'x'.join(map(str, v.shape))}" for k, v in FaceGenerator(**FACE).state_dict().items()
    ]
    assert ours == ref["layout"].tolist()


@pytest.mark.parametrize("change", ["missing", "extra", "shape", "toplevel"])
def test_bad_checkpoint_names_file(tmp_path: Path, change: str) -> None:
    ck = seeded_checkpoint(1)
    sd = ck["net_G_ema"]
    if change == "missing":
        del sd["mapping_net.first.0.bias"]
    elif change == "extra":
        sd["bogus.weight"] = torch.zeros(1)
    elif change == "shape":
        sd["warpping_net.flow_out.2.bias"] = torch.zeros(3)
    else:
        del ck["net_G_ema"]
    path = tmp_path / f"{change}.pt"
    torch.save(ck, path)
    with pytest.raises(InputError, match=str(path)) as e:
        load_pirenderer(path)
    msg = str(e.value)
    assert "\n" not in msg
    want = {"missing": "mapping_net.first.0.bias", "extra": "bogus.weight"}
    assert want.get(change, "net_G_ema") in msg


def test_window_clamped_like_upstream(ref: dict[str, np.ndarray]) -> None:
    for n, key in ((NUM_FRAMES, "seq_long"), (SHORT, "seq_short")):
        assert np.array_equal([window_index(i, n) for i in range(n)], ref[key])
    # re-statement checked against the fixture above: first/last row repeats at the ends
    assert window_index(0, NUM_FRAMES)[:14] == [0] * 14
    assert window_index(39, NUM_FRAMES)[-14:] == [39] * 14


def test_descriptor_same_and_cross_id(ref: dict[str, np.ndarray]) -> None:
    rows, src_rows = seeded_rows(1, NUM_FRAMES), seeded_rows(2, 1)
    ratio = find_crop_norm_ratio(src_rows, rows)
    assert ratio.shape == (1,) and ratio.dtype == np.float32
    assert np.array_equal(ratio, ref["ratio"])
    ours = [descriptor(rows, i) for i in SAME_IDX] + [descriptor(rows, i, ratio) for i in CROSS_IDX]
    assert np.array_equal(np.stack(ours), ref["desc"])
    assert np.array_equal(descriptors(rows)[list(SAME_IDX)], ref["desc"][: len(SAME_IDX)])


def test_descriptor_rejects_wrong_rows() -> None:
    with pytest.raises(ValueError, match=r"\(T, 260\).*\(4, 257\)"):
        descriptor(np.zeros((4, 257), np.float32), 0)


def test_parity_with_upstream(ckpt_file: Path, ref: dict[str, np.ndarray]) -> None:
    src = source_image()
    assert hashlib.sha256(src.tobytes()).hexdigest() == str(ref["source_sha256"])
    rows, ratio = (
        seeded_rows(1, NUM_FRAMES),
        find_crop_norm_ratio(seeded_rows(2, 1), seeded_rows(1, NUM_FRAMES)),
    )
    desc = [descriptor(rows, i) for i in SAME_IDX] + [descriptor(rows, i, ratio) for i in CROSS_IDX]
    net = load_pirenderer(ckpt_file)
    with torch.no_grad():  # ours in one batch; upstream ran one frame at a time
        out = net(
            to_input(src[None]).expand(len(desc), -1, -1, -1), torch.from_numpy(np.stack(desc))
        )
    for name in ("fake", "warp"):
        img = out[f"{name}_image"]
        crop = img.clamp(-1, 1)[:, :, 112:128, 112:128].numpy()
        assert np.abs(crop - ref[f"{name}_crop"]).max() < 1e-4, name
        diff = to_uint8(img)[:, GRID, GRID].astype(int) - ref[f"{name}_u8"]
        assert np.abs(diff).max() <= 1, name
        assert abs(diff.mean()) < 0.01, f"{name}: systematic bias {diff.mean():+.3f}"


def test_to_uint8_truncates() -> None:
    x = torch.tensor([-2.0, -1.0, 0.0, 0.999, 1.0, 3.0]).view(1, 1, 1, 6).expand(1, 3, 1, 6)
    assert to_uint8(x)[0, 0, :, 0].tolist() == [0, 0, 127, 254, 255, 255]


# ---------------------------------------------------------------------------- adapter


@pytest.fixture(scope="module")
def method_weights(ckpt_file: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Seeded ``pirenderer-vox`` and ``deep3d-recon`` files in the official layouts."""
    from tests.test_deep3d import seeded_checkpoint as deep3d_checkpoint

    recon = tmp_path_factory.mktemp("deep3d") / "epoch_20.pth"
    torch.save(deep3d_checkpoint(0), recon)
    return {"pirenderer-vox": ckpt_file, "deep3d-recon": recon}


def _needs_faces() -> None:
    from reenactbench.faces import faces_unavailable

    reason = faces_unavailable()
    if reason:
        pytest.skip(reason)


class _Counted:
    """An iterable of frames that records how many were pulled."""

    def __init__(self, frames: list[np.ndarray]) -> None:
        self.frames, self.pulled = frames, 0

    def __iter__(self):  # noqa: ANN204
        for f in self.frames:
            self.pulled += 1
            yield f


@pytest.mark.parametrize(
    ("num", "batch_size", "crop_norm"),
    [(40, 1, False), (40, 4, False), (5, 2, False), (40, 3, True)],
)
def test_adapter_streams_with_window_look_ahead(
    method_weights: dict[str, Path],
    monkeypatch: pytest.MonkeyPatch,
    num: int,
    batch_size: int,
    crop_norm: bool,
) -> None:
    """Rows stubbed (no detector): the adapter renders exactly upstream's descriptors and
    yields frame i once frame i+13 is read (+ batch_size - 1), never later."""
    from reenactbench.baselines.pirenderer.adapter import PIRendererMethod

    rows, src_rows = seeded_rows(1, num), seeded_rows(2, 1)
    m = PIRendererMethod(weights=method_weights, batch_size=batch_size, crop_norm=crop_norm)

    def fake_rows(frames: np.ndarray, first_index: int = 0, what: str = "driving") -> np.ndarray:
        return src_rows if what == "source" else rows[first_index : first_index + len(frames)]

    seen: list[np.ndarray] = []

    def fake_render(src: torch.Tensor, desc: list[np.ndarray]) -> np.ndarray:
        seen.extend(desc)
        return np.zeros((len(desc), 256, 256, 3), np.uint8)

    monkeypatch.setattr(m, "rows", fake_rows)
    monkeypatch.setattr(m, "render", fake_render)
    frames = _Counted([np.full((256, 256, 3), i, np.uint8) for i in range(num)])
    ahead = [frames.pulled - 1 - i for i, _ in enumerate(m.reenact(source_image(), frames))]
    assert len(ahead) == num
    ratio = find_crop_norm_ratio(src_rows, rows) if crop_norm else None
    assert np.array_equal(np.stack(seen), descriptors(rows, ratio))
    if crop_norm:  # the ratio needs every driving frame first
        assert ahead[0] == num - 1
    else:
        assert max(ahead) <= SEMANTIC_RADIUS + batch_size - 1
        if batch_size == 1:  # yields as soon as the window is complete
            assert ahead == [13] * (num - 13) + list(range(12, -1, -1))


def real_clip(video: Path, n: int) -> np.ndarray:
    """``(n, 256, 256, 3) uint8``: every 4th frame of ``video``, centre square crop, resized."""
    from reenactbench.video import iter_frames, resize

    out = []
    for i, f in enumerate(islice(iter_frames(video), 4 * n)):
        if i % 4 == 0:
            h, w = f.shape[:2]
            s = min(h, w)
            y, x = (h - s) // 2, (w - s) // 2
            out.append(resize(np.ascontiguousarray(f[y : y + s, x : x + s]), 256))
    return np.stack(out)


@pytest.fixture(scope="module")
def face_clip(feat_video: Callable[[str], Path]) -> np.ndarray:
    return real_clip(feat_video("single_face.mp4"), 7)


@pytest.mark.faces
def test_adapter_equals_direct_computation(
    method_weights: dict[str, Path], face_clip: np.ndarray
) -> None:
    """Real faces: adapter == dlib landmarks -> extract_coeffs -> descriptors -> model."""
    _needs_faces()
    from reenactbench.baselines.pirenderer.adapter import PIRendererMethod

    from reenactbench.faces import detect_landmarks
    from reenactbench.faces.deep3d import extract_coeffs

    src, drv = face_clip[0], face_clip[1:]
    m = PIRendererMethod(weights=method_weights, batch_size=4)
    out = np.stack(list(m.reenact(src, iter(drv))))
    assert out.shape == (len(drv), 256, 256, 3) and out.dtype == np.uint8
    lms = [detect_landmarks(f) for f in face_clip]
    assert all(lm is not None for lm in lms)
    coeffs, crop = extract_coeffs(face_clip, np.stack(lms), weights=method_weights["deep3d-recon"])
    rows = np.concatenate([coeffs, crop], 1)
    net = load_pirenderer(method_weights["pirenderer-vox"])
    with torch.no_grad():
        want = to_uint8(
            net(
                to_input(src[None]).expand(len(drv), -1, -1, -1),
                torch.from_numpy(descriptors(rows[1:])),
            )["fake_image"]
        )
    diff = np.abs(out.astype(int) - want)
    assert diff.max() <= 1 and (diff > 0).mean() < 1e-3
    assert np.abs(np.diff(out.astype(int), axis=0)).mean() > 0.5  # frames follow the driving


@pytest.mark.faces
def test_adapter_no_face_names_frame(
    method_weights: dict[str, Path], face_clip: np.ndarray
) -> None:
    _needs_faces()
    from reenactbench.baselines.pirenderer.adapter import PIRendererMethod

    m = PIRendererMethod(weights=method_weights, batch_size=4)
    blank = np.zeros((256, 256, 3), np.uint8)
    with pytest.raises(InputError, match="driving frame 2 has no face") as e:
        list(m.reenact(face_clip[0], iter([face_clip[1], face_clip[2], blank])))
    assert "\n" not in str(e.value)
    with pytest.raises(InputError, match="source frame has no face"):
        list(m.reenact(blank, iter(face_clip[1:2])))


def test_adapter_options(method_weights: dict[str, Path]) -> None:
    from reenactbench.baselines.pirenderer.adapter import PIRendererMethod

    from reenactbench.errors import MethodError, WeightsMissing

    assert PIRendererMethod(weights=method_weights, crop_norm=True).crop_norm is True
    with pytest.raises(MethodError, match="crop_norm"):
        PIRendererMethod(weights=method_weights, crop_norm="maybe")
    # the CLI turns --method-option pirenderer:crop_norm=true into a boolean
    from reenactbench.cli import _parse_method_options

    assert _parse_method_options(["crop_norm=TRUE", "n=3", "x=0.5", "s=no"]) == {
        "crop_norm": True, "n": 3, "x": 0.5, "s": "no",
    }  # fmt: skip
    with pytest.raises(WeightsMissing, match="deep3d-recon"):
        PIRendererMethod(weights={"pirenderer-vox": method_weights["pirenderer-vox"]})


def _run_same_id(demo_data: Path, out: Path, weights: dict[str, Path], *extra: str):  # noqa: ANN202
    from typer.testing import CliRunner

    from reenactbench.cli import app

    args = [a for k, v in weights.items() for a in ("--weights", f"{k}={v}")]
    return CliRunner().invoke(app, [
        "--quiet", "run", "same-id", "--data", str(demo_data), "--protocol", "demo_same_id",
        "-m", "pirenderer", *args, "--max-videos", "2", "--max-frames", "3", "--out", str(out),
        *extra,
    ])  # fmt: skip


@pytest.mark.faces
def test_run_same_id_on_demo_data(
    method_weights: dict[str, Path], demo_data: Path, tmp_path: Path
) -> None:
    """`run same-id` end to end on the real demo clips with seeded weights via --weights."""
    import csv
    import json

    result = _run_same_id(demo_data, tmp_path / "run", method_weights)
    assert result.exit_code == 0, (result.output, result.exception)
    with (tmp_path / "run" / "summary.csv").open() as f:
        rows = {r["metric"]: r for r in csv.DictReader(f) if r["method"] == "pirenderer"}
    l1 = float(rows["l1"]["value"])
    assert np.isfinite(l1) and l1 > 0 and rows["l1"]["n"] == "2"
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["weights"]["deep3d-recon"]["status"] == "unpinned"


@pytest.mark.faces
def test_run_missing_weight_skips_method(
    method_weights: dict[str, Path], demo_data: Path, tmp_path: Path
) -> None:
    import json

    only = {"pirenderer-vox": method_weights["pirenderer-vox"]}
    result = _run_same_id(demo_data, tmp_path / "run", only)
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert "deep3d-recon" in run["skipped_methods"]["pirenderer"], (result.output, run)


def test_frame_cache_persists_rows(tmp_path: Path) -> None:
    """Rows flushed to a folder are read by a new cache (no extraction); a torn shard is
    ignored and its rows computed again."""
    from reenactbench.metrics.framecache import FrameCache

    calls: list[int] = []

    def extract(f: np.ndarray) -> np.ndarray:
        calls.append(len(f))
        return f.reshape(len(f), -1)[:, :3].astype(np.float64) + 0.25

    frames = np.stack([np.full((8, 8, 3), i, np.uint8) for i in range(5)])
    first = FrameCache(extract)
    first.persist(tmp_path)
    want = first(frames[:3])
    first.flush()
    first(frames[3:])
    first.flush()
    assert sorted(calls) == [2, 3] and len(list(tmp_path.glob("*.rows.npz"))) == 2
    calls.clear()
    second = FrameCache(extract)
    assert second.persist(tmp_path) == 5
    assert np.array_equal(second(frames[:3]), want) and calls == []
    shard = max(tmp_path.glob("*.rows.npz"), key=lambda p: p.stat().st_size)
    shard.write_bytes(shard.read_bytes()[:-40])  # torn
    third = FrameCache(extract)
    assert third.persist(tmp_path) < 5
    assert np.array_equal(third(frames[:3]), want) and sum(calls) > 0


@pytest.mark.faces
def test_coefficients_persist_in_the_run_directory(
    method_weights: dict[str, Path],
    demo_data: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A second command on the same run directory (another temporal backend: every job
    recomputes) reads the coefficient rows the first one kept instead of extracting, and
    its frames (L1 per frame) are identical."""
    import json

    import reenactbench.baselines.pirenderer.driven as adapter

    extracted: list[int] = []
    real = adapter.extract_coeffs

    def counting(frames: np.ndarray, *a, **k):  # noqa: ANN002, ANN003, ANN202
        extracted.append(len(frames))
        return real(frames, *a, **k)

    def l1_per_frame() -> list[float]:
        recs = sorted((out / "cache" / "pirenderer").glob("*/job.npz"))
        return [v for r in recs for v in np.load(r)["values.l1"].tolist()]

    monkeypatch.setattr(adapter, "extract_coeffs", counting)
    out = tmp_path / "run"
    assert _run_same_id(demo_data, out, method_weights).exit_code == 0
    shards = list((out / "cache" / "pirenderer" / "_rows").glob("*/*.rows.npz"))
    assert sum(extracted) == 6 and len(shards) == 2, (extracted, shards)  # 2 videos x 3
    before = l1_per_frame()
    extracted.clear()
    result = _run_same_id(demo_data, out, method_weights, "--temporal-backend", "landmarks")
    assert result.exit_code == 0, result.output
    assert extracted == [] and l1_per_frame() == before
    history = (out / "history.jsonl").read_text().splitlines()
    assert len(history) == 2 and json.loads(history[-1])["timings"]["pirenderer"]["frames"] == 6


if __name__ == "__main__":
    if len(sys.argv) != 4 or sys.argv[1] != "--regenerate":
        sys.exit("usage: python -m tests.test_pirenderer --regenerate UPSTREAM_CHECKOUT DEPS")
    regenerate(Path(sys.argv[2]), Path(sys.argv[3]))
    print(f"wrote {FIXTURE}")


def test_driving_coeffs_replace_extraction(
    method_weights: dict[str, Path], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """`reenact --driving-coeffs FILE.npy`: the (T, 260) rows are used as given (no
    driving landmarks or extraction); a file of the wrong shape is one line naming it."""
    from reenactbench.baselines.pirenderer.adapter import PIRendererMethod, read_rows
    from typer.testing import CliRunner

    from reenactbench.cli import app

    rows = seeded_rows(3, 6)
    good = tmp_path / "rows.npy"
    np.save(good, rows)
    m = PIRendererMethod(weights=method_weights, driving_coeffs=str(good))
    seen: list[np.ndarray] = []
    monkeypatch.setattr(
        m,
        "rows",
        lambda f, i=0, what="driving": (
            seeded_rows(2, 1) if what == "source" else PIRendererMethod.rows(m, f, i, what)
        ),
    )
    monkeypatch.setattr(m, "render", lambda src, desc: (seen.extend(desc), np.zeros(
        (len(desc), 256, 256, 3), np.uint8))[1])  # fmt: skip
    blank = [np.zeros((256, 256, 3), np.uint8)] * 6  # no face: extraction would fail
    assert len(list(m.reenact(source_image(), iter(blank)))) == 6
    assert np.array_equal(np.stack(seen), descriptors(rows, None))
    with pytest.raises(InputError, match="rows.npy: 6 coefficient rows, but the driving"):
        list(m.reenact(source_image(), iter(blank * 2)))
    for bad, text in ((np.zeros((4, 257)), "of shape (4, 257); need (T, 260)"),
                      (np.full((2, 260), np.nan), "must be finite")):  # fmt: skip
        np.save(tmp_path / "bad.npy", bad)
        with pytest.raises(InputError, match=re.escape(text)):
            read_rows(tmp_path / "bad.npy")
    drv = tmp_path / "drv"
    from reenactbench.video import write_png_folder

    write_png_folder(np.zeros((2, 256, 256, 3), np.uint8), drv)
    args = ["reenact", "--method", "static", "--source", str(drv / "000000.png"), "--driving",
            str(drv), "--out", str(tmp_path / "o"), "--driving-coeffs", str(good)]  # fmt: skip
    result = CliRunner().invoke(app, args)  # a method without coefficients: a usage error
    assert result.exit_code == 2 and "driving_coeffs" in result.stderr, result.output


def test_landmark_sidecars_replace_detection(
    method_weights: dict[str, Path], tmp_path: Path
) -> None:
    """A `<frame>.txt` beside a frame PNG (upstream's 136-number keypoint format, in that
    image's pixels) is used instead of detecting: these frames have no face at all."""
    from typer.testing import CliRunner

    from reenactbench.cli import app
    from reenactbench.faces.sidecar import read_landmarks_txt, sidecar_landmarks
    from reenactbench.video import write_png_folder

    drv = tmp_path / "drv"
    write_png_folder(np.full((3, 512, 512, 3), 90, np.uint8), drv)  # blank: no face
    rng = np.random.default_rng(0)
    points = (rng.uniform(150, 350, (68, 2))).astype(np.float32)
    for f in sorted(drv.glob("*.png")):
        f.with_suffix(".txt").write_text("\n".join(f"{x} {y}" for x, y in points))
    assert np.allclose(sidecar_landmarks(drv / "000000.png", 256), points / 2)
    weights = [a for k, v in method_weights.items() for a in ("--weights", f"{k}={v}")]
    args = ["reenact", "--method", "pirenderer", "--source", str(drv / "000000.png"),
            "--driving", str(drv), "--out", str(tmp_path / "out"), *weights]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert len(list((tmp_path / "out").glob("*.png"))) == 3
    (drv / "000001.txt").unlink()  # frame 1 must now be detected: it has no face
    result = CliRunner().invoke(app, [*args[: -len(weights)], "--overwrite", *weights])
    assert result.exit_code == 2 and "driving frame 1 has no face" in result.stderr
    for text, match in (("1 2 3", "3 numbers; a landmark file holds 136"),
                        ("1 x " * 68, "must be numbers")):  # fmt: skip
        (drv / "bad.txt").write_text(text)
        with pytest.raises(InputError, match=match):
            read_landmarks_txt(drv / "bad.txt")


def test_coefficients_are_extracted_once_per_distinct_frame(
    method_weights: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A robustness run drives 5 sources with one video: its rows are extracted once."""
    import reenactbench.baselines.pirenderer.driven as adapter
    from reenactbench.baselines.pirenderer.adapter import PIRendererMethod

    m = PIRendererMethod(weights=method_weights)
    points = np.random.default_rng(0).uniform(80, 180, (68, 2)).astype(np.float32)
    monkeypatch.setattr(adapter, "landmarks_68", lambda f: None if f.max() == 0 else points)
    extracted: list[int] = []
    real = adapter.extract_coeffs

    def counting(frames: np.ndarray, *a, **k):  # noqa: ANN002, ANN003, ANN202
        extracted.append(len(frames))
        return real(frames, *a, **k)

    monkeypatch.setattr(adapter, "extract_coeffs", counting)
    frames = np.stack([np.full((256, 256, 3), 10 + i, np.uint8) for i in range(4)])
    first = m.rows(frames)
    again = m.rows(frames[::-1])  # another job on the same frames
    assert sum(extracted) == 4 and np.array_equal(again, first[::-1])
    with pytest.raises(InputError, match="driving frame 7 has no face"):
        m.rows(np.stack([frames[0], np.zeros_like(frames[0])]), first_index=6)
