"""Run a protocol: every (method, pair) job generated, scored and recorded; tables written.

:func:`run_protocol` goes through these steps, one function each:

1. :func:`resolve_methods`: method classes, unique names, known options; before any work;
2. :func:`_load_inputs`: the data and the (source, driving) pairs;
3. :func:`_open_run_dir`: under the run directory's lock, the same protocol and data as
   before, no method name claimed by another class;
4. :func:`_configs`: what identifies each method's and the metrics' numbers (cache.py);
5. :func:`_plan`: which jobs have a valid record, which must run, which are stale;
6. :func:`_run_share`: this process's share of the pending jobs, one record each;
7. :func:`_finish`: tables from the records of every method of the run directory.

Under ``torchrun`` every rank runs the same steps; rank 0 alone does 3, 5 and 7 and
shares its results, and the pending jobs of step 6 are dealt out round-robin over the
ranks (reenactbench/distributed.py, docs/scaling.md). A killed run resumes where it
stopped: only jobs without a valid record run again. Methods and metrics that cannot run
here are reported as skipped, never as numbers.
"""

from __future__ import annotations

import json
import platform
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import reenactbench
from reenactbench.cache import (
    FRAMES_KEYS,
    InputKeys,
    JobRecord,
    RecordError,
    job_fingerprint,
    method_config,
    metric_config,
    record_path,
    setup_config,
)
from reenactbench.collect import config_ids, stale_note, write_heatmaps, write_tables
from reenactbench.data.dataset import Dataset, VideoRecord, load_dataset
from reenactbench.distributed import World, device_for_rank
from reenactbench.errors import (
    InputError,
    MethodError,
    MethodUnavailable,
    ReenactbenchError,
    WeightsMissing,
)
from reenactbench.files import remove_stale_temps, write_csv, write_json
from reenactbench.job import run_job
from reenactbench.lock import RunLock
from reenactbench.methods import Method, check_options, load_method, method_class, method_options
from reenactbench.metrics import MetricSpec, resolve_metrics
from reenactbench.metrics.base import MetricContext
from reenactbench.nn.precision import DTYPES
from reenactbench.protocol import Pair, Protocol, make_pairs, select_videos
from reenactbench.scoring import JobScorer, build_evaluators, prepare_metrics, weight_flags
from reenactbench.sources import source_chooser
from reenactbench.video import RESIZE_MODE
from reenactbench.weights import weight_path, weight_record

__all__ = ["DTYPES", "MethodEntry", "RunOptions", "resolve_methods", "run_protocol"]

ProgressFn = Callable[[str, int, int], None]  #: (stage, done, total)
MessageFn = Callable[[str], None]  #: one-line notices (skips, resumes)


@dataclass
class RunOptions:
    """Everything a run needs besides the protocol.

    Attributes:
        data: data folder (prepared layout or a folder of videos).
        methods: registered names or ``package.module:Class`` paths, in table order.
        out: run directory (created; an existing one of the same protocol is resumed,
            and methods of earlier commands stay in its tables).
        device: torch device; ``cuda`` in a torchrun run means each rank's own GPU.
        batch_size: frames per batch, for scoring and for every method that takes a
            ``batch_size`` option (unless ``method_options`` sets it).
        max_videos: evaluate at most this many test videos (lowers the protocol's).
        max_frames: at most this many frames per video (lowers the protocol's).
        weights: weight name -> file overrides passed to methods and metrics.
        method_options: method (as given in ``methods``, or its name) -> options.
        save_frames: also keep generated frames as PNG in the cache (lossless).
        metric_options: metric backend options (``id_backend``, ``temporal_backend``,
            ``openface_dir``; docs/metrics.md).
        bootstrap: bootstrap resamples for 95 % intervals in summary.csv (0: off).
        dtype: network precision passed to methods that take a ``dtype`` option.
        frames_key: how a cached job checks its frames: ``stat`` or ``content``
            (reenactbench/cache.py).
        world: the torchrun process group (default: this process alone).
    """

    data: Path
    methods: list[str]
    out: Path
    device: str = "cpu"
    batch_size: int = 8
    max_videos: int | None = None
    max_frames: int | None = None
    weights: dict[str, Path] = field(default_factory=dict)
    method_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    save_frames: bool = False
    metric_options: dict[str, str] = field(default_factory=dict)
    bootstrap: int = 0
    dtype: str = "fp32"
    frames_key: str = "stat"
    world: World | None = None


