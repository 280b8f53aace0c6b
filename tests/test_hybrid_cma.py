"""Cyclic Manifold Adjustment and PTI (baselines/hybrid/cma.py, pti.py) on a tiny model.

The model is a stand-in following the contract's ``HybridModel`` interface (``encode ->
Latents(w_id, s_f)``, ``styles_for``, ``generate``, ``.generator``): a seeded
``Generator(64, 64, 2, 1)`` and a small conv encoder (with a BatchNorm, so eval mode is
checked). The perceptual distance is a fixed random conv feature distance, not LPIPS.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field, replace

import pytest
import torch
import torch.nn.functional as F
from reenactbench.baselines.hybrid.cma import (
    EncodedFrames,
    cycle_loss,
    cyclic_manifold_adjustment,
    encode_frames,
    frozen_encoder,
    restoring_generator,
    select_generator_parameters,
    to_size,
)
from reenactbench.baselines.hybrid.pti import pivotal_tuning
from torch import Tensor, nn

from reenactbench.errors import InputError
from reenactbench.nn.stylegan2 import Generator
from reenactbench.nn.stylespace import first_style_indices

SIZE = 64  # encoder input size
G_SIZE = 32  # stand-in generator output: CMA resizes it to SIZE for E and the losses
WIDTH = 32  # stand-in generator channels (the real table's 512 costs ~1 s per CMA step)


def seeded_generator(size: int, seed: int, width: int | None = WIDTH) -> Generator:
    """``Generator(size, 64, 2, 1)`` from ``reset_parameters(seed)``; ``width`` caps
    rosinality's channel table (512 up to 32x32) for speed (``max_channels``); ``None``
    keeps it."""
    gen = torch.Generator().manual_seed(seed)
    return Generator(size, 64, 2, 1, max_channels=width or 0).reset_parameters(gen)


@dataclass
class Latents:
    w_id: Tensor
    s_f: list[Tensor]


class StandInHybrid(nn.Module):
    """Contract-shaped toy hybrid model: E(x) -> W_ID = latent_avg + offsets, S_F offsets
    on the first ``n_sf`` forward-order StyleSpace layers."""

    def __init__(
        self, g_size: int = G_SIZE, n_sf: int = 10, seed: int = 0, width: int | None = WIDTH
    ) -> None:
        super().__init__()
        self.generator = seeded_generator(g_size, seed, width)
        gen = torch.Generator().manual_seed(seed + 1)
        g = self.generator
        self.sf_indices = tuple(first_style_indices(g.style_layers, n_sf, include_torgb=True))
        self.pyramid = nn.Sequential(
            nn.Conv2d(3, 16, 4, 2, 1),
            nn.BatchNorm2d(16),
            nn.LeakyReLU(0.2),
            nn.Conv2d(16, 32, 4, 2, 1),
            nn.LeakyReLU(0.2),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.id_heads = nn.Linear(32, g.n_latent * g.style_dim)
        self.f_heads = nn.ModuleList(nn.Linear(32, g.style_layers[i].dim) for i in self.sf_indices)
        with torch.no_grad():
            for p in [*self.pyramid.parameters(), *self.id_heads.parameters()]:
                p.copy_(0.2 * torch.randn(p.shape, generator=gen))
            for p in self.f_heads.parameters():
                p.copy_(0.05 * torch.randn(p.shape, generator=gen))
            self.register_buffer("latent_avg", g.mean_latent(256, gen))

    def encode(self, x: Tensor) -> Latents:
        h = self.pyramid(x)
        w = self.latent_avg + self.id_heads(h).view(x.shape[0], -1, self.generator.style_dim)
        return Latents(w, [head(h) for head in self.f_heads])

    def styles_for(self, w_id: Tensor, s_f: list[Tensor] | None) -> list[Tensor]:
        styles = self.generator.styles(w_id)
        for k, i in enumerate(self.sf_indices if s_f is not None else ()):
            styles[i] = styles[i] + s_f[k]
        return styles

    def generate(self, w_id: Tensor, s_f=None, noise="const", edit=None) -> Tensor:
        w = w_id if edit is None else w_id + edit
        return self.generator.synthesis_from_styles(self.styles_for(w, s_f), noise=noise)


class FeatureDistance(nn.Module):
    """Cheap LPIPS stand-in: mean squared distance of channel-normalised features of a
    fixed random conv; ``(B,)``."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, 2, 1)
        with torch.no_grad():
            gen = torch.Generator().manual_seed(123)
            for p in self.conv.parameters():
                p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
        self.requires_grad_(False)

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        fx, fy = (F.normalize(F.leaky_relu(self.conv(t), 0.2), dim=1) for t in (x, y))
        return (fx - fy).pow(2).sum(1).mean((1, 2))


