"""StyleHEAT end to end (``baselines/styleheat/model.py``): the four seeded files loaded by
:func:`load_model`, the inversion of a real face frame and the 1024² re-enactment of two
PIRenderer descriptors, against upstream's own ``HFGI.inverse`` and ``StyleHEAT.forward``.

The parity fixture ``tests/fixtures/styleheat_parity_reference.npz`` was computed by
OpenTalker/StyleHEAT's code (run outside our tree, see tests/fixtures/README.md).
Regenerate it with ``python -m tests.test_styleheat_parity --regenerate UPSTREAM_DIR``
where the folder holds StyleHEAT's ``models/`` and ``utils/flow_util.py`` at
9cb0c7cac00c79f901c3061850693b110f88c6ea (nothing edited: the child stubs the CUDA compile
and the modules inference never uses).
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from reenactbench.baselines.pirenderer.model import to_input, to_uint8
from reenactbench.baselines.styleheat.model import Inversion, StyleHEAT, load_model

from tests.test_pirenderer import source_image
from tests.test_stylegan2 import seeded_checkpoint
from tests.test_styleheat_calibration import OP_STUBS, descriptor_input, seeded_styleheat_checkpoint
from tests.test_styleheat_inversion import seeded_e4e_checkpoint, seeded_hfgi_checkpoint

FIXTURE = Path(__file__).parent / "fixtures" / "styleheat_parity_reference.npz"
#: 64x64 patch of the 1024² output around the face centre (the 256² frame's centre, x4)
FACE = (slice(None), slice(None), slice(480, 544), slice(480, 544))
STRIDE = (slice(None), slice(None), slice(None, None, 16), slice(None, None, 16))  # 64x64
TOL = 1e-4  #: inversion arrays, relative to each array's largest magnitude
FRAME_TOL = 5e-4  #: the 1024² frames (|value| <= 1), likewise
FEAT = (slice(None), slice(None, None, 8), slice(None, None, 4), slice(None, None, 4))


#: Gains on the output layers of the other modules' unit-scale seeds. Without them the
#: e4e W+ (|w| up to 90) makes the 1024² image's pre-clamp std 30 (99.9% of it clamped),
#: HFGI's condition scales the 64² feature by ~37 and the calibrator's by ~3: float
#: round-off (1e-5 relative) then flips clamped pixels and the comparison says nothing.
#: With them: e4e image std 0.45, output std 0.56, 92% of the output unclamped.
RGB_GAIN = 0.02  # every toRGB conv weight of the generator
HFGI_GAIN = 0.02  # the last conv (``condition_{scale,shift}3.2``) of HFGI's encoder
CALIB_GAIN = 0.3  # the last conv of the calibrator's 64² pair (``condition_*.3.2``)


def seeded_stylegan_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    """``StyleGAN_e4e.pth``'s layout: the bare state dict of rosinality's
    ``Generator(1024, 512, 8, channel_multiplier=2)``, here ``g_ema`` of
    :func:`tests.test_stylegan2.seeded_checkpoint` at that size with the toRGB conv
    weights (``to_rgb1.conv.weight``, ``to_rgbs.*.conv.weight``) x :data:`RGB_GAIN`."""
    cfg = {"size": 1024, "style_dim": 512, "n_mlp": 8, "channel_multiplier": 2}
    state: dict[str, torch.Tensor] = seeded_checkpoint(seed, **cfg)["g_ema"]  # type: ignore[assignment]
    rgb = [k for k in state if k.startswith("to_rgb") and k.endswith(".conv.weight")]
    assert len(rgb) == 9
    return {k: v * RGB_GAIN if k in rgb else v for k, v in state.items()}


def seeded_hfgi(seed: int = 0) -> dict[str, dict[str, torch.Tensor]]:
    """:func:`tests.test_styleheat_inversion.seeded_hfgi_checkpoint` with the encoder's
    ``condition_scale3.2.*`` / ``condition_shift3.2.*`` x :data:`HFGI_GAIN`."""
    ck = seeded_hfgi_checkpoint(seed)
    enc = ck["encoder"]
    keys = [k for k in enc if k.startswith(("condition_scale3.2.", "condition_shift3.2."))]
    assert len(keys) == 4
    ck["encoder"] = {k: v * HFGI_GAIN if k in keys else v for k, v in enc.items()}
    return ck


def seeded_visual(seed: int = 0) -> dict[str, dict[str, torch.Tensor]]:
    """:func:`tests.test_styleheat_calibration.seeded_styleheat_checkpoint` with
    ``calibrator.condition_{scale,shift}.3.2.*`` (the 64² pair the generator applies) x
    :data:`CALIB_GAIN`."""
    sd = seeded_styleheat_checkpoint(seed)["net_G_ema"]
    pre = ("calibrator.condition_scale.3.2.", "calibrator.condition_shift.3.2.")
    keys = [k for k in sd if k.startswith(pre)]
    assert len(keys) == 4
    return {"net_G_ema": {k: v * CALIB_GAIN if k in keys else v for k, v in sd.items()}}


def source() -> np.ndarray:
    """``(1, 3, 256, 256) float32`` in [-1, 1]: test_pirenderer's astronaut face crop."""
    return to_input(source_image()[None]).numpy()


