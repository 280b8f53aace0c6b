"""e4e's latent discriminator and its losses (the paper's L_d, "similar to [31]").

Compatible with ``LatentCodesDiscriminator`` of omertov/encoder4editing
(``models/discriminator.py``, MIT License) at the commit mirrored for this work: an MLP of
``n_layers`` ``nn.Linear`` layers (``style_dim -> hidden -> ... -> 1``) with
``LeakyReLU(0.2)`` between them, keys ``mlp.{0,2,4,6}.{weight,bias}`` for the default 4
layers, so e4e's ``discriminator_state_dict`` loads with ``strict=True``. (e4e uses plain
``nn.Linear``, not StyleGAN's ``EqualLinear``.) The code here is ours.

Training as in e4e's ``training/coach.py``:

- D step: real codes ``w = G.mapping(z)`` (:func:`sample_real_w`), fake codes rows of
  W_ID (e4e feeds D only row 0 of the encoder's W+ code); loss
  :func:`d_logistic_loss`; every ``d_reg_every`` (16) steps an R1 step with loss
  ``r1 / 2 * r1_penalty(...) * d_reg_every`` (e4e: ``r1`` 10).
- Encoder step: :func:`g_nonsaturating_loss` on D's logits of every W+ row of W_ID,
  averaged over rows (``D(w_id)`` on ``(B, n_latent, D)`` gives all of them), weighted
  by ``w_discriminator_lambda`` (the config's ``adv``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, autograd, nn

from reenactbench.nn.stylegan2 import Generator

__all__ = [
    "LatentDiscriminator",
    "d_logistic_loss",
    "g_nonsaturating_loss",
    "r1_penalty",
    "r1_penalty_from_logits",
    "sample_real_w",
]


class LatentDiscriminator(nn.Module):
    """MLP critic on W vectors: ``(..., style_dim) -> (..., 1)`` logits (real > 0).

    Parameters start as zeros (no randomness in the constructor); call
    :meth:`reset_parameters` with a ``torch.Generator`` or load a state dict.

    Args:
        style_dim: W dimension (512 for FFHQ StyleGAN2, 64 for the tiny config).
        n_layers: number of linear layers, ``>= 1`` (e4e: ``n_mlp - 1`` hidden + 1 = 4).
        hidden: width of the hidden layers (e4e: 512, i.e. ``style_dim``).
    """

    def __init__(self, style_dim: int, n_layers: int = 4, hidden: int = 512) -> None:
        super().__init__()
        if n_layers < 1 or style_dim < 1 or hidden < 1:
            raise ValueError(
                f"LatentDiscriminator: need style_dim, n_layers, hidden >= 1, "
                f"got {style_dim}, {n_layers}, {hidden}"
            )
        self.style_dim = style_dim
        dims = [style_dim] + [hidden] * (n_layers - 1) + [1]
        layers: list[nn.Module] = []
        for i, (d_in, d_out) in enumerate(zip(dims[:-1], dims[1:], strict=True)):
            lin = nn.utils.skip_init(nn.Linear, d_in, d_out)  # no global-RNG draw
            nn.init.zeros_(lin.weight)
            nn.init.zeros_(lin.bias)
            layers.append(lin)
            if i < n_layers - 1:
                layers.append(nn.LeakyReLU(0.2))
        self.mlp = nn.Sequential(*layers)

    def reset_parameters(self, generator: torch.Generator) -> LatentDiscriminator:
        """PyTorch's default ``nn.Linear`` init (what e4e gets), drawn from ``generator``:
        weight and bias ``U(-1/sqrt(in), 1/sqrt(in))``. Returns ``self``."""
        with torch.no_grad():
            for m in self.mlp:
                if isinstance(m, nn.Linear):
                    bound = 1 / math.sqrt(m.in_features)
                    for p in (m.weight, m.bias):
                        u = torch.rand(p.shape, generator=generator, device=generator.device)
                        p.copy_(u.mul_(2 * bound).sub_(bound))
        return self

    def forward(self, w: Tensor) -> Tensor:
        """``(..., style_dim)`` W codes (e.g. ``(B, D)`` or W+ ``(B, n_latent, D)``) ->
        ``(..., 1)`` logits."""
        if w.shape[-1] != self.style_dim:
            raise ValueError(
                f"LatentDiscriminator: last dim must be style_dim={self.style_dim}, "
                f"got {tuple(w.shape)}"
            )
        return self.mlp(w)


def d_logistic_loss(real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    """Discriminator loss: ``mean softplus(-D(real)) + mean softplus(D(fake))``.

    ``2 ln 2`` at logits 0; -> 0 as real logits -> +inf and fake logits -> -inf.
    """
    return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()


def g_nonsaturating_loss(fake_logits: Tensor) -> Tensor:
    """Encoder's adversarial loss L_d: ``mean softplus(-D(fake))`` (``ln 2`` at logit 0)."""
    return F.softplus(-fake_logits).mean()


def r1_penalty_from_logits(real_logits: Tensor, real_w: Tensor) -> Tensor:
    """R1 penalty ``mean_b ||d D(w_b) / d w_b||^2`` (unweighted; e4e multiplies by
    ``r1 / 2 * d_reg_every``). The graph is kept so the penalty can be backpropagated.

    Args:
        real_logits: ``(B, 1)`` logits computed from ``real_w``.
        real_w: ``(B, ..., D)`` real codes with ``requires_grad=True``.
    """
    if not real_w.requires_grad:
        raise ValueError("r1_penalty: real_w must have requires_grad=True before D(real_w)")
    (grad,) = autograd.grad(outputs=real_logits.sum(), inputs=real_w, create_graph=True)
    return grad.pow(2).reshape(grad.shape[0], -1).sum(1).mean()


def r1_penalty(d: nn.Module, real_w: Tensor) -> Tensor:
    """R1 penalty of ``d`` at ``real_w`` (detached here, then ``requires_grad``):
    ``mean_b ||grad_w D(w_b)||^2``. For a linear ``D(w) = a.w + c`` it is ``||a||^2``.

    Args:
        d: the discriminator (e.g. :class:`LatentDiscriminator`).
        real_w: ``(B, D)`` real codes.

    Returns:
        0-dim tensor with a graph to ``d``'s parameters.
    """
    w = real_w.detach().requires_grad_(True)
    return r1_penalty_from_logits(d(w), w)


def sample_real_w(generator_net: Generator, n: int, torch_generator: torch.Generator) -> Tensor:
    """Real codes for the discriminator: ``w = G.mapping(z)``, ``z ~ N(0, I)`` from
    ``torch_generator`` (e4e's ``decoder.get_latent(randn)``, without truncation).

    Args:
        generator_net: a :class:`reenactbench.nn.stylegan2.Generator`.
        n: number of codes.
        torch_generator: source of z (its device is where z is drawn; z then moves to G's).

    Returns:
        ``(n, style_dim)`` detached, on G's device and dtype.
    """
    ref = generator_net.input.input  # a parameter: G's device and dtype
    z = torch.randn(
        n, generator_net.style_dim, generator=torch_generator, device=torch_generator.device
    )
    with torch.no_grad():
        return generator_net.mapping(z.to(ref))
