"""What hybrid training shows: ``log.csv`` (one row of term means every ``train.log_every``
steps), the sample grids, and ``train_stage{s}.json`` (what the stage trained on, with
what). Only rank 0 calls these.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from reenactbench.errors import InputError

from .train_step import TERMS, WEIGHT_OF, Run

__all__ = [
    "LOG_COLUMNS",
    "Accumulator",
    "append_log",
    "log_row",
    "rewrite_log",
    "save_grid",
    "write_stage_meta",
]

#: Columns of ``log.csv``, in order.
LOG_COLUMNS = (
    "step",
    "stage",
    "total",
    "self",
    "reenact",
    "id",
    "w_id",
    "reg",
    "feat",
    "adv",
    "d",
    "r1",
    "lr",
    "seconds",
)


@dataclass
class Accumulator:
    """Sums of the logged values since the last log row (float64), and how many steps."""

    sums: dict[str, float]
    counts: dict[str, int]

    @classmethod
    def empty(cls) -> Accumulator:
        return cls({}, {})

    def add(self, values: Mapping[str, float]) -> None:
        for k, v in values.items():
            self.sums[k] = self.sums.get(k, 0.0) + float(v)
            self.counts[k] = self.counts.get(k, 0) + 1

    def means(self) -> dict[str, float]:
        return {k: self.sums[k] / self.counts[k] for k in self.sums}


def _fmt(v: float | int | str) -> str:
    if isinstance(v, float):
        return f"{v:.7g}"
    return str(v)


def log_row(
    step: int, stage: int, means: Mapping[str, float], lr: float, seconds: float
) -> dict[str, str]:
    """A ``log.csv`` row; a term that was not computed is blank."""
    row = {c: "" for c in LOG_COLUMNS}
    row.update({k: _fmt(v) for k, v in means.items() if k in row})
    row.update(step=str(step), stage=str(stage), lr=_fmt(lr), seconds=f"{seconds:.3f}")
    return row


def rewrite_log(path: Path, keep: Callable[[dict[str, str]], bool]) -> None:
    """Keep the rows ``keep`` accepts (drops rows of steps a resume will redo)."""
    rows: list[dict[str, str]] = []
    if path.is_file():
        with path.open(newline="") as f:
            reader = csv.DictReader(f)
            if tuple(reader.fieldnames or ()) != LOG_COLUMNS:
                raise InputError(
                    f"{path}: columns {reader.fieldnames} are not {list(LOG_COLUMNS)}; "
                    "use a new --out"
                )
            rows = [r for r in reader if keep(r)]
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=LOG_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)


def append_log(path: Path, row: Mapping[str, str]) -> None:
    with path.open("a", newline="") as f:
        csv.DictWriter(f, fieldnames=LOG_COLUMNS).writerow(row)


def save_grid(images: Mapping[str, Tensor], path: Path) -> None:
    """PNG with one row per sample: source | D1 | S->D1 | D2 | S->D2."""
    from PIL import Image

    cols = [images[k] for k in ("src", "d1", "s_d1", "d2", "s_d2")]
    rows = [torch.cat(list(c), dim=2) for c in zip(*cols, strict=True)]  # (3, S, 5*S) each
    grid = torch.cat(rows, dim=1)  # (3, rows*S, 5*S)
    arr = ((grid.clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).cpu().numpy()
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.ascontiguousarray(arr)).save(path)


def write_stage_meta(
    path: Path, run: Run, data: Path, training_data: list[dict[str, Any]], world: int
) -> None:
    """``train_stage{s}.json``: config, data and its fingerprint, the training videos,
    sampler counts, skipped terms, loss networks, device, AMP, world size."""
    cfg, sampler, dev = run.cfg, run.sampler, run.device
    skipped = [k for k in TERMS if k in WEIGHT_OF and getattr(cfg.loss, WEIGHT_OF[k]) == 0]
    meta = {
        "stage": run.stage,
        "config": asdict(cfg),
        "data": str(data),
        "data_fingerprint": sampler.dataset.fingerprint(),
        "training_data": training_data,
        "frames_cached": sampler.n_cached,
        "frames_excluded_no_face": sampler.excluded,
        "excluded_by_video": sampler.excluded_by_video,
        "cache_bytes": sampler.memory_bytes,
        "skipped_terms": skipped,
        "lpips": "lpips-alex" if run.lpips_fn is not None else None,
        "identity": "ir-se50" if run.id_fn is not None else None,
        "optimizer": "adam",
        "device": str(dev),
        "amp": cfg.train.amp if dev.type == "cuda" else "none",
        "world_size": world,
        "torch": torch.__version__,
    }
    path.write_text(json.dumps(meta, indent=2) + "\n")
