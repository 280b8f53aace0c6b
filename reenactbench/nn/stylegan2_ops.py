"""Pure-PyTorch ops of StyleGAN2: FIR resampling (``upfirdn2d``) and fused leaky ReLU.

Numerically compatible with rosinality/stylegan2-pytorch at commit
bef283a1c24087da704d16c30abc8e36e63efa0e (``op/upfirdn2d.py`` ``upfirdn2d_native`` and the
CPU branch of ``op/fused_act.py``; MIT License). The code here is ours: plain tensor ops
that run on any device, nothing is compiled (upstream builds CUDA extensions at import;
its CUDA kernels compute the same sums in another order, so GPU outputs of upstream's
fused path and of these ops agree to float rounding, not bitwise).

Tensors are ``(B, C, H, W)`` float (any float dtype); kernels are 2-D ``(kh, kw)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["make_kernel", "upfirdn2d", "fused_leaky_relu", "pixel_norm", "LRELU_GAIN"]

#: Gain that keeps the variance of a leaky ReLU's output near 1 (StyleGAN's ``sqrt(2)``).
LRELU_GAIN = math.sqrt(2.0)


def make_kernel(taps: Sequence[float]) -> Tensor:
    """Normalised separable 2-D FIR kernel from 1-D taps.

    Args:
        taps: 1-D filter taps, e.g. ``(1, 3, 3, 1)``.

    Returns:
        ``(k, k) float32`` outer product of ``taps`` with itself, divided by its sum.
    """
    k = torch.tensor(list(taps), dtype=torch.float32)
    if k.ndim != 1 or k.numel() == 0:
        raise ValueError(f"blur kernel taps must be a non-empty 1-D sequence, got {taps!r}")
    k2 = k[None, :] * k[:, None]
    return k2 / k2.sum()


def upfirdn2d(
    x: Tensor, kernel: Tensor, up: int = 1, down: int = 1, pad: tuple[int, int] = (0, 0)
) -> Tensor:
    """Upsample by zero insertion, pad, filter with ``kernel``, downsample (per channel).

    The same pads apply to both axes (``pad = (before, after)``, negative pads crop), as
    upstream's ``upfirdn2d(input, kernel, up, down, pad)`` with a 2-tuple ``pad``. The
    filter is a true convolution (the kernel is flipped), channels are filtered
    independently.

    Args:
        x: ``(B, C, H, W)`` float.
        kernel: ``(kh, kw)`` float, same dtype/device as ``x``.
        up: integer upsampling factor (zeros inserted between samples).
        down: integer downsampling factor (every ``down``-th sample kept).
        pad: pixels added before and after each spatial axis after upsampling.

    Returns:
        ``(B, C, Ho, Wo)`` with ``Ho = (H * up + pad[0] + pad[1] - kh + down) // down``
        (likewise ``Wo``).
    """
    b, c, h, w = x.shape
    kh, kw = kernel.shape
    p0, p1 = pad
    y = x
    if up > 1:  # zero insertion: each sample followed by up-1 zeros on both axes
        y = F.pad(y.reshape(b, c, h, 1, w, 1), [0, up - 1, 0, 0, 0, up - 1])
        y = y.reshape(b, c, h * up, w * up)
    y = F.pad(y, [max(p0, 0), max(p1, 0), max(p0, 0), max(p1, 0)])
    y = y[
        :,
        :,
        max(-p0, 0) : y.shape[2] - max(-p1, 0),
        max(-p0, 0) : y.shape[3] - max(-p1, 0),
    ]
    # depthwise: one copy of the flipped kernel per channel (faster on CPU than folding
    # channels into the batch as upstream does; same sums, same results)
    weight = torch.flip(kernel, [0, 1]).view(1, 1, kh, kw).expand(c, 1, kh, kw)
    return F.conv2d(y, weight.contiguous(), stride=down, groups=c)


def fused_leaky_relu(
    x: Tensor, bias: Tensor | None = None, negative_slope: float = 0.2, scale: float = LRELU_GAIN
) -> Tensor:
    """``leaky_relu(x + bias) * scale``, bias broadcast over dim 1.

    Args:
        x: ``(B, C, ...)`` float.
        bias: ``(C,)`` or None.
        negative_slope: slope for negative inputs (upstream's CPU path always uses 0.2).
        scale: output gain, ``sqrt(2)`` by default.

    Returns:
        Tensor shaped as ``x``.
    """
    if bias is not None:
        x = x + bias.view(1, bias.shape[0], *([1] * (x.ndim - 2)))
    return F.leaky_relu(x, negative_slope=negative_slope) * scale


def pixel_norm(x: Tensor, eps: float = 1e-8) -> Tensor:
    """Normalise each row of ``x`` (``(B, D)``) to unit root-mean-square over dim 1."""
    return x * torch.rsqrt(torch.mean(x**2, dim=1, keepdim=True) + eps)
