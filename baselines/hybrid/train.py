"""Two-stage self-supervised training of the hybrid encoder (paper Sec. 3.2 and Sec. 4).

Stage 1 trains the whole encoder E (pyramid F, heads E_ID and E_F) at ``train.lr`` for
``train.iters_stage1`` steps; stage 2 starts from a stage-1 checkpoint, freezes F
(``requires_grad=False``, eval mode so its BatchNorm statistics stay) and trains the
heads only at ``train.lr_finetune`` for ``train.iters_stage2`` steps. G is frozen in both
(``requires_grad=False``; gradients flow through it to E).

One step on a batch of triplets (:mod:`reenactbench.baselines.hybrid.pairs`)::

    {W_ID, S_F}^{S,D1,D2} = E(I^S, I^D1, I^D2)                       (Eq. 1, one pass)
    I^{S->S}, I^{S->D1}, I^{S->D2}, I^{S->D} = G(A(W_ID^S) + S_F^{S,D1,D2,0})  (one G pass)
    L = L_self + L_reenact + l_id L_id + l_wid L_w_id + l_d L_d + l_reg L_reg + l_f L_f

(Eqs. 5-14). Choices the paper leaves open:

- **Sizes**: G's output is resized (antialiased bilinear) to the encoder input size
  (256 in the paper config), where every loss is computed and from where I^{S->D2} is
  re-encoded for Eq. 10 (pSp's ``face_pool`` convention; same as CMA here).
- **Identity** (Eqs. 8-9): IR-SE50 (``ir-se50`` weight, pSp's ID loss: crop + pool of the
  image at 256^2), real-frame embeddings without gradients. Used only when
  ``loss.id > 0``; with ``loss.id = 0`` the term is skipped and logged blank.
- **LPIPS**: AlexNet LPIPS (``lpips-alex`` weight) when ``loss.lpips > 0``; missing
  weights are an error (no stand-in).
- **Masks** (Eq. 13): :func:`face_region_mask` of the cached landmarks, dilated by
  ``max(1, round(size / 32))`` pixels (8 px at 256^2).
- **Latent discriminator** (e4e): real codes ``G.mapping(z)``, fake codes every row of
  W_ID^S (detached); D steps before the encoder step on the same batch (as e4e's coach),
  with Adam at ``train.d_lr``; lazy R1 every :data:`D_REG_EVERY` steps with loss
  ``r1 / 2 * penalty * D_REG_EVERY``. Encoder: non-saturating loss on all rows of W_ID^S.
- **Optimiser**: Adam (pSp's ``adam`` option; pSp/e4e default to Ranger, which torch
  lacks), constant learning rate.
- **AMP**: ``train.amp`` autocast (bf16, or fp16 with a GradScaler) on CUDA only; the
  discriminator runs in fp32.
- **DDP**: under torchrun (``torch.distributed`` initialised) the encoder is wrapped in
  ``DistributedDataParallel``; every rank samples from its own stream ``(seed, rank)``;
  only rank 0 writes. The batch ``train.batch`` is per rank.

Files in ``out`` (only rank 0 writes):

- ``stage{1,2}.pt``: the latest checkpoint of the stage (``checkpoint.save_checkpoint``),
  written every ``train.ckpt_every`` steps and at the end;
- ``train_state.pt``: optimisers, discriminator, sampler, RNG and log accumulators of the
  latest checkpoint, so ``resume=True`` continues bit-identically (on CPU);
- ``log.csv``: :data:`LOG_COLUMNS`, one row every ``train.log_every`` steps with the mean
  of each term over those steps (unweighted; ``total`` is the weighted Eq. 14 sum);
  a disabled term is blank. ``seconds`` is the training wall time of the stage so far;
- ``samples/stage{s}_{step:07d}.png``: rows of (source | D1 | S->D1 | D2 | S->D2), every
  ``train.sample_every`` steps and at the end;
- ``train_stage{s}.json``: config, data fingerprint, sampler counts (frames cached,
  frames excluded for no detected face), skipped terms, device, world size.
"""

from __future__ import annotations

