"""NVIDIA StyleGAN2 pickle -> rosinality checkpoint converter (reenactbench.nn.convert_nvidia).

Seeded NVIDIA ``G_ema`` state dicts are built from the parameter names and shapes of
stylegan2-ada-pytorch's ``training/networks.py`` (:func:`nvidia_state_dict`), written as a
persistence-style network pickle (fake ``torch_utils.persistence`` / ``dnnlib.util`` modules
exist in ``sys.modules`` only while pickling) and as a plain ``{"G_ema": state_dict}`` file.

``tests/fixtures/nvidia_sg2_reference.npz`` was made by running NVIDIA's and rosinality's
own code on :func:`nvidia_state_dict` (see tests/fixtures/README.md); regenerate it with
``python tests/test_convert_nvidia.py --regenerate ADA_CHECKOUT ROSINALITY_CHECKOUT``.
"""

from __future__ import annotations

import importlib
import pickle
import subprocess
import sys
import tempfile
import types
import zlib
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch

from reenactbench.errors import InputError
from reenactbench.nn.convert_nvidia import (
    RESAMPLE_FILTER,
    convert_nvidia_pickle,
    convert_nvidia_state_dict,
    infer_rosinality_config,
    read_nvidia_generator,
    rosinality_generator_shapes,
)

FIXTURE = Path(__file__).parent / "fixtures" / "nvidia_sg2_reference.npz"
SIZE, W_DIM, N_MLP = 16, 32, 2  # the seeded test network: 16x16, 512 channels (rosinality's)


