"""Cyclic Manifold Adjustment (CMA): inference-time fine-tuning of G (paper Sec. 3.3).

For one source frame ``I^S`` and a driving clip ``{I^D_t}``, CMA fine-tunes the StyleGAN2
generator G of a trained hybrid model (encoder E frozen) so that re-enacted frames keep
the source identity and the driving deformations (Eqs. 15-18)::

    W_ID^S, S_F^S = E(I^S)                     W_ID^D, S_F^D = E(I^D)        (once, detached)
    I^{S->D}      = G(A(W_ID^S) + S_F^D)                                      (Eqs. 1-4)
    W_cyc^S, S_cyc^D = E(I^{S->D})                                            (Eq. 16)
    I_cyc^S       = G(A(W_cyc^S) + S_F^S)                                     (Eq. 17)
    I_cyc^D       = G(A(W_ID^D) + S_cyc^D)                                    (Eq. 18)
    loss          = L(I_cyc^S, I^S) + L(I_cyc^D, I^D),
    L             = lambda_l2 * MSE + lambda_lpips * LPIPS                    (Eq. 15)

Choices the paper leaves open (defaults in ``[cma]`` of the hybrid config):

- Optimiser: Adam (betas 0.9, 0.999) at ``lr`` 3e-4 for ``steps`` 50 steps, each on a
  minibatch of ``batch`` driving frames drawn without replacement (with replacement
  only when the clip is shorter than ``batch``) from the passed ``torch.Generator``;
  lr and optimiser follow PTI (Roich et al. 2022), which CMA is built on.
- Trained parameters (``layers``): ``"all"`` (every parameter of G, as PTI),
  ``"synthesis"`` (all but the mapping MLP ``style.*``, which CMA never uses since the
  latents are W+ / StyleSpace), or a list of module-name prefixes matched at dot
  boundaries (``"convs.1"`` matches ``convs.1.conv.weight``, not ``convs.10.*``).
- Resolution: the encoder sees frames at its ``input_size`` (256 in the paper config),
  and the frames given to CMA are at that size, so every G output (``size``, 1024) is
  resized to ``input_size`` (bilinear, antialiased, differentiable) both before it enters
  E and before it is compared with ``I^S`` / ``I^D``: the losses are computed at the
  encoder input size (LPIPS's usual 256 px), the only size at which targets exist here.
- G outputs enter E unclamped (clamping would cut the gradient of saturated pixels).
- Noise: ``"const"`` (G's stored noise buffers), as at inference.
- The encoder is frozen: its parameters get ``requires_grad=False`` and the whole model
  is put in eval mode for the duration (BatchNorm statistics of E stay as trained), but
  E stays differentiable with respect to its input, so the cycle loss reaches G through
  ``E(I^{S->D})``. Flags and train/eval modes are restored on exit.

CMA changes ``model.generator`` in place; :func:`restoring_generator` restores it (the
adapter runs CMA once per video, each time from the trained G).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from reenactbench.errors import InputError

__all__ = [
    "LpipsFn",
    "CmaSettings",
    "EncodedFrames",
    "cyclic_manifold_adjustment",
    "cycle_loss",
    "encode_frames",
    "frozen_encoder",
    "image_loss",
    "restoring_generator",
    "select_generator_parameters",
    "to_size",
]

#: ``lpips_fn(x, y)``: x, y ``(B, 3, H, W)`` float in [-1, 1] -> per-sample distances with
#: leading dim B (e.g. ``lpips.LPIPS`` gives ``(B, 1, 1, 1)``); the mean over B is used.
LpipsFn = Callable[[Tensor, Tensor], Tensor]


class CmaSettings(Protocol):
    """The ``[cma]`` section of the hybrid config (``HybridConfig.cma``)."""

    steps: int
    lr: float
    layers: str | Sequence[str]
    batch: int
    lambda_lpips: float
    lambda_l2: float


@dataclass(frozen=True)
class EncodedFrames:
    """Detached encoder outputs of N frames: ``w_id (N, n_latent, D)``, ``s_f`` list of
    ``n_sf`` tensors ``(N, dim_k)``."""

    w_id: Tensor
    s_f: list[Tensor]

    def take(self, index: Tensor) -> EncodedFrames:
        """Rows ``index`` (``(B,) int64``) of every tensor."""
        return EncodedFrames(self.w_id[index], [s[index] for s in self.s_f])

    def expand(self, batch: int) -> EncodedFrames:
        """A one-frame encoding repeated to ``batch`` rows (views, no copy)."""
        if self.w_id.shape[0] != 1:
            raise ValueError(f"expand needs one encoded frame, got {self.w_id.shape[0]}")
        return EncodedFrames(
            self.w_id.expand(batch, -1, -1), [s.expand(batch, -1) for s in self.s_f]
        )


def to_size(images: Tensor, size: int) -> Tensor:
    """Resize ``(B, 3, H, W)`` to ``(B, 3, size, size)``: bilinear, antialiased,
    differentiable; identity when already that size. Values keep their range."""
    if images.shape[-2:] == (size, size):
        return images
    return F.interpolate(
        images, size=(size, size), mode="bilinear", antialias=True, align_corners=False
    )


def image_loss(
    fake: Tensor, real: Tensor, lpips_fn: LpipsFn, lambda_l2: float, lambda_lpips: float
) -> tuple[Tensor, Tensor, Tensor]:
    """``lambda_l2 * MSE + lambda_lpips * LPIPS`` (Eq. 15's L; PTI's objective).

    Args:
        fake, real: ``(B, 3, H, W)`` float in [-1, 1], same shape.
        lpips_fn: see :data:`LpipsFn`.
        lambda_l2, lambda_lpips: weights; a zero weight skips that term's computation.

    Returns:
        ``(total, mse, lpips)`` scalars (a skipped term is 0).
    """
    if fake.shape != real.shape:
        raise ValueError(f"image shapes differ: {tuple(fake.shape)} vs {tuple(real.shape)}")
    zero = fake.new_zeros(())
    mse = F.mse_loss(fake, real) if lambda_l2 else zero
    perc = lpips_fn(fake, real).mean() if lambda_lpips else zero
    return lambda_l2 * mse + lambda_lpips * perc, mse, perc


def _encode(model: Any, x: Tensor) -> EncodedFrames:
    lat = model.encode(x)
    return EncodedFrames(lat.w_id, list(lat.s_f))


@torch.no_grad()
def encode_frames(model: Any, frames: Tensor, chunk: int = 16) -> EncodedFrames:
    """E(frames) in chunks, without gradients.

    Args:
        model: a ``HybridModel`` (``encode(x) -> Latents(w_id, s_f)``).
        frames: ``(N, 3, in, in)`` float in [-1, 1] at the encoder input size.
        chunk: frames per encoder call.

    Returns:
        :class:`EncodedFrames` with N rows, detached.
    """
    parts = [_encode(model, frames[i : i + chunk]) for i in range(0, frames.shape[0], chunk)]
    return EncodedFrames(
        torch.cat([p.w_id for p in parts]),
        [torch.cat([p.s_f[k] for p in parts]) for k in range(len(parts[0].s_f))],
    )


def cycle_loss(
    model: Any,
    source: Tensor,
    src: EncodedFrames,
    driving: Tensor,
    drv: EncodedFrames,
    lpips_fn: LpipsFn,
    lambda_l2: float,
    lambda_lpips: float,
) -> tuple[Tensor, dict[str, float]]:
    """CMA objective (Eqs. 15-18) on one minibatch, differentiable w.r.t. G.

    Args:
        model: a ``HybridModel`` (uses ``encode``, ``generate``).
        source: ``(1, 3, in, in)`` source frame ``I^S`` in [-1, 1].
        src: its encoding (one row).
        driving: ``(B, 3, in, in)`` driving frames ``I^D`` in [-1, 1].
        drv: their encodings (B rows).
        lpips_fn, lambda_l2, lambda_lpips: see :func:`image_loss`.

    Returns:
        ``(loss, parts)``: scalar loss; ``parts`` floats ``total``, ``source_l2``,
        ``source_lpips``, ``driving_l2``, ``driving_lpips`` (unweighted terms).
    """
    size, batch = source.shape[-1], driving.shape[0]
    src_b = src.expand(batch)
    reenacted = model.generate(src_b.w_id, drv.s_f, noise="const")  # I^{S->D}, (B,3,S,S)
    cyc = _encode(model, to_size(reenacted, size))  # Eq. 16, grads flow through E
    cyc_src = model.generate(cyc.w_id, src_b.s_f, noise="const")  # Eq. 17
    cyc_drv = model.generate(drv.w_id, cyc.s_f, noise="const")  # Eq. 18
    target_src = source.expand(batch, -1, -1, -1)
    ls, ls_l2, ls_lp = image_loss(
        to_size(cyc_src, size), target_src, lpips_fn, lambda_l2, lambda_lpips
    )
    ld, ld_l2, ld_lp = image_loss(
        to_size(cyc_drv, size), driving, lpips_fn, lambda_l2, lambda_lpips
    )
    loss = ls + ld  # Eq. 15
    parts = {
        "total": float(loss.detach()),
        "source_l2": float(ls_l2.detach()),
        "source_lpips": float(ls_lp.detach()),
        "driving_l2": float(ld_l2.detach()),
        "driving_lpips": float(ld_lp.detach()),
    }
    return loss, parts


def select_generator_parameters(
    generator: nn.Module, layers: str | Sequence[str]
) -> list[tuple[str, nn.Parameter]]:
    """Named parameters of G trained by CMA / PTI.

    Args:
        generator: the StyleGAN2 ``Generator``.
        layers: ``"all"``, ``"synthesis"`` (all but the mapping MLP ``style.*``), or
            module-name prefixes matched at dot boundaries (e.g. ``["convs", "to_rgbs"]``).

    Raises:
        InputError: unknown keyword, or a prefix that matches no parameter.
    """
    named = list(generator.named_parameters())
    if isinstance(layers, str):
        if layers == "all":
            return named
        if layers == "synthesis":
            return [(n, p) for n, p in named if not n.startswith("style.")]
        raise InputError(
            f'cma.layers = {layers!r} in the hybrid config: use "all", "synthesis" '
            "or a list of generator module prefixes"
        )
    prefixes = list(layers)
    for pre in prefixes:
        if not any(n == pre or n.startswith(pre + ".") for n, _ in named):
            raise InputError(
                f"cma.layers prefix {pre!r} in the hybrid config matches no generator "
                'parameter: use module names such as "convs.0", "to_rgbs", "conv1"'
            )
    return [(n, p) for n, p in named if any(n == q or n.startswith(q + ".") for q in prefixes)]


@contextmanager
def frozen_encoder(model: nn.Module, trainable: Sequence[nn.Parameter]) -> Iterator[None]:
    """Only ``trainable`` require grad and ``model`` is in eval mode inside the block;
    every ``requires_grad`` flag and module mode is restored on exit."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    modes = [(m, m.training) for m in model.modules()]
    keep = {id(p) for p in trainable}
    try:
        for p, _ in flags:
            p.requires_grad_(id(p) in keep)
        model.eval()
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
        for m, mode in modes:
            m.train(mode)


