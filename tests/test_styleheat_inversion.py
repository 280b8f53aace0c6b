"""StyleHEAT inversion networks (e4e W+ encoder, HFGI residual aligner / encoder): strict
loading of the released file layouts and parity with upstream's own code on seeded
weights and real face crops.

The parity fixture ``tests/fixtures/styleheat_inversion_reference.npz`` was computed by
OpenTalker/StyleHEAT's ``models/e4e`` and ``models/hfgi`` code (run outside our tree, see
tests/fixtures/README.md). Regenerate it with
``python -m tests.test_styleheat_inversion --regenerate UPSTREAM_CHECKOUT`` where the
checkout holds StyleHEAT's ``models/`` at 9cb0c7cac00c79f901c3061850693b110f88c6ea.
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
from reenactbench.baselines.styleheat.inversion import (
    E4eEncoder,
    Encoder4Editing,
    ResidualAligner,
    ResidualEncoder,
    load_e4e,
    load_hfgi,
    residual_condition,
)

from reenactbench.errors import InputError
from tests.test_fpn import seeded_encoder_state_dict
from tests.test_irse50 import reference_frames

FIXTURE = Path(__file__).parent / "fixtures" / "styleheat_inversion_reference.npz"
PATCH = (slice(None), slice(0, 8), slice(None, None, 8), slice(None, None, 8))  # condition
GRID = (slice(None), slice(None), slice(1, None, 4), slice(1, None, 4))  # aligned residual


def layout(state: dict[str, torch.Tensor]) -> list[str]:
    """``key:shape`` lines (shape comma-separated) in state-dict order."""
    return [f"{k}:{','.join(map(str, v.shape))}" for k, v in state.items()]


def seeded_e4e_checkpoint(seed: int = 0) -> dict[str, torch.Tensor | dict[str, torch.Tensor]]:
    """``Encoder_e4e.pth``'s layout: ``encoder`` is
    :func:`tests.test_fpn.seeded_encoder_state_dict` (pSp's GradualStyleEncoder and e4e's
    Encoder4Editing have the same keys; numpy PCG64 per key, He-normal convs, N(0, 1)
    EqualLinear weights), ``latent_avg`` (18, 512) float32 N(0, 2^2) from PCG64
    ``(seed, crc32("latent_avg"))``, a different value per row."""
    rng = np.random.default_rng([seed, zlib.crc32(b"latent_avg")])
    latent_avg = rng.standard_normal((18, 512), dtype=np.float32) * np.float32(2)
    return {
        "encoder": seeded_encoder_state_dict(seed),
        "latent_avg": torch.from_numpy(latent_avg),
    }


def _seeded_module(net: torch.nn.Module, prefix: str, seed: int) -> dict[str, torch.Tensor]:
    """Every tensor of ``net``'s state dict from PCG64 ``(seed, crc32(prefix + key))``:
    He-normal 3x3 convs, N(0, 1/fan_in) 1x1 shortcut convs, N(0, 1) equalised-lr conv
    weights (scaled at run time), biases and BN shifts / running means N(0, 0.1^2), BN
    weights 1 + N(0, 0.1^2) (x0.3 for the BN ending each residual branch, so the 18 units
    in a row keep activations O(1) instead of doubling them), running variances
    U(0.5, 1.5), PReLU slopes 0.25 + N(0, 0.05^2)."""
    kinds = {name: type(m).__name__ for name, m in net.named_modules()}
    out: dict[str, torch.Tensor] = {}
    for key, ref in net.state_dict().items():
        module, leaf = key.rsplit(".", 1)
        kind, shape = kinds[module], tuple(ref.shape)
        if leaf == "num_batches_tracked":
            out[key] = torch.tensor(0, dtype=torch.long)
            continue
        rng = np.random.default_rng([seed, zlib.crc32((prefix + key).encode())])
        z = rng.standard_normal(shape)
        if leaf == "running_var":
            v = rng.uniform(0.5, 1.5, shape)
        elif kind == "PReLU":
            v = 0.25 + 0.05 * z
        elif kind == "BatchNorm2d" and leaf == "weight":
            v = (1 + 0.1 * z) * (0.3 if key.endswith("res_layer.4.weight") else 1)
        elif len(shape) == 1:  # biases, BN bias, running_mean
            v = 0.1 * z
        elif kind == "EqualConv2d":
            v = z
        else:
            gain = 1.0 if key.endswith("shortcut_layer.0.weight") else 2.0
            v = z * np.sqrt(gain / np.prod(shape[1:]))
        out[key] = torch.from_numpy(np.ascontiguousarray(v, dtype=np.float32))
    return out


def seeded_hfgi_checkpoint(seed: int = 0) -> dict[str, dict[str, torch.Tensor]]:
    """``hfgi.pth``'s layout ``{"aligner", "encoder"}`` (see :func:`_seeded_module`)."""
    return {
        "aligner": _seeded_module(ResidualAligner(), "aligner.", seed),
        "encoder": _seeded_module(ResidualEncoder(), "encoder.", seed),
    }


