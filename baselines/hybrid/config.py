"""Configuration of the hybrid-latent method (Oorloff & Yacoob, ICCV 2023): TOML <-> dataclasses.

A config is a TOML file with seven sections, each a frozen dataclass below; every key has
a default, unknown sections or keys are an error, and so is a value of the wrong type.
Two configs ship with the package (``baselines/hybrid/configs/``, found with
``importlib.resources``):

- ``paper``: the paper's setting, a 1024^2 FFHQ StyleGAN2 (config-f), IR-SE50 encoder on
  256^2 inputs (pSp), 18 W+ rows, S_F on 10 StyleSpace layers.
- ``tiny``: a toy for tests and the CPU demo, a *seeded random* 64^2 generator
  (style_dim 64, 2 mapping layers, channel multiplier 1) and a 4-conv encoder on 64^2
  inputs. Its numbers say nothing about the paper's model.

Where a default comes from (the paper leaves loss weights, learning rates, head splits,
CMA and PTI settings out; ``/work/shared/paper-notes.md``) is written next to each field:
*paper* (Sec. 3 / 4 of the paper), *pSp* (Richardson et al. 2021, ``options/train_options.py``),
*e4e* (Tov et al. 2021, ``options/train_options.py``), *PTI* (Roich et al. 2022,
``configs/hyperparameters.py``), *StyleSpace* (Wu et al. 2021).
"""

from __future__ import annotations

import dataclasses
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from importlib.resources import files
from pathlib import Path
from typing import Any, Literal

from reenactbench.errors import InputError
from reenactbench.nn.stylespace import first_style_indices, style_layers

__all__ = [
    "GeneratorCfg",
    "EncoderCfg",
    "LatentCfg",
    "LossWeights",
    "TrainCfg",
    "CMACfg",
    "PTICfg",
    "HybridConfig",
    "CONFIG_NAMES",
    "LEVELS",
    "config_path",
    "load_config",
    "config_from_dict",
    "config_to_dict",
]

#: Names of the configs shipped in ``baselines/hybrid/configs/``.
CONFIG_NAMES = ("paper", "tiny")
#: Pyramid levels, in the order of ``pyramid(x)``'s outputs.
LEVELS = ("coarse", "medium", "fine")


@dataclass(frozen=True)
class GeneratorCfg:
    """``[generator]``: the StyleGAN2 decoder G (rosinality layout)."""

    size: int = 1024  # output side; paper: 1024 (FFHQ config-f)
    style_dim: int = 512  # W dimension; StyleGAN2: 512
    n_mlp: int = 8  # mapping layers; StyleGAN2: 8
    channel_multiplier: int = 2  # StyleGAN2 config-f: 2
    # "stylegan2-ffhq" (weight registry name, loaded from the weight cache) or "seeded":
    # Generator.reset_parameters(torch.Generator().manual_seed(seed)) (toy config only)
    weights: str = "stylegan2-ffhq"
    seed: int = 0  # seed of the "seeded" generator and of its latent_avg samples
    # > 0 caps every layer's channels (toy configs: a narrow random G that trains on a CPU);
    # 0 = rosinality's table (required for real checkpoints)
    max_channels: int = 0


@dataclass(frozen=True)
class EncoderCfg:
    """``[encoder]``: feature network F and the map2style heads."""

    backbone: Literal["irse50", "tiny"] = "irse50"  # paper Sec. 3.1: ResNet50-SE + FPN (pSp)
    input_size: int = 256  # encoder input side; pSp: 256 (frames resized antialiased)
    tiny_channels: int = 32  # channels of TinyPyramid (backbone "tiny" only)
    init_irse50: bool = True  # trunk from model_ir_se50.pth, as pSp/e4e
    coarse_ind: int = 3  # W+ rows < 3 read the coarse map; pSp's coarse_ind
    middle_ind: int = 7  # W+ rows < 7 read the medium map, the rest fine; pSp's middle_ind


