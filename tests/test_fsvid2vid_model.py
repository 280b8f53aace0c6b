"""FS-Vid2Vid (imaginaire's face generator): strict loading of the ``net_G`` averaged-model
layout, spectral-norm folding, and parity with upstream's ``Generator`` on seeded weights,
edge-map labels and a real face over 3 frames with the previous output fed back.

Regenerate the parity fixture:
``python -m tests.test_fsvid2vid_model --regenerate UPSTREAM_DIR DEPS`` where the folder
holds NVlabs/imaginaire at c6f74845c699c58975fd12b778c375b72eb00e8d (``git archive HEAD
imaginaire configs``; nothing edited: the child stubs the CUDA extensions and albumentations
at import and maps ``.to('cuda')`` to the CPU) and ``DEPS`` is a ``pip install --target``
folder with pyyaml.
"""

from __future__ import annotations

import functools
import hashlib
import subprocess
import sys
import tempfile
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from reenactbench.baselines.fsvid2vid.layers import concat_frames, fold_spectral_norm
from reenactbench.baselines.fsvid2vid.model import (
    FACE,
    PREFIX,
    Generator,
    load_fsvid2vid,
    spectral_norm_layers,
)

from reenactbench.errors import InputError
from reenactbench.video import resize
from tests.test_pirenderer import source_image

FIXTURE = Path(__file__).parent / "fixtures" / "fsvid2vid_model_reference.npz"
SIZE = 256  # the face model runs at 512 (FACE["size"]); 256 keeps the CPU run short and
# exercises the same math (fully convolutional: 256 -> 8x8 at the bottom instead of 16x16)
NUM_FRAMES = 3
PATCH = (slice(None), slice(96, 160), slice(96, 160))  # 64x64 around the face centre
SUB = (slice(None), slice(1, None, 4), slice(1, None, 4))  # stride-4 grid, 64x64 at 256


# ---------------------------------------------------------------------- seeded inputs


def _seeded_value(key: str, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    z = rng.standard_normal(shape).astype(np.float32)
    if key.endswith(".layers.norm.weight"):  # affine instance norm
        return 1 + 0.1 * z
    if key.endswith(".layers.norm.bias"):
        return 0.1 * z
    if len(shape) == 1:
        return 0.01 * z
    v = z * np.float32((2 / np.prod(shape[1:])) ** 0.5)
    if ".fc_spade_" in key and ".2.layers." in key:  # generated weights: O(1/sqrt(fan_in))
        v = v * 0.125
    if ".mlps." in key:  # SPADE gamma/beta from the warped images: O(0.3)
        v = v * 0.3
    if ".conv_flow." in key:  # flow * 20: a few pixels at 512
        v = v * 0.1
    if key.startswith("conv_img."):  # tanh not saturated
        v = v * 0.3
    return v


def seeded_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    """The averaged generator in upstream's layout; each tensor float32 from numpy PCG64
    seeded with ``(seed, crc32(key))``: conv/linear weights N(0, 2/fan_in) (scaled for the
    generated weights, SPADE maps, flow head and output conv), biases N(0, 0.01^2), affine
    instance norms 1 + N(0, 0.1^2) / N(0, 0.1^2). Shared ``flow_network_temp`` = ref."""
    out = {}
    for key, ref in Generator(FACE).state_dict().items():
        src = key.replace("flow_network_temp.", "flow_network_ref.")
        rng = np.random.default_rng((seed, zlib.crc32(src.encode())))
        out[key] = torch.from_numpy(_seeded_value(src, tuple(ref.shape), rng))
    return out


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x)).astype(np.float32)


@functools.lru_cache(maxsize=2)
def _seeded_net_g(seed: int) -> dict[str, torch.Tensor]:
    return _build_net_g(seed)


def seeded_checkpoint(seed: int = 0) -> dict:
    """Upstream's ``_save_checkpoint`` layout (``trainers/base.py``); ``net_G`` as
    :func:`_build_net_g` (cached: the tensors are shared between calls, the dicts are not)."""
    return {
        "net_G": dict(_seeded_net_g(seed)),
        "net_D": {},
        "opt_G": {"state": {}, "param_groups": []},
        "opt_D": {"state": {}, "param_groups": []},
        "sch_G": {"step_size": 100, "gamma": 0.1, "last_epoch": 200},
        "sch_D": {"step_size": 100, "gamma": 0.1, "last_epoch": 200},
        "current_epoch": 200,
        "current_iteration": 120000,
    }


