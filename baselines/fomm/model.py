"""First Order Motion Model (vox-256 configuration): keypoint detector, dense motion
network and occlusion-aware generator.

Written to be state-dict compatible with AliaksandrSiarohin/first-order-model at commit
c0274845cb2dd8f0f2fe6da580d97b60fef90c91 (code: MIT; the released ``vox-cpk.pth.tar``
checkpoint is distributed by the authors for research use, see docs/licenses.md): the
module names, parameter shapes and inference math follow upstream's ``modules/`` so the
official checkpoint loads with ``strict=True``. The code itself is ours.

Conventions: images are ``(B,3,H,W) float32 in [0,1]``; keypoints live in the
normalised coordinate frame ``[-1,1]^2`` (x first, then y), ``value`` is ``(B,K,2)``
and ``jacobian`` is ``(B,K,2,2)``. Upstream's SynchronizedBatchNorm has the same
state-dict keys as :class:`torch.nn.BatchNorm2d`, which is used here (eval mode only).

``align_corners`` of ``grid_sample``: upstream calls it without the argument; it was
trained with torch < 1.3 (default ``True``) but on current torch the default is
``False``. Both are supported; ``False`` reproduces upstream run on current torch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "VOX256",
    "KPDetector",
    "DenseMotionNetwork",
    "OcclusionAwareGenerator",
    "coordinate_grid",
    "kp_to_gaussian",
    "build_vox256",
]

#: upstream config/vox-256.yaml, ``model_params`` (common params merged in).
VOX256: dict[str, dict] = {
    "kp_detector": dict(
        num_kp=10,
        num_channels=3,
        estimate_jacobian=True,
        temperature=0.1,
        block_expansion=32,
        max_features=1024,
        scale_factor=0.25,
        num_blocks=5,
    ),
    "generator": dict(
        num_kp=10,
        num_channels=3,
        block_expansion=64,
        max_features=512,
        num_down_blocks=2,
        num_bottleneck_blocks=6,
        dense_motion=dict(block_expansion=64, max_features=1024, num_blocks=5, scale_factor=0.25),
    ),
}


def coordinate_grid(h: int, w: int, like: Tensor) -> Tensor:
    """``(h, w, 2)`` grid of ``(x, y)`` in ``[-1, 1]`` (pixel centres at the ends), dtype and
    device of ``like``."""
    x = 2 * (torch.arange(w, dtype=like.dtype, device=like.device) / (w - 1)) - 1
    y = 2 * (torch.arange(h, dtype=like.dtype, device=like.device) / (h - 1)) - 1
    return torch.stack([x.view(1, w).expand(h, w), y.view(h, 1).expand(h, w)], dim=-1)


def kp_to_gaussian(value: Tensor, h: int, w: int, variance: float) -> Tensor:
    """Keypoints ``(B,K,2)`` -> unnormalised Gaussian maps ``(B,K,h,w)``, peak 1."""
    diff = coordinate_grid(h, w, value).view(1, 1, h, w, 2) - value.view(*value.shape[:2], 1, 1, 2)
    return torch.exp(-0.5 * (diff**2).sum(-1) / variance)


class AntiAliasDown(nn.Module):
    """Gaussian blur (sigma = (1/scale - 1)/2) then strided subsampling by ``1/scale``.
    The kernel is a buffer named ``weight`` (it is in upstream's state dict)."""

    def __init__(self, channels: int, scale: float) -> None:
        super().__init__()
        sigma = (1 / scale - 1) / 2
        size = 2 * round(sigma * 4) + 1
        self.pad = size // 2
        t = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
        g = torch.exp(-(t**2) / (2 * sigma**2))
        kernel = g[:, None] * g[None, :]
        kernel = kernel / kernel.sum()
        self.register_buffer("weight", kernel.expand(channels, 1, size, size).clone())
        self.step = int(1 / scale)
        self.channels = channels

    def forward(self, x: Tensor) -> Tensor:
        out = F.conv2d(F.pad(x, (self.pad,) * 4), self.weight, groups=self.channels)
        return out[:, :, :: self.step, :: self.step]


class ConvNormRelu(nn.Module):
    """conv -> BN -> ReLU, optionally followed by 2x2 average pooling (downsampling)."""

    def __init__(self, cin: int, cout: int, k: int = 3, pool: bool = False) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, padding=k // 2)
        self.norm = nn.BatchNorm2d(cout)
        self.pool = nn.AvgPool2d(2) if pool else None

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.norm(self.conv(x)))
        return self.pool(out) if self.pool is not None else out


