"""pSp GradualStyleEncoder / feature pyramid: layout, parity with pSp's code, trunk init.

The parity fixture ``tests/fixtures/fpn_psp_reference.npz`` was computed by pSp's upstream
``GradualStyleEncoder`` (run outside our tree, see tests/fixtures/README.md) on the seeded
state dict of :func:`seeded_encoder_state_dict` and the first two frames of
:func:`tests.test_irse50.reference_frames`.
Regenerate it with ``python -m tests.test_fpn --regenerate PSP_CHECKOUT``.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch

from reenactbench.errors import InputError
from reenactbench.nn.fpn import (
    FeaturePyramid,
    GradualStyleBlock,
    GradualStyleEncoder,
    load_backbone_into,
)
from tests.test_irse50 import reference_frames, seeded_state_dict

FIXTURE = Path(__file__).parent / "fixtures" / "fpn_psp_reference.npz"


def encoder_layout(n_styles: int = 18) -> dict[str, tuple[int, ...]]:
    """Key -> shape of ``GradualStyleEncoder(50, "ir_se", n_styles)`` (built on meta)."""
    with torch.device("meta"):
        net = GradualStyleEncoder(50, "ir_se", n_styles=n_styles)
    return {k: tuple(v.shape) for k, v in net.state_dict().items()}


def seeded_encoder_state_dict(seed: int = 0, n_styles: int = 18) -> dict[str, torch.Tensor]:
    """A deterministic GradualStyleEncoder state dict in pSp's layout and key order.

    ``input_layer.*`` / ``body.*`` are :func:`tests.test_irse50.seeded_state_dict` (the same
    tensors, so the trunk init can be checked against it). Every other tensor comes from
    numpy's PCG64 seeded with ``(seed, crc32(key))``, independent of key order and of
    ``n_styles`` (head ``i`` gets the same values in every config): He-normal convs
    (LeakyReLU gain), N(0, 0.1) biases, N(0, 1) EqualLinear weights (scaled inside).
    """
    trunk = seeded_state_dict(seed)
    out: dict[str, torch.Tensor] = {}
    for key, shape in encoder_layout(n_styles).items():
        if key in trunk:
            out[key] = trunk[key]
            continue
        rng = np.random.default_rng([seed, zlib.crc32(key.encode())])
        v = rng.standard_normal(shape, dtype=np.float32)
        if key.endswith("bias"):
            v *= np.float32(0.1)
        elif not key.endswith("linear.weight"):  # conv weight
            v *= np.float32(np.sqrt(2.0 / np.prod(shape[1:])))
        out[key] = torch.from_numpy(v)
    return out


def _loaded(net_on_meta: torch.nn.Module, state: dict[str, torch.Tensor]) -> torch.nn.Module:
    """A network built under ``torch.device("meta")`` (no init cost), given ``state``'s
    tensors with a strict load, in eval mode."""
    net_on_meta.load_state_dict(state, strict=True, assign=True)
    return net_on_meta.eval()


def _input(n: int = 2) -> torch.Tensor:
    frames = reference_frames()[:n]  # (n, 256, 256, 3) uint8 astronaut crops
    return torch.from_numpy(frames).permute(0, 3, 1, 2).contiguous().float() / 127.5 - 1.0


def _stats(maps: tuple[torch.Tensor, ...]) -> dict[str, np.ndarray]:
    out = {}
    for name, p in zip(("coarse", "medium", "fine"), maps, strict=True):
        out[f"{name}_mean"] = p.mean(dim=(2, 3)).numpy()
        out[f"{name}_std"] = p.std(dim=(2, 3)).numpy()
    out["fine_patch"] = maps[2][:, :4, :8, :8].numpy()
    return out


@pytest.fixture(scope="module")
def seeded() -> dict[str, torch.Tensor]:
    """:func:`seeded_encoder_state_dict` with 18 heads (about 1 GB, shared in this module)."""
    return seeded_encoder_state_dict()


@pytest.fixture(scope="module")
def reference() -> dict[str, np.ndarray]:
    with np.load(FIXTURE) as f:
        return dict(f)


def test_layout_matches_psp(reference: dict[str, np.ndarray]) -> None:
    theirs = []
    for line in reference["layout"]:
        key, shape = str(line).split(":")
        theirs.append((key, tuple(int(s) for s in shape.split(",") if s)))
    assert list(encoder_layout(18).items()) == theirs  # same keys, shapes and order
    assert len(theirs) == 385 + 3 * 10 + 4 * 12 + 11 * 14 + 4
    with torch.device("meta"):
        pyramid_keys = set(FeaturePyramid().state_dict())
    assert pyramid_keys == {k for k, _ in theirs if not k.startswith("styles.")}


def test_codes_and_pyramid_match_psp(
    reference: dict[str, np.ndarray], seeded: dict[str, torch.Tensor]
) -> None:
    with torch.device("meta"):
        net = GradualStyleEncoder(50, "ir_se", n_styles=18)
    net = _loaded(net, seeded)  # strict: pSp's layout, as pSp itself loaded it
    with torch.inference_mode():
        x = _input()
        maps = net.pyramid(x)
        codes = net.styles_from(maps).numpy()
        np.testing.assert_array_equal(net(x).numpy(), codes)
    assert [tuple(p.shape) for p in maps] == [(2, 512, 16, 16), (2, 512, 32, 32), (2, 512, 64, 64)]
    assert codes.shape == (2, 18, 512) and codes.dtype == np.float32
    np.testing.assert_allclose(codes, reference["codes"], atol=1e-5, rtol=1e-5)
    for name, got in _stats(maps).items():
        np.testing.assert_allclose(got, reference[name], atol=1e-5, rtol=1e-5, err_msg=name)
    # not trivial: codes differ between heads and between the two crops
    assert np.abs(codes[0] - codes[1]).mean() > 1e-2
    assert np.abs(codes[:, 1:] - codes[:, :1]).mean() > 1e-1


def test_pyramid_alone_matches_psp(
    reference: dict[str, np.ndarray], seeded: dict[str, torch.Tensor]
) -> None:
    with torch.device("meta"):
        net = FeaturePyramid()
    net = _loaded(net, {k: v for k, v in seeded.items() if not k.startswith("styles.")})
    with torch.inference_mode():
        stats = _stats(net(_input()))
    for name, got in stats.items():
        np.testing.assert_allclose(got, reference[name], atol=1e-5, rtol=1e-5, err_msg=name)


def test_head_assignment_is_configurable(
    reference: dict[str, np.ndarray], seeded: dict[str, torch.Tensor]
) -> None:
    # fewer heads, same split: the first 8 codes of pSp's 18 (per-key seeds)
    with torch.device("meta"):
        net = GradualStyleEncoder(n_styles=8)
    own = net.state_dict()
    assert len(own) == 385 + 3 * 10 + 4 * 12 + 1 * 14 + 4
    net = _loaded(net, {k: v for k, v in seeded.items() if k in own})
    with torch.inference_mode():
        codes = net(_input()).numpy()
    np.testing.assert_allclose(codes, reference["codes"][:, :8], atol=1e-5, rtol=1e-5)
    # another split: heads read the level their index says
    net = GradualStyleEncoder(n_styles=5, coarse_ind=1, middle_ind=4, input_size=128)
    assert [h.spatial for h in net.styles] == [8, 16, 16, 16, 32]
    assert [len(h.convs) // 2 for h in net.styles] == [3, 4, 4, 4, 5]
    with torch.inference_mode():
        assert tuple(net.eval()(torch.zeros(1, 3, 128, 128)).shape) == (1, 5, 512)


def test_pyramid_shapes_at_other_sizes() -> None:
    net = FeaturePyramid().eval()
    with torch.inference_mode():
        maps = net(torch.zeros(1, 3, 96, 160))
    assert [tuple(p.shape) for p in maps] == [(1, 512, 6, 10), (1, 512, 12, 20), (1, 512, 24, 40)]
    assert net.taps == (6, 20, 23)


def test_bad_inputs() -> None:
    with pytest.raises(ValueError, match="% 16"):
        FeaturePyramid()(torch.zeros(1, 3, 100, 100))
    with pytest.raises(ValueError, match="input_size=256"):
        GradualStyleEncoder(n_styles=1, coarse_ind=1, middle_ind=1)(torch.zeros(1, 3, 128, 128))
    with pytest.raises(ValueError, match="coarse_ind"):
        GradualStyleEncoder(n_styles=4, coarse_ind=3, middle_ind=7)
    with pytest.raises(ValueError, match="power of two"):
        GradualStyleBlock(512, 512, 12)


def test_reset_parameters_is_seeded_and_spares_the_trunk() -> None:
    a, b = (GradualStyleEncoder(n_styles=3, coarse_ind=1, middle_ind=2) for _ in range(2))
    trunk = a.state_dict()["input_layer.0.weight"].clone()
    assert float(a.state_dict()["styles.0.linear.weight"].abs().sum()) == 0.0  # until reset
    a.reset_parameters(torch.Generator().manual_seed(1))
    b.reset_parameters(torch.Generator().manual_seed(1))
    sa, sb = a.state_dict(), b.state_dict()
    for k in sa:
        if k.startswith(("styles.", "latlayer")):
            torch.testing.assert_close(sa[k], sb[k], atol=0, rtol=0, msg=k)
    torch.testing.assert_close(sa["input_layer.0.weight"], trunk, atol=0, rtol=0)
    assert abs(float(sa["styles.2.linear.weight"].std()) - 1.0) < 0.01
    assert float(sa["styles.2.linear.bias"].abs().sum()) == 0.0
    bound = 1 / np.sqrt(512 * 9)  # torch's default conv init: U(+-1/sqrt(fan_in))
    assert bound * 0.99 < float(sa["styles.2.convs.0.weight"].abs().max()) <= bound + 1e-7


def test_backbone_init_sets_exactly_the_trunk() -> None:
    net = GradualStyleEncoder(n_styles=8).reset_parameters(torch.Generator().manual_seed(0))
    before = {k: v.clone() for k, v in net.state_dict().items()}
    irse50 = seeded_state_dict()
    loaded = load_backbone_into(net, irse50)
    after = net.state_dict()
    trunk = [k for k in after if k.startswith(("input_layer.", "body."))]
    assert loaded == trunk and len(trunk) == 385  # IR-SE50's 397 keys less output_layer's 12
    for k, v in after.items():
        if k in trunk:
            torch.testing.assert_close(v, irse50[k], atol=0, rtol=0)
        else:  # styles.* and latlayer*: untouched
            torch.testing.assert_close(v, before[k], atol=0, rtol=0, msg=k)
    assert not any(k.startswith("output_layer.") for k in after)


def test_backbone_init_without_num_batches_tracked_or_input_layer() -> None:
    net = FeaturePyramid()
    old = {k: v for k, v in seeded_state_dict().items() if "num_batches_tracked" not in k}
    load_backbone_into(net, old)
    assert int(net.state_dict()["body.0.res_layer.0.num_batches_tracked"]) == 0
    net = FeaturePyramid(input_nc=1)
    first = net.input_layer[0].weight.clone()
    loaded = load_backbone_into(net, seeded_state_dict(), input_layer=False)
    assert all(k.startswith("body.") for k in loaded)
    torch.testing.assert_close(net.input_layer[0].weight, first, atol=0, rtol=0)


@pytest.mark.parametrize("change", ["missing", "extra", "shape", "prefix"])
def test_backbone_init_errors_name_the_file(change: str) -> None:
    state = seeded_state_dict()
    if change == "missing":
        del state["body.21.shortcut_layer.0.weight"]
    elif change == "extra":
        state["body.4.shortcut_layer.0.weight"] = torch.zeros(128, 128, 1, 1)
    elif change == "shape":
        state["input_layer.0.weight"] = torch.zeros(64, 1, 3, 3)
    else:
        state = {"module." + k: v for k, v in state.items()}
    net = FeaturePyramid()
    before = net.input_layer[0].weight.clone()
    with pytest.raises(InputError) as e:
        load_backbone_into(net, state, source="/w/model_ir_se50.pth")
    msg = str(e.value)
    assert msg.startswith("/w/model_ir_se50.pth: ")
    word = {"missing": "missing keys", "extra": "unexpected keys", "shape": "shape mismatch"}
    assert word.get(change, "missing keys") in msg
    if change in ("missing", "extra"):
        assert ("body.21" if change == "missing" else "body.4") in msg
    torch.testing.assert_close(net.input_layer[0].weight, before, atol=0, rtol=0)  # no change


# --- fixture regeneration: runs pSp's own code from a checkout outside this tree -------

_UPSTREAM = r"""
import sys, types, numpy as np, torch
import torch.nn.functional as F
sys.path.insert(0, sys.argv[1])
# pSp's models/stylegan2/op compiles CUDA at import; the encoder only needs EqualLinear
# without activation, so stand in a pure-PyTorch op module (no file of the checkout edited)
op = types.ModuleType("models.stylegan2.op")
def fused_leaky_relu(x, bias, negative_slope=0.2, scale=2 ** 0.5):
    return F.leaky_relu(x + bias.view(1, -1, *[1] * (x.ndim - 2)), negative_slope) * scale