def _build_net_g(seed: int) -> dict[str, torch.Tensor]:
    """``net_G`` of upstream's checkpoint, the state dict of ``DDP(ModelAverage(Generator))``:
    ``module.num_updates_tracked``, the trained copy ``module.module.*`` (spectral-norm
    layers as ``weight_orig``/``weight_u``/``weight_v`` with consistent unit vectors,
    ``u = W v / |W v|``) and the EMA copy ``module.averaged_model.*`` (spectral norm folded
    into ``weight``)."""
    avg = seeded_state_dict(seed)
    sn = {k + ".weight" for k in spectral_norm_layers(Generator(FACE))}
    trained: dict[str, torch.Tensor] = {}
    for key, value in avg.items():
        if key not in sn:
            trained[key] = value + 0.001
            continue
        rng = np.random.default_rng((seed, zlib.crc32(key.encode()), 1))
        w = value.numpy() * 1.5
        v = _unit(rng.standard_normal(int(np.prod(w.shape[1:]))))
        u = _unit(w.reshape(w.shape[0], -1) @ v)
        stem = key[: -len("weight")]
        trained[stem + "weight_orig"] = torch.from_numpy(w)
        trained[stem + "weight_u"] = torch.from_numpy(u)
        trained[stem + "weight_v"] = torch.from_numpy(v)
    net_g = {"module.num_updates_tracked": torch.tensor(120000)}
    net_g.update({"module.module." + k: v for k, v in trained.items()})
    net_g.update({PREFIX + k: v for k, v in avg.items()})
    return net_g


def edge_maps(n: int, shift: int = 0) -> np.ndarray:
    """``(n, 1, SIZE, SIZE) float32`` in {0, 1}: a face-like sketch (jaw arc, brows, eyes,
    nose, mouth as 2-pixel polylines, drawn on a 512 canvas scaled to ``SIZE``) drifting
    6 (canvas) pixels right and 3 down per frame."""
    out = np.zeros((n, 1, SIZE, SIZE), np.float32)
    t = np.linspace(0, 1, 400)
    k = SIZE / 512
    curves = [
        (
            256 + 150 * np.cos(np.pi * (0.05 + 0.9 * t)),
            230 + 170 * np.sin(np.pi * (0.05 + 0.9 * t)),
        ),
        (150 + 80 * t, 200 - 20 * np.sin(np.pi * t)),
        (282 + 80 * t, 200 - 20 * np.sin(np.pi * t)),
        (165 + 60 * np.cos(2 * np.pi * t) / 2 + 25, 240 + 12 * np.sin(2 * np.pi * t)),
        (305 + 60 * np.cos(2 * np.pi * t) / 2 + 25, 240 + 12 * np.sin(2 * np.pi * t)),
        (256 + 0 * t, 240 + 80 * t),
        (200 + 112 * t, 380 + 25 * np.sin(np.pi * t)),
    ]
    for f in range(n):
        dx, dy = 6 * (f + shift), 3 * (f + shift)
        for xs, ys in curves:
            x = np.clip(np.round((xs + dx) * k).astype(int), 0, SIZE - 2)
            y = np.clip(np.round((ys + dy) * k).astype(int), 0, SIZE - 2)
            for ox in (0, 1):
                for oy in (0, 1):
                    out[f, 0, y + oy, x + ox] = 1
    return out


def reference_image() -> np.ndarray:
    """``(1, 3, SIZE, SIZE) float32`` in [-1, 1]: the astronaut face (resized if needed)."""
    img = resize(source_image(), SIZE).astype(np.float32) / 255
    return (img.transpose(2, 0, 1)[None] - 0.5) / 0.5


def run_sequence(
    net: torch.nn.Module,
    labels: np.ndarray,
    ref_label: np.ndarray,
    ref_image: np.ndarray,
    feed_back: bool = True,
) -> list[dict]:
    """Upstream's test loop (``reset`` + ``get_data_t``): frame ``t > 0`` gets the previous
    label and the previous *output* as ``prev_labels``/``prev_images``."""
    net.reset()
    outs, prev_labels, prev_images, last = [], None, None, None
    ref_labels = torch.from_numpy(ref_label)[:, None]
    ref_images = torch.from_numpy(ref_image)[:, None]
    for t in range(len(labels)):
        label = torch.from_numpy(labels[t : t + 1])
        if last is not None and feed_back:
            prev_labels = concat_frames(prev_labels, last[0], FACE["num_frames_G"] - 1)
            prev_images = concat_frames(prev_images, last[1], FACE["num_frames_G"] - 1)
        with torch.no_grad():
            out = net(label, ref_labels, ref_images, prev_labels, prev_images)
        last = (label, out["fake_images"])
        outs.append(out)
    return outs