def parity_inputs() -> tuple[np.ndarray, np.ndarray]:
    """``x``, ``ix``: ``(2, 3, 256, 256) float32`` in [-1, 1]: astronaut crops 0, 1 and
    crops 2, 3 (another crop, crop 0 mirrored) of :func:`reference_frames`. The test feeds
    e4e ``x`` and the HFGI networks ``res = x - ix`` and ``ix``."""
    f = reference_frames().transpose(0, 3, 1, 2).astype(np.float32) / np.float32(127.5) - 1
    return np.ascontiguousarray(f[:2]), np.ascontiguousarray(f[2:])


def _summary(aligned: torch.Tensor, cond: tuple[torch.Tensor, torch.Tensor]) -> dict:
    """The fixture's view of the HFGI outputs (the full maps are 33 MB)."""
    out = {"aligned_grid": aligned[GRID].numpy(), "aligned_mean": aligned.mean((2, 3)).numpy()}
    for name, t in zip(("scale", "shift"), cond, strict=True):
        out[f"{name}_mean"] = t.mean((2, 3)).numpy()
        out[f"{name}_std"] = t.std((2, 3)).numpy()
        out[f"{name}_patch"] = t[PATCH].numpy()
    return out


# --- fixture regeneration: runs StyleHEAT's own code from a checkout outside this tree ---

_UPSTREAM = r"""
import sys, types, numpy as np, torch
import torch.nn.functional as F
sys.path.insert(0, sys.argv[1])
# models/stylegan2/op compiles CUDA at import and model.py imports utils.flow_util (the
# generator's warping); the encoders use neither: stand-ins, no file of the checkout edited
op = types.ModuleType("models.stylegan2.op")
def fused_leaky_relu(x, bias, negative_slope=0.2, scale=2 ** 0.5):
    raise NotImplementedError("not used by the encoders")
def upfirdn2d(*args, **kwargs):
    raise NotImplementedError("not used by the encoders")
op.fused_leaky_relu, op.FusedLeakyReLU, op.upfirdn2d = fused_leaky_relu, torch.nn.Module, upfirdn2d
sys.modules["models.stylegan2.op"] = op
utils = types.ModuleType("utils")
utils.flow_util = types.ModuleType("utils.flow_util")
sys.modules["utils"], sys.modules["utils.flow_util"] = utils, utils.flow_util
from models.e4e.e4e import E4eEncoder  # StyleHEAT's code, from the checkout
from models.hfgi.backbone import ResidualAligner, ResidualEncoder
# HFGI.load_checkpoint's e4e / hfgi part (its .cuda() dropped)
e4e = E4eEncoder(latent_avg=None)
ckpt = torch.load(sys.argv[2], map_location="cpu")
e4e.latent_avg = ckpt["latent_avg"]
e4e.encoder.load_state_dict(ckpt["encoder"])
e4e.eval()
aligner, encoder = ResidualAligner(), ResidualEncoder()
ckpt = torch.load(sys.argv[3], map_location="cpu")
aligner.load_state_dict(ckpt["aligner"])
aligner.eval()
encoder.load_state_dict(ckpt["encoder"])
encoder.eval()
inp = np.load(sys.argv[4])
x, ix = torch.from_numpy(inp["x"]), torch.from_numpy(inp["ix"])
with torch.no_grad():
    w = e4e(x)
    res = x - ix
    aligned = aligner(torch.cat((res, ix), 1))  # HFGI.decode
    cond = encoder(aligned)
lay = lambda sd: np.array([k + ":" + ",".join(map(str, v.shape)) for k, v in sd.items()])
np.savez(sys.argv[5], w=w.numpy(), aligned=aligned.numpy(), scale=cond[0].numpy(),
         shift=cond[1].numpy(), layout_e4e=lay(e4e.encoder.state_dict()),
         layout_aligner=lay(aligner.state_dict()), layout_encoder=lay(encoder.state_dict()))
"""