@dataclass
class MethodEntry:
    """A method of this command: its class and constructor options (runtime ones
    included: ``batch_size`` and ``dtype`` where the class takes them)."""

    spec: str
    cls: type
    options: dict[str, Any]

    @property
    def name(self) -> str:
        return str(self.cls.name)


@dataclass
class _Run:
    """The state one command builds up, step by step."""

    proto: Protocol
    opts: RunOptions
    world: World
    say: MessageFn
    entries: list[MethodEntry]
    videos: dict[str, VideoRecord] = field(default_factory=dict)
    n_frames: int = 0
    pairs: list[Pair] = field(default_factory=list)
    setup: dict[str, Any] = field(default_factory=dict)
    ctx: MetricContext | None = None
    runnable: list[MetricSpec] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)
    results: dict[str, dict[str, JobRecord]] = field(default_factory=dict)
    stale: dict[str, str] = field(default_factory=dict)
    inputs: InputKeys = field(default_factory=InputKeys)

    @property
    def out(self) -> Path:
        return Path(self.opts.out)

    def ids(self, method: str) -> dict[str, str]:
        ids = config_ids(self.info, method)
        assert ids is not None, method
        return ids

    def ordered_results(self) -> dict[str, list[JobRecord]]:
        """Method -> counted records in pair order, for every method of the directory."""
        return {
            m: [self.results[m][p.key] for p in self.pairs if p.key in self.results.get(m, {})]
            for m in self.info["methods"]
        }


# ----------------------------------------------------------------- 1. methods
def resolve_methods(opts: RunOptions, say: MessageFn | None = None) -> list[MethodEntry]:
    """The command's methods, checked before any work.

    Raises:
        MethodError: unknown method, two classes with one name, an unknown option, or a
            ``--method-option`` for a method not in the command.
    """
    if opts.dtype not in DTYPES:
        raise InputError(f"--dtype {opts.dtype}: use one of {', '.join(DTYPES)}")
    if opts.frames_key not in FRAMES_KEYS:
        raise InputError(f"--frames-key {opts.frames_key}: use one of {', '.join(FRAMES_KEYS)}")
    entries: dict[str, MethodEntry] = {}
    used: set[str] = set()
    for spec in opts.methods:
        cls = method_class(spec)
        name = str(cls.name)
        if name in entries:
            if entries[name].cls is not cls:
                raise MethodError(
                    f"two methods are named {name!r}: {entries[name].spec} and {spec}; names "
                    "must be unique in a run directory: rename one class"
                )
            continue
        options: dict[str, Any] = {}
        for key in (name, spec):
            if key in opts.method_options:
                options.update(opts.method_options[key])
                used.add(key)
        check_options(cls, options)
        takes = method_options(cls)
        if "batch_size" in takes:
            options.setdefault("batch_size", opts.batch_size)
        if "dtype" in takes:
            options.setdefault("dtype", opts.dtype)
        elif opts.dtype != "fp32" and say is not None:
            say(f"method {name} has no dtype option: it runs as it is, not in {opts.dtype}")
        entries[name] = MethodEntry(spec, cls, options)
    unknown = sorted(set(opts.method_options) - used)
    if unknown:
        raise MethodError(
            f"--method-option for {unknown[0]!r}, which is not a --method of this command "
            f"(methods: {', '.join(opts.methods)})"
        )
    return list(entries.values())


# ----------------------------------------------------------------- 2. inputs
def _load_inputs(run: _Run) -> None:
    """Every rank opens the data (each needs it); rank 0 makes the pairs (the robustness
    source choice runs a face detector) and shares them."""
    proto, opts = run.proto, run.opts
    run.n_frames = min(x for x in (proto.frames, opts.max_frames) if x is not None)

    def open_data() -> tuple[Dataset, list[VideoRecord]]:
        dataset = load_dataset(opts.data, resolution=proto.resolution)
        return dataset, select_videos(proto, dataset, opts.max_videos)

    opened = run.world.agree(open_data)
    assert opened is not None
    dataset, videos = opened
    run.videos = dataset.by_name()

    def pairs_and_setup() -> tuple[list[Pair], dict[str, Any]]:
        chooser = source_chooser(proto.source_selection, run.n_frames, proto.resolution)
        pairs = make_pairs(proto, videos, chooser)
        setup = {
            "protocol": {k: v for k, v in proto.to_dict().items() if k != "path"},
            "data": dataset.fingerprint(),
            "frames": run.n_frames,
            "pairs": [p.key for p in pairs],
            "resolution": proto.resolution,
            "resize": RESIZE_MODE,
        }
        return pairs, setup

    shared = run.world.agree(pairs_and_setup, main_only=True)
    assert shared is not None
    run.pairs, run.setup = shared

    def enough_jobs() -> None:
        jobs = len(run.pairs) * len(run.entries)
        if run.world.size > jobs:
            raise InputError(
                f"{run.world.size} ranks for {jobs} jobs: start torchrun with "
                "--nproc-per-node (x --nnodes) of at most that many"
            )

    run.world.agree(enough_jobs, main_only=True)


