"""IR-SE50 ArcFace network of pSp / e4e (``model_ir_se50.pth``), loaded strictly.

Compatible with the checkpoints of eladrich/pixel2style2pixel at commit
5cfff385beb7b95fbce775662b48fcc80081928d (``models/encoders/model_irse.py``,
``models/encoders/helpers.py``, ``criteria/id_loss.py``; MIT License), whose network is
TreB1eN/InsightFace_Pytorch's (MIT). The code here is ours; module names, parameter
names and shapes equal upstream's so that the official file loads with ``strict=True``.

State-dict layout (no key prefix), for ``Backbone(112, 50, "ir_se")``::

    input_layer.0  Conv2d(3, 64, 3, 1, 1, bias=False)
    input_layer.1  BatchNorm2d(64);  input_layer.2  PReLU(64)
    body.i         24 units in 4 stages of 3, 4, 14, 3 units (64, 128, 256, 512 channels);
                   the first unit of each stage has stride 2
      .shortcut_layer.0/.1  Conv2d 1x1 (stride) + BatchNorm2d, only where the channel count
                   changes (body.3, body.7, body.21); elsewhere MaxPool2d(1, stride), no params
      .res_layer.0 BatchNorm2d(in); .1 Conv2d 3x3; .2 PReLU; .3 Conv2d 3x3 (stride);
                   .4 BatchNorm2d; .5 SEModule (fc1, fc2: 1x1 convs, reduction 16, no bias)
    output_layer.0 BatchNorm2d(512); .1 Dropout; .2 Flatten; .3 Linear(512*7*7, 512);
    output_layer.4 BatchNorm1d(512, affine=True)

``num_batches_tracked``: files saved before PyTorch 0.4.1 (TreB1eN's era) have no
``*.num_batches_tracked`` buffers, newer ones do. Both load: :func:`load_irse50` fills
missing ``num_batches_tracked`` buffers with 0 before the strict load (they only count
training steps and never change an eval-mode output); every other missing or extra key,
and any shape mismatch, is an error naming the file.

Tensor conventions: the network takes ``(B, 3, 112, 112) float32`` RGB in [-1, 1] and
returns ``(B, 512) float32`` l2-normalised embeddings. :func:`psp_id_input` is pSp's ID-loss
preprocessing of a ``(B, 3, 256, 256)`` image in [-1, 1] (crop ``[35:223, 32:220]``, adaptive
average pool to 112x112).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import NamedTuple

import torch
from torch import Tensor, nn

from reenactbench.errors import InputError
from reenactbench.nn.loading import safe_load, state_dict_problems

__all__ = [
    "UnitSpec",
    "get_blocks",
    "l2_norm",
    "Flatten",
    "SEModule",
    "BottleneckIR",
    "BottleneckIRSE",
    "Backbone",
    "load_state_dict_checked",
    "load_irse50",
    "psp_id_input",
    "PSP_CROP",
]

#: pSp's ID-loss crop of a 256x256 image: rows 35:223, columns 32:220 (188x188 px).
PSP_CROP = (slice(35, 223), slice(32, 220))


class UnitSpec(NamedTuple):
    """One residual unit: input channels, output channels (``depth``), stride."""

    in_channel: int
    depth: int
    stride: int


def _stage(in_channel: int, depth: int, num_units: int, stride: int = 2) -> list[UnitSpec]:
    return [UnitSpec(in_channel, depth, stride)] + [
        UnitSpec(depth, depth, 1) for _ in range(num_units - 1)
    ]


_UNITS = {50: (3, 4, 14, 3), 100: (3, 13, 30, 3), 152: (3, 8, 36, 3)}


def get_blocks(num_layers: int) -> list[list[UnitSpec]]:
    """The four stages (64, 128, 256, 512 channels) of an IR network of ``num_layers``."""
    if num_layers not in _UNITS:
        raise ValueError(f"num_layers must be one of 50, 100, 152, got {num_layers}")
    n1, n2, n3, n4 = _UNITS[num_layers]
    return [_stage(64, 64, n1), _stage(64, 128, n2), _stage(128, 256, n3), _stage(256, 512, n4)]


def l2_norm(x: Tensor, axis: int = 1) -> Tensor:
    """``x / ||x||_2`` along ``axis`` (as upstream: no epsilon)."""
    return x / torch.norm(x, 2, axis, True)


class Flatten(nn.Module):
    """``(B, C, H, W) -> (B, C*H*W)`` in NCHW order; made contiguous first so that
    channels-last or sliced inputs flatten in the same order as upstream's ``.view``."""

    def forward(self, x: Tensor) -> Tensor:
        return x.contiguous().view(x.size(0), -1)


