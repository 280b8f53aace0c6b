"""StyleGAN2 generator with W, W+ and StyleSpace access, loading rosinality checkpoints.

Compatible with the checkpoints of rosinality/stylegan2-pytorch at commit
bef283a1c24087da704d16c30abc8e36e63efa0e (``model.py`` ``Generator``; MIT License), e.g.
``stylegan2-ffhq-config-f.pt`` (``g_ema``, ``latent_avg``) converted by its
``convert_weight.py`` from NVIDIA's release (weights under the Nvidia Source Code
License-NC). The code here is ours; module names, parameter names, buffer names and
shapes equal upstream's, so any ``g_ema`` loads with ``strict=True`` for every size and
channel multiplier, and outputs equal upstream's (bitwise on CPU in our parity test).

The three latent spaces of the paper (Eqs. 1-4):

- Z -> W: ``w = G.mapping(z)``, ``(B, style_dim)``; :func:`truncate` towards ``latent_avg``.
- W+: ``G.w_plus(w)``, ``(B, n_latent, style_dim)``; ``n_latent = 2 * log2(size) - 2``
  (18 at 1024x1024).
- StyleSpace S: ``G.styles(w_plus)``, the affine outputs of every modulated layer, 26
  tensors at 1024x1024 in forward order (conv and toRGB layers interleaved; the order,
  dims and W+ rows are in ``G.style_layers``, see :mod:`reenactbench.nn.stylespace`).
  ``G.synthesis_from_styles(styles)`` renders any (edited, mixed) style list, and
  ``G(w_plus, input_is_latent=True)`` is by construction
  ``G.synthesis_from_styles(G.styles(w_plus))``.

Noise (``noise=`` argument): ``"const"`` uses the stored per-layer buffers
``noises.noise_{i}`` (upstream's ``randomize_noise=False``), ``"random"`` draws fresh maps
from a passed ``torch.Generator`` (upstream's ``randomize_noise=True``, which uses the
global RNG), ``"none"`` adds nothing, or a list of ``num_layers`` explicit maps.
Noise map ``i`` feeds conv layer ``i`` (``conv1``, ``convs.0``, ``convs.1``, ...) and has
size ``2 ** ((i + 5) // 2)``.

Images are ``(B, 3, size, size)`` float32 RGB, about [-1, 1] (not clamped).
Upstream's own fused CUDA ops are not used: the pure-PyTorch ops of
:mod:`reenactbench.nn.stylegan2_ops` run on CPU and GPU.
"""

from __future__ import annotations

import argparse
import math
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Literal, NamedTuple, cast, overload

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from reenactbench.errors import InputError
from reenactbench.nn.loading import safe_load, state_dict_problems
from reenactbench.nn.stylegan2_ops import fused_leaky_relu, make_kernel, pixel_norm, upfirdn2d
from reenactbench.nn.stylespace import StyleLayer, channels_for, log2_size, style_layers

__all__ = [
    "FeatureHook",
    "NoiseMode",
    "PixelNorm",
    "EqualLinear",
    "Blur",
    "Upsample",
    "ModulatedConv2d",
    "NoiseInjection",
    "ConstantInput",
    "FusedLeakyReLU",
    "StyledConv",
    "ToRGB",
    "Generator",
    "GeneratorConfig",
    "truncate",
    "config_from_state_dict",
    "load_generator",
    "LATENT_AVG_SAMPLES",
]

NoiseMode = Literal["const", "random", "none"]
#: ``hook(resolution, feature) -> feature`` (:meth:`Generator.synthesis_from_styles`).
FeatureHook = Callable[[int, Tensor], Tensor]

#: Samples averaged for ``latent_avg`` when a checkpoint has none (as upstream's
#: ``generate.py``: ``g_ema.mean_latent(4096)``), drawn from ``torch.Generator`` seed 0.
LATENT_AVG_SAMPLES = 4096

_Kernel = tuple[float, ...]


def _normal(shape: Sequence[int], generator: torch.Generator) -> Tensor:
    return torch.randn(tuple(shape), generator=generator, device=generator.device)


class PixelNorm(nn.Module):
    """Normalise ``(B, D)`` rows to unit RMS (first layer of the mapping network)."""

    def forward(self, x: Tensor) -> Tensor:
        return pixel_norm(x)