@dataclass(frozen=True)
class LatentCfg:
    """``[latent]``: where S_F lives (paper Eqs. 1-4)."""

    # which StyleSpace layers form S_F ("the first 10 SS layers", paper Sec. 3): "conv" =
    # the first n_sf conv layers (conv1, convs.0-8 at 1024^2: W+ rows 0-9, up to 128^2;
    # StyleSpace analyses the conv channels), "forward" = the first n_sf in forward order
    # including toRGB (indices 0-9: W+ rows 0-6, up to 32^2). Both are 10 x 512 at 1024^2.
    sf_layers: Literal["conv", "forward"] = "conv"
    n_sf: int = 10  # paper: 10 heads in E_F
    sf_mode: Literal["add"] = "add"  # paper Eqs. 2/3: A(W_ID) + S_F ("additive latent")
    # false = ablation "w/o Hybrid" (Tables 1-2): E_F predicts W+ offsets for rows 0..n_sf-1
    hybrid: bool = True
    # pyramid level each E_F head reads: "w-row" (by the W+ row of its layer, with
    # coarse_ind / middle_ind, as pSp's heads), or n_sf names from LEVELS
    sf_head_levels: str | tuple[str, ...] = "w-row"


@dataclass(frozen=True)
class LossWeights:
    """``[loss]``: the lambdas of Eq. 14 and Eq. 7 (values not in the paper)."""

    l2: float = 1.0  # lambda_L2, Eq. 7; pSp l2_lambda 1.0
    lpips: float = 0.8  # lambda_LPIPS, Eq. 7; pSp lpips_lambda 0.8
    gv: float = 0.5  # lambda_GV, Eq. 7 (gradient variance loss; no reference value)
    id: float = 0.1  # lambda_id, Eqs. 8-9; pSp id_lambda 0.1 (e4e: 0.1 on faces)
    w_id: float = 0.5  # lambda_w_id, Eq. 10 (no reference value)
    reg: float = 1e-4  # lambda_reg, Eqs. 11-12; e4e delta_norm_lambda 2e-4 scale
    lambda_s: float = 1.0  # lambda_S, Eq. 12 (1 : lambda_S ratio of the two terms)
    feat: float = 0.5  # lambda_f, Eq. 13 (no reference value)
    adv: float = 0.1  # lambda_d, latent discriminator; e4e w_discriminator_lambda 0.1
    r1: float = 10.0  # R1 weight of the latent discriminator; e4e r1 10
    idreg: bool = True  # false = ablation "w/o ID reg": drop Eq. 9's cross-identity term


@dataclass(frozen=True)
class TrainCfg:
    """``[train]``: two-stage training (paper Sec. 4)."""

    batch: int = 8  # pSp batch_size 8
    lr: float = 1e-4  # stage 1; pSp / e4e learning_rate 1e-4 (Ranger)
    lr_finetune: float = 1e-5  # stage 2 ("reduced learning rate", paper Sec. 4)
    iters_stage1: int = 200_000  # paper Sec. 4: 200K
    iters_stage2: int = 20_000  # paper Sec. 4: 20K
    d_lr: float = 2e-5  # latent discriminator; e4e w_discriminator_lr 2e-5
    log_every: int = 50
    ckpt_every: int = 5000  # pSp save_interval
    sample_every: int = 1000  # pSp image_interval 100 (sparser here)
    amp: Literal["bf16", "fp16", "none"] = "bf16"  # autocast on GPU; CPU runs fp32
    seed: int = 0  # training RNG and the encoder's initialisation
    frames_per_video: int = 50  # paper Sec. 4: 50 samples per video


@dataclass(frozen=True)
class CMACfg:
    """``[cma]``: Cyclic Manifold Adjustment (paper Sec. 3.3, Eqs. 15-18)."""

    steps: int = 50  # optimiser steps per video (no reference value; PTI uses 350)
    lr: float = 3e-4  # PTI first_inv_lr / pti_learning_rate 3e-4
    layers: str | tuple[str, ...] = "all"  # "all" (PTI), "synthesis", or module prefixes
    batch: int = 4  # driving frames per step
    # driving frames CMA adjusts to: 0 = the whole clip (the paper adjusts G to the latent
    # space the sequence spans); N > 0 = N frames evenly spaced across it
    frames: int = 0
    lambda_lpips: float = 1.0  # PTI pt_lpips_lambda 1
    lambda_l2: float = 1.0  # PTI pt_l2_lambda 1