class UpBlock(nn.Module):
    """Nearest 2x upsampling -> conv 3x3 -> BN -> ReLU."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, padding=1)
        self.norm = nn.BatchNorm2d(cout)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.norm(self.conv(F.interpolate(x, scale_factor=2))))


class ResBlock(nn.Module):
    """Pre-activation residual block: x + conv2(relu(bn2(conv1(relu(bn1(x))))))."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c, c, 3, padding=1)
        self.conv2 = nn.Conv2d(c, c, 3, padding=1)
        self.norm1 = nn.BatchNorm2d(c)
        self.norm2 = nn.BatchNorm2d(c)

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv1(F.relu(self.norm1(x)))
        return x + self.conv2(F.relu(self.norm2(out)))


class _Encoder(nn.Module):
    def __init__(self, expansion: int, cin: int, blocks: int, max_features: int) -> None:
        super().__init__()
        chans = [cin] + [min(max_features, expansion * 2 ** (i + 1)) for i in range(blocks)]
        self.down_blocks = nn.ModuleList(
            ConvNormRelu(chans[i], chans[i + 1], pool=True) for i in range(blocks)
        )


class _Decoder(nn.Module):
    def __init__(self, expansion: int, cin: int, blocks: int, max_features: int) -> None:
        super().__init__()
        ups = []
        for i in reversed(range(blocks)):
            mult = 1 if i == blocks - 1 else 2
            ups.append(
                UpBlock(
                    mult * min(max_features, expansion * 2 ** (i + 1)),
                    min(max_features, expansion * 2**i),
                )
            )
        self.up_blocks = nn.ModuleList(ups)


class Hourglass(nn.Module):
    """U-Net: ``blocks`` down blocks, then up blocks each concatenated with the skip.
    ``(B,cin,H,W)`` -> ``(B, expansion + cin, H, W)``; H, W divisible by ``2**blocks``."""

    def __init__(self, expansion: int, cin: int, blocks: int, max_features: int) -> None:
        super().__init__()
        self.encoder = _Encoder(expansion, cin, blocks, max_features)
        self.decoder = _Decoder(expansion, cin, blocks, max_features)
        self.out_filters = expansion + cin

    def forward(self, x: Tensor) -> Tensor:
        skips = [x]
        for block in self.encoder.down_blocks:
            skips.append(block(skips[-1]))
        out = skips.pop()
        for block in self.decoder.up_blocks:
            out = torch.cat([block(out), skips.pop()], dim=1)
        return out


