"""PIRenderer's FaceGenerator: mapping net (73-d descriptor window -> 256-d code), warping
net (AdaIN hourglass -> flow at 64x64 -> warped source) and editing net (refines the warp).

Written to be state-dict compatible with RenYurui/PIRender at commit
9e59f194f1a0eb32769a6f058ae55c124cd3d298 (CC BY-NC 4.0): module names, parameter shapes
and inference math follow upstream's ``generators/face_model.py``,
``generators/base_function.py`` and ``util/flow_util.py`` with ``config/face.yaml``, so the
``net_G_ema`` entry of the released checkpoint loads with ``strict=True``. The code is ours.

Conventions (upstream's): images ``(B,3,256,256)`` in ``[-1, 1]`` (``ToTensor`` then
``Normalize(0.5, 0.5)``); descriptors ``(B,73,27)``; outputs are clamped to ``[-1, 1]`` and
converted with ``((x + 1) / 2 * 255).astype(uint8)``, i.e. truncated, not rounded.
``interpolate``/``grid_sample`` use ``align_corners=False`` (the default of the torch 1.7.1
upstream trained with). Upstream's ``FineADAINResBlock2d`` computes ``conv1``/``norm1`` and
then overwrites the result; their weights are in the checkpoint but do not affect the output,
so they are kept as parameters and not evaluated.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from reenactbench.errors import InputError
from reenactbench.nn.loading import safe_load, state_dict_problems

__all__ = ["FACE", "FaceGenerator", "load_pirenderer", "to_input", "to_uint8"]

#: upstream config/face.yaml, ``gen.param``.
FACE: dict[str, dict] = {
    "mapping_net": dict(coeff_nc=73, descriptor_nc=256, layer=3),
    "warpping_net": dict(encoder_layer=5, decoder_layer=3, base_nc=32),
    "editing_net": dict(layer=3, num_res_blocks=2, base_nc=64),
    "common": dict(image_nc=3, descriptor_nc=256, max_nc=256),
}


def _act() -> nn.Module:
    return nn.LeakyReLU(0.1)


class LayerNorm2d(nn.Module):
    """Layer norm over (C,H,W) with per-channel affine ``(C,1,1)`` parameters."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(n, 1, 1))
        self.bias = nn.Parameter(torch.zeros(n, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        shape = x.shape[1:]
        return F.layer_norm(x, shape, self.weight.expand(shape), self.bias.expand(shape))


class ADAIN(nn.Module):
    """Instance norm, then ``* (1 + gamma(z)) + beta(z)`` from a 2-layer MLP of the code."""

    def __init__(self, channels: int, feature_nc: int) -> None:
        super().__init__()
        self.mlp_shared = nn.Sequential(nn.Linear(feature_nc, 128), nn.ReLU())
        self.mlp_gamma = nn.Linear(128, channels)
        self.mlp_beta = nn.Linear(128, channels)

    def forward(self, x: Tensor, z: Tensor) -> Tensor:
        actv = self.mlp_shared(z.reshape(z.shape[0], -1))
        gamma = self.mlp_gamma(actv)[..., None, None]
        beta = self.mlp_beta(actv)[..., None, None]
        return F.instance_norm(x) * (1 + gamma) + beta


class MappingNet(nn.Module):
    """Conv1d (k7) then ``layer`` residual dilated Conv1d blocks, averaged over time."""

    def __init__(self, coeff_nc: int, descriptor_nc: int, layer: int) -> None:
        super().__init__()
        self.layer = layer
        self.first = nn.Sequential(nn.Conv1d(coeff_nc, descriptor_nc, 7))
        for i in range(layer):
            conv = nn.Conv1d(descriptor_nc, descriptor_nc, 3, dilation=3)
            setattr(self, f"encoder{i}", nn.Sequential(_act(), conv))

    def forward(self, coeffs: Tensor) -> Tensor:
        out = self.first(coeffs)
        for i in range(self.layer):
            out = getattr(self, f"encoder{i}")(out) + out[:, :, 3:-3]
        return F.adaptive_avg_pool1d(out, 1)


class ADAINEncoderBlock(nn.Module):
    """AdaIN, act, 4x4 stride-2 conv; AdaIN, act, 3x3 conv."""

    def __init__(self, cin: int, cout: int, feature_nc: int) -> None:
        super().__init__()
        self.conv_0 = nn.Conv2d(cin, cout, 4, 2, 1)
        self.conv_1 = nn.Conv2d(cout, cout, 3, 1, 1)
        self.norm_0 = ADAIN(cin, feature_nc)
        self.norm_1 = ADAIN(cout, feature_nc)
        self.actvn = _act()

    def forward(self, x: Tensor, z: Tensor) -> Tensor:
        x = self.conv_0(self.actvn(self.norm_0(x, z)))
        return self.conv_1(self.actvn(self.norm_1(x, z)))


class ADAINDecoderBlock(nn.Module):
    """Residual up-block: transposed 3x3 stride-2 convs on both branches, AdaIN before each."""

    def __init__(self, cin: int, cout: int, feature_nc: int) -> None:
        super().__init__()
        up = dict(kernel_size=3, stride=2, padding=1, output_padding=1)
        self.conv_0 = nn.Conv2d(cin, cout, 3, 1, 1)
        self.conv_1 = nn.ConvTranspose2d(cout, cout, **up)
        self.conv_s = nn.ConvTranspose2d(cin, cout, **up)
        self.norm_0 = ADAIN(cin, feature_nc)
        self.norm_1 = ADAIN(cout, feature_nc)
        self.norm_s = ADAIN(cin, feature_nc)
        self.actvn = _act()

    def forward(self, x: Tensor, z: Tensor) -> Tensor:
        x_s = self.conv_s(self.actvn(self.norm_s(x, z)))
        dx = self.conv_0(self.actvn(self.norm_0(x, z)))
        return x_s + self.conv_1(self.actvn(self.norm_1(dx, z)))


class ADAINEncoder(nn.Module):
    def __init__(self, image_nc: int, feature_nc: int, ngf: int, max_nc: int, layers: int):
        super().__init__()
        self.layers = layers
        self.input_layer = nn.Conv2d(image_nc, ngf, 7, 1, 3)
        for i in range(layers):
            cin, cout = min(ngf * 2**i, max_nc), min(ngf * 2 ** (i + 1), max_nc)
            setattr(self, f"encoder{i}", ADAINEncoderBlock(cin, cout, feature_nc))

    def forward(self, x: Tensor, z: Tensor) -> list[Tensor]:
        out = [self.input_layer(x)]
        for i in range(self.layers):
            out.append(getattr(self, f"encoder{i}")(out[-1], z))
        return out


class ADAINDecoder(nn.Module):
    """Up-blocks ``decoder{enc-1} .. decoder{enc-dec}``, each followed by a skip concat."""

    def __init__(self, feature_nc: int, ngf: int, max_nc: int, enc: int, dec: int) -> None:
        super().__init__()
        self.order = list(range(enc - dec, enc))[::-1]
        for i in self.order:
            cin = min(ngf * 2 ** (i + 1), max_nc) * (1 if i == enc - 1 else 2)
            setattr(
                self, f"decoder{i}", ADAINDecoderBlock(cin, min(ngf * 2**i, max_nc), feature_nc)
            )
        self.output_nc = 2 * min(ngf * 2 ** self.order[-1], max_nc)

    def forward(self, skips: list[Tensor], z: Tensor) -> Tensor:
        skips = list(skips)
        out = skips.pop()
        for i in self.order:
            out = torch.cat([getattr(self, f"decoder{i}")(out, z), skips.pop()], 1)
        return out


class ADAINHourglass(nn.Module):
    def __init__(self, image_nc, feature_nc, ngf, max_nc, enc, dec) -> None:  # noqa: ANN001
        super().__init__()
        self.encoder = ADAINEncoder(image_nc, feature_nc, ngf, max_nc, enc)
        self.decoder = ADAINDecoder(feature_nc, ngf, max_nc, enc, dec)
        self.output_nc = self.decoder.output_nc

    def forward(self, x: Tensor, z: Tensor) -> Tensor:
        return self.decoder(self.encoder(x, z), z)


def make_coordinate_grid(b: int, h: int, w: int, like: Tensor) -> Tensor:
    """``(b, h, w, 2)`` of ``(x, y)`` in ``[-1, 1]``, ends at the corner pixel centres."""
    x = 2 * (torch.arange(w).to(like) / (w - 1)) - 1
    y = 2 * (torch.arange(h).to(like) / (h - 1)) - 1
    grid = torch.stack([x.view(1, w).expand(h, w), y.view(h, 1).expand(h, w)], dim=-1)
    return grid.expand(b, -1, -1, -1)


def warp_image(image: Tensor, flow: Tensor) -> Tensor:
    """Warp by a pixel-unit flow ``(B,2,h,w)``: deformation = grid + 2 flow / (size - 1),
    resized bilinearly to the image size, then ``grid_sample`` (align_corners=False)."""
    b, _, h, w = flow.shape
    norm = 2 * torch.cat([flow[:, :1] / (w - 1), flow[:, 1:] / (h - 1)], 1)
    deformation = make_coordinate_grid(b, h, w, flow) + norm.permute(0, 2, 3, 1)
    if (h, w) != tuple(image.shape[-2:]):
        deformation = deformation.permute(0, 3, 1, 2)
        size = tuple(image.shape[-2:])
        deformation = F.interpolate(deformation, size=size, mode="bilinear", align_corners=False)
        deformation = deformation.permute(0, 2, 3, 1)
    return F.grid_sample(image, deformation, align_corners=False)


class WarpingNet(nn.Module):
    def __init__(self, image_nc, descriptor_nc, base_nc, max_nc, encoder_layer, decoder_layer):  # noqa: ANN001
        super().__init__()
        self.hourglass = ADAINHourglass(
            image_nc, descriptor_nc, base_nc, max_nc, encoder_layer, decoder_layer
        )
        n = self.hourglass.output_nc
        self.flow_out = nn.Sequential(LayerNorm2d(n), _act(), nn.Conv2d(n, 2, 7, 1, 3))

    def forward(self, image: Tensor, descriptor: Tensor) -> dict[str, Tensor]:
        flow = self.flow_out(self.hourglass(image, descriptor))
        return {"flow_field": flow, "warp_image": warp_image(image, flow)}


def _conv_norm_act(cin: int, cout: int, k: int, *tail: nn.Module) -> nn.Sequential:
    """``model`` of upstream's First/Down/Up/Jump blocks: conv, LayerNorm2d, act, tail."""
    return nn.Sequential(nn.Conv2d(cin, cout, k, 1, k // 2), LayerNorm2d(cout), _act(), *tail)


class Block(nn.Module):
    """Upstream's FirstBlock2d / DownBlock2d / Jump (``model`` only), or UpBlock2d when
    ``up``: nearest 2x upsampling first."""

    def __init__(self, cin: int, cout: int, k: int = 3, pool: bool = False, up: bool = False):
        super().__init__()
        self.up = up
        self.model = _conv_norm_act(cin, cout, k, *([nn.AvgPool2d(2)] if pool else []))

    def forward(self, x: Tensor) -> Tensor:
        return self.model(F.interpolate(x, scale_factor=2) if self.up else x)


class FineADAINResBlock2d(nn.Module):
    """``x + norm2(conv2(x), z)``; upstream's conv1/norm1 branch is overwritten unused."""

    def __init__(self, n: int, feature_nc: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(n, n, 3, 1, 1)
        self.conv2 = nn.Conv2d(n, n, 3, 1, 1)
        self.norm1 = ADAIN(n, feature_nc)
        self.norm2 = ADAIN(n, feature_nc)

    def forward(self, x: Tensor, z: Tensor) -> Tensor:
        return self.norm2(self.conv2(x), z) + x


class FineADAINResBlocks(nn.Module):
    def __init__(self, num_block: int, n: int, feature_nc: int) -> None:
        super().__init__()
        self.num_block = num_block
        for i in range(num_block):
            setattr(self, f"res{i}", FineADAINResBlock2d(n, feature_nc))

    def forward(self, x: Tensor, z: Tensor) -> Tensor:
        for i in range(self.num_block):
            x = getattr(self, f"res{i}")(x, z)
        return x


class FineEncoder(nn.Module):
    def __init__(self, image_nc: int, ngf: int, max_nc: int, layers: int) -> None:
        super().__init__()
        self.layers = layers
        self.first = Block(image_nc, ngf, k=7)
        for i in range(layers):
            cin, cout = min(ngf * 2**i, max_nc), min(ngf * 2 ** (i + 1), max_nc)
            setattr(self, f"down{i}", Block(cin, cout, pool=True))

    def forward(self, x: Tensor) -> list[Tensor]:
        out = [self.first(x)]
        for i in range(self.layers):
            out.append(getattr(self, f"down{i}")(out[-1]))
        return out


class FineDecoder(nn.Module):
    def __init__(self, image_nc, feature_nc, ngf, max_nc, layers, num_block) -> None:  # noqa: ANN001
        super().__init__()
        self.layers = layers
        for i in range(layers)[::-1]:
            cin, cout = min(ngf * 2 ** (i + 1), max_nc), min(ngf * 2**i, max_nc)
            setattr(self, f"up{i}", Block(cin, cout, up=True))
            setattr(self, f"res{i}", FineADAINResBlocks(num_block, cin, feature_nc))
            setattr(self, f"jump{i}", Block(cout, cout))
        self.final = nn.Module()
        self.final.model = nn.Sequential(nn.Conv2d(ngf, image_nc, 7, 1, 3), nn.Tanh())

    def forward(self, skips: list[Tensor], z: Tensor) -> Tensor:
        skips = list(skips)
        out = skips.pop()
        for i in range(self.layers)[::-1]:
            out = getattr(self, f"up{i}")(getattr(self, f"res{i}")(out, z))
            out = getattr(self, f"jump{i}")(skips.pop()) + out
        return self.final.model(out)


class EditingNet(nn.Module):
    def __init__(self, image_nc, descriptor_nc, layer, base_nc, max_nc, num_res_blocks):  # noqa: ANN001
        super().__init__()
        self.encoder = FineEncoder(image_nc * 2, base_nc, max_nc, layer)
        self.decoder = FineDecoder(image_nc, descriptor_nc, base_nc, max_nc, layer, num_res_blocks)

    def forward(self, image: Tensor, warped: Tensor, descriptor: Tensor) -> Tensor:
        return self.decoder(self.encoder(torch.cat([image, warped], 1)), descriptor)


class FaceGenerator(nn.Module):
    """``forward(image, descriptor)`` -> ``{"flow_field", "warp_image", "fake_image"}``."""

    def __init__(self, mapping_net: dict, warpping_net: dict, editing_net: dict, common: dict):
        super().__init__()
        image_nc, descriptor_nc, max_nc = (
            common[k] for k in ("image_nc", "descriptor_nc", "max_nc")
        )
        self.mapping_net = MappingNet(**mapping_net)
        self.warpping_net = WarpingNet(image_nc, descriptor_nc, max_nc=max_nc, **warpping_net)
        self.editing_net = EditingNet(image_nc, descriptor_nc, max_nc=max_nc, **editing_net)

    def forward(
        self, image: Tensor, driving: Tensor, stage: str | None = None
    ) -> dict[str, Tensor]:
        descriptor = self.mapping_net(driving)
        out = self.warpping_net(image, descriptor)
        if stage != "warp":
            out["fake_image"] = self.editing_net(image, out["warp_image"], descriptor)
        return out


def to_input(frames: np.ndarray) -> Tensor:
    """``(N,H,W,3) uint8`` -> ``(N,3,H,W)`` in ``[-1, 1]`` as ``ToTensor`` + ``Normalize``."""
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float().div(255)
    return x.sub(0.5).div(0.5)


def to_uint8(images: Tensor) -> np.ndarray:
    """``(N,3,H,W)`` -> ``(N,H,W,3) uint8`` as upstream's ``write2video``: clamp to [-1, 1],
    ``(x + 1) / 2 * 255`` in float32, then ``astype(uint8)`` (truncation)."""
    x = images.detach().clamp(-1, 1).cpu().float().numpy()
    return ((np.transpose(x, (0, 2, 3, 1)) + 1) / 2.0 * 255.0).astype(np.uint8)


def load_pirenderer(path: Path | str, device: str | torch.device = "cpu") -> FaceGenerator:
    """The ``net_G_ema`` entry of an upstream checkpoint (``{"net_G", "net_G_ema", "opt_G",
    "sch_G", "current_epoch", "current_iteration"}``), strict, eval mode, on ``device``.

    Raises:
        InputError: unreadable file, no ``net_G_ema``, or a key/shape mismatch (one line
            naming the file).
    """
    path = Path(path)
    ckpt = safe_load(path, "PIRenderer checkpoint (epoch_00190_iteration_000400000_checkpoint.pt)")
    if not isinstance(ckpt, Mapping) or not isinstance(ckpt.get("net_G_ema"), Mapping):
        keys = sorted(map(str, ckpt)) if isinstance(ckpt, Mapping) else type(ckpt).__name__
        raise InputError(f"{path}: not a PIRenderer checkpoint (needs 'net_G_ema', has {keys})")
    net = FaceGenerator(**FACE)
    problems = state_dict_problems(net.state_dict(), ckpt["net_G_ema"])
    if problems:
        raise InputError(
            f"{path}: 'net_G_ema' does not match PIRenderer's face.yaml generator "
            f"({'; '.join(problems)})"
        )
    net.load_state_dict(ckpt["net_G_ema"], strict=True)
    return net.eval().requires_grad_(False).to(device)
