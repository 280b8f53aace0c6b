"""StyleHEAT's video warper and calibration network: strict loading of the
``StyleHEAT_visual.pt`` layout and parity with upstream's own modules on seeded weights,
real face frames and PIRenderer descriptors.

Regenerate the parity fixture (see tests/fixtures/README.md):
``python -m tests.test_styleheat_calibration --regenerate UPSTREAM_DIR`` where the folder
holds OpenTalker/StyleHEAT at 9cb0c7cac00c79f901c3061850693b110f88c6ea (``models/__init__.py
models/styleheat models/stylegan2 utils/flow_util.py``; nothing edited: the child stubs the
CUDA compile at import and runs upstream's CPU fallbacks).
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import tempfile
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from reenactbench.baselines.pirenderer.descriptor import descriptor
from reenactbench.baselines.pirenderer.model import to_input, warp_image
from reenactbench.baselines.styleheat.calibration import (
    CalibrationNet,
    StyleHEATVisual,
    VideoWarper,
    load_styleheat,
)

from reenactbench.errors import InputError
from reenactbench.nn.stylegan2_ops import make_kernel
from tests.test_pirenderer import seeded_rows, source_image

FIXTURE = Path(__file__).parent / "fixtures" / "styleheat_calibration_reference.npz"
DESC_IDX = (0, 20)  # frames of the seeded 40-row clip whose descriptor windows drive
CROP = (slice(None), slice(None), slice(112, 144), slice(112, 144))  # warp_image crop
PATCH = (slice(None), slice(0, 16), slice(0, 4), slice(0, 4))  # every condition
GRID = (slice(None), slice(None, None, 8), slice(None, None, 4), slice(None, None, 4))  # 64x64


def _equalised(key: str) -> bool:
    """Calibrator weights scaled by 1/sqrt(fan_in) at run time (StyleGAN2 layers)."""
    plain = (".linear_3dmm.", ".inject_3dmm.")
    return key.startswith("calibrator.") and not any(p in key for p in plain)


def _seeded_value(key: str, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    if key.endswith(".kernel"):  # the fixed blur of the downsampling convs
        return make_kernel((1, 3, 3, 1)).numpy()
    z = rng.standard_normal(shape).astype(np.float32)
    if len(shape) == 3 and shape[1:] == (1, 1):  # LayerNorm2d
        return (1 + 0.1 * z) if key.endswith("weight") else 0.1 * z
    if len(shape) == 1:
        return 0.01 * z
    if _equalised(key):
        return z
    transposed = ".decoder.decoder" in key and (".conv_1." in key or ".conv_s." in key)
    fan_in = np.prod(shape[2:]) * (shape[0] / 4 if transposed else shape[1])
    v = z * np.float32((2 / fan_in) ** 0.5)
    if "mlp_gamma" in key or "mlp_beta" in key:
        v = v * 0.3
    if ".flow_out." in key:
        v = v * 1.5
    return v


def seeded_styleheat_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    """``net_G_ema`` in upstream's layout; each tensor float32 from numpy PCG64 seeded with
    ``(seed, crc32(key))``. Blur kernels are the real ``(1,3,3,1)`` kernel; equalised
    calibrator weights N(0, 1) (scaled at run time); other conv/linear weights N(0,
    2/fan_in); biases N(0, 0.01^2); ADAIN gamma/beta x0.3; LayerNorm2d weight 1 + N(0,
    0.1^2), bias N(0, 0.1^2); the flow head x1.5 (flow std a few pixels)."""
    out = {}
    for key, ref in StyleHEATVisual().state_dict().items():
        rng = np.random.default_rng((seed, zlib.crc32(key.encode())))
        v = _seeded_value(key, tuple(ref.shape), rng)
        out[key] = torch.from_numpy(np.ascontiguousarray(v, dtype=np.float32))
    return out


def seeded_styleheat_checkpoint(seed: int = 0) -> dict:
    """``StyleHEAT_visual.pt``'s layout: ``{"net_G_ema": state}``."""
    return {"net_G_ema": seeded_styleheat_state_dict(seed)}


