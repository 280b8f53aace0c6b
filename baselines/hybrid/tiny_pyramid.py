"""TinyPyramid: a toy stand-in for the IR-SE50 feature pyramid (tiny config only).

Four stride-2 3x3 convolutions (LeakyReLU 0.2 after each) and pSp's top-down merge with
1x1 laterals; every map has ``channels`` channels. Data flow at a ``(B, 3, 64, 64)`` input::

    c0 = conv0(x)   (B,C,32,32)      c1 = conv1(c0)  (B,C,16,16)   fine base
    c2 = conv2(c1)  (B,C,8,8)        c3 = conv3(c2)  (B,C,4,4)     coarse
    p_coarse = c3                                   (B,C,4,4)     1/16 of the input
    p_medium = up(p_coarse) + lat1(c2)              (B,C,8,8)     1/8
    p_fine   = up(p_medium) + lat2(c1)              (B,C,16,16)   1/4

``up`` is :func:`reenactbench.nn.fpn.upsample_add`'s bilinear resize (``align_corners``),
as in :class:`~reenactbench.nn.fpn.FeaturePyramid`, whose ``pyramid`` interface this
module copies (same level order and relative sizes; channels differ).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from reenactbench.nn.fpn import upsample_add

__all__ = ["TinyPyramid", "reset_convs"]


def reset_convs(module: nn.Module, generator: torch.Generator) -> None:
    """Re-draw every ``nn.Conv2d`` / ``nn.Linear`` of ``module`` as torch's default init
    (kaiming-uniform ``a = sqrt(5)`` weights, ``U(-1/sqrt(fan_in), ..)`` biases), from
    ``generator``. Other layers (BatchNorm, PReLU) have deterministic defaults."""
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.Conv2d | nn.Linear):
                nn.init.kaiming_uniform_(m.weight, a=5**0.5, generator=generator)
                if m.bias is not None:
                    bound = 1 / m.weight[0].numel() ** 0.5
                    nn.init.uniform_(m.bias, -bound, bound, generator=generator)


class TinyPyramid(nn.Module):
    """3-level feature pyramid for the tiny config. Architecture only, no I/O.

    Args:
        channels: channels of every map (``encoder.tiny_channels``).
        input_nc: input channels (3 for RGB).
    """

    def __init__(self, channels: int = 32, input_nc: int = 3) -> None:
        super().__init__()
        self.channels = channels
        self.convs = nn.ModuleList(
            nn.Conv2d(input_nc if i == 0 else channels, channels, 3, 2, 1) for i in range(4)
        )
        self.act = nn.LeakyReLU(0.2)
        self.latlayer1 = nn.Conv2d(channels, channels, 1)
        self.latlayer2 = nn.Conv2d(channels, channels, 1)

    def reset_parameters(self, generator: torch.Generator) -> TinyPyramid:
        """Draw every weight from ``generator`` (torch's default scheme). Returns ``self``."""
        reset_convs(self, generator)
        return self

    def pyramid(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``(p_coarse, p_medium, p_fine)``: ``(B, C, H/16, W/16)``, ``(B, C, H/8, W/8)``,
        ``(B, C, H/4, W/4)``.

        ``x``: ``(B, input_nc, H, W)`` float32 in [-1, 1], H and W divisible by 16.
        """
        if x.ndim != 4 or x.shape[-1] % 16 or x.shape[-2] % 16:
            raise ValueError(
                f"the pyramid needs (B,C,H,W) with H, W % 16 == 0, got {tuple(x.shape)}"
            )
        feats = []
        for conv in self.convs:
            x = self.act(conv(x))
            feats.append(x)
        _, c1, c2, c3 = feats
        p_medium = upsample_add(c3, self.latlayer1(c2))
        p_fine = upsample_add(p_medium, self.latlayer2(c1))
        return c3, p_medium, p_fine

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Same as :meth:`pyramid`."""
        return self.pyramid(x)