@dataclass(frozen=True)
class PTICfg:
    """``[pti]``: Pivotal Tuning Inversion on the source (ablation "w/ PTI")."""

    steps: int = 350  # PTI max_pti_steps 350
    lr: float = 3e-4  # PTI pti_learning_rate 3e-4


@dataclass(frozen=True)
class HybridConfig:
    """The whole config. ``asdict(cfg)`` is what checkpoints store under ``"config"``."""

    generator: GeneratorCfg = field(default_factory=GeneratorCfg)
    encoder: EncoderCfg = field(default_factory=EncoderCfg)
    latent: LatentCfg = field(default_factory=LatentCfg)
    loss: LossWeights = field(default_factory=LossWeights)
    train: TrainCfg = field(default_factory=TrainCfg)
    cma: CMACfg = field(default_factory=CMACfg)
    pti: PTICfg = field(default_factory=PTICfg)

    def __post_init__(self) -> None:
        _validate(self)


_SECTIONS: dict[str, type] = {
    f.name: f.default_factory  # type: ignore[misc]
    for f in dataclasses.fields(HybridConfig)
}


def config_path(name: str) -> Path:
    """The shipped TOML of ``name`` (one of :data:`CONFIG_NAMES`)."""
    if name not in CONFIG_NAMES:
        raise InputError(f"unknown hybrid config {name!r}; use one of {CONFIG_NAMES} or a path")
    return Path(str(files("reenactbench.baselines.hybrid") / "configs" / f"{name}.toml"))


def load_config(path_or_name: str | Path) -> HybridConfig:
    """Read a config: ``"paper"``, ``"tiny"`` or a path to a TOML file.

    Raises:
        InputError: unreadable file, bad TOML, unknown section/key, wrong type, or an
            inconsistent value; the message names the file.
    """
    if isinstance(path_or_name, str) and path_or_name in CONFIG_NAMES:
        path = config_path(path_or_name)
    else:
        path = Path(path_or_name)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise InputError(
            f"{path}: cannot read the hybrid config ({e.strerror}); give a TOML file or "
            f"one of {', '.join(CONFIG_NAMES)}"
        ) from None
    except tomllib.TOMLDecodeError as e:
        raise InputError(f"{path}: not valid TOML ({e})") from None
    return config_from_dict(data, str(path))


def config_to_dict(cfg: HybridConfig) -> dict[str, dict[str, Any]]:
    """``asdict(cfg)``: plain dicts of str/int/float/bool/tuple (torch-loadable safely)."""
    return asdict(cfg)


def config_from_dict(data: Mapping[str, Any], source: str = "config") -> HybridConfig:
    """Inverse of :func:`config_to_dict` (also reads parsed TOML); missing keys take the
    defaults, lists become tuples.

    Raises:
        InputError: unknown section/key, wrong type or bad value (names ``source``).
    """
    if not isinstance(data, Mapping):
        raise InputError(f"{source}: hybrid config must be a table, got {type(data).__name__}")
    unknown = sorted(set(data) - set(_SECTIONS))
    if unknown:
        raise InputError(f"{source}: unknown section(s) {unknown}; known: {', '.join(_SECTIONS)}")
    sections: dict[str, Any] = {}
    for name, cls in _SECTIONS.items():
        table = data.get(name, {})
        if not isinstance(table, Mapping):
            raise InputError(f"{source}: [{name}] must be a table")
        sections[name] = _section(cls, table, f"{source}: [{name}]")
    try:
        return HybridConfig(**sections)
    except ValueError as e:
        raise InputError(f"{source}: {e}") from None


def _section(cls: type, table: Mapping[str, Any], where: str) -> Any:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(table) - set(names))
    if unknown:
        raise InputError(f"{where}: unknown key(s) {unknown}; known: {', '.join(names)}")
    values = {}
    for key, value in table.items():
        values[key] = _coerce(value, hints[key], f"{where} {key}")
    return cls(**values)


