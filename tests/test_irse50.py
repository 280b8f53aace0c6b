"""IR-SE50 (pSp): strict loading of pSp's layout and parity with pSp's own code.

The parity fixture ``tests/fixtures/irse50_psp_reference.npz`` was computed by pSp's
upstream ``Backbone`` (run outside our tree, see tests/fixtures/README.md) on the seeded
state dict of :func:`seeded_state_dict` and the frames of :func:`reference_frames`.
Regenerate it with ``python tests/test_irse50.py --regenerate PSP_CHECKOUT``.
"""

from __future__ import annotations

import functools
import subprocess
import sys
import tempfile
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch

from reenactbench.errors import InputError
from reenactbench.nn.irse50 import Backbone, load_irse50, psp_id_input

FIXTURE = Path(__file__).parent / "fixtures" / "irse50_psp_reference.npz"


def seeded_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    """A fresh copy of :func:`_seeded` (a dict the caller may edit)."""
    return dict(_seeded(seed))


@functools.cache
def _seeded(seed: int) -> dict[str, torch.Tensor]:
    """A deterministic IR-SE50 state dict in pSp's layout (with num_batches_tracked).

    Every tensor comes from numpy's PCG64 seeded with ``(seed, crc32(key))``, so the values
    do not depend on torch's RNG or on key order. Scales keep activations O(1): He-normal
    convs, BN weights ~1, running variances in [0.5, 1.5], PReLU slopes ~0.25.
    """
    net = Backbone(112, 50, "ir_se")
    kinds = {name: type(m).__name__ for name, m in net.named_modules()}
    out: dict[str, torch.Tensor] = {}
    for key, ref in net.state_dict().items():
        rng = np.random.default_rng([seed, zlib.crc32(key.encode())])
        module, leaf = key.rsplit(".", 1)
        kind, shape = kinds[module], tuple(ref.shape)
        if leaf == "num_batches_tracked":
            out[key] = torch.tensor(0, dtype=torch.long)
            continue
        if leaf == "running_var":
            v = rng.uniform(0.5, 1.5, shape)
        elif leaf == "running_mean" or leaf == "bias":
            v = rng.normal(0.0, 0.1, shape)
        elif kind.startswith("BatchNorm"):
            v = rng.uniform(0.8, 1.2, shape)
        elif kind == "PReLU":
            v = rng.uniform(0.15, 0.35, shape)
        else:  # Conv2d / Linear weight
            fan_in = int(np.prod(shape[1:]))
            gain = 0.5 if module.endswith("res_layer.3") else 1.0  # keep the residual sum tame
            v = rng.normal(0.0, gain * np.sqrt(2.0 / fan_in), shape)
        out[key] = torch.from_numpy(v.astype(np.float32))
    return out


def reference_frames() -> np.ndarray:
    """``(4, 256, 256, 3) uint8``: three crops of skimage's astronaut photo (one face,
    at different places) and one mirrored; exact slices, no resampling."""
    from skimage import data

    a = data.astronaut()  # (512, 512, 3), face at about x 179-266, y 83-170
    crops = [a[0:256, 96:352], a[20:276, 110:366], a[40:296, 60:316]]
    crops.append(crops[0][:, ::-1])
    return np.ascontiguousarray(np.stack(crops))


