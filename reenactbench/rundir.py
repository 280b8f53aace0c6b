"""The run directory's state (steps 3 and 5 of reenactbench/runner.py): opening it under
its lock, its run.json after this command (earlier commands' methods kept), and which
jobs have a record that can be trusted, which must run and which are stale
(docs/caching.md). Rank 0 alone does this in a torchrun run.
"""

from __future__ import annotations

import json
import platform
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import reenactbench
from reenactbench.cache import JobRecord, RecordError, job_fingerprint, record_path
from reenactbench.collect import stale_note
from reenactbench.errors import InputError
from reenactbench.files import atomic_write_text, remove_stale_temps, write_csv
from reenactbench.lock import LOCK_NAME, RunLock
from reenactbench.protocol import Pair
from reenactbench.runstate import RunState

__all__ = [
    "HISTORY_NAME",
    "append_history",
    "check_record",
    "history_entry",
    "now",
    "open_run_dir",
    "plan_jobs",
    "run_info",
]

HISTORY_NAME = "history.jsonl"  #: one line per command that wrote the run directory


# ----------------------------------------------------------------- 3. run directory
def open_run_dir(run: RunState, lock: RunLock) -> dict[str, Any]:
    """Lock the run directory and return the previous run.json (``{}`` if new).

    Raises:
        InputError: locked by another process, another protocol/data/limits, a
            corrupt run.json, or a method name that another class used here before.
    """
    out = run.out
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out}: is a file; pass a folder for the run directory")
    others = [p.name for p in out.iterdir() if p.name != LOCK_NAME] if out.is_dir() else []
    if others and not (out / "run.json").is_file():
        raise InputError(
            f"--out {out}: holds other files ({', '.join(sorted(others)[:3])}) and no "
            "run.json; a run directory is new or made by reenactbench: pass another --out"
        )
    lock.acquire()
    previous: dict[str, Any] = {}
    path = out / "run.json"
    if path.is_file():
        try:
            previous = json.loads(path.read_text())
        except ValueError as e:
            raise InputError(
                f"{path}: not valid JSON ({e}); restore it or pass a new --out"
            ) from None
        if previous.get("setup") != json.loads(json.dumps(run.setup)):
            raise InputError(
                f"{out}: holds a run with a different protocol, data or frame/video limits; "
                "pass a new --out (or delete it to start over)"
            )
        configs = previous.get("configs", {}).get("methods", {})
        for entry in run.entries:
            before = configs.get(entry.name, {}).get("target")
            target = f"{entry.cls.__module__}:{entry.cls.__qualname__}"
            if before and before != target:
                raise InputError(
                    f"{out}: method name {entry.name!r} belongs to {before} in this run "
                    f"directory, not to {target}; rename the class or pass another --out"
                )
        run.say(f"resuming run in {out}")
    for tmp in remove_stale_temps(out):
        run.say(f"removed {tmp.name}: left by a killed writer")
    write_csv(
        out / "pairs.csv",
        ["driving", "source", "source_frame"],
        [{"driving": p.driving, "source": p.source, "source_frame": p.source_frame}
         for p in run.pairs],
    )  # fmt: skip
    return previous


# ----------------------------------------------------------------- 5. plan
def run_info(run: RunState, previous: dict[str, Any], configs: dict[str, Any]) -> dict[str, Any]:
    """run.json of the directory after this command (earlier commands' methods kept)."""
    opts = run.opts
    names = [e.name for e in run.entries]
    method_configs = {**previous.get("configs", {}).get("methods", {}), **configs["methods"]}
    was_skipped = previous.get("skipped_methods", {})
    earlier = [m for m in previous.get("methods", []) if m not in names]
    for m in earlier:
        if m not in method_configs and m not in was_skipped:
            run.say(f"{m}: recorded by an older version of reenactbench: run it again")
    earlier = [m for m in earlier if m in method_configs or m in was_skipped]
    methods = list(dict.fromkeys([*previous.get("methods", []), *names]))
    methods = [m for m in methods if m in names or m in earlier]
    skipped_methods = {k: v for k, v in was_skipped.items() if k in earlier}
    stale_jobs = {k: v for k, v in previous.get("stale_jobs", {}).items() if k not in names}
    return {
        "setup": run.setup,
        "protocol": {k: v for k, v in run.proto.to_dict().items() if k != "path"},
        "methods": methods,
        "metrics": list(run.proto.metrics),
        "skipped_metrics": configs["skipped_metrics"],
        "metric_options": run.proto.metric_options(dict(opts.metric_options)),
        "weights": {**previous.get("weights", {}), **configs["weights"]},
        "weight_flags": configs["weight_flags"],
        "configs": {
            "setup": configs["setup"],
            "metrics": configs["metrics"],
            "methods": {m: method_configs[m] for m in methods if m in method_configs},
        },
        "frames_key": opts.frames_key,
        "dtype": opts.dtype,
        "bootstrap": opts.bootstrap,
        "versions": _versions(),
        "seeds": {"split": run.proto.split_seed, "pairing": run.proto.pairing_seed},
        "short_videos": {v: n for v, n in sorted(run.lengths.items()) if n < run.n_frames},
        "skipped_methods": skipped_methods,
        "stale_jobs": stale_jobs,
    }


