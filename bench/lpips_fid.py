"""Throughput of LPIPS and FID feature extraction, ours next to the reference packages.

Frames/s at 256x256 RGB (the evaluation resolution), batch 16, on seeded random weights
in the official formats (torchvision AlexNet; pytorch-fid Inception), in one process:

* LPIPS: ``reenactbench.metrics.lpips.lpips_distance`` vs ``lpips.LPIPS`` (same trunk),
  frames/s = frame pairs per second;
* FID features: ``reenactbench.metrics.fid.inception_features`` vs pytorch-fid's
  ``InceptionV3([3])`` (same weights), frames/s = frames through Inception (a job costs
  fake + real frames).

Each timing is the best of ``--repeats`` passes after one warm-up batch; the ratio is
ours / reference (1.0 = same speed). Prints a table and optionally ``--json FILE``.

    python bench/lpips_fid.py --frames 64 --batch 16
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
from machine import cpu_name  # bench/machine.py


def _best_rate(fn: Callable[[], object], n: int, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return n / best


def bench_lpips(frames: np.ndarray, other: np.ndarray, batch: int, repeats: int, tmp: Path):
    import lpips
    import torch
    import torchvision

    from reenactbench.metrics.lpips import TRUNK_LAYERS, load_lpips_alex, lpips_distance

    torch.manual_seed(0)
    state = torchvision.models.alexnet(weights=None).state_dict()
    path = tmp / "alexnet-owt-7be5be79.pth"
    torch.save(state, path)
    ours = load_lpips_alex(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        ref = lpips.LPIPS(net="alex", pretrained=True, pnet_rand=True, verbose=False).eval()
    with torch.no_grad():
        for i, name in TRUNK_LAYERS.items():
            conv = getattr(getattr(ref.net, name), str(i))
            conv.weight.copy_(state[f"features.{i}.weight"])
            conv.bias.copy_(state[f"features.{i}.bias"])

    def run_ref() -> None:
        with torch.no_grad():
            for i in range(0, len(frames), batch):
                a = torch.from_numpy(frames[i : i + batch]).permute(0, 3, 1, 2).float() / 127.5 - 1
                b = torch.from_numpy(other[i : i + batch]).permute(0, 3, 1, 2).float() / 127.5 - 1
                ref(a, b)

    lpips_distance(ours, frames[:batch], other[:batch], batch_size=batch)  # warm-up
    run_ref()
    n = len(frames)
    r_ours = _best_rate(lambda: lpips_distance(ours, frames, other, batch_size=batch), n, repeats)
    r_ref = _best_rate(run_ref, n, repeats)
    return r_ours, r_ref


def bench_fid(frames: np.ndarray, batch: int, repeats: int, tmp: Path):
    import pytorch_fid.inception as pfi
    import torch

    from reenactbench.metrics.fid import inception_features
    from reenactbench.metrics.inception import FIDInception, load_fid_inception

    g = torch.Generator().manual_seed(0)
    state = {}
    for key, t in FIDInception().state_dict().items():
        if key.endswith("num_batches_tracked"):
            continue
        if t.ndim == 4:
            state[key] = torch.randn(t.shape, generator=g) * (2.0 / t[0].numel()) ** 0.5
        elif key.endswith(("running_var", "bn.weight")):
            state[key] = torch.rand(t.shape, generator=g) + 0.5
        else:
            state[key] = torch.randn(t.shape, generator=g) * 0.05
    path = tmp / "pt_inception-2015-12-05-6726825d.pth"
    torch.save(state, path)
    ours = load_fid_inception(path)
    original = pfi.load_state_dict_from_url
    pfi.load_state_dict_from_url = lambda *a, **k: torch.load(path)
    try:
        ref = pfi.InceptionV3([3]).eval()
    finally:
        pfi.load_state_dict_from_url = original

    def run_ref() -> None:
        with torch.no_grad():
            for i in range(0, len(frames), batch):
                x = torch.from_numpy(frames[i : i + batch]).permute(0, 3, 1, 2).float() / 255
                ref(x)[0].squeeze(3).squeeze(2).numpy()

    inception_features(ours, frames[:batch], batch_size=batch)  # warm-up
    run_ref()
    n = len(frames)
    r_ours = _best_rate(lambda: inception_features(ours, frames, batch_size=batch), n, repeats)
    r_ref = _best_rate(run_ref, n, repeats)
    return r_ours, r_ref


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=64)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()

    import torch

    rng = np.random.default_rng(0)
    shape = (args.frames, args.size, args.size, 3)
    frames = rng.integers(0, 256, size=shape, dtype=np.uint8)
    other = rng.integers(0, 256, size=shape, dtype=np.uint8)
    with tempfile.TemporaryDirectory() as tmp:
        lp = bench_lpips(frames, other, args.batch, args.repeats, Path(tmp))
        fd = bench_fid(frames, args.batch, args.repeats, Path(tmp))
    result = {
        "cpu": cpu_name(),
        "torch_threads": torch.get_num_threads(),
        "frames": args.frames,
        "batch": args.batch,
        "size": args.size,
        "lpips_fps": {"ours": lp[0], "lpips": lp[1], "ratio": lp[0] / lp[1]},
        "fid_features_fps": {"ours": fd[0], "pytorch_fid": fd[1], "ratio": fd[0] / fd[1]},
    }
    print(f"{result['cpu']}, torch threads {result['torch_threads']}, ", end="")
    print(f"{args.frames} frames {args.size}x{args.size}, batch {args.batch}")
    print(f"{'':22}{'ours':>10}{'reference':>12}{'ratio':>8}")
    print(f"{'lpips (pairs/s)':22}{lp[0]:10.1f}{lp[1]:12.1f}{lp[0] / lp[1]:8.2f}")
    print(f"{'fid features (fr/s)':22}{fd[0]:10.2f}{fd[1]:12.2f}{fd[0] / fd[1]:8.2f}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
