"""StyleGAN2 (rosinality layout): strict loading, parity with upstream, StyleSpace API.

The parity fixture ``tests/fixtures/stylegan2_rosinality_reference.npz`` was computed by
rosinality's own ``model.py`` (run outside our tree, see tests/fixtures/README.md) on the
seeded weights of :func:`seeded_checkpoint` and the inputs of :func:`reference_inputs`.
Regenerate it with ``python tests/test_stylegan2.py --regenerate UPSTREAM_CHECKOUT``.
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
from reenactbench.nn.stylegan2 import (
    Generator,
    config_from_state_dict,
    load_generator,
    truncate,
)
from reenactbench.nn.stylegan2_ops import upfirdn2d
from reenactbench.nn.stylespace import (
    STYLE_LAYERS,
    first_style_indices,
    mix_styles,
    style_layers,
    styles_to_vector,
    vector_to_styles,
)

FIXTURE = Path(__file__).parent / "fixtures" / "stylegan2_rosinality_reference.npz"
#: The small parity config: Generator(64, style_dim=64, n_mlp=2, channel_multiplier=1).
SMALL = {"size": 64, "style_dim": 64, "n_mlp": 2, "channel_multiplier": 1}


def seeded_state_dict(seed: int = 0, **config: int) -> dict[str, torch.Tensor]:
    """A fresh copy of :func:`_seeded` for ``Generator(**config)`` (default :data:`SMALL`)."""
    cfg = {**SMALL, **config}
    return dict(_seeded(seed, tuple(sorted(cfg.items()))))


@functools.cache
def _seeded(seed: int, cfg: tuple[tuple[str, int], ...]) -> dict[str, torch.Tensor]:
    """A deterministic ``g_ema`` state dict; each tensor from numpy PCG64 seeded with
    ``(seed, crc32(key))``. Blur kernels keep their fixed values. Scales mimic a trained
    network: effective weights O(1/sqrt(fan_in)), affine biases ~1, nonzero noise
    strengths and biases (so every path shows in the output)."""
    own = Generator(**dict(cfg)).state_dict()
    out: dict[str, torch.Tensor] = {}
    for key, ref in own.items():
        rng = np.random.default_rng([seed, zlib.crc32(key.encode())])
        shape = tuple(ref.shape)
        if key.endswith(".kernel"):
            out[key] = ref.clone()
            continue
        if key.startswith("style.") and key.endswith(".weight"):
            v = rng.normal(0.0, 1.0, shape) / 0.01  # lr_mul 0.01
        elif key.startswith("style."):
            v = rng.normal(0.0, 0.1, shape) / 0.01
        elif key.endswith("modulation.bias"):
            v = 1.0 + rng.normal(0.0, 0.1, shape)
        elif key.endswith("noise.weight"):
            v = rng.normal(0.0, 0.2, shape)
        elif key.endswith("activate.bias") or key.endswith(".bias"):
            v = rng.normal(0.0, 0.1, shape)
        else:  # conv / modulation weights, constant input, noise buffers
            v = rng.normal(0.0, 1.0, shape)
        out[key] = torch.from_numpy(v.astype(np.float32))
    return out


def seeded_checkpoint(seed: int = 0, **config: int) -> dict[str, object]:
    """The official file layout: ``{'g_ema': state dict, 'latent_avg': (style_dim,)}``."""
    state = seeded_state_dict(seed, **config)
    dim = state["style.1.weight"].shape[1]
    rng = np.random.default_rng([seed, 7])
    return {
        "g_ema": state,
        "latent_avg": torch.from_numpy(rng.normal(0, 0.5, dim).astype(np.float32)),
    }


def reference_inputs() -> dict[str, np.ndarray]:
    """Seeded inputs of the parity cases (numpy PCG64 seed 1), small config."""
    rng = np.random.default_rng(1)
    n_latent, num_layers = 10, 9
    sizes = [2 ** ((i + 5) // 2) for i in range(num_layers)]  # 4, 8, 8, 16, 16, ..., 64
    noise = [rng.normal(0, 1, (1, 1, r, r)) for r in sizes]
    out = {
        "z": rng.normal(0, 1, (2, 64)),
        "w_plus": rng.normal(0, 1, (1, n_latent, 64)),
        **{f"noise_{i}": n for i, n in enumerate(noise)},
    }
    return {k: v.astype(np.float32) for k, v in out.items()}


@pytest.fixture(scope="module")
def small_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sg2") / "stylegan2-small.pt"
    torch.save(seeded_checkpoint(), path)
    return path


@pytest.fixture(scope="module")
def small(small_file: Path) -> tuple[Generator, torch.Tensor]:
    return load_generator(small_file)


def _t(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a))


def _layout(lines: np.ndarray) -> dict[str, tuple[int, ...]]:
    out = {}
    for line in lines:
        key, shape = str(line).split(":")
        out[key] = tuple(int(s) for s in shape.split(",") if s)
    return out


# --- layout ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, config",
    [("layout_small", SMALL), ("layout_1024", {"size": 1024, "style_dim": 512, "n_mlp": 8})],
)
def test_layout_matches_upstream(name: str, config: dict[str, int]) -> None:
    theirs = _layout(np.load(FIXTURE)[name])
    net = Generator(**config)
    ours = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    assert list(ours) == list(theirs)  # same keys in the same order
    assert ours == theirs
    if config["size"] == 1024:
        assert len(ours) == 171  # pinned: rosinality config-f g_ema
        assert sum(v.numel() for v in net.parameters()) == 30_370_060
    assert config_from_state_dict(net.state_dict()) == (
        config["size"],
        config["style_dim"],
        config["n_mlp"],
        config.get("channel_multiplier", 2),
        0,  # max_channels: rosinality's full channel table
    )


def test_style_layer_table() -> None:
    assert len(STYLE_LAYERS) == 26
    assert sum(ly.dim for ly in STYLE_LAYERS) == 9088
    assert sum(ly.dim for ly in STYLE_LAYERS if not ly.is_torgb) == 6048
    rows = [(ly.module, ly.dim, ly.w_index) for ly in STYLE_LAYERS]
    assert rows[:5] == [
        ("conv1", 512, 0),
        ("to_rgb1", 512, 1),
        ("convs.0", 512, 1),
        ("convs.1", 512, 2),
        ("to_rgbs.0", 512, 3),
    ]
    assert rows[14:17] == [("convs.8", 512, 9), ("convs.9", 256, 10), ("to_rgbs.4", 256, 11)]
    assert rows[-1] == ("to_rgbs.7", 32, 17)
    assert [ly.index for ly in STYLE_LAYERS] == list(range(26))
    assert first_style_indices(STYLE_LAYERS, 10) == list(range(10))
    conv10 = first_style_indices(STYLE_LAYERS, 10, include_torgb=False)
    assert [STYLE_LAYERS[i].module for i in conv10] == ["conv1"] + [f"convs.{i}" for i in range(9)]
    assert len(style_layers(256)) == 20
    with pytest.raises(ValueError, match="power of 2"):
        style_layers(100)


# --- parity with upstream ---------------------------------------------------------------


def test_parity_with_rosinality(small: tuple[Generator, torch.Tensor]) -> None:
    net, avg = small
    ref = np.load(FIXTURE)
    x = reference_inputs()
    z = _t(x["z"])
    noise = [_t(x[f"noise_{i}"]) for i in range(net.num_layers)]
    np.testing.assert_array_equal(avg.numpy(), ref["latent_avg"])
    with torch.no_grad():
        w = net.mapping(z)
        img_a, lat = net([z], return_latents=True)
        img_b, _ = net([z[:1], z[1:]], inject_index=3, truncation=0.7, truncation_latent=avg)
        wp = _t(x["w_plus"])
        img_c, _ = net([wp], input_is_latent=True, noise=noise)
        styles = styles_to_vector(net.styles(wp))
    assert lat is not None and lat.shape == (2, 10, 64)
    diffs = {
        "w": np.abs(w.numpy() - ref["w"]).max(),
        "img_a": np.abs(img_a.numpy() - ref["img_a"]).max(),
        "img_b": np.abs(img_b.numpy() - ref["img_b"]).max(),
        "img_c": np.abs(img_c.numpy() - ref["img_c"]).max(),
        "styles": np.abs(styles.numpy() - ref["styles_c"]).max(),
    }
    assert max(diffs.values()) < 1e-4, diffs
    # the references are not trivial: images vary, the cases differ
    assert 0.1 < float(ref["img_a"].std()) < 100
    assert np.abs(ref["img_a"][0] - ref["img_a"][1]).mean() > 0.05
    # upstream's modulation layers ran in our canonical order with our dims
    names = [str(n) for n in ref["style_modules"]]
    assert names == [ly.module for ly in net.style_layers]


# --- loading --------------------------------------------------------------------------


def test_load_small(small: tuple[Generator, torch.Tensor]) -> None:
    net, avg = small
    assert (net.size, net.style_dim, net.n_mlp, net.channel_multiplier) == (64, 64, 2, 1)
    assert avg.shape == (64,) and avg.dtype == torch.float32
    assert not net.training and not any(p.requires_grad for p in net.parameters())
    state = seeded_state_dict()
    for k, v in net.state_dict().items():
        assert torch.equal(v, state[k]), k


@pytest.mark.parametrize("change", ["missing", "extra", "shape", "no_g_ema", "avg"])
def test_strict_load_names_the_file(tmp_path: Path, change: str) -> None:
    ckpt = seeded_checkpoint()
    state = ckpt["g_ema"]
    assert isinstance(state, dict)
    if change == "missing":
        del state["convs.3.noise.weight"]
    elif change == "extra":
        state["convs.3.noise.bias"] = torch.zeros(1)
    elif change == "shape":
        state["to_rgbs.1.bias"] = torch.zeros(1, 4, 1, 1)
    elif change == "no_g_ema":
        ckpt = {"g": state}
    else:
        ckpt["latent_avg"] = torch.zeros(3)
    path = tmp_path / f"{change}.pt"
    torch.save(ckpt, path)
    with pytest.raises(InputError) as e:
        load_generator(path)
    msg = str(e.value)
    assert str(path) in msg and "\n" not in msg
    expect = {
        "missing": "missing keys convs.3.noise.weight",
        "extra": "unexpected keys convs.3.noise.bias",
        "shape": "shape mismatch to_rgbs.1.bias (1, 4, 1, 1) != (1, 3, 1, 1)",
        "no_g_ema": "no 'g_ema'",
        "avg": "latent_avg must have 64 values",
    }
    assert expect[change] in msg


def test_load_rejects_pickled_code_and_wrong_size(tmp_path: Path, small_file: Path) -> None:
    bad = tmp_path / "code.pt"
    torch.save({"g_ema": seeded_state_dict(), "latent_avg": torch.zeros(64), "x": Path("a")}, bad)
    with pytest.raises(InputError, match="refused: .* holds objects other than tensors"):
        load_generator(bad)
    with pytest.raises(InputError, match="64x64, expected 256x256"):
        load_generator(small_file, size=256)


def test_training_checkpoint_with_args_and_no_latent_avg(tmp_path: Path) -> None:
    import argparse

    path = tmp_path / "000100.pt"
    state = seeded_state_dict()
    torch.save({"g_ema": state, "g": state, "args": argparse.Namespace(size=64, latent=64)}, path)
    net, avg = load_generator(path)
    with torch.no_grad():
        expect = net.mean_latent(4096, torch.Generator().manual_seed(0))
    torch.testing.assert_close(avg, expect, rtol=0, atol=0)


# --- StyleSpace -------------------------------------------------------------------------


def test_stylespace_round_trip(small: tuple[Generator, torch.Tensor]) -> None:
    net, avg = small
    z = torch.randn(2, 64, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        wp = net.w_plus(truncate(net.mapping(z), avg, 0.8))
        wp[:, 4:] = wp.flip(0)[:, 4:]  # a true W+ (rows differ)
        img, _ = net(wp, input_is_latent=True)
        styles = net.styles(wp)
        again = net.synthesis_from_styles(styles)
        rebuilt = net.synthesis_from_styles(
            vector_to_styles(styles_to_vector(styles), net.style_layers)
        )
    assert [s.shape[1] for s in styles] == [ly.dim for ly in net.style_layers]
    assert len(styles) == 20 - 3 * 2  # 3 log2(64) - 4 = 14
    assert torch.equal(img, again) and torch.equal(img, rebuilt)


def test_style_edit_is_local_and_mix_keeps_others(small: tuple[Generator, torch.Tensor]) -> None:
    net, _ = small
    gen = torch.Generator().manual_seed(4)
    with torch.no_grad():
        a = net.styles(net.mapping(torch.randn(1, 64, generator=gen)))
        b = net.styles(net.mapping(torch.randn(1, 64, generator=gen)))
        base = net.synthesis_from_styles(a)
        for k in (0, 1, len(a) - 1):
            edited = list(a)
            edited[k] = a[k] + 0.5
            out = net.synthesis_from_styles(edited)
            assert (out - base).abs().max() > 1e-3, k
        mixed = mix_styles(a, b, range(10))
    assert all(mixed[k] is b[k] for k in range(10))
    assert all(mixed[k] is a[k] for k in range(10, len(a)))
    with pytest.raises(ValueError, match="out of range"):
        mix_styles(a, b, [len(a)])
    with pytest.raises(ValueError, match="shapes differ"):
        mix_styles(a, [s[:, :1] for s in b], [0])


def test_noise_modes_and_features(small: tuple[Generator, torch.Tensor]) -> None:
    net, _ = small
    with torch.no_grad():
        s = net.styles(net.mapping(torch.randn(2, 64, generator=torch.Generator().manual_seed(5))))
        const = net.synthesis_from_styles(s)
        none = net.synthesis_from_styles(s, noise="none")
        zeros = net.synthesis_from_styles(s, noise=[torch.zeros(1, 1, 1, 1)] * net.num_layers)
        r1 = net.synthesis_from_styles(
            s, noise="random", generator=torch.Generator().manual_seed(9)
        )
        r2 = net.synthesis_from_styles(
            s, noise="random", generator=torch.Generator().manual_seed(9)
        )
        r3 = net.synthesis_from_styles(
            s, noise="random", generator=torch.Generator().manual_seed(8)
        )
        img, feats = net.synthesis_from_styles(s, return_features=True)
    assert torch.equal(none, zeros)
    assert torch.equal(r1, r2) and not torch.equal(r1, r3)
    assert (const - none).abs().max() > 1e-3
    assert torch.equal(img, const)
    assert {r: tuple(f.shape) for r, f in feats.items()} == {
        4: (2, 512, 4, 4),
        8: (2, 512, 8, 8),
        16: (2, 512, 16, 16),
        32: (2, 512, 32, 32),
        64: (2, 256, 64, 64),
    }
    with pytest.raises(ValueError, match="torch.Generator"):
        net.synthesis_from_styles(s, noise="random")
    with pytest.raises(ValueError, match="expected 14 style vectors"):
        net.synthesis_from_styles(s[:-1])


def test_feature_hook_restarts_from_a_replaced_feature(
    small: tuple[Generator, torch.Tensor], tmp_path: Path
) -> None:
    """``feature_hook`` sees the first conv's output of every block from 8² on; returning it
    unchanged is bit-identical; a 32² feature taken from another code makes the features
    from there on that code's (the later layers' styles agree), those before it stay. A
    bare state dict (StyleHEAT's StyleGAN_e4e.pth) loads with ``entry=None``."""
    net, _ = small
    gen = torch.Generator().manual_seed(4)
    w = net.w_plus(net.mapping(torch.randn(1, 64, generator=gen)))
    seen: list[int] = []

    def same(res: int, x: torch.Tensor) -> torch.Tensor:
        seen.append(res)
        return x

    with torch.no_grad():
        plain = net.synthesis(w)
        assert torch.equal(net.synthesis(w, feature_hook=same), plain)
        assert seen == [8, 16, 32, 64]
        kept: list[torch.Tensor] = []
        net.synthesis(w, feature_hook=lambda r, x: (kept.append(x), x)[1] if r == 32 else x)
        other = w.clone()  # W+ rows 0-4 (layers before the 32² block's first conv) differ
        other[:, :5] = net.mapping(torch.randn(1, 64, generator=gen))[:, None]
        _, f_plain = net.synthesis_from_styles(net.styles(w), return_features=True)
        _, f_other = net.synthesis_from_styles(net.styles(other), return_features=True)
        _, f_swap = net.synthesis_from_styles(
            net.styles(other), return_features=True,
            feature_hook=lambda r, x: kept[0] if r == 32 else x,
        )  # fmt: skip
        assert (f_other[64] - f_plain[64]).abs().max() > 1e-2
        assert torch.equal(f_swap[16], f_other[16])  # before the replacement: other's
        for res in (32, 64):  # from the replacement on: the plain code's features
            torch.testing.assert_close(f_swap[res], f_plain[res], atol=1e-5, rtol=0)
    bare = tmp_path / "bare.pt"
    torch.save(seeded_checkpoint()["g_ema"], bare)
    net2, _ = load_generator(bare, entry=None)
    assert torch.equal(net2.synthesis(w), plain)
    with pytest.raises(InputError, match="no 'g_ema' state dict"):
        load_generator(bare)


def test_batch_invariance(small: tuple[Generator, torch.Tensor]) -> None:
    net, _ = small
    z = torch.randn(3, 64, generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        full, _ = net(z)
        single = torch.cat([net(z[i : i + 1])[0] for i in range(3)])
    torch.testing.assert_close(full, single, atol=1e-5, rtol=0)


def test_upfirdn2d_closed_form() -> None:
    # 2x zero insertion + box filter [1, 1] (x2 gain) = nearest-neighbour upsampling
    x = torch.arange(6.0).reshape(1, 2, 1, 3)
    k = torch.ones(2, 2)
    up = upfirdn2d(x, k, up=2, pad=(1, 0))
    assert torch.equal(up, x.repeat_interleave(2, 2).repeat_interleave(2, 3))
    down = upfirdn2d(up, k / 4, down=2, pad=(0, 0))  # 2x2 mean-pool undoes it
    assert torch.equal(down, x)


def test_reset_parameters_is_seeded() -> None:
    a = Generator(**SMALL).reset_parameters(torch.Generator().manual_seed(0))
    b = Generator(**SMALL).reset_parameters(torch.Generator().manual_seed(0))
    sa, sb = a.state_dict(), b.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert float(sa["conv1.conv.modulation.bias"].mean()) == 1.0


def test_1024_forward_on_cpu() -> None:  # ~2-3 s on 2 cores (not marked slow)
    net = Generator(1024).reset_parameters(torch.Generator().manual_seed(0)).eval()
    z = torch.randn(1, 512, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        img, lat = net([z], truncation=0.7, truncation_latent=torch.zeros(512), return_latents=True)
        styles = net.styles(lat)
    assert img.shape == (1, 3, 1024, 1024) and torch.isfinite(img).all()
    assert lat is not None and lat.shape == (1, 18, 512)
    assert len(styles) == 26 and sum(s.shape[1] for s in styles) == 9088


# --- fixture regeneration: runs rosinality's own code from a checkout outside this tree -----

_UPSTREAM = r"""
import sys, numpy as np, torch, torch.utils.cpp_extension
sys.path.insert(0, sys.argv[1])
torch.utils.cpp_extension.load = lambda *a, **k: None  # upstream's op/ compiles CUDA at import;
from model import Generator  # on CPU it runs its native upfirdn2d / fused_leaky_relu paths
ck = torch.load(sys.argv[2], weights_only=True)
x = dict(np.load(sys.argv[3]))
g = Generator(64, 64, 2, channel_multiplier=1)
g.load_state_dict(ck["g_ema"], strict=True)
g.eval()
t = lambda a: torch.from_numpy(a)
out, order = {}, []
for name, m in g.named_modules():
    if name.endswith(".conv.modulation"):
        hook = lambda m, i, o, n=name[: -len(".conv.modulation")]: order.append((n, o))
        m.register_forward_hook(hook)
with torch.no_grad():
    z, avg = t(x["z"]), ck["latent_avg"]
    out["w"] = g.get_latent(z).numpy()
    out["img_a"] = g([z], randomize_noise=False)[0].numpy()
    out["img_b"] = g([z[:1], z[1:]], inject_index=3, truncation=0.7, truncation_latent=avg,
                     randomize_noise=False)[0].numpy()
    order.clear()
    noise = [t(x["noise_%d" % i]) for i in range(g.num_layers)]
    out["img_c"] = g([t(x["w_plus"])], input_is_latent=True, noise=noise)[0].numpy()
out["styles_c"] = torch.cat([o for _, o in order], 1).numpy()
out["style_modules"] = np.array([n for n, _ in order])
out["latent_avg"] = avg.numpy()
lay = lambda net: np.array([k + ":" + ",".join(map(str, v.shape))
                            for k, v in net.state_dict().items()])
out["layout_small"] = lay(g)
out["layout_1024"] = lay(Generator(1024, 512, 8, channel_multiplier=2))
np.savez_compressed(sys.argv[4], **out)
"""


def regenerate(checkout: Path) -> None:
    """Write the fixture from a rosinality/stylegan2-pytorch checkout (``model.py``, ``op/``)."""
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        torch.save(seeded_checkpoint(), d / "ckpt.pt")
        np.savez(d / "inputs.npz", **reference_inputs())
        (d / "run.py").write_text(_UPSTREAM)
        FIXTURE.parent.mkdir(exist_ok=True)
        cmd = [sys.executable, str(d / "run.py"), str(checkout), str(d / "ckpt.pt")]
        subprocess.run([*cmd, str(d / "inputs.npz"), str(FIXTURE)], check=True, cwd=d)
    print(f"wrote {FIXTURE} ({FIXTURE.stat().st_size} bytes)")


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] != "--regenerate":
        sys.exit("usage: python tests/test_stylegan2.py --regenerate UPSTREAM_CHECKOUT")
    regenerate(Path(sys.argv[2]))
