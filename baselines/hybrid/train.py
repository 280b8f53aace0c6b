"""Two-stage self-supervised training of the hybrid encoder (paper Sec. 3.2 and Sec. 4).

Stage 1 trains the whole encoder E (pyramid F, heads E_ID and E_F) at ``train.lr`` for
``train.iters_stage1`` steps; stage 2 starts from a stage-1 checkpoint, freezes F
(``requires_grad=False``, eval mode so its BatchNorm statistics stay) and trains the
heads only at ``train.lr_finetune`` for ``train.iters_stage2`` steps. G is frozen in both
(``requires_grad=False``; gradients flow through it to E).

This module is the loop; its parts each read on their own:

- :mod:`.train_step`: one step on a batch of triplets (:mod:`.pairs`), Eqs. 5-14;
- :mod:`.train_state`: checkpoints, ``train_state.pt``, resume, stage 2's init;
- :mod:`.train_log`: ``log.csv``, sample grids, ``train_stage{s}.json``;
- :mod:`.train_ddp`: ranks, the DDP-wrapped encoder, D's averaged gradients.

Choices the paper leaves open:

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

import math
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import torch
from torch import nn

from reenactbench.errors import InputError

from .config import HybridConfig
from .discriminator import LatentDiscriminator
from .pairs import PairSampler, TrainingSplit
from .train_ddp import rank_world, wrap_encoder
from .train_log import (
    LOG_COLUMNS,
    Accumulator,
    append_log,
    log_row,
    rewrite_log,
    save_grid,
    write_stage_meta,
)
from .train_state import (
    STATE_FILE,
    checkpoint_name,
    load_encoder,
    prior_state,
    restore,
    save,
    training_data,
)
from .train_step import (
    D_REG_EVERY,
    EncoderPass,
    ImageFn,
    Run,
    identity_fn,
    lpips_fn,
    train_mode,
    train_step,
    trainable,
)

__all__ = ["LOG_COLUMNS", "D_REG_EVERY", "STATE_FILE", "train_hybrid", "checkpoint_name"]

ProgressFn = Callable[[str, int, int], None]


def _build_run(
    cfg: HybridConfig,
    model: nn.Module,
    data: Path,
    stage: int,
    dev: torch.device,
    split: TrainingSplit | None,
    loss_nets: tuple[ImageFn | None, ImageFn | None],
) -> Run:
    """Move the (loaded) model to ``dev``, freeze per stage, wrap E for DDP; make the
    optimisers (Adam, constant rate), the discriminator, the fp16 GradScaler and this
    rank's sampler."""
    rank, _ = rank_world()
    tc = cfg.train
    model.to(dev)
    lr = tc.lr if stage == 1 else tc.lr_finetune
    opt = torch.optim.Adam(trainable(model, stage), lr=lr)
    disc = d_opt = None
    if cfg.loss.adv > 0:
        g_style = cfg.generator.style_dim
        disc = LatentDiscriminator(g_style, hidden=g_style)
        disc.reset_parameters(torch.Generator().manual_seed(tc.seed + 1))
        disc = disc.to(dev).requires_grad_(False)
        d_opt = torch.optim.Adam(disc.parameters(), lr=tc.d_lr)
    use_scaler = dev.type == "cuda" and tc.amp == "fp16"
    sampler = PairSampler(
        data, cfg.encoder.input_size, frames_per_video=tc.frames_per_video, seed=tc.seed,
        rank=rank, videos=split.videos if split is not None else None,
    )  # fmt: skip
    return Run(
        cfg=cfg,
        stage=stage,
        model=model,
        encoder=wrap_encoder(EncoderPass(model), dev),
        disc=disc,
        opt=opt,
        d_opt=d_opt,
        scaler=torch.amp.GradScaler("cuda") if use_scaler else None,
        sampler=sampler,
        z_gen=torch.Generator().manual_seed(tc.seed * 1000 + rank),
        lpips_fn=loss_nets[0],
        id_fn=loss_nets[1],
        device=dev,
        lr=lr,
    )


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
    from .model import build_model

    if stage not in (1, 2):
        raise InputError(f"stage must be 1 or 2, got {stage}")
    if max_iters is not None and max_iters < 1:
        raise InputError(f"--max-iters must be >= 1, got {max_iters}")
    out, weights = Path(out), dict(weights or {})
    _, world = rank_world()
    total_iters = cfg.train.iters_stage1 if stage == 1 else cfg.train.iters_stage2
    stop = total_iters if max_iters is None else min(max_iters, total_iters)
    ckpt_path = out / checkpoint_name(stage)

    prior = prior_state(out, stage, resume)
    # loss networks first: a missing weight fails before the data are read
    loss_nets = (lpips_fn(cfg, weights, device), identity_fn(cfg, weights, device))
    model = build_model(cfg, "cpu", weights)
    start, earlier = 0, None
    if prior is not None:
        start, earlier = load_encoder(model, ckpt_path, stage, cfg), ckpt_path
        if start != prior["step"]:
            raise InputError(
                f"{ckpt_path}: step {start} does not match {STATE_FILE} (step "
                f"{prior['step']}); the run folder is inconsistent, restart it"
            )
    elif stage == 2:
        earlier = Path(init) if init is not None else out / checkpoint_name(1)
        load_encoder(model, earlier, 1, cfg)
    run = _build_run(cfg, model, data, stage, torch.device(device), split, loss_nets)
    records = training_data(
        split or TrainingSplit(tuple(v.name for v in run.sampler.selected)),
        run.sampler,
        stage,
        earlier,
    )
    acc, seconds = restore(run, prior) if prior is not None else (Accumulator.empty(), 0.0)
    if rank_world()[0] == 0:
        out.mkdir(parents=True, exist_ok=True)
        rewrite_log(out / "log.csv", lambda r: int(r["stage"]) < stage or int(r["step"]) <= start)
        write_stage_meta(out / f"train_stage{stage}.json", run, data, records, world)
    _loop(run, out, range(start + 1, stop + 1), acc, seconds, records, on_progress)
    return ckpt_path


def _loop(
    run: Run,
    out: Path,
    steps: range,
    acc: Accumulator,
    seconds: float,
    records: list[dict],
    on_progress: ProgressFn | None,
) -> None:
    """Train over ``steps``: log every ``log_every``, sample grids every ``sample_every``
    and checkpoint every ``ckpt_every`` steps and at the last one; only rank 0 writes."""
    tc, stage, stop = run.cfg.train, run.stage, steps.stop - 1
    writer = rank_world()[0] == 0
    train_mode(run.model, stage)
    for step in steps:
        t0 = time.perf_counter()
        batch = run.sampler.sample(tc.batch).to(run.device)
        values, images = train_step(run, batch, step)
        if not all(math.isfinite(v) for v in values.values()):
            raise FloatingPointError(f"non-finite loss at stage {stage} step {step}: {values}")
        acc.add(values)
        seconds += time.perf_counter() - t0
        if step % tc.log_every == 0:
            if writer:
                append_log(out / "log.csv", log_row(step, stage, acc.means(), run.lr, seconds))
            acc = Accumulator.empty()
        if writer and (step % tc.sample_every == 0 or step == stop):
            save_grid(images, out / "samples" / f"stage{stage}_{step:07d}.png")
        if writer and (step % tc.ckpt_every == 0 or step == stop):
            save(out, run, step, acc, seconds, records)
        if on_progress is not None:
            on_progress(f"train stage {stage}", step, stop)