@dataclass(frozen=True)
class Cma:
    steps: int = 10
    lr: float = 3e-4
    layers: str | tuple[str, ...] = "all"
    batch: int = 2
    lambda_lpips: float = 1.0
    lambda_l2: float = 1.0


@dataclass(frozen=True)
class Pti:
    steps: int = 20
    lr: float = 3e-4


@dataclass
class Clip:
    source: Tensor  # (1, 3, 64, 64) in [-1, 1]
    driving: Tensor  # (T, 3, 64, 64) in [-1, 1]
    extra: dict[str, Tensor] = field(default_factory=dict)


def smooth_images(n: int, seed: int) -> Tensor:
    """``(n, 3, 64, 64)`` smooth random images in (-1, 1)."""
    gen = torch.Generator().manual_seed(seed)
    low = torch.randn(n, 3, 8, 8, generator=gen)
    return torch.tanh(F.interpolate(low, size=(SIZE, SIZE), mode="bilinear"))


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    """One intra-op thread: these small ops run ~10x slower with 2 threads on a busy CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def model() -> StandInHybrid:
    return StandInHybrid().eval()  # eval: the BatchNorm uses its running statistics


@pytest.fixture
def clip() -> Clip:
    frames = smooth_images(7, seed=5)
    return Clip(source=frames[:1], driving=frames[1:])


def full_objective(model, clip: Clip, lpips_fn, cfg: Cma = Cma()) -> float:
    """Eq. 15 over the whole clip (every driving frame), no gradient; model in eval mode."""
    assert not model.training
    with torch.no_grad():
        src = encode_frames(model, clip.source)
        drv = encode_frames(model, clip.driving)
        loss, _ = cycle_loss(
            model, clip.source, src, clip.driving, drv, lpips_fn, cfg.lambda_l2, cfg.lambda_lpips
        )
    return float(loss)


def snapshot(module: nn.Module) -> dict[str, Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def encoder_state(model: nn.Module) -> dict[str, Tensor]:
    return {k: v for k, v in snapshot(model).items() if not k.startswith("generator.")}


def test_cma_lowers_objective(model, clip):
    lpips_fn = FeatureDistance()
    before = full_objective(model, clip, lpips_fn)
    losses = cyclic_manifold_adjustment(
        model, clip.source, clip.driving, Cma(), lpips_fn, torch.Generator().manual_seed(0)
    )
    after = full_objective(model, clip, lpips_fn)
    assert len(losses) == 10
    assert set(losses[0]) == {"total", "source_l2", "source_lpips", "driving_l2", "driving_lpips"}
    first = losses[0]
    assert first["total"] == pytest.approx(
        first["source_l2"] + first["source_lpips"] + first["driving_l2"] + first["driving_lpips"],
        rel=1e-5,
    )
    assert (before, after) == pytest.approx((9.5167, 5.5275), abs=2e-3)  # pinned: toy model
    assert after < 0.8 * before
    assert losses[-1]["total"] < 0.8 * losses[0]["total"]


def test_cma_freezes_encoder_and_restores_flags(model, clip):
    lpips_fn = FeatureDistance()
    model.train()
    model.f_heads[0].requires_grad_(False)  # a caller's flag must survive too
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    enc = encoder_state(model)  # includes BatchNorm running stats
    g_before = snapshot(model.generator)
    cyclic_manifold_adjustment(
        model, clip.source, clip.driving, Cma(steps=3), lpips_fn, torch.Generator().manual_seed(0)
    )
    after = encoder_state(model)
    assert after.keys() == enc.keys()
    assert all(torch.equal(after[k], enc[k]) for k in enc)
    assert all(p.grad is None for p in model.parameters())
    assert flags == {n: p.requires_grad for n, p in model.named_parameters()}
    assert all(m.training for m in model.modules())
    g_after = snapshot(model.generator)
    assert not torch.equal(g_after["convs.0.conv.weight"], g_before["convs.0.conv.weight"])


def test_cma_synthesis_keeps_mapping(model, clip):
    g_before = snapshot(model.generator)
    cyclic_manifold_adjustment(
        model,
        clip.source,
        clip.driving,
        Cma(steps=2, layers="synthesis"),
        FeatureDistance(),
        torch.Generator().manual_seed(0),
    )
    g_after = snapshot(model.generator)
    changed = {k for k in g_before if not torch.equal(g_before[k], g_after[k])}
    assert not any(k.startswith("style.") for k in changed)
    assert "conv1.conv.weight" in changed and "to_rgbs.2.conv.modulation.weight" in changed
    assert not any(k.startswith("noises.") for k in changed)  # buffers are not trained


def test_cma_prefix_list_changes_only_those(model, clip):
    g_before = snapshot(model.generator)
    cyclic_manifold_adjustment(
        model,
        clip.source,
        clip.driving,
        Cma(steps=2, layers=("to_rgbs", "convs.1")),
        FeatureDistance(),
        torch.Generator().manual_seed(0),
    )
    g_after = snapshot(model.generator)
    changed = {k for k in g_before if not torch.equal(g_before[k], g_after[k])}
    assert changed
    assert all(k.startswith(("to_rgbs.", "convs.1.")) for k in changed), changed
    assert "convs.1.conv.weight" in changed


def test_select_generator_parameters(model):
    g = model.generator
    n_all = len(list(g.parameters()))
    assert len(select_generator_parameters(g, "all")) == n_all
    synth = [n for n, _ in select_generator_parameters(g, "synthesis")]
    assert len(synth) == n_all - 2 * g.n_mlp and not any(n.startswith("style.") for n in synth)
    picked = select_generator_parameters(g, ["convs.1"])
    assert {".".join(n.split(".")[:2]) for n, _ in picked} == {"convs.1"} and len(picked) == 5
    with pytest.raises(InputError, match="cma.layers"):
        select_generator_parameters(g, "mapping")
    with pytest.raises(InputError, match="'convs.99'"):
        select_generator_parameters(g, ["convs.99"])


def test_cma_is_deterministic(clip):
    lpips_fn = FeatureDistance()
    runs = []
    for seed in (7, 7, 8):  # batch 2 of 6 frames: seeds 7 and 8 draw different frames
        model = StandInHybrid().eval()
        runs.append(
            cyclic_manifold_adjustment(
                model,
                clip.source,
                clip.driving,
                Cma(steps=4),
                lpips_fn,
                torch.Generator().manual_seed(seed),
            )
        )
    assert runs[0] == runs[1]
    assert runs[0] != runs[2]


def test_cma_short_clip_samples_with_replacement(model):
    frames = smooth_images(3, seed=9)
    losses = cyclic_manifold_adjustment(
        model,
        frames[:1],
        frames[1:],
        Cma(steps=2, batch=4),
        FeatureDistance(),
        torch.Generator().manual_seed(0),
    )
    assert len(losses) == 2


def test_cycle_gradient_reaches_g_through_encoder(model, clip):
    """Eq. 16: E(I^{S->D}) is differentiable w.r.t. its input while E stays frozen."""
    seen: list[Tensor] = []
    encode = model.encode

    def spy(x: Tensor) -> Latents:
        if x.requires_grad:
            x.retain_grad()
            seen.append(x)
        return encode(x)

    model.encode = spy
    trainable = list(model.generator.parameters())
    with frozen_encoder(model, trainable):
        src, drv = encode_frames(model, clip.source), encode_frames(model, clip.driving[:2])
        loss, _ = cycle_loss(
            model, clip.source, src, clip.driving[:2], drv, FeatureDistance(), 1, 1
        )
        loss.backward()
    assert len(seen) == 1 and seen[0].grad is not None and seen[0].grad.abs().sum() > 0
    assert all(p.grad is None for n, p in model.named_parameters() if not n.startswith("gen"))


def test_to_size_and_encoded_frames():
    x = smooth_images(2, seed=1).requires_grad_(True)
    y = to_size(x, 32)
    assert y.shape == (2, 3, 32, 32)
    y.sum().backward()
    assert x.grad is not None
    assert to_size(x, 64) is x
    enc = EncodedFrames(torch.zeros(1, 10, 4), [torch.zeros(1, 5)])
    assert enc.expand(3).w_id.shape == (3, 10, 4) and enc.expand(3).s_f[0].shape == (3, 5)


def test_restoring_generator(model, clip):
    before = snapshot(model.generator)
    with restoring_generator(model):
        pivotal_tuning(model, clip.source, Pti(steps=2), FeatureDistance(), None)
        assert not torch.equal(model.generator.conv1.conv.weight, before["conv1.conv.weight"])
    after = snapshot(model.generator)
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_pti_lowers_source_reconstruction(model, clip):
    def rec_mse() -> float:
        with torch.no_grad():
            lat = model.encode(clip.source)
            rec = to_size(model.generate(lat.w_id, lat.s_f), SIZE)
            return float(F.mse_loss(rec, clip.source))

    enc = encoder_state(model)
    before = rec_mse()
    losses = pivotal_tuning(model, clip.source, Pti(), FeatureDistance(), lpips_threshold=None)
    after = rec_mse()
    assert len(losses) == 20 and set(losses[0]) == {"total", "l2", "lpips"}
    assert losses[0]["l2"] == pytest.approx(before, rel=1e-5)
    assert (before, after) == pytest.approx((2.0174, 0.6509), abs=2e-3)  # pinned: toy model
    assert after < 0.5 * before
    assert all(torch.equal(v, encoder_state(model)[k]) for k, v in enc.items())


def test_pti_early_stop(model, clip):
    before = snapshot(model.generator)
    losses = pivotal_tuning(model, clip.source, Pti(), FeatureDistance(), lpips_threshold=10.0)
    assert len(losses) == 1
    assert all(torch.equal(before[k], v) for k, v in snapshot(model.generator).items())


def test_cma_and_pti_on_the_real_tiny_model():
    """The contract's HybridModel with the tiny config (seeded 64x64 G with rosinality's
    channel table, 18.7M parameters: one CMA step of one frame costs seconds on CPU)."""
    from reenactbench.baselines.hybrid.config import load_config
    from reenactbench.baselines.hybrid.model import build_model

    cfg = load_config("tiny")
    model = build_model(cfg).eval()  # G comes frozen (requires_grad False)
    frames = model.preprocess((smooth_images(3, seed=5).permute(0, 2, 3, 1) * 127.5 + 127.5).byte())
    enc, g_before = encoder_state(model), snapshot(model.generator)
    losses = cyclic_manifold_adjustment(
        model,
        frames[:1],
        frames[1:],
        replace(cfg.cma, steps=1, batch=1),
        FeatureDistance(),
        torch.Generator().manual_seed(0),
    )
    assert len(losses) == 1 and losses[0]["total"] == pytest.approx(5.4075, abs=5e-3)
    assert all(torch.equal(v, encoder_state(model)[k]) for k, v in enc.items())
    assert not torch.equal(model.generator.convs[7].conv.weight, g_before["convs.7.conv.weight"])
    assert not any(p.requires_grad for p in model.generator.parameters())  # flags restored
    pti = pivotal_tuning(model, frames[:1], cfg.pti, FeatureDistance(), lpips_threshold=10.0)
    assert len(pti) == 1 and pti[0]["l2"] > 0  # stopped before any update
