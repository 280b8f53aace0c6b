"""One step of hybrid-encoder training (paper Eqs. 5-14): the latent-discriminator step,
then the encoder step, on one batch of triplets. Used by :mod:`.train`'s loop.

The forward pass (one encoder pass over ``(S, D1, D2)``, one G pass)::

    {W_ID, S_F}^{S,D1,D2} = E(I^S, I^D1, I^D2)                       (Eq. 1)
    I^{S->S}, I^{S->D1}, I^{S->D2}, I^{S->D} = G(A(W_ID^S) + S_F^{S,D1,D2,0})
    L = L_self + L_reenact + l_id L_id + l_wid L_w_id + l_d L_d + l_reg L_reg + l_f L_f

:func:`train_step` returns the unweighted terms it logged (``total`` is the weighted
Eq. 14 sum) and the images of the sample grid.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .cma import to_size
from .config import HybridConfig
from .discriminator import (
    LatentDiscriminator,
    d_logistic_loss,
    g_nonsaturating_loss,
    r1_penalty,
    sample_real_w,
)
from .losses import identity_loss, rec_loss, regularization, w_id_consistency
from .masks import face_region_mask, feature_rec_loss
from .pairs import PairBatch, PairSampler
from .train_ddp import average_grads

__all__ = [
    "D_REG_EVERY",
    "TERMS",
    "WEIGHT_OF",
    "EncoderPass",
    "ImageFn",
    "Run",
    "identity_fn",
    "lpips_fn",
    "mask_dilation",
    "train_mode",
    "train_step",
    "trainable",
]

#: Lazy R1: the R1 step runs every this many steps (e4e/StyleGAN2 ``d_reg_every``).
D_REG_EVERY = 16
#: Loss terms of the encoder objective, as logged.
TERMS = ("self", "reenact", "id", "w_id", "reg", "feat", "adv")
#: Logged term -> its lambda in ``[loss]`` (``self`` and ``reenact`` have weight 1).
WEIGHT_OF = {"id": "id", "w_id": "w_id", "reg": "reg", "feat": "feat", "adv": "adv"}

ImageFn = Callable[[Tensor], Tensor]


# ------------------------------------------------------------------- loss networks
def lpips_fn(cfg: HybridConfig, weights: Mapping[str, Path], device: str) -> ImageFn | None:
    """LPIPS(alex) as ``(x, y) -> (B, 1, 1, 1)`` when ``loss.lpips > 0``, else None."""
    if cfg.loss.lpips == 0:
        return None
    from reenactbench.metrics.lpips import load_lpips_alex
    from reenactbench.weights import weight_path

    net = load_lpips_alex(weight_path("lpips-alex", weights), device).requires_grad_(False)
    return net  # type: ignore[return-value]


def identity_fn(cfg: HybridConfig, weights: Mapping[str, Path], device: str) -> ImageFn | None:
    """IR-SE50 embedding ``(B, 3, H, W) in [-1, 1] -> (B, 512)`` (pSp's ID loss input:
    resize to 256^2, crop, pool to 112^2) when ``loss.id > 0``, else None."""
    if cfg.loss.id == 0:
        return None
    from reenactbench.nn.irse50 import load_irse50, psp_id_input
    from reenactbench.weights import weight_path

    net = load_irse50(weight_path("ir-se50", weights), device)

    def embed(x: Tensor) -> Tensor:
        return net(psp_id_input(to_size(x, 256).contiguous()))

    return embed


def _no_lpips(x: Tensor, y: Tensor) -> Tensor:
    raise AssertionError("LPIPS called with loss.lpips == 0")  # rec_loss skips weight 0


def _autocast(cfg: HybridConfig, device: torch.device) -> AbstractContextManager[Any]:
    if device.type != "cuda" or cfg.train.amp == "none":
        return nullcontext()
    dtype = torch.bfloat16 if cfg.train.amp == "bf16" else torch.float16
    return torch.autocast("cuda", dtype=dtype)


def mask_dilation(size: int) -> int:
    """Dilation radius (pixels) of the Eq. 13 masks at ``size``: ``max(1, round(size/32))``."""
    return max(1, round(size / 32))


# ---------------------------------------------------------------- what a step uses
class EncoderPass(nn.Module):
    """``x -> (w_id, *s_f)`` of the model's encoder: what DDP wraps (one forward per step)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        lat = self.model.encode(x)
        return (lat.w_id, *lat.s_f)


