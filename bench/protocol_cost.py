"""Projected wall time of the paper's protocols (Tables 1, 2, 3) on this machine.

Measures, on the current device, the per-frame cost of each implemented method at its
paper size and of each metric at the 256x256 evaluation size, then projects:

* Table 1 (same-id): 75 videos x 500 frames; l1, lpips, id, psnr, ssim, fid, fvd,
  fvd_mouth, au/gaze/pose correlations;
* Table 2 (cross-id): 75 x 500 frames; fid, fvd, fvd_mouth, au_gaze_corr, pose_corr;
* Table 3 (robustness): 25 runs x 500 frames; lpips, id, fid, fvd, l1;

per method = frames x (decode + method + the table's metrics) + per-video costs (the
hybrid method's CMA) + the pooled Frechet distances. Every network runs on seeded random
weights in its official layout (speed does not depend on the values); the FVD detector
is an Inception-I3D of the real architecture (bench/i3d_arch.py) unless ``--i3d FILE``
gives the real one. One GPU serves one rank: divide by the number of GPUs for a torchrun
run (jobs shard evenly).

    python bench/protocol_cost.py --data .cache/demo-data            # CPU, ~5 min on 2 cores
    python bench/protocol_cost.py --data DATA --device cuda --batch 32 [--dtype bf16]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from machine import cpu_name  # bench/machine.py

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TABLES = {
    "Table 1 (same-id)": (
        37_500,
        75,
        ["l1", "lpips", "id", "psnr", "ssim", "fid", "fvd", "fvd_mouth", "temporal"],
        3,
    ),
    "Table 2 (cross-id)": (37_500, 75, ["fid", "fvd", "fvd_mouth", "temporal"], 3),
    "Table 3 (robustness)": (12_500, 25, ["lpips", "id", "fid", "fvd", "l1"], 2),
}  # fmt: skip  (frames, videos, metrics, pooled Frechet distances)
#: The paper's six methods.
PAPER_METHODS = ("hybrid", "fomm", "lia", "pirenderer", "styleheat", "fs-vid2vid")
NOT_MEASURED: dict[str, str] = {}


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _per_frame(fn: Callable[[], int], device: str, repeats: int = 2) -> float:
    """Best seconds per frame of ``fn`` (which returns the frames it processed)."""
    fn()  # warm-up
    best = float("inf")
    for _ in range(repeats):
        _sync(device)
        t0 = time.perf_counter()
        n = fn()
        _sync(device)
        best = min(best, (time.perf_counter() - t0) / n)
    return best


def _faces(data: Path, n: int) -> np.ndarray:
    from reenactbench.video import read_frames

    folder = data / "256" / "man_000" if (data / "256").is_dir() else data
    return read_frames(folder, max_frames=n, size=256)


def seeded_weights(tmp: Path) -> dict[str, Path]:
    from tests.test_deep3d import seeded_checkpoint as deep3d_checkpoint
    from tests.test_fomm import seeded_checkpoint
    from tests.test_fsvid2vid_model import seeded_checkpoint as fsvid2vid_checkpoint
    from tests.test_irse50 import seeded_state_dict as irse50_state
    from tests.test_lia import seeded_state_dict as lia_state
    from tests.test_metric_fid import seeded_inception_state
    from tests.test_metric_lpips import seeded_alexnet_state
    from tests.test_pirenderer import seeded_checkpoint as pirenderer_checkpoint
    from tests.test_stylegan2 import seeded_checkpoint as stylegan_checkpoint
    from tests.test_styleheat_calibration import seeded_styleheat_checkpoint
    from tests.test_styleheat_inversion import seeded_e4e_checkpoint, seeded_hfgi_checkpoint

    def stylegan_1024() -> dict:
        return stylegan_checkpoint(0, size=1024, style_dim=512, n_mlp=8, channel_multiplier=2)[
            "g_ema"
        ]

    # built, saved and dropped one at a time: together they are several GB
    files: dict[str, tuple[Callable[[], object], str]] = {
        "pirenderer-vox": (lambda: pirenderer_checkpoint(0), "pirenderer.pt"),
        "deep3d-recon": (lambda: deep3d_checkpoint(0), "epoch_20.pth"),
        "styleheat": (lambda: seeded_styleheat_checkpoint(0), "StyleHEAT_visual.pt"),
        "styleheat-e4e": (lambda: seeded_e4e_checkpoint(0), "Encoder_e4e.pth"),
        "styleheat-hfgi": (lambda: seeded_hfgi_checkpoint(0), "hfgi.pth"),
        "styleheat-stylegan": (stylegan_1024, "StyleGAN_e4e.pth"),
        "fs-vid2vid-face": (lambda: fsvid2vid_checkpoint(0), "ampO1.pt"),
        "fomm-vox": (seeded_checkpoint, "vox-cpk.pth.tar"),
        "lia-vox": (lambda: {"gen": lia_state(0)}, "vox.pt"),
        "lpips-alex": (seeded_alexnet_state, "alexnet-owt-7be5be79.pth"),
        "fid-inception": (seeded_inception_state, "pt_inception-2015-12-05-6726825d.pth"),
        "ir-se50": (irse50_state, "model_ir_se50.pth"),
    }
    out = {}
    for name, (make, filename) in files.items():
        out[name] = tmp / filename
        torch.save(make(), out[name])
        release_memory()
    return out


def release_memory() -> None:
    """Drop the test helpers' cached seeded state dicts and hand freed memory back to the
    system (the 1024² methods and CMA need it)."""
    import ctypes
    import gc

    for module, name in (("tests.test_stylegan2", "_seeded"),
                         ("tests.test_fsvid2vid_model", "_seeded_net_g")):  # fmt: skip
        fn = getattr(sys.modules.get(module), name, None)
        if fn is not None and hasattr(fn, "cache_clear"):
            fn.cache_clear()
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass


def hybrid_checkpoint(tmp: Path) -> Path:
    """The paper config (1024² G, IR-SE50 pyramid encoder) with seeded weights."""
    from dataclasses import replace

    from reenactbench.baselines.hybrid.checkpoint import save_checkpoint
    from reenactbench.baselines.hybrid.config import load_config
    from reenactbench.baselines.hybrid.model import build_model

    cfg = load_config("paper")
    cfg = replace(
        cfg,
        generator=replace(cfg.generator, weights="seeded"),
        encoder=replace(cfg.encoder, init_irse50=False),
    )
    return save_checkpoint(tmp / "hybrid-paper-seeded.pt", build_model(cfg))


def method_costs(args, weights, faces, tmp) -> dict[str, dict[str, float]]:
    """Seconds per frame of each method (and CMA seconds per video for hybrid)."""
    from reenactbench.methods import input_resolution, load_method

    runs = {
        "static": ("static", {}),
        "fomm": ("fomm", {"batch_size": args.batch, "dtype": args.dtype}),
        "lia": ("lia", {"batch_size": args.batch, "dtype": args.dtype}),
        "landmark-warp": ("landmark-warp", {}),
        "pirenderer": ("pirenderer", {"batch_size": args.batch, "dtype": args.dtype}),
        "styleheat": ("styleheat", {"batch_size": args.batch // 2 or 1, "dtype": args.dtype}),
        "fs-vid2vid": ("fs-vid2vid", {"dtype": args.dtype}),
    }
    ckpt = hybrid_checkpoint(tmp) if not args.skip_hybrid else None
    if ckpt is not None:
        runs["hybrid"] = (
            "hybrid-no-cma", {"checkpoint": str(ckpt), "batch_size": args.batch // 4 or 1,
                              "dtype": args.dtype},
        )  # fmt: skip
    out: dict[str, dict[str, float]] = {}
    for label, (name, options) in runs.items():
        method = load_method(name, device=args.device, weights=weights, **options)
        r, r_in = method.resolution, input_resolution(method)
        frames = [np.ascontiguousarray(np.array(_resize(f, r_in))) for f in faces[: args.frames]]
        n = len(frames) if r <= 256 else max(2, len(frames) // 4)
        sec = _per_frame(lambda m=method, fr=frames[:n]: sum(1 for _ in m.reenact(fr[0], fr)),
                         args.device, repeats=1 if r > 256 else 2)  # fmt: skip
        out[label] = {"per_frame": sec}
        del method
        release_memory()
        what = " without CMA" if label == "hybrid" else ""
        print(f"  method {label:24s} {1000 * sec:9.1f} ms/frame  ({r}²{what})", flush=True)
    if ckpt is not None and not args.skip_cma:
        from reenactbench.baselines.hybrid.config import load_config

        cma = load_config("paper").cma
        method = load_method("hybrid", device=args.device, weights=weights,
                             checkpoint=str(ckpt), cma_steps=1, batch_size=1)  # fmt: skip
        frames = [_resize(f, 1024) for f in faces[: cma.batch]]
        t0 = time.perf_counter()
        for _ in method.reenact(frames[0], frames[:1]):
            break  # CMA runs before the first frame
        one_step = time.perf_counter() - t0
        out["hybrid"]["per_video"] = one_step * cma.steps
        print(f"  method hybrid CMA: {one_step:.1f} s/step x {cma.steps} steps = "
              f"{one_step * cma.steps:.0f} s/video", flush=True)  # fmt: skip
    return out


def _resize(frame: np.ndarray, size: int) -> np.ndarray:
    from reenactbench.video import resize

    return resize(frame, size)


def metric_costs(args, weights, faces, tmp) -> dict[str, float]:
    """Seconds per frame of each metric at 256² (fake + real sides)."""
    from reenactbench.metrics import resolve_metrics
    from reenactbench.metrics.base import MetricContext
    from reenactbench.scoring import build_evaluators

    i3d = Path(args.i3d) if args.i3d else None
    if i3d is None:
        from i3d_arch import save_scripted

        i3d = Path(save_scripted(str(tmp / "i3d_torchscript.pt")))
    ctx = MetricContext(
        device=args.device,
        batch_size=args.batch,
        weights={**weights, "i3d": i3d},
        options={"id_backend": "irse50", "temporal_backend": "landmarks"},
    )
    keys = ["l1", "psnr", "ssim", "lpips", "id", "fid", "fvd", "fvd_mouth", "pose_corr"]
    evaluators = build_evaluators(resolve_metrics(keys), ctx)
    fake = faces[: args.metric_frames]
    out: dict[str, float] = {}
    calls = [0]
    for key, ev in evaluators.items():

        def run(ev=ev) -> int:
            # new generated frames every call (attribute rows are cached per distinct
            # frame, as in a run: the ground truth's are computed once for all methods)
            calls[0] += 1
            noisy = np.clip(fake.astype(np.int16) + calls[0], 0, 255).astype(np.uint8)
            ev.begin(fake[0])
            for i in range(0, len(fake), args.batch):
                ev.add(noisy[i : i + args.batch], fake[i : i + args.batch])
            ev.end()
            return len(fake)

        name = "temporal" if key == "pose_corr" else key
        out[name] = _per_frame(run, args.device)
        label = "au/gaze/pose (landmarks)" if key == "pose_corr" else key
        fvd = key.startswith("fvd") and not args.i3d
        note = " (I3D architecture, random weights)" if fvd else ""
        print(f"  metric {label:24s} {1000 * out[name]:9.1f} ms/frame{note}", flush=True)
    return out


def frechet_seconds() -> float:
    from reenactbench.metrics.frechet import GaussianStats, frechet_distance

    rng = np.random.default_rng(0)
    a, b = GaussianStats.empty(2048), GaussianStats.empty(2048)
    a.add(rng.normal(size=(4096, 2048)))
    b.add(rng.normal(size=(4096, 2048)))
    t0 = time.perf_counter()
    frechet_distance(a, b)
    return time.perf_counter() - t0


def decode_seconds(data: Path, frames: int) -> float:
    from reenactbench.video import iter_frames, resize

    folder = data / "256" / "man_000" if (data / "256").is_dir() else data
    t0 = time.perf_counter()
    n = sum(1 for f in iter_frames(folder, max_frames=frames) if resize(f, 256) is not None)
    return (time.perf_counter() - t0) / n


def project(methods, metrics, decode, frechet) -> list[dict[str, object]]:
    """Hours per (table, method), and the sum over the paper's methods measured."""
    rows = []
    for table, (frames, videos, keys, n_frechet) in TABLES.items():
        metric_sec = sum(metrics[k] for k in keys)
        total = 0.0
        for label, cost in methods.items():
            sec = frames * (decode + cost["per_frame"] + metric_sec)
            sec += videos * cost.get("per_video", 0.0) + n_frechet * frechet
            total += sec if label in PAPER_METHODS else 0.0
            rows.append({"table": table, "method": label, "hours": sec / 3600})
        measured = [m for m in PAPER_METHODS if m in methods]
        label = f"paper methods ({', '.join(measured)})"
        rows.append({"table": table, "method": label, "hours": total / 3600})
        rows.append(
            {
                "table": table,
                "method": "  of which metrics",
                "hours": len(measured) * frames * metric_sec / 3600,
            }
        )  # noqa: E501
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT / ".cache" / "demo-data")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--dtype", default="fp32", choices=["fp32", "bf16", "fp16"])
    parser.add_argument("--frames", type=int, default=16, help="frames per method timing")
    parser.add_argument("--metric-frames", type=int, default=32)
    parser.add_argument("--i3d", help="the real i3d_torchscript.pt (default: architecture)")
    parser.add_argument("--skip-hybrid", action="store_true")
    parser.add_argument("--skip-cma", action="store_true")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    gpu = torch.cuda.get_device_name() if args.device.startswith("cuda") else None
    print(f"machine: {gpu or cpu_name()}, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"device {args.device}, batch {args.batch}, dtype {args.dtype}")  # fmt: skip
    faces = _faces(args.data, max(args.frames, args.metric_frames))
    with tempfile.TemporaryDirectory() as tmp_:
        tmp = Path(tmp_)
        weights = seeded_weights(tmp)
        decode = decode_seconds(args.data, 64)
        print(f"  decode + resize (PNG 256²)         {1000 * decode:9.1f} ms/frame")
        methods = method_costs(args, weights, faces, tmp)
        metrics = metric_costs(args, weights, faces, tmp)
    frechet = frechet_seconds()
    print(f"  pooled Frechet distance, D = 2048  {frechet:9.2f} s each")
    rows = project(methods, metrics, decode, frechet)
    print("\nprojected wall time on this device (one rank), hours:")
    for row in rows:
        print(f"  {row['table']:22s} {row['method']:34s} {row['hours']:10.2f}")
    for name, issue in NOT_MEASURED.items():
        print(f"  not measured: {name} (no adapter yet, {issue})")
    if args.json:
        args.json.write_text(json.dumps(
            {"methods": methods, "metrics": metrics, "decode": decode, "frechet": frechet,
             "projection": rows, "device": gpu or cpu_name(), "dtype": args.dtype,
             "batch": args.batch}, indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
