"""pSp's GradualStyleEncoder: IR-SE50 trunk, feature pyramid and map2style heads.

Compatible with the checkpoints of eladrich/pixel2style2pixel at commit
5cfff385beb7b95fbce775662b48fcc80081928d (``models/encoders/psp_encoders.py``
``GradualStyleBlock`` / ``GradualStyleEncoder``, ``models/encoders/helpers.py``,
``EqualLinear`` of ``models/stylegan2/model.py``, here that of
:mod:`reenactbench.nn.stylegan2`; MIT License). The code here is ours;
module names, parameter names and shapes equal upstream's, so the ``encoder.*`` part of a
pSp checkpoint (prefix removed) loads into :class:`GradualStyleEncoder` with ``strict=True``.

State-dict layout of ``GradualStyleEncoder(50, "ir_se", n_styles=18)`` (pSp's order)::

    input_layer.0/1/2  Conv2d(3, 64, 3, bias=False), BatchNorm2d(64), PReLU(64)
    body.0 .. body.23  IR-SE units, exactly those of :class:`~reenactbench.nn.irse50.Backbone`
    styles.i.convs.2k  Conv2d(512, 512, 3, stride 2, padding 1) (with bias), k = 0 ..
                       log2(spatial) - 1, each followed by LeakyReLU(0.01) (``convs.2k+1``)
    styles.i.linear    EqualLinear(512, 512): ``weight`` (512, 512), ``bias`` (512,)
    latlayer1          Conv2d(256, 512, 1) (with bias), lateral on c2
    latlayer2          Conv2d(128, 512, 1) (with bias), lateral on c1

Data flow at a ``(B, 3, 256, 256)`` float32 input in [-1, 1]::

    c1 = body[..6] (B,128,64,64)   c2 = body[..20] (B,256,32,32)   c3 = body[..23] (B,512,16,16)
    p_coarse = c3                                                   (B,512,16,16)
    p_medium = up(p_coarse -> 32x32) + latlayer1(c2)                (B,512,32,32)
    p_fine   = up(p_medium -> 64x64) + latlayer2(c1)                (B,512,64,64)
    codes[:, i] = styles[i](p_coarse if i < coarse_ind else p_medium if i < middle_ind
                            else p_fine)                            (B,n_styles,512)

``up`` is bilinear interpolation with ``align_corners=True`` (upstream's ``_upsample_add``).
The taps are the last units of stages 2, 3, 4 (``Backbone.taps``); for 50 layers these are
pSp's hard-coded 6, 20, 23. (pSp's 100/152-layer variants keep 6, 20, 23, which there are
not stage ends and give a 256-channel c3 its heads cannot take: they do not run upstream.)

Initialising from ``model_ir_se50.pth`` (pSp without ``--checkpoint_path``): pSp calls
``encoder.load_state_dict(irse50, strict=False)``; :func:`load_backbone_into` copies the same
``input_layer.*`` / ``body.*`` tensors with explicit key checks instead.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from reenactbench.errors import InputError
from reenactbench.nn.irse50 import BottleneckIR, BottleneckIRSE, get_blocks
from reenactbench.nn.loading import few
from reenactbench.nn.stylegan2 import EqualLinear

__all__ = [
    "GradualStyleBlock",
    "FeaturePyramid",
    "GradualStyleEncoder",
    "upsample_add",
    "load_backbone_into",
    "BACKBONE_PREFIXES",
]

#: State-dict prefixes of the trunk that pSp initialises from ``model_ir_se50.pth``.
BACKBONE_PREFIXES = ("input_layer.", "body.")


class GradualStyleBlock(nn.Module):
    """pSp's map2style head: ``log2(spatial)`` stride-2 3x3 convs (LeakyReLU 0.01 after
    each) take a ``(B, in_c, spatial, spatial)`` map to ``(B, out_c, 1, 1)``, then
    :class:`EqualLinear` gives the ``(B, out_c)`` style code."""

    def __init__(self, in_c: int, out_c: int, spatial: int) -> None:
        super().__init__()
        num_pools = int(math.log2(spatial))
        if num_pools < 1 or 2**num_pools != spatial:
            raise ValueError(f"spatial must be a power of two >= 2, got {spatial}")
        self.out_c, self.spatial = out_c, spatial
        layers: list[nn.Module] = []
        for k in range(num_pools):
            layers += [nn.Conv2d(in_c if k == 0 else out_c, out_c, 3, 2, 1), nn.LeakyReLU()]
        self.convs = nn.Sequential(*layers)
        self.linear = EqualLinear(out_c, out_c, lr_mul=1)

    def reset_parameters(self, generator: torch.Generator) -> None:
        """Upstream's initialisation, drawn from ``generator``: torch's default for the convs
        (weights kaiming-uniform with ``a = sqrt(5)``, biases U(-1/sqrt(fan_in), ..)) and
        ``N(0, 1)`` EqualLinear weights with zero bias."""
        for conv in self.convs:
            if isinstance(conv, nn.Conv2d):
                _reset_conv(conv, generator)
        self.linear.reset_parameters(generator)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, in_c, spatial, spatial) -> (B, out_c)``."""
        if tuple(x.shape[-2:]) != (self.spatial, self.spatial):
            raise ValueError(
                f"GradualStyleBlock({self.spatial}) needs a {self.spatial}x{self.spatial} "
                f"map, got {tuple(x.shape)}: feed the encoder its input_size"
            )
        return self.linear(self.convs(x).flatten(1))


