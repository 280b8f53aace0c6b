"""StyleGAN2 generator forward time (ms/frame) on seeded weights.

The network is ``reenactbench.nn.stylegan2.Generator`` (rosinality layout, config-f:
style_dim 512, 8 mapping layers, channel multiplier 2) with upstream's initialisation
drawn from ``torch.Generator`` seed 0 (the cost does not depend on the values). One
forward = Z -> W -> W+ -> StyleSpace -> image, noise "const", fp32, ``torch.no_grad``.
Each (size, batch) is warmed up once, then timed over ``--repeats`` runs; the median is
reported as ms per frame (ms per batch / batch).

    python bench/stylegan2.py --sizes 256 1024 --batches 1 4 --repeats 3
    python bench/stylegan2.py --device cuda --dtype bfloat16   # on a GPU machine
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from machine import cpu_name  # bench/machine.py

from reenactbench.nn.stylegan2 import Generator


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_forward(
    size: int, batch: int, repeats: int, device: torch.device, dtype: torch.dtype
) -> float:
    """Median ms per frame of ``Generator(size)`` forward on ``batch`` seeded z codes."""
    net = Generator(size).reset_parameters(torch.Generator().manual_seed(0)).eval()
    net = net.to(device=device, dtype=dtype)
    z = torch.randn(batch, 512, generator=torch.Generator().manual_seed(1)).to(device, dtype)
    times = []
    with torch.no_grad():
        for i in range(repeats + 1):
            _sync(device)
            t = time.perf_counter()
            img, _ = net([z])
            _sync(device)
            if i > 0:  # first run is warm-up
                times.append(time.perf_counter() - t)
    assert img.shape == (batch, 3, size, size)
    return 1000.0 * statistics.median(times) / batch


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[256, 1024])
    p.add_argument("--batches", type=int, nargs="+", default=[1, 4])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    a = p.parse_args()
    device = torch.device(a.device)
    dtype = getattr(torch, a.dtype)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name()
    print(f"# {where}, torch {torch.__version__}, {torch.get_num_threads()} threads, {a.dtype}")
    print("size  batch  ms/frame  frames/s")
    for size in a.sizes:
        for batch in a.batches:
            ms = time_forward(size, batch, a.repeats, device, dtype)
            print(f"{size:4d}  {batch:5d}  {ms:8.1f}  {1000.0 / ms:8.2f}", flush=True)


if __name__ == "__main__":
    main()