def frames() -> np.ndarray:
    """``(2, 256, 256, 3) uint8``: the astronaut face of test_pirenderer and its mirror."""
    src = source_image()
    return np.ascontiguousarray(np.stack([src, src[:, ::-1]]))


def descriptor_input() -> np.ndarray:
    """``(2, 73, 27) float32``: PIRenderer descriptors of the seeded clip's frames 0, 20."""
    rows = seeded_rows(1, 40)
    return np.stack([descriptor(rows, i) for i in DESC_IDX])


def fx_warp() -> np.ndarray:
    """``(2, 512, 64, 64) float32`` N(0, 1) from numpy PCG64 seed 3: the calibrator input."""
    return np.random.default_rng(3).standard_normal((2, 512, 64, 64)).astype(np.float32)


# Child process: upstream code only, run from the folder (never imported into our tree).
#: The child scripts' prelude (also tests/test_styleheat_parity.py): upstream's StyleGAN2 ops
#: compile CUDA at import; their CPU paths replace them.
OP_STUBS = r"""
import numpy as np, torch, torch.nn.functional as F
import torch.utils.cpp_extension
up, tmp = sys.argv[1:3]
sys.path.insert(0, up)
torch.utils.cpp_extension.load = lambda *a, **k: None  # the ops compile CUDA at import
import models.stylegan2.op as op
fa, ud = (sys.modules[f"models.stylegan2.op.{m}"] for m in ("fused_act", "upfirdn2d"))
ud.F = F  # upfirdn2d_native uses F, which upstream's op/upfirdn2d.py never imports
def fused_leaky_relu(x, bias, negative_slope=0.2, scale=2 ** 0.5):  # rosinality's CPU path
    rest = [1] * (x.ndim - bias.ndim - 1)
    return F.leaky_relu(x + bias.view(1, bias.shape[0], *rest), negative_slope) * scale
def upfirdn2d(x, kernel, up=1, down=1, pad=(0, 0)):  # upstream's own upfirdn2d_native
    b, c, h, w = x.shape
    out = ud.upfirdn2d_native(x.reshape(-1, h, w, 1), kernel, up, up, down, down,
                              pad[0], pad[1], pad[0], pad[1])
    return out.reshape(b, c, out.shape[1], out.shape[2])
fa.fused_leaky_relu = op.fused_leaky_relu = fused_leaky_relu
ud.upfirdn2d = op.upfirdn2d = upfirdn2d
"""

_CHILD = (
    "import sys\n"
    + OP_STUBS
    + r"""
from utils import flow_util
from models.styleheat.warper import VideoWarper
from models.styleheat.calibration_net import CalibrationNet
class Visual(torch.nn.Module):  # StyleHEAT.__init__ without the generator
    def __init__(self):
        super().__init__()
        self.video_warper = VideoWarper()
        self.calibrator = CalibrationNet(out_size=64, input_channel=512, num_style_feat=512,
                                         channel_multiplier=2, narrow=1)
net = Visual()
net.load_state_dict(torch.load(tmp + "/ckpt.pt", map_location="cpu")["net_G_ema"], strict=True)
net = net.eval()
d = np.load(tmp + "/inputs.npz")
fx = torch.from_numpy(d["fx"])
with torch.no_grad():
    o = net.video_warper(torch.from_numpy(d["image"]), torch.from_numpy(d["desc"]))
    conds = net.calibrator(fx, o["descriptor"])
    warped = flow_util.warp_image(fx, flow_util.convert_flow_to_deformation(o["flow_field"]))
layout = [k + ":" + "x".join(map(str, v.shape)) for k, v in net.state_dict().items()]
np.savez(tmp + "/out.npz", layout=np.array(layout), flow=o["flow_field"].numpy(),
         descriptor=o["descriptor"].numpy(), warp_image=o["warp_image"].numpy(),
         fx_warped=warped.numpy(), **{f"cond{i}": c.numpy() for i, c in enumerate(conds)})
"""
)