def history_entry(run: RunState, started: str) -> dict[str, Any]:
    """This command's line of ``history.jsonl``: where, when and how it ran (what can
    differ between two commands that give the same numbers; run.json holds only what
    the numbers depend on, so a re-run with the same results leaves it unchanged)."""
    opts = run.opts
    return {
        "started": started,
        "finished": None,
        "command": list(sys.argv),
        "methods": [e.name for e in run.entries],
        "protocol_file": str(Path(run.proto.path).resolve()),
        "data": str(Path(opts.data).resolve()),
        "host": platform.node(),
        "device": opts.device,
        "batch_size": opts.batch_size,
        "world_size": run.world.size,
        "git_commit": _git_commit(),
        "timings": {},
    }


def append_history(out: Path, entry: dict[str, Any]) -> None:
    """Append one JSON line to ``out/history.jsonl`` (atomically: the lock holder
    rewrites the file with the line added)."""
    path = out / HISTORY_NAME
    before = path.read_text() if path.is_file() else ""
    atomic_write_text(path, before + json.dumps(entry) + "\n")


def check_record(run: RunState, method: str, pair: Pair) -> tuple[JobRecord | None, str]:
    """The record of (method, pair) if it can be trusted for this run, else ``None``
    and why not: ``missing``, ``unreadable``, ``config`` (made with other settings or
    code), ``inputs`` (its frames changed), ``incomplete`` (no heatmap / frames asked)."""
    path = record_path(run.out, method, pair)
    if not path.is_file():
        return None, "missing"
    try:
        record = JobRecord.read(path)
    except RecordError as e:
        run.say(f"{method} {pair.key}: {e}")
        return None, "unreadable"
    if record.meta.get("fingerprint") != job_fingerprint(run.ids(method), pair):
        return None, "config"
    inputs = record.meta.get("inputs", {})
    mode = run.opts.frames_key
    driving, source = run.videos[pair.driving].path, run.videos[pair.source].path
    if pair.key in run.info["stale_jobs"].get(method, ()) or not (
        run.inputs.matches(inputs.get("driving", {}), driving, 0, run.n_frames, mode)
        and run.inputs.matches(inputs.get("source", {}), source, pair.source_frame, 1, mode)
    ):
        return None, "inputs"
    if run.proto.kind == "robustness" and not record.meta.get("heatmap"):
        return None, "incomplete"  # the Fig. 1 map needs every source's map
    if run.opts.save_frames and not record.meta.get("frames_saved"):
        return None, "incomplete"  # --save-frames asks for the frames: generate them again
    return record, "ok"


def plan_jobs(run: RunState) -> list[tuple[str, int]]:
    """Rank 0: sort every job of the directory into counted, pending (this command's
    methods) and stale (earlier commands' methods); returns the pending jobs.

    A stale record whose config still matches but whose frames changed is listed in
    run.json's ``stale_jobs`` (``report`` cannot see the frames); other stale records
    are recognised by their fingerprint alone."""
    names = {e.name for e in run.entries}
    pending: list[tuple[str, int]] = []
    for method in run.info["methods"]:
        if method not in run.info["configs"]["methods"]:
            continue  # never ran (skipped): nothing recorded
        run.results[method] = {}
        stale, changed_inputs = 0, []
        for i, pair in enumerate(run.pairs):
            record, why = check_record(run, method, pair)
            if record is not None:
                run.results[method][pair.key] = record
            elif method in names:
                pending.append((method, i))
            elif why != "missing":
                stale += 1
                if why == "inputs":
                    changed_inputs.append(pair.key)
        if changed_inputs:
            run.info["stale_jobs"][method] = sorted(changed_inputs)
        if stale:
            run.stale[method] = stale_note(method, stale)
            run.say(f"{method}: {run.stale[method]}")
    done = sum(len(r) for m, r in run.results.items() if m in names)
    if done:
        run.say(f"{done} of {done + len(pending)} jobs already done: not recomputed")
    return pending


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(reenactbench.__file__).parent,
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {"python": platform.python_version(), "reenactbench": reenactbench.__version__}
    for pkg in ("numpy", "av", "scikit-image", "pillow", "torch"):
        try:
            found[pkg] = version(pkg)
        except PackageNotFoundError:
            continue
    return found