@contextmanager
def restoring_generator(model: Any) -> Iterator[None]:
    """Snapshot ``model.generator``'s state dict and load it back on exit (strict), so CMA
    or PTI on one video leaves the trained G for the next."""
    saved = copy.deepcopy(model.generator.state_dict())
    try:
        yield
    finally:
        model.generator.load_state_dict(saved)


def _check_frames(name: str, x: Tensor, count: int | None) -> None:
    if x.ndim != 4 or x.shape[1] != 3 or x.shape[2] != x.shape[3]:
        raise ValueError(f"{name} must be (N, 3, in, in), got {tuple(x.shape)}")
    if count is not None and x.shape[0] != count:
        raise ValueError(f"{name} must hold {count} frame(s), got {x.shape[0]}")


def cyclic_manifold_adjustment(
    model: Any,
    source: Tensor,
    driving: Tensor,
    cfg_cma: CmaSettings,
    lpips_fn: LpipsFn,
    generator: torch.Generator,
) -> list[dict[str, float]]:
    """Fine-tune ``model.generator`` in place with CMA (Eqs. 15-18); encoder frozen.

    Args:
        model: a ``HybridModel`` (``encode``, ``generate``, ``.generator``).
        source: ``(1, 3, in, in)`` float in [-1, 1], the source frame at the encoder
            input size (``model.preprocess`` output).
        driving: ``(T, 3, in, in)`` float in [-1, 1], the driving clip, same size.
        cfg_cma: ``[cma]`` settings (steps, lr, layers, batch, lambda_l2, lambda_lpips).
        lpips_fn: see :data:`LpipsFn` (frozen; e.g. ``load_lpips_alex``).
        generator: CPU ``torch.Generator`` drawing the minibatches (the only randomness).

    Returns:
        One dict per step (see :func:`cycle_loss`), measured before that step's update;
        deterministic on CPU for a given ``generator`` state.

    Raises:
        InputError: bad ``cfg_cma.layers``.
    """
    _check_frames("source", source, 1)
    _check_frames("driving", driving, None)
    if driving.shape[-1] != source.shape[-1]:
        raise ValueError(f"source and driving sizes differ: {source.shape} vs {driving.shape}")
    if cfg_cma.steps < 0 or cfg_cma.batch < 1:
        raise ValueError(f"cma steps must be >= 0 and batch >= 1, got {cfg_cma}")
    trainable = [p for _, p in select_generator_parameters(model.generator, cfg_cma.layers)]
    n = driving.shape[0]
    history: list[dict[str, float]] = []
    with frozen_encoder(model, trainable):
        src = encode_frames(model, source)
        drv = encode_frames(model, driving)
        opt = torch.optim.Adam(trainable, lr=cfg_cma.lr)
        for _ in range(cfg_cma.steps):
            if n >= cfg_cma.batch:
                idx = torch.randperm(n, generator=generator)[: cfg_cma.batch]
            else:
                idx = torch.randint(n, (cfg_cma.batch,), generator=generator)
            idx = idx.to(driving.device)
            loss, parts = cycle_loss(
                model,
                source,
                src,
                driving[idx],
                drv.take(idx),
                lpips_fn,
                cfg_cma.lambda_l2,
                cfg_cma.lambda_lpips,
            )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            history.append(parts)
        opt.zero_grad(set_to_none=True)
    return history
