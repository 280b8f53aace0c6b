"""Generate and score every (method, pair) of a protocol; resumable.

Each job (method, pair) streams the driving video once: frames go to the method at its
resolution, outputs and ground truth are resized to the protocol's evaluation resolution
(``video.resize``) and scored in batches. A finished job is stored atomically as
``OUT/cache/<method>/<pair>/result.json`` (per-frame values) with a fingerprint of every
input that changes its numbers; ``per_video.csv`` and ``summary.csv`` are rebuilt from
those files after every job, so a killed run resumes where it stopped and ends with the
same tables. Methods and metrics that cannot run are reported as skipped, never as
numbers.
"""

from __future__ import annotations

import hashlib
import json
import platform
import subprocess
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

import reenactbench
from reenactbench.data.dataset import Dataset, VideoRecord, load_dataset
from reenactbench.errors import InputError, MethodError, ReenactbenchError, WeightsMissing
from reenactbench.files import save_npy, write_csv, write_json
from reenactbench.methods import Method, check_output_frame, load_method, method_class
from reenactbench.metrics import MetricSpec, resolve_metrics
from reenactbench.metrics.base import JobPart, MetricContext
from reenactbench.protocol import Pair, Protocol, make_pairs, select_videos
from reenactbench.scoring import JobScorer, build_evaluators, prepare_metrics, weight_flags
from reenactbench.sources import source_chooser
from reenactbench.summary import PER_VIDEO_COLUMNS, SUMMARY_COLUMNS, JobResult, summarise
from reenactbench.video import RESIZE_MODE, iter_frames, resize, write_png_folder
from reenactbench.weights import weight_path, weight_record

__all__ = ["RunOptions", "run_protocol", "ProgressFn", "MessageFn"]

ProgressFn = Callable[[str, int, int], None]  #: (stage, done, total)
MessageFn = Callable[[str], None]  #: one-line notices (skips, resumes)