class KPDetector(nn.Module):
    """Image ``(B,3,H,W)`` in [0,1] -> ``{"value": (B,K,2) in [-1,1], "jacobian": (B,K,2,2)}``.

    Keypoints are soft-argmax (softmax at ``temperature``) of K heatmaps predicted at
    ``scale_factor`` of the input; jacobians are heatmap-weighted sums of 4K maps.
    """

    def __init__(
        self,
        num_kp: int = 10,
        num_channels: int = 3,
        estimate_jacobian: bool = True,
        temperature: float = 0.1,
        block_expansion: int = 32,
        max_features: int = 1024,
        scale_factor: float = 0.25,
        num_blocks: int = 5,
    ) -> None:
        super().__init__()
        self.predictor = Hourglass(block_expansion, num_channels, num_blocks, max_features)
        self.kp = nn.Conv2d(self.predictor.out_filters, num_kp, 7)
        self.jacobian = (
            nn.Conv2d(self.predictor.out_filters, 4 * num_kp, 7) if estimate_jacobian else None
        )
        self.temperature = temperature
        self.num_kp = num_kp
        self.down = AntiAliasDown(num_channels, scale_factor) if scale_factor != 1 else None

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        if self.down is not None:
            x = self.down(x)
        feat = self.predictor(x)
        logits = self.kp(feat)  # (B,K,h,w), valid conv: h = H*scale - 6
        b, k, h, w = logits.shape
        heat = F.softmax(logits.view(b, k, -1) / self.temperature, dim=2).view(b, k, h, w)
        grid = coordinate_grid(h, w, heat)
        out = {"value": (heat.unsqueeze(-1) * grid).sum(dim=(2, 3))}
        if self.jacobian is not None:
            jmap = self.jacobian(feat).reshape(b, k, 4, h, w)
            jac = (heat.unsqueeze(2) * jmap).view(b, k, 4, -1).sum(-1)
            out["jacobian"] = jac.view(b, k, 2, 2)
        return out


class DenseMotionNetwork(nn.Module):
    """Sparse keypoint motions -> dense backward flow ``(B,h,w,2)`` and occlusion
    ``(B,1,h,w)`` at ``scale_factor`` of the source resolution."""

    def __init__(
        self,
        num_kp: int,
        num_channels: int,
        block_expansion: int,
        max_features: int,
        num_blocks: int,
        scale_factor: float,
        kp_variance: float = 0.01,
        align_corners: bool = False,
    ) -> None:
        super().__init__()
        self.hourglass = Hourglass(
            block_expansion, (num_kp + 1) * (num_channels + 1), num_blocks, max_features
        )
        self.mask = nn.Conv2d(self.hourglass.out_filters, num_kp + 1, 7, padding=3)
        self.occlusion = nn.Conv2d(self.hourglass.out_filters, 1, 7, padding=3)
        self.num_kp = num_kp
        self.kp_variance = kp_variance
        self.align_corners = align_corners
        self.down = AntiAliasDown(num_channels, scale_factor) if scale_factor != 1 else None

    def forward(
        self, source: Tensor, kp_driving: dict[str, Tensor], kp_source: dict[str, Tensor]
    ) -> dict[str, Tensor]:
        """``source`` (B,3,H,W) in [0,1]; keypoint dicts with batch B."""
        if self.down is not None:
            source = self.down(source)
        b, c, h, w = source.shape
        k = self.num_kp
        # heatmap difference H_k (background channel of zeros first): (B,K+1,1,h,w)
        heat = kp_to_gaussian(kp_driving["value"], h, w, self.kp_variance) - kp_to_gaussian(
            kp_source["value"], h, w, self.kp_variance
        )
        heat = torch.cat([heat.new_zeros(b, 1, h, w), heat], dim=1).unsqueeze(2)
        # sparse motions T_{s<-d}: (B,K+1,h,w,2), identity first
        ident = coordinate_grid(h, w, source).view(1, 1, h, w, 2)
        rel = ident - kp_driving["value"].view(b, k, 1, 1, 2)
        if "jacobian" in kp_driving:
            jac = torch.matmul(kp_source["jacobian"], torch.inverse(kp_driving["jacobian"]))
            jac = jac.unsqueeze(-3).unsqueeze(-3).repeat(1, 1, h, w, 1, 1)
            rel = torch.matmul(jac, rel.unsqueeze(-1)).squeeze(-1)
        motions = torch.cat(
            [ident.repeat(b, 1, 1, 1, 1), rel + kp_source["value"].view(b, k, 1, 1, 2)], dim=1
        )
        # source warped by each motion: (B,K+1,C,h,w)
        rep = source.unsqueeze(1).expand(b, k + 1, c, h, w).reshape(b * (k + 1), c, h, w)
        warped = F.grid_sample(
            rep, motions.view(b * (k + 1), h, w, 2), align_corners=self.align_corners
        ).view(b, k + 1, c, h, w)
        feat = self.hourglass(torch.cat([heat, warped], dim=2).view(b, -1, h, w))
        mask = F.softmax(self.mask(feat), dim=1).unsqueeze(2)  # (B,K+1,1,h,w)
        flow = (motions.permute(0, 1, 4, 2, 3) * mask).sum(dim=1).permute(0, 2, 3, 1)
        return {"deformation": flow, "occlusion_map": torch.sigmoid(self.occlusion(feat))}