class FusedLeakyReLU(torch.nn.Module):
    def __init__(self, channel, negative_slope=0.2, scale=2 ** 0.5):
        super().__init__()
        self.bias = torch.nn.Parameter(torch.zeros(channel))
        self.negative_slope, self.scale = negative_slope, scale
    def forward(self, x):
        return fused_leaky_relu(x, self.bias, self.negative_slope, self.scale)
def upfirdn2d(*args, **kwargs):
    raise NotImplementedError("not used by the encoder")
op.fused_leaky_relu, op.FusedLeakyReLU, op.upfirdn2d = fused_leaky_relu, FusedLeakyReLU, upfirdn2d
sys.modules["models.stylegan2.op"] = op
from models.encoders.psp_encoders import GradualStyleEncoder  # pSp's code, from the checkout
opts = types.SimpleNamespace(input_nc=3, n_styles=18)  # pSp at 1024^2 output
net = GradualStyleEncoder(50, "ir_se", opts)
net.load_state_dict(torch.load(sys.argv[2], weights_only=True), strict=True)
net.eval()
frames = np.load(sys.argv[3])
x = torch.from_numpy(frames).permute(0, 3, 1, 2).contiguous().float() / 127.5 - 1.0
with torch.no_grad():
    codes = net(x)
    h = net.input_layer(x)  # the pyramid, with upstream's modules, as in its forward
    for i, unit in enumerate(net.body._modules.values()):
        h = unit(h)
        if i == 6:
            c1 = h
        elif i == 20:
            c2 = h
        elif i == 23:
            c3 = h
    p2 = net._upsample_add(c3, net.latlayer1(c2))
    p1 = net._upsample_add(p2, net.latlayer2(c1))