# ----------------------------------------------------------------- 3. run directory
def _open_run_dir(run: _Run, lock: RunLock) -> dict[str, Any]:
    """Lock the run directory and return the previous run.json (``{}`` if new).

    Raises:
        InputError: locked by another process, another protocol/data/limits, a
            corrupt run.json, or a method name that another class used here before.
    """
    out = run.out
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


# ----------------------------------------------------------------- 4. configs
def _weights_sha(names: tuple[str, ...], run: _Run, records: dict[str, dict[str, str]]) -> dict:
    shas = {}
    for name in names:
        try:
            records.setdefault(name, weight_record(name, weight_path(name, run.opts.weights)))
            shas[name] = records[name]["sha256"]
        except ReenactbenchError:
            shas[name] = "missing"  # the method reports it when it is loaded
    return shas


def _configs(run: _Run) -> dict[str, Any]:
    """Configs of this command (every rank computes them from its own code and files;
    a rank that differs from rank 0 stops the run)."""
    opts = run.opts
    run.ctx = MetricContext(
        device=device_for_rank(opts.device, run.world),
        batch_size=opts.batch_size,
        weights=opts.weights,
        options=opts.metric_options,
        kind=run.proto.kind,
        fvd_clip=run.proto.fvd_clip,
    )
    specs = resolve_metrics(list(run.proto.metrics))
    run.runnable, skipped_metrics, records = prepare_metrics(specs, run.ctx)
    metric_weights = {name: rec["sha256"] for name, rec in records.items()}
    shas: dict[str, dict[str, str]] = {}  # the methods' weight records
    mine = {
        "setup": setup_config(run.setup),
        "metrics": metric_config(run.runnable, opts.metric_options, metric_weights),
        "methods": {
            e.name: method_config(e.cls, e.options, _weights_sha(e.cls.weights, run, shas))
            for e in run.entries
        },
        "skipped_metrics": skipped_metrics,
        "weights": {**records, **shas},
        "weight_flags": weight_flags(run.runnable, run.ctx, records),
    }
    ranks0 = run.world.broadcast(mine)

    def same_as_rank0() -> None:
        for part in ("setup", "metrics"):
            if mine[part]["id"] != ranks0[part]["id"]:
                raise InputError(
                    f"{run.world.label()}: its {part} config differs from rank 0's (packages, "
                    "code, options or weight files); every rank needs the same installation"
                )
        for name, cfg in mine["methods"].items():
            if cfg["id"] != ranks0["methods"][name]["id"]:
                raise InputError(
                    f"{run.world.label()}: method {name}'s code, options or weight files "
                    "differ from rank 0's; every rank needs the same installation"
                )

    run.world.agree(same_as_rank0)
    return mine


# ----------------------------------------------------------------- 5. plan
def _run_info(run: _Run, previous: dict[str, Any], configs: dict[str, Any]) -> dict[str, Any]:
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
        "data": str(Path(opts.data).resolve()),
        "protocol": run.proto.to_dict(),
        "methods": methods,
        "metrics": list(run.proto.metrics),
        "skipped_metrics": configs["skipped_metrics"],
        "metric_options": dict(opts.metric_options),
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
        "device": opts.device,
        "batch_size": opts.batch_size,
        "world_size": run.world.size,
        "versions": _versions(),
        "git_commit": _git_commit(),
        "seeds": {"split": run.proto.split_seed, "pairing": run.proto.pairing_seed},
        "started": previous.get("started") or _now(),
        "finished": None,
        "skipped_methods": skipped_methods,
        "stale_jobs": stale_jobs,
        "timings": dict(previous.get("timings", {})),
    }


def _check(run: _Run, method: str, pair: Pair) -> tuple[JobRecord | None, str]:
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


