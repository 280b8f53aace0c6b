"""Hybrid method timings on this machine: training step (tiny config) and inference
frames/s without CMA (tiny config, seeded generator) and with 2 CMA steps.

    python bench/hybrid.py --data .cache/demo-data

The paper config (1024² G, IR-SE50 encoder) needs the real weights and a GPU; its
generator and encoder costs alone are measured by bench/stylegan2.py.
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--iters", type=int, default=40)
    args = parser.parse_args()
    from reenactbench.baselines.hybrid.config import load_config
    from reenactbench.baselines.hybrid.train import train_hybrid

    from reenactbench.methods import load_method
    from reenactbench.video import read_frames

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        ckpt = train_hybrid(load_config("tiny"), args.data, Path(tmp), max_iters=args.iters)
        dt = time.perf_counter() - t0
        print(f"tiny training (batch 8, incl. data caching): {1000 * dt / args.iters:.0f} ms/step")
        frames = read_frames(args.data / "256" / "man_000")
        method = load_method("hybrid-no-cma", checkpoint=str(ckpt))
        src = frames[0][::4, ::4]
        drv = [f[::4, ::4] for f in frames]
        t0 = time.perf_counter()
        n = sum(1 for _ in method.reenact(np.ascontiguousarray(src), drv))
        print(f"tiny inference, no CMA (64²): {n / (time.perf_counter() - t0):.1f} frames/s")
    print(f"peak RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
