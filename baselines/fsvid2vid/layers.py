"""Building blocks of the few-shot vid2vid generator: imaginaire's conv / linear blocks with
(hyper) SPADE, residual blocks, the label embedder, the flow generator and the warp.

State-dict compatible with NVlabs/imaginaire at commit
c6f74845c699c58975fd12b778c375b72eb00e8d (NVIDIA Source Code License-NC): module names and
parameter shapes follow ``imaginaire/layers/{conv,residual,activation_norm}.py``,
``generators/fs_vid2vid.py`` (``LabelEmbedder``, ``FlowGenerator``) and
``model_utils/fs_vid2vid.py`` (``resample``, ``concat_frames``). The code is ours and covers
inference only.

Every block keeps upstream's ``layers`` ``ModuleDict`` (``conv`` / ``norm``; the nonlinearity
has no parameters and is applied functionally) in upstream's ``order`` string, e.g. ``"CNA"``
= conv, norm, activation. A block that upstream wraps in ``torch.nn.utils.spectral_norm``
is built with ``sn=True``: imaginaire's ``ModelAverage`` (``remove_sn=True``) folds the
spectral norm into a plain ``weight`` of the averaged (EMA) copy, which re-registers the
weight after the bias; such blocks register ``bias`` first so that ``state_dict()`` has
upstream's key order. The trained copy keeps ``weight_orig``/``weight_u``/``weight_v``;
:func:`fold_spectral_norm` turns those into the weight torch's spectral norm uses in eval
mode (no power iteration: ``W / (u . W_mat v)``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "ConvBlock",
    "FlowGenerator",
    "HyperSpade",
    "LabelEmbedder",
    "LinearBlock",
    "ResBlock",
    "Spade",
    "concat_frames",
    "fold_spectral_norm",
    "resample",
]

#: a generated conv ``[weight (B, out, in, k, k), bias (B, out)]``, one per sample.
HyperWeight = Sequence[Tensor | None]


def _act(x: Tensor, kind: str) -> Tensor:
    if kind == "leakyrelu":
        return F.leaky_relu(x, 0.2)
    if kind == "relu":
        return F.relu(x)
    if kind == "sigmoid":
        return torch.sigmoid(x)
    return x


def _bias_first(layer: nn.Module) -> nn.Module:
    """Re-register ``weight`` after ``bias`` (the key order of a spectral-norm-removed layer)."""
    weight = layer._parameters.pop("weight")
    layer.register_parameter("weight", weight)
    return layer


class HyperConv(nn.Module):
    """Imaginaire's ``HyperConv2d``: no parameters; convolves sample ``i`` with the generated
    ``weight[i]``, ``bias[i]``; no weights -> identity (as upstream)."""

    def __init__(self, stride: int = 1, padding: int = 1) -> None:
        super().__init__()
        self.stride, self.padding = stride, padding

    def forward(self, x: Tensor, weights: HyperWeight | None) -> Tensor:
        if weights is None or weights[0] is None:
            return x
        weight, bias = weights
        return torch.cat(
            [
                F.conv2d(x[i : i + 1], weight[i], bias[i], self.stride, self.padding)
                for i in range(x.shape[0])
            ]
        )


class ConvBlock(nn.Module):
    """Imaginaire's ``Conv2dBlock`` / ``HyperConv2dBlock``.

    Args:
        cin, cout, k, stride, padding: the convolution.
        order: upstream's order string over ``C`` (conv), ``N`` (norm), ``A`` (activation).
        norm: ``"none"``, ``"instance"`` (affine), or a norm module (SPADE).
        act: ``"none"``, ``"leakyrelu"`` (0.2), ``"relu"``, ``"sigmoid"``.
        sn: upstream wraps the conv in spectral norm (only changes the key order here).
        hyper: the conv weights are generated per sample (no parameters).
    """

    def __init__(
        self,
        cin: int,
        cout: int,
        k: int,
        stride: int = 1,
        padding: int = 0,
        order: str = "CNA",
        norm: str | nn.Module = "none",
        act: str = "none",
        sn: bool = False,
        hyper: bool = False,
    ) -> None:
        super().__init__()
        self.order, self.act, self.sn, self.hyper = order, act, sn and not hyper, hyper
        if hyper:
            conv: nn.Module = HyperConv(stride, padding)
        else:
            conv = nn.Conv2d(cin, cout, k, stride, padding)
            if self.sn:
                _bias_first(conv)
        norm_ch = cout if order.find("C") < order.find("N") else cin
        if norm == "instance":
            norm = nn.InstanceNorm2d(norm_ch, affine=True)
        self.layers = nn.ModuleDict()
        for op in order:
            if op == "C":
                self.layers["conv"] = conv
            elif op == "N" and isinstance(norm, nn.Module):
                self.layers["norm"] = norm

    def forward(
        self,
        x: Tensor,
        cond: Sequence[Tensor | None] = (),
        conv_weights: HyperWeight | None = None,
        norm_weights: HyperWeight | None = None,
    ) -> Tensor:
        for op in self.order:
            if op == "C":
                conv = self.layers["conv"]
                x = conv(x, conv_weights) if self.hyper else conv(x)
            elif op == "N" and "norm" in self.layers:
                norm = self.layers["norm"]
                if isinstance(norm, Spade | HyperSpade):
                    x = norm(x, cond, norm_weights)
                else:
                    x = F.instance_norm(x, weight=norm.weight, bias=norm.bias, eps=norm.eps)
            elif op == "A":
                x = _act(x, self.act)
        return x


class LinearBlock(nn.Module):
    """Imaginaire's ``LinearBlock`` with spectral norm (folded): linear, then activation."""

    def __init__(self, cin: int, cout: int, act: str = "none") -> None:
        super().__init__()
        self.act, self.sn = act, True
        self.layers = nn.ModuleDict({"conv": _bias_first(nn.Linear(cin, cout))})

    def forward(self, x: Tensor) -> Tensor:
        return _act(self.layers["conv"](x), self.act)


