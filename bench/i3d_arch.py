"""An Inception-I3D of the real architecture with random weights, for TIMING ONLY.

StyleGAN-V's FVD detector (``i3d_torchscript.pt``) is the Kinetics-400 Inception-I3D of
Carreira & Zisserman (the layout of pytorch-i3d's ``InceptionI3d``: 7x7x7 stem, mixed
blocks 3b-5c, 400 logits) behind ``forward(x, rescale, resize, return_features)``. The
real file cannot be downloaded here, so the cost of the FVD detector is measured on this
network of the same layers and sizes (random weights: the cost does not depend on the
values). Its numbers are meaningless; its speed is the detector's. With the real file,
pass ``--i3d FILE`` to bench/protocol_cost.py instead.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

#: (in, [b0, b1a, b1b, b2a, b2b, b3]) of the mixed blocks, as in InceptionI3d.
MIXED = {
    "3b": (192, (64, 96, 128, 16, 32, 32)),
    "3c": (256, (128, 128, 192, 32, 96, 64)),
    "4b": (480, (192, 96, 208, 16, 48, 64)),
    "4c": (512, (160, 112, 224, 24, 64, 64)),
    "4d": (512, (128, 128, 256, 24, 64, 64)),
    "4e": (512, (112, 144, 288, 32, 64, 64)),
    "4f": (528, (256, 160, 320, 32, 128, 128)),
    "5b": (832, (256, 160, 320, 32, 128, 128)),
    "5c": (832, (384, 192, 384, 48, 128, 128)),
}


def _unit(cin: int, cout: int, k: int | tuple[int, int, int] = 1, stride: int = 1) -> nn.Module:
    return nn.Sequential(
        nn.Conv3d(cin, cout, k, stride=stride, padding="same" if stride == 1 else 3, bias=False),
        nn.BatchNorm3d(cout, eps=1e-3),
        nn.ReLU(),
    )


class Mixed(nn.Module):
    def __init__(self, cin: int, c: tuple[int, ...]) -> None:
        super().__init__()
        self.b0 = _unit(cin, c[0])
        self.b1 = nn.Sequential(_unit(cin, c[1]), _unit(c[1], c[2], 3))
        self.b2 = nn.Sequential(_unit(cin, c[3]), _unit(c[3], c[4], 3))
        self.b3 = nn.Sequential(nn.MaxPool3d(3, stride=1, padding=1), _unit(cin, c[5]))

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([self.b0(x), self.b1(x), self.b2(x), self.b3(x)], dim=1)


class I3DArchitecture(nn.Module):
    """``forward(x (B,3,T,H,W) uint8-valued, rescale, resize, return_features)``."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            _unit(3, 64, 7, stride=2),
            nn.MaxPool3d((1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1)),
            _unit(64, 64),
            _unit(64, 192, 3),
            nn.MaxPool3d((1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1)),
        )
        self.m3 = nn.Sequential(Mixed(*MIXED["3b"]), Mixed(*MIXED["3c"]))
        self.pool3 = nn.MaxPool3d(3, stride=2, padding=1)
        self.m4 = nn.Sequential(*(Mixed(*MIXED[k]) for k in ("4b", "4c", "4d", "4e", "4f")))
        self.pool4 = nn.MaxPool3d(2, stride=2)
        self.m5 = nn.Sequential(Mixed(*MIXED["5b"]), Mixed(*MIXED["5c"]))
        self.logits = nn.Conv3d(1024, 400, 1)

    def forward(
        self, x: Tensor, rescale: bool = False, resize: bool = False, return_features: bool = False
    ) -> Tensor:
        h = x.float()
        if rescale:
            h = h / 127.5 - 1.0
        if resize:
            h = F.interpolate(h, size=[h.shape[2], 224, 224], mode="trilinear", align_corners=False)
        h = self.m5(self.pool4(self.m4(self.pool3(self.m3(self.stem(h))))))
        h = self.logits(F.adaptive_avg_pool3d(h, 1)).flatten(1)
        return h if return_features else torch.softmax(h, dim=1)


def save_scripted(path: str) -> str:
    """Script :class:`I3DArchitecture` (random weights) to ``path`` (TorchScript)."""
    import warnings

    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.script(I3DArchitecture().eval()).save(path)
    return path