def nvidia_state_dict(
    size: int = SIZE,
    w_dim: int = W_DIM,
    n_mlp: int = N_MLP,
    channel_base: int = 32768,
    seed: int | None = 0,
) -> dict[str, torch.Tensor]:
    """An NVIDIA ``G_ema.state_dict()`` (StyleGAN2, architecture 'skip', z_dim = w_dim).

    Names/shapes from stylegan2-ada-pytorch ``training/networks.py``; channels
    ``min(channel_base // res, 512)``. Values: numpy PCG64 seeded with ``(seed, crc32(key))``
    (weights N(0,1), biases/affine biases/noise strengths/w_avg non-trivial so that every
    rule is visible); ``seed=None`` gives zeros (shape-only tests).
    """
    ch = {2**i: min(channel_base // 2**i, 512) for i in range(2, int(np.log2(size)) + 1)}
    shapes: dict[str, tuple[int, ...]] = {}
    for i in range(n_mlp):
        shapes[f"mapping.fc{i}.weight"] = (w_dim, w_dim)
        shapes[f"mapping.fc{i}.bias"] = (w_dim,)
    shapes["mapping.w_avg"] = (w_dim,)

    def layer(p: str, cin: int, cout: int, res: int) -> None:
        shapes[f"{p}.weight"] = (cout, cin, 3, 3)
        shapes[f"{p}.noise_strength"] = ()
        shapes[f"{p}.bias"] = (cout,)
        shapes[f"{p}.resample_filter"] = (4, 4)
        shapes[f"{p}.noise_const"] = (res, res)
        shapes[f"{p}.affine.weight"] = (cin, w_dim)
        shapes[f"{p}.affine.bias"] = (cin,)

    def torgb(p: str, cin: int) -> None:
        shapes[f"{p}.weight"] = (3, cin, 1, 1)
        shapes[f"{p}.bias"] = (3,)
        shapes[f"{p}.affine.weight"] = (cin, w_dim)
        shapes[f"{p}.affine.bias"] = (cin,)

    for res in ch:
        b = f"synthesis.b{res}"
        shapes[f"{b}.resample_filter"] = (4, 4)
        if res == 4:
            shapes[f"{b}.const"] = (ch[4], 4, 4)
        else:
            layer(f"{b}.conv0", ch[res // 2], ch[res], res)
        layer(f"{b}.conv1", ch[res], ch[res], res)
        torgb(f"{b}.torgb", ch[res])
    out: dict[str, torch.Tensor] = {}
    for key, shape in shapes.items():
        if key.endswith("resample_filter"):
            out[key] = RESAMPLE_FILTER.clone()
            continue
        if seed is None:
            out[key] = torch.zeros(shape)
            continue
        rng = np.random.default_rng([seed, zlib.crc32(key.encode())])
        if key.endswith("affine.bias"):
            v = 1.0 + rng.normal(0.0, 0.1, shape)  # NVIDIA initialises these to 1
        elif key.endswith(("bias", "noise_strength", "w_avg")):
            v = rng.normal(0.0, 0.1, shape)
        else:
            v = rng.normal(0.0, 1.0, shape)
        out[key] = torch.from_numpy(np.asarray(v, dtype=np.float32))
    return out


# ----------------------------------------------------------------- fake persistence pickle


def _fake_modules() -> dict[str, types.ModuleType]:
    """Stand-ins for NVIDIA's modules, put in sys.modules only while pickling."""
    persistence = types.ModuleType("torch_utils.persistence")
    util = types.ModuleType("dnnlib.util")

    def _reconstruct_persistent_obj(meta):  # never called: the converter has its own
        raise AssertionError("NVIDIA's reconstructor must not run")

    _reconstruct_persistent_obj.__module__ = "torch_utils.persistence"
    _reconstruct_persistent_obj.__qualname__ = "_reconstruct_persistent_obj"
    persistence._reconstruct_persistent_obj = _reconstruct_persistent_obj

    class EasyDict(dict):
        pass

    EasyDict.__module__, EasyDict.__qualname__ = "dnnlib.util", "EasyDict"
    util.EasyDict = EasyDict
    return {
        "torch_utils": types.ModuleType("torch_utils"),
        "torch_utils.persistence": persistence,
        "dnnlib": types.ModuleType("dnnlib"),
        "dnnlib.util": util,
    }


class _FakeNet:
    """Pickles like a ``@persistence.persistent_class`` module: reconstructor + meta."""

    def __init__(self, class_name: str, reconstruct, easydict) -> None:
        self.class_name, self.reconstruct, self.easydict = class_name, reconstruct, easydict
        self.params: OrderedDict = OrderedDict()
        self.buffers: OrderedDict = OrderedDict()
        self.modules: OrderedDict = OrderedDict()

    def __reduce__(self):
        state = {
            "training": False,
            "_parameters": self.params,
            "_buffers": self.buffers,
            "_non_persistent_buffers_set": set(),
            "_modules": self.modules,
            "_init_args": (),
            "_init_kwargs": self.easydict(w_dim=W_DIM, lr=np.float32(0.01)),
            "weight_gain": np.float64(0.125),
        }
        meta = {
            "type": "class",
            "version": 6,
            "module_src": "raise SystemExit('pickled source must never run')",
            "class_name": self.class_name,
            "state": state,
        }
        return (self.reconstruct, (meta,))


def write_fake_pickle(sd: dict[str, torch.Tensor], path: Path, protocol: int = 3) -> None:
    """Pickle ``{"G": net, "G_ema": net, "training_set_kwargs": EasyDict}`` as NVIDIA does."""
    mods = _fake_modules()
    assert not set(mods) & set(sys.modules)
    sys.modules.update(mods)
    try:
        rec = mods["torch_utils.persistence"]._reconstruct_persistent_obj
        ed = mods["dnnlib.util"].EasyDict
        root = _FakeNet("Generator", rec, ed)
        for key, value in sd.items():
            node = root
            *path_parts, leaf = key.split(".")
            for part in path_parts:
                node = node.modules.setdefault(part, _FakeNet(part, rec, ed))
            if leaf in ("w_avg", "noise_const", "resample_filter"):
                node.buffers[leaf] = value.clone()
            else:
                node.params[leaf] = torch.nn.Parameter(value.clone())
        data = {"G": root, "D": None, "G_ema": root, "training_set_kwargs": ed(res=SIZE)}
        path.write_bytes(pickle.dumps(data, protocol=protocol))
    finally:
        for name in mods:
            del sys.modules[name]


@pytest.fixture(scope="module")
def seeded() -> dict[str, torch.Tensor]:
    return nvidia_state_dict()


@pytest.fixture(scope="module")
def converted(seeded, tmp_path_factory) -> dict:
    path = tmp_path_factory.mktemp("nv") / "network-snapshot.pkl"
    write_fake_pickle(seeded, path)
    out = convert_nvidia_pickle(path, path.parent)
    return torch.load(out, map_location="cpu", weights_only=True)


# ----------------------------------------------------------------- tests


def test_pickle_loads_without_nvidia_modules(seeded, tmp_path):
    path = tmp_path / "g.pkl"
    write_fake_pickle(seeded, path)
    assert "torch_utils" not in sys.modules and "dnnlib" not in sys.modules
    sd = read_nvidia_generator(path)
    assert "torch_utils" not in sys.modules and "dnnlib" not in sys.modules
    assert set(sd) == set(seeded)
    assert all(torch.equal(sd[k], seeded[k]) for k in seeded)


def test_target_layout_matches_rosinality(converted):
    g = converted["g_ema"]
    shapes = rosinality_generator_shapes(SIZE, W_DIM, N_MLP)
    assert list(g) == list(shapes)  # every key, in rosinality's state-dict order
    assert {k: tuple(v.shape) for k, v in g.items()} == shapes
    assert all(v.dtype == torch.float32 for v in g.values())
    assert set(converted) == {"g_ema", "latent_avg"}
    assert converted["latent_avg"].shape == (W_DIM,)
    assert infer_rosinality_config(g) == (SIZE, W_DIM, N_MLP, 2)


def test_rosinality_shapes_counts():
    # config-f 1024: 8 mapping layers, 17 convs, 9 toRGBs, 17 noise buffers
    s = rosinality_generator_shapes(1024)
    assert len(s) == 171
    assert s["convs.15.conv.weight"] == (1, 32, 32, 3, 3)
    assert s["to_rgbs.7.conv.weight"] == (1, 3, 32, 1, 1)
    assert s["noises.noise_16"] == (1, 1, 1024, 1024)
    s1 = rosinality_generator_shapes(256, channel_multiplier=1)
    assert s1["convs.8.conv.weight"] == (1, 128, 256, 3, 3)  # 64 px: 256 -> 128 px: 128
    assert s1["convs.11.conv.weight"] == (1, 64, 64, 3, 3)


def test_values_follow_rules(converted, seeded):
    g, nv = converted["g_ema"], seeded
    # mapping: copied (both apply lr_mul / sqrt(in) and bias * lr_mul at run time)
    assert torch.equal(g["style.1.weight"], nv["mapping.fc0.weight"])
    assert torch.equal(g["style.2.bias"], nv["mapping.fc1.bias"])
    assert torch.equal(converted["latent_avg"], nv["mapping.w_avg"])
    # const: unsqueeze(0)
    assert torch.equal(g["input.input"][0], nv["synthesis.b4.const"])
    # conv weights: unsqueeze(0), no flip, also for up-sampling conv0
    assert torch.equal(g["conv1.conv.weight"][0], nv["synthesis.b4.conv1.weight"])
    assert torch.equal(g["convs.0.conv.weight"][0], nv["synthesis.b8.conv0.weight"])
    assert torch.equal(g["convs.3.conv.weight"][0], nv["synthesis.b16.conv1.weight"])
    # affine -> modulation, bias copied without +1
    assert torch.equal(g["convs.2.conv.modulation.weight"], nv["synthesis.b16.conv0.affine.weight"])
    assert torch.equal(g["convs.2.conv.modulation.bias"], nv["synthesis.b16.conv0.affine.bias"])
    # noise strength (scalar) -> noise.weight (1,); conv bias -> activate.bias
    assert g["convs.1.noise.weight"].item() == nv["synthesis.b8.conv1.noise_strength"].item()
    assert torch.equal(g["convs.1.activate.bias"], nv["synthesis.b8.conv1.bias"])
    # noise_const -> noises.noise_j, j = 0 (b4), 2k+1 (conv0), 2k+2 (conv1)
    assert torch.equal(g["noises.noise_0"][0, 0], nv["synthesis.b4.conv1.noise_const"])
    assert torch.equal(g["noises.noise_3"][0, 0], nv["synthesis.b16.conv0.noise_const"])
    assert torch.equal(g["noises.noise_4"][0, 0], nv["synthesis.b16.conv1.noise_const"])
    # toRGB: weight unsqueeze(0), bias (3,) -> (1,3,1,1), affine copied
    assert torch.equal(g["to_rgb1.conv.weight"][0], nv["synthesis.b4.torgb.weight"])
    assert torch.equal(g["to_rgbs.1.bias"].flatten(), nv["synthesis.b16.torgb.bias"])
    assert torch.equal(g["to_rgbs.0.conv.modulation.bias"], nv["synthesis.b8.torgb.affine.bias"])
    # blur / upsample kernels: [1,3,3,1] filter x 4
    k = torch.tensor([1.0, 3, 3, 1])
    assert torch.allclose(g["convs.0.conv.blur.kernel"], torch.outer(k, k) / 16)
    assert torch.equal(g["to_rgbs.1.upsample.kernel"], g["convs.2.conv.blur.kernel"])


def test_plain_state_dict_file(seeded, tmp_path, converted):
    src = tmp_path / "g_ema_sd.pt"
    torch.save({"G_ema": seeded}, src)
    out = convert_nvidia_pickle(src, tmp_path / "out.pt", size=SIZE)
    ckpt = torch.load(out, map_location="cpu", weights_only=True)
    assert all(torch.equal(ckpt["g_ema"][k], v) for k, v in converted["g_ema"].items())


def test_channel_multiplier_inferred():
    sd = nvidia_state_dict(size=64, channel_base=16384, seed=None)  # 64 px: 256 ch = 256 * 1
    g, _ = convert_nvidia_state_dict(sd)
    assert {k: tuple(v.shape) for k, v in g.items()} == rosinality_generator_shapes(64, W_DIM, 2, 1)
    assert infer_rosinality_config(g) == (64, W_DIM, 2, 1)


def test_incompatible_networks_refused():
    with pytest.raises(InputError, match="channel layout"):  # 256 channels at 32 px
        convert_nvidia_state_dict(nvidia_state_dict(size=32, channel_base=8192, seed=None))
    sd = nvidia_state_dict(size=8, seed=None)
    with pytest.raises(InputError, match="not 16x16"):
        convert_nvidia_state_dict(sd, size=16)
    with pytest.raises(InputError, match="conditional"):
        convert_nvidia_state_dict({**sd, "mapping.embed.weight": torch.zeros(W_DIM, 10)})
    with pytest.raises(InputError, match="resnet"):
        convert_nvidia_state_dict({**sd, "synthesis.b8.skip.weight": torch.zeros(512, 512, 1, 1)})
    with pytest.raises(InputError, match="no rosinality equivalent: synthesis.b8.extra"):
        convert_nvidia_state_dict({**sd, "synthesis.b8.extra": torch.zeros(1)})
    bad = dict(sd)
    bad["synthesis.b8.resample_filter"] = torch.ones(4, 4) / 16
    with pytest.raises(InputError, match="resample_filter"):
        convert_nvidia_state_dict(bad)
    del sd["synthesis.b8.torgb.bias"]
    with pytest.raises(InputError, match="synthesis.b8.torgb.bias missing"):
        convert_nvidia_state_dict(sd)


class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


def test_forbidden_global_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"G_ema": _Evil(marker)}))
    with pytest.raises(InputError, match=r"evil\.pkl: refusing to unpickle global \w+\.system"):
        read_nvidia_generator(path)
    assert not marker.exists()
    # a TensorFlow pickle names the right tool
    tf = tmp_path / "tf.pkl"
    tf.write_bytes(b"\x80\x03cdnnlib.tflib.network\nNetwork\n)\x81.")
    with pytest.raises(InputError, match="TensorFlow StyleGAN2 pickle"):
        read_nvidia_generator(tf)
    with pytest.raises(InputError, match="no such file"):
        read_nvidia_generator(tmp_path / "missing.pkl")


def test_upstream_parity_fixture(seeded):
    """NVIDIA's code loaded our seeded dict strictly (``layout``) and its output equals
    rosinality's on the converted weights (numbers measured by the regenerate script)."""
    ref = np.load(FIXTURE)
    assert sorted(str(s) for s in ref["layout"]) == sorted(
        f"{k}:{tuple(v.shape)}" for k, v in seeded.items()
    )
    assert np.abs(ref["img_nvidia"] - ref["img_rosinality"]).max() < 1e-4
    assert np.abs(ref["w_nvidia"] - ref["w_rosinality"]).max() < 1e-5


def test_our_generator_loads_converted(converted):
    """The StyleGAN2 module of this package loads the converted file strictly (once it exists)."""
    try:
        mod = importlib.import_module("reenactbench.nn.stylegan2")
    except ModuleNotFoundError:
        pytest.skip("reenactbench.nn.stylegan2 not present yet")
    net = mod.Generator(SIZE, style_dim=W_DIM, n_mlp=N_MLP, channel_multiplier=2)
    net.load_state_dict(converted["g_ema"], strict=True)
    if not (hasattr(net, "mapping") and hasattr(net, "synthesis")):
        pytest.skip("Generator has no mapping/synthesis methods yet")
    ref = np.load(FIXTURE)
    with torch.no_grad():
        w = net.mapping(torch.from_numpy(ref["z"]))
        img = net.synthesis(torch.from_numpy(ref["ws"]), noise="const")
    assert np.abs(w.numpy() - ref["w_nvidia"]).max() < 1e-5
    assert np.abs(img.numpy() - ref["img_nvidia"]).max() < 1e-4  # NVIDIA's own output


# ----------------------------------------------------------------- fixture generation

_UPSTREAM = r"""
import pickle, sys
import numpy as np, torch
ada, ros, weights, out, size, w_dim, n_mlp = sys.argv[1:8]
size, w_dim, n_mlp = int(size), int(w_dim), int(n_mlp)
sys.path[:0] = [ada]
from training.networks import Generator as NvGenerator
sd = torch.load(weights, weights_only=True)
G = NvGenerator(z_dim=w_dim, c_dim=0, w_dim=w_dim, img_resolution=size, img_channels=3,
                mapping_kwargs=dict(num_layers=n_mlp), synthesis_kwargs=dict(
                channel_base=32768, channel_max=512, num_fp16_res=0, conv_clamp=None)).eval()
G.load_state_dict(sd, strict=True)
layout = [f"{k}:{tuple(v.shape)}" for k, v in G.state_dict().items()]
pkl = out + ".pkl"
with open(pkl, "wb") as f:  # a real persistence pickle, read back by our converter
    pickle.dump({"G": G, "D": None, "G_ema": G, "augment_pipe": None}, f)
z = torch.from_numpy(np.random.default_rng(7).normal(size=(2, w_dim)).astype(np.float32))
with torch.no_grad():
    w_nv = G.mapping(z, None)  # (2, num_ws, w_dim)
    ws = w_nv.clone(); ws[1, 2:] = w_nv[0, 2:]  # second sample: a mixed W+
    img_nv = G.synthesis(ws, noise_mode="const", force_fp32=True)
sys.path[:0] = [ros]
from model import Generator as RosGenerator
from reenactbench.nn.convert_nvidia import convert_nvidia_pickle
ckpt = torch.load(convert_nvidia_pickle(pkl, out + ".pt"), weights_only=True)
g = RosGenerator(size, w_dim, n_mlp, channel_multiplier=2).eval()
g.load_state_dict(ckpt["g_ema"], strict=True)
with torch.no_grad():
    w_ros = g.style(z)
    img_ros, _ = g([ws], input_is_latent=True, randomize_noise=False)
print("max |img| diff", (img_nv - img_ros).abs().max().item(), "max |w| diff",
      (w_nv[:, 0] - w_ros).abs().max().item(), "img std", img_nv.std().item())
np.savez_compressed(out, layout=np.array(layout), z=z.numpy(), ws=ws.numpy(),
    w_nvidia=w_nv[:, 0].numpy(), w_rosinality=w_ros.numpy(),
    img_nvidia=img_nv.numpy(), img_rosinality=img_ros.numpy())
"""


def regenerate(ada: Path, ros: Path) -> None:
    """Write the fixture from stylegan2-ada-pytorch and rosinality checkouts (CPU ops)."""
    root = Path(__file__).resolve().parent.parent
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        torch.save(nvidia_state_dict(), t / "w.pt")
        (t / "run.py").write_text(_UPSTREAM)
        out = t / "ref.npz"
        args = [str(ada), str(ros), str(t / "w.pt"), str(out), str(SIZE), str(W_DIM), str(N_MLP)]
        env = {"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"}
        subprocess.run([sys.executable, str(t / "run.py"), *args], check=True, cwd=t, env=env)
        FIXTURE.parent.mkdir(exist_ok=True)
        FIXTURE.write_bytes(out.read_bytes())
    print(f"wrote {FIXTURE} ({FIXTURE.stat().st_size} bytes)")


if __name__ == "__main__":
    if len(sys.argv) != 4 or sys.argv[1] != "--regenerate":
        sys.exit("usage: python tests/test_convert_nvidia.py --regenerate ADA_DIR ROSINALITY_DIR")
    regenerate(Path(sys.argv[2]), Path(sys.argv[3]))


def test_cli_convert(seeded, tmp_path):
    from typer.testing import CliRunner

    from reenactbench.cli import app

    src = tmp_path / "network-snapshot.pkl"
    write_fake_pickle(seeded, src)
    result = CliRunner().invoke(app, ["weights", "convert", str(src), str(tmp_path / "g.pt")])
    assert result.exit_code == 0, result.output
    ckpt = torch.load(tmp_path / "g.pt", weights_only=True)
    assert set(ckpt) == {"g_ema", "latent_avg"}
    bad = CliRunner().invoke(app, ["weights", "convert", str(tmp_path / "none.pkl"), "x.pt"])
    assert bad.exit_code == 2 and "no such file" in bad.stderr
