"""A run directory's tables from its job records: ``per_video.csv``, ``summary.csv`` and
the robustness heatmaps, for every method the directory holds (the union of all the
commands that wrote it, and of all the torchrun ranks).

Which records count is decided by ``run.json``'s ``configs``: the setup, metric and
per-method config ids the run directory stands for now (reenactbench/cache.py). A
record made with other ids is *stale* and is named in the table notes, never mixed in.
:func:`rebuild` redoes everything from the records alone (``reenactbench report``).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from reenactbench.cache import JobRecord, RecordError, job_fingerprint, record_path
from reenactbench.errors import InputError
from reenactbench.files import save_npy, write_csv
from reenactbench.lock import RunDirLocked, RunLock
from reenactbench.metrics import resolve_metrics
from reenactbench.protocol import Pair
from reenactbench.summary import PER_VIDEO_COLUMNS, SUMMARY_COLUMNS, summarise

__all__ = [
    "config_ids",
    "read_pairs",
    "load_records",
    "stale_note",
    "write_tables",
    "write_heatmaps",
    "rebuild",
    "refresh",
]


def config_ids(info: dict[str, Any], method: str) -> dict[str, str] | None:
    """The config ids a record of ``method`` must carry to count (``None``: the run
    directory has no config for it, e.g. a method that never ran)."""
    configs = info.get("configs", {})
    method_cfg = configs.get("methods", {}).get(method)
    if method_cfg is None:
        return None
    return {
        "setup": configs["setup"]["id"],
        "metrics": configs["metrics"]["id"],
        "method": method_cfg["id"],
    }


def read_pairs(run_dir: Path) -> list[Pair]:
    """The pairs of ``run_dir/pairs.csv``, in table order."""
    path = Path(run_dir) / "pairs.csv"
    try:
        with path.open(newline="") as f:
            return [
                Pair(r["driving"], r["source"], int(r["source_frame"])) for r in csv.DictReader(f)
            ]
    except (OSError, KeyError, ValueError) as e:
        raise InputError(f"{path}: cannot read the run's pairs ({e}); re-run the run") from None


def load_records(
    run_dir: Path,
    method: str,
    pairs: Sequence[Pair],
    ids: dict[str, str],
    stale_jobs: Sequence[str] = (),
) -> tuple[list[JobRecord], int]:
    """The records of ``method`` made with ``ids``, in pair order, and the number of pairs
    whose record was made otherwise, cannot be read, or whose frames changed since
    (``stale_jobs``: pair keys, as the last run found them)."""
    found, stale = [], 0
    for pair in pairs:
        path = record_path(run_dir, method, pair)
        if not path.is_file():
            continue
        if pair.key in stale_jobs:
            stale += 1
            continue
        try:
            record = JobRecord.read(path)
        except RecordError:
            stale += 1
            continue
        if record.meta.get("fingerprint") == job_fingerprint(ids, pair):
            found.append(record)
        else:
            stale += 1
    return found, stale


def stale_note(method: str, n: int) -> str:
    return (
        f"stale: {n} job(s) made with other metric settings, code or frames; "
        f"re-run with -m {method} to count them"
    )


def write_tables(
    run_dir: Path,
    info: dict[str, Any],
    results: dict[str, list[JobRecord]],
    stale: dict[str, str],
    final: bool,
) -> None:
    """Rewrite per_video.csv and summary.csv (bootstrap intervals only when ``final``:
    they are the slow part)."""
    per_video, summary = summarise(
        info["protocol"]["kind"],
        resolve_metrics(list(info["metrics"])),
        results,
        info["skipped_methods"],
        info["skipped_metrics"],
        n_jobs=len(info["setup"]["pairs"]),
        bootstrap=info["bootstrap"] if final else 0,
        weight_flags=info["weight_flags"],
        final=final,
        stale=stale,
    )
    write_csv(Path(run_dir) / "per_video.csv", PER_VIDEO_COLUMNS, per_video)
    write_csv(Path(run_dir) / "summary.csv", SUMMARY_COLUMNS, summary)


def write_heatmaps(run_dir: Path, results: dict[str, list[JobRecord]]) -> None:
    """Per method and driving video: the per-pixel L1 map averaged over its sources
    (robustness; paper Fig. 1). Every map comes from a counted record."""
    for method, records in results.items():
        maps: dict[str, list[np.ndarray]] = {}
        for record in records:
            heat = record.heatmap()
            if heat is None:
                raise RecordError(f"{record.path}: robustness record without its heatmap")
            maps.setdefault(record.pair.driving, []).append(heat)
        for video, arrays in maps.items():
            mean = np.mean(np.stack(arrays), axis=0).astype(np.float32)
            save_npy(Path(run_dir) / "heatmaps" / method / f"{video}.npy", mean)


def rebuild(run_dir: Path, say: Callable[[str], None] | None = None) -> None:
    """Rewrite the tables and heatmaps of ``run_dir`` from its records alone.

    Raises:
        InputError: no run.json / pairs.csv, or a run.json without configs (made by an
            older version: run the run again to rebuild its cache).
    """
    run_dir = Path(run_dir)
    path = run_dir / "run.json"
    try:
        info = json.loads(path.read_text())
        info["configs"]["metrics"]["id"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise InputError(
            f"{path}: cannot rebuild tables from this run.json ({e!r}); run the run again"
        ) from None
    pairs = read_pairs(run_dir)
    results: dict[str, list[JobRecord]] = {}
    stale: dict[str, str] = {}
    for method in info["methods"]:
        ids = config_ids(info, method)
        if ids is None:
            continue
        results[method], n_stale = load_records(
            run_dir, method, pairs, ids, info.get("stale_jobs", {}).get(method, ())
        )
        if n_stale:
            stale[method] = stale_note(method, n_stale)
            (say or (lambda _m: None))(f"{method}: {stale[method]}")
    write_tables(run_dir, info, results, stale, final=True)
    if info["protocol"]["kind"] == "robustness":
        write_heatmaps(run_dir, results)


def refresh(run_dir: Path, say: Callable[[str], None] | None = None) -> bool:
    """:func:`rebuild` if ``run_dir`` has a cache and no command is writing it.

    Returns:
        Whether the tables were rebuilt (``False``: no cache, e.g. a committed run
        without it, or a run in progress: its current summary.csv stands).
    """
    say = say or (lambda _m: None)
    if not (Path(run_dir) / "cache").is_dir():
        return False
    try:
        with RunLock(run_dir, say=say):
            rebuild(run_dir, say)
    except RunDirLocked as e:
        say(f"{e}; using its current summary.csv")
        return False
    return True