out = {"codes": codes.numpy()}
for name, p in (("coarse", c3), ("medium", p2), ("fine", p1)):
    out[name + "_mean"] = p.mean(dim=(2, 3)).numpy()
    out[name + "_std"] = p.std(dim=(2, 3)).numpy()
out["fine_patch"] = p1[:, :4, :8, :8].numpy()
layout = [k + ":" + ",".join(map(str, v.shape)) for k, v in net.state_dict().items()]
np.savez_compressed(sys.argv[4], layout=np.array(layout), **out)
"""


def regenerate(checkout: Path) -> None:
    """Write the fixture from a pixel2style2pixel checkout (a folder holding ``models/``)."""
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        torch.save(seeded_encoder_state_dict(), t / "w.pt")
        np.save(t / "frames.npy", reference_frames()[:2])
        (t / "run.py").write_text(_UPSTREAM)
        FIXTURE.parent.mkdir(exist_ok=True)
        cmd = [sys.executable, str(t / "run.py"), str(checkout), str(t / "w.pt")]
        subprocess.run([*cmd, str(t / "frames.npy"), str(FIXTURE)], check=True, cwd=t)
    print(f"wrote {FIXTURE} ({FIXTURE.stat().st_size} bytes)")


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] != "--regenerate":
        sys.exit("usage: python -m tests.test_fpn --regenerate PSP_CHECKOUT")
    regenerate(Path(sys.argv[2]))