import csv
import json
import math
import os
import time
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from reenactbench.errors import InputError
from reenactbench.nn.loading import safe_load

from .cma import to_size
from .config import HybridConfig
from .discriminator import (
    LatentDiscriminator,
    d_logistic_loss,
    g_nonsaturating_loss,
    r1_penalty,
    sample_real_w,
)
from .losses import (
    identity_loss,
    rec_loss,
    regularization,
    w_id_consistency,
)
from .masks import face_region_mask, feature_rec_loss
from .pairs import PairBatch, PairSampler, TrainingSplit

__all__ = ["LOG_COLUMNS", "D_REG_EVERY", "STATE_FILE", "train_hybrid", "checkpoint_name"]

#: Columns of ``log.csv``, in order.
LOG_COLUMNS = (
    "step",
    "stage",
    "total",
    "self",
    "reenact",
    "id",
    "w_id",
    "reg",
    "feat",
    "adv",
    "d",
    "r1",
    "lr",
    "seconds",
)
#: Lazy R1: the R1 step runs every this many steps (e4e/StyleGAN2 ``d_reg_every``).
D_REG_EVERY = 16
#: Resume state next to the checkpoints.
STATE_FILE = "train_state.pt"
#: Loss terms of the encoder objective, as logged.
_TERMS = ("self", "reenact", "id", "w_id", "reg", "feat", "adv")
_WEIGHT_OF = {"id": "id", "w_id": "w_id", "reg": "reg", "feat": "feat", "adv": "adv"}

ProgressFn = Callable[[str, int, int], None]
ImageFn = Callable[[Tensor], Tensor]


def checkpoint_name(stage: int) -> str:
    """File name of a stage's latest checkpoint in ``out``: ``stage1.pt`` / ``stage2.pt``."""
    return f"stage{stage}.pt"


# ----------------------------------------------------------------------------- helpers
def _rank_world() -> tuple[int, int]:
    """``(rank, world_size)`` under torchrun, else ``(0, 1)``."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def _atomic_save(obj: Any, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _lpips_fn(cfg: HybridConfig, weights: Mapping[str, Path], device: str) -> ImageFn | None:
    """LPIPS(alex) as ``(x, y) -> (B, 1, 1, 1)`` when ``loss.lpips > 0``, else None."""
    if cfg.loss.lpips == 0:
        return None
    from reenactbench.metrics.lpips import load_lpips_alex
    from reenactbench.weights import weight_path

    net = load_lpips_alex(weight_path("lpips-alex", weights), device).requires_grad_(False)
    return net  # type: ignore[return-value]


def _identity_fn(cfg: HybridConfig, weights: Mapping[str, Path], device: str) -> ImageFn | None:
    """IR-SE50 embedding ``(B, 3, H, W) in [-1, 1] -> (B, 512)`` (pSp's ID loss input:
    resize to 256^2, crop, pool to 112^2) when ``loss.id > 0``, else None."""
    if cfg.loss.id == 0:
        return None
    from reenactbench.nn.irse50 import load_irse50, psp_id_input
    from reenactbench.weights import weight_path

    net = load_irse50(weight_path("ir-se50", weights), device)

    def embed(x: Tensor) -> Tensor:
        return net(psp_id_input(to_size(x, 256).contiguous()))

    return embed


def _no_lpips(x: Tensor, y: Tensor) -> Tensor:
    raise AssertionError("LPIPS called with loss.lpips == 0")  # rec_loss skips weight 0


def _autocast(cfg: HybridConfig, device: torch.device) -> AbstractContextManager[Any]:
    if device.type != "cuda" or cfg.train.amp == "none":
        return nullcontext()
    dtype = torch.bfloat16 if cfg.train.amp == "bf16" else torch.float16
    return torch.autocast("cuda", dtype=dtype)


def mask_dilation(size: int) -> int:
    """Dilation radius (pixels) of the Eq. 13 masks at ``size``: ``max(1, round(size/32))``."""
    return max(1, round(size / 32))


class _EncoderPass(nn.Module):
    """``x -> (w_id, *s_f)`` of the model's encoder: what DDP wraps (one forward per step)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        lat = self.model.encode(x)
        return (lat.w_id, *lat.s_f)


