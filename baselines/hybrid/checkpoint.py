"""Hybrid checkpoints (``hybrid-hdtf.pt`` and training snapshots): save and strict load.

File format: one ``torch.save`` dict of tensors and plain values, readable with
``torch.load(weights_only=True)``::

    {
      "format": "reenactbench-hybrid/1",
      "config": asdict(HybridConfig),          # nested dicts of str/int/float/bool/tuple
      "encoder": {pyramid.*, id_heads.*, f_heads.*: Tensor},
      "generator": G.state_dict(),              # only for generator.weights == "seeded";
                                                # otherwise G is the stylegan2-ffhq weight
      "latent_avg": Tensor (style_dim,),
      "step": int, "stage": int,                # training progress (1 or 2)
      "train": {...},                            # optional: optimiser / RNG state for resume
      "training_data": [                         # optional: the data of every stage so far
        {"stage": int, "data": str, "data_fingerprint": str, "videos": [str, ...],
         "protocol": str | None, "protocol_sha256": str, "split": {...} | "none",
         "allow_test_identities": bool, "test_identity_videos": [str, ...]},
      ],
    }

``training_data`` is written by training (``pairs.TrainingSplit.record``; a stage-2
checkpoint carries its stage-1 record too, since F was trained there) and read without
the weights by :func:`read_training_data` / :func:`training_videos`, which
``reenactbench run`` uses to warn when a checkpoint was trained on a video it evaluates.

A CMA- or PTI-tuned G is never saved: both run per video at inference.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from reenactbench.errors import InputError
from reenactbench.nn.loading import safe_load, save_atomic
from reenactbench.nn.stylegan2 import Generator

from .config import HybridConfig, config_from_dict, config_to_dict
from .model import HybridModel, make_generator

__all__ = [
    "FORMAT",
    "save_checkpoint",
    "read_checkpoint",
    "read_config",
    "read_training_data",
    "training_videos",
    "load_hybrid",
]

FORMAT = "reenactbench-hybrid/1"
_REQUIRED = ("format", "config", "encoder", "latent_avg", "step", "stage")
_OPTIONAL = ("generator", "train", "training_data")


def save_checkpoint(
    path: Path | str,
    model: HybridModel,
    step: int = 0,
    stage: int = 1,
    train: Mapping[str, Any] | None = None,
    training_data: Sequence[Mapping[str, Any]] | None = None,
) -> Path:
    """Write ``model`` (see the module docstring) atomically: temp file, then rename.

    Args:
        path: destination file.
        model: the model; tensors are saved on CPU.
        step, stage: training progress.
        train: extra state for resuming (optimiser state dicts, RNG states); must be
            torch-loadable with ``weights_only=True``.
        training_data: per-stage records of the training videos and split (see the
            module docstring); plain values only.

    Returns:
        ``path``.
    """
    path = Path(path)
    cfg = model.cfg
    ckpt: dict[str, Any] = {
        "format": FORMAT,
        "config": config_to_dict(cfg),
        "encoder": {k: v.detach().cpu() for k, v in model.encoder_state_dict().items()},
        "latent_avg": model.latent_avg.detach().cpu(),
        "step": int(step),
        "stage": int(stage),
    }
    if cfg.generator.weights == "seeded":
        ckpt["generator"] = {k: v.detach().cpu() for k, v in model.generator.state_dict().items()}
    if train is not None:
        ckpt["train"] = dict(train)
    if training_data is not None:
        ckpt["training_data"] = [dict(r) for r in training_data]
    return save_atomic(path, ckpt)


def read_checkpoint(path: Path | str) -> dict[str, Any]:
    """The raw checkpoint dict, checked for its keys (tensors on CPU, memory-mapped: a
    tensor is read from disk when first used).

    Raises:
        InputError: unreadable file, not a hybrid checkpoint, missing / unknown keys.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such hybrid checkpoint (train one: docs/hybrid.md)")
    ckpt = safe_load(path, "reenactbench hybrid checkpoint", mmap=True)
    if not isinstance(ckpt, Mapping) or ckpt.get("format") != FORMAT:
        raise InputError(
            f"{path}: not a reenactbench hybrid checkpoint (no 'format': {FORMAT!r}); "
            "save it with baselines.hybrid.checkpoint.save_checkpoint"
        )
    missing = [k for k in _REQUIRED if k not in ckpt]
    unknown = sorted(k for k in ckpt if k not in _REQUIRED + _OPTIONAL)
    if missing or unknown:
        what = f"missing {missing}" if missing else f"unknown keys {unknown}"
        raise InputError(f"{path}: hybrid checkpoint has {what}")
    return dict(ckpt)