def _coerce(value: Any, hint: Any, where: str) -> Any:
    """``value`` checked against a field type (int, float, bool, str, Literal, tuple[str,
    ...] and unions of these); lists become tuples; ints are accepted for floats."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        for option in typing.get_args(hint):
            try:
                return _coerce(value, option, where)
            except InputError:
                continue
        raise InputError(f"{where}: {value!r} is not {_describe(hint)}")
    if origin is Literal:
        if value in typing.get_args(hint) and type(value) is not bool:
            return value
        raise InputError(f"{where}: {value!r} is not one of {list(typing.get_args(hint))}")
    if origin is tuple:
        (item,) = {a for a in typing.get_args(hint) if a is not Ellipsis}
        if not isinstance(value, list | tuple):
            raise InputError(f"{where}: {value!r} is not a list of {item.__name__}")
        return tuple(_coerce(v, item, where) for v in value)
    if hint is bool:
        if isinstance(value, bool):
            return value
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif hint is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    elif hint is str:
        if isinstance(value, str):
            return value
    raise InputError(f"{where}: {value!r} is not {_describe(hint)}")


def _describe(hint: Any) -> str:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in typing.get_args(hint))
    if origin is Literal:
        return "one of " + str(list(typing.get_args(hint)))
    if origin is tuple:
        return "a list"
    return getattr(hint, "__name__", str(hint))


def _validate(cfg: HybridConfig) -> None:
    """Cross-field checks; ValueError (turned into InputError by the readers)."""
    g, e, lat = cfg.generator, cfg.encoder, cfg.latent
    if g.weights not in ("stylegan2-ffhq", "seeded"):
        raise ValueError(
            f'generator.weights must be "stylegan2-ffhq" or "seeded", got {g.weights!r}'
        )
    if g.size < 8 or g.size > 1024 or g.size & (g.size - 1):
        raise ValueError(f"generator.size must be a power of 2 in 8..1024, got {g.size}")
    for name in ("style_dim", "n_mlp", "channel_multiplier"):
        if getattr(g, name) < 1:
            raise ValueError(f"generator.{name} must be >= 1, got {getattr(g, name)}")
    if e.input_size < 32 or e.input_size % 32:
        raise ValueError(f"encoder.input_size must be a multiple of 32, got {e.input_size}")
    if e.backbone == "tiny" and e.init_irse50:
        raise ValueError('encoder.init_irse50 = true needs backbone = "irse50"')
    if e.tiny_channels < 1:
        raise ValueError(f"encoder.tiny_channels must be >= 1, got {e.tiny_channels}")
    n_latent = 2 * (g.size.bit_length() - 1) - 2
    if not 0 <= e.coarse_ind <= e.middle_ind <= n_latent:
        raise ValueError(
            f"need 0 <= encoder.coarse_ind <= encoder.middle_ind <= {n_latent} (W+ rows), "
            f"got {e.coarse_ind}, {e.middle_ind}"
        )
    if lat.n_sf < 1:
        raise ValueError(f"latent.n_sf must be >= 1, got {lat.n_sf}")
    if lat.hybrid:  # enough StyleSpace layers of the chosen kind
        layers_g = style_layers(g.size, g.channel_multiplier, g.max_channels)
        first_style_indices(layers_g, lat.n_sf, include_torgb=lat.sf_layers == "forward")
    if not lat.hybrid and lat.n_sf > n_latent:
        raise ValueError(f"latent.n_sf = {lat.n_sf} exceeds the {n_latent} W+ rows")
    levels = lat.sf_head_levels
    if isinstance(levels, str):
        if levels != "w-row":
            raise ValueError(f'latent.sf_head_levels must be "w-row" or a list, got {levels!r}')
    elif len(levels) != lat.n_sf or any(v not in LEVELS for v in levels):
        raise ValueError(
            f"latent.sf_head_levels must list {lat.n_sf} of {LEVELS}, got {list(levels)}"
        )
    if cfg.cma.frames < 0:
        raise ValueError(f"cma.frames must be >= 0 (0: the whole clip), got {cfg.cma.frames}")
    layers = cfg.cma.layers
    if isinstance(layers, str) and layers not in ("all", "synthesis"):
        raise ValueError(f'cma.layers must be "all", "synthesis" or a list, got {layers!r}')