@dataclass
class _Accumulator:
    """Sums of the logged values since the last log row (float64), and how many steps."""

    sums: dict[str, float]
    counts: dict[str, int]

    @classmethod
    def empty(cls) -> _Accumulator:
        return cls({}, {})

    def add(self, values: Mapping[str, float]) -> None:
        for k, v in values.items():
            self.sums[k] = self.sums.get(k, 0.0) + float(v)
            self.counts[k] = self.counts.get(k, 0) + 1

    def means(self) -> dict[str, float]:
        return {k: self.sums[k] / self.counts[k] for k in self.sums}


# ------------------------------------------------------------------------------- state
@dataclass
class _Run:
    """Everything a step needs, built once."""

    cfg: HybridConfig
    stage: int
    model: nn.Module
    encoder: nn.Module  # _EncoderPass, maybe DDP-wrapped
    disc: LatentDiscriminator | None
    opt: torch.optim.Optimizer
    d_opt: torch.optim.Optimizer | None
    scaler: torch.amp.GradScaler | None
    sampler: PairSampler
    z_gen: torch.Generator
    lpips_fn: ImageFn | None
    id_fn: ImageFn | None
    device: torch.device
    lr: float


def _trainable(model: nn.Module, stage: int) -> list[nn.Parameter]:
    """Set requires_grad per stage and return the optimised parameters (checked)."""
    model.requires_grad_(False)
    params = list(model.encoder_parameters() if stage == 1 else model.head_parameters())
    for p in params:
        p.requires_grad_(True)
    gen_ids = {id(p) for p in model.generator.parameters()}
    pyr_ids = {id(p) for p in model.pyramid.parameters()}
    chosen = {id(p) for p in params}
    if chosen & gen_ids:
        raise AssertionError("the generator must stay frozen")
    pyr_grad = any(p.requires_grad for p in model.pyramid.parameters())
    if stage == 2 and (chosen & pyr_ids or pyr_grad):
        raise AssertionError("stage 2 must freeze the pyramid F")
    if stage == 1 and not pyr_ids <= chosen:
        raise AssertionError("stage 1 must train the pyramid F")
    return params


def _train_mode(model: nn.Module, stage: int) -> None:
    model.train()
    model.generator.eval()
    if stage == 2:
        model.pyramid.eval()  # frozen F: BatchNorm statistics stay as in stage 1


# ---------------------------------------------------------------------------- one step
def _split(t: Tensor, n: int) -> tuple[Tensor, ...]:
    return tuple(t.chunk(n))