def read_config(path: Path | str) -> HybridConfig:
    """The config stored in a checkpoint, without building the model.

    Raises:
        InputError: see :func:`read_checkpoint`, or a bad config (names ``path``).
    """
    return config_from_dict(read_checkpoint(path)["config"], f"{path} (config)")


def read_training_data(path: Path | str) -> list[dict[str, Any]] | None:
    """The checkpoint's ``training_data`` records (one per stage trained), without
    building the model (tensors stay memory-mapped, unread); ``None`` when the
    checkpoint does not record its data (saved outside training, or by an older version).

    Raises:
        InputError: see :func:`read_checkpoint`, or a malformed ``training_data``.
    """
    records = read_checkpoint(path).get("training_data")
    if records is None:
        return None
    ok = isinstance(records, list) and all(
        isinstance(r, Mapping) and isinstance(r.get("videos"), list | None) for r in records
    )
    if not ok:
        raise InputError(f"{path}: 'training_data' must be a list of records with 'videos'")
    return [dict(r) for r in records]


def training_videos(path: Path | str) -> frozenset[str] | None:
    """Names of every video any stage of the checkpoint was trained on, or ``None`` when
    not recorded (see :func:`read_training_data`; a stage recorded without its list,
    ``videos = None``, adds nothing)."""
    records = read_training_data(path)
    if records is None:
        return None
    return frozenset(str(v) for r in records for v in r["videos"] or ())


def load_hybrid(
    path: Path | str,
    device: str | torch.device = "cpu",
    generator_path: Path | str | None = None,
) -> HybridModel:
    """Load a hybrid checkpoint strictly, in eval mode without gradients.

    Args:
        path: the checkpoint (e.g. ``weight_path("hybrid-hdtf")``).
        device: torch device.
        generator_path: the stylegan2-ffhq file for checkpoints that do not carry G
            (default: the weight cache); ignored for seeded generators.

    Raises:
        InputError: unreadable or malformed file, a config with unknown keys, or any
            key/shape mismatch of the encoder or generator; the message names ``path``.
        WeightsMissing: the checkpoint needs stylegan2-ffhq and it is absent.
    """
    path = Path(path)
    ckpt = read_checkpoint(path)
    cfg = config_from_dict(ckpt["config"], f"{path} (config)")
    has_g = "generator" in ckpt
    if has_g != (cfg.generator.weights == "seeded"):
        raise InputError(
            f"{path}: 'generator' must be stored exactly when generator.weights is 'seeded' "
            f"(weights = {cfg.generator.weights!r}, stored: {has_g})"
        )
    avg = ckpt["latent_avg"]
    if not isinstance(avg, Tensor) or avg.numel() != cfg.generator.style_dim:
        raise InputError(f"{path}: latent_avg must have {cfg.generator.style_dim} values")
    if has_g:
        g = cfg.generator
        G = Generator(
            g.size, g.style_dim, g.n_mlp, g.channel_multiplier, max_channels=g.max_channels
        )  # zeros until loaded
        _load_strict(G, ckpt["generator"], f"{path} (generator)")
        G = G.eval().requires_grad_(False)
    else:
        G, _ = make_generator(cfg.generator, "cpu", generator_path)
    model = HybridModel(cfg, G, avg, init=False)
    encoder = ckpt["encoder"]
    if not isinstance(encoder, Mapping):
        raise InputError(f"{path}: 'encoder' must be a state dict")
    model.load_encoder_state_dict(encoder, str(path))
    return model.eval().requires_grad_(False).to(device)


def _load_strict(net: torch.nn.Module, state: object, source: str) -> None:
    if not isinstance(state, Mapping):
        raise InputError(f"{source}: must be a state dict")
    own = net.state_dict()
    missing = sorted(set(own) - set(state))
    extra = sorted(set(state) - set(own))
    shapes = sorted(k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape))
    if missing or extra or shapes:
        what = "; ".join(
            f"{name} {keys[:4]}"
            for name, keys in (("missing", missing), ("unexpected", extra), ("shape", shapes))
            if keys
        )
        raise InputError(f"{source}: does not match the config's architecture: {what}")
    net.load_state_dict(state, strict=True)