@dataclass
class Run:
    """Everything a step needs, built once."""

    cfg: HybridConfig
    stage: int
    model: nn.Module
    encoder: nn.Module  # EncoderPass, maybe DDP-wrapped
    disc: LatentDiscriminator | None
    opt: torch.optim.Optimizer
    d_opt: torch.optim.Optimizer | None
    scaler: torch.amp.GradScaler | None
    sampler: PairSampler
    z_gen: torch.Generator
    lpips_fn: ImageFn | None
    id_fn: ImageFn | None
    device: torch.device
    lr: float


def trainable(model: nn.Module, stage: int) -> list[nn.Parameter]:
    """Set requires_grad per stage and return the optimised parameters (checked)."""
    model.requires_grad_(False)
    params = list(model.encoder_parameters() if stage == 1 else model.head_parameters())
    for p in params:
        p.requires_grad_(True)
    gen_ids = {id(p) for p in model.generator.parameters()}
    pyr_ids = {id(p) for p in model.pyramid.parameters()}
    chosen = {id(p) for p in params}
    if chosen & gen_ids:
        raise AssertionError("the generator must stay frozen")
    pyr_grad = any(p.requires_grad for p in model.pyramid.parameters())
    if stage == 2 and (chosen & pyr_ids or pyr_grad):
        raise AssertionError("stage 2 must freeze the pyramid F")
    if stage == 1 and not pyr_ids <= chosen:
        raise AssertionError("stage 1 must train the pyramid F")
    return params


def train_mode(model: nn.Module, stage: int) -> None:
    """Train mode for E; G stays in eval, and so does F in stage 2 (frozen BatchNorm)."""
    model.train()
    model.generator.eval()
    if stage == 2:
        model.pyramid.eval()  # frozen F: BatchNorm statistics stay as in stage 1


# ------------------------------------------------------------------------ the step
def _split(t: Tensor, n: int) -> tuple[Tensor, ...]:
    return tuple(t.chunk(n))


def _forward(run: Run, batch: PairBatch) -> tuple[Tensor, list[Tensor], tuple[Tensor, ...]]:
    """Encode ``(S, D1, D2)`` in one pass and render the four images in one G pass.
    Returns ``W_ID^S``, ``S_F^{D1}`` per layer and ``(I^{S->S}, I^{S->D1}, I^{S->D2},
    I^{S->D})`` at the encoder's input size."""
    out = run.encoder(torch.cat((batch.src, batch.d1, batch.d2)))
    w_all, sf_all = out[0], out[1:]
    w_s, _, _ = _split(w_all, 3)
    sf = [_split(s, 3) for s in sf_all]  # per layer: (S, D1, D2)
    sf_s, sf_d1, sf_d2 = ([s[i] for s in sf] for i in range(3))
    # I^{S->S}, I^{S->D1}, I^{S->D2}, I^{S->D} in one G pass (S_F = 0: identity only)
    w4 = w_s.repeat(4, 1, 1)
    sf4 = [
        torch.cat((a, b, c, torch.zeros_like(a)))
        for a, b, c in zip(sf_s, sf_d1, sf_d2, strict=True)
    ]
    images = to_size(run.model.generate(w4, sf4), run.cfg.encoder.input_size)
    return w_s, sf_d1, _split(images, 4)