def _step(run: _Run, batch: PairBatch, step: int) -> tuple[dict[str, float], dict[str, Tensor]]:
    """One training step (D step, then encoder step). Returns logged values and images."""
    cfg, model, w = run.cfg, run.model, run.cfg.loss
    size = cfg.encoder.input_size
    B = batch.src.shape[0]
    logged: dict[str, float] = {}
    with _autocast(cfg, run.device):
        out = run.encoder(torch.cat((batch.src, batch.d1, batch.d2)))
        w_all, sf_all = out[0], out[1:]
        w_s, _, _ = _split(w_all, 3)
        sf = [_split(s, 3) for s in sf_all]  # per layer: (S, D1, D2)
        sf_s, sf_d1, sf_d2 = ([s[i] for s in sf] for i in range(3))
        # I^{S->S}, I^{S->D1}, I^{S->D2}, I^{S->D} in one G pass (S_F = 0: identity only)
        w4 = w_s.repeat(4, 1, 1)
        sf4 = [
            torch.cat((a, b, c, torch.zeros_like(a)))
            for a, b, c in zip(sf_s, sf_d1, sf_d2, strict=True)
        ]
        images = to_size(model.generate(w4, sf4), size)
        y_ss, y_sd1, y_sd2, y_sd = _split(images, 4)

    # latent discriminator step (fp32), before the encoder's adversarial loss (e4e order)
    if run.disc is not None and w.adv > 0:
        logged.update(_d_step(run, w_s.detach().float().flatten(0, 1), step))

    with _autocast(cfg, run.device):
        lp = run.lpips_fn or _no_lpips
        parts: dict[str, Tensor] = {}
        parts["self"], _ = rec_loss(y_ss, batch.src_target, lp, w)  # Eq. 5
        parts["reenact"], _ = rec_loss(y_sd1, batch.d1_target, lp, w)  # Eq. 6
        if run.id_fn is not None:  # Eqs. 8-9
            with torch.no_grad():
                e_src = run.id_fn(batch.src_target)
            e_id = run.id_fn(torch.cat((y_sd, y_sd2)) if w.idreg else y_sd)
            e_sd, e_sd2 = _split(e_id, 2) if w.idreg else (e_id, None)
            parts["id"] = identity_loss(e_src.float(), e_sd.float(), e_sd2, w.idreg)
        if w.w_id > 0:  # Eq. 10: re-encode I^{S->D2}
            w_cycle = model.encode(y_sd2).w_id
            parts["w_id"] = w_id_consistency(w_s.float(), w_cycle.float())
        parts["reg"] = regularization(w_s.float(), [s.float() for s in sf_d1], w.lambda_s)
        if w.feat > 0:  # Eq. 13
            dil = mask_dilation(size)
            m_s = face_region_mask(batch.src_landmarks, size, dil)
            m_d1 = face_region_mask(batch.d1_landmarks, size, dil)
            parts["feat"], _ = feature_rec_loss(
                [(y_ss, batch.src_target, m_s), (y_sd1, batch.d1_target, m_d1)], lp, w
            )
        if run.disc is not None and w.adv > 0:
            parts["adv"] = g_nonsaturating_loss(run.disc(w_s.float()))
        total = parts["self"] + parts["reenact"]
        for k, v in parts.items():
            if k in _WEIGHT_OF:
                total = total + getattr(w, _WEIGHT_OF[k]) * v

    run.opt.zero_grad(set_to_none=True)
    if run.scaler is not None:
        run.scaler.scale(total).backward()
        run.scaler.step(run.opt)
        run.scaler.update()
    else:
        total.backward()
        run.opt.step()
    logged["total"] = float(total.detach())
    logged.update({k: float(v.detach()) for k, v in parts.items()})
    shown = {"src": batch.src_target, "d1": batch.d1_target, "s_d1": y_sd1, "s_d2": y_sd2}
    shown["d2"] = to_size(batch.d2, size)
    return logged, {k: v[: min(B, 4)].detach().float() for k, v in shown.items()}


def _average_grads(module: nn.Module) -> None:
    """Under DDP, average ``module``'s gradients over ranks (D is not DDP-wrapped, so its
    copies would drift apart otherwise); a no-op in one process."""
    _, world = _rank_world()
    if world == 1:
        return
    for p in module.parameters():
        if p.grad is not None:
            torch.distributed.all_reduce(p.grad)
            p.grad.div_(world)


def _d_step(run: _Run, fake_w: Tensor, step: int) -> dict[str, float]:
    """e4e's discriminator step on ``fake_w`` ``(N, style_dim)``; lazy R1."""
    disc, d_opt = run.disc, run.d_opt
    assert disc is not None and d_opt is not None
    disc.requires_grad_(True)
    real_w = sample_real_w(run.model.generator, fake_w.shape[0], run.z_gen)
    loss = d_logistic_loss(disc(real_w), disc(fake_w))
    d_opt.zero_grad(set_to_none=True)
    loss.backward()
    _average_grads(disc)
    d_opt.step()
    out = {"d": float(loss.detach())}
    if step % D_REG_EVERY == 0:
        r1 = r1_penalty(disc, real_w)
        d_opt.zero_grad(set_to_none=True)
        (run.cfg.loss.r1 / 2 * r1 * D_REG_EVERY).backward()
        _average_grads(disc)
        d_opt.step()
        out["r1"] = float(r1.detach())
    disc.requires_grad_(False)
    return out