def regenerate(checkout: Path) -> None:
    """Write the fixture from a StyleHEAT checkout (a folder holding ``models/``)."""
    x, ix = parity_inputs()
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        torch.save(seeded_e4e_checkpoint(0), t / "e4e.pth")
        torch.save(seeded_hfgi_checkpoint(0), t / "hfgi.pth")
        np.savez(t / "inputs.npz", x=x, ix=ix)
        (t / "run.py").write_text(_UPSTREAM)
        cmd = [sys.executable, str(t / "run.py"), str(checkout), str(t / "e4e.pth")]
        cmd += [str(t / "hfgi.pth"), str(t / "inputs.npz"), str(t / "out.npz")]
        subprocess.run(cmd, check=True, cwd=t)
        with np.load(t / "out.npz") as f:
            r = dict(f)
    out = {k: r[k] for k in ("layout_e4e", "layout_aligner", "layout_encoder", "w")}
    cond = (torch.from_numpy(r["scale"]), torch.from_numpy(r["shift"]))
    out.update(_summary(torch.from_numpy(r["aligned"]), cond))
    out["frames_sha256"] = np.array(hashlib.sha256(reference_frames().tobytes()).hexdigest())
    FIXTURE.parent.mkdir(exist_ok=True)
    np.savez_compressed(FIXTURE, **out)
    print(f"wrote {FIXTURE} ({FIXTURE.stat().st_size} bytes)")


# ---------------------------------------------------------------------------- tests


@pytest.fixture(scope="module")
def ref() -> dict[str, np.ndarray]:
    with np.load(FIXTURE) as f:
        return dict(f)


@pytest.fixture(scope="module")
def e4e_ckpt() -> dict:
    return seeded_e4e_checkpoint(0)  # about 1 GB, made once per module


@pytest.fixture(scope="module")
def e4e_file(tmp_path_factory: pytest.TempPathFactory, e4e_ckpt: dict) -> Path:
    path = tmp_path_factory.mktemp("styleheat") / "Encoder_e4e.pth"
    torch.save(e4e_ckpt, path)
    return path


@pytest.fixture(scope="module")
def hfgi_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("styleheat") / "hfgi.pth"
    torch.save(seeded_hfgi_checkpoint(0), path)
    return path


def _close(got: np.ndarray, want: np.ndarray, name: str) -> float:
    """Assert ``got`` ~ ``want`` within 1e-4 relative to ``want``'s largest magnitude;
    returns the max |diff|."""
    diff = float(np.abs(got - want).max())
    assert diff <= 1e-4 * max(1.0, float(np.abs(want).max())), f"{name}: max |diff| {diff}"
    return diff


