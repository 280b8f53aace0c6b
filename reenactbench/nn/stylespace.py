"""StyleSpace bookkeeping for the StyleGAN2 generator (``reenactbench.nn.stylegan2``).

StyleSpace S is the list of per-layer style vectors ``s_k = A_k(w_{i(k)})``: the outputs of
the affine ``modulation`` layer of every modulated convolution, in the order the
synthesis network uses them (Wu et al., "StyleSpace Analysis", 2021). At 1024x1024 with
channel multiplier 2 there are 26 vectors (9,088 channels): 17 conv layers (``conv1``,
``convs.0-15``; 6,048 channels) interleaved with 9 toRGB layers (``to_rgb1``,
``to_rgbs.0-7``; 3,040 channels).

Canonical order (the order of :func:`style_layers` and of every style list in this
package) is the forward order::

    conv1, to_rgb1,
    convs.0, convs.1, to_rgbs.0,        # 8x8
    convs.2, convs.3, to_rgbs.1,        # 16x16
    ...
    convs.2j, convs.2j+1, to_rgbs.j,    # (8 * 2**j) x (8 * 2**j)

W+ index of each: ``conv1`` -> 0, ``to_rgb1`` -> 1, ``convs.2j`` -> 1 + 2j,
``convs.2j+1`` -> 2 + 2j, ``to_rgbs.j`` -> 3 + 2j (so ``n_latent = 2 * log2(size) - 2``).
A layer's dimension is its input channel count (the modulation scales input channels).

Style tensors are ``(B, dim) float32``, unbounded (the affine bias starts at 1, so values
cluster around 1 for a trained network).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = [
    "StyleLayer",
    "channels_for",
    "log2_size",
    "style_layers",
    "STYLE_LAYERS",
    "first_style_indices",
    "mix_styles",
    "styles_to_vector",
    "vector_to_styles",
]


@dataclass(frozen=True)
class StyleLayer:
    """One StyleSpace layer: position, module, channels, W+ row, kind."""

    index: int  # position in the canonical (forward) order
    module: str  # generator module holding the modulation, e.g. "convs.3" or "to_rgbs.1"
    dim: int  # number of style channels (= input channels of that layer)
    w_index: int  # row of W+ fed to this layer's affine A
    is_torgb: bool  # True for toRGB layers, False for the 3x3 conv layers
    resolution: int  # output size of the layer's block (conv1/to_rgb1: 4; convs.0-1: 8; ...)


def channels_for(resolution: int, channel_multiplier: int = 2, max_channels: int = 0) -> int:
    """Feature channels of the synthesis network at ``resolution`` (rosinality's table),
    capped at ``max_channels`` when it is > 0 (narrow toy generators; 0 = the table)."""
    table = {
        4: 512,
        8: 512,
        16: 512,
        32: 512,
        64: 256 * channel_multiplier,
        128: 128 * channel_multiplier,
        256: 64 * channel_multiplier,
        512: 32 * channel_multiplier,
        1024: 16 * channel_multiplier,
    }
    if resolution not in table:
        raise ValueError(f"StyleGAN2 resolution must be a power of 2 in 4..1024, got {resolution}")
    return min(table[resolution], max_channels) if max_channels > 0 else table[resolution]


def log2_size(size: int) -> int:
    """``log2(size)`` for a generator output size in 8..1024, else ValueError."""
    log = int(math.log2(size)) if size > 0 else 0
    if size < 8 or size > 1024 or 2**log != size:
        raise ValueError(f"StyleGAN2 size must be a power of 2 in 8..1024, got {size}")
    return log


def style_layers(
    size: int = 1024, channel_multiplier: int = 2, max_channels: int = 0
) -> tuple[StyleLayer, ...]:
    """The StyleSpace layers of ``Generator(size, channel_multiplier=...)`` in forward order.

    ``len(style_layers(size)) == 3 * log2(size) - 4`` (26 at 1024, 20 at 256).
    """
    log = log2_size(size)
    c4 = channels_for(4, channel_multiplier, max_channels)
    out = [StyleLayer(0, "conv1", c4, 0, False, 4), StyleLayer(1, "to_rgb1", c4, 1, True, 4)]
    in_ch = c4
    for j, lg in enumerate(range(3, log + 1)):
        res = 2**lg
        ch = channels_for(res, channel_multiplier, max_channels)
        n = len(out)
        out.append(StyleLayer(n, f"convs.{2 * j}", in_ch, 1 + 2 * j, False, res))
        out.append(StyleLayer(n + 1, f"convs.{2 * j + 1}", ch, 2 + 2 * j, False, res))
        out.append(StyleLayer(n + 2, f"to_rgbs.{j}", ch, 3 + 2 * j, True, res))
        in_ch = ch
    return tuple(out)


#: The 26 layers of the FFHQ config-f generator (1024x1024, channel multiplier 2).
STYLE_LAYERS: tuple[StyleLayer, ...] = style_layers(1024, 2)


def first_style_indices(
    layers: Sequence[StyleLayer], count: int, *, include_torgb: bool = True
) -> list[int]:
    """Canonical indices of the first ``count`` layers, counting toRGB layers or not.

    ``include_torgb=True``: the first ``count`` entries of the forward order (at 1024,
    ``count=10`` gives indices 0-9: W+ 0-6, up to 32x32). ``include_torgb=False``: the
    first ``count`` conv layers (``count=10`` gives ``conv1``, ``convs.0-8``: indices
    0, 2, 3, 5, 6, 8, 9, 11, 12, 14; W+ 0-9, up to 128x128).
    """
    chosen = [ly.index for ly in layers if include_torgb or not ly.is_torgb][:count]
    if count < 0 or len(chosen) < count:
        raise ValueError(f"asked for {count} style layers, the generator has {len(chosen)}")
    return chosen


def mix_styles(
    base: Sequence[Tensor], replacement: Sequence[Tensor], indices: Iterable[int]
) -> list[Tensor]:
    """Style list taking layers ``indices`` from ``replacement`` and the rest from ``base``.

    Hybrid StyleSpace of the paper (Eqs. 1-4): e.g. the first 10 layers from S_F and the
    rest from A(W_ID). Tensors are not copied: the result holds the input tensors.

    Args:
        base: per-layer ``(B, dim_k)`` styles, canonical order.
        replacement: same length and shapes as ``base``.
        indices: canonical indices to take from ``replacement`` (any order, no repeats
            needed; negative or out-of-range indices are an error).

    Returns:
        New list of ``len(base)`` tensors.
    """
    if len(base) != len(replacement):
        raise ValueError(f"style lists differ in length: {len(base)} vs {len(replacement)}")
    take = set()
    for i in indices:
        if not 0 <= i < len(base):
            raise ValueError(f"style index {i} out of range 0..{len(base) - 1}")
        take.add(i)
    out = []
    for k, (a, b) in enumerate(zip(base, replacement, strict=True)):
        if a.shape != b.shape:
            raise ValueError(f"style {k}: shapes differ {tuple(a.shape)} vs {tuple(b.shape)}")
        out.append(b if k in take else a)
    return out


def styles_to_vector(styles: Sequence[Tensor]) -> Tensor:
    """Concatenate per-layer ``(B, dim_k)`` styles into one ``(B, sum dim_k)`` tensor."""
    return torch.cat(list(styles), dim=1)


def vector_to_styles(vector: Tensor, layers: Sequence[StyleLayer]) -> list[Tensor]:
    """Inverse of :func:`styles_to_vector`: split ``(B, sum dim_k)`` into per-layer views."""
    dims = [ly.dim for ly in layers]
    if vector.ndim != 2 or vector.shape[1] != sum(dims):
        raise ValueError(f"style vector must be (B, {sum(dims)}), got {tuple(vector.shape)}")
    return list(torch.split(vector, dims, dim=1))