# --------------------------------------------------------------------------- outputs
def _fmt(v: float | int | str) -> str:
    if isinstance(v, float):
        return f"{v:.7g}"
    return str(v)


def _log_row(
    step: int, stage: int, means: Mapping[str, float], lr: float, seconds: float
) -> dict[str, str]:
    row = {c: "" for c in LOG_COLUMNS}
    row.update({k: _fmt(v) for k, v in means.items() if k in row})
    row.update(step=str(step), stage=str(stage), lr=_fmt(lr), seconds=f"{seconds:.3f}")
    return row


def _rewrite_log(path: Path, keep: Callable[[dict[str, str]], bool]) -> None:
    """Keep the rows ``keep`` accepts (drops rows of steps a resume will redo)."""
    rows: list[dict[str, str]] = []
    if path.is_file():
        with path.open(newline="") as f:
            reader = csv.DictReader(f)
            if tuple(reader.fieldnames or ()) != LOG_COLUMNS:
                raise InputError(
                    f"{path}: columns {reader.fieldnames} are not {list(LOG_COLUMNS)}; "
                    "use a new --out"
                )
            rows = [r for r in reader if keep(r)]
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=LOG_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)


def _append_log(path: Path, row: Mapping[str, str]) -> None:
    with path.open("a", newline="") as f:
        csv.DictWriter(f, fieldnames=LOG_COLUMNS).writerow(row)


def _save_grid(images: Mapping[str, Tensor], path: Path) -> None:
    """PNG with one row per sample: source | D1 | S->D1 | D2 | S->D2."""
    from PIL import Image

    cols = [images[k] for k in ("src", "d1", "s_d1", "d2", "s_d2")]
    rows = [torch.cat(list(c), dim=2) for c in zip(*cols, strict=True)]  # (3, S, 5*S) each
    grid = torch.cat(rows, dim=1)  # (3, rows*S, 5*S)
    arr = ((grid.clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).cpu().numpy()
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.ascontiguousarray(arr)).save(path)


def _read_state(path: Path) -> dict[str, Any]:
    state = safe_load(path, "hybrid training state (use a new --out)")
    if not isinstance(state, dict) or "stage" not in state or "step" not in state:
        raise InputError(f"{path}: not a hybrid training state; use a new --out")
    return state


# ------------------------------------------------------------------------------ public
def _same_architecture(a: Mapping[str, Any], b: HybridConfig) -> list[str]:
    """Config sections that must agree between a stage-1 checkpoint and stage 2."""
    ours = asdict(b)
    return [s for s in ("generator", "encoder", "latent") if a.get(s) != ours[s]]


def _load_encoder(model: nn.Module, path: Path, stage: int | None, cfg: HybridConfig) -> int:
    """Load E (and check ``latent_avg``) from a hybrid checkpoint; returns its step."""
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