def test_layouts_equal_upstream(ref: dict[str, np.ndarray]) -> None:
    with torch.device("meta"):
        e4e = Encoder4Editing(1024)
    assert layout(e4e.state_dict()) == ref["layout_e4e"].tolist()  # keys, shapes, order
    assert layout(ResidualAligner().state_dict()) == ref["layout_aligner"].tolist()
    assert layout(ResidualEncoder().state_dict()) == ref["layout_encoder"].tolist()
    assert len(ref["layout_e4e"]) == 621
    with torch.device("meta"):  # latent_avg stays out of the state dict, as upstream
        assert all(k.startswith("encoder.") for k in E4eEncoder().state_dict())


def test_e4e_parity_with_upstream(
    e4e_file: Path, e4e_ckpt: dict, ref: dict[str, np.ndarray]
) -> None:
    assert hashlib.sha256(reference_frames().tobytes()).hexdigest() == str(ref["frames_sha256"])
    net = load_e4e(e4e_file)
    assert not net.training and not any(p.requires_grad for p in net.parameters())
    loaded = net.encoder.state_dict()  # strict: every tensor is the file's
    assert all(torch.equal(v, e4e_ckpt["encoder"][k]) for k, v in loaded.items())
    assert torch.equal(net.latent_avg, e4e_ckpt["latent_avg"])
    x, _ = parity_inputs()
    with torch.inference_mode():
        w = net(torch.from_numpy(x)).numpy()
    assert w.shape == (2, 18, 512) and w.dtype == np.float32
    _close(w, ref["w"], "w")  # measured max |diff| 0 (|w| up to 90), torch 2.14.1 CPU
    # not trivial: frames differ, rows differ, and leaving latent_avg out would fail above
    assert np.abs(w[0] - w[1]).mean() > 1e-2
    assert np.abs(w[:, 1:] - w[:, :1]).mean() > 1e-1
    assert float(net.latent_avg.abs().max()) > 1e-2 * float(np.abs(ref["w"]).max())  # 100x tol


