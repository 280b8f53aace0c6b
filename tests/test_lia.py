"""LIA: strict loading of the official layout, parity with upstream on seeded weights,
and the adapter contract.

Regenerate the parity fixture with
``python tests/test_lia.py --regenerate LIA_DIR VIDEO`` (see tests/fixtures/README.md).
"""

from __future__ import annotations

import argparse
import hashlib
import subprocess
import sys
import tempfile
from pathlib import Path, PurePosixPath

import numpy as np
import pytest
import torch
from reenactbench.baselines.lia import Generator, LIAMethod, load_lia
from reenactbench.baselines.lia.adapter import to_model, to_uint8

from reenactbench.errors import InputError
from reenactbench.video import read_frames, resize

FIXTURE = Path(__file__).parent / "fixtures" / "lia_upstream_reference.npz"
#: frames of feat's single_face.mp4 used: source, then the driving clip
SOURCE_FRAME, DRIVING_FRAMES = 0, (12, 24, 36, 48)
#: window of the raw float output kept in the fixture (the full tensor is 3 MB)
CROP = slice(112, 144)


def seeded_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    """A ``Generator(256)`` state dict in the official layout from a seeded generator:
    filter kernels (buffers) as constructed; biases = their init (0, or 1 for the
    modulations) + 0.1 N(0,1); every other parameter N(0,1) (upstream's weight init),
    then ``to_flows.*.conv.weight`` x 0.1 and ``to_rgbs.*.conv.0.weight`` x 0.3. Pure N(0,1)
    flows make the random network chaotic (a 1e-6 change of the latent moves pixels by
    1e-2, so even upstream differs from itself between batch sizes); the damped ones keep
    it smooth and few pixels clamped. Keys are visited in sorted order, so the values do not
    depend on module order."""
    g = torch.Generator().manual_seed(seed)
    template = Generator(256).state_dict()
    out = {}
    for key in sorted(template):
        t = template[key]
        if key.endswith("kernel"):
            out[key] = t.clone()
        elif key.endswith("bias"):
            out[key] = t + 0.1 * torch.randn(t.shape, generator=g)
        else:
            out[key] = torch.randn(t.shape, generator=g)
        if key.startswith("dec.to_flows.") and key.endswith(".conv.weight"):
            out[key] *= 0.1
        if key.startswith("dec.to_rgbs.") and key.endswith(".conv.0.weight"):
            out[key] *= 0.3
    return out


def reference_frames(video: Path) -> np.ndarray:
    """``(5,256,256,3) uint8``: source then 4 driving frames of ``video`` (centre square
    crop, ``reenactbench.video.resize`` to 256)."""
    frames = read_frames(video, max_frames=max(DRIVING_FRAMES) + 1)
    h, w = frames.shape[1:3]
    s = min(h, w)
    y, x = (h - s) // 2, (w - s) // 2
    picks = [SOURCE_FRAME, *DRIVING_FRAMES]
    return np.stack([resize(frames[i, y : y + s, x : x + s], 256) for i in picks])


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Seeded weights saved as the official file is: ``gen`` plus training extras."""
    path = tmp_path_factory.mktemp("lia") / "vox.pt"
    extras = {"dis": {"w": torch.zeros(2)}, "args": argparse.Namespace(size=256, lr=0.002)}
    torch.save({"gen": seeded_state_dict(0), **extras}, path)
    return path


@pytest.fixture(scope="module")
def frames(feat_video) -> np.ndarray:
    return reference_frames(feat_video("single_face.mp4"))


def test_strict_load_of_official_layout(checkpoint: Path) -> None:
    net = load_lia(checkpoint)
    ref = seeded_state_dict(0)
    assert set(net.state_dict()) == set(ref)
    assert torch.equal(net.state_dict()["dec.direction.weight"], ref["dec.direction.weight"])


def test_layout_matches_upstream_keys() -> None:
    ref = np.load(FIXTURE)
    ours = sorted(f"{k}:{tuple(v.shape)}" for k, v in Generator(256).state_dict().items())
    assert ours == sorted(ref["layout"].tolist())


@pytest.mark.parametrize("change", ["missing", "extra"])
def test_key_mismatch_is_one_line_input_error(tmp_path: Path, change: str) -> None:
    sd = seeded_state_dict(0)
    if change == "missing":
        del sd["dec.direction.weight"]
    else:
        sd["dec.extra.weight"] = torch.zeros(1)
    path = tmp_path / "bad.pt"
    torch.save({"gen": sd}, path)
    with pytest.raises(InputError) as err:
        load_lia(path)
    msg = str(err.value)
    assert "\n" not in msg and str(path) in msg
    assert ("dec.direction.weight" if change == "missing" else "dec.extra.weight") in msg


def test_not_a_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "x.pt"
    torch.save({"generator": {}}, path)
    with pytest.raises(InputError, match="key 'gen'"):
        load_lia(path)


def test_parity_with_upstream(checkpoint: Path, frames: np.ndarray) -> None:
    """The network on the 4 driving frames at once vs upstream's frame-by-frame run."""
    ref = np.load(FIXTURE)
    digest = hashlib.sha256(frames.tobytes()).hexdigest()
    assert digest == str(ref["frames_sha256"]), "input frames changed (video decode/resize)"
    model = load_lia(checkpoint)
    x = to_model(frames, "cpu")
    with torch.no_grad():
        wa, d_src, feats = model.encode_source(x[:1])
        raw = model.animate(wa, d_src, feats, x[1:], model.enc.enc_motion(x[1:2]))
    assert np.abs(raw[:, :, CROP, CROP].numpy() - ref["raw_crop"]).max() < 1e-4  # fp32 ~1e-5
    assert np.abs(to_uint8(raw).astype(np.int16) - ref["out"]).max() <= 1