class SEModule(nn.Module):
    """Squeeze-and-excitation: ``x * sigmoid(fc2(relu(fc1(avgpool(x)))))``."""

    def __init__(self, channels: int, reduction: int) -> None:
        super().__init__()
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, channels // reduction, kernel_size=1, bias=False)
        self.relu = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(channels // reduction, channels, kernel_size=1, bias=False)
        self.sigmoid = nn.Sigmoid()

    def forward(self, x: Tensor) -> Tensor:
        w = self.sigmoid(self.fc2(self.relu(self.fc1(self.avg_pool(x)))))
        return x * w


def _shortcut(in_channel: int, depth: int, stride: int) -> nn.Module:
    if in_channel == depth:
        return nn.MaxPool2d(1, stride)  # parameter-free subsampling
    return nn.Sequential(
        nn.Conv2d(in_channel, depth, (1, 1), stride, bias=False), nn.BatchNorm2d(depth)
    )


class BottleneckIR(nn.Module):
    """Improved residual unit: BN-conv3x3-PReLU-conv3x3(stride)-BN (+ SE) plus shortcut."""

    def __init__(self, in_channel: int, depth: int, stride: int, se: bool = False) -> None:
        super().__init__()
        self.shortcut_layer = _shortcut(in_channel, depth, stride)
        res: list[nn.Module] = [
            nn.BatchNorm2d(in_channel),
            nn.Conv2d(in_channel, depth, (3, 3), (1, 1), 1, bias=False),
            nn.PReLU(depth),
            nn.Conv2d(depth, depth, (3, 3), stride, 1, bias=False),
            nn.BatchNorm2d(depth),
        ]
        if se:
            res.append(SEModule(depth, 16))
        self.res_layer = nn.Sequential(*res)

    def forward(self, x: Tensor) -> Tensor:
        return self.res_layer(x) + self.shortcut_layer(x)


class BottleneckIRSE(BottleneckIR):
    """:class:`BottleneckIR` with an SE module (reduction 16) ending the residual branch."""

    def __init__(self, in_channel: int, depth: int, stride: int) -> None:
        super().__init__(in_channel, depth, stride, se=True)


class Backbone(nn.Module):
    """IR / IR-SE ArcFace backbone (pSp's ``Backbone``), architecture only (no I/O).

    Args:
        input_size: 112 (7x7 final map) or 224 (14x14).
        num_layers: 50, 100 or 152.
        mode: ``"ir_se"`` (pSp's ``model_ir_se50.pth``) or ``"ir"``.
        drop_ratio: dropout before the linear layer (identity in eval mode).
        affine: affine output BatchNorm1d (pSp's IR-SE50: True).

    Attributes:
        taps: body indices after which pSp's encoder takes c1, c2, c3 (the last unit of
            stages 2, 3, 4; ``(6, 20, 23)`` for 50 layers: 128x64x64, 256x32x32,
            512x16x16 at 256x256 input).
    """

    def __init__(
        self,
        input_size: int = 112,
        num_layers: int = 50,
        mode: str = "ir_se",
        drop_ratio: float = 0.4,
        affine: bool = True,
    ) -> None:
        super().__init__()
        if input_size not in (112, 224):
            raise ValueError(f"input_size must be 112 or 224, got {input_size}")
        if mode not in ("ir", "ir_se"):
            raise ValueError(f"mode must be 'ir' or 'ir_se', got {mode!r}")
        unit = BottleneckIRSE if mode == "ir_se" else BottleneckIR
        blocks = get_blocks(num_layers)
        self.input_layer = nn.Sequential(
            nn.Conv2d(3, 64, (3, 3), 1, 1, bias=False), nn.BatchNorm2d(64), nn.PReLU(64)
        )
        side = input_size // 16
        self.output_layer = nn.Sequential(
            nn.BatchNorm2d(512),
            nn.Dropout(drop_ratio),
            Flatten(),
            nn.Linear(512 * side * side, 512),
            nn.BatchNorm1d(512, affine=affine),
        )
        self.body = nn.Sequential(*(unit(*u) for stage in blocks for u in stage))
        ends, n = [], 0
        for stage in blocks:
            n += len(stage)
            ends.append(n - 1)
        self.taps: tuple[int, int, int] = (ends[1], ends[2], ends[3])

    def forward(self, x: Tensor) -> Tensor:
        """``(B, 3, S, S) float32`` RGB in [-1, 1] (S = input_size) -> ``(B, 512)``
        l2-normalised embeddings."""
        return l2_norm(self.output_layer(self.body(self.input_layer(x))))

    def features(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """pSp encoder taps ``(c1, c2, c3)``: body outputs after units ``self.taps``.

        ``x``: ``(B, 3, H, W)`` float32 (any H, W divisible by 16). At 256x256:
        ``(B,128,64,64)``, ``(B,256,32,32)``, ``(B,512,16,16)``.
        """
        x = self.input_layer(x)
        out: list[Tensor] = []
        for i, unit in enumerate(self.body):
            x = unit(x)
            if i in self.taps:
                out.append(x)
        return out[0], out[1], out[2]


def load_state_dict_checked(net: nn.Module, state: Mapping[str, Tensor], source: str) -> None:
    """Load ``state`` into ``net`` strictly; missing ``num_batches_tracked`` buffers are
    filled with 0 (see the module doc). ``source`` names the file in errors.

    Raises:
        InputError: missing or unexpected keys, or shape mismatches (listed, up to 5 each).
    """
    if not isinstance(state, Mapping) or not all(isinstance(v, Tensor) for v in state.values()):
        raise InputError(f"{source}: not a state dict of tensors (expected {_EXPECTED})")
    own = net.state_dict()
    state = dict(state)
    for key in own:
        if key.endswith(".num_batches_tracked") and key not in state:
            state[key] = torch.zeros((), dtype=torch.long)
    problems = state_dict_problems(own, state)
    if problems:
        raise InputError(f"{source}: not {_EXPECTED}: " + "; ".join(problems))
    net.load_state_dict(state, strict=True)


_EXPECTED = "a pSp IR-SE50 state dict (model_ir_se50.pth, Backbone(112, 50, 'ir_se'))"


def load_irse50(path: Path | str, device: str | torch.device = "cpu") -> Backbone:
    """``Backbone(112, 50, "ir_se")`` with the weights of ``path``, in eval mode.

    Args:
        path: ``model_ir_se50.pth`` (a plain state dict, no key prefix).
        device: torch device.

    Raises:
        InputError: unreadable file or a state dict of another layout (names the file).
    """
    path = Path(path)
    state = safe_load(path, "ir-se50 weight file (model_ir_se50.pth)")
    net = Backbone(112, 50, "ir_se")
    load_state_dict_checked(net, state, str(path))
    return net.eval().requires_grad_(False).to(device)


def psp_id_input(x: Tensor) -> Tensor:
    """pSp's ``IDLoss.extract_feats`` preprocessing.

    ``x``: ``(B, 3, 256, 256) float32`` RGB in [-1, 1] -> crop rows 35:223, columns
    32:220, adaptive average pool to ``(B, 3, 112, 112)``.
    """
    if x.ndim != 4 or tuple(x.shape[-2:]) != (256, 256):
        raise ValueError(f"pSp's ID crop needs (B,3,256,256) input, got {tuple(x.shape)}")
    rows, cols = PSP_CROP
    return nn.functional.adaptive_avg_pool2d(x[:, :, rows, cols], (112, 112))