def test_latent_avg_added_like_upstream() -> None:
    """``codes + latent_avg.repeat(B, 1, 1)``: (18, 512) per row, (512,) / (1, 512) to all."""
    codes = torch.arange(2 * 18 * 512, dtype=torch.float32).reshape(2, 18, 512) / 1e4

    class Codes(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return codes

    with torch.device("meta"):
        net = E4eEncoder()
    net.encoder = Codes()  # type: ignore[assignment]
    net.latent_avg = torch.zeros(18, 512)
    x = torch.zeros(2, 3, 256, 256)
    per_row = torch.randn(18, 512, generator=torch.Generator().manual_seed(0))
    for avg in (per_row, per_row[0], per_row[:1]):
        net.set_latent_avg(avg)
        assert torch.equal(net(x), codes + avg.repeat(2, 1, 1))
    with pytest.raises(ValueError, match=r"\(14, 512\)"):
        net.set_latent_avg(torch.zeros(14, 512))
    with pytest.raises(ValueError, match="256"):
        net(torch.zeros(2, 3, 128, 128))


def test_hfgi_parity_with_upstream(hfgi_file: Path, ref: dict[str, np.ndarray]) -> None:
    aligner, encoder = load_hfgi(hfgi_file)
    ck = seeded_hfgi_checkpoint(0)
    for net, part in ((aligner, "aligner"), (encoder, "encoder")):
        assert not net.training
        for k, v in net.state_dict().items():
            assert torch.equal(v, ck[part][k]), k
    x, ix = (torch.from_numpy(a) for a in parity_inputs())
    with torch.inference_mode():
        aligned = aligner(torch.cat((x - ix, ix), 1))
        cond = encoder(aligned)
        again = residual_condition(aligner, encoder, x - ix, ix)
    assert aligned.shape == (2, 3, 256, 256)
    assert [tuple(c.shape) for c in cond] == [(2, 512, 64, 64)] * 2
    assert all(torch.equal(a, b) for a, b in zip(cond, again, strict=True))
    # measured max |diff| 0 for every entry, torch 2.14.1 CPU
    for name, got in _summary(aligned, cond).items():
        _close(got, ref[name], name)
    assert float(ref["scale_std"].mean()) > 0.1 and float(ref["aligned_grid"].std()) > 0.1


@pytest.mark.parametrize("change", ["missing", "extra", "shape", "entry", "toplevel"])
def test_bad_hfgi_file_names_it(tmp_path: Path, change: str) -> None:
    ck = seeded_hfgi_checkpoint(1)
    if change == "missing":
        del ck["encoder"]["condition_shift3.2.bias"]
    elif change == "extra":
        ck["aligner"]["conv_layer5.0.weight"] = torch.zeros(1)
    elif change == "shape":
        ck["aligner"]["conv_layer1.0.weight"] = torch.zeros(16, 3, 3, 3)
    elif change == "entry":
        del ck["aligner"]
    path = tmp_path / f"{change}.pth"
    torch.save(ck if change != "toplevel" else [ck["aligner"]], path)
    with pytest.raises(InputError, match=str(path)) as e:
        load_hfgi(path)
    msg = str(e.value)
    assert "\n" not in msg and "hfgi.pth" in msg
    want = {
        "missing": "missing keys condition_shift3.2.bias",
        "extra": "unexpected keys conv_layer5.0.weight",
        "shape": "shape mismatch conv_layer1.0.weight (16, 3, 3, 3) != (16, 6, 3, 3)",
        "entry": "no 'aligner' entry",
        "toplevel": "not a dict",
    }
    assert want[change] in msg


@pytest.mark.parametrize("change", ["missing", "extra", "shape", "latent_avg", "toplevel"])
def test_bad_e4e_file_names_it(tmp_path: Path, change: str) -> None:
    """Small files: a state dict of the right keys would be 1 GB; the checks are the same."""
    x = torch.zeros(1)
    enc = {
        "missing": {"input_layer.0.weight": torch.zeros(64, 3, 3, 3)},
        "extra": {"output_layer.3.weight": x},
        "shape": {"input_layer.0.weight": torch.zeros(64, 6, 3, 3)},
    }.get(change, {})
    ck: object = {"encoder": enc, "latent_avg": torch.zeros(18, 512)}
    if change == "latent_avg":
        ck = {"encoder": enc}
    elif change == "toplevel":
        ck = torch.zeros(3)
    path = tmp_path / f"{change}.pth"
    torch.save(ck, path)
    with pytest.raises(InputError, match=str(path)) as e:
        load_e4e(path)
    msg = str(e.value)
    assert "\n" not in msg and "Encoder_e4e.pth" in msg
    want = {
        "missing": "missing keys body.0.res_layer.0.bias",
        "extra": "unexpected keys output_layer.3.weight",
        "shape": "shape mismatch input_layer.0.weight (64, 6, 3, 3) != (64, 3, 3, 3)",
        "latent_avg": "no 'latent_avg' entry",
        "toplevel": "not a dict",
    }
    assert want[change] in msg


@pytest.mark.parametrize("bad", [torch.zeros(14, 512), torch.zeros(18, 512, dtype=torch.long)])
def test_e4e_bad_latent_avg_names_file(tmp_path: Path, bad: torch.Tensor) -> None:
    """``latent_avg`` is checked before the (large) encoder state dict."""
    path = tmp_path / "Encoder_e4e.pth"
    torch.save({"encoder": {}, "latent_avg": bad}, path)
    with pytest.raises(InputError, match=rf"{path}: .*latent_avg must be float .*"):
        load_e4e(path)


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] != "--regenerate":
        sys.exit("usage: python -m tests.test_styleheat_inversion --regenerate UPSTREAM_CHECKOUT")
    regenerate(Path(sys.argv[2]))
