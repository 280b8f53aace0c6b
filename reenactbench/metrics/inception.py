"""The FID Inception network (pool3, 2048-d), compatible with pytorch-fid's weights.

Loads ``pt_inception-2015-12-05-6726825d.pth`` (the ``fid-inception`` weight: the
TensorFlow FID Inception ported by pytorch-fid) with ``strict=True``. The layer names,
shapes and the three FID-specific block differences follow pytorch-fid's
``fid_inception_v3()`` (torchvision's Inception3 with ``num_classes=1008``,
``aux_logits=False``, and patched blocks):

* ``Mixed_5b-d`` (A) and ``Mixed_6b-e`` (C) and ``Mixed_7b`` (E): the pool branch
  averages without counting the zero padding (TensorFlow's ``avg_pool``);
* ``Mixed_7c`` (E): the pool branch is a 3x3 *max* pool.

Input convention (pytorch-fid ``InceptionV3(resize_input=True, normalize_input=True)``):
``(B, 3, H, W) float32`` RGB in ``[0, 1]`` (uint8 / 255), bilinearly resized to 299x299
(``align_corners=False``, no antialias), then scaled to ``[-1, 1]``.

Compatible with: mseitzer/pytorch-fid v0.3.0 (commit 0a754fb8e66021700478fd365b79c2eaa316e31b),
``src/pytorch_fid/inception.py``, Apache-2.0; architecture of torchvision's
``inception_v3`` (BSD-3-Clause). The code here is ours; torch is imported by this module,
so import it lazily from metric code.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from reenactbench.errors import InputError
from reenactbench.nn.loading import safe_load

__all__ = ["FIDInception", "load_fid_inception", "FEATURE_DIM"]

#: Size of the pool3 feature vector.
FEATURE_DIM = 2048

Size = int | tuple[int, int]


class BasicConv2d(nn.Module):
    """Conv (no bias) + BatchNorm (eps 1e-3) + ReLU; keys ``conv.*``, ``bn.*``."""

    def __init__(
        self, cin: int, cout: int, kernel_size: Size, stride: int = 1, padding: Size = 0
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel_size, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=0.001)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.bn(self.conv(x)), inplace=True)


def _tf_avg_pool(x: Tensor) -> Tensor:
    """3x3 stride-1 average pool that ignores the zero padding (TensorFlow ``avg_pool``)."""
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


class InceptionA(nn.Module):
    """35x35 block (Mixed_5b-d): out channels 224 + ``pool_features``."""

    def __init__(self, cin: int, pool_features: int) -> None:
        super().__init__()
        self.branch1x1 = BasicConv2d(cin, 64, 1)
        self.branch5x5_1 = BasicConv2d(cin, 48, 1)
        self.branch5x5_2 = BasicConv2d(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = BasicConv2d(cin, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, padding=1)
        self.branch_pool = BasicConv2d(cin, pool_features, 1)

    def forward(self, x: Tensor) -> Tensor:
        b1 = self.branch1x1(x)
        b5 = self.branch5x5_2(self.branch5x5_1(x))
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        bp = self.branch_pool(_tf_avg_pool(x))
        return torch.cat([b1, b5, b3, bp], 1)


class InceptionB(nn.Module):
    """35x35 -> 17x17 reduction (Mixed_6a): 288 -> 768 channels."""

    def __init__(self, cin: int) -> None:
        super().__init__()
        self.branch3x3 = BasicConv2d(cin, 384, 3, stride=2)
        self.branch3x3dbl_1 = BasicConv2d(cin, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        b3 = self.branch3x3(x)
        bd = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        bp = F.max_pool2d(x, kernel_size=3, stride=2)
        return torch.cat([b3, bd, bp], 1)


class InceptionC(nn.Module):
    """17x17 block with factorised 7x7 convolutions (Mixed_6b-e): 768 channels."""

    def __init__(self, cin: int, channels_7x7: int) -> None:
        super().__init__()
        c7 = channels_7x7
        self.branch1x1 = BasicConv2d(cin, 192, 1)
        self.branch7x7_1 = BasicConv2d(cin, c7, 1)
        self.branch7x7_2 = BasicConv2d(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7_3 = BasicConv2d(c7, 192, (7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = BasicConv2d(cin, c7, 1)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = BasicConv2d(c7, 192, (1, 7), padding=(0, 3))
        self.branch_pool = BasicConv2d(cin, 192, 1)

    def forward(self, x: Tensor) -> Tensor:
        b1 = self.branch1x1(x)
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        bd = self.branch7x7dbl_1(x)
        for layer in (
            self.branch7x7dbl_2,
            self.branch7x7dbl_3,
            self.branch7x7dbl_4,
            self.branch7x7dbl_5,
        ):
            bd = layer(bd)
        bp = self.branch_pool(_tf_avg_pool(x))
        return torch.cat([b1, b7, bd, bp], 1)


class InceptionD(nn.Module):
    """17x17 -> 8x8 reduction (Mixed_7a): 768 -> 1280 channels."""

    def __init__(self, cin: int) -> None:
        super().__init__()
        self.branch3x3_1 = BasicConv2d(cin, 192, 1)
        self.branch3x3_2 = BasicConv2d(192, 320, 3, stride=2)
        self.branch7x7x3_1 = BasicConv2d(cin, 192, 1)
        self.branch7x7x3_2 = BasicConv2d(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = BasicConv2d(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = BasicConv2d(192, 192, 3, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        b3 = self.branch3x3_2(self.branch3x3_1(x))
        b7 = self.branch7x7x3_1(x)
        for layer in (self.branch7x7x3_2, self.branch7x7x3_3, self.branch7x7x3_4):
            b7 = layer(b7)
        bp = F.max_pool2d(x, kernel_size=3, stride=2)
        return torch.cat([b3, b7, bp], 1)


class InceptionE(nn.Module):
    """8x8 block with expanded 3x3 branches (Mixed_7b, Mixed_7c): 2048 channels.

    ``max_pool``: the pool branch uses a 3x3 max pool (FID Inception's ``Mixed_7c``)
    instead of the padding-excluding average pool (``Mixed_7b``).
    """

    def __init__(self, cin: int, max_pool: bool) -> None:
        super().__init__()
        self.max_pool = max_pool
        self.branch1x1 = BasicConv2d(cin, 320, 1)
        self.branch3x3_1 = BasicConv2d(cin, 384, 1)
        self.branch3x3_2a = BasicConv2d(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3_2b = BasicConv2d(384, 384, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = BasicConv2d(cin, 448, 1)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = BasicConv2d(384, 384, (3, 1), padding=(1, 0))
        self.branch_pool = BasicConv2d(cin, 192, 1)

    def forward(self, x: Tensor) -> Tensor:
        b1 = self.branch1x1(x)
        b3 = self.branch3x3_1(x)
        b3 = torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], 1)
        bd = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        bd = torch.cat([self.branch3x3dbl_3a(bd), self.branch3x3dbl_3b(bd)], 1)
        if self.max_pool:
            pooled = F.max_pool2d(x, kernel_size=3, stride=1, padding=1)
        else:
            pooled = _tf_avg_pool(x)
        return torch.cat([b1, b3, bd, self.branch_pool(pooled)], 1)


class FIDInception(nn.Module):
    """FID Inception v3 up to the final average pool ("pool3").

    The state dict layout is pytorch-fid's ``fid_inception_v3()`` (``Conv2d_1a_3x3.*`` ...
    ``Mixed_7c.*``, ``fc.*``); ``fc`` (2048 -> 1008 logits) is kept only so that the
    official file loads strictly, it is never evaluated.
    """

    def __init__(self) -> None:
        super().__init__()
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, 3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, 3)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, 3, padding=1)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, 1)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, 3)
        self.Mixed_5b = InceptionA(192, pool_features=32)
        self.Mixed_5c = InceptionA(256, pool_features=64)
        self.Mixed_5d = InceptionA(288, pool_features=64)
        self.Mixed_6a = InceptionB(288)
        self.Mixed_6b = InceptionC(768, channels_7x7=128)
        self.Mixed_6c = InceptionC(768, channels_7x7=160)
        self.Mixed_6d = InceptionC(768, channels_7x7=160)
        self.Mixed_6e = InceptionC(768, channels_7x7=192)
        self.Mixed_7a = InceptionD(768)
        self.Mixed_7b = InceptionE(1280, max_pool=False)
        self.Mixed_7c = InceptionE(2048, max_pool=True)
        self.fc = nn.Linear(FEATURE_DIM, 1008)

    def forward(self, x: Tensor) -> Tensor:
        """Pool3 features.

        Args:
            x: ``(B, 3, H, W) float32`` RGB in ``[0, 1]``, any H, W.

        Returns:
            ``(B, 2048) float32``.
        """
        x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
        x = 2 * x - 1  # (B,3,299,299) in [-1, 1]
        x = self.Conv2d_1a_3x3(x)  # (B,32,149,149)
        x = self.Conv2d_2a_3x3(x)  # (B,32,147,147)
        x = self.Conv2d_2b_3x3(x)  # (B,64,147,147)
        x = F.max_pool2d(x, kernel_size=3, stride=2)  # (B,64,73,73)
        x = self.Conv2d_3b_1x1(x)  # (B,80,73,73)
        x = self.Conv2d_4a_3x3(x)  # (B,192,71,71)
        x = F.max_pool2d(x, kernel_size=3, stride=2)  # (B,192,35,35)
        x = self.Mixed_5d(self.Mixed_5c(self.Mixed_5b(x)))  # (B,288,35,35)
        x = self.Mixed_6a(x)  # (B,768,17,17)
        x = self.Mixed_6e(self.Mixed_6d(self.Mixed_6c(self.Mixed_6b(x))))  # (B,768,17,17)
        x = self.Mixed_7a(x)  # (B,1280,8,8)
        x = self.Mixed_7c(self.Mixed_7b(x))  # (B,2048,8,8)
        return F.adaptive_avg_pool2d(x, 1).flatten(1)  # (B,2048)


def load_fid_inception(path: Path, device: str = "cpu") -> FIDInception:
    """Build :class:`FIDInception` and load ``path`` strictly, in eval mode on ``device``.

    Raises:
        InputError: the file is not a state dict of pytorch-fid's FID Inception
            (missing / unexpected keys or wrong shapes), naming the file.
    """
    net = FIDInception()
    state = safe_load(path, "fid-inception weight file")
    if not isinstance(state, dict):
        raise InputError(
            f"{path}: expected pytorch-fid's pt_inception-2015-12-05 state dict, "
            f"got {type(state).__name__}"
        )
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as e:
        first = str(e).strip().splitlines()[1:2] or [str(e)]
        raise InputError(
            f"{path}: not pytorch-fid's pt_inception-2015-12-05-6726825d.pth layout "
            f"({first[0].strip()[:200]}); reenactbench weights import fid-inception FILE"
        ) from None
    return net.eval().to(device)