@dataclass
class RunOptions:
    """Everything a run needs besides the protocol.

    Attributes:
        data: data folder (prepared layout or a folder of videos).
        methods: registered names or ``package.module:Class`` paths, in table order.
        out: run directory (created; an existing one of the same protocol is resumed).
        device: torch device for methods that use torch.
        batch_size: frames per scoring batch.
        max_videos: evaluate at most this many test videos (lowers the protocol's).
        max_frames: at most this many frames per video (lowers the protocol's).
        weights: weight name -> file overrides passed to methods.
        method_options: method name -> constructor options.
        save_frames: also keep generated frames as PNG in the cache (lossless).
        metric_options: metric backend options (``id_backend``, ``temporal_backend``,
            ``openface_dir``; docs/metrics.md).
        bootstrap: bootstrap resamples for 95 % intervals in summary.csv (0: off).
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


def _fingerprint(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]


class _Job:
    """Generation and scoring of one (method, pair)."""

    def __init__(
        self,
        method: Method,
        pair: Pair,
        videos: dict[str, VideoRecord],
        proto: Protocol,
        n_frames: int,
        batch_size: int,
        scorer: JobScorer,
    ) -> None:
        self.method, self.pair, self.videos, self.proto = method, pair, videos, proto
        self.n_frames, self.batch_size, self.scorer = n_frames, batch_size, scorer

    def _source(self) -> np.ndarray:
        """The source frame at its native size."""
        rec = self.videos[self.pair.source]
        try:
            return next(iter_frames(rec.path, max_frames=1, start=self.pair.source_frame))
        except InputError:
            raise InputError(
                f"{rec.path}: has no frame {self.pair.source_frame} to use as source"
            ) from None

    def run(self, frame_dir: Path | None) -> tuple[dict[str, JobPart], np.ndarray, int]:
        """Returns the evaluators' parts, the per-pixel L1 sum ``(E, E) float64`` over
        frames (mean over channels, 0..255), and the number of frames."""
        res, eval_res = self.method.resolution, self.proto.resolution
        truth: deque[np.ndarray] = deque()

        def driving() -> Iterator[np.ndarray]:
            rec = self.videos[self.pair.driving]
            for frame in iter_frames(rec.path, max_frames=self.n_frames):
                truth.append(resize(frame, eval_res))
                yield resize(frame, res)

        source = self._source()
        self.scorer.begin(
            resize(source, eval_res), (self.method.name, self.pair.key, self.pair.driving)
        )
        heat = np.zeros((eval_res, eval_res), dtype=np.float64)
        fakes: list[np.ndarray] = []
        reals: list[np.ndarray] = []
        n = 0

        def flush() -> None:
            if fakes:
                fake, real = np.stack(fakes), np.stack(reals)
                self.scorer.add(fake, real)
                heat[...] += np.abs(fake.astype(np.int16) - real).mean(axis=3).sum(axis=0)
                if frame_dir is not None:
                    write_png_folder(fake, frame_dir, start=n - len(fake))
                fakes.clear()
                reals.clear()

        name = self.method.name
        for out in self.method.reenact(resize(source, res), driving()):
            out = check_output_frame(out, self.method)
            if not truth:
                raise MethodError(
                    f"method {name!r} yielded frame {n + 1} before reading driving frame "
                    f"{n + 1}; it must yield one frame per driving frame read"
                )
            fakes.append(resize(out, eval_res))
            reals.append(truth.popleft())
            n += 1
            if len(fakes) >= self.batch_size:
                flush()
        flush()
        if truth or n == 0:
            raise MethodError(f"method {name!r} yielded {n} frames for {n + len(truth)} driving")
        return self.scorer.end(), heat, n


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
        ReenactbenchError: bad data, protocol, method name or run directory. Methods
            that cannot run (missing weights or dependencies) are skipped instead.
    """
    say = on_message or (lambda _m: None)
    progress = on_progress or (lambda _s, _d, _t: None)
    for name in opts.methods:
        method_class(name)  # unknown names fail before any work
    specs = resolve_metrics(list(proto.metrics))
    n_frames = min(x for x in (proto.frames, opts.max_frames) if x is not None)
    dataset: Dataset = load_dataset(opts.data, resolution=proto.resolution)
    videos = select_videos(proto, dataset, opts.max_videos)
    pairs = make_pairs(
        proto, videos, source_chooser(proto.source_selection, n_frames, proto.resolution)
    )
    out = Path(opts.out)
    setup = {
        "protocol": {k: v for k, v in proto.to_dict().items() if k != "path"},
        "data": dataset.fingerprint(),
        "frames": n_frames,
        "pairs": [p.key for p in pairs],
        "resolution": proto.resolution,
        "resize": RESIZE_MODE,
    }
    run_json = out / "run.json"
    previous: dict[str, Any] = {}
    if run_json.is_file():
        previous = json.loads(run_json.read_text())
        if previous.get("setup") != json.loads(json.dumps(setup)):
            raise InputError(
                f"{out}: holds a run with a different protocol, data or frame/video limits; "
                "pass a new --out (or delete it to start over)"
            )
        say(f"resuming run in {out}")
    ctx = MetricContext(
        device=opts.device,
        batch_size=opts.batch_size,
        weights=opts.weights,
        options=opts.metric_options,
        kind=proto.kind,
        fvd_clip=proto.fvd_clip,
    )
    runnable, skipped_metrics, weight_records = prepare_metrics(specs, ctx)
    for key, reason in skipped_metrics.items():
        say(f"skipped: metric {key}: {reason}")
    methods = list(dict.fromkeys([*previous.get("methods", []), *opts.methods]))
    write_csv(
        out / "pairs.csv",
        ["driving", "source", "source_frame"],
        [{"driving": p.driving, "source": p.source, "source_frame": p.source_frame} for p in pairs],
    )
    info: dict[str, Any] = {
        "setup": setup,
        "data": str(Path(opts.data).resolve()),
        "protocol": proto.to_dict(),
        "methods": methods,
        "metrics": [s.key for s in specs],
        "skipped_metrics": skipped_metrics,
        "metric_options": dict(opts.metric_options),
        "weights": weight_records,
        "weight_flags": weight_flags(runnable, ctx, weight_records),
        "bootstrap": opts.bootstrap,
        "device": opts.device,
        "batch_size": opts.batch_size,
        "versions": _versions(),
        "git_commit": _git_commit(),
        "seeds": {"split": proto.split_seed, "pairing": proto.pairing_seed},
        "started": previous.get("started") or datetime.now(UTC).isoformat(timespec="seconds"),
        "finished": None,
        "skipped_methods": dict(previous.get("skipped_methods", {})),
        "timings": dict(previous.get("timings", {})),
    }
    write_json(run_json, info)

    by_name = dataset.by_name()
    kinds = {s.key: s.kind for s in runnable}
    scorer: JobScorer | None = None  # built on the first job that needs computing
    results: dict[str, list[JobResult]] = {}
    total = len(opts.methods) * len(pairs)
    done = 0
    for name in opts.methods:
        cls = method_class(name)
        options = opts.method_options.get(name, {})
        for weight in cls.weights:  # record the files a method will use, with checksums
            try:
                info["weights"].setdefault(
                    weight, weight_record(weight, weight_path(weight, opts.weights))
                )
            except ReenactbenchError:
                continue  # missing: the method reports it when it is loaded
        fp_base = {
            "method": cls.name,
            "target": f"{cls.__module__}:{cls.__qualname__}",
            "options": options,
            "version": reenactbench.__version__,
            "setup": {k: setup[k] for k in ("frames", "resolution", "resize", "data")},
            "metrics": sorted(s.key for s in runnable),
            "metric_options": dict(opts.metric_options),
            "weights": {k: v["sha256"] for k, v in sorted(weight_records.items())},
            "method_weights": {
                w: info["weights"][w]["sha256"] for w in cls.weights if w in info["weights"]
            },
        }
        method: Method | None = None
        seconds, frames_done = 0.0, 0
        results[cls.name] = []
        info["skipped_methods"].pop(cls.name, None)
        for pair in pairs:
            job_dir = out / "cache" / cls.name / pair.key
            fp = _fingerprint({**fp_base, "pair": pair.key})
            cached = JobResult.load(job_dir, fp)
            if cached is None:
                if method is None:
                    try:
                        method = load_method(
                            name, device=opts.device, weights=opts.weights, **options
                        )
                    except (WeightsMissing, MethodError) as e:
                        info["skipped_methods"][cls.name] = str(e)
                        say(f"skipped: method {cls.name}: {e}")
                        break
                if scorer is None:
                    scorer = JobScorer(build_evaluators(runnable, ctx))
                t0 = time.perf_counter()
                frame_dir = job_dir / "frames" if opts.save_frames else None
                parts, heat, n = _Job(
                    method, pair, by_name, proto, n_frames, opts.batch_size, scorer
                ).run(frame_dir)
                seconds += time.perf_counter() - t0
                frames_done += n
                cached = JobResult(cls.name, pair, n, parts)
                cached.save(job_dir, fp)
                if proto.kind == "robustness":
                    save_npy(job_dir / "heatmap.npy", (heat / n).astype(np.float32))
            cached.release_rows(kinds)
            results[cls.name].append(cached)
            done += 1
            _write_tables(out, proto, specs, results, info)
            progress(cls.name, done, total)
        if frames_done:
            info["timings"][cls.name] = {
                "seconds": round(seconds, 3),
                "frames": frames_done,
                "frames_per_s": round(frames_done / seconds, 2) if seconds else None,
            }
    if proto.kind == "robustness":
        _write_heatmaps(out, pairs, results)
    _write_tables(out, proto, specs, results, info, final=True)
    info["finished"] = datetime.now(UTC).isoformat(timespec="seconds")
    write_json(run_json, info)
    return out


