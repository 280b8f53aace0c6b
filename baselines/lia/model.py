"""LIA (Latent Image Animator) generator, written to load the authors' checkpoints.

Compatible with github.com/wyhsirius/LIA at commit b9f15fb70a3b7704576491ef8f4fd6fc4ad557d9
(``networks/generator.py``, ``encoder.py``, ``styledecoder.py``): the module tree and
every state-dict key and shape equal upstream's ``Generator(size=256, style_dim=512,
motion_dim=20, channel_multiplier=1)``, so the official ``vox.pt`` (key ``"gen"``) loads
with ``strict=True``. Upstream code and checkpoints: CC BY-NC 4.0 (Inria, LICENSE.md,
"free for non-commercial, research and evaluation use"); this code is ours.

Data flow (shapes for size 256):

* ``enc.net_app``: image ``(B,3,256,256)`` in [-1,1] -> appearance code ``wa (B,512)``
  and skip features at 8..256 px (``(B,512,8,8)`` ... ``(B,64,256,256)``).
* ``enc.fc``: 5 equalised linears (no activation) ``wa -> alpha (B,20)`` motion magnitudes.
* ``dec.direction``: ``Q`` = QR-orthonormalised ``direction.weight + 1e-8`` ``(512,20)``;
  a motion ``alpha`` becomes ``alpha @ Q.T (B,512)``.
* relative motion (upstream ``run_demo.py``): ``latent = wa_s + (d(alpha_drv) -
  d(alpha_start)) + d(alpha_s)`` with ``alpha_start`` from driving frame 0.
* ``dec``: StyleGAN2-like synthesis from a constant; at each scale a ``ToFlow``
  (modulated 1x1 conv, no demodulation) predicts a flow (tanh) and mask (sigmoid) that
  warp the source feature of that scale (``grid_sample``, ``align_corners=False`` as
  upstream on torch >= 1.3) and blend it in; ``ToRGB`` accumulates the image
  ``(B,3,256,256)``, roughly [-1,1] (unclamped). No noise is injected (upstream passes
  ``noise=None``, so the ``noise.weight`` parameters are loaded but unused).
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from reenactbench.errors import InputError
from reenactbench.nn.loading import safe_load, state_dict_problems
from reenactbench.nn.stylegan2_ops import fused_leaky_relu, make_kernel

__all__ = ["Generator", "load_lia", "read_lia_checkpoint"]

BLUR: tuple[int, ...] = (1, 3, 3, 1)


def upfirdn2d(x: Tensor, kernel: Tensor, up: int = 1, pad: tuple[int, int] = (0, 0)) -> Tensor:
    """Zero-insertion upsampling by ``up``, pad (negative crops), filter with ``kernel``.

    Same maths as ``reenactbench.nn.stylegan2_ops.upfirdn2d`` but filtering every channel as
    its own 1-channel image (channels folded into the batch), which is upstream's
    summation order: the encoder features then match upstream bit for bit on CPU.

    Args:
        x: ``(B,C,H,W)`` float. kernel: ``(k,k)``. up: factor. pad: (before, after), both axes.

    Returns:
        ``(B,C,H*up+pad[0]+pad[1]-k+1, ...)``.
    """
    b, c, h, w = x.shape
    k = kernel.shape[0]
    p0, p1 = pad
    if up > 1:
        x = F.pad(x.reshape(b, c, h, 1, w, 1), [0, up - 1, 0, 0, 0, up - 1])
        x = x.reshape(b, c, h * up, w * up)
    x = F.pad(x, [max(p0, 0), max(p1, 0), max(p0, 0), max(p1, 0)])
    x = x[:, :, max(-p0, 0) : x.shape[2] - max(-p1, 0), max(-p0, 0) : x.shape[3] - max(-p1, 0)]
    hh, ww = x.shape[2:]
    out = F.conv2d(x.reshape(b * c, 1, hh, ww), torch.flip(kernel, [0, 1]).view(1, 1, k, k))
    return out.view(b, c, out.shape[2], out.shape[3])


# --- equalised-learning-rate layers (StyleGAN2 conventions, as upstream) -------------------


class EqualConv2d(nn.Module):
    """Conv with weights ``N(0,1)`` scaled by ``1/sqrt(fan_in)`` at run time."""

    def __init__(
        self, cin: int, cout: int, k: int, stride: int = 1, padding: int = 0, bias: bool = True
    ) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(cout, cin, k, k))
        self.scale = 1 / math.sqrt(cin * k * k)
        self.stride, self.padding = stride, padding
        self.bias = nn.Parameter(torch.zeros(cout)) if bias else None

    def forward(self, x: Tensor) -> Tensor:
        return F.conv2d(x, self.weight * self.scale, self.bias, self.stride, self.padding)


class EqualLinear(nn.Module):
    """Linear with weights scaled by ``1/sqrt(in_dim)``; bias initialised to ``bias_init``.
    LIA never uses the activation or ``lr_mul`` variants, so they are not offered."""

    def __init__(self, din: int, dout: int, bias_init: float = 0.0) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(dout, din))
        self.bias = nn.Parameter(torch.full((dout,), float(bias_init)))
        self.scale = 1 / math.sqrt(din)

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight * self.scale, self.bias)


class FusedLeakyReLU(nn.Module):
    """``leaky_relu(x + bias, 0.2) * sqrt(2)``; ``bias`` stored as ``(1,C,1,1)`` as upstream."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(1, channels, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        return fused_leaky_relu(x, self.bias.view(-1))


