"""The files that let hybrid training stop and go on: the stage checkpoints
(``stage{1,2}.pt``, :mod:`.checkpoint`) and ``train_state.pt`` (optimisers,
discriminator, sampler, RNG and log accumulators of the latest checkpoint), so that
``resume=True`` continues bit-identically on CPU. Also where stage 2 and a resume read
their encoder from, and the ``training_data`` records a checkpoint carries.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import nn

from reenactbench.errors import InputError
from reenactbench.nn.loading import safe_load, save_atomic

from .config import HybridConfig
from .pairs import PairSampler, TrainingSplit
from .train_log import Accumulator
from .train_step import Run

__all__ = [
    "STATE_FILE",
    "checkpoint_name",
    "load_encoder",
    "prior_state",
    "restore",
    "save",
    "training_data",
]

#: Resume state next to the checkpoints.
STATE_FILE = "train_state.pt"


def checkpoint_name(stage: int) -> str:
    """File name of a stage's latest checkpoint in ``out``: ``stage1.pt`` / ``stage2.pt``."""
    return f"stage{stage}.pt"


def _read_state(path: Path) -> dict[str, Any]:
    state = safe_load(path, "hybrid training state (use a new --out)")
    if not isinstance(state, dict) or "stage" not in state or "step" not in state:
        raise InputError(f"{path}: not a hybrid training state; use a new --out")
    return state


def prior_state(out: Path, stage: int, resume: bool) -> dict[str, Any] | None:
    """The run folder's ``train_state.pt`` when ``resume`` (it must be of ``stage``);
    a fresh run refuses a folder that already holds this stage or a later one."""
    path = out / STATE_FILE
    prior = _read_state(path) if path.is_file() else None
    if resume and (prior is None or prior["stage"] != stage):
        have = "no train_state.pt" if prior is None else f"a stage-{prior['stage']} state"
        raise InputError(f"{out}: nothing to resume for stage {stage} ({have}); drop --resume")
    if not resume and prior is not None and prior["stage"] >= stage:
        raise InputError(
            f"{out}: already holds a stage-{prior['stage']} run; pass --resume to continue "
            "it or use a new --out"
        )
    return prior if resume else None


def _same_architecture(a: Mapping[str, Any], b: HybridConfig) -> list[str]:
    """Config sections that must agree between a stage-1 checkpoint and stage 2."""
    ours = asdict(b)
    return [s for s in ("generator", "encoder", "latent") if a.get(s) != ours[s]]


def load_encoder(model: nn.Module, path: Path, stage: int | None, cfg: HybridConfig) -> int:
    """Load E (and ``latent_avg``) from a hybrid checkpoint of ``cfg``'s architecture
    (and of ``stage``, unless None); returns its step."""
    from .checkpoint import read_checkpoint

    ckpt = read_checkpoint(path)
    diff = _same_architecture(ckpt["config"], cfg)
    if diff:
        raise InputError(
            f"{path}: its config differs from the training config in [{'], ['.join(diff)}]; "
            "train with the config the checkpoint was made with"
        )
    if stage is not None and ckpt["stage"] != stage:
        raise InputError(
            f"{path}: is a stage-{ckpt['stage']} checkpoint, expected stage {stage}; "
            "pass --init with the last checkpoint of stage 1 (stage1.pt)"
        )
    model.load_encoder_state_dict(ckpt["encoder"], str(path))
    with torch.no_grad():
        model.latent_avg.copy_(ckpt["latent_avg"])
    return int(ckpt["step"])


def training_data(
    split: TrainingSplit, sampler: PairSampler, stage: int, earlier: Path | None
) -> list[dict[str, Any]]:
    """Checkpoint ``training_data``: the records of the stages before ``stage`` found in
    ``earlier`` (stage 2's init, or the checkpoint a resume continues), then this one's;
    an earlier stage that recorded nothing appears with ``videos = None``."""
    from .checkpoint import read_training_data

    records = read_training_data(earlier) if earlier is not None else []
    before = [r for r in records or [] if r.get("stage", 0) < stage]
    if records is None and stage == 2:
        before = [{"stage": 1, "data": None, "videos": None, "note": "not recorded"}]
    return [*before, split.record(sampler.dataset, stage)]


def save(
    out: Path,
    run: Run,
    step: int,
    acc: Accumulator,
    seconds: float,
    records: list[dict[str, Any]],
) -> None:
    """Write the stage checkpoint, then ``train_state.pt`` (each atomically)."""
    from .checkpoint import save_checkpoint

    save_checkpoint(
        out / checkpoint_name(run.stage), run.model, step=step, stage=run.stage,
        training_data=records,
    )  # fmt: skip
    state = {
        "stage": run.stage,
        "step": step,
        "opt": run.opt.state_dict(),
        "disc": run.disc.state_dict() if run.disc is not None else None,
        "d_opt": run.d_opt.state_dict() if run.d_opt is not None else None,
        "scaler": run.scaler.state_dict() if run.scaler is not None else None,
        "sampler": run.sampler.state_dict(),
        "z_gen": run.z_gen.get_state(),
        "acc_sums": acc.sums,
        "acc_counts": acc.counts,
        "seconds": seconds,
    }
    save_atomic(out / STATE_FILE, state)


def restore(run: Run, prior: Mapping[str, Any]) -> tuple[Accumulator, float]:
    """Put ``train_state.pt``'s optimiser, discriminator, scaler, sampler and RNG states
    back into ``run``; returns the log accumulator and the training seconds so far."""
    run.opt.load_state_dict(prior["opt"])
    if run.disc is not None:
        run.disc.load_state_dict(prior["disc"])
        run.d_opt.load_state_dict(prior["d_opt"])
    if run.scaler is not None and prior.get("scaler"):
        run.scaler.load_state_dict(prior["scaler"])
    run.sampler.load_state_dict(prior["sampler"])
    run.z_gen.set_state(prior["z_gen"])
    return Accumulator(dict(prior["acc_sums"]), dict(prior["acc_counts"])), float(prior["seconds"])