def summarise(outs: list[dict]) -> dict[str, np.ndarray]:
    """Compact per-frame outputs: channel means, a 64x64 patch and a stride-8 grid of the
    image, grids of flows / masks / warps (previous-frame entries zero on frame 0)."""

    def grid(x: torch.Tensor | None, c: int) -> np.ndarray:
        if x is None:
            return np.zeros((c, 64, 64), np.float32)
        return x[0].numpy()[SUB]

    r: dict[str, list] = {k: [] for k in ("mean", "patch", "sub", "flow", "mask", "warp")}
    for o in outs:
        img = o["fake_images"][0].numpy()
        r["mean"].append(img.mean((1, 2)))
        r["patch"].append(img[PATCH])
        r["sub"].append(img[SUB])
        r["flow"].append(np.stack([grid(f, 2) for f in o["fake_flow_maps"]]))
        r["mask"].append(np.stack([grid(m, 1) for m in o["fake_occlusion_masks"]]))
        r["warp"].append(np.stack([grid(w, 3) for w in o["warped_images"]]))
    return {k: np.stack(v).astype(np.float32) for k, v in r.items()}


# Child process: upstream code only, run from the checkout (never imported into our tree).
_CHILD = r"""
import sys, types
up, deps, tmp = sys.argv[1:4]
sys.path[:0] = [up, deps]
import numpy as np, torch
from torch import nn
def stub(name, **attrs):
    m = types.ModuleType(name); m.__dict__.update(attrs); sys.modules[name] = m; return m
class Unavailable(nn.Module):  # CUDA extensions: not used by the fs_vid2vid generator
    def __init__(self, *a, **k): raise RuntimeError("CUDA extension stub")
for n in ("imaginaire.third_party", "imaginaire.third_party.upfirdn2d",
          "imaginaire.third_party.bias_act"):
    stub(n, Blur=Unavailable, BlurUpsample=Unavailable, BlurDownsample=Unavailable).__path__ = []
stub("imaginaire.third_party.upfirdn2d.upfirdn2d", Blur=Unavailable,
     BlurUpsample=Unavailable, BlurDownsample=Unavailable)
stub("imaginaire.third_party.bias_act.bias_act", FusedNonlinearity=Unavailable)
stub("albumentations")  # imported by imaginaire.utils.data, unused here
def cpu(orig):
    def to(self, *a, **k):
        if (a and str(a[0]) == "cuda") or str(k.get("device")) == "cuda":
            return self
        return orig(self, *a, **k)
    return to
torch.Tensor.to, nn.Module.to = cpu(torch.Tensor.to), cpu(nn.Module.to)
from imaginaire.config import Config
from imaginaire.generators.fs_vid2vid import Generator
from imaginaire.model_utils.fs_vid2vid import concat_frames
from imaginaire.utils.model_average import ModelAverage
cfg = Config(up + "/configs/projects/fs_vid2vid/face_forensics/ampO1.yaml")
ma = ModelAverage(Generator(cfg.gen, cfg.data), cfg.trainer.model_average_config.beta,
                  cfg.trainer.model_average_config.start_iteration,
                  cfg.trainer.model_average_config.remove_sn)
def shape(v): return "x".join(map(str, v.shape))
layout_net_G = ["module." + k + ":" + shape(v) for k, v in ma.state_dict().items()]
ck = torch.load(tmp + "/ckpt.pt", map_location="cpu")
pre = "module.averaged_model."
net = ma.averaged_model
# torch 2 wraps module hooks, so remove_weight_norms misses (isinstance) and keeps the
# spectral-norm load hooks of the averaged copy; drop them as it means to (torch 1.x did).
from torch.nn.utils.spectral_norm import SpectralNormLoadStateDictPreHook as Pre
for m in net.modules():
    for k, h in list(m._load_state_dict_pre_hooks.items()):
        if isinstance(getattr(h, "hook", h), Pre):
            del m._load_state_dict_pre_hooks[k]
sd = {k[len(pre):]: v for k, v in ck["net_G"].items() if k.startswith(pre)}
net.load_state_dict(sd, strict=True)
net.eval()
layout = [k + ":" + shape(v) for k, v in net.state_dict().items()]
d = np.load(tmp + "/inputs.npz")
labels = torch.from_numpy(d["labels"])
data = {"few_shot_label": torch.from_numpy(d["ref_label"])[:, None],
        "few_shot_images": torch.from_numpy(d["ref_image"])[:, None]}
net.reset()  # trainer.reset() at the start of the sequence
data_prev, out, outs = None, None, []
for t in range(len(labels)):  # trainers/fs_vid2vid.py get_data_t + vid2vid.test_single
    if data_prev is not None:
        prev_labels = concat_frames(data_prev["prev_labels"], data_prev["label"],
                                    cfg.data.num_frames_G - 1)
        prev_images = concat_frames(data_prev["prev_images"], out["fake_images"].detach(),
                                    cfg.data.num_frames_G - 1)
    else:
        prev_labels = prev_images = None
    data_t = {"label": labels[t:t + 1], "ref_labels": data["few_shot_label"],
              "ref_images": data["few_shot_images"], "prev_labels": prev_labels,
              "prev_images": prev_images}
    data_prev = data_t
    with torch.no_grad():
        out = net(data_t)
    outs.append({k: out[k] for k in ("fake_images", "fake_flow_maps",
                                     "fake_occlusion_masks", "warped_images")})
torch.save({"outs": outs, "layout": layout, "layout_net_G": layout_net_G}, tmp + "/out.pt")
"""