def _reset_conv(conv: nn.Conv2d, generator: torch.Generator) -> None:
    """``nn.Conv2d.reset_parameters`` with the draws taken from ``generator``."""
    nn.init.kaiming_uniform_(conv.weight, a=math.sqrt(5), generator=generator)
    if conv.bias is not None:
        bound = 1 / math.sqrt(conv.weight[0].numel())
        nn.init.uniform_(conv.bias, -bound, bound, generator=generator)


def upsample_add(x: Tensor, y: Tensor) -> Tensor:
    """pSp's ``_upsample_add``: ``x`` resized bilinearly (``align_corners=True``) to
    ``y``'s height and width, plus ``y``. ``x``: ``(B, C, h, w)``, ``y``: ``(B, C, H, W)``."""
    return F.interpolate(x, size=y.shape[-2:], mode="bilinear", align_corners=True) + y


def _trunk(
    num_layers: int, mode: str, input_nc: int
) -> tuple[nn.Sequential, nn.Sequential, tuple[int, int, int]]:
    """pSp's ``input_layer``, ``body`` and the body indices of the c1/c2/c3 taps."""
    if mode not in ("ir", "ir_se"):
        raise ValueError(f"mode must be 'ir' or 'ir_se', got {mode!r}")
    unit = BottleneckIRSE if mode == "ir_se" else BottleneckIR
    blocks = get_blocks(num_layers)
    input_layer = nn.Sequential(
        nn.Conv2d(input_nc, 64, (3, 3), 1, 1, bias=False), nn.BatchNorm2d(64), nn.PReLU(64)
    )
    body = nn.Sequential(*(unit(*u) for stage in blocks for u in stage))
    ends = [sum(len(s) for s in blocks[: i + 1]) - 1 for i in range(4)]
    return input_layer, body, (ends[1], ends[2], ends[3])