def _feature_summary(name: str, t: np.ndarray) -> dict[str, np.ndarray]:
    """Channel means / stds and a strided grid of a (1, 512, 64, 64) map."""
    return {
        f"{name}_mean": t.mean((2, 3)),
        f"{name}_std": t.std((2, 3)),
        f"{name}_grid": t[FEAT],
    }


def summaries(
    ix: np.ndarray,
    wx: np.ndarray,
    fx: np.ndarray,
    cond: tuple[np.ndarray, np.ndarray],
    fake: np.ndarray,
    fake_u8: np.ndarray,
) -> dict[str, np.ndarray]:
    """What the fixture keeps (the full arrays are 40 MB): the inversion's ``ix`` and
    ``wx`` in full, summaries of ``fx`` and the HFGI condition, and of the two 1024² frames
    (float and ``write2video``'s uint8 ``(N, H, W, 3)``) channel means, the face patch and a
    stride-16 grid."""
    out = {"ix": ix, "wx": wx}
    out.update(_feature_summary("fx", fx))
    out.update(_feature_summary("scale", cond[0]))
    out.update(_feature_summary("shift", cond[1]))
    out["fake_mean"] = fake.mean((2, 3))
    out["fake_face"] = fake[FACE]
    out["fake_grid"] = fake[STRIDE]
    u8 = fake_u8.transpose(0, 3, 1, 2)
    out["u8_face"], out["u8_grid"] = u8[FACE], u8[STRIDE]
    return out


# --- fixture regeneration: runs StyleHEAT's own code from a folder outside this tree ---

_CHILD = (
    "import sys, types\n"
    + OP_STUBS
    + r"""
# imported by styleheat.py / hfgi.py but unused by inference with --inversion_option encode
class Unused(torch.nn.Module):
    def __init__(self, *args, **kwargs):
        super().__init__()
def stub(name, **attrs):
    sys.modules[name] = types.ModuleType(name)
    sys.modules[name].__dict__.update(attrs)
stub("utils.distributed", master_only_print=print)
stub("utils.common", tensor2img=None)
stub("loss")
stub("loss.iterative_inversion_loss", EmbeddingLossBuilder=Unused)  # optimize_inverse
stub("models.hfgi.editing", LatentEditor=Unused)  # attribute editing
from models.styleheat.styleheat import StyleHEAT  # StyleHEAT's code, from the folder
StyleHEAT.load_checkpoint = lambda self, opt, path_dic: None  # paths of the released files
net = StyleHEAT(types.SimpleNamespace(enable_audio=False, mode="inference"), None)
g = net.generator  # HFGI; its load_checkpoint below (.cuda() and the editor dropped)
ck = torch.load(tmp + "/Encoder_e4e.pth", map_location="cpu")
g.e4e_encoder.latent_avg = ck["latent_avg"]
g.e4e_encoder.encoder.load_state_dict(ck["encoder"])
g.e4e_encoder.eval()
ck = torch.load(tmp + "/hfgi.pth", map_location="cpu")
g.hfgi_aligner.load_state_dict(ck["aligner"])
g.hfgi_aligner.eval()
g.hfgi_encoder.load_state_dict(ck["encoder"])
g.hfgi_encoder.eval()
g.stylegan.load_state_dict(torch.load(tmp + "/StyleGAN_e4e.pth", map_location="cpu"))
g.stylegan.eval()
# load_checkpoint's 'inference' branch: strict=False as the file has no generator.* keys
ck = torch.load(tmp + "/StyleHEAT_visual.pt", map_location="cpu")["net_G_ema"]
missing, unexpected = net.load_state_dict(ck, strict=False)
assert not unexpected and missing and all(k.startswith("generator.") for k in missing)
net.eval()
d = np.load(tmp + "/inputs.npz")
x, desc = torch.from_numpy(d["x"]), torch.from_numpy(d["desc"])
bs = len(desc)
with torch.no_grad():
    # inference_util.hfgi_inversion, inversion_option 'encode', batch_size=bs
    ix, wx, fx, ada_condition_x = net.generator.inverse(x)
    inv_data = ix.expand(bs, 3, 256, 256), \
               wx.expand(bs, 18, 512), \
               fx.expand(bs, 512, 64, 64), \
               (ada_condition_x[0].expand(bs, 512, 64, 64),
                ada_condition_x[1].expand(bs, 512, 64, 64))
    # inference.reenactment
    source_image = x.repeat(bs, 1, 1, 1)
    output = net.forward(source_image, desc, inv_data=inv_data, imsize=1024)
fake = output["fake_image"].cpu().clamp_(-1, 1)
# video_util.write2video's conversion
video_numpy = fake[:, :3, :, :].cpu().float().detach().numpy()
video_numpy = (np.transpose(video_numpy, (0, 2, 3, 1)) + 1) / 2.0 * 255.0
video_numpy = video_numpy.astype(np.uint8)
np.savez(tmp + "/out.npz", ix=ix.numpy(), wx=wx.numpy(), fx=fx.numpy(),
         scale=ada_condition_x[0].numpy(), shift=ada_condition_x[1].numpy(),
         fake=fake.numpy(), fake_u8=video_numpy)
"""
)


