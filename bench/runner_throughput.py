"""Runner throughput and memory with the pixel metrics (l1, psnr, ssim).

Prints (1) frames/s of `run same-id` with the `static`, `oracle` and `landmark-warp`
methods on the demo data (generation + resize + scoring + bookkeeping), (2) frames/s of
each pixel metric alone at 256x256, and (3) peak resident memory of a same-id run over
one 50-frame and one 500-frame 256x256 video, each in a child process so the number is
that run's alone (it should be flat: frames are streamed, not kept).

    python bench/runner_throughput.py --data .cache/demo-data
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from machine import cpu_name  # bench/machine.py


def bench_runner(data: Path, frames: int) -> dict[str, float]:
    from reenactbench.protocol import load_protocol
    from reenactbench.runner import RunOptions, run_protocol

    proto = load_protocol("demo_same_id")
    proto = type(proto)(**{**proto.to_dict(), "frames": frames, "metrics": ("l1", "psnr", "ssim")})
    out = {}
    for method in ("static", "oracle", "landmark-warp"):
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            run_dir = run_protocol(proto, RunOptions(data=data, methods=[method], out=Path(tmp)))
            dt = time.perf_counter() - t0
            history = (run_dir / "history.jsonl").read_text().splitlines()
            n = json.loads(history[-1])["timings"][method]["frames"]
            out[method] = n / dt
    return out


def bench_metrics(n: int = 64) -> dict[str, float]:
    from reenactbench.metrics.pixel import l1, psnr, ssim

    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (n, 256, 256, 3), dtype=np.uint8)
    b = rng.integers(0, 256, (n, 256, 256, 3), dtype=np.uint8)
    out = {}
    for fn in (l1, psnr, ssim):
        t0 = time.perf_counter()
        fn(a, b)
        out[fn.__name__] = n / (time.perf_counter() - t0)
    return out


CHILD = """
import resource, sys, tempfile
from pathlib import Path
from reenactbench.protocol import load_protocol
from reenactbench.runner import RunOptions, run_protocol
proto = load_protocol(sys.argv[1])
with tempfile.TemporaryDirectory() as tmp:
    run_protocol(proto, RunOptions(data=Path(sys.argv[2]), methods=["static"], out=Path(tmp)))
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def bench_memory(frames: int = 500) -> float:
    """Peak RSS (MiB) of a same-id run over one video of ``frames`` 256x256 frames."""
    from reenactbench.video import write_png_folder

    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        base = rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)
        write_png_folder((np.roll(base, i, axis=1) for i in range(frames)), root / "data" / "v_000")
        (root / "p.toml").write_text(
            f'name = "mem"\nkind = "same-id"\nsplit = "all"\nframes = {frames}\n'
            'metrics = ["l1", "psnr", "ssim"]\n'
        )
        res = subprocess.run(
            [sys.executable, "-c", CHILD, str(root / "p.toml"), str(root / "data")],
            capture_output=True,
            text=True,
            check=True,
        )
    return int(res.stdout.strip().splitlines()[-1]) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="demo data folder")
    parser.add_argument("--frames", type=int, default=32, help="frames per demo video")
    args = parser.parse_args()
    print(f"machine: {cpu_name()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    for method, fps in bench_runner(args.data, args.frames).items():
        print(f"runner same-id, {method:13s} + l1/psnr/ssim @256: {fps:7.1f} frames/s")
    for name, fps in bench_metrics().items():
        print(f"metric {name:5s} @256: {fps:8.1f} frames/s")
    for frames in (50, 500):
        mib = bench_memory(frames)
        print(f"peak RSS, same-id run over one {frames}-frame 256x256 video: {mib:.0f} MiB")


if __name__ == "__main__":
    main()