@pytest.mark.parametrize("batch_size", [1, 3])
def test_adapter_matches_upstream_at_any_batch_size(
    checkpoint: Path, frames: np.ndarray, batch_size: int
) -> None:
    method = LIAMethod(checkpoint=str(checkpoint), batch_size=batch_size)
    got = list(method.reenact(frames[0], iter(frames[1:])))  # a one-pass iterator
    assert len(got) == 4
    assert all(f.shape == (256, 256, 3) and f.dtype == np.uint8 for f in got)
    diff = np.abs(np.stack(got).astype(np.int16) - np.load(FIXTURE)["out"]).max()
    assert diff <= 1, f"max |ours - upstream| = {diff} levels"


def test_bad_source_shape(checkpoint: Path) -> None:
    method = LIAMethod(checkpoint=str(checkpoint))
    with pytest.raises(InputError, match="256,256,3"):
        next(method.reenact(np.zeros((128, 128, 3), np.uint8), [np.zeros((256, 256, 3), np.uint8)]))


def test_other_pickled_objects_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "unsafe.pt"
    torch.save({"gen": seeded_state_dict(0), "extra": PurePosixPath("x")}, path)
    with pytest.raises(
        InputError,
        match=r"refused: this LIA checkpoint .* other than tensors \(it pickles pathlib.PurePo",
    ):
        load_lia(path)


# --- fixture regeneration (runs upstream's code from LIA_DIR, outside this tree) ------------

_CHILD = r"""
import sys, numpy as np, torch
lia_dir, sd_path, frames_path, out_path = sys.argv[1:]
torch.Tensor.cuda = lambda self, *a, **k: self  # upstream ToFlow calls .cuda(); run on CPU
torch.qr = lambda a: torch.linalg.qr(a, mode="reduced")  # removed from torch; same maths
sys.path.insert(0, lia_dir)
from networks.generator import Generator
gen = Generator(256, 512, 20, 1)
gen.load_state_dict(torch.load(sd_path, weights_only=True), strict=True)
gen.eval()
frames = np.load(frames_path)
x = (torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255.0 - 0.5) * 2.0
with torch.no_grad():
    src, vid = x[:1], x[1:]
    h_start = gen.enc.enc_motion(vid[0:1])                  # run_demo.py
    raw = torch.cat([gen(src, vid[i:i + 1], h_start) for i in range(len(vid))])
out = ((raw.clamp(-1, 1) + 1) / 2 * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
layout = np.array([f"{k}:{tuple(v.shape)}" for k, v in gen.state_dict().items()])
np.savez(out_path, raw=raw.numpy(), out=out, layout=layout)
"""


def _regenerate(lia_dir: Path, video: Path) -> None:
    frames = reference_frames(video)
    with tempfile.TemporaryDirectory() as tmp:
        sd, fr, out = Path(tmp, "sd.pt"), Path(tmp, "frames.npy"), Path(tmp, "out.npz")
        torch.save(seeded_state_dict(0), sd)
        np.save(fr, frames)
        child = [sys.executable, "-c", _CHILD, str(lia_dir), str(sd), str(fr), str(out)]
        subprocess.run(child, check=True)
        ref = dict(np.load(out))
    raw = ref.pop("raw")
    print(f"raw range [{raw.min():.3f}, {raw.max():.3f}], clamped {np.mean(np.abs(raw) > 1):.1%}")
    model = Generator(256)
    model.load_state_dict(seeded_state_dict(0), strict=True)
    x = (torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255 - 0.5) * 2
    with torch.no_grad():
        wa, d_src, feats = model.eval().encode_source(x[:1])
        mine = model.animate(wa, d_src, feats, x[1:], model.enc.enc_motion(x[1:2])).numpy()
    print(f"fp32 max |ours - upstream| = {np.abs(mine - raw).max():.3g}")
    digest = hashlib.sha256(frames.tobytes()).hexdigest()
    np.savez_compressed(
        FIXTURE, frames_sha256=np.array(digest), raw_crop=raw[:, :, CROP, CROP], **ref
    )
    print(f"wrote {FIXTURE} ({FIXTURE.stat().st_size} bytes)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--regenerate", nargs=2, metavar=("LIA_DIR", "VIDEO"), required=True)
    a = parser.parse_args()
    _regenerate(Path(a.regenerate[0]), Path(a.regenerate[1]))


@pytest.mark.faces
def test_run_same_id_on_demo_data(checkpoint: Path, demo_data: Path, tmp_path: Path) -> None:
    """`run same-id` end to end with LIA on the real demo clips (seeded weights given with
    --weights, as a user would pass an HDTF-retrained checkpoint)."""
    import csv
    import json

    from typer.testing import CliRunner

    from reenactbench.cli import app

    result = CliRunner().invoke(app, [
        "--quiet", "run", "same-id", "--data", str(demo_data), "--protocol", "demo_same_id",
        "-m", "lia", "--weights", f"lia-vox={checkpoint}", "--max-videos", "2",
        "--max-frames", "3", "--out", str(tmp_path / "run"),
    ])  # fmt: skip
    assert result.exit_code == 0, (result.output, result.exception)
    with (tmp_path / "run" / "summary.csv").open() as f:
        rows = {r["metric"]: r for r in csv.DictReader(f) if r["method"] == "lia"}
    assert float(rows["l1"]["value"]) > 0 and rows["l1"]["n"] == "2"
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["weights"]["lia-vox"]["status"] == "unpinned"