class Spade(nn.Module):
    """``SpatiallyAdaptiveNorm`` as the face config builds it: parameter-free instance norm,
    then per conditional map ``i`` a 1x1 conv (``mlps.i.0``, no weight norm) to
    ``(gamma, beta)``: ``x * (1 + gamma) + beta``; ``None`` maps are skipped."""

    def __init__(self, channels: int, cond_dims: Sequence[int], hyper_first: bool = False):
        super().__init__()
        self.hyper_first = hyper_first
        self.mlps = nn.ModuleList(
            HyperConv(padding=0)
            if hyper_first and i == 0
            else nn.Sequential(ConvBlock(c, 2 * channels, 1))
            for i, c in enumerate(cond_dims)
        )

    def forward(
        self, x: Tensor, cond: Sequence[Tensor | None], weights: HyperWeight | None = None
    ) -> Tensor:
        out = F.instance_norm(x, eps=1e-5)
        for i, c in enumerate(cond):
            if c is None:
                continue
            c = F.interpolate(c, size=x.shape[2:], mode="nearest")
            mlp = self.mlps[i]
            if isinstance(mlp, HyperConv):
                params = mlp(c, weights)  # upstream: no weights -> the map itself
            else:
                params = mlp(c)
            gamma, beta = params.chunk(2, dim=1)
            out = out * (1 + gamma) + beta
        return out


class HyperSpade(Spade):
    """``HyperSpatiallyAdaptiveNorm``: :class:`Spade` whose first map's 1x1 conv is
    generated per sample from the reference (``mlps.0`` has no parameters)."""

    def __init__(self, channels: int, cond_dims: Sequence[int]) -> None:
        super().__init__(channels, cond_dims, hyper_first=True)