def _summaries(conds: list[np.ndarray]) -> dict[str, np.ndarray]:
    """What the fixture keeps of the 8 conditions: shapes, channel means, a corner patch of
    each and a strided grid of the 64x64 pair the generator uses."""
    return {
        "cond_shapes": np.array([c.shape for c in conds]),
        "cond_mean": np.stack([c.mean((2, 3)) for c in conds]),
        "cond_patch": np.stack([c[PATCH] for c in conds]),
        "cond64_grid": np.stack([c[GRID] for c in conds[6:]]),
    }


def regenerate(upstream: Path, out: Path = FIXTURE) -> None:
    """Run upstream's VideoWarper and CalibrationNet on the seeded inputs; write the fixture."""
    src = frames()
    with tempfile.TemporaryDirectory() as tmp:
        torch.save(seeded_styleheat_checkpoint(0), Path(tmp) / "ckpt.pt")
        image = to_input(src).numpy()
        np.savez(Path(tmp) / "inputs.npz", image=image, desc=descriptor_input(), fx=fx_warp())
        subprocess.run([sys.executable, "-c", _CHILD, str(upstream), tmp], check=True, cwd=tmp)
        r = dict(np.load(Path(tmp) / "out.npz"))
    conds = [r.pop(f"cond{i}") for i in range(8)]
    r.update(_summaries(conds))
    r["warp_crop"] = r.pop("warp_image")[CROP]
    fxw = r.pop("fx_warped")
    r["fx_warped_mean"], r["fx_warped_patch"] = fxw.mean((2, 3)), fxw[PATCH]
    r["desc_input"] = descriptor_input()
    r["source_sha256"] = np.array(hashlib.sha256(src.tobytes()).hexdigest())
    np.savez_compressed(out, **r)


# ---------------------------------------------------------------------------- tests


@pytest.fixture(scope="module")
def ref() -> dict[str, np.ndarray]:
    return dict(np.load(FIXTURE))


@pytest.fixture(scope="module")
def ckpt_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("styleheat") / "StyleHEAT_visual.pt"
    torch.save(seeded_styleheat_checkpoint(0), path)
    return path


@pytest.fixture(scope="module")
def nets(ckpt_file: Path) -> tuple[VideoWarper, CalibrationNet]:
    return load_styleheat(ckpt_file)


def test_seeded_checkpoint_loads_strictly(
    ckpt_file: Path, nets: tuple[VideoWarper, CalibrationNet]
) -> None:
    warper, calibrator = nets
    sd = torch.load(ckpt_file, weights_only=True)["net_G_ema"]
    key = "condition_shift.3.2.weight"
    assert torch.equal(calibrator.state_dict()[key], sd[f"calibrator.{key}"])
    assert torch.equal(warper.state_dict()["warping_net.flow_out.2.bias"],
                       sd["video_warper.warping_net.flow_out.2.bias"])  # fmt: skip
    assert not warper.training and not calibrator.training
    assert not any(p.requires_grad for p in calibrator.parameters())


def test_layout_equals_upstream(ref: dict[str, np.ndarray]) -> None:
    sd = StyleHEATVisual().state_dict()
    ours = [f"{k}:{'x'.join(map(str, v.shape))}" for k, v in sd.items()]
    assert ours == ref["layout"].tolist()
    assert not any("generator" in k for k in ours)  # upstream drops those when saving