def _to_input(frames: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(frames).permute(0, 3, 1, 2).contiguous().float() / 127.5 - 1.0


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("irse50") / "model_ir_se50.pth"
    torch.save(seeded_state_dict(), path)
    return path


def test_layout_matches_psp(weights_file: Path) -> None:
    ref = np.load(FIXTURE)
    ours = {k: tuple(v.shape) for k, v in Backbone().state_dict().items()}
    theirs = {}
    for line in ref["layout"]:
        key, shape = str(line).split(":")
        theirs[key] = tuple(int(s) for s in shape.split(",") if s)
    assert ours == theirs
    assert len(ours) == 397
    convs = sorted({k.split(".")[1] for k in ours if "shortcut_layer.0" in k}, key=int)
    assert convs == ["3", "7", "21"]


def test_embeddings_match_psp(weights_file: Path) -> None:
    ref = np.load(FIXTURE)
    net = load_irse50(weights_file)
    with torch.inference_mode():
        x = _to_input(reference_frames())
        emb = net(psp_id_input(x)).numpy()
        taps = [t.mean(dim=(2, 3)).numpy() for t in net.features(x)]
    assert emb.shape == (4, 512)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(emb, ref["emb"], atol=1e-5, rtol=0)
    for name, got in zip(("c1", "c2", "c3"), taps, strict=True):
        np.testing.assert_allclose(got, ref[name], atol=1e-5, rtol=1e-5)
    # the seeded network separates different crops (the numbers above are not trivial)
    assert float(emb[0] @ emb[1]) < 1 - 1e-4


def test_channels_last_input_flattens_like_contiguous(weights_file: Path) -> None:
    net = load_irse50(weights_file)
    x = psp_id_input(_to_input(reference_frames()[:1]))
    with torch.inference_mode():
        a = net(x)
        b = net(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(a, b, atol=1e-6, rtol=0)


def test_loads_without_num_batches_tracked(tmp_path: Path, weights_file: Path) -> None:
    state = {k: v for k, v in seeded_state_dict().items() if "num_batches_tracked" not in k}
    path = tmp_path / "old.pth"
    torch.save(state, path)
    x = psp_id_input(_to_input(reference_frames()[:1]))
    with torch.inference_mode():
        torch.testing.assert_close(load_irse50(path)(x), load_irse50(weights_file)(x))


@pytest.mark.parametrize("change", ["missing", "extra", "shape", "prefix"])
def test_strict_load_names_the_file(tmp_path: Path, change: str) -> None:
    state = seeded_state_dict()
    if change == "missing":
        del state["body.21.shortcut_layer.0.weight"]
    elif change == "extra":
        state["body.4.shortcut_layer.0.weight"] = torch.zeros(128, 128, 1, 1)
    elif change == "shape":
        state["output_layer.3.weight"] = torch.zeros(512, 100)
    else:
        state = {"module." + k: v for k, v in state.items()}
    path = tmp_path / f"{change}.pth"
    torch.save(state, path)
    with pytest.raises(InputError) as e:
        load_irse50(path)
    msg = str(e.value)
    assert str(path) in msg and "model_ir_se50.pth" in msg
    word = {"missing": "missing keys", "extra": "unexpected keys", "shape": "shape mismatch"}
    assert word.get(change, "missing keys") in msg
    if change == "missing":
        assert "body.21.shortcut_layer.0.weight" in msg


def test_unreadable_file(tmp_path: Path) -> None:
    path = tmp_path / "model_ir_se50.pth"
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(InputError, match="cannot be read"):
        load_irse50(path)


def test_psp_crop_needs_256() -> None:
    with pytest.raises(ValueError, match="256"):
        psp_id_input(torch.zeros(1, 3, 128, 128))


# --- fixture regeneration: runs pSp's own code from a checkout outside this tree -------

_UPSTREAM = r"""
import sys, numpy as np, torch
sys.path.insert(0, sys.argv[1])
from models.encoders.model_irse import Backbone  # pSp's code, from the checkout
net = Backbone(input_size=112, num_layers=50, drop_ratio=0.6, mode="ir_se")  # as IDLoss
net.load_state_dict(torch.load(sys.argv[2], weights_only=True), strict=True)
net.eval()
frames = np.load(sys.argv[3])
x = torch.from_numpy(frames).permute(0, 3, 1, 2).contiguous().float() / 127.5 - 1.0
with torch.no_grad():  # contiguous NCHW as pSp's loaders give (its Flatten uses .view)
    emb = net(torch.nn.AdaptiveAvgPool2d((112, 112))(x[:, :, 35:223, 32:220]))
    h, taps = net.input_layer(x), {}
    for i, unit in enumerate(net.body._modules.values()):  # as GradualStyleEncoder
        h = unit(h)
        if i in (6, 20, 23):
            taps["c%d" % (len(taps) + 1)] = h.mean(dim=(2, 3)).numpy()
layout = [k + ":" + ",".join(map(str, v.shape)) for k, v in net.state_dict().items()]
np.savez_compressed(sys.argv[4], emb=emb.numpy(), layout=np.array(layout), **taps)
"""


def regenerate(checkout: Path) -> None:
    """Write the fixture from a pixel2style2pixel checkout (a folder holding ``models/``)."""
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        torch.save(seeded_state_dict(), t / "w.pth")
        np.save(t / "frames.npy", reference_frames())
        (t / "run.py").write_text(_UPSTREAM)
        FIXTURE.parent.mkdir(exist_ok=True)
        cmd = [sys.executable, str(t / "run.py"), str(checkout), str(t / "w.pth")]
        subprocess.run([*cmd, str(t / "frames.npy"), str(FIXTURE)], check=True, cwd=t)
    print(f"wrote {FIXTURE} ({FIXTURE.stat().st_size} bytes)")


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] != "--regenerate":
        sys.exit("usage: python tests/test_irse50.py --regenerate PSP_CHECKOUT")
    regenerate(Path(sys.argv[2]))