class EqualLinear(nn.Module):
    """Linear layer with equalised learning rate: ``x @ (W * lr_mul / sqrt(in)).T + b * lr_mul``.

    Keys: ``weight (out, in)``, ``bias (out,)``. With ``activation=True`` a fused leaky ReLU
    (slope 0.2, gain sqrt 2) follows, the bias added before it.
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        bias_init: float = 0.0,
        lr_mul: float = 1.0,
        activation: bool = False,
    ) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(out_dim, in_dim))
        self.bias = nn.Parameter(torch.full((out_dim,), float(bias_init)))
        self.bias_init = float(bias_init)
        self.activation = activation
        self.scale = (1 / math.sqrt(in_dim)) * lr_mul
        self.lr_mul = lr_mul

    def reset_parameters(self, generator: torch.Generator) -> None:
        """Upstream's initialisation: ``W ~ N(0, 1) / lr_mul``, ``b = bias_init``."""
        with torch.no_grad():
            self.weight.copy_(_normal(self.weight.shape, generator).div_(self.lr_mul))
            self.bias.fill_(self.bias_init)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, in) -> (B, out)``."""
        if self.activation:
            out = F.linear(x, self.weight * self.scale)
            return fused_leaky_relu(out, self.bias * self.lr_mul)
        return F.linear(x, self.weight * self.scale, bias=self.bias * self.lr_mul)


class Blur(nn.Module):
    """FIR low-pass filter with fixed pads; buffer ``kernel (k, k)`` (x ``factor**2``)."""

    kernel: Tensor

    def __init__(self, taps: _Kernel, pad: tuple[int, int], upsample_factor: int = 1) -> None:
        super().__init__()
        kernel = make_kernel(taps)
        if upsample_factor > 1:
            kernel = kernel * (upsample_factor**2)
        self.register_buffer("kernel", kernel)
        self.pad = pad

    def forward(self, x: Tensor) -> Tensor:
        return upfirdn2d(x, self.kernel, pad=self.pad)


class Upsample(nn.Module):
    """2x FIR upsampling of the RGB skip (``to_rgbs.j.upsample``); buffer ``kernel (k, k)``."""

    kernel: Tensor

    def __init__(self, taps: _Kernel, factor: int = 2) -> None:
        super().__init__()
        self.factor = factor
        self.register_buffer("kernel", make_kernel(taps) * (factor**2))
        p = len(taps) - factor
        self.pad = ((p + 1) // 2 + factor - 1, p // 2)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, C, H, W) -> (B, C, 2H, 2W)``."""
        return upfirdn2d(x, self.kernel, up=self.factor, down=1, pad=self.pad)