def _losses(
    run: Run, batch: PairBatch, w_s: Tensor, sf_d1: list[Tensor], images: tuple[Tensor, ...]
) -> tuple[Tensor, dict[str, Tensor]]:
    """The Eq. 14 total and its unweighted terms."""
    w, model, size = run.cfg.loss, run.model, run.cfg.encoder.input_size
    y_ss, y_sd1, y_sd2, y_sd = images
    lp = run.lpips_fn or _no_lpips
    parts: dict[str, Tensor] = {}
    parts["self"], _ = rec_loss(y_ss, batch.src_target, lp, w)  # Eq. 5
    parts["reenact"], _ = rec_loss(y_sd1, batch.d1_target, lp, w)  # Eq. 6
    if run.id_fn is not None:  # Eqs. 8-9
        with torch.no_grad():
            e_src = run.id_fn(batch.src_target)
        e_id = run.id_fn(torch.cat((y_sd, y_sd2)) if w.idreg else y_sd)
        e_sd, e_sd2 = _split(e_id, 2) if w.idreg else (e_id, None)
        parts["id"] = identity_loss(e_src.float(), e_sd.float(), e_sd2, w.idreg)
    if w.w_id > 0:  # Eq. 10: re-encode I^{S->D2}
        w_cycle = model.encode(y_sd2).w_id
        parts["w_id"] = w_id_consistency(w_s.float(), w_cycle.float())
    parts["reg"] = regularization(w_s.float(), [s.float() for s in sf_d1], w.lambda_s)
    if w.feat > 0:  # Eq. 13
        dil = mask_dilation(size)
        m_s = face_region_mask(batch.src_landmarks, size, dil)
        m_d1 = face_region_mask(batch.d1_landmarks, size, dil)
        parts["feat"], _ = feature_rec_loss(
            [(y_ss, batch.src_target, m_s), (y_sd1, batch.d1_target, m_d1)], lp, w
        )
    if run.disc is not None and w.adv > 0:
        parts["adv"] = g_nonsaturating_loss(run.disc(w_s.float()))
    total = parts["self"] + parts["reenact"]
    for k, v in parts.items():
        if k in WEIGHT_OF:
            total = total + getattr(w, WEIGHT_OF[k]) * v
    return total, parts


def _backward(run: Run, total: Tensor) -> None:
    run.opt.zero_grad(set_to_none=True)
    if run.scaler is not None:
        run.scaler.scale(total).backward()
        run.scaler.step(run.opt)
        run.scaler.update()
    else:
        total.backward()
        run.opt.step()


def train_step(run: Run, batch: PairBatch, step: int) -> tuple[dict[str, float], dict[str, Tensor]]:
    """One training step (D step, then encoder step). Returns logged values and images
    (``src``, ``d1``, ``s_d1``, ``d2``, ``s_d2``: the first four rows of the batch)."""
    logged: dict[str, float] = {}
    with _autocast(run.cfg, run.device):
        w_s, sf_d1, images = _forward(run, batch)
    # latent discriminator step (fp32), before the encoder's adversarial loss (e4e order)
    if run.disc is not None and run.cfg.loss.adv > 0:
        logged.update(_d_step(run, w_s.detach().float().flatten(0, 1), step))
    with _autocast(run.cfg, run.device):
        total, parts = _losses(run, batch, w_s, sf_d1, images)
    _backward(run, total)
    logged["total"] = float(total.detach())
    logged.update({k: float(v.detach()) for k, v in parts.items()})
    size = run.cfg.encoder.input_size
    shown = {"src": batch.src_target, "d1": batch.d1_target, "s_d1": images[1], "s_d2": images[2]}
    shown["d2"] = to_size(batch.d2, size)
    n = min(batch.src.shape[0], 4)
    return logged, {k: v[:n].detach().float() for k, v in shown.items()}


def _d_step(run: Run, fake_w: Tensor, step: int) -> dict[str, float]:
    """e4e's discriminator step on ``fake_w`` ``(N, style_dim)``; lazy R1."""
    disc, d_opt = run.disc, run.d_opt
    assert disc is not None and d_opt is not None
    disc.requires_grad_(True)
    real_w = sample_real_w(run.model.generator, fake_w.shape[0], run.z_gen)
    loss = d_logistic_loss(disc(real_w), disc(fake_w))
    d_opt.zero_grad(set_to_none=True)
    loss.backward()
    average_grads(disc)
    d_opt.step()
    out = {"d": float(loss.detach())}
    if step % D_REG_EVERY == 0:
        r1 = r1_penalty(disc, real_w)
        d_opt.zero_grad(set_to_none=True)
        (run.cfg.loss.r1 / 2 * r1 * D_REG_EVERY).backward()
        average_grads(disc)
        d_opt.step()
        out["r1"] = float(r1.detach())
    disc.requires_grad_(False)
    return out