def write_seeded_files(folder: Path) -> dict[str, Path]:
    """The four seeded files, under upstream's names, as ``load_model``'s ``weights``."""
    files = {
        "styleheat": folder / "StyleHEAT_visual.pt",
        "styleheat-e4e": folder / "Encoder_e4e.pth",
        "styleheat-hfgi": folder / "hfgi.pth",
        "styleheat-stylegan": folder / "StyleGAN_e4e.pth",
    }
    torch.save(seeded_visual(0), files["styleheat"])
    torch.save(seeded_e4e_checkpoint(0), files["styleheat-e4e"])  # about 1 GB
    torch.save(seeded_hfgi(0), files["styleheat-hfgi"])
    torch.save(seeded_stylegan_state_dict(0), files["styleheat-stylegan"])
    return files


def regenerate(upstream: Path, out: Path = FIXTURE) -> None:
    """Run upstream's inversion and re-enactment on the seeded files; write the fixture."""
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        write_seeded_files(t)
        np.savez(t / "inputs.npz", x=source(), desc=descriptor_input())
        subprocess.run([sys.executable, "-c", _CHILD, str(upstream), tmp], check=True, cwd=t)
        with np.load(t / "out.npz") as f:
            r = dict(f)
    ref = summaries(r["ix"], r["wx"], r["fx"], (r["scale"], r["shift"]), r["fake"], r["fake_u8"])
    ref["desc_input"] = descriptor_input()
    ref["source_sha256"] = np.array(hashlib.sha256(source_image().tobytes()).hexdigest())
    np.savez_compressed(out, **ref)
    print(f"wrote {out} ({out.stat().st_size} bytes)")


# ---------------------------------------------------------------------------- tests


@pytest.fixture(scope="module")
def ref() -> dict[str, np.ndarray]:
    with np.load(FIXTURE) as f:
        return dict(f)


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> StyleHEAT:
    """:func:`load_model` on the four seeded files (written once per module)."""
    folder = tmp_path_factory.mktemp("styleheat")
    files = write_seeded_files(folder)
    model = load_model(files)
    for path in files.values():
        path.unlink()  # the e4e file is 1 GB
    return model


def run(net: StyleHEAT, inv: Inversion | None = None) -> tuple[Inversion, torch.Tensor]:
    """:meth:`StyleHEAT.invert` of :func:`source` (unless given) and the two frames."""
    inv = net.invert(torch.from_numpy(source())) if inv is None else inv
    return inv, net(inv, torch.from_numpy(descriptor_input()))