def regenerate(upstream: Path, deps: Path, out: Path = FIXTURE) -> None:
    """Run upstream's generator (averaged copy) over the seeded sequence; write the fixture."""
    with tempfile.TemporaryDirectory() as tmp:
        torch.save(seeded_checkpoint(0), Path(tmp) / "ckpt.pt")
        np.savez(
            Path(tmp) / "inputs.npz",
            labels=edge_maps(NUM_FRAMES),
            ref_label=edge_maps(1, shift=-2),
            ref_image=reference_image(),
        )
        subprocess.run(
            [sys.executable, "-c", _CHILD, str(upstream), str(deps), tmp], check=True, cwd=tmp
        )
        r = torch.load(Path(tmp) / "out.pt", weights_only=True)
    fixture = summarise(r["outs"])
    fixture["layout"] = np.array(r["layout"])
    fixture["layout_net_G"] = np.array(r["layout_net_G"])
    fixture["source_sha256"] = np.array(hashlib.sha256(source_image().tobytes()).hexdigest())
    np.savez_compressed(out, **fixture)


# ---------------------------------------------------------------------------- tests


@pytest.fixture(scope="module")
def ref() -> dict[str, np.ndarray]:
    return dict(np.load(FIXTURE))


@pytest.fixture(scope="module")
def ckpt_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("fsvid2vid") / "epoch_00200_iteration_000120000_checkpoint.pt"
    torch.save(seeded_checkpoint(0), path)
    return path


@pytest.fixture(scope="module")
def net(ckpt_file: Path) -> Generator:
    return load_fsvid2vid(ckpt_file)


def _layout(state: dict[str, torch.Tensor]) -> list[str]:
    return [f"{k}:{'x'.join(map(str, v.shape))}" for k, v in state.items()]


def test_seeded_checkpoint_loads_strictly(ckpt_file: Path, net: Generator) -> None:
    sd = torch.load(ckpt_file, weights_only=True)["net_G"]
    key = "up_0.conv_block_0.layers.conv.weight"
    assert torch.equal(net.state_dict()[key], sd[PREFIX + key])  # the EMA copy
    assert not net.training and len(net.state_dict()) == 472
    assert net.flow_network_temp is net.flow_network_ref


def test_layout_equals_upstream(ref: dict[str, np.ndarray]) -> None:
    assert _layout(Generator(FACE).state_dict()) == ref["layout"].tolist()
    net_g = seeded_checkpoint(0)["net_G"]
    assert sorted(_layout(net_g)) == sorted(ref["layout_net_G"].tolist())


def _averaged_only(seed: int) -> dict:
    """A seeded checkpoint without the trained copy (the loader never reads it; half size)."""
    ck = seeded_checkpoint(seed)
    ck["net_G"] = {k: v for k, v in ck["net_G"].items() if not k.startswith("module.module.")}
    return ck


def test_mismatched_checkpoint_names_file_and_keys(tmp_path: Path) -> None:
    ck = _averaged_only(1)
    sd = ck["net_G"]
    del sd[PREFIX + "up_3.conv_block_s.layers.conv.bias"]
    sd[PREFIX + "bogus.weight"] = torch.zeros(1)
    sd[PREFIX + "conv_img.layers.conv.bias"] = torch.zeros(4)
    path = tmp_path / "mismatch.pt"
    torch.save(ck, path)
    with pytest.raises(InputError, match=str(path)) as e:
        load_fsvid2vid(path)
    msg = str(e.value)
    assert "\n" not in msg
    for want in (
        "missing keys up_3.conv_block_s.layers.conv.bias",
        "unexpected keys bogus.weight",
        "shape mismatch conv_img.layers.conv.bias (4,) != (3,)",
    ):
        assert want in msg


