"""Run a protocol: every (method, pair) job generated, scored and recorded; tables written.

:func:`run_protocol` goes through these steps, one function each:

1. :func:`~reenactbench.runstate.resolve_methods`: method classes, unique names, known
   options; before any work;
2. :func:`~reenactbench.runstate.load_inputs`: the data and the (source, driving) pairs;
3. :func:`~reenactbench.rundir.open_run_dir`: under the run directory's lock, the same
   protocol and data as before, no method name claimed by another class;
4. :func:`~reenactbench.runstate.make_configs`: what identifies each method's and the
   metrics' numbers (reenactbench/cache.py);
5. :func:`~reenactbench.rundir.plan_jobs`: which jobs have a valid record, which must run,
   which are stale;
6. :func:`_run_share`: this process's share of the pending jobs, one record each;
7. :func:`_finish`: tables from the records of every method of the run directory.

Under ``torchrun`` every rank runs the same steps; rank 0 alone does 3, 5 and 7 and
shares its results, and the pending jobs of step 6 are dealt out round-robin over the
ranks (reenactbench/distributed.py, docs/scaling.md). A killed run resumes where it
stopped: only jobs without a valid record run again. Methods and metrics that cannot run
here are reported as skipped, never as numbers.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from reenactbench.cache import (
    JobRecord,
    RecordError,
    job_fingerprint,
    method_cache_dir,
    record_path,
)
from reenactbench.collect import write_heatmaps, write_tables
from reenactbench.distributed import World
from reenactbench.errors import InputError, MethodUnavailable, WeightsMissing
from reenactbench.files import write_json
from reenactbench.job import run_job
from reenactbench.lock import RunLock
from reenactbench.methods import Method, load_method
from reenactbench.protocol import Pair, Protocol
from reenactbench.rundir import (
    append_history,
    history_entry,
    now,
    open_run_dir,
    plan_jobs,
    run_info,
)
from reenactbench.runstate import (
    MessageFn,
    MethodEntry,
    RunOptions,
    RunState,
    check_metric_packages,
    load_inputs,
    make_configs,
    resolve_methods,
    warn_trained_on_evaluated,
)
from reenactbench.scoring import JobScorer, build_evaluators

__all__ = ["MethodEntry", "RunOptions", "resolve_methods", "run_protocol"]

ProgressFn = Callable[[str, int, int], None]  #: (stage, done, total)


# ----------------------------------------------------------------- 6. jobs
class _Methods:
    """Methods built on first use (a resumed run loads nothing it does not need)."""

    def __init__(self, run: RunState) -> None:
        self.run = run
        self.loaded: dict[str, Method] = {}
        self.skipped: dict[str, str] = {}

    def get(self, name: str) -> Method | None:
        if name in self.skipped:
            return None
        if name not in self.loaded:
            entry = next(e for e in self.run.entries if e.name == name)
            assert self.run.ctx is not None
            try:
                self.loaded[name] = load_method(
                    entry.spec, device=self.run.ctx.device, weights=self.run.opts.weights,
                    **entry.options,
                )  # fmt: skip
            except (WeightsMissing, MethodUnavailable) as e:
                self.skipped[name] = str(e)
                self.run.info["skipped_methods"][name] = str(e)
                self.run.say(f"skipped: method {name}: {e}")
                return None
            set_cache_dir = getattr(self.loaded[name], "set_cache_dir", None)
            if callable(set_cache_dir):  # the optional hook (docs/adapters.md)
                set_cache_dir(method_cache_dir(self.run.out, name, self.run.ids(name)["method"]))
        return self.loaded[name]

    def release_all_but(self, name: str) -> None:
        """Free the methods whose jobs are done (a rank's share is ordered by method),
        so one GPU holds one method's networks at a time."""
        for other in [m for m in self.loaded if m != name]:
            del self.loaded[other]
            if self.run.ctx is not None and self.run.ctx.device.startswith("cuda"):
                import torch

                torch.cuda.empty_cache()


def _run_share(run: RunState, share: list[tuple[str, int]], progress: ProgressFn) -> dict[str, Any]:
    """Run this rank's jobs, committing a record after each; rank 0 also rewrites the
    tables after each. Returns what rank 0 merges: timings and skipped methods."""
    assert run.ctx is not None
    methods = _Methods(run)
    scorer: JobScorer | None = None  # built on the first job that needs computing
    kinds = {s.key: s.kind for s in run.runnable}
    timings: dict[str, dict[str, float]] = {}
    # progress in frames, per method (a job of 500 frames at 1024² takes minutes)
    totals = {
        m: sum(run.lengths[run.pairs[i].driving] for n, i in share if n == m) for m, _ in share
    }
    done = dict.fromkeys(totals, 0)

    def tick(name: str) -> None:
        done[name] += 1
        progress(name, done[name], totals[name])

    for name, index in share:
        pair = run.pairs[index]
        methods.release_all_but(name)
        method = methods.get(name)
        if method is None:
            continue
        scorer = scorer or JobScorer(build_evaluators(run.runnable, run.ctx))
        path = record_path(run.out, name, pair)
        frame_dir = path.parent / "frames" if run.opts.save_frames else None
        shutil.rmtree(path.parent / "frames", ignore_errors=True)  # an unfinished job's
        t0 = time.perf_counter()
        output = run_job(
            method, pair, run.videos, run.proto.resolution, run.lengths[pair.driving], scorer,
            run.opts.batch_size, frame_dir, on_frame=lambda name=name: tick(name),
            score_source_frame=run.proto.score_source_frame,
        )  # fmt: skip
        seconds = time.perf_counter() - t0
        meta = _record_meta(run, name, pair, output.n_frames, seconds, frame_dir is not None)
        heatmap = output.heatmap if run.proto.kind == "robustness" else None
        record = JobRecord.write(path, meta, output.parts, kinds, heatmap)
        t = timings.setdefault(name, {"seconds": 0.0, "frames": 0})
        t["seconds"] += seconds
        t["frames"] += output.n_frames
        if run.world.is_main:
            run.results.setdefault(name, {})[pair.key] = record
            write_tables(run.out, run.info, run.ordered_results(), run.stale, final=False)
        progress(name, done[name], totals[name])
    return {"timings": timings, "skipped": methods.skipped, "rank": run.world.label()}


def _record_meta(
    run: RunState, name: str, pair: Pair, n_frames: int, seconds: float, frames_saved: bool
) -> dict[str, Any]:
    """The metadata of a job record (reenactbench/cache.py)."""
    assert run.ctx is not None
    videos = run.videos
    return {
        "method": name,
        "pair": {"driving": pair.driving, "source": pair.source, "source_frame": pair.source_frame},
        "n_frames": n_frames,
        "fingerprint": job_fingerprint(run.ids(name), pair),
        "config": run.ids(name),
        "inputs": {
            "driving": run.inputs.keys(videos[pair.driving].path, 0, run.n_frames),
            "source": run.inputs.keys(videos[pair.source].path, pair.source_frame, 1),
        },
        "frames_saved": frames_saved,
        "runtime": {"device": run.ctx.device, "batch_size": run.opts.batch_size,
                    "seconds": round(seconds, 3), "rank": run.world.rank, "host": run.world.host},
    }  # fmt: skip


# ----------------------------------------------------------------- 7. merge
def _finish(
    run: RunState,
    pending: list[tuple[str, int]],
    reports: list[dict[str, Any]],
    history: dict[str, Any],
) -> None:
    """Rank 0: read the records the other ranks wrote, then the final tables; the
    command's timings go to its ``history.jsonl`` line."""
    info = run.info
    for report in reports:
        for name, why in report["skipped"].items():
            where = f" ({report['rank']})" if run.world.distributed else ""
            info["skipped_methods"][name] = f"{why}{where}"
    for name in {n for n, _ in pending}:
        if name in info["skipped_methods"]:
            run.results.pop(name, None)
            continue
        seconds = sum(r["timings"].get(name, {}).get("seconds", 0.0) for r in reports)
        frames = sum(r["timings"].get(name, {}).get("frames", 0) for r in reports)
        if frames:
            history["timings"][name] = {
                "seconds": round(seconds, 3),
                "frames": frames,
                "frames_per_s": round(frames / seconds, 2) if seconds else None,
                "ranks": run.world.size,
            }
    for name, index in pending:
        pair = run.pairs[index]
        if name in info["skipped_methods"] or pair.key in run.results.get(name, {}):
            continue
        try:
            record = JobRecord.read(record_path(run.out, name, pair))
        except RecordError as e:
            raise InputError(f"{e}: a rank did not finish its job; run the command again") from None
        run.results.setdefault(name, {})[pair.key] = record
    results = run.ordered_results()
    if run.proto.kind == "robustness":
        write_heatmaps(run.out, results)
    write_tables(run.out, info, results, run.stale, final=True)
    write_json(run.out / "run.json", info)
    history["finished"] = now()
    append_history(run.out, history)


def run_protocol(
    proto: Protocol,
    opts: RunOptions,
    on_progress: ProgressFn | None = None,
    on_message: MessageFn | None = None,
) -> Path:
    """Run ``proto`` for every method of ``opts`` and write the run directory.

    Returns:
        The run directory (``opts.out``).

    Raises:
        ReenactbenchError: bad data, protocol, method name or option, run directory in
            use or of another protocol. Methods that cannot run here (missing weights or
            dependencies) are skipped instead.
    """
    world = opts.world or World()
    say = on_message or (lambda _m: None)
    progress = on_progress or (lambda _s, _d, _t: None)
    entries = world.agree(lambda: resolve_methods(opts, say))
    assert entries is not None
    world.agree(lambda: check_metric_packages(proto, opts))
    run = RunState(proto, opts, world, say, entries)
    started = now()
    load_inputs(run)
    if world.is_main:
        warn_trained_on_evaluated(run)
    lock = RunLock(run.out, world.size, say)
    try:
        previous = world.agree(lambda: open_run_dir(run, lock), main_only=True) or {}
        configs = make_configs(run)

        def plan() -> list[tuple[str, int]]:
            run.info = run_info(run, previous, configs)
            for name, cfg in configs["methods"].items():
                before = previous.get("configs", {}).get("methods", {}).get(name)
                if before and before["id"] != cfg["id"]:
                    say(f"method {name}: code, options or weights changed: its jobs run again")
            pending = plan_jobs(run)
            write_json(run.out / "run.json", run.info)
            return pending

        pending = world.agree(plan, main_only=True) or []
        run.info = world.broadcast(run.info)
        share = pending[world.rank :: world.size]
        if world.distributed:
            say(f"rank {world.rank} of {world.size}: {len(share)} of {len(pending)} jobs")
        reports = world.gather(_run_share(run, share, progress))
        if world.is_main:
            _finish(run, pending, reports, history_entry(run, started))
    finally:
        lock.release()
    return run.out