class OcclusionAwareGenerator(nn.Module):
    """Encode the source, warp its features by the dense flow, mask by occlusion, decode.
    Output ``{"prediction": (B,3,H,W) in [0,1]}`` (sigmoid)."""

    def __init__(
        self,
        num_kp: int = 10,
        num_channels: int = 3,
        block_expansion: int = 64,
        max_features: int = 512,
        num_down_blocks: int = 2,
        num_bottleneck_blocks: int = 6,
        dense_motion: dict | None = None,
        align_corners: bool = False,
    ) -> None:
        super().__init__()
        dm = dense_motion if dense_motion is not None else VOX256["generator"]["dense_motion"]
        self.dense_motion_network = DenseMotionNetwork(
            num_kp, num_channels, align_corners=align_corners, **dm
        )
        self.first = ConvNormRelu(num_channels, block_expansion, 7)
        ch = [min(max_features, block_expansion * 2**i) for i in range(num_down_blocks + 1)]
        self.down_blocks = nn.ModuleList(
            ConvNormRelu(ch[i], ch[i + 1], pool=True) for i in range(num_down_blocks)
        )
        self.up_blocks = nn.ModuleList(
            UpBlock(ch[i + 1], ch[i]) for i in reversed(range(num_down_blocks))
        )
        self.bottleneck = nn.Sequential()
        for i in range(num_bottleneck_blocks):
            self.bottleneck.add_module(f"r{i}", ResBlock(ch[-1]))
        self.final = nn.Conv2d(block_expansion, num_channels, 7, padding=3)
        self.align_corners = align_corners

    def set_align_corners(self, value: bool) -> None:
        """Choose ``grid_sample``'s ``align_corners`` for both warps."""
        self.align_corners = value
        self.dense_motion_network.align_corners = value

    def encode(self, source: Tensor) -> Tensor:
        """``(B,3,H,W)`` in [0,1] -> features ``(B, C, H/4, H/4)`` (independent of motion)."""
        out = self.first(source)
        for block in self.down_blocks:
            out = block(out)
        return out

    def forward(
        self,
        source: Tensor,
        kp_driving: dict[str, Tensor],
        kp_source: dict[str, Tensor],
        features: Tensor | None = None,
    ) -> dict[str, Tensor]:
        """``source`` (B,3,H,W) in [0,1]; ``features``: optional cached ``encode(source)``."""
        out = self.encode(source) if features is None else features
        motion = self.dense_motion_network(source, kp_driving, kp_source)
        flow, occ = motion["deformation"], motion["occlusion_map"]
        if flow.shape[1:3] != out.shape[2:]:
            flow = F.interpolate(flow.permute(0, 3, 1, 2), size=out.shape[2:], mode="bilinear")
            flow = flow.permute(0, 2, 3, 1)
        out = F.grid_sample(out, flow, align_corners=self.align_corners)
        if occ.shape[2:] != out.shape[2:]:
            occ = F.interpolate(occ, size=out.shape[2:], mode="bilinear")
        out = self.bottleneck(out * occ)
        for block in self.up_blocks:
            out = block(out)
        return {"prediction": torch.sigmoid(self.final(out))}


def build_vox256(align_corners: bool = False) -> tuple[OcclusionAwareGenerator, KPDetector]:
    """Untrained vox-256 ``(generator, kp_detector)`` in eval mode."""
    gen = OcclusionAwareGenerator(**VOX256["generator"], align_corners=align_corners).eval()
    kp = KPDetector(**VOX256["kp_detector"]).eval()
    return gen, kp