def _training_data(
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


def train_hybrid(
    cfg: HybridConfig,
    data: Path,
    out: Path,
    stage: int = 1,
    resume: bool = False,
    max_iters: int | None = None,
    device: str = "cpu",
    on_progress: ProgressFn | None = None,
    weights: Mapping[str, Path] | None = None,
    init: Path | None = None,
    split: TrainingSplit | None = None,
) -> Path:
    """Train the hybrid encoder, one stage per call (see the module docstring).

    Args:
        cfg: the hybrid config (``[train]`` and ``[loss]`` drive this function).
        data: a prepared data set (``reenactbench prepare``) at 256^2 with identities.
        out: run folder (created); both stages may share it (``stage1.pt``, ``stage2.pt``,
            one ``log.csv`` with a ``stage`` column).
        stage: 1 (whole encoder, ``train.lr``) or 2 (heads only, ``train.lr_finetune``,
            F frozen; starts from ``init``).
        resume: continue the run in ``out`` from its ``train_state.pt`` (same stage).
        max_iters: stop at this step (absolute, within the stage) instead of
            ``train.iters_stage{stage}``; a later ``resume`` can go further.
        device: torch device, e.g. ``"cpu"`` or ``"cuda:0"``.
        on_progress: ``(what, done, total)`` callback after every step.
        weights: weight name -> file overrides (``stylegan2-ffhq``, ``ir-se50``,
            ``lpips-alex``).
        init: stage-1 checkpoint stage 2 starts from (default ``out/stage1.pt``).
        split: the training videos of ``data`` (``pairs.training_split``: a protocol's
            train split); ``None`` trains on every video. The checkpoint records the
            list and the rule (``training_data``), after those of earlier stages.

    Returns:
        The stage's latest checkpoint, ``out/stage{stage}.pt``.

    Raises:
        InputError: bad stage, data, checkpoint or run folder (resume without state, a
            fresh run over an existing one).
        WeightsMissing: a weight the config needs is absent (``lpips-alex`` when
            ``loss.lpips > 0``, ``ir-se50`` when ``loss.id > 0`` or
            ``encoder.init_irse50``, ``stylegan2-ffhq`` unless the generator is seeded).
    """
    from .checkpoint import save_checkpoint
    from .model import build_model

    if stage not in (1, 2):
        raise InputError(f"stage must be 1 or 2, got {stage}")
    if max_iters is not None and max_iters < 1:
        raise InputError(f"--max-iters must be >= 1, got {max_iters}")
    out, weights = Path(out), dict(weights or {})
    rank, world = _rank_world()
    writer = rank == 0
    dev = torch.device(device)
    tc = cfg.train
    total_iters = tc.iters_stage1 if stage == 1 else tc.iters_stage2
    stop = total_iters if max_iters is None else min(max_iters, total_iters)
    state_path, ckpt_path = out / STATE_FILE, out / checkpoint_name(stage)
    log_path = out / "log.csv"

    prior = _read_state(state_path) if state_path.is_file() else None
    if resume and (prior is None or prior["stage"] != stage):
        have = "no train_state.pt" if prior is None else f"a stage-{prior['stage']} state"
        raise InputError(f"{out}: nothing to resume for stage {stage} ({have}); drop --resume")
    if not resume and prior is not None and prior["stage"] >= stage:
        raise InputError(
            f"{out}: already holds a stage-{prior['stage']} run; pass --resume to continue "
            "it or use a new --out"
        )

    # loss networks first: a missing weight fails before the data are read
    lpips_fn = _lpips_fn(cfg, weights, str(dev))
    id_fn = _identity_fn(cfg, weights, str(dev))
    # model, frozen parts, optimisers
    model = build_model(cfg, "cpu", weights)
    start = 0
    if resume:
        start = _load_encoder(model, ckpt_path, stage, cfg)
        if start != prior["step"]:
            raise InputError(
                f"{ckpt_path}: step {start} does not match {state_path.name} (step "
                f"{prior['step']}); the run folder is inconsistent, restart it"
            )
    elif stage == 2:
        init = Path(init) if init is not None else out / checkpoint_name(1)
        _load_encoder(model, init, 1, cfg)
    model.to(dev)
    params = _trainable(model, stage)
    lr = tc.lr if stage == 1 else tc.lr_finetune
    opt = torch.optim.Adam(params, lr=lr)
    disc = d_opt = None
    if cfg.loss.adv > 0:
        g_style = cfg.generator.style_dim
        disc = LatentDiscriminator(g_style, hidden=g_style)
        disc.reset_parameters(torch.Generator().manual_seed(tc.seed + 1))
        disc = disc.to(dev).requires_grad_(False)
        d_opt = torch.optim.Adam(disc.parameters(), lr=tc.d_lr)
    use_scaler = dev.type == "cuda" and tc.amp == "fp16"
    scaler = torch.amp.GradScaler("cuda") if use_scaler else None
    z_gen = torch.Generator().manual_seed(tc.seed * 1000 + rank)
    sampler = PairSampler(
        data, cfg.encoder.input_size, frames_per_video=tc.frames_per_video, seed=tc.seed,
        rank=rank, videos=split.videos if split is not None else None,
    )  # fmt: skip
    training_data = _training_data(
        split or TrainingSplit(tuple(v.name for v in sampler.selected)),
        sampler,
        stage,
        ckpt_path if resume else init if stage == 2 else None,
    )
    encoder: nn.Module = _EncoderPass(model)
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel

        ids = [dev.index] if dev.type == "cuda" else None
        encoder = DistributedDataParallel(encoder, device_ids=ids)
    run = _Run(
        cfg=cfg,
        stage=stage,
        model=model,
        encoder=encoder,
        disc=disc,
        opt=opt,
        d_opt=d_opt,
        scaler=scaler,
        sampler=sampler,
        z_gen=z_gen,
        lpips_fn=lpips_fn,
        id_fn=id_fn,
        device=dev,
        lr=lr,
    )
    acc, seconds = _Accumulator.empty(), 0.0
    if resume:
        opt.load_state_dict(prior["opt"])
        if disc is not None:
            disc.load_state_dict(prior["disc"])
            d_opt.load_state_dict(prior["d_opt"])
        if scaler is not None and prior.get("scaler"):
            scaler.load_state_dict(prior["scaler"])
        sampler.load_state_dict(prior["sampler"])
        z_gen.set_state(prior["z_gen"])
        acc = _Accumulator(dict(prior["acc_sums"]), dict(prior["acc_counts"]))
        seconds = float(prior["seconds"])

    skipped = [k for k in _TERMS if k in _WEIGHT_OF and getattr(cfg.loss, _WEIGHT_OF[k]) == 0]
    if writer:
        out.mkdir(parents=True, exist_ok=True)
        _rewrite_log(log_path, lambda r: int(r["stage"]) < stage or int(r["step"]) <= start)
        meta = {
            "stage": stage,
            "config": asdict(cfg),
            "data": str(data),
            "data_fingerprint": sampler.dataset.fingerprint(),
            "training_data": training_data,
            "frames_cached": sampler.n_cached,
            "frames_excluded_no_face": sampler.excluded,
            "excluded_by_video": sampler.excluded_by_video,
            "cache_bytes": sampler.memory_bytes,
            "skipped_terms": skipped,
            "lpips": "lpips-alex" if run.lpips_fn is not None else None,
            "identity": "ir-se50" if run.id_fn is not None else None,
            "optimizer": "adam",
            "device": str(dev),
            "amp": tc.amp if dev.type == "cuda" else "none",
            "world_size": world,
            "torch": torch.__version__,
        }
        (out / f"train_stage{stage}.json").write_text(json.dumps(meta, indent=2) + "\n")

    def save(step: int) -> None:
        if not writer:
            return
        save_checkpoint(ckpt_path, model, step=step, stage=stage, training_data=training_data)
        _atomic_save(
            {
                "stage": stage,
                "step": step,
                "opt": opt.state_dict(),
                "disc": disc.state_dict() if disc is not None else None,
                "d_opt": d_opt.state_dict() if d_opt is not None else None,
                "scaler": scaler.state_dict() if scaler is not None else None,
                "sampler": sampler.state_dict(),
                "z_gen": z_gen.get_state(),
                "acc_sums": acc.sums,
                "acc_counts": acc.counts,
                "seconds": seconds,
            },
            state_path,
        )

    _train_mode(model, stage)
    for step in range(start + 1, stop + 1):
        t0 = time.perf_counter()
        batch = sampler.sample(tc.batch).to(dev)
        values, images = _step(run, batch, step)
        if not all(math.isfinite(v) for v in values.values()):
            raise FloatingPointError(f"non-finite loss at stage {stage} step {step}: {values}")
        acc.add(values)
        seconds += time.perf_counter() - t0
        if step % tc.log_every == 0:
            if writer:
                _append_log(log_path, _log_row(step, stage, acc.means(), lr, seconds))
            acc = _Accumulator.empty()
        if writer and (step % tc.sample_every == 0 or step == stop):
            _save_grid(images, out / "samples" / f"stage{stage}_{step:07d}.png")
        if step % tc.ckpt_every == 0 or step == stop:
            save(step)
        if on_progress is not None:
            on_progress(f"train stage {stage}", step, stop)
    return ckpt_path
