"""StyleHEAT's inversion networks: the e4e encoder (W+) and HFGI's residual aligner /
encoder (the 64x64 feature condition), loaded strictly from the authors' files.

Compatible with the files ``Encoder_e4e.pth`` and ``hfgi.pth`` released by
OpenTalker/StyleHEAT at commit 9cb0c7cac00c79f901c3061850693b110f88c6ea (MIT License):
``models/e4e/e4e.py`` (``E4eEncoder``, ``Encoder4Editing``), ``models/e4e/helpers.py``,
``models/hfgi/backbone.py`` (``ResidualAligner``, ``ResidualEncoder``) and the loading and
data flow of ``models/hfgi/hfgi.py`` (``HFGI.load_checkpoint``, ``encode``, ``decode``).
The code here is ours; module names, parameter names and shapes equal upstream's so that
the files load with ``strict=True``.

Files (upstream reads exactly these keys; anything else in the dict is ignored)::

    Encoder_e4e.pth  {"encoder": Encoder4Editing(50, "ir_se", 1024) state dict (621 keys),
                      "latent_avg": W average, (18, 512) or (512,) float}
    hfgi.pth         {"aligner": ResidualAligner state dict, "encoder": ResidualEncoder
                      state dict}

``Encoder4Editing`` has pSp's ``GradualStyleEncoder`` layout exactly (IR-SE50 trunk, 18
map2style heads on 16/32/64 maps, ``latlayer1/2``; see :mod:`reenactbench.nn.fpn`), with
two differences in the forward pass: the pyramid's upsampling is bilinear with
``align_corners=False`` (e4e's ``_upsample_add``; pSp's is ``True``), and head 0 gives one
code ``w0`` that every other head offsets: ``w[:, 0] = w0``, ``w[:, i] = w0 + head_i``
(progressive stage ``Inference``: all 17 deltas). :class:`E4eEncoder` adds ``latent_avg``
to every row, as upstream's ``codes + latent_avg.repeat(B, 1, 1)``.

HFGI data flow (``HFGI.encode`` / ``decode``), 256x256 throughout, images in [-1, 1]::

    w   = E4eEncoder(x)                                      (B, 18, 512)
    ix  = resize_256(clamp(StyleGAN2(w), -1, 1));  res = x - ix
    res_aligned = ResidualAligner(cat(res, ix))              (B, 3, 256, 256)
    scale, shift = ResidualEncoder(res_aligned)              2 x (B, 512, 64, 64)

:func:`residual_condition` is the last two lines. ``ResidualAligner`` is a small U-Net of
IR units (no SE) whose up-sampling sizes (64, 128, 256) are fixed: it needs 256x256 input.
``ResidualEncoder``'s ``condition_*3`` heads are 3x3 equalised-lr convs with a scaled leaky
ReLU between them; their bilinear resize to 64x64 is the identity at 256x256 input and is
kept for other sizes. Interpolations are bilinear with ``align_corners=False`` (upstream's
default).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from reenactbench.errors import InputError
from reenactbench.nn.fpn import GradualStyleEncoder
from reenactbench.nn.irse50 import BottleneckIR
from reenactbench.nn.loading import safe_load, state_dict_problems

__all__ = [
    "EqualConv2d",
    "ScaledLeakyReLU",
    "Encoder4Editing",
    "E4eEncoder",
    "ResidualAligner",
    "ResidualEncoder",
    "e4e_upsample_add",
    "residual_condition",
    "load_e4e",
    "load_hfgi",
    "N_STYLES",
]

#: W+ rows of the 1024x1024 StyleGAN2 that StyleHEAT inverts into.
N_STYLES = 18
_SIDE = 256  # the encoders' input side


def e4e_upsample_add(x: Tensor, y: Tensor) -> Tensor:
    """e4e's ``_upsample_add``: ``x`` resized bilinearly (``align_corners=False``) to
    ``y``'s height and width, plus ``y``. ``x``: ``(B, C, h, w)``, ``y``: ``(B, C, H, W)``."""
    return F.interpolate(x, size=y.shape[-2:], mode="bilinear", align_corners=False) + y


