"""What a run is made of before any job runs (steps 1, 2 and 4 of reenactbench/runner.py):
the command's options, its methods checked before any work, the data and the pairs, and
the configs that identify each method's and the metrics' numbers (reenactbench/cache.py).
Every torchrun rank builds these; what rank 0 alone decides is shared through
:class:`~reenactbench.distributed.World`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reenactbench.cache import (
    FRAMES_KEYS,
    InputKeys,
    JobRecord,
    method_config,
    metric_config,
    setup_config,
)
from reenactbench.collect import config_ids
from reenactbench.data.dataset import Dataset, VideoRecord, load_dataset
from reenactbench.distributed import World, device_for_rank
from reenactbench.errors import InputError, MethodError, ReenactbenchError
from reenactbench.methods import check_options, method_class, method_options
from reenactbench.metrics import MetricSpec, resolve_metrics
from reenactbench.metrics.base import MetricContext
from reenactbench.nn.precision import DTYPES
from reenactbench.protocol import Pair, Protocol, make_pairs, select_videos
from reenactbench.scoring import prepare_metrics, weight_flags
from reenactbench.sources import source_chooser
from reenactbench.video import RESIZE_MODE, frame_files, frame_gaps, probe
from reenactbench.weights import weight_path, weight_record

__all__ = [
    "MessageFn",
    "MethodEntry",
    "RunOptions",
    "RunState",
    "load_inputs",
    "check_lengths",
    "check_metric_packages",
    "make_configs",
    "resolve_methods",
    "warn_trained_on_evaluated",
]

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
        metric_options: metric backend options that override the protocol's
            (:meth:`~reenactbench.protocol.Protocol.metric_options`: ``id_backend``,
            ``temporal_backend``, ``fvd_clips``, ``au_gaze_pooling``; and
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
class RunState:
    """The state one command builds up, step by step."""

    proto: Protocol
    opts: RunOptions
    world: World
    say: MessageFn
    entries: list[MethodEntry]
    videos: dict[str, VideoRecord] = field(default_factory=dict)
    n_frames: int = 0
    lengths: dict[str, int] = field(default_factory=dict)  #: video -> frames a job reads
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


def check_metric_packages(proto: Protocol, opts: RunOptions) -> None:
    """Before any work: every backend the protocol (or a flag) names has its packages.

    Raises:
        InputError: a missing package, naming the extra to install.
    """
    ctx = MetricContext(options=proto.metric_options(dict(opts.metric_options)), kind=proto.kind)
    for spec in resolve_metrics(list(proto.metrics)):
        missing = spec.packages(ctx) if spec.packages is not None else None
        if missing:
            raise InputError(f"metric {spec.key}: {missing}")


# ----------------------------------------------------------------- 2. inputs
def load_inputs(run: RunState) -> None:
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

    def pairs_and_setup() -> tuple[list[Pair], dict[str, Any], dict[str, int]]:
        lengths = check_lengths(proto, videos, run.n_frames, run.say)
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
        return pairs, setup, lengths

    shared = run.world.agree(pairs_and_setup, main_only=True)
    assert shared is not None
    run.pairs, run.setup, run.lengths = shared

    def enough_jobs() -> None:
        jobs = len(run.pairs) * len(run.entries)
        if run.world.size > jobs:
            raise InputError(
                f"{run.world.size} ranks for {jobs} jobs: start torchrun with "
                "--nproc-per-node (x --nnodes) of at most that many"
            )

    run.world.agree(enough_jobs, main_only=True)


def warn_trained_on_evaluated(run: RunState) -> None:
    """One warning line per method whose checkpoint was trained on a video this run
    evaluates (as driving or source). A method class opts in with a classmethod
    ``training_videos(options, weights) -> frozenset[str] | None`` that reads the
    checkpoint's metadata only (the hybrid adapters: docs/hybrid.md); a missing or
    unreadable checkpoint is left to the method's own loading, which reports it."""
    evaluated = sorted({p.driving for p in run.pairs} | {p.source for p in run.pairs})
    for entry in run.entries:
        hook = getattr(entry.cls, "training_videos", None)
        if not callable(hook):
            continue
        try:
            trained = hook(entry.options, run.opts.weights)
        except ReenactbenchError:
            continue
        seen = [v for v in evaluated if v in (trained or ())]
        if seen:
            more = ", ..." if len(seen) > 3 else ""
            run.say(
                f"warning: method {entry.name}: its checkpoint was trained on {len(seen)} of "
                f"the {len(evaluated)} videos evaluated ({', '.join(seen[:3])}{more}); its "
                "scores on them are not held out: retrain on the protocol's train split "
                "(docs/hybrid.md)"
            )


def check_lengths(
    proto: Protocol, videos: list[VideoRecord], n_frames: int, say: MessageFn
) -> dict[str, int]:
    """Video -> the frames its jobs read (``n_frames``, or fewer where the protocol
    allows short videos); warns about frame folders whose numbering skips.

    Raises:
        InputError: a video is shorter than ``n_frames`` and the protocol does not allow
            it, or a video file is truncated (:func:`~reenactbench.video.probe`).
    """
    lengths, short = {}, []
    for video in videos:
        if video.path.is_dir():
            gaps = frame_gaps(frame_files(video.path))
            if gaps:
                say(f"warning: {video.path}: {gaps}")
        have = probe(video.path).n_frames
        lengths[video.name] = min(have, n_frames)
        if have < n_frames:
            short.append(f"{video.path} ({have})")
    if short and not proto.allow_short:
        raise InputError(
            f"{short[0]}: fewer frames than the {n_frames} protocol {proto.name} scores"
            + (f" ({len(short) - 1} more such videos)" if len(short) > 1 else "")
            + "; pass --max-frames, leave the video out, or set allow_short = true in "
            "the protocol to use short videos whole"
        )
    return lengths


# ----------------------------------------------------------------- 4. configs
def _weights_sha(names: tuple[str, ...], run: RunState, records: dict[str, dict[str, str]]) -> dict:
    shas = {}
    for name in names:
        try:
            records.setdefault(name, weight_record(name, weight_path(name, run.opts.weights)))
            shas[name] = records[name]["sha256"]
        except ReenactbenchError:
            shas[name] = "missing"  # the method reports it when it is loaded
    return shas


def make_configs(run: RunState) -> dict[str, Any]:
    """Configs of this command (every rank computes them from its own code and files;
    a rank that differs from rank 0 stops the run)."""
    opts = run.opts
    options = run.proto.metric_options(dict(opts.metric_options))
    run.ctx = MetricContext(
        device=device_for_rank(opts.device, run.world),
        batch_size=opts.batch_size,
        weights=opts.weights,
        options=options,
        kind=run.proto.kind,
        fvd_clip=run.proto.fvd_clip,
    )
    specs = resolve_metrics(list(run.proto.metrics))
    run.runnable, skipped_metrics, records = prepare_metrics(specs, run.ctx)
    metric_weights = {name: rec["sha256"] for name, rec in records.items()}
    shas: dict[str, dict[str, str]] = {}  # the methods' weight records
    mine = {
        "setup": setup_config(run.setup),
        "metrics": metric_config(run.runnable, options, metric_weights),
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
