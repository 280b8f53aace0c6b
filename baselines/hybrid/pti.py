"""Pivotal Tuning (PTI, Roich et al. 2022) on the source frame: the "- CMA + PTI" ablation.

The paper's Table 2 row "Ours - CMA + PTI" replaces Cyclic Manifold Adjustment
(:mod:`.cma`) with PTI's objective (1): fine-tune G so that the pivot latent reproduces
the source frame. Here the pivot is the encoder's own inversion of the source, not an
optimised W (PTI's ``first_inv_type = 'w+'`` mode, which takes its pivot from an e4e
encoder, is the closest upstream setting)::

    W_ID^S, S_F^S = E(I^S)                                  (once, detached)
    I^S_rec       = G(A(W_ID^S) + S_F^S)
    loss          = 1 * MSE(I^S_rec, I^S) + 1 * LPIPS(I^S_rec, I^S)

Choices, from danielroich/PTI at commit f1331c4caaddc45577505ff02564bee64159096b
(``configs/hyperparameters.py``, ``training/coaches/{base,single_id}_coach.py``; MIT):

- Pivot includes S_F^S, the source's own deformation latent: the source frame is
  ``G(A(W_ID^S) + S_F^S)`` in the hybrid model (Eqs. 1-4), so this is the latent that
  should reproduce it; ``G(A(W_ID^S))`` alone renders the identity without the source's
  expression and pose and could not match the frame.
- Weights ``pt_l2_lambda = 1``, ``pt_lpips_lambda = 1`` (:data:`PTI_L2`,
  :data:`PTI_LPIPS`); Adam over every parameter of G (``self.G.parameters()``) at
  ``pti_learning_rate = 3e-4`` for ``max_pti_steps = 350`` (``[pti]`` lr, steps).
- Early stop as PTI's ``single_id_coach``: when the step's LPIPS is at most
  ``LPIPS_value_threshold = 0.06`` the loop ends before that update
  (``lpips_threshold``; ``None`` disables it). The value is on the AlexNet-LPIPS scale.
- PTI's locality regulariser (``Space_Regulizer``: keep G unchanged at latents 30 units
  away from the pivot) is left out: upstream ships it off
  (``use_locality_regularization = False``) and the paper describes PTI by objective (1).
- Losses are computed at the encoder input size (G's output resized, antialiased), as
  in CMA; noise ``"const"`` (PTI: ``noise_mode='const'``).

PTI changes ``model.generator`` in place (restore with :func:`.cma.restoring_generator`).
"""

from __future__ import annotations

from typing import Any, Protocol

import torch
from torch import Tensor

from .cma import LpipsFn, encode_frames, frozen_encoder, image_loss, to_size

__all__ = ["PTI_L2", "PTI_LPIPS", "PTI_LPIPS_THRESHOLD", "PtiSettings", "pivotal_tuning"]

#: PTI's ``pt_l2_lambda`` and ``pt_lpips_lambda``.
PTI_L2 = 1.0
PTI_LPIPS = 1.0
#: PTI's ``LPIPS_value_threshold`` (early stop; AlexNet LPIPS scale).
PTI_LPIPS_THRESHOLD = 0.06


class PtiSettings(Protocol):
    """The ``[pti]`` section of the hybrid config (``HybridConfig.pti``)."""

    steps: int
    lr: float


def pivotal_tuning(
    model: Any,
    source: Tensor,
    cfg_pti: PtiSettings,
    lpips_fn: LpipsFn,
    lpips_threshold: float | None = PTI_LPIPS_THRESHOLD,
) -> list[dict[str, float]]:
    """Fine-tune every parameter of ``model.generator`` in place so that the source's
    pivot ``G(A(W_ID^S) + S_F^S)`` reconstructs the source (PTI objective (1)).

    Args:
        model: a ``HybridModel`` (``encode``, ``generate``, ``.generator``); the encoder
            is frozen and in eval mode meanwhile (flags and modes restored after).
        source: ``(1, 3, in, in)`` float in [-1, 1] at the encoder input size.
        cfg_pti: ``[pti]`` settings (steps, lr).
        lpips_fn: ``(x, y) -> (B, ...)`` perceptual distance on [-1, 1] images.
        lpips_threshold: stop once a step's LPIPS is <= this (before updating);
            ``None`` runs all ``cfg_pti.steps``.

    Returns:
        One dict per evaluated step, ``{"total", "l2", "lpips"}`` before that step's
        update (the last one is the stopping step when the threshold ended the loop).
        Deterministic: no randomness is drawn.
    """
    if source.ndim != 4 or source.shape[:2] != (1, 3) or source.shape[2] != source.shape[3]:
        raise ValueError(f"source must be (1, 3, in, in), got {tuple(source.shape)}")
    if cfg_pti.steps < 0:
        raise ValueError(f"pti steps must be >= 0, got {cfg_pti.steps}")
    trainable = list(model.generator.parameters())
    history: list[dict[str, float]] = []
    with frozen_encoder(model, trainable):
        pivot = encode_frames(model, source)
        opt = torch.optim.Adam(trainable, lr=cfg_pti.lr)
        for _ in range(cfg_pti.steps):
            rec = model.generate(pivot.w_id, pivot.s_f, noise="const")  # (1,3,S,S)
            loss, l2, lp = image_loss(
                to_size(rec, source.shape[-1]), source, lpips_fn, PTI_L2, PTI_LPIPS
            )
            parts = {"total": loss.detach(), "l2": l2.detach(), "lpips": lp.detach()}
            history.append({k: float(v) for k, v in parts.items()})
            if lpips_threshold is not None and history[-1]["lpips"] <= lpips_threshold:
                break
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        opt.zero_grad(set_to_none=True)
    return history