def _plan(run: _Run) -> list[tuple[str, int]]:
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
            record, why = _check(run, method, pair)
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


# ----------------------------------------------------------------- 6. jobs
class _Methods:
    """Methods built on first use (a resumed run loads nothing it does not need)."""

    def __init__(self, run: _Run) -> None:
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
        return self.loaded[name]

    def release_all_but(self, name: str) -> None:
        """Free the methods whose jobs are done (a rank's share is ordered by method),
        so one GPU holds one method's networks at a time."""
        for other in [m for m in self.loaded if m != name]:
            del self.loaded[other]
            if self.run.ctx is not None and self.run.ctx.device.startswith("cuda"):
                import torch

                torch.cuda.empty_cache()


def _run_share(run: _Run, share: list[tuple[str, int]], progress: ProgressFn) -> dict[str, Any]:
    """Run this rank's jobs, committing a record after each; rank 0 also rewrites the
    tables after each. Returns what rank 0 merges: timings and skipped methods."""
    assert run.ctx is not None
    methods = _Methods(run)
    scorer: JobScorer | None = None  # built on the first job that needs computing
    kinds = {s.key: s.kind for s in run.runnable}
    timings: dict[str, dict[str, float]] = {}
    totals = {m: sum(1 for n, _ in share if n == m) for m, _ in share}
    done: dict[str, int] = {}
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
            method, pair, run.videos, run.proto.resolution, run.n_frames, scorer,
            run.opts.batch_size, frame_dir,
        )  # fmt: skip
        seconds = time.perf_counter() - t0
        meta = {
            "method": name,
            "pair": {"driving": pair.driving, "source": pair.source,
                     "source_frame": pair.source_frame},
            "n_frames": output.n_frames,
            "fingerprint": job_fingerprint(run.ids(name), pair),
            "config": run.ids(name),
            "inputs": {
                "driving": run.inputs.keys(run.videos[pair.driving].path, 0, run.n_frames),
                "source": run.inputs.keys(run.videos[pair.source].path, pair.source_frame, 1),
            },
            "frames_saved": frame_dir is not None,
            "runtime": {"device": run.ctx.device, "batch_size": run.opts.batch_size,
                        "seconds": round(seconds, 3), "rank": run.world.rank,
                        "host": run.world.host},
        }  # fmt: skip
        heatmap = output.heatmap if run.proto.kind == "robustness" else None
        record = JobRecord.write(path, meta, output.parts, kinds, heatmap)
        t = timings.setdefault(name, {"seconds": 0.0, "frames": 0})
        t["seconds"] += seconds
        t["frames"] += output.n_frames
        done[name] = done.get(name, 0) + 1
        if run.world.is_main:
            run.results.setdefault(name, {})[pair.key] = record
            write_tables(run.out, run.info, run.ordered_results(), run.stale, final=False)
        progress(name, done[name], totals[name])
    return {"timings": timings, "skipped": methods.skipped, "rank": run.world.label()}


# ----------------------------------------------------------------- 7. merge
def _finish(run: _Run, pending: list[tuple[str, int]], reports: list[dict[str, Any]]) -> None:
    """Rank 0: read the records the other ranks wrote, then the final tables."""
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
            info["timings"][name] = {
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
    info["finished"] = _now()
    write_json(run.out / "run.json", info)


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
    run = _Run(proto, opts, world, say, entries)
    _load_inputs(run)
    lock = RunLock(run.out, world.size, say)
    try:
        previous = world.agree(lambda: _open_run_dir(run, lock), main_only=True) or {}
        configs = _configs(run)

        def plan() -> list[tuple[str, int]]:
            run.info = _run_info(run, previous, configs)
            for name, cfg in configs["methods"].items():
                before = previous.get("configs", {}).get("methods", {}).get(name)
                if before and before["id"] != cfg["id"]:
                    say(f"method {name}: code, options or weights changed: its jobs run again")
            pending = _plan(run)
            write_json(run.out / "run.json", run.info)
            return pending

        pending = world.agree(plan, main_only=True) or []
        run.info = world.broadcast(run.info)
        share = pending[world.rank :: world.size]
        if world.distributed:
            say(f"rank {world.rank} of {world.size}: {len(share)} of {len(pending)} jobs")
        reports = world.gather(_run_share(run, share, progress))
        if world.is_main:
            _finish(run, pending, reports)
    finally:
        lock.release()
    return run.out


def _now() -> str:
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