class Encoder4Editing(GradualStyleEncoder):
    """e4e's ``Encoder4Editing(50, "ir_se", stylegan_size)`` at progressive stage
    ``Inference``: pSp's encoder layout, e4e's pyramid and offset codes (module doc).

    Args:
        stylegan_size: generator resolution; ``2 * log2(size) - 2`` heads (18 at 1024).
    """

    def __init__(self, stylegan_size: int = 1024) -> None:
        log_size = int(math.log2(stylegan_size))
        if 2**log_size != stylegan_size or log_size < 3:
            raise ValueError(f"stylegan_size must be a power of two >= 8, got {stylegan_size}")
        super().__init__(
            50, "ir_se", n_styles=2 * log_size - 2, coarse_ind=3, middle_ind=7, input_size=_SIDE
        )

    def pyramid(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``(c3, p2, p1)``: 512-channel maps at 16, 32, 64 px for a 256x256 input, merged
        with ``align_corners=False`` (e4e) instead of pSp's ``True``."""
        c1, c2, c3 = self.backbone(x)
        p2 = e4e_upsample_add(c3, self.latlayer1(c2))
        p1 = e4e_upsample_add(p2, self.latlayer2(c1))
        return c3, p2, p1

    def forward(self, x: Tensor) -> Tensor:  # type: ignore[override]
        """``(B, 3, 256, 256)`` float32 in [-1, 1] -> ``(B, n_styles, 512)`` codes relative
        to ``latent_avg``: row 0 is head 0's ``w0``, row ``i`` is ``w0 + head_i``."""
        heads = super().forward(x)
        w0 = heads[:, :1]
        return torch.cat([w0, heads[:, 1:] + w0], dim=1)


class E4eEncoder(nn.Module):
    """StyleHEAT's ``E4eEncoder``: :class:`Encoder4Editing` (``encoder.*`` keys) plus the
    W average ``latent_avg``, a non-persistent ``(18, 512)`` float32 buffer (upstream keeps
    it as a plain attribute outside the state dict). Zero until :meth:`set_latent_avg`."""

    latent_avg: Tensor

    def __init__(self) -> None:
        super().__init__()
        self.encoder = Encoder4Editing(1024)
        self.register_buffer("latent_avg", torch.zeros(N_STYLES, 512), persistent=False)

    def set_latent_avg(self, latent_avg: Tensor) -> None:
        """Store ``latent_avg`` (``(18, 512)``, ``(1, 512)`` or ``(512,)``, any float dtype)
        as ``(18, 512)`` float32; the smaller shapes are broadcast over the rows, as
        upstream's ``latent_avg.repeat(B, 1, 1)`` broadcasts in the addition."""
        shape = tuple(latent_avg.shape)
        if shape not in ((N_STYLES, 512), (1, 512), (512,)) or not latent_avg.is_floating_point():
            raise ValueError(f"latent_avg must be float (18, 512), (1, 512) or (512,), got {shape}")
        value = latent_avg.detach().to(torch.float32).expand(N_STYLES, 512)
        self.latent_avg = value.clone().to(self.latent_avg.device)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, 3, 256, 256)`` float32 RGB in [-1, 1] -> W+ ``(B, 18, 512)`` float32
        (encoder codes + ``latent_avg``)."""
        if x.ndim != 4 or tuple(x.shape[1:]) != (3, _SIDE, _SIDE):
            raise ValueError(f"E4eEncoder needs (B, 3, 256, 256) input, got {tuple(x.shape)}")
        return self.encoder(x) + self.latent_avg


class EqualConv2d(nn.Module):
    """Conv2d with equalised learning rate (rosinality's): weight ``(out, in, k, k)`` scaled
    by ``1 / sqrt(in * k * k)`` at run time, bias ``(out,)`` (optional)."""

    def __init__(
        self,
        in_channel: int,
        out_channel: int,
        kernel_size: int,
        stride: int = 1,
        padding: int = 0,
        bias: bool = True,
    ) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(out_channel, in_channel, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channel)) if bias else None
        self.scale = 1 / math.sqrt(in_channel * kernel_size**2)
        self.stride, self.padding = stride, padding

    def forward(self, x: Tensor) -> Tensor:
        """``(B, in, H, W) -> (B, out, H', W')``."""
        w = self.weight * self.scale
        return F.conv2d(x, w, bias=self.bias, stride=self.stride, padding=self.padding)


class ScaledLeakyReLU(nn.Module):
    """``leaky_relu(x, negative_slope) * sqrt(2)``."""

    def __init__(self, negative_slope: float = 0.2) -> None:
        super().__init__()
        self.negative_slope = negative_slope

    def forward(self, x: Tensor) -> Tensor:
        return F.leaky_relu(x, negative_slope=self.negative_slope) * math.sqrt(2)


def _stem(in_c: int, out_c: int) -> nn.Sequential:
    """``conv_layer1``: Conv2d 3x3 (no bias), BatchNorm2d, PReLU."""
    return nn.Sequential(
        nn.Conv2d(in_c, out_c, (3, 3), 1, 1, bias=False), nn.BatchNorm2d(out_c), nn.PReLU(out_c)
    )


def _units(*specs: tuple[int, int, int]) -> nn.Sequential:
    """IR units (no SE) of ``(in_channel, depth, stride)``."""
    return nn.Sequential(*(BottleneckIR(*s) for s in specs))


def _resize(x: Tensor, side: int) -> Tensor:
    return F.interpolate(x, size=(side, side), mode="bilinear", align_corners=False)


class ResidualAligner(nn.Module):
    """HFGI's ``ResidualAligner`` (ADA): ``cat(res, ix)`` ``(B, 6, 256, 256)`` -> aligned
    residual ``(B, 3, 256, 256)``. Encoder 16/32/48/64 channels at 256/128/64/32 px,
    decoder back up with skip concatenations at 64, 128 and 256 px."""

    def __init__(self) -> None:
        super().__init__()
        self.conv_layer1 = _stem(6, 16)
        self.conv_layer2 = _units((16, 32, 2), (32, 32, 1), (32, 32, 1))
        self.conv_layer3 = _units((32, 48, 2), (48, 48, 1), (48, 48, 1))
        self.conv_layer4 = _units((48, 64, 2), (64, 64, 1), (64, 64, 1))
        self.dconv_layer1 = _units((112, 64, 1), (64, 32, 1), (32, 32, 1))
        self.dconv_layer2 = _units((64, 32, 1), (32, 16, 1), (16, 16, 1))
        self.dconv_layer3 = _units((32, 16, 1), (16, 3, 1), (3, 3, 1))

    def forward(self, x: Tensor) -> Tensor:
        """``(B, 6, 256, 256)`` float32 (residual, then e4e image, both in image units)
        -> ``(B, 3, 256, 256)``."""
        if x.ndim != 4 or tuple(x.shape[1:]) != (6, _SIDE, _SIDE):
            raise ValueError(f"ResidualAligner needs (B, 6, 256, 256), got {tuple(x.shape)}")
        f1 = self.conv_layer1(x)
        f2 = self.conv_layer2(f1)
        f3 = self.conv_layer3(f2)
        f4 = _resize(self.conv_layer4(f3), 64)
        d1 = _resize(self.dconv_layer1(torch.cat((f4, f3), 1)), 128)
        d2 = _resize(self.dconv_layer2(torch.cat((d1, f2), 1)), 256)
        return self.dconv_layer3(torch.cat((d2, f1), 1))


def _condition_head() -> nn.Sequential:
    return nn.Sequential(
        EqualConv2d(64, 512, 3, stride=1, padding=1, bias=True),
        ScaledLeakyReLU(0.2),
        EqualConv2d(512, 512, 3, stride=1, padding=1, bias=True),
    )


class ResidualEncoder(nn.Module):
    """HFGI's ``ResidualEncoder`` (consultation encoder): aligned residual
    ``(B, 3, H, W)`` -> ``(scale, shift)``, each ``(B, 512, 64, 64)``, the condition
    StyleHEAT's generator applies to its 64x64 features."""

    def __init__(self) -> None:
        super().__init__()
        self.conv_layer1 = _stem(3, 32)
        self.conv_layer2 = _units((32, 48, 2), (48, 48, 1), (48, 48, 1))
        self.conv_layer3 = _units((48, 64, 2), (64, 64, 1), (64, 64, 1))
        self.condition_scale3 = _condition_head()
        self.condition_shift3 = _condition_head()

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(B, 3, H, W)`` float32 (256x256 in StyleHEAT) -> ``(scale, shift)``, each
        ``(B, 512, 64, 64)`` (the H/4 x W/4 maps resized bilinearly to 64x64)."""
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"ResidualEncoder needs (B, 3, H, W), got {tuple(x.shape)}")
        feat = self.conv_layer3(self.conv_layer2(self.conv_layer1(x)))
        scale = _resize(self.condition_scale3(feat), 64)
        shift = _resize(self.condition_shift3(feat), 64)
        return scale, shift


def residual_condition(
    aligner: ResidualAligner, encoder: ResidualEncoder, res: Tensor, ix: Tensor
) -> tuple[Tensor, Tensor]:
    """HFGI's ``decode`` up to the generator: ``encoder(aligner(cat(res, ix)))``.

    ``res``: ``x - ix``; ``ix``: the e4e reconstruction resized to 256 and clamped; both
    ``(B, 3, 256, 256)`` float32 in image units ([-1, 1] for ``ix``).
    """
    return encoder(aligner(torch.cat((res, ix), 1)))


# ------------------------------------------------------------------------------ loading


def _checked_state(state: object, net: nn.Module, source: str, expected: str) -> dict[str, Tensor]:
    """``state`` as float32 tensors after checking it against ``net``'s state dict.

    Raises:
        InputError: not a mapping of tensors, or missing / unexpected / misshaped keys.
    """
    if not isinstance(state, Mapping) or not all(isinstance(v, Tensor) for v in state.values()):
        raise InputError(f"{source}: not {expected} (got {type(state).__name__})")
    problems = state_dict_problems(net.state_dict(), state)
    if problems:
        raise InputError(f"{source}: not {expected}: " + "; ".join(problems))
    return {k: v.float() if v.is_floating_point() else v for k, v in state.items()}


def _entries(ckpt: object, path: Path, expected: str, keys: tuple[str, ...]) -> list[object]:
    if not isinstance(ckpt, Mapping):
        raise InputError(f"{path}: not {expected} (got {type(ckpt).__name__}, not a dict)")
    missing = [k for k in keys if k not in ckpt]
    if missing:
        raise InputError(f"{path}: not {expected} (no {', '.join(map(repr, missing))} entry)")
    return [ckpt[k] for k in keys]


def _assign(net: nn.Module, state: dict[str, Tensor]) -> None:
    net.load_state_dict(state, strict=True, assign=True)


_E4E = (
    "a StyleHEAT e4e checkpoint (Encoder_e4e.pth: a dict with 'encoder', an "
    "Encoder4Editing(50, 'ir_se', 1024) state dict, and 'latent_avg', (18, 512) or (512,))"
)
_HFGI = (
    "a StyleHEAT HFGI checkpoint (hfgi.pth: a dict with 'aligner', a ResidualAligner "
    "state dict, and 'encoder', a ResidualEncoder state dict)"
)


def load_e4e(path: Path | str, device: str | torch.device = "cpu") -> E4eEncoder:
    """:class:`E4eEncoder` with the weights and ``latent_avg`` of ``path``, in eval mode
    without gradients.

    Raises:
        InputError: unreadable file, not a dict, no ``encoder`` / ``latent_avg`` entry, a
            state dict of another layout or a misshaped ``latent_avg`` (names the file).
    """
    path = Path(path)
    ckpt = safe_load(path, "StyleHEAT e4e checkpoint (Encoder_e4e.pth)")
    state, latent_avg = _entries(ckpt, path, _E4E, ("encoder", "latent_avg"))
    with torch.device("meta"):  # no init cost: every tensor comes from the file
        net = E4eEncoder()
    net.latent_avg = torch.zeros(N_STYLES, 512)
    if not isinstance(latent_avg, Tensor):
        raise InputError(f"{path}: not {_E4E} ('latent_avg' is {type(latent_avg).__name__})")
    try:  # checked first: cheap, and a wrong one makes the file useless anyway
        net.set_latent_avg(latent_avg)
    except ValueError as e:
        raise InputError(f"{path}: not {_E4E} ({e})") from None
    _assign(net.encoder, _checked_state(state, net.encoder, f"{path} ['encoder']", _E4E))
    return net.eval().requires_grad_(False).to(device)


def load_hfgi(
    path: Path | str, device: str | torch.device = "cpu"
) -> tuple[ResidualAligner, ResidualEncoder]:
    """``(ResidualAligner, ResidualEncoder)`` with the weights of ``path`` (its ``aligner``
    and ``encoder`` entries), in eval mode without gradients.

    Raises:
        InputError: unreadable file, not a dict, a missing entry or a state dict of another
            layout (names the file and the entry).
    """
    path = Path(path)
    ckpt = safe_load(path, "StyleHEAT HFGI checkpoint (hfgi.pth)")
    aligner_sd, encoder_sd = _entries(ckpt, path, _HFGI, ("aligner", "encoder"))
    aligner, encoder = ResidualAligner(), ResidualEncoder()
    for net, name, state in ((aligner, "aligner", aligner_sd), (encoder, "encoder", encoder_sd)):
        _assign(net, _checked_state(state, net, f"{path} [{name!r}]", _HFGI))
    return (
        aligner.eval().requires_grad_(False).to(device),
        encoder.eval().requires_grad_(False).to(device),
    )