class ModulatedConv2d(nn.Module):
    """StyleGAN2 modulated (and demodulated) convolution, optionally 2x upsampling.

    Keys: ``weight (1, out, in, k, k)``, ``modulation.weight (in, style_dim)``,
    ``modulation.bias (in,)``, and ``blur.kernel`` when upsampling. Unlike upstream's
    ``forward(input, w)``, :meth:`forward` takes the style vector ``s = modulation(w)``
    so that StyleSpace can be edited; :meth:`affine` is ``modulation``.
    """

    def __init__(
        self,
        in_channel: int,
        out_channel: int,
        kernel_size: int,
        style_dim: int,
        demodulate: bool = True,
        upsample: bool = False,
        blur_kernel: _Kernel = (1, 3, 3, 1),
    ) -> None:
        super().__init__()
        self.in_channel = in_channel
        self.out_channel = out_channel
        self.kernel_size = kernel_size
        self.upsample = upsample
        self.demodulate = demodulate
        if upsample:
            factor = 2
            p = (len(blur_kernel) - factor) - (kernel_size - 1)
            pad = ((p + 1) // 2 + factor - 1, p // 2 + 1)
            self.blur = Blur(blur_kernel, pad=pad, upsample_factor=factor)
        self.scale = 1 / math.sqrt(in_channel * kernel_size**2)
        self.padding = kernel_size // 2
        self.weight = nn.Parameter(
            torch.zeros(1, out_channel, in_channel, kernel_size, kernel_size)
        )
        self.modulation = EqualLinear(style_dim, in_channel, bias_init=1)

    def reset_parameters(self, generator: torch.Generator) -> None:
        """Upstream's initialisation: ``weight ~ N(0, 1)`` (modulation reset separately)."""
        with torch.no_grad():
            self.weight.copy_(_normal(self.weight.shape, generator))

    def affine(self, w: Tensor) -> Tensor:
        """The layer's StyleSpace vector: ``(B, style_dim) -> (B, in_channel)``."""
        return self.modulation(w)

    def forward(self, x: Tensor, s: Tensor) -> Tensor:
        """``x (B, in, H, W)``, ``s (B, in)`` -> ``(B, out, H', W')`` (``H' = 2H`` if upsample)."""
        b, c, h, w = x.shape
        k, o = self.kernel_size, self.out_channel
        weight = self.scale * self.weight * s.view(b, 1, c, 1, 1)  # (B, out, in, k, k)
        if self.demodulate:
            demod = torch.rsqrt(weight.pow(2).sum([2, 3, 4]) + 1e-8)
            weight = weight * demod.view(b, o, 1, 1, 1)
        x = x.reshape(1, b * c, h, w)
        if self.upsample:  # transposed conv, stride 2, one group per sample; then blur
            weight = weight.transpose(1, 2).reshape(b * c, o, k, k)
            out = F.conv_transpose2d(x, weight, padding=0, stride=2, groups=b)
            return self.blur(out.view(b, o, out.shape[2], out.shape[3]))
        out = F.conv2d(x, weight.reshape(b * o, c, k, k), padding=self.padding, groups=b)
        return out.view(b, o, out.shape[2], out.shape[3])


class NoiseInjection(nn.Module):
    """``x + weight * noise``; key ``weight (1,)`` (per-layer noise strength)."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))

    def forward(self, x: Tensor, noise: Tensor | None) -> Tensor:
        """``noise``: ``(B or 1, 1, H, W)``; None adds nothing (same as zero noise)."""
        return x if noise is None else x + self.weight * noise


class ConstantInput(nn.Module):
    """Learned constant ``input (1, C, 4, 4)``, repeated over the batch."""

    def __init__(self, channel: int, size: int = 4) -> None:
        super().__init__()
        self.input = nn.Parameter(torch.zeros(1, channel, size, size))

    def forward(self, batch: int) -> Tensor:
        return self.input.repeat(batch, 1, 1, 1)


class FusedLeakyReLU(nn.Module):
    """Bias + leaky ReLU (0.2) + gain sqrt 2; key ``bias (C,)``."""

    def __init__(self, channel: int) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(channel))

    def forward(self, x: Tensor) -> Tensor:
        return fused_leaky_relu(x, self.bias)


class StyledConv(nn.Module):
    """Modulated 3x3 conv + noise + biased leaky ReLU (``conv``, ``noise``, ``activate``)."""

    def __init__(
        self,
        in_channel: int,
        out_channel: int,
        kernel_size: int,
        style_dim: int,
        upsample: bool = False,
        blur_kernel: _Kernel = (1, 3, 3, 1),
    ) -> None:
        super().__init__()
        self.conv = ModulatedConv2d(
            in_channel,
            out_channel,
            kernel_size,
            style_dim,
            upsample=upsample,
            blur_kernel=blur_kernel,
        )
        self.noise = NoiseInjection()
        self.activate = FusedLeakyReLU(out_channel)

    def forward(self, x: Tensor, s: Tensor, noise: Tensor | None) -> Tensor:
        return self.activate(self.noise(self.conv(x, s), noise))


class ToRGB(nn.Module):
    """Modulated 1x1 conv to RGB (no demodulation) + ``bias (1, 3, 1, 1)`` + upsampled skip."""

    def __init__(
        self,
        in_channel: int,
        style_dim: int,
        upsample: bool = True,
        blur_kernel: _Kernel = (1, 3, 3, 1),
    ) -> None:
        super().__init__()
        if upsample:
            self.upsample = Upsample(blur_kernel)
        self.conv = ModulatedConv2d(in_channel, 3, 1, style_dim, demodulate=False)
        self.bias = nn.Parameter(torch.zeros(1, 3, 1, 1))

    def forward(self, x: Tensor, s: Tensor, skip: Tensor | None = None) -> Tensor:
        out = self.conv(x, s) + self.bias
        if skip is not None:
            out = out + self.upsample(skip)
        return out


def truncate(w: Tensor, latent_avg: Tensor, psi: float) -> Tensor:
    """Truncation trick: ``latent_avg + psi * (w - latent_avg)``.

    Args:
        w: ``(B, D)`` W or ``(B, n_latent, D)`` W+ codes.
        latent_avg: ``(D,)`` (or broadcastable) average W.
        psi: 1 keeps ``w``, 0 gives ``latent_avg``.
    """
    if psi == 1:
        return w
    return latent_avg + psi * (w - latent_avg)


class Generator(nn.Module):
    """rosinality's StyleGAN2 generator (``g_ema`` layout), with StyleSpace access.

    Parameters start as zeros (no randomness in the constructor): load a state dict
    (:func:`load_generator`) or call :meth:`reset_parameters` with a ``torch.Generator``.
    ``blur_kernel`` sets the FIR taps of the upsampling convs; the toRGB skip upsampling
    always uses ``(1, 3, 3, 1)``, as upstream (the kernel values come from the file anyway).

    Attributes:
        size: output resolution; style_dim: W dimension; n_mlp: mapping layers.
        n_latent: rows of W+ (``2 * log2(size) - 2``).
        num_layers: noise maps / conv layers (``2 * log2(size) - 3``).
        style_layers: :class:`~reenactbench.nn.stylespace.StyleLayer` per style vector,
            forward order (``3 * log2(size) - 4`` entries).
    """

    def __init__(
        self,
        size: int,
        style_dim: int = 512,
        n_mlp: int = 8,
        channel_multiplier: int = 2,
        blur_kernel: Sequence[float] = (1, 3, 3, 1),
        lr_mlp: float = 0.01,
        max_channels: int = 0,
    ) -> None:
        super().__init__()
        self.max_channels = max_channels  # > 0 caps the channel table (toy configs only)
        self.log_size = log2_size(size)
        self.size = size
        self.style_dim = style_dim
        self.n_mlp = n_mlp
        self.channel_multiplier = channel_multiplier
        taps = tuple(float(t) for t in blur_kernel)
        self.style = nn.Sequential(
            PixelNorm(),
            *(
                EqualLinear(style_dim, style_dim, lr_mul=lr_mlp, activation=True)
                for _ in range(n_mlp)
            ),
        )
        self.channels = {
            2**i: channels_for(2**i, channel_multiplier, max_channels) for i in range(2, 11)
        }
        c4 = self.channels[4]
        self.input = ConstantInput(c4)
        self.conv1 = StyledConv(c4, c4, 3, style_dim, blur_kernel=taps)
        self.to_rgb1 = ToRGB(c4, style_dim, upsample=False)
        self.num_layers = (self.log_size - 2) * 2 + 1
        self.n_latent = self.log_size * 2 - 2
        self.convs = nn.ModuleList()
        self.to_rgbs = nn.ModuleList()
        self.noises = nn.Module()
        for i in range(self.num_layers):
            res = 2 ** ((i + 5) // 2)
            self.noises.register_buffer(f"noise_{i}", torch.zeros(1, 1, res, res))
        in_ch = c4
        for i in range(3, self.log_size + 1):
            out_ch = self.channels[2**i]
            self.convs.append(
                StyledConv(in_ch, out_ch, 3, style_dim, upsample=True, blur_kernel=taps)
            )
            self.convs.append(StyledConv(out_ch, out_ch, 3, style_dim, blur_kernel=taps))
            self.to_rgbs.append(ToRGB(out_ch, style_dim))  # upstream: default taps here
            in_ch = out_ch
        self.style_layers: tuple[StyleLayer, ...] = style_layers(
            size, channel_multiplier, max_channels
        )
        self._style_modules = [
            cast(ModulatedConv2d, self.get_submodule(f"{ly.module}.conv"))
            for ly in self.style_layers
        ]

    # --- initialisation -----------------------------------------------------------------

    def reset_parameters(self, generator: torch.Generator) -> Generator:
        """Upstream's training initialisation, drawn from ``generator`` in module order.

        Mapping/affine weights ``N(0, 1) / lr_mul``, affine biases 1, conv weights and the
        constant input ``N(0, 1)``, noise strengths and biases 0, noise buffers ``N(0, 1)``.
        Returns ``self``.
        """
        with torch.no_grad():
            for m in self.modules():
                if isinstance(m, EqualLinear | ModulatedConv2d):
                    m.reset_parameters(generator)
                elif isinstance(m, ConstantInput):
                    m.input.copy_(_normal(m.input.shape, generator))
                elif isinstance(m, NoiseInjection | FusedLeakyReLU | ToRGB):
                    for p in m.parameters(recurse=False):
                        p.zero_()
            for buf in self.noises.buffers():
                buf.copy_(_normal(buf.shape, generator))
        return self

    # --- Z, W, W+ -----------------------------------------------------------------------

    def mapping(self, z: Tensor) -> Tensor:
        """Z -> W: ``(B, style_dim)`` -> ``(B, style_dim)`` (pixel norm + ``n_mlp`` layers)."""
        return self.style(z)

    def get_latent(self, z: Tensor) -> Tensor:
        """Alias of :meth:`mapping` (upstream's name)."""
        return self.style(z)

    def mean_latent(self, n: int, generator: torch.Generator) -> Tensor:
        """Mean W of ``n`` samples ``z ~ N(0, I)`` drawn from ``generator``: ``(style_dim,)``."""
        z = _normal((n, self.style_dim), generator).to(self.input.input)
        return self.style(z).mean(0)

    def w_plus(self, w: Tensor) -> Tensor:
        """W -> W+: ``(B, style_dim)`` repeated to ``(B, n_latent, style_dim)``."""
        return w[:, None].repeat(1, self.n_latent, 1)

    def styles(self, w_plus: Tensor) -> list[Tensor]:
        """W+ -> StyleSpace: the affine output of every layer, forward order.

        Args:
            w_plus: ``(B, n_latent, style_dim)`` (or ``(B, style_dim)``, used for every layer).

        Returns:
            ``len(self.style_layers)`` tensors ``(B, dim_k)``; entry ``k`` is
            ``A_k(w_plus[:, style_layers[k].w_index])``.
        """
        if w_plus.ndim == 2:
            w_plus = self.w_plus(w_plus)
        if w_plus.ndim != 3 or w_plus.shape[1:] != (self.n_latent, self.style_dim):
            raise ValueError(
                f"W+ must be (B, {self.n_latent}, {self.style_dim}), got {tuple(w_plus.shape)}"
            )
        return [
            conv.affine(w_plus[:, ly.w_index])
            for ly, conv in zip(self.style_layers, self._style_modules, strict=True)
        ]

    # --- synthesis ----------------------------------------------------------------------

    def make_noise(self, batch: int, generator: torch.Generator) -> list[Tensor]:
        """``num_layers`` maps ``(batch, 1, r_i, r_i)`` ~ N(0, 1) from ``generator``, on
        this network's device and dtype."""
        ref = self.input.input
        return [
            _normal((batch, *buf.shape[1:]), generator).to(ref) for buf in self._noise_buffers()
        ]

    def _noise_buffers(self) -> list[Tensor]:
        return [getattr(self.noises, f"noise_{i}") for i in range(self.num_layers)]

    def _resolve_noise(
        self, noise: NoiseMode | Sequence[Tensor], batch: int, generator: torch.Generator | None
    ) -> Sequence[Tensor | None]:
        if isinstance(noise, str):
            if noise == "const":
                return self._noise_buffers()
            if noise == "none":
                return [None] * self.num_layers
            if noise == "random":
                if generator is None:
                    raise ValueError('noise="random" needs a torch.Generator (generator=...)')
                return self.make_noise(batch, generator)
            raise ValueError(
                f'noise must be "const", "random", "none" or a list of maps, got {noise!r}'
            )
        if len(noise) != self.num_layers:
            raise ValueError(f"expected {self.num_layers} noise maps, got {len(noise)}")
        return noise

    @overload
    def synthesis_from_styles(
        self,
        styles: Sequence[Tensor],
        *,
        noise: NoiseMode | Sequence[Tensor] = ...,
        generator: torch.Generator | None = ...,
        return_features: Literal[False] = ...,
        feature_hook: FeatureHook | None = ...,
    ) -> Tensor: ...

    @overload
    def synthesis_from_styles(
        self,
        styles: Sequence[Tensor],
        *,
        noise: NoiseMode | Sequence[Tensor] = ...,
        generator: torch.Generator | None = ...,
        return_features: Literal[True],
        feature_hook: FeatureHook | None = ...,
    ) -> tuple[Tensor, dict[int, Tensor]]: ...

    def synthesis_from_styles(
        self,
        styles: Sequence[Tensor],
        *,
        noise: NoiseMode | Sequence[Tensor] = "const",
        generator: torch.Generator | None = None,
        return_features: bool = False,
        feature_hook: FeatureHook | None = None,
    ) -> Tensor | tuple[Tensor, dict[int, Tensor]]:
        """Render StyleSpace vectors.

        Args:
            styles: ``len(self.style_layers)`` tensors ``(B, dim_k)``, forward order (as
                returned by :meth:`styles`, possibly edited or mixed).
            noise: ``"const"`` (stored buffers), ``"random"`` (from ``generator``),
                ``"none"``, or ``num_layers`` maps ``(B or 1, 1, r_i, r_i)``.
            generator: RNG for ``noise="random"``.
            return_features: also return the feature map of each resolution.
            feature_hook: ``hook(resolution, x) -> x'``, called in every block from 8x8 on
                with the output of its first (upsampling) conv, before its second conv; what
                it returns replaces that feature map, so synthesis restarts from a replaced
                (e.g. warped) intermediate feature at that resolution (StyleHEAT edits the
                64x64 one: upstream's layer index 7). Returning ``x`` unchanged leaves the
                output bit-identical.

        Returns:
            ``(B, 3, size, size)`` image; with ``return_features``, also a dict
            ``{resolution: (B, C_res, res, res)}`` of the activations after each block's
            last conv (4: ``conv1``; 8: ``convs.1``; ...; the inputs of the toRGB layers).
        """
        n = len(self.style_layers)
        if len(styles) != n:
            raise ValueError(f"expected {n} style vectors, got {len(styles)}")
        batch = styles[0].shape[0]
        for ly, s in zip(self.style_layers, styles, strict=True):
            if s.shape != (batch, ly.dim):
                raise ValueError(
                    f"style {ly.index} ({ly.module}) must be ({batch}, {ly.dim}), "
                    f"got {tuple(s.shape)}"
                )
        maps = self._resolve_noise(noise, batch, generator)
        features: dict[int, Tensor] = {}
        out = self.conv1(self.input(batch), styles[0], maps[0])
        skip = self.to_rgb1(out, styles[1])
        features[4] = out
        k = 2
        for j, to_rgb in enumerate(self.to_rgbs):
            out = self.convs[2 * j](out, styles[k], maps[2 * j + 1])
            if feature_hook is not None:
                out = feature_hook(out.shape[-1], out)
            out = self.convs[2 * j + 1](out, styles[k + 1], maps[2 * j + 2])
            skip = to_rgb(out, styles[k + 2], skip)
            features[out.shape[-1]] = out
            k += 3
        return (skip, features) if return_features else skip

    def synthesis(
        self,
        w_plus: Tensor,
        *,
        noise: NoiseMode | Sequence[Tensor] = "const",
        generator: torch.Generator | None = None,
        feature_hook: FeatureHook | None = None,
    ) -> Tensor:
        """W+ ``(B, n_latent, style_dim)`` -> image ``(B, 3, size, size)``
        (``feature_hook``: see :meth:`synthesis_from_styles`)."""
        return self.synthesis_from_styles(
            self.styles(w_plus), noise=noise, generator=generator, feature_hook=feature_hook
        )

    def forward(
        self,
        styles: Tensor | Sequence[Tensor],
        *,
        return_latents: bool = False,
        inject_index: int | None = None,
        truncation: float = 1.0,
        truncation_latent: Tensor | None = None,
        input_is_latent: bool = False,
        noise: NoiseMode | Sequence[Tensor] = "const",
        generator: torch.Generator | None = None,
    ) -> tuple[Tensor, Tensor | None]:
        """Upstream's ``Generator.forward`` for Z / W / W+ input, without global randomness.

        Same arguments and result as upstream, except: ``noise`` replaces
        ``noise``/``randomize_noise`` (upstream ``randomize_noise=False`` is
        ``noise="const"``, the default here; ``randomize_noise=True`` is ``noise="random"``
        with ``generator``), and a random ``inject_index`` for style mixing is drawn from
        ``generator`` (upstream: Python's global ``random``).

        Args:
            styles: one tensor or a list of one or two: ``(B, style_dim)`` Z codes (or W
                codes with ``input_is_latent``), or one ``(B, n_latent, style_dim)`` W+.
            return_latents: also return the W+ used.
            inject_index: with two codes, rows ``< inject_index`` of W+ come from the first.
            truncation: psi; applied (with ``truncation_latent``) when < 1.
            truncation_latent: ``(style_dim,)`` or ``(1, style_dim)`` average W.
            input_is_latent: ``styles`` are W / W+ codes (skip the mapping network).
            noise, generator: see :meth:`synthesis_from_styles`.

        Returns:
            ``(image (B, 3, size, size), W+ (B, n_latent, style_dim) or None)``.
        """
        codes = [styles] if isinstance(styles, Tensor) else list(styles)
        if not 1 <= len(codes) <= 2:
            raise ValueError(f"expected one or two style codes, got {len(codes)}")
        if not input_is_latent:
            codes = [self.style(s) for s in codes]
        if truncation < 1:
            if truncation_latent is None:
                raise ValueError("truncation < 1 needs truncation_latent (e.g. latent_avg)")
            codes = [truncation_latent + truncation * (s - truncation_latent) for s in codes]
        if len(codes) == 1:
            latent = codes[0] if codes[0].ndim == 3 else self.w_plus(codes[0])
        else:
            if inject_index is None:
                if generator is None:
                    raise ValueError("style mixing needs inject_index or a torch.Generator")
                inject_index = int(torch.randint(1, self.n_latent, (1,), generator=generator))
            latent = torch.cat(
                [
                    codes[0].unsqueeze(1).repeat(1, inject_index, 1),
                    codes[1].unsqueeze(1).repeat(1, self.n_latent - inject_index, 1),
                ],
                1,
            )
        image = self.synthesis_from_styles(self.styles(latent), noise=noise, generator=generator)
        return image, (latent if return_latents else None)


# --- loading ------------------------------------------------------------------------------


class GeneratorConfig(NamedTuple):
    """Architecture read off a ``g_ema`` state dict (``Generator(*config)``)."""

    size: int
    style_dim: int
    n_mlp: int
    channel_multiplier: int
    max_channels: int = 0  #: > 0 for narrow (capped) toy generators


_EXPECTED = "a rosinality StyleGAN2 checkpoint ({'g_ema': state dict, 'latent_avg': (D,)})"


def config_from_state_dict(
    state: Mapping[str, Tensor], source: str = "state dict"
) -> GeneratorConfig:
    """Infer size, style_dim, n_mlp and channel multiplier from a ``g_ema`` state dict.

    ``channel_multiplier`` is read from the 64x64 block (``convs.6``); for sizes below 64
    it changes no tensor and 2 is returned.

    Raises:
        InputError: the keys needed are missing (names ``source``).
    """
    mlp = sorted(int(m[1]) for k in state if (m := re.fullmatch(r"style\.(\d+)\.weight", k)))
    rgbs = {int(m[1]) for k in state if (m := re.fullmatch(r"to_rgbs\.(\d+)\.conv\.weight", k))}
    if not mlp or "style.1.weight" not in state or not rgbs:
        raise InputError(
            f"{source}: not {_EXPECTED}: no mapping (style.N) or to_rgbs layers in g_ema"
        )
    size = 2 ** (max(rgbs) + 3)
    style_dim = int(state["style.1.weight"].shape[1])
    cm = 2
    if "convs.6.conv.weight" in state:
        cm = max(1, int(state["convs.6.conv.weight"].shape[1]) // 256)
    cap = 0
    if "input.input" in state and int(state["input.input"].shape[1]) < 512:
        cap = int(state["input.input"].shape[1])  # a narrow toy generator (max_channels)
        cm = 1
    return GeneratorConfig(size, style_dim, len(mlp), cm, cap)


def _check_state(net: Generator, state: Mapping[str, Tensor], source: str) -> None:
    problems = state_dict_problems(net.state_dict(), state)
    if problems:
        arch = (
            f"Generator({net.size}, {net.style_dim}, {net.n_mlp}, "
            f"channel_multiplier={net.channel_multiplier})"
        )
        raise InputError(f"{source}: g_ema does not match {arch}: " + "; ".join(problems))


def _read(path: Path) -> object:
    """``torch.load`` with ``weights_only=True``; training checkpoints of upstream's
    ``train.py`` also hold ``args`` (an ``argparse.Namespace``), which is allow-listed."""
    return safe_load(path, "StyleGAN2 checkpoint (rosinality layout)", [argparse.Namespace])


def load_generator(
    path: Path | str,
    device: str | torch.device = "cpu",
    *,
    size: int | None = None,
    lr_mlp: float = 0.01,
    entry: str | None = "g_ema",
) -> tuple[Generator, Tensor]:
    """Load ``g_ema`` (strict) and ``latent_avg`` of a rosinality StyleGAN2 checkpoint.

    The architecture is read from the state dict (:func:`config_from_state_dict`). Other
    entries of the file (``g``, ``d``, optimiser states, ``args``) are ignored. A file
    without ``latent_avg`` (upstream training checkpoints) gets the mean W of
    :data:`LATENT_AVG_SAMPLES` codes drawn from ``torch.Generator`` seed 0, as upstream's
    ``generate.py`` does with the global RNG.

    Args:
        path: e.g. ``weight_path("stylegan2-ffhq")`` (``stylegan2-ffhq-config-f.pt``).
        device: torch device for the network and ``latent_avg``.
        size: expected output size; a file of another size is an error (None: any).
        lr_mlp: mapping-network learning-rate multiplier (not stored in files; 0.01 for
            every released StyleGAN2).
        entry: the key of the generator's state dict in the file; ``None``: the file is
            the state dict itself (StyleHEAT's ``StyleGAN_e4e.pth``, no ``latent_avg``).

    Returns:
        ``(generator in eval mode without grads, latent_avg (style_dim,) float32)``.

    Raises:
        InputError: unreadable file, no ``g_ema``, key or shape mismatch, wrong size, or a
            ``latent_avg`` of the wrong size; the message names ``path``.
    """
    path = Path(path)
    ckpt = _read(path)
    if entry is None and isinstance(ckpt, Mapping):
        ckpt = {"g_ema": ckpt}  # a bare state dict
        entry = "g_ema"
    if not isinstance(ckpt, Mapping) or not isinstance(ckpt.get(entry), Mapping):
        raise InputError(f"{path}: not {_EXPECTED}: no {entry!r} state dict")
    state = ckpt[entry]
    if not all(isinstance(v, Tensor) for v in state.values()):
        raise InputError(f"{path}: not {_EXPECTED}: 'g_ema' holds non-tensor values")
    cfg = config_from_state_dict(state, str(path))
    if size is not None and cfg.size != size:
        raise InputError(f"{path}: generator is {cfg.size}x{cfg.size}, expected {size}x{size}")
    net = Generator(
        cfg.size, cfg.style_dim, cfg.n_mlp, cfg.channel_multiplier, lr_mlp=lr_mlp,
        max_channels=cfg.max_channels,
    )  # fmt: skip
    _check_state(net, state, str(path))
    net.load_state_dict(state, strict=True)
    net = net.eval().requires_grad_(False).to(device)
    avg = ckpt.get("latent_avg")
    if avg is None:
        with torch.no_grad():
            gen = torch.Generator().manual_seed(0)
            avg = net.mean_latent(LATENT_AVG_SAMPLES, gen)
    if not isinstance(avg, Tensor) or avg.numel() != cfg.style_dim:
        got = tuple(avg.shape) if isinstance(avg, Tensor) else type(avg).__name__
        raise InputError(f"{path}: latent_avg must have {cfg.style_dim} values, got {got}")
    return net, avg.detach().reshape(cfg.style_dim).float().to(device)