def _hollow(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Same keys and shapes, one stored number each (a small file for error cases)."""
    return {k: torch.zeros(()).expand(v.shape) for k, v in state.items()}


@pytest.mark.parametrize("change", ["missing", "extra", "shape", "toplevel", "not_dict"])
def test_bad_checkpoint_names_file(tmp_path: Path, change: str) -> None:
    sd = _hollow(StyleHEATVisual().state_dict())
    ck: object = {"net_G_ema": sd}
    if change == "missing":
        del sd["calibrator.linear_3dmm.0.bias"]
    elif change == "extra":
        sd["generator.bogus.weight"] = torch.zeros(1)
    elif change == "shape":
        sd["video_warper.warping_net.flow_out.2.bias"] = torch.zeros(3)
    elif change == "toplevel":
        ck = {"net_G": sd}
    else:
        ck = [sd]
    path = tmp_path / f"{change}.pt"
    torch.save(ck, path)
    with pytest.raises(InputError, match=str(path)) as e:
        load_styleheat(path)
    msg = str(e.value)
    assert "\n" not in msg
    want = {
        "missing": "missing keys calibrator.linear_3dmm.0.bias",
        "extra": "unexpected keys generator.bogus.weight",
        "shape": "flow_out.2.bias (3,) != (2,)",
    }
    assert want.get(change, "net_G_ema") in msg


def _scaled_diff(ours: np.ndarray, want: np.ndarray) -> float:
    """max |ours - want| relative to max |want|."""
    return float(np.abs(ours - want).max() / max(np.abs(want).max(), 1e-12))


def test_parity_with_upstream(
    nets: tuple[VideoWarper, CalibrationNet], ref: dict[str, np.ndarray]
) -> None:
    src = frames()
    assert hashlib.sha256(src.tobytes()).hexdigest() == str(ref["source_sha256"])
    desc = descriptor_input()
    assert np.array_equal(desc, ref["desc_input"])
    warper, calibrator = nets
    fx = torch.from_numpy(fx_warp())
    with torch.no_grad():
        o = warper(to_input(src), torch.from_numpy(desc))
        conds = [c.numpy() for c in calibrator(fx, o["descriptor"])]
        fxw = warp_image(fx, o["flow_field"]).numpy()
    assert o["flow_field"].shape == (2, 2, 64, 64) and o["descriptor"].shape == (2, 256, 1)
    assert 1 < ref["flow"].std() < 20  # seeded weights: a real warp of a few pixels
    got = _summaries(conds)
    assert np.array_equal(got["cond_shapes"], ref["cond_shapes"])
    pairs = {
        "flow": (o["flow_field"].numpy(), ref["flow"]),
        "descriptor": (o["descriptor"].numpy(), ref["descriptor"]),
        "warp_crop": (o["warp_image"].numpy()[CROP], ref["warp_crop"]),
        "fx_warped_mean": (fxw.mean((2, 3)), ref["fx_warped_mean"]),
        "fx_warped_patch": (fxw[PATCH], ref["fx_warped_patch"]),
        **{k: (got[k], ref[k]) for k in ("cond_mean", "cond_patch", "cond64_grid")},
    }
    diffs = {k: _scaled_diff(a, b) for k, (a, b) in pairs.items()}
    print("relative max |diff| vs upstream:", {k: f"{v:.1e}" for k, v in diffs.items()})
    assert max(diffs.values()) < 1e-4, diffs


def test_calibrator_accepts_flat_descriptor(nets: tuple[VideoWarper, CalibrationNet]) -> None:
    """``(B,256)`` and upstream's ``(B,256,1)`` descriptors give the same conditions."""
    _, calibrator = nets
    x = torch.from_numpy(fx_warp()[:1, :, :16, :16]).repeat(1, 1, 4, 4)
    z = torch.randn(1, 256, 1, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a, b = calibrator(x, z), calibrator(x, z[..., 0])
    assert len(a) == 8 and all(torch.equal(p, q) for p, q in zip(a, b, strict=True))
    assert [tuple(c.shape) for c in a[::2]] == [(1, 512, r, r) for r in (8, 16, 32, 64)]


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] != "--regenerate":
        sys.exit("usage: python -m tests.test_styleheat_calibration --regenerate UPSTREAM_DIR")
    regenerate(Path(sys.argv[2]))
    print(f"wrote {FIXTURE}")
