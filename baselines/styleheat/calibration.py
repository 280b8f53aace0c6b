"""StyleHEAT's video warper and calibration network, and the strict loader of
``StyleHEAT_visual.pt``.

Written to be state-dict compatible with OpenTalker/StyleHEAT at commit
9cb0c7cac00c79f901c3061850693b110f88c6ea (``models/styleheat/warper.py``
``calibration_net.py``, ``base_function.py``, ``models/stylegan2/model.py``): module names,
parameter shapes and inference math follow upstream's ``StyleHEAT.video_warper`` and
``StyleHEAT.calibrator`` (``CalibrationNet(out_size=64, input_channel=512,
channel_multiplier=2, narrow=1)``). The code is ours.

``StyleHEAT_visual.pt`` is ``{"net_G_ema": ...}``: upstream's ``_save_checkpoint`` drops
every key containing ``generator`` (the pretrained StyleGAN2 / HFGI inversion), so
``net_G_ema`` holds exactly ``video_warper.*`` (166 tensors) and ``calibrator.*`` (152,
including the 8 fixed blur kernels of the downsampling convs). Upstream loads it with
``strict=False``; :func:`load_styleheat` is strict.

Data flow at inference (upstream ``StyleHEAT.forward``):

* :class:`VideoWarper`: source ``(B,3,256,256)`` in [-1, 1] and PIRenderer's 73-d
  descriptor window ``(B,73,27)`` -> ``descriptor (B,256,1)`` (the mapping net's output,
  kept 3-D as upstream) and ``flow_field (B,2,64,64)`` in pixels of the 64x64 grid (plus
  ``warp_image``, the source warped by it). It is PIRenderer's mapping + warping nets with
  the same arguments (attribute ``warping_net``, PIRenderer's is ``warpping_net``).
* The generator warps its 64x64 feature ``fx`` (StyleGAN2 layer 7, ``(B,512,64,64)``) by the
  flow: ``fx_warp``.
* :class:`CalibrationNet`: ``fx_warp`` and the descriptor -> the ``refining_condition``
  list of 8 tensors ``[scale_8, shift_8, scale_16, shift_16, scale_32, shift_32, scale_64,
  shift_64]``, ``scale_r``/``shift_r`` ``(B,512,r,r)``. Upstream's generator applies only
  the last pair (``warping_index = 7 <= i < len(refining_condition) = 8``, i.e. ``i = 7``):
  ``out = out * (1 + c[6]) + c[7]`` on its 64x64 feature; entries 0-5 are computed and
  unused.

Upstream quirks kept: the calibrator's ``FineADAINResBlock2d`` uses the default
``nn.LeakyReLU()`` (slope 0.01, not 0.1) and does use ``conv1``/``norm1`` (PIRenderer's
block of the same name and layout overwrites that branch); ``ConvUpLayer`` upsamples
bilinearly (``align_corners=False``) before an equalised conv; ``ResBlock``'s
``resample_kernel`` and ``num_style_feat`` are ignored (blur taps ``(1, 3, 3, 1)``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from reenactbench.errors import InputError
from reenactbench.nn.loading import safe_load, state_dict_problems
from reenactbench.nn.stylegan2 import Blur, FusedLeakyReLU

from ..pirenderer.model import FineADAINResBlock2d, MappingNet, WarpingNet
from .inversion import EqualConv2d, ScaledLeakyReLU

__all__ = [
    "WARPER",
    "CALIBRATOR",
    "VideoWarper",
    "EqualConv2d",
    "ScaledLeakyReLU",
    "ConvLayer",
    "ResBlock",
    "ConvUpLayer",
    "ResUpBlock",
    "ADAINResBlock",
    "CalibrationNet",
    "StyleHEATVisual",
    "load_styleheat",
]

#: upstream ``VideoWarper.__init__``'s arguments (PIRenderer's face.yaml values).
WARPER: dict[str, dict] = {
    "mapping_net": dict(coeff_nc=73, descriptor_nc=256, layer=3),
    "warping_net": dict(
        image_nc=3, descriptor_nc=256, base_nc=32, max_nc=256, encoder_layer=5, decoder_layer=3
    ),
}
#: upstream ``StyleHEAT.__init__``'s ``CalibrationNet`` arguments.
CALIBRATOR: dict[str, int] = dict(out_size=64, input_channel=512, channel_multiplier=2, narrow=1)
BLUR: tuple[int, ...] = (1, 3, 3, 1)


class VideoWarper(nn.Module):
    """PIRenderer's mapping and warping nets: ``forward(image, descriptor_input)`` ->
    ``{"flow_field" (B,2,64,64), "warp_image" (B,3,256,256), "descriptor" (B,256,1)}``."""

    def __init__(self) -> None:
        super().__init__()
        self.mapping_net = MappingNet(**WARPER["mapping_net"])
        self.warping_net = WarpingNet(**WARPER["warping_net"])

    def forward(self, image: Tensor, descriptor_input: Tensor) -> dict[str, Tensor]:
        """``image (B,3,256,256)`` in [-1, 1], ``descriptor_input (B,73,27)``."""
        descriptor = self.mapping_net(descriptor_input)
        out = self.warping_net(image, descriptor)
        out["descriptor"] = descriptor
        return out


# --- StyleGAN2 discriminator-style layers (rosinality conventions, as upstream) ---------------


class ConvLayer(nn.Sequential):
    """[Blur] + EqualConv2d (stride 2 when downsampling) + [FusedLeakyReLU | ScaledLeakyReLU].
    Child indices (``0``, ``1``, ``2``) are upstream's state-dict keys."""

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
            layers.append(Blur(BLUR, pad=((p + 1) // 2, p // 2)))
            stride, padding = 2, 0
        else:
            stride, padding = 1, k // 2
        layers.append(EqualConv2d(cin, cout, k, stride, padding, bias=bias and not activate))
        if activate:
            layers.append(FusedLeakyReLU(cout) if bias else ScaledLeakyReLU(0.2))
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


class ConvUpLayer(nn.Module):
    """2x bilinear upsampling (``align_corners=False``), then an equalised conv and
    [FusedLeakyReLU (key ``activation.bias``) | ScaledLeakyReLU]; ``bias`` only without
    activation."""

    def __init__(
        self,
        cin: int,
        cout: int,
        k: int,
        padding: int = 0,
        bias: bool = True,
        activate: bool = True,
    ) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(cout, cin, k, k))
        self.bias = nn.Parameter(torch.zeros(cout)) if bias and not activate else None
        self.scale = 1 / math.sqrt(cin * k * k)
        self.padding = padding
        self.activation: nn.Module | None = None
        if activate:
            self.activation = FusedLeakyReLU(cout) if bias else ScaledLeakyReLU(0.2)

    def forward(self, x: Tensor) -> Tensor:
        out = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
        out = F.conv2d(out, self.weight * self.scale, self.bias, padding=self.padding)
        return out if self.activation is None else self.activation(out)


class ResUpBlock(nn.Module):
    """3x3 conv, then an up-conv; plus a 1x1 up-conv skip; summed / sqrt(2)."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv1 = ConvLayer(cin, cin, 3)
        self.conv2 = ConvUpLayer(cin, cout, 3, padding=1)
        self.skip = ConvUpLayer(cin, cout, 1, bias=False, activate=False)

    def forward(self, x: Tensor) -> Tensor:
        return (self.conv2(self.conv1(x)) + self.skip(x)) / math.sqrt(2)


# --- calibration network ----------------------------------------------------------------------


class ADAINResBlock(FineADAINResBlock2d):
    """StyleHEAT's ``FineADAINResBlock2d``: PIRenderer's layout, but both branches used:
    ``x = lrelu(norm1(conv1(x), z), 0.01); x + norm2(conv2(x), z)``."""

    def forward(self, x: Tensor, z: Tensor) -> Tensor:
        x = F.leaky_relu(self.norm1(self.conv1(x), z), 0.01)
        return self.norm2(self.conv2(x), z) + x


def _sft_head(n: int) -> nn.Sequential:
    """``condition_scale.i`` / ``condition_shift.i``: conv, scaled lrelu, conv to ``2n``."""
    return nn.Sequential(
        EqualConv2d(n, n, 3, padding=1), ScaledLeakyReLU(0.2), EqualConv2d(n, 2 * n, 3, padding=1)
    )


def _channels(channel_multiplier: int, narrow: float) -> dict[int, int]:
    """Upstream's U-Net widths per resolution (``unet_narrow = narrow / 2``)."""
    half = narrow * 0.5
    wide = {64: 256, 128: 128, 256: 64, 512: 32, 1024: 16}
    out = {r: int(512 * half) for r in (4, 8, 16, 32)}
    out.update({r: int(c * channel_multiplier * half) for r, c in wide.items()})
    return out


class CalibrationNet(nn.Module):
    """U-Net over the warped feature: ``forward(fx_warp, descriptor)`` -> the
    ``refining_condition`` list (see the module docstring).

    Encoder: 1x1 conv, ``log2(out_size) - 2`` downsampling ResBlocks to 4x4, a 3x3 conv;
    decoder: per level add the encoder skip, ResUpBlock, ADAIN res-block on the descriptor
    (through ``linear_3dmm``), then the scale and shift heads. ``num_style_feat`` is
    accepted for upstream's signature and unused, as upstream.
    """

    def __init__(
        self,
        out_size: int = 64,
        input_channel: int = 512,
        num_style_feat: int = 512,
        channel_multiplier: int = 2,
        narrow: float = 1,
    ) -> None:
        super().__init__()
        ch = _channels(channel_multiplier, narrow)
        self.log_size = int(math.log2(out_size))
        size = 2**self.log_size
        self.conv_body_first = ConvLayer(input_channel, ch[size], 1)
        self.conv_body_down = nn.ModuleList(
            ResBlock(ch[2**i], ch[2 ** (i - 1)]) for i in range(self.log_size, 2, -1)
        )
        self.final_conv = ConvLayer(ch[4], ch[4], 3)
        ups = range(3, self.log_size + 1)
        self.conv_body_up = nn.ModuleList(ResUpBlock(ch[2 ** (i - 1)], ch[2**i]) for i in ups)
        self.linear_3dmm = nn.Sequential(
            nn.Linear(256, 256), nn.LeakyReLU(0.1), nn.Linear(256, 256)
        )
        self.inject_3dmm = nn.ModuleList(ADAINResBlock(ch[2**i], ch[2**i]) for i in ups)
        self.condition_scale = nn.ModuleList(_sft_head(ch[2**i]) for i in ups)
        self.condition_shift = nn.ModuleList(_sft_head(ch[2**i]) for i in ups)

    def forward(self, fx_warp: Tensor, descriptor: Tensor) -> list[Tensor]:
        """``fx_warp (B,input_channel,out_size,out_size)``, ``descriptor (B,256,1)`` or
        ``(B,256)`` -> ``[scale_8, shift_8, ..., scale_out, shift_out]``, each
        ``(B, 2 * channels[r], r, r)``."""
        feat = self.conv_body_first(fx_warp)
        skips = []
        for down in self.conv_body_down:
            feat = down(feat)
            skips.insert(0, feat)
        feat = self.final_conv(feat)
        z = self.linear_3dmm(descriptor.reshape(descriptor.shape[0], -1))
        conditions = []
        for i, skip in enumerate(skips):
            feat = self.inject_3dmm[i](self.conv_body_up[i](feat + skip), z)
            conditions += [self.condition_scale[i](feat), self.condition_shift[i](feat)]
        return conditions


# --- checkpoint --------------------------------------------------------------------------------


class StyleHEATVisual(nn.Module):
    """The ``net_G_ema`` content of ``StyleHEAT_visual.pt``: upstream's ``StyleHEAT`` less
    its ``generator`` (keys ``video_warper.*`` then ``calibrator.*``, upstream's order)."""

    def __init__(self) -> None:
        super().__init__()
        self.video_warper = VideoWarper()
        self.calibrator = CalibrationNet(**CALIBRATOR)


def load_styleheat(
    path: Path | str, device: str | torch.device = "cpu"
) -> tuple[VideoWarper, CalibrationNet]:
    """The warper and calibrator of ``StyleHEAT_visual.pt`` (its ``net_G_ema``), loaded
    strictly, in eval mode without gradients, on ``device``.

    Raises:
        InputError: unreadable file, no ``net_G_ema`` dict, non-tensor entries, or a
            missing / unexpected / misshaped key (one line naming the file).
    """
    path = Path(path)
    ckpt = safe_load(path, "StyleHEAT checkpoint (StyleHEAT_visual.pt)")
    if not isinstance(ckpt, Mapping) or not isinstance(ckpt.get("net_G_ema"), Mapping):
        keys = sorted(map(str, ckpt)) if isinstance(ckpt, Mapping) else type(ckpt).__name__
        raise InputError(f"{path}: not a StyleHEAT checkpoint (needs 'net_G_ema', has {keys})")
    state = ckpt["net_G_ema"]
    odd = sorted(str(k) for k, v in state.items() if not isinstance(v, Tensor))
    net = StyleHEATVisual()
    problems = [f"non-tensor entries {', '.join(odd[:5])}"] if odd else []
    problems = problems or state_dict_problems(net.state_dict(), state)
    if problems:
        raise InputError(
            f"{path}: 'net_G_ema' does not match StyleHEAT's video warper + calibrator "
            f"({'; '.join(problems)})"
        )
    net.load_state_dict(state, strict=True)
    net = net.eval().requires_grad_(False).to(device)
    return net.video_warper, net.calibrator
