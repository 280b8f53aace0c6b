"""Training losses of the hybrid-latent re-enactment method (paper Sec. 3.2, Eqs. 5-14).

Every loss is a pure function on tensors; networks (LPIPS, ArcFace/IR-SE50, the encoder,
the generator) are run by the caller, which passes their outputs here:

- :func:`rec_loss` — Eq. 7: ``l2 * MSE + lpips * LPIPS + gv * GradientVariance``; used for
  L_self (Eq. 5), L_reenact (Eq. 6) and, on masked images, L_f (Eq. 13, see
  :func:`reenactbench.baselines.hybrid.masks.feature_rec_loss`).
- :func:`gradient_variance_loss` — the GV loss of Abrahamyan et al., ICASSP 2022 (paper's
  ref. [2]), as in the authors' code lusinlu/gradient-variance-loss
  (``gradient_variance_loss.py``).
- :func:`identity_loss` — Eqs. 8-9 (``1 - cos`` of ArcFace embeddings).
- :func:`w_id_consistency` — Eq. 10.
- :func:`regularization` — Eqs. 11-12 (e4e's delta regularisation + S_F magnitude).

Weights come from the config's ``[loss]`` section, :class:`LossWeights` (re-exported here
from :mod:`reenactbench.baselines.hybrid.config`).

The adversarial term L_d lives in :mod:`reenactbench.baselines.hybrid.discriminator`.

Images are ``(B, 3, H, W)`` float RGB in [-1, 1]; every loss returns a 0-dim tensor that
is a mean over the batch, so it does not change with the batch size.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor

from .config import LossWeights  # re-exported: the [loss] section, Eq. 14's lambdas

__all__ = [
    "LossWeights",
    "RecWeights",
    "LpipsFn",
    "GRAY_WEIGHTS",
    "rec_loss",
    "gradient_variance_loss",
    "identity_loss",
    "w_id_consistency",
    "regularization",
]

#: ``(x, y) -> (B,)`` or ``(B, 1, 1, 1)`` perceptual distance of images in [-1, 1], e.g. the
#: model of :func:`reenactbench.metrics.lpips.load_lpips_alex`.
LpipsFn = Callable[[Tensor, Tensor], Tensor]

#: RGB -> gray weights of the GV loss's reference code (ITU-R BT.601 luma).
GRAY_WEIGHTS = (0.2989, 0.5870, 0.1140)

_SOBEL_X = ((-1.0, 0.0, 1.0), (-2.0, 0.0, 2.0), (-1.0, 0.0, 1.0))
_SOBEL_Y = ((1.0, 2.0, 1.0), (0.0, 0.0, 0.0), (-1.0, -2.0, -1.0))


class RecWeights(Protocol):
    """Anything with the three weights of Eq. 7 (:class:`LossWeights`, the config's [loss])."""

    @property
    def l2(self) -> float: ...
    @property
    def lpips(self) -> float: ...
    @property
    def gv(self) -> float: ...


def _check_images(x: Tensor, y: Tensor, name: str) -> None:
    if x.ndim != 4 or x.shape[1] != 3 or x.shape != y.shape:
        raise ValueError(
            f"{name}: expected two (B, 3, H, W) images of equal shape, "
            f"got {tuple(x.shape)} and {tuple(y.shape)}"
        )


def gradient_variance_loss(
    x: Tensor, y: Tensor, patch: int = 8, pad: Literal["zeros", "replicate"] = "zeros"
) -> Tensor:
    """Gradient variance loss (Abrahamyan et al. 2022), the L_GV of Eq. 7.

    Both images go to gray (``GRAY_WEIGHTS``), get Sobel gradients ``gx``, ``gy`` (3x3,
    cross-correlation, padding 1), which are cut into non-overlapping ``patch x patch``
    tiles (a remainder at the right/bottom edge is dropped, as ``nn.Unfold``); the
    unbiased variance of each tile forms a variance map, and the loss is
    ``MSE(var_gx(x), var_gx(y)) + MSE(var_gy(x), var_gy(y))``, the mean running over
    batch and tiles. ``pad="zeros"`` is the reference code's choice; ``"replicate"``
    makes the loss exactly invariant to adding a constant to an image.

    Args:
        x, y: ``(B, 3, H, W)`` float images in [-1, 1], ``H, W >= patch``.
        patch: tile side in pixels (the reference code's training uses 8).
        pad: border handling of the Sobel filters.

    Returns:
        0-dim float32 tensor >= 0 (float64 if an input is), computed outside autocast;
        0 when ``x == y``.
    """
    _check_images(x, y, "gradient_variance_loss")
    if patch < 2 or x.shape[-1] < patch or x.shape[-2] < patch:
        raise ValueError(f"gradient_variance_loss: patch {patch} must be in [2, H] and [2, W]")
    if pad not in ("zeros", "replicate"):
        raise ValueError(f"gradient_variance_loss: pad must be 'zeros' or 'replicate', got {pad}")
    # variances of gradients lose too much in half precision: fp32 (fp64 kept), no autocast
    dtype = torch.float64 if torch.float64 in (x.dtype, y.dtype) else torch.float32
    with torch.autocast(device_type=x.device.type, enabled=False):
        kernels = torch.tensor((_SOBEL_X, _SOBEL_Y), dtype=dtype, device=x.device)[:, None]
        gray_w = torch.tensor(GRAY_WEIGHTS, dtype=dtype, device=x.device).view(1, 3, 1, 1)
        both = torch.cat((x.to(dtype), y.to(dtype))).mul(gray_w).sum(1, keepdim=True)
        if pad == "zeros":  # both: (2B, 1, H, W) -> grads (2B, 2, H, W)
            grads = F.conv2d(both, kernels, padding=1)
        else:
            grads = F.conv2d(F.pad(both, (1, 1, 1, 1), mode="replicate"), kernels)
        # (2B * 2, patch*patch, n_tiles); unbiased variance over each tile's pixels
        tiles = F.unfold(grads.flatten(0, 1)[:, None], kernel_size=patch, stride=patch)
        var = tiles.var(dim=1).view(2, x.shape[0], 2, -1)  # (x|y, B, gx|gy, n_tiles)
        return (var[0] - var[1]).pow(2).mean(dim=(0, 2)).sum()


def rec_loss(
    x: Tensor, y: Tensor, lpips_fn: LpipsFn, weights: RecWeights
) -> tuple[Tensor, dict[str, Tensor]]:
    """Reconstruction loss, Eq. 7: ``l2 * MSE + lpips * LPIPS + gv * GV``.

    MSE is the mean over all elements (pSp's ``F.mse_loss``), LPIPS the batch mean of
    ``lpips_fn(x, y)``, GV :func:`gradient_variance_loss` with its defaults. A term whose
    weight is 0 is not computed and reported as 0 (so ``lpips_fn`` is not called).

    Args:
        x: ``(B, 3, H, W)`` generated image in [-1, 1] (gradients flow through it).
        y: ``(B, 3, H, W)`` target image in [-1, 1].
        lpips_fn: ``(x, y) -> (B,)`` or ``(B, 1, 1, 1)`` perceptual distance.
        weights: ``l2``, ``lpips``, ``gv`` (:class:`LossWeights` or the config's [loss]).

    Returns:
        ``(total, {"l2": mse, "lpips": lpips, "gv": gv})``: 0-dim tensors, parts unweighted.
    """
    _check_images(x, y, "rec_loss")
    zero = x.new_zeros(())
    l2 = F.mse_loss(x, y) if weights.l2 != 0 else zero
    if weights.lpips != 0:
        d = lpips_fn(x, y)
        if d.numel() != x.shape[0]:
            raise ValueError(
                f"rec_loss: lpips_fn must return one distance per image ({x.shape[0]}), "
                f"got shape {tuple(d.shape)}"
            )
        lp = d.reshape(-1).mean()
    else:
        lp = zero
    gv = gradient_variance_loss(x, y) if weights.gv != 0 else zero
    total = weights.l2 * l2 + weights.lpips * lp + weights.gv * gv
    return total, {"l2": l2, "lpips": lp, "gv": gv}


def _one_minus_cos(a: Tensor, b: Tensor) -> Tensor:
    if a.ndim != 2 or a.shape != b.shape:
        raise ValueError(
            f"identity_loss: embeddings must be (B, D) of equal shape, "
            f"got {tuple(a.shape)} and {tuple(b.shape)}"
        )
    return 1 - (F.normalize(a, dim=1) * F.normalize(b, dim=1)).sum(1).mean()


def identity_loss(
    emb_src: Tensor, emb_id_only: Tensor, emb_cross: Tensor | None, idreg: bool = True
) -> Tensor:
    """Identity loss, Eqs. 8-9: ``(1 - <phi(I^S), phi(G(A(W_ID^S)))>)
    + (1 - <phi(I^S), phi(I^{S->D2})>)``, each term a batch mean.

    Embeddings are L2-normalised here (ArcFace/IR-SE50 outputs already are; normalising
    twice is harmless). pSp detaches the real image's embedding; ``emb_src`` comes from a
    real frame, so the caller computes it without gradients.

    Args:
        emb_src: ``(B, D)`` phi(I^S), the real source frame.
        emb_id_only: ``(B, D)`` phi(G(A(W_ID^S))), the identity-only image (Eq. 8).
        emb_cross: ``(B, D)`` phi(G(A(W_ID^S) + S_F^{D2})), the cross-identity re-enactment
            (Eq. 9); ignored (may be None) when ``idreg`` is False.
        idreg: keep Eq. 9 (False = ablation "w/o ID reg").

    Returns:
        0-dim tensor in [0, 4] (0 when all embeddings are parallel).
    """
    loss = _one_minus_cos(emb_src, emb_id_only)
    if idreg:
        if emb_cross is None:
            raise ValueError("identity_loss: emb_cross is required when idreg is True")
        loss = loss + _one_minus_cos(emb_src, emb_cross)
    return loss


def w_id_consistency(w_src: Tensor, w_cycle: Tensor) -> Tensor:
    """Identity latent consistency, Eq. 10: ``|| W_ID^S - W_ID^{S->D2} ||_2``.

    The L2 norm runs over the whole flattened W+ code of a sample; the result is the batch
    mean. The gradient at ``w_src == w_cycle`` is 0 (not NaN).

    Args:
        w_src: ``(B, n_latent, D)`` W_ID of the source frame.
        w_cycle: ``(B, n_latent, D)`` W_ID of the re-encoded cross re-enactment I^{S->D2}.

    Returns:
        0-dim tensor >= 0.
    """
    if w_src.shape != w_cycle.shape or w_src.ndim < 2:
        raise ValueError(
            f"w_id_consistency: expected two (B, n_latent, D) codes of equal shape, "
            f"got {tuple(w_src.shape)} and {tuple(w_cycle.shape)}"
        )
    return torch.linalg.vector_norm((w_src - w_cycle).flatten(1), dim=1).mean()


def regularization(w_id: Tensor, s_f: Sequence[Tensor] | Tensor, lambda_s: float) -> Tensor:
    """Latent regularisation, Eqs. 11-12:
    ``sum_i ||W_ID[i] - W_ID[0]||_2 + lambda_S * sum_j ||S_F[j]||_2``, batch mean.

    The first sum is e4e's delta regularisation over all rows (the ``i = 0`` term is 0
    and skipped, so its gradient is not NaN); the second keeps the facial-deformation
    edits (``S_F^{D1}``) small. Norms are per sample over the channel dimension.

    Args:
        w_id: ``(B, n_latent, D)`` W_ID^S.
        s_f: the ``n_sf`` edits ``S_F^{D1}``: a list of ``(B, dim_j)`` tensors (StyleSpace
            layers may differ in width) or one ``(B, n_sf, D)`` tensor.
        lambda_s: weight lambda_S of the S_F term.

    Returns:
        0-dim tensor >= 0.
    """
    if w_id.ndim != 3:
        raise ValueError(f"regularization: w_id must be (B, n_latent, D), got {tuple(w_id.shape)}")
    rows = list(s_f.unbind(1)) if isinstance(s_f, Tensor) else list(s_f)
    if any(r.ndim != 2 or r.shape[0] != w_id.shape[0] for r in rows):
        raise ValueError(
            f"regularization: each S_F entry must be (B={w_id.shape[0]}, dim), "
            f"got {[tuple(r.shape) for r in rows]}"
        )
    delta = w_id[:, 1:] - w_id[:, :1]  # (B, n_latent - 1, D), Eq. 11
    loss = torch.linalg.vector_norm(delta, dim=2).sum(1).mean()
    if rows:
        s_norm = torch.stack([torch.linalg.vector_norm(r, dim=1) for r in rows], 1)  # (B, n_sf)
        loss = loss + lambda_s * s_norm.sum(1).mean()
    return loss
