"""Paper-config smoke: one stage-1 training step and one CMA step of the hybrid method at
1024² (the paper config: 1024² StyleGAN2, IR-SE50 pyramid encoder, LPIPS and ID losses),
with seeded weights in the official layouts (speed and memory do not depend on the
values). Prints seconds per step and the process's peak memory: what tells a user
whether 200K iterations are days or weeks.

    python bench/hybrid_paper_smoke.py --data .cache/demo-data [--batch 1] [--cma-batch 4]
        [--device cuda] [--skip-train]

On a GPU the training step runs under the config's bf16 autocast (``[train] amp``) and
the peak GPU memory is printed too. The data: any prepared folder at 256² (the demo data
works); ``--protocol none`` semantics (every video).
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from machine import cpu_name  # bench/machine.py

ROOT = Path(__file__).resolve().parents[1]


def _peak_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def _seeded_files(tmp: Path) -> dict[str, Path]:
    from tests.test_irse50 import seeded_state_dict as irse50_state
    from tests.test_metric_lpips import seeded_alexnet_state

    tmp.mkdir(parents=True, exist_ok=True)
    out = {"ir-se50": tmp / "model_ir_se50.pth", "lpips-alex": tmp / "alexnet-owt-7be5be79.pth"}
    torch.save(irse50_state(), out["ir-se50"])
    torch.save(seeded_alexnet_state(), out["lpips-alex"])
    return out


def main() -> None:
    sys.path.insert(0, str(ROOT))  # tests.* (seeded weights)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT / ".cache" / "demo-data")
    parser.add_argument("--batch", type=int, default=1, help="training batch (paper: 8)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--skip-cma", action="store_true")
    parser.add_argument(
        "--skip-train",
        action="store_true",
        help="CMA only (needs a stage-1 checkpoint: one is made by a 1-step run first, not timed)",
    )
    parser.add_argument(
        "--cma-batch",
        type=int,
        default=4,
        help="CMA frames per step (paper "
        "config: 4; 1 needs less memory and changes the optimisation)",
    )
    parser.add_argument("--cma-checkpoint", type=Path, help=argparse.SUPPRESS)  # child run
    parser.add_argument("--cma-lpips", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--train-dir", type=Path, help=argparse.SUPPRESS)  # child run
    args = parser.parse_args()
    if args.cma_checkpoint is not None:  # a fresh process: training's memory is gone
        _cma_step(args.cma_checkpoint, {"lpips-alex": args.cma_lpips}, args)
        return
    from reenactbench.baselines.hybrid.config import load_config

    gpu = torch.cuda.get_device_name() if args.device.startswith("cuda") else None
    if args.train_dir is None:
        print(f"machine: {gpu or cpu_name()}, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"device {args.device}, batch {args.batch}")  # fmt: skip
    cfg = load_config("paper")
    cfg = replace(
        cfg,
        generator=replace(cfg.generator, weights="seeded"),
        encoder=replace(cfg.encoder, init_irse50=False),
        train=replace(cfg.train, batch=args.batch, log_every=1, sample_every=10**9),
    )
    if args.train_dir is not None:
        _train(cfg, args)
        return
    with tempfile.TemporaryDirectory() as tmp_:
        tmp = Path(tmp_)
        weights = _seeded_files(tmp / "weights")
        # each part in its own process: the training step's memory (a 1024² G with
        # gradients) is not handed back to the system, and CMA needs as much again
        common = [sys.executable, __file__, "--data", str(args.data), "--device", args.device,
                  "--batch", str(args.batch), "--cma-batch", str(args.cma_batch)]  # fmt: skip
        skip = ["--skip-train"] if args.skip_train else []
        subprocess.run([*common, "--train-dir", str(tmp), *skip], check=True)
        if not args.skip_cma:
            subprocess.run([*common, "--cma-checkpoint", str(tmp / "run" / "stage1.pt"),
                            "--cma-lpips", str(weights["lpips-alex"])], check=True)  # fmt: skip


def _train(cfg: object, args: argparse.Namespace) -> None:
    from reenactbench.baselines.hybrid.train import train_hybrid

    tmp = args.train_dir
    weights = {"ir-se50": tmp / "weights" / "model_ir_se50.pth",
               "lpips-alex": tmp / "weights" / "alexnet-owt-7be5be79.pth"}  # fmt: skip
    t0 = time.perf_counter()
    train_hybrid(cfg, args.data, tmp / "run", max_iters=1, device=args.device, weights=weights)
    if args.skip_train:
        return
    print(f"  stage 1: build + 1 step (batch {args.batch}) {time.perf_counter() - t0:.1f} s; "
          f"peak RSS {_peak_gib():.1f} GiB", flush=True)  # fmt: skip
    t0 = time.perf_counter()
    train_hybrid(cfg, args.data, tmp / "run", max_iters=2, device=args.device,
                 weights=weights, resume=True)  # fmt: skip
    print(f"  stage 1: resume + 1 more step {time.perf_counter() - t0:.1f} s; "
          f"peak RSS {_peak_gib():.1f} GiB", flush=True)  # fmt: skip
    if args.device.startswith("cuda"):
        print(f"  peak GPU memory {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB")


def _cma_step(ckpt: Path, weights: dict[str, Path], args: argparse.Namespace) -> None:
    """One CMA step (``--cma-batch`` frames at 1024², encoder input 256²) on 4 demo frames."""
    from reenactbench.methods import load_method
    from reenactbench.video import read_frames

    folder = args.data / "256" / "man_000"
    faces = [np.asarray(f) for f in read_frames(folder, max_frames=4, size=1024)]
    method = load_method("hybrid", device=args.device, weights=weights,
                         checkpoint=str(ckpt), cma_steps=1, batch_size=1,
                         cma_batch=args.cma_batch)  # fmt: skip
    t0 = time.perf_counter()
    for _ in method.reenact(faces[0], faces):
        break  # CMA runs before the first frame
    print(f"  CMA: 1 step ({args.cma_batch} of 4 frames at 1024², + encoding the clip and one "
          "render) "
          f"{time.perf_counter() - t0:.1f} s; peak RSS {_peak_gib():.1f} GiB")  # fmt: skip


if __name__ == "__main__":
    main()