class FeaturePyramid(nn.Module):
    """IR-SE trunk plus pSp's lateral merges: the coarse/medium/fine maps the style heads
    (and the hybrid method's encoder) read. Architecture only, no I/O.

    Args:
        num_layers: 50, 100 or 152 (pSp uses 50).
        mode: ``"ir_se"`` (pSp) or ``"ir"``.
        input_nc: input channels (pSp's ``opts.input_nc``, 3 for RGB).

    Attributes:
        taps: body indices of c1, c2, c3 (``(6, 20, 23)`` for 50 layers).
    """

    def __init__(self, num_layers: int = 50, mode: str = "ir_se", input_nc: int = 3) -> None:
        super().__init__()
        self.input_layer, self.body, self.taps = _trunk(num_layers, mode, input_nc)
        self.latlayer1 = nn.Conv2d(256, 512, kernel_size=1, stride=1, padding=0)
        self.latlayer2 = nn.Conv2d(128, 512, kernel_size=1, stride=1, padding=0)

    def backbone(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Trunk taps ``(c1, c2, c3)``; at 256x256: ``(B,128,64,64)``, ``(B,256,32,32)``,
        ``(B,512,16,16)``. ``x``: ``(B, input_nc, H, W)`` float32, H and W divisible by 16."""
        if x.ndim != 4 or x.shape[-1] % 16 or x.shape[-2] % 16:
            raise ValueError(
                f"the pyramid needs (B,C,H,W) with H, W % 16 == 0, got {tuple(x.shape)}"
            )
        x = self.input_layer(x)
        taps: list[Tensor] = []
        for i, unit in enumerate(self.body):
            x = unit(x)
            if i in self.taps:
                taps.append(x)
        return taps[0], taps[1], taps[2]

    def pyramid(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``(p_coarse, p_medium, p_fine)`` of ``x``: 512-channel maps at 1/16, 1/8, 1/4 of
        the input size (``(B,512,16,16)``, ``(B,512,32,32)``, ``(B,512,64,64)`` at 256x256).

        ``x``: ``(B, input_nc, H, W)`` float32 RGB in [-1, 1] (pSp's input normalisation).
        """
        c1, c2, c3 = self.backbone(x)
        p_medium = upsample_add(c3, self.latlayer1(c2))
        p_fine = upsample_add(p_medium, self.latlayer2(c1))
        return c3, p_medium, p_fine

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Same as :meth:`pyramid`."""
        return self.pyramid(x)


class GradualStyleEncoder(FeaturePyramid):
    """pSp's ``GradualStyleEncoder``: W+ codes from the feature pyramid. Architecture only.

    Head ``i`` reads ``p_coarse`` for ``i < coarse_ind``, ``p_medium`` for
    ``i < middle_ind``, else ``p_fine``. pSp: ``n_styles = 2 * log2(output_size) - 2``
    (18 at 1024^2, 14 at 256^2), ``coarse_ind = 3``, ``middle_ind = 7``.

    Args:
        num_layers, mode, input_nc: as :class:`FeaturePyramid`.
        n_styles: number of style codes (heads).
        coarse_ind: first head on the medium map.
        middle_ind: first head on the fine map.
        input_size: input side the heads are built for (pSp: 256); the heads' spatial sizes
            are ``input_size // 16``, ``// 8``, ``// 4``.
    """

    def __init__(
        self,
        num_layers: int = 50,
        mode: str = "ir_se",
        n_styles: int = 18,
        coarse_ind: int = 3,
        middle_ind: int = 7,
        input_nc: int = 3,
        input_size: int = 256,
    ) -> None:
        if not 0 <= coarse_ind <= middle_ind <= n_styles:
            raise ValueError(
                f"need 0 <= coarse_ind <= middle_ind <= n_styles, got {coarse_ind}, "
                f"{middle_ind}, {n_styles}"
            )
        if input_size % 32 or input_size < 32:
            raise ValueError(f"input_size must be a multiple of 32, got {input_size}")
        super().__init__(num_layers, mode, input_nc)
        self.n_styles, self.coarse_ind, self.middle_ind = n_styles, coarse_ind, middle_ind
        self.input_size = input_size
        # re-register the laterals after ``styles`` so that state_dict() lists keys in
        # pSp's order (input_layer, body, styles, latlayer1, latlayer2)
        lat1, lat2 = self.latlayer1, self.latlayer2
        del self.latlayer1, self.latlayer2
        sides = (input_size // 16, input_size // 8, input_size // 4)
        self.styles = nn.ModuleList(
            GradualStyleBlock(512, 512, sides[self._level(i)]) for i in range(n_styles)
        )
        self.latlayer1, self.latlayer2 = lat1, lat2

    def reset_parameters(self, generator: torch.Generator) -> GradualStyleEncoder:
        """Re-initialise the laterals and style heads from ``generator`` (as upstream
        initialises them; the trunk is left for :func:`load_backbone_into`). A fresh
        encoder's :class:`~reenactbench.nn.stylegan2.EqualLinear` weights are zero until
        this is called. Returns ``self``."""
        _reset_conv(self.latlayer1, generator)
        _reset_conv(self.latlayer2, generator)
        for head in self.styles:
            head.reset_parameters(generator)
        return self

    def _level(self, i: int) -> int:
        """Pyramid level (0 coarse, 1 medium, 2 fine) read by head ``i``."""
        return 0 if i < self.coarse_ind else 1 if i < self.middle_ind else 2

    def styles_from(self, pyramid: tuple[Tensor, Tensor, Tensor]) -> Tensor:
        """``(p_coarse, p_medium, p_fine)`` of :meth:`pyramid` -> ``(B, n_styles, 512)``."""
        return torch.stack([head(pyramid[self._level(i)]) for i, head in enumerate(self.styles)], 1)

    def forward(self, x: Tensor) -> Tensor:  # type: ignore[override]
        """``(B, input_nc, input_size, input_size)`` float32 in [-1, 1] ->
        ``(B, n_styles, 512)`` float32 W+ offsets (pSp adds ``latent_avg`` when trained
        with ``--start_from_latent_avg``)."""
        if tuple(x.shape[-2:]) != (self.input_size, self.input_size):
            raise ValueError(
                f"GradualStyleEncoder(input_size={self.input_size}) got {tuple(x.shape)}"
            )
        return self.styles_from(self.pyramid(x))


def load_backbone_into(
    encoder: FeaturePyramid,
    irse50_state: Mapping[str, Tensor],
    source: str = "model_ir_se50.pth",
    input_layer: bool = True,
) -> list[str]:
    """Initialise ``encoder``'s ``input_layer.*`` and ``body.*`` from an IR-SE50 state dict,
    as pSp does before training (its ``load_state_dict(irse50, strict=False)``), checked.

    The file's ``output_layer.*`` tensors (the ArcFace head) are not used; the laterals and
    style heads keep their values. Missing ``num_batches_tracked`` buffers (pre-0.4.1 files,
    see :mod:`reenactbench.nn.irse50`) are set to 0.

    Args:
        encoder: a :class:`FeaturePyramid` or :class:`GradualStyleEncoder`.
        irse50_state: ``model_ir_se50.pth`` loaded (plain state dict, no key prefix).
        source: names the file in errors.
        input_layer: False skips ``input_layer.*`` (pSp does so for ``label_nc != 0``).

    Returns:
        The encoder keys that were set, in state-dict order.

    Raises:
        InputError: a trunk key of ``encoder`` absent from the file, a file key under
            ``input_layer.`` / ``body.`` the encoder lacks, or a shape mismatch.
    """
    prefixes = BACKBONE_PREFIXES if input_layer else BACKBONE_PREFIXES[1:]
    own = encoder.state_dict()
    wanted = [k for k in own if k.startswith(prefixes)]
    given = {k: v for k, v in irse50_state.items() if k.startswith(prefixes)}
    for k in wanted:
        if k.endswith(".num_batches_tracked") and k not in given:
            given[k] = torch.zeros((), dtype=torch.long)
    missing = [k for k in wanted if k not in given]
    extra = sorted(set(given) - set(wanted))
    shapes = [
        f"{k} {tuple(given[k].shape)} != {tuple(own[k].shape)}"
        for k in wanted
        if k in given and given[k].shape != own[k].shape
    ]
    found = (("missing keys", missing), ("unexpected keys", extra), ("shape mismatch", shapes))
    problems = [f"{what} {few(keys)}" for what, keys in found if keys]
    if problems:
        raise InputError(
            f"{source}: not an IR-SE50 trunk for this encoder (expected model_ir_se50.pth, "
            "Backbone(112, 50, 'ir_se')): " + "; ".join(problems)
        )
    own.update((k, given[k]) for k in wanted)
    encoder.load_state_dict(own, strict=True)
    return wanted
