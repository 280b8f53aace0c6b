"""Synthetic videos for fast tests: smooth moving blobs, deterministic per seed."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from reenactbench.video import write_png_folder


def blob_video(n: int, size: int = 64, seed: int = 0) -> np.ndarray:
    """``(n, size, size, 3) uint8``: a coloured disc moving over a gradient, per seed."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    colour = rng.uniform(60, 255, 3)
    cx0, cy0 = rng.uniform(0.3, 0.7, 2)
    frames = np.empty((n, size, size, 3), dtype=np.uint8)
    for t in range(n):
        cx = cx0 + 0.15 * np.sin(t / 3.0 + seed)
        cy = cy0 + 0.1 * np.cos(t / 4.0)
        disc = ((xx - cx) ** 2 + (yy - cy) ** 2) < 0.04
        base = np.stack([xx * 120, yy * 120, (xx + yy) * 40], axis=-1)
        frames[t] = np.where(disc[..., None], colour, base).astype(np.uint8)
    return frames


def write_folder_dataset(root: Path, names: list[str], n: int = 6, size: int = 64) -> Path:
    """A plain folder data set: one PNG frame folder per name."""
    for i, name in enumerate(names):
        write_png_folder(blob_video(n, size, seed=i), root / name)
    return root


def write_protocol(folder: Path, kind: str, **extra: object) -> Path:
    """A small protocol file of ``kind`` (5 frames at 256, uniform robustness sources)."""
    fields: dict[str, object] = {
        "name": f"t_{kind}",
        "kind": kind,
        "split": "all",
        "frames": 5,
        "resolution": 256,
        "metrics": ["l1", "psnr", "ssim", "lpips"],
        "source_selection": "uniform",
        "drivers": 2,
        "sources": 3,
        **extra,
    }
    lines = [f"{k} = {json.dumps(v)}" for k, v in fields.items()]
    path = Path(folder) / f"{kind}.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def read_summary(run_dir: Path) -> dict[tuple[str, str], dict[str, str]]:
    """summary.csv as (method, metric) -> row."""
    with (Path(run_dir) / "summary.csv").open() as f:
        return {(r["method"], r["metric"]): r for r in csv.DictReader(f)}


def write_summary_run(
    root: Path,
    kind: str,
    methods: list[str],
    metrics: list[str],
    rows: list[tuple[str, str, float | None, float | None, str]],
) -> Path:
    """A run directory of run.json and summary.csv only (what ``report`` reads); rows are
    (method, metric, value, std, note)."""
    root.mkdir(parents=True, exist_ok=True)
    run = {
        "protocol": {"name": f"hdtf_{kind.replace('-', '_')}", "kind": kind},
        "methods": methods,
        "metrics": metrics,
    }
    (root / "run.json").write_text(json.dumps(run), encoding="utf-8")
    with (root / "summary.csv").open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["method", "metric", "value", "std", "n", "n_frames", "note"])
        for method, metric, value, std, note in rows:
            n = "" if value is None else 25
            w.writerow([method, metric, "" if value is None else value, std or "", n, 500, note])
    return root
