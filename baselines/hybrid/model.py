"""The hybrid-latent model (Oorloff & Yacoob, ICCV 2023, Sec. 3): encoder E = (F, E_ID, E_F)
and a StyleGAN2 decoder G.

Latents of one frame ``I`` (Eq. 1) and generation (Eqs. 2-4)::

    W_ID = E_ID(F(I)) + latent_avg       (B, n_latent, style_dim)   W+ (18 x 512 at 1024^2)
    S_F  = E_F(F(I))                     n_sf tensors (B, dim_k)    StyleSpace offsets
    I    = G(A(W_ID) + S_F)                                         Eq. 2
    I^{S->D}      = G(A(W_ID^S) + S_F^D)                            Eq. 3
    I^{S->D}_edit = G(A(W_ID^S + W_edit) + S_F^D)                   Eq. 4

``A`` is G's per-layer affine (``G.styles``); ``+ S_F`` adds head ``k``'s output to style
vector ``sf_indices[k]`` and leaves every other style vector as ``A(W_ID)`` gives it.
With ``latent.hybrid = false`` (ablation "w/o Hybrid") E_F's heads output ``style_dim``
vectors that are added to W+ rows ``0 .. n_sf - 1`` before ``A`` instead.

Encoder layout (pSp's GradualStyleEncoder, Richardson et al. 2021):

- ``pyramid``: :class:`~reenactbench.nn.fpn.FeaturePyramid` (IR-SE50 + laterals, 512
  channels at input/16, /8, /4) or :class:`.tiny_pyramid.TinyPyramid` (tiny config).
- ``id_heads``: ``n_latent`` :class:`~reenactbench.nn.fpn.GradualStyleBlock` (map2style);
  head ``i`` predicts W+ row ``i`` from the coarse map if ``i < coarse_ind``, the medium
  map if ``i < middle_ind``, else the fine map (pSp).
- ``f_heads``: ``n_sf`` map2style blocks; head ``k`` outputs ``dim`` of StyleSpace layer
  ``sf_indices[k]`` (512 for the paper's layers; the tiny generator's layers have 512 or
  256 channels) and reads the pyramid level of that layer's W+ row by the same rule
  (``latent.sf_head_levels = "w-row"``), or the level the config lists.

Latent-average start (pSp/e4e ``--start_from_latent_avg``): ``latent_avg`` (G's mean W) is
added to the E_ID heads' output, so an untrained encoder already decodes near the average
face. It is a buffer of the model, stored in checkpoints.

Initialisation: the constructor draws every encoder weight from
``torch.Generator().manual_seed(cfg.train.seed)`` (torch's default scheme for the pyramid,
upstream's for the heads); :func:`build_model` then copies the IR-SE50 trunk from
``model_ir_se50.pth`` when ``encoder.init_irse50``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from itertools import chain
from pathlib import Path
from typing import cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from reenactbench.errors import InputError
from reenactbench.nn.fpn import FeaturePyramid, GradualStyleBlock, load_backbone_into
from reenactbench.nn.loading import few, safe_load
from reenactbench.nn.stylegan2 import LATENT_AVG_SAMPLES, Generator, NoiseMode, load_generator
from reenactbench.nn.stylespace import first_style_indices, style_layers

from .config import LEVELS, GeneratorCfg, HybridConfig
from .tiny_pyramid import TinyPyramid, reset_convs

__all__ = [
    "ENCODER_PREFIXES",
    "Latents",
    "HybridModel",
    "sf_indices_for",
    "sf_w_rows",
    "sf_head_levels",
    "id_head_levels",
    "make_generator",
    "build_model",
]

#: State-dict prefixes of the encoder E (what checkpoints store under ``"encoder"``).
ENCODER_PREFIXES = ("pyramid.", "id_heads.", "f_heads.")


@dataclass
class Latents:
    """Encoder outputs of B frames (Eq. 1).

    Attributes:
        w_id: ``(B, n_latent, style_dim)`` float32, W_ID in W+ (latent_avg included).
        s_f: ``n_sf`` tensors ``(B, dim_k)`` float32: StyleSpace offsets of the layers
            ``sf_indices`` (hybrid), or W+ offsets ``(B, style_dim)`` of rows 0..n_sf-1.
    """

    w_id: Tensor
    s_f: list[Tensor]

    def detach(self) -> Latents:
        """Same latents, detached from the graph."""
        return Latents(self.w_id.detach(), [s.detach() for s in self.s_f])

    def __len__(self) -> int:
        return int(self.w_id.shape[0])


def _n_latent(size: int) -> int:
    return 2 * (size.bit_length() - 1) - 2


def sf_indices_for(cfg: HybridConfig) -> tuple[int, ...]:
    """Where S_F goes: indices into ``G.styles()`` (hybrid; ``latent.sf_layers`` "conv" =
    the first ``n_sf`` conv layers, "forward" = the first ``n_sf`` layers in forward order
    including toRGB), or W+ rows ``0 .. n_sf - 1`` (``latent.hybrid = false``).

    At 1024^2 with ``n_sf = 10``: conv -> (0, 2, 3, 5, 6, 8, 9, 11, 12, 14), forward -> 0..9.
    """
    lat, g = cfg.latent, cfg.generator
    if not lat.hybrid:
        return tuple(range(lat.n_sf))
    layers = style_layers(g.size, g.channel_multiplier, g.max_channels)
    return tuple(first_style_indices(layers, lat.n_sf, include_torgb=lat.sf_layers == "forward"))


def sf_w_rows(cfg: HybridConfig) -> tuple[int, ...]:
    """W+ row of each S_F head's layer (the row itself with ``hybrid = false``)."""
    if not cfg.latent.hybrid:
        return sf_indices_for(cfg)
    g = cfg.generator
    layers = style_layers(g.size, g.channel_multiplier, g.max_channels)
    return tuple(layers[i].w_index for i in sf_indices_for(cfg))