@pytest.mark.parametrize("change", ["no_average", "toplevel"])
def test_bad_checkpoint_names_file(tmp_path: Path, change: str) -> None:
    ck = {"net_G": {"module.module.conv_img.layers.conv.bias": torch.zeros(3)}}
    if change == "toplevel":
        ck = {"state_dict": ck["net_G"]}
    path = tmp_path / f"{change}.pt"
    torch.save(ck, path)
    with pytest.raises(InputError, match=str(path)) as e:
        load_fsvid2vid(path)
    assert "\n" not in str(e.value) and "net_G" in str(e.value)


def test_spectral_norm_folds_like_torch_eval() -> None:
    """The trained copy's ``weight_orig/u/v`` fold to torch's eval-mode spectral norm."""
    ck = seeded_checkpoint(0)["net_G"]
    stem = "module.module.weight_generator.fc_spade_0_1.2.layers.conv."
    lin = torch.nn.utils.spectral_norm(torch.nn.Linear(128, 130))
    lin.load_state_dict(
        {k[len(stem) :]: v for k, v in ck.items() if k.startswith(stem)}, strict=True
    )
    lin.eval()
    with torch.no_grad():
        lin(torch.zeros(1, 128))  # eval: no power iteration, stored u, v
    folded = fold_spectral_norm({k[len(stem) :]: v for k, v in ck.items() if k.startswith(stem)})
    assert list(folded) == ["bias", "weight"]
    torch.testing.assert_close(folded["weight"], lin.weight, rtol=1e-6, atol=1e-7)
    # and the loader accepts an averaged copy that kept its spectral norm (remove_sn=False)
    trained = {k[len("module.module.") :]: v for k, v in ck.items() if "module.module." in k}
    fixed = fold_spectral_norm(trained)
    assert _layout(fixed) == _layout(Generator(FACE).state_dict())


@pytest.fixture(scope="module")
def ours(net: Generator) -> dict[str, np.ndarray]:
    outs = run_sequence(net, edge_maps(NUM_FRAMES), edge_maps(1, shift=-2), reference_image())
    return summarise(outs)


#: max |ours - upstream| allowed. Measured (torch 2.14 CPU): frame 0 image 6e-6, flow/mask/
#: warp 0; the fed-back output carries fp32 noise into frames 1-2: image 5.4e-5, mask 2.1e-5,
#: flow 2.4e-4 px (of 11 px), warped previous output 1.25e-4 (bilinear samples of edges).
TOLERANCE = {"mean": 1e-6, "patch": 1e-4, "sub": 1e-4, "mask": 1e-4, "flow": 1e-3, "warp": 5e-4}


def test_parity_with_upstream(ours: dict[str, np.ndarray], ref: dict[str, np.ndarray]) -> None:
    assert hashlib.sha256(source_image().tobytes()).hexdigest() == str(ref["source_sha256"])
    for key, tol in TOLERANCE.items():
        np.testing.assert_allclose(ours[key], ref[key], rtol=0, atol=tol, err_msg=key)
    # the first frame (no previous output) is tighter
    np.testing.assert_allclose(ours["sub"][0], ref["sub"][0], rtol=0, atol=2e-5)
    assert np.array_equal(ours["flow"][0, 1], ref["flow"][0, 1])  # no previous-frame flow


def test_outputs_are_sane(ours: dict[str, np.ndarray]) -> None:
    assert np.abs(ours["sub"]).max() <= 1 and ours["sub"].std() > 0.05
    assert np.all(ours["flow"][0, 1] == 0) and np.abs(ours["flow"][1:, 1]).max() > 0


def test_previous_frame_matters(net: Generator) -> None:
    """Without the fed-back previous frame, frame 2 differs (the temporal branch is live)."""
    args = (edge_maps(2), edge_maps(1, shift=-2), reference_image())
    with_prev = run_sequence(net, *args)[1]["fake_images"]
    without = run_sequence(net, *args, feed_back=False)[1]["fake_images"]
    assert (with_prev - without).abs().max() > 1e-2


if __name__ == "__main__":
    if len(sys.argv) != 4 or sys.argv[1] != "--regenerate":
        sys.exit("usage: python -m tests.test_fsvid2vid_model --regenerate UPSTREAM_DIR DEPS")
    regenerate(Path(sys.argv[2]), Path(sys.argv[3]))
    print(f"wrote {FIXTURE}")