def _write_tables(
    out: Path,
    proto: Protocol,
    specs: list[MetricSpec],
    results: dict[str, list[JobResult]],
    info: dict[str, Any],
    final: bool = False,
) -> None:
    """Rewrite per_video.csv and summary.csv from the finished jobs (bootstrap intervals
    only at the end: they are the slow part)."""
    per_video, summary = summarise(
        proto.kind,
        specs,
        results,
        info["skipped_methods"],
        info["skipped_metrics"],
        n_jobs=len(info["setup"]["pairs"]),
        bootstrap=info["bootstrap"] if final else 0,
        weight_flags=info["weight_flags"],
        final=final,
    )
    write_csv(out / "per_video.csv", PER_VIDEO_COLUMNS, per_video)
    write_csv(out / "summary.csv", SUMMARY_COLUMNS, summary)


def _write_heatmaps(out: Path, pairs: list[Pair], results: dict[str, list[JobResult]]) -> None:
    """Per method and driving video: the per-pixel L1 map averaged over its sources."""
    for method, jobs in results.items():
        maps: dict[str, list[np.ndarray]] = {}
        for job in jobs:
            path = out / "cache" / method / job.pair.key / "heatmap.npy"
            if path.is_file():
                maps.setdefault(job.pair.driving, []).append(np.load(path))
        for video, arrays in maps.items():
            mean = np.mean(np.stack(arrays), axis=0).astype(np.float32)
            save_npy(out / "heatmaps" / method / f"{video}.npy", mean)