def _level_of_row(row: int, cfg: HybridConfig) -> int:
    e = cfg.encoder
    return 0 if row < e.coarse_ind else 1 if row < e.middle_ind else 2


def id_head_levels(cfg: HybridConfig) -> tuple[int, ...]:
    """Pyramid level (0 coarse, 1 medium, 2 fine) of each E_ID head (pSp's rule)."""
    return tuple(_level_of_row(i, cfg) for i in range(_n_latent(cfg.generator.size)))


def sf_head_levels(cfg: HybridConfig) -> tuple[int, ...]:
    """Pyramid level of each E_F head: by its layer's W+ row (``"w-row"``) or as listed."""
    levels = cfg.latent.sf_head_levels
    if isinstance(levels, str):  # "w-row"
        return tuple(_level_of_row(r, cfg) for r in sf_w_rows(cfg))
    return tuple(LEVELS.index(v) for v in levels)


class HybridModel(nn.Module):
    """Encoder E (F, E_ID, E_F) plus generator G; see the module docstring.

    Args:
        cfg: the hybrid config.
        generator: G, matching ``cfg.generator`` (size, style_dim, n_mlp, channel
            multiplier); stored as ``.generator`` (a submodule).
        latent_avg: ``(style_dim,)`` mean W added to the E_ID heads (pSp/e4e). None: the
            mean of :data:`LATENT_AVG_SAMPLES` mapped z drawn from
            ``torch.Generator().manual_seed(cfg.generator.seed)``.
        init: draw the encoder weights from ``cfg.train.seed``. False leaves torch's
            default init (drawn inside ``fork_rng``, so the global RNG does not move), for
            loading a checkpoint next.

    Attributes:
        sf_indices: style-list indices (hybrid) or W+ rows (no-hybrid) of S_F.
        sf_dims: output dimension of each E_F head.
        input_size: encoder input side.
    """

    def __init__(
        self,
        cfg: HybridConfig,
        generator: Generator,
        latent_avg: Tensor | None = None,
        init: bool = True,
    ) -> None:
        super().__init__()
        g = cfg.generator
        got = (generator.size, generator.style_dim, generator.n_mlp, generator.channel_multiplier)
        want = (g.size, g.style_dim, g.n_mlp, g.channel_multiplier)
        if got != want:
            raise InputError(
                f"generator (size, style_dim, n_mlp, channel_multiplier) = {got} does not "
                f"match the hybrid config's [generator] {want}"
            )
        self.cfg = cfg
        self.input_size = cfg.encoder.input_size
        self.n_latent = generator.n_latent
        self.hybrid = cfg.latent.hybrid
        self.sf_indices: tuple[int, ...] = sf_indices_for(cfg)
        if self.hybrid:
            self.sf_dims = tuple(generator.style_layers[i].dim for i in self.sf_indices)
        else:
            self.sf_dims = (g.style_dim,) * len(self.sf_indices)
        self._id_levels = id_head_levels(cfg)
        self._sf_levels = sf_head_levels(cfg)

        enc = cfg.encoder
        sides = (self.input_size // 16, self.input_size // 8, self.input_size // 4)
        self.pyramid: FeaturePyramid | TinyPyramid
        with torch.random.fork_rng(devices=[]):  # torch's layer init must not move the global RNG
            if enc.backbone == "irse50":
                self.pyramid, width = FeaturePyramid(50, "ir_se"), 512
            else:
                self.pyramid, width = TinyPyramid(enc.tiny_channels), enc.tiny_channels
            self.id_heads = nn.ModuleList(
                GradualStyleBlock(width, g.style_dim, sides[lv]) for lv in self._id_levels
            )
            self.f_heads = nn.ModuleList(
                GradualStyleBlock(width, dim, sides[lv])
                for dim, lv in zip(self.sf_dims, self._sf_levels, strict=True)
            )
        self.generator = generator
        if latent_avg is None:
            with torch.no_grad():
                rng = torch.Generator().manual_seed(g.seed)
                latent_avg = generator.mean_latent(LATENT_AVG_SAMPLES, rng)
        if latent_avg.numel() != g.style_dim:
            raise InputError(
                f"latent_avg has {latent_avg.numel()} values, style_dim is {g.style_dim}"
            )
        self.latent_avg: Tensor
        self.register_buffer("latent_avg", latent_avg.detach().reshape(g.style_dim).float().clone())
        if init:
            self.reset_parameters(torch.Generator().manual_seed(cfg.train.seed))

    # --- parameters ---------------------------------------------------------------------

    def reset_parameters(self, rng: torch.Generator) -> HybridModel:
        """Draw the encoder's weights from ``rng``: pyramid convs (torch default scheme),
        then E_ID heads, then E_F heads (``GradualStyleBlock.reset_parameters``). G and
        ``latent_avg`` are untouched. Returns ``self``."""
        reset_convs(self.pyramid, rng)
        with torch.no_grad():
            for head in chain(self.id_heads, self.f_heads):
                cast(GradualStyleBlock, head).reset_parameters(rng)
        return self

    def encoder_parameters(self) -> Iterator[nn.Parameter]:
        """Parameters of E = F + E_ID + E_F (stage 1 trains these)."""
        return chain(self.pyramid.parameters(), self.head_parameters())

    def head_parameters(self) -> Iterator[nn.Parameter]:
        """Parameters of E_ID and E_F only (stage 2; F frozen)."""
        return chain(self.id_heads.parameters(), self.f_heads.parameters())

    def encoder_state_dict(self) -> dict[str, Tensor]:
        """``pyramid.*``, ``id_heads.*``, ``f_heads.*`` tensors (checkpoint ``"encoder"``)."""
        return {k: v for k, v in self.state_dict().items() if k.startswith(ENCODER_PREFIXES)}

    def load_encoder_state_dict(self, state: Mapping[str, Tensor], source: str) -> None:
        """Load E strictly.

        Raises:
            InputError: missing / unexpected keys or shape mismatch (names ``source``).
        """
        own = self.encoder_state_dict()
        missing = [k for k in own if k not in state]
        extra = sorted(k for k in state if k not in own)
        shapes = [
            f"{k} {tuple(state[k].shape)} != {tuple(own[k].shape)}"
            for k in own
            if k in state and tuple(state[k].shape) != tuple(own[k].shape)
        ]
        found = (("missing keys", missing), ("unexpected keys", extra), ("shape mismatch", shapes))
        problems = [f"{what} {few(keys)}" for what, keys in found if keys]
        if problems:
            raise InputError(f"{source}: encoder does not match its config: " + "; ".join(problems))
        full = self.state_dict()
        full.update(state)
        self.load_state_dict(full, strict=True)

    # --- inputs -------------------------------------------------------------------------

    @property
    def device(self) -> torch.device:
        return self.latent_avg.device

    def preprocess(self, frames: Tensor | np.ndarray) -> Tensor:
        """Frames to encoder input.

        Args:
            frames: ``(B, H, W, 3) uint8`` RGB (tensor or array), any H, W.

        Returns:
            ``(B, 3, input_size, input_size) float32`` in [-1, 1] on the model's device:
            bilinear resize with antialiasing (``F.interpolate(..., antialias=True)``,
            skipped when already that size), then ``x / 127.5 - 1``.
        """
        if isinstance(frames, np.ndarray):  # a writable copy: inputs may be read-only
            x = torch.from_numpy(np.array(frames, order="C", copy=True))
        else:
            x = frames
        if x.dtype != torch.uint8 or x.ndim != 4 or x.shape[-1] != 3:
            raise InputError(
                f"frames must be (B, H, W, 3) uint8 RGB, got {tuple(x.shape)} {x.dtype}"
            )
        x = x.to(self.device).permute(0, 3, 1, 2).float()
        size = self.input_size
        if tuple(x.shape[-2:]) != (size, size):
            x = F.interpolate(
                x, size=(size, size), mode="bilinear", antialias=True, align_corners=False
            )
        return x / 127.5 - 1

    # --- Eq. 1 --------------------------------------------------------------------------

    def encode(self, x: Tensor) -> Latents:
        """Eq. 1: ``(B, 3, input_size, input_size)`` float32 in [-1, 1] -> :class:`Latents`."""
        if x.ndim != 4 or tuple(x.shape[1:]) != (3, self.input_size, self.input_size):
            raise ValueError(
                f"encoder input must be (B, 3, {self.input_size}, {self.input_size}), "
                f"got {tuple(x.shape)} (use preprocess)"
            )
        maps = self.pyramid.pyramid(x)
        w_id = torch.stack(
            [head(maps[lv]) for head, lv in zip(self.id_heads, self._id_levels, strict=True)], 1
        )
        s_f = [head(maps[lv]) for head, lv in zip(self.f_heads, self._sf_levels, strict=True)]
        return Latents(w_id + self.latent_avg, s_f)

    def forward(self, x: Tensor) -> Latents:
        """Same as :meth:`encode`."""
        return self.encode(x)

    # --- Eqs. 2-4 -----------------------------------------------------------------------

    def styles_for(self, w_id: Tensor, s_f: Sequence[Tensor] | None) -> list[Tensor]:
        """StyleSpace input of G: ``A(W_ID) + S_F`` (Eq. 2).

        Args:
            w_id: ``(B or 1, n_latent, style_dim)``.
            s_f: ``n_sf`` tensors ``(B or 1, dim_k)``, or None for ``A(W_ID)`` alone. A
                batch of 1 on either side is broadcast to the other's batch.

        Returns:
            ``len(G.style_layers)`` tensors ``(B, dim_k)`` in forward order. Hybrid: entry
            ``sf_indices[k]`` is ``A(W_ID)[..] + s_f[k]``, every other entry is exactly
            ``A(W_ID)``'s. No-hybrid: ``A(W_ID + offsets)``, offsets ``s_f[k]`` on row ``k``.
        """
        G = self.generator
        if s_f is None:
            return G.styles(w_id)
        if len(s_f) != len(self.sf_indices):
            raise ValueError(f"expected {len(self.sf_indices)} S_F tensors, got {len(s_f)}")
        batch = max(w_id.shape[0], *(s.shape[0] for s in s_f))
        w_id = w_id.expand(batch, -1, -1) if w_id.shape[0] == 1 else w_id
        s_f = [s.expand(batch, -1) if s.shape[0] == 1 else s for s in s_f]
        if self.hybrid:
            styles = G.styles(w_id)
            for k, idx in enumerate(self.sf_indices):
                styles[idx] = styles[idx] + s_f[k]
            return styles
        n = len(self.sf_indices)
        w = torch.cat([w_id[:, :n] + torch.stack(list(s_f), 1), w_id[:, n:]], 1)
        return G.styles(w)

    def generate(
        self,
        w_id: Tensor,
        s_f: Sequence[Tensor] | None = None,
        noise: NoiseMode = "const",
        edit: Tensor | None = None,
        noise_rng: torch.Generator | None = None,
    ) -> Tensor:
        """``G(A(W_ID + edit) + S_F)`` (Eqs. 2-4).

        Args:
            w_id, s_f: see :meth:`styles_for`.
            noise: G's noise mode (``"const"``: its stored maps, deterministic).
            edit: W+ offset ``(n_latent, style_dim)`` or ``(B or 1, n_latent, style_dim)``
                added to ``w_id`` before ``A`` (Eq. 4's ``W_edit``); None = no edit.
            noise_rng: RNG for ``noise="random"``.

        Returns:
            ``(B, 3, size, size)`` float32 RGB, about [-1, 1] (not clamped).
        """
        if edit is not None:
            w_id = w_id + edit.to(w_id)
        styles = self.styles_for(w_id, s_f)
        return self.generator.synthesis_from_styles(styles, noise=noise, generator=noise_rng)

    def reenact(
        self,
        src_latents: Latents,
        drv_latents: Latents,
        noise: NoiseMode = "const",
        edit: Tensor | None = None,
    ) -> Tensor:
        """Eq. 3 (Eq. 4 with ``edit``): ``G(A(W_ID^S) + S_F^D)``; only ``src.w_id`` and
        ``drv.s_f`` are read. A one-frame source is broadcast over the driving batch.
        Returns ``(B, 3, size, size)`` float32 about [-1, 1]."""
        return self.generate(src_latents.w_id, drv_latents.s_f, noise=noise, edit=edit)


# --- construction ---------------------------------------------------------------------------


def make_generator(
    gcfg: GeneratorCfg, device: str | torch.device = "cpu", path: Path | str | None = None
) -> tuple[Generator, Tensor]:
    """G and its ``latent_avg`` for a ``[generator]`` section, in eval mode without grads.

    ``weights = "seeded"``: ``Generator(...).reset_parameters(torch.Generator().manual_seed(
    seed))`` and the mean W of :data:`LATENT_AVG_SAMPLES` z drawn from a second generator
    seeded the same. ``"stylegan2-ffhq"``: :func:`~reenactbench.nn.stylegan2.load_generator`
    of ``path`` (default: the weight cache).

    Raises:
        WeightsMissing: the stylegan2-ffhq file is not there.
        InputError: the file's architecture differs from ``gcfg``.
    """
    if gcfg.weights == "seeded":
        G = Generator(
            gcfg.size, gcfg.style_dim, gcfg.n_mlp, gcfg.channel_multiplier,
            max_channels=gcfg.max_channels,
        )  # fmt: skip
        G.reset_parameters(torch.Generator().manual_seed(gcfg.seed))
        G = G.eval().requires_grad_(False).to(device)
        with torch.no_grad():
            avg = G.mean_latent(LATENT_AVG_SAMPLES, torch.Generator().manual_seed(gcfg.seed))
        return G, avg
    if path is None:
        from reenactbench.weights import weight_path

        path = weight_path(gcfg.weights)
    G, avg = load_generator(path, device, size=gcfg.size)
    got = (G.style_dim, G.n_mlp, G.channel_multiplier)
    want = (gcfg.style_dim, gcfg.n_mlp, gcfg.channel_multiplier)
    if got != want:
        raise InputError(
            f"{path}: generator (style_dim, n_mlp, channel_multiplier) = {got}, the hybrid "
            f"config says {want}"
        )
    return G, avg


def build_model(
    cfg: HybridConfig,
    device: str | torch.device = "cpu",
    weights: Mapping[str, Path] | None = None,
) -> HybridModel:
    """A fresh (untrained) model for training: G from ``cfg.generator``, encoder drawn
    from ``cfg.train.seed``, IR-SE50 trunk from ``model_ir_se50.pth`` when
    ``encoder.init_irse50`` (pSp/e4e).

    Args:
        cfg: the config.
        device: torch device.
        weights: weight name -> file overrides (``"stylegan2-ffhq"``, ``"ir-se50"``).

    Raises:
        WeightsMissing: a needed weight file is absent (``ir-se50`` or ``stylegan2-ffhq``).
        InputError: a weight file of the wrong layout (names the file).
    """
    from reenactbench.weights import weight_path

    gen_path = None  # look both files up before building anything (fail fast)
    if cfg.generator.weights != "seeded":
        gen_path = weight_path(cfg.generator.weights, weights)
    path = weight_path("ir-se50", weights) if cfg.encoder.init_irse50 else None
    G, avg = make_generator(cfg.generator, "cpu", gen_path)
    model = HybridModel(cfg, G, avg)
    if path is not None:
        state = safe_load(path, "ir-se50 weight file (model_ir_se50.pth)")
        if not isinstance(state, Mapping):
            raise InputError(f"{path}: expected the model_ir_se50.pth state dict")
        load_backbone_into(model.pyramid, state, source=str(path))  # type: ignore[arg-type]
    return model.to(device)