class Blur(nn.Module):
    """FIR filter with the normalised ``BLUR`` kernel (times ``gain``) and pads ``pad``."""

    kernel: Tensor

    def __init__(self, pad: tuple[int, int], gain: float = 1.0) -> None:
        super().__init__()
        self.register_buffer("kernel", make_kernel(BLUR) * gain)
        self.pad = pad

    def forward(self, x: Tensor) -> Tensor:
        return upfirdn2d(x, self.kernel, pad=self.pad)


class Upsample(nn.Module):
    """2x upsampling: zero insertion then the blur kernel times 4."""

    kernel: Tensor

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("kernel", make_kernel(BLUR) * 4)
        p = len(BLUR) - 2
        self.pad = ((p + 1) // 2 + 1, p // 2)

    def forward(self, x: Tensor) -> Tensor:
        return upfirdn2d(x, self.kernel, up=2, pad=self.pad)


class ConvLayer(nn.Sequential):
    """[Blur] + EqualConv2d (stride 2 when downsampling) + [FusedLeakyReLU | leaky ReLU].
    Child indices (``0``, ``1``, ``2``) are the state-dict keys upstream uses."""

    def __init__(
        self,
        cin: int,
        cout: int,
        k: int,
        downsample: bool = False,
        bias: bool = True,
        activate: bool = True,
    ) -> None:
        layers: list[nn.Module] = []
        if downsample:
            p = (len(BLUR) - 2) + (k - 1)
            layers.append(Blur(((p + 1) // 2, p // 2)))
            stride, padding = 2, 0
        else:
            stride, padding = 1, k // 2
        layers.append(EqualConv2d(cin, cout, k, stride, padding, bias=bias and not activate))
        if activate:
            layers.append(FusedLeakyReLU(cout) if bias else nn.LeakyReLU(0.2))
        super().__init__(*layers)


class ResBlock(nn.Module):
    """Two 3x3 convs (the second downsamples 2x) plus a 1x1 skip, summed / sqrt(2)."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv1 = ConvLayer(cin, cin, 3)
        self.conv2 = ConvLayer(cin, cout, 3, downsample=True)
        self.skip = ConvLayer(cin, cout, 1, downsample=True, activate=False, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return (self.conv2(self.conv1(x)) + self.skip(x)) / math.sqrt(2)


def _channels(multiplier: int = 1) -> dict[int, int]:
    return {
        4: 512,
        8: 512,
        16: 512,
        32: 512,
        64: 256 * multiplier,
        128: 128 * multiplier,
        256: 64 * multiplier,
        512: 32 * multiplier,
        1024: 16 * multiplier,
    }


# --- encoder --------------------------------------------------------------------------------


class EncoderApp(nn.Module):
    """Image ``(B,3,S,S)`` [-1,1] -> ``wa (B,w_dim)`` and features from 8 px up to S px."""

    def __init__(self, size: int, w_dim: int = 512) -> None:
        super().__init__()
        ch = _channels()
        log_size = int(math.log2(size))
        self.convs = nn.ModuleList([ConvLayer(3, ch[size], 1)])
        cin = ch[size]
        for i in range(log_size, 2, -1):
            self.convs.append(ResBlock(cin, ch[2 ** (i - 1)]))
            cin = ch[2 ** (i - 1)]
        self.convs.append(EqualConv2d(cin, w_dim, 4, bias=False))  # 4x4 -> 1x1

    def forward(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        """Returns ``wa (B,w_dim)`` and ``feats``: outputs at 8, 16, ..., S px (coarse first)."""
        outs = []
        for conv in self.convs:
            x = conv(x)
            outs.append(x)
        return x.flatten(1), outs[::-1][2:]


class Encoder(nn.Module):
    """``net_app`` (appearance) and ``fc`` (appearance code -> motion magnitudes)."""

    def __init__(self, size: int, dim: int = 512, dim_motion: int = 20) -> None:
        super().__init__()
        self.net_app = EncoderApp(size, dim)
        self.fc = nn.Sequential(
            *[EqualLinear(dim, dim) for _ in range(4)], EqualLinear(dim, dim_motion)
        )

    def enc_motion(self, x: Tensor) -> Tensor:
        """``(B,3,S,S)`` [-1,1] -> motion magnitudes ``alpha (B,motion_dim)``."""
        return self.fc(self.net_app(x)[0])


# --- decoder --------------------------------------------------------------------------------


class ModulatedConv2d(nn.Module):
    """StyleGAN2 modulated conv (grouped over the batch), optional 2x transposed upsampling."""

    def __init__(
        self,
        cin: int,
        cout: int,
        k: int,
        style_dim: int,
        demodulate: bool = True,
        upsample: bool = False,
    ) -> None:
        super().__init__()
        self.cin, self.cout, self.k = cin, cout, k
        self.upsample, self.demodulate = upsample, demodulate
        if upsample:
            p = (len(BLUR) - 2) - (k - 1)
            self.blur = Blur(((p + 1) // 2 + 1, p // 2 + 1), gain=4)
        self.scale = 1 / math.sqrt(cin * k * k)
        self.padding = k // 2
        self.weight = nn.Parameter(torch.randn(1, cout, cin, k, k))
        self.modulation = EqualLinear(style_dim, cin, bias_init=1)

    def forward(self, x: Tensor, style: Tensor) -> Tensor:
        """``x (B,cin,H,W)``, ``style (B,style_dim)`` -> ``(B,cout,H',W')``."""
        b, cin, h, w = x.shape
        weight = self.scale * self.weight * self.modulation(style).view(b, 1, cin, 1, 1)
        if self.demodulate:
            demod = torch.rsqrt(weight.pow(2).sum([2, 3, 4]) + 1e-8)
            weight = weight * demod.view(b, self.cout, 1, 1, 1)
        x = x.reshape(1, b * cin, h, w)
        if self.upsample:
            weight = weight.transpose(1, 2).reshape(b * cin, self.cout, self.k, self.k)
            out = F.conv_transpose2d(x, weight, stride=2, groups=b)
            out = self.blur(out.view(b, self.cout, out.shape[2], out.shape[3]))
            return out
        weight = weight.reshape(b * self.cout, cin, self.k, self.k)
        out = F.conv2d(x, weight, padding=self.padding, groups=b)
        return out.view(b, self.cout, out.shape[2], out.shape[3])


class NoiseInjection(nn.Module):
    """Holds upstream's ``noise.weight``; LIA never injects noise, so this is the identity."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))

    def forward(self, x: Tensor) -> Tensor:
        return x


class StyledConv(nn.Module):
    """Modulated conv + (no) noise + FusedLeakyReLU."""

    def __init__(self, cin: int, cout: int, k: int, style_dim: int, upsample: bool = False) -> None:
        super().__init__()
        self.conv = ModulatedConv2d(cin, cout, k, style_dim, upsample=upsample)
        self.noise = NoiseInjection()
        self.activate = FusedLeakyReLU(cout)

    def forward(self, x: Tensor, style: Tensor) -> Tensor:
        return self.activate(self.noise(self.conv(x, style)))


class ConstantInput(nn.Module):
    """Learned ``(1,C,4,4)`` start tensor, repeated over the batch."""

    def __init__(self, channels: int, size: int = 4) -> None:
        super().__init__()
        self.input = nn.Parameter(torch.randn(1, channels, size, size))

    def forward(self, batch: int) -> Tensor:
        return self.input.repeat(batch, 1, 1, 1)


class ToRGB(nn.Module):
    """``ConvLayer(C,3,1)`` (with its leaky ReLU, as upstream) + bias + upsampled skip."""

    def __init__(self, cin: int, upsample: bool = True) -> None:
        super().__init__()
        if upsample:
            self.upsample = Upsample()
        self.conv = ConvLayer(cin, 3, 1)
        self.bias = nn.Parameter(torch.zeros(1, 3, 1, 1))

    def forward(self, x: Tensor, skip: Tensor | None = None) -> Tensor:
        out = self.conv(x) + self.bias
        return out if skip is None else out + self.upsample(skip)


class ToFlow(nn.Module):
    """Predicts flow (2 ch, tanh, added to the identity grid) and mask (1 ch, sigmoid) and
    blends the warped source feature into the decoder feature."""

    def __init__(self, cin: int, style_dim: int) -> None:
        super().__init__()
        self.upsample = Upsample()
        self.conv = ModulatedConv2d(cin, 3, 1, style_dim, demodulate=False)
        self.bias = nn.Parameter(torch.zeros(1, 3, 1, 1))

    def forward(
        self, x: Tensor, style: Tensor, feat: Tensor, skip: Tensor | None = None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """``x``, ``feat`` ``(B,C,H,W)`` -> (warped feat, blended feature, raw flow
        ``(B,3,H,W)``: flow logits in channels 0-1, mask logit in 2)."""
        out = self.conv(x, style) + self.bias
        if skip is not None:
            out = out + self.upsample(skip)
        h = x.shape[2]
        lin = torch.linspace(-1, 1, h, dtype=torch.float64).float().to(x.device)
        gy, gx = torch.meshgrid(lin, lin, indexing="ij")
        grid = torch.stack([gx, gy], dim=2).unsqueeze(0)  # (1,H,H,2): (x, y) in [-1,1]
        flow = torch.tanh(out[:, 0:2]).permute(0, 2, 3, 1) + grid
        mask = torch.sigmoid(out[:, 2:3])
        warped = F.grid_sample(feat, flow, align_corners=False) * mask
        return warped, warped + x * (1.0 - mask), out


class Direction(nn.Module):
    """Learned motion basis ``weight (512,motion_dim)``, orthonormalised by QR at run time."""

    def __init__(self, motion_dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(512, motion_dim))

    def basis(self) -> Tensor:
        """``Q (512,motion_dim)`` with orthonormal columns."""
        return torch.linalg.qr(self.weight + 1e-8, mode="reduced")[0]

    def forward(self, alpha: Tensor) -> Tensor:
        """``alpha (B,motion_dim)`` -> latent offset ``(B,512)`` = ``sum_i alpha_i q_i``
        (an elementwise product and sum rather than a matmul: upstream's rounding)."""
        return (alpha[:, :, None] * self.basis().T[None]).sum(1)


class Synthesis(nn.Module):
    """Decoder: latent ``(B,style_dim)`` + source features -> image ``(B,3,S,S)``."""

    def __init__(
        self, size: int, style_dim: int, motion_dim: int, channel_multiplier: int = 1
    ) -> None:
        super().__init__()
        self.size = size
        ch = _channels(channel_multiplier)
        self.direction = Direction(motion_dim)
        self.input = ConstantInput(ch[4])
        self.conv1 = StyledConv(ch[4], ch[4], 3, style_dim)
        self.to_rgb1 = ToRGB(ch[4], upsample=False)  # in upstream's state dict; unused
        self.log_size = int(math.log2(size))
        self.convs = nn.ModuleList()
        self.upsamples = nn.ModuleList()  # empty, as upstream
        self.to_rgbs = nn.ModuleList()
        self.to_flows = nn.ModuleList()
        cin = ch[4]
        for i in range(3, self.log_size + 1):
            cout = ch[2**i]
            self.convs.append(StyledConv(cin, cout, 3, style_dim, upsample=True))
            self.convs.append(StyledConv(cout, cout, 3, style_dim))
            self.to_rgbs.append(ToRGB(cout))
            self.to_flows.append(ToFlow(cout, style_dim))
            cin = cout

    def forward(self, latent: Tensor, feats: Sequence[Tensor]) -> Tensor:
        """``latent (B,style_dim)``, ``feats`` from :class:`EncoderApp` (B rows each) ->
        image ``(B,3,S,S)``, about [-1,1]. The same latent feeds every layer."""
        out = self.conv1(self.input(latent.shape[0]), latent)
        skip = flow = None
        for conv_up, conv, to_rgb, to_flow, feat in zip(
            self.convs[::2], self.convs[1::2], self.to_rgbs, self.to_flows, feats, strict=True
        ):
            out = conv(conv_up(out, latent), latent)
            warped, out, flow = to_flow(out, latent, feat, flow)
            skip = to_rgb(warped, skip)
        assert skip is not None
        return skip


class Generator(nn.Module):
    """LIA generator: ``enc`` (:class:`Encoder`) and ``dec`` (:class:`Synthesis`).

    Args:
        size: image side (256 for the released models).
        style_dim: appearance code size (512).
        motion_dim: number of motion directions (20).
        channel_multiplier: decoder width multiplier (1).
    """

    def __init__(
        self,
        size: int = 256,
        style_dim: int = 512,
        motion_dim: int = 20,
        channel_multiplier: int = 1,
    ) -> None:
        super().__init__()
        self.size = size
        self.enc = Encoder(size, style_dim, motion_dim)
        self.dec = Synthesis(size, style_dim, motion_dim, channel_multiplier)

    def encode_source(self, source: Tensor) -> tuple[Tensor, Tensor, list[Tensor]]:
        """``source (1,3,S,S)`` [-1,1] -> (``wa``, ``d(alpha_source)``, both ``(1,style_dim)``;
        feats)."""
        wa, feats = self.enc.net_app(source)
        return wa, self.dec.direction(self.enc.fc(wa)), feats

    def animate(
        self,
        wa: Tensor,
        d_source: Tensor,
        feats: Sequence[Tensor],
        driving: Tensor,
        alpha_start: Tensor,
    ) -> Tensor:
        """Relative-motion re-enactment of one encoded source:
        ``latent = wa + (d(alpha_driving) - d(alpha_start)) + d_source`` (upstream's order).

        Args:
            wa, d_source, feats: from :meth:`encode_source` (batch 1).
            driving: ``(B,3,S,S)`` driving frames in [-1,1].
            alpha_start: ``(1,motion_dim)`` motion of driving frame 0 (``enc.enc_motion``).

        Returns:
            ``(B,3,S,S)`` float, about [-1,1] (unclamped).
        """
        b = driving.shape[0]
        alpha = self.enc.enc_motion(driving)
        d = self.dec.direction
        latent = wa + (d(alpha) - d(alpha_start)) + d_source
        return self.dec(latent, [f.expand(b, -1, -1, -1) for f in feats])

    def forward(self, source: Tensor, driving: Tensor, alpha_start: Tensor) -> Tensor:
        """``source`` and ``driving`` ``(B,3,S,S)`` [-1,1], ``alpha_start (B,motion_dim)`` ->
        ``(B,3,S,S)`` (upstream's ``gen(img_source, img_target, h_start)``)."""
        wa, feats = self.enc.net_app(source)
        d = self.dec.direction
        alpha_s, alpha_t = self.enc.fc(wa), self.enc.enc_motion(driving)
        return self.dec(wa + (d(alpha_t) - d(alpha_start)) + d(alpha_s), feats)


# --- loading --------------------------------------------------------------------------------


def read_lia_checkpoint(path: Path) -> dict[str, Tensor]:
    """The ``"gen"`` state dict of a LIA checkpoint.

    Read with :func:`~reenactbench.nn.loading.safe_load`, allowing
    ``argparse.Namespace`` (the training script stores its ``args`` next to
    ``gen``/``dis``/optimiser states); a file needing anything else is refused.

    Raises:
        InputError: unreadable file, no ``"gen"`` dict, or other pickled objects.
    """
    path = Path(path)
    ckpt = safe_load(path, "LIA checkpoint (vox.pt)", [argparse.Namespace])
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("gen"), dict):
        raise InputError(f"{path}: not a LIA checkpoint (expected a dict with key 'gen')")
    return ckpt["gen"]


def load_lia(
    path: Path,
    device: str | torch.device = "cpu",
    size: int = 256,
) -> Generator:
    """Build ``Generator(size, 512, 20, 1)`` and load ``path``'s ``"gen"`` strictly (eval mode).

    Raises:
        InputError: unreadable file, or a key / shape mismatch (one line naming the file).
    """
    state = read_lia_checkpoint(path)
    net = Generator(size)
    problems = state_dict_problems(net.state_dict(), state)
    if problems:
        raise InputError(
            f"{path}: not a LIA Generator({size}, 512, 20, 1) state dict: "
            + "; ".join(problems)
            + " (use the official vox.pt or a checkpoint in its layout)"
        )
    net.load_state_dict(state, strict=True)
    return net.eval().requires_grad_(False).to(device)
