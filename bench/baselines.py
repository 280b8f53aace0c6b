"""FOMM and LIA frames/s at 256x256 on this machine, batch 1 and 8, with seeded weights in
the official layouts (speed does not depend on the weight values).

    python bench/baselines.py
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from machine import cpu_name  # bench/machine.py


def _frames(n: int) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)
    return [np.roll(base, 2 * i, axis=1) for i in range(n)]


def main() -> None:
    sys.path.insert(0, str(Path(__file__).parents[1]))
    from reenactbench.methods import load_method
    from tests.test_fomm import seeded_checkpoint
    from tests.test_lia import seeded_state_dict

    print(f"machine: {cpu_name()}, {os.cpu_count()} cores, torch {torch.__version__}")
    with tempfile.TemporaryDirectory() as tmp:
        fomm, lia = Path(tmp) / "vox-cpk.pth.tar", Path(tmp) / "vox.pt"
        torch.save(seeded_checkpoint(), fomm)
        torch.save({"gen": seeded_state_dict(0)}, lia)
        frames = _frames(16)
        for name, weights in (("fomm", {"fomm-vox": fomm}), ("lia", {"lia-vox": lia})):
            for batch in (1, 8):
                method = load_method(name, weights=weights, batch_size=batch)
                list(method.reenact(frames[0], frames[:batch]))  # warm-up
                t0 = time.perf_counter()
                n = sum(1 for _ in method.reenact(frames[0], frames))
                print(f"{name} 256², batch {batch}: {n / (time.perf_counter() - t0):.2f} frames/s")


if __name__ == "__main__":
    main()
