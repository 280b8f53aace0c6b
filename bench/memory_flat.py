"""Peak memory of a run must not grow with the number of frames.

Runs `same-id` with `static` and the metrics l1, psnr, ssim and fvd (a seeded stand-in
I3D with StyleGAN-V's call signature: the real file is not available offline; the
distribution-metric code path is the same as FID's) over 1,000 and 10,000 synthetic
256x256 frames (2 and 20 videos of 500 frames), each in a child process, and prints the
peak resident memory of each.

    python bench/memory_flat.py
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

CHILD = """
import resource, sys
from pathlib import Path
from reenactbench.protocol import load_protocol
from reenactbench.runner import RunOptions, run_protocol
root = Path(sys.argv[1])
run_protocol(load_protocol(root / "p.toml"), RunOptions(
    data=root / "data", methods=["static"], out=root / "run", batch_size=16,
    weights={"i3d": root / "i3d_torchscript.pt"}))
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def peak_rss_mib(videos: int, frames: int = 500) -> float:
    sys.path.insert(0, str(Path(__file__).parents[1]))
    from reenactbench.video import write_png_folder
    from tests.test_metric_fvd import write_standin_i3d

    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        base = rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)
        for v in range(videos):
            frames_v = (np.roll(base, 3 * i + v, axis=1) for i in range(frames))
            write_png_folder(frames_v, root / "data" / f"v_{v:03d}")
        write_standin_i3d(root / "i3d_torchscript.pt")
        (root / "p.toml").write_text(
            f'name = "mem"\nkind = "same-id"\nsplit = "all"\nmax_videos = {videos}\n'
            f'frames = {frames}\nmetrics = ["l1", "psnr", "ssim", "fvd"]\n'
        )
        res = subprocess.run([sys.executable, "-c", CHILD, str(root)], capture_output=True,
                             text=True, check=True)  # fmt: skip
    return int(res.stdout.strip().splitlines()[-1]) / 1024


def main() -> None:
    for videos in (2, 20):
        print(f"peak RSS, same-id over {videos * 500:,} frames "
              f"(l1, psnr, ssim, fvd): {peak_rss_mib(videos):.0f} MiB")  # fmt: skip


if __name__ == "__main__":
    main()