class ResBlock(nn.Module):
    """Imaginaire's ``Res2dBlock`` / ``HyperRes2dBlock`` (``order="NACNAC"``, stride 1):
    ``shortcut(x) + conv_block_1(conv_block_0(x))``; hidden width ``min(cin, cout)``; a
    learned 1x1 shortcut (norm, no activation) when ``cin != cout``."""

    def __init__(
        self,
        cin: int,
        cout: int,
        norm: str,
        cond_dims: Sequence[int] = (),
        hyper_norm: bool = False,
        sn: bool = True,
    ) -> None:
        super().__init__()
        hidden = min(cin, cout)

        def block(a: int, b: int, k: int, act: str) -> ConvBlock:
            if norm == "spade":
                n: str | nn.Module = (HyperSpade if hyper_norm else Spade)(a, cond_dims)
            else:
                n = norm
            return ConvBlock(a, b, k, padding=k // 2, order="NAC", norm=n, act=act, sn=sn)

        self.conv_block_0 = block(cin, hidden, 3, "leakyrelu")
        self.conv_block_1 = block(hidden, cout, 3, "leakyrelu")
        self.learn_shortcut = cin != cout
        if self.learn_shortcut:
            self.conv_block_s = block(cin, cout, 1, "none")

    def forward(
        self,
        x: Tensor,
        cond: Sequence[Tensor | None] = (),
        norm_weights: Sequence[HyperWeight | None] = (None, None, None),
    ) -> Tensor:
        dx = self.conv_block_0(x, cond, norm_weights=norm_weights[0])
        dx = self.conv_block_1(dx, cond, norm_weights=norm_weights[1])
        if self.learn_shortcut:
            x = self.conv_block_s(x, cond, norm_weights=norm_weights[2])
        return x + dx


def _widths(num_filters: int, max_filters: int, n: int) -> list[int]:
    return [min(max_filters, num_filters * 2**i) for i in range(n)]


class LabelEmbedder(nn.Module):
    """Upstream's ``LabelEmbedder``: conv, ``num_downsamples`` stride-2 convs, then a decoder
    (nearest x2 upsample + conv; ``unet`` concatenates the encoder features). Returns the
    per-scale features finest first (``[up_0, ..., up_{n-1}, down_{n-1}]``). With
    ``num_hyper_layers`` the decoder convs ``up_i``, ``i < num_hyper_layers``, use generated
    weights. All convs 3x3, spectral norm, LeakyReLU, no activation norm."""

    def __init__(
        self,
        cin: int,
        unet: bool,
        num_filters: int = 32,
        num_downsamples: int = 5,
        num_hyper_layers: int = 0,
        max_filters: int = 1024,
    ) -> None:
        super().__init__()
        self.unet, self.n, self.num_hyper_layers = unet, num_downsamples, num_hyper_layers
        ch = _widths(num_filters, max_filters, num_downsamples + 1)

        def conv(a: int, b: int, stride: int = 1, hyper: bool = False) -> ConvBlock:
            return ConvBlock(a, b, 3, stride, 1, act="leakyrelu", sn=True, hyper=hyper)

        self.conv_first = conv(cin, num_filters)
        for i in range(num_downsamples):
            setattr(self, f"down_{i}", conv(ch[i], ch[i + 1], stride=2))
        self.upsample = nn.Upsample(scale_factor=2)
        for i in reversed(range(num_downsamples)):
            c = ch[i + 1] * (2 if unet and i != num_downsamples - 1 else 1)
            setattr(self, f"up_{i}", conv(c, ch[i], hyper=i < num_hyper_layers))

    def forward(self, x: Tensor, weights: Sequence[HyperWeight] | None = None) -> list[Tensor]:
        enc = [self.conv_first(x)]
        for i in range(self.n):
            enc.append(getattr(self, f"down_{i}")(enc[-1]))
        out = [enc[-1]]
        for i in reversed(range(self.n)):
            h = out[-1]
            if self.unet and i != self.n - 1:
                h = torch.cat([h, enc[i + 1]], dim=1)
            h = self.upsample(h)
            layer = getattr(self, f"up_{i}")
            hyper = i < self.num_hyper_layers
            out.append(layer(h, conv_weights=weights[i]) if hyper and weights else layer(h))
        return out[::-1]


class FlowGenerator(nn.Module):
    """Upstream's ``FlowGenerator``: ``cat(label, other labels, other images)`` -> 3x3 conv +
    3 stride-2 convs (instance norm, LeakyReLU, spectral norm), 6 residual blocks, 3 nearest
    x2 upsample + conv; heads ``flow = conv * 20`` (pixels) and ``mask = sigmoid(conv)``."""

    def __init__(
        self,
        cin: int,
        num_filters: int = 32,
        num_downsamples: int = 3,
        num_blocks: int = 6,
        multiplier: float = 20.0,
        max_filters: int = 1024,
    ) -> None:
        super().__init__()
        self.multiplier = multiplier
        ch = _widths(num_filters, max_filters, num_downsamples + 1)

        def conv(a: int, b: int, stride: int = 1) -> ConvBlock:
            return ConvBlock(a, b, 3, stride, 1, norm="instance", act="leakyrelu", sn=True)

        down = [conv(cin, num_filters)]
        down += [conv(ch[i], ch[i + 1], 2) for i in range(num_downsamples)]
        self.down_flow = nn.Sequential(*down)
        c = ch[num_downsamples]
        self.res_flow = nn.Sequential(*(ResBlock(c, c, "instance") for _ in range(num_blocks)))
        up: list[nn.Module] = []
        for i in reversed(range(num_downsamples)):
            up += [nn.Upsample(scale_factor=2), conv(ch[i + 1], ch[i])]
        self.up_flow = nn.Sequential(*up)
        self.conv_flow = nn.Sequential(ConvBlock(num_filters, 2, 3, padding=1))
        self.conv_mask = nn.Sequential(ConvBlock(num_filters, 1, 3, padding=1, act="sigmoid"))

    def forward(self, label: Tensor, other_label: Tensor, other_image: Tensor):  # noqa: ANN201
        """-> ``(flow (B,2,H,W) in pixels, occlusion mask (B,1,H,W) in (0, 1))``."""
        feat = self.res_flow(self.down_flow(torch.cat([label, other_label, other_image], 1)))
        feat = self.up_flow(feat)
        return self.conv_flow(feat) * self.multiplier, self.conv_mask(feat)


def resample(image: Tensor, flow: Tensor) -> Tensor:
    """Upstream's ``resample``: bilinear ``grid_sample`` (border, ``align_corners=True``) at
    the identity grid (``linspace(-1, 1)``) plus ``flow`` in pixels."""
    b, _, h, w = image.shape
    xs = torch.linspace(-1.0, 1.0, w, device=image.device).view(1, 1, 1, w).expand(b, 1, h, w)
    ys = torch.linspace(-1.0, 1.0, h, device=image.device).view(1, 1, h, 1).expand(b, 1, h, w)
    grid = torch.cat([xs, ys], dim=1)
    flow = torch.cat([flow[:, 0:1] / ((w - 1.0) / 2.0), flow[:, 1:2] / ((h - 1.0) / 2.0)], 1)
    return F.grid_sample(
        image,
        (grid + flow).permute(0, 2, 3, 1),
        mode="bilinear",
        padding_mode="border",
        align_corners=True,
    )


def concat_frames(prev: Tensor | None, now: Tensor, n_frames: int) -> Tensor:
    """Upstream's ``concat_frames``: append ``now (B,C,H,W)`` to ``prev (B,T,C,H,W)``,
    keeping the latest ``n_frames``."""
    now = now.unsqueeze(1)
    if prev is None:
        return now
    if prev.shape[1] == n_frames:
        prev = prev[:, 1:]
    return torch.cat([prev, now], dim=1)


def fold_spectral_norm(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """``X.weight_orig``/``X.weight_u``/``X.weight_v`` -> ``X.weight = W / (u . W_mat v)``,
    torch's ``spectral_norm`` in eval mode (stored vectors, no power iteration; ``dim=0``,
    as for the conv and linear layers here). Other entries are kept, in order."""
    out: dict[str, Tensor] = {}
    for key, value in state.items():
        if key.endswith(("weight_u", "weight_v")) and key[:-1] + "orig" in state:
            continue
        if key.endswith(".weight_orig") or key == "weight_orig":
            stem = key[: -len("_orig")]
            u, v = state.get(stem + "_u"), state.get(stem + "_v")
            if u is None or v is None:
                out[key] = value
                continue
            sigma = torch.dot(u, torch.mv(value.reshape(value.shape[0], -1), v))
            out[stem] = value / sigma
        else:
            out[key] = value
    return out
