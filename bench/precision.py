"""What ``--dtype bf16`` (or fp16) does to the metric values: the same methods run in
fp32 and in reduced precision on the same real face frames, scored by the same metrics
(always fp32). Prints, per method, the largest pixel difference of the outputs and the
difference of each metric value between the two runs.

Methods run on SEEDED weights in the official layouts (the real checkpoints cannot be
downloaded here): the outputs are not faces, so these differences show how much the
arithmetic moves a number, not what the trained models would show. Re-run with the real
weights (``--weights NAME=PATH``) on a GPU before relying on bf16.

    python bench/precision.py --data .cache/demo-data [--device cuda] [--dtype bf16]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from machine import cpu_name  # bench/machine.py

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT / ".cache" / "demo-data")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="bf16", choices=["bf16", "fp16"])
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--weights", nargs="*", default=[], help="NAME=PATH real weights")
    args = parser.parse_args()
    from protocol_cost import seeded_weights

    from reenactbench.methods import load_method
    from reenactbench.metrics import resolve_metrics
    from reenactbench.metrics.base import MetricContext, job_value
    from reenactbench.scoring import build_evaluators
    from reenactbench.video import read_frames

    gpu = torch.cuda.get_device_name() if args.device.startswith("cuda") else None
    print(f"machine: {gpu or cpu_name()}, torch {torch.__version__}, {args.dtype} vs fp32")
    videos = ["man_000", "woman_001"]
    frames = {v: read_frames(args.data / "256" / v, max_frames=args.frames) for v in videos}
    with tempfile.TemporaryDirectory() as tmp:
        weights = seeded_weights(Path(tmp))
        weights.update({k: Path(v) for k, v in (w.split("=", 1) for w in args.weights)})
        ctx = MetricContext(device=args.device, batch_size=8, weights=weights)
        evaluators = build_evaluators(resolve_metrics(["l1", "psnr", "ssim", "lpips"]), ctx)
        kinds = {k: "frame" for k in evaluators}
        for name in ("fomm", "lia"):
            values: dict[str, dict[str, list[float]]] = {"fp32": {}, args.dtype: {}}
            outputs: dict[str, list[np.ndarray]] = {"fp32": [], args.dtype: []}
            for dtype in ("fp32", args.dtype):
                method = load_method(name, device=args.device, weights=weights, dtype=dtype)
                for video in videos:
                    real = frames[video]
                    fake = np.stack(list(method.reenact(real[0], real)))
                    outputs[dtype].append(fake)
                    for key, ev in evaluators.items():
                        ev.begin(real[0])
                        ev.add(fake, real)
                        values[dtype].setdefault(key, []).append(job_value(kinds[key], ev.end()))
            diff = max(
                int(np.abs(a.astype(int) - b).max())
                for a, b in zip(outputs["fp32"], outputs[args.dtype], strict=True)
            )
            print(f"{name}: largest output difference {diff} levels (0..255)")
            for key in evaluators:
                a, b = np.mean(values["fp32"][key]), np.mean(values[args.dtype][key])
                print(f"  {key:6s} fp32 {a:10.5f}  {args.dtype} {b:10.5f}  diff {b - a:+.5f}")


if __name__ == "__main__":
    main()