@pytest.fixture(scope="module")
def result(net: StyleHEAT) -> tuple[Inversion, torch.Tensor]:
    return run(net)


def _ours(inv: Inversion, fake: torch.Tensor) -> dict[str, np.ndarray]:
    cond = tuple(c.numpy() for c in inv.condition)
    fx, u8 = inv.fx.numpy(), to_uint8(fake)
    return summaries(inv.ix.numpy(), inv.wx.numpy(), fx, cond, fake.numpy(), u8)


def _scaled_diffs(ours: dict[str, np.ndarray], ref: dict[str, np.ndarray]) -> dict[str, float]:
    """max |ours - ref| relative to max |ref|, per float array of the summary."""
    out = {}
    for k, v in ours.items():
        if not k.startswith("u8_"):
            assert v.shape == ref[k].shape, k
            want = ref[k].astype(np.float64)
            out[k] = float(np.abs(v - want).max() / max(np.abs(want).max(), 1e-12))
    return out


def test_inputs_are_the_fixtures(ref: dict[str, np.ndarray]) -> None:
    assert hashlib.sha256(source_image().tobytes()).hexdigest() == str(ref["source_sha256"])
    assert np.array_equal(descriptor_input(), ref["desc_input"])


def test_parity_with_upstream(
    result: tuple[Inversion, torch.Tensor], ref: dict[str, np.ndarray]
) -> None:
    inv, fake = result
    assert inv.ix.shape == (1, 3, 256, 256) and inv.wx.shape == (1, 18, 512)
    assert inv.fx.shape == (1, 512, 64, 64) and fake.shape == (2, 3, 1024, 1024)
    assert float(fake.abs().max()) <= 1  # clamped, as reenactment's clamp_(-1, 1)
    ours = _ours(inv, fake)
    diffs = _scaled_diffs(ours, ref)
    print("relative max |diff| vs upstream:", {k: f"{v:.1e}" for k, v in diffs.items()})
    # measured (torch 2.14.1 CPU): inversion <= 2.8e-5 (ix), frames <= 1.1e-4 (fake_grid):
    # 17 convs at up to 1024² summed in another order than upfirdn2d_native's
    for k, d in diffs.items():
        assert d < (FRAME_TOL if k.startswith("fake_") else TOL), (k, diffs)
    for k in ("u8_face", "u8_grid"):
        d = ours[k].astype(int) - ref[k].astype(int)
        assert np.abs(d).max() <= 1, k  # truncation of a float within FRAME_TOL of a level
        assert abs(d.mean()) < 0.01, k  # no systematic +0.5 (rounding instead of truncation)
        assert (d != 0).mean() < 0.01, k  # measured 0.2% of the values one level off


def test_fixture_pins_the_refinement(
    net: StyleHEAT,
    result: tuple[Inversion, torch.Tensor],
    ref: dict[str, np.ndarray],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Dropping the calibrator's refining conditions moves the frames far outside the
    tolerance (measured: fake_grid 1.7, fake_mean 0.95 relative)."""
    synthesize = StyleHEAT._synthesize
    monkeypatch.setattr(
        StyleHEAT, "_synthesize", lambda self, wx, hook, refine: synthesize(self, wx, hook, None)
    )
    inv, _ = result
    _, fake = run(net, inv)
    broken = _scaled_diffs(_ours(inv, fake), ref)
    assert broken["fake_grid"] > 0.5 and broken["fake_mean"] > 0.1, broken


def test_fixture_is_not_trivial(ref: dict[str, np.ndarray]) -> None:
    """The seeded networks give a textured, mostly unclamped image (measured 92% inside
    (-1, 1), std 0.51) that differs between the two driving frames (mean |diff| 0.29), and
    an HFGI condition that changes the feature."""
    grid = ref["fake_grid"]
    assert 0.3 < grid.std() and (np.abs(grid) < 0.999).mean() > 0.8
    assert np.abs(grid[0] - grid[1]).mean() > 0.1
    assert 0.2 < ref["ix"].std() and ref["u8_face"].std() > 10
    assert ref["scale_std"].mean() > 0.03 and ref["shift_std"].mean() > 0.03


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] != "--regenerate":
        sys.exit("usage: python -m tests.test_styleheat_parity --regenerate UPSTREAM_DIR")
    regenerate(Path(sys.argv[2]))
