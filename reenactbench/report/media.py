"""Side-by-side videos of a run for the HTML report: source, driving, every method's output.

Conventions:

* **Codec**: VP9 in WebM (``libvpx-vp9``, ``yuv420p``, constant quality ``crf`` 32 with
  ``b:v 0``, ``deadline good``, ``cpu-used 5``, a fixed 4 encoder threads and bit-exact
  container flags), so the same frames give the same bytes on the same PyAV/libvpx.
  It plays in every current browser. Lossy and for viewing only: never score from it.
  Odd sizes are padded to even by repeating the last row/column. Files are written
  atomically (encoded in memory, then :func:`~reenactbench.files.atomic_write_bytes`).
* **fps**: :func:`grid_for_video` uses the driving video's frame rate when the data says
  it (the ``fps`` column of a prepared data set's ``manifest.csv``, or the rate of a video
  file), else :data:`DEFAULT_FPS` (25, the rate frame folders are read at, as in
  :func:`reenactbench.video.probe`). Method outputs have one frame per driving frame, so
  they play at the driving video's rate.
* **Pair choice**: one grid per driving video. Same-id and cross-id runs have one pair per
  driving video; a robustness run has several (source frames of the same video): the grid
  shows the pair with the smallest ``source_frame`` (ties: source name), the same pair for
  every method (:func:`chosen_pair`). Only *counted* job records are used (made with the
  run's current configs, :func:`reenactbench.collect.load_records`), as in the tables.
* **Sizes**: every panel is resized to ``size x size`` (:func:`reenactbench.video.resize`,
  the antialiased bicubic) under a label bar of :func:`label_height` pixels; panels are
  concatenated left to right: source image, driving video, then the methods in the order
  asked. A still image repeats; a shorter panel holds its last frame; a panel without
  frames is grey and says "no frames". The video is as long as its longest panel.
* **Frames**: method outputs are the PNGs a run saves with ``--save-frames``
  (``cache/<method>/<pair>/frames/000000.png ...``, eval resolution); the source and
  driving frames are read from the run's data folder (``<data>/<resolution>/<video>/``
  for prepared data), see :func:`run_data_dir`.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, overload

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from reenactbench.cache import JobRecord, RecordError, record_path
from reenactbench.collect import config_ids, load_records, read_pairs
from reenactbench.errors import InputError
from reenactbench.files import atomic_write_bytes
from reenactbench.metrics.base import JobPart
from reenactbench.protocol import Pair
from reenactbench.report.paper import method_label
from reenactbench.video import frame_files, iter_frames, probe, read_image, resize

__all__ = [
    "CODEC",
    "DEFAULT_FPS",
    "GridResult",
    "ImageFiles",
    "chosen_pair",
    "compose_grid",
    "encode_browser_video",
    "frame_series",
    "grid_for_video",
    "label_height",
    "label_strip",
    "pair_frames",
    "run_data_dir",
]

CODEC = "libvpx-vp9"
DEFAULT_FPS = 25.0
CRF = 32
#: libvpx output depends on the thread count: fixed, never "auto" (the CPU count).
THREADS = 4
_VP9_OPTIONS = {"crf": str(CRF), "b": "0", "deadline": "good", "cpu-used": "5", "row-mt": "1"}
_BAR = (32, 32, 32)
_TEXT = (240, 240, 240)
_GREY = 128
NO_FRAMES = "no frames"
SOURCE, DRIVING = "source", "driving"

Panel = tuple[str, "Sequence[np.ndarray] | np.ndarray"]


# ------------------------------------------------------------------ encoding
def _vp9_stream(container: Any, fps: float, width: int, height: int) -> Any:
    import av

    if CODEC not in av.codecs_available:
        raise InputError(
            f"this PyAV build has no {CODEC} encoder; install a PyAV wheel with libvpx "
            "(pip install --force-reinstall av)"
        )
    stream = container.add_stream(CODEC, rate=Fraction(fps).limit_denominator(1001))
    stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
    stream.codec_context.thread_count = THREADS
    stream.options = dict(_VP9_OPTIONS)
    return stream


def _even(frame: np.ndarray) -> np.ndarray:
    if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
        raise ValueError(f"frames must be (H,W,3) uint8 RGB, got {frame.shape} {frame.dtype}")
    h, w = frame.shape[:2]
    if h % 2 or w % 2:
        frame = np.pad(frame, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
    return frame


def encode_browser_video(frames: Iterable[np.ndarray], path: Path, fps: float = DEFAULT_FPS) -> int:
    """Encode frames as a VP9 WebM a browser plays (module doc: settings, padding).

    Args:
        frames: ``(H, W, 3) uint8`` RGB frames, all of one size (streamed).
        path: the ``.webm`` file to write (atomically; folders are created).
        fps: frame rate.

    Returns:
        The number of frames written.

    Raises:
        InputError: no frames, a frame of another size, or PyAV without libvpx-vp9.
    """
    import av

    path = Path(path)
    buf = io.BytesIO()
    n, stream, shape = 0, None, None
    with av.open(buf, mode="w", format="webm", options={"fflags": "+bitexact"}) as container:
        for frame in frames:
            frame = _even(frame)
            if stream is None:
                shape = frame.shape
                stream = _vp9_stream(container, fps, frame.shape[1], frame.shape[0])
            elif frame.shape != shape:
                raise InputError(f"{path}: frame {n} is {frame.shape}, the first {shape}")
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
            n += 1
        if stream is None:
            raise InputError(f"{path}: no frames to encode; give at least one frame")
        for packet in stream.encode():
            container.mux(packet)
    atomic_write_bytes(path, buf.getvalue())
    return n


# ------------------------------------------------------------------ panels
def label_height(size: int) -> int:
    """Height of the label bar over a ``size``-pixel panel: size/8, at least 12, even."""
    h = max(12, size // 8)
    return h + h % 2


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: one bitmap size
        return ImageFont.load_default()


def _fit(draw: ImageDraw.ImageDraw, text: str, width: int, height: int) -> tuple[Any, str]:
    """The largest font (<= 70% of ``height``) that fits ``text`` into ``width``; text
    that does not fit at 6 px is shortened with an ellipsis."""
    for px in range(max(6, int(height * 0.7)), 5, -1):
        font = _font(px)
        if draw.textlength(text, font=font) <= width:
            return font, text
    while len(text) > 1 and draw.textlength(text + "\u2026", font=font) > width:
        text = text[:-1]
    return font, text + "\u2026"


def _draw_text(im: Image.Image, text: str, box: tuple[int, int, int, int]) -> None:
    """Draw ``text`` centred in ``box`` (left, top, right, bottom)."""
    draw = ImageDraw.Draw(im)
    left, top, right, bottom = box
    font, text = _fit(draw, text, right - left - 4, bottom - top)
    draw.text(((left + right) / 2, (top + bottom) / 2), text, fill=_TEXT, font=font, anchor="mm")


def label_strip(frame: np.ndarray, text: str) -> np.ndarray:
    """``frame`` under a dark bar of :func:`label_height` pixels naming it.

    Args:
        frame: ``(H, W, 3) uint8``; the bar height follows ``W``.
        text: the label (shrunk, then shortened, to fit the width).

    Returns:
        ``(label_height(W) + H, W, 3) uint8``.
    """
    h, w = frame.shape[:2]
    bar = label_height(w)
    im = Image.new("RGB", (w, bar + h), _BAR)
    im.paste(Image.fromarray(frame), (0, bar))
    _draw_text(im, text, (0, 0, w, bar))
    return np.asarray(im, dtype=np.uint8).copy()


def _blank(label: str, size: int) -> np.ndarray:
    grey = np.full((size, size, 3), _GREY, dtype=np.uint8)
    im = Image.fromarray(label_strip(grey, label))
    bar = label_height(size)
    _draw_text(im, NO_FRAMES, (0, bar + size // 3, size, bar + 2 * size // 3))
    return np.asarray(im, dtype=np.uint8).copy()


class _Frames:
    """One panel's frames, labelled and resized on demand (the last one cached)."""

    def __init__(self, label: str, frames: Sequence[np.ndarray] | np.ndarray, size: int):
        still = isinstance(frames, np.ndarray) and frames.ndim == 3
        self.frames = [frames] if still else frames
        self.label, self.size, self.still = label, size, still
        self.length = 1 if still else len(self.frames)
        self._cache: tuple[int, np.ndarray] | None = None

    def __getitem__(self, t: int) -> np.ndarray:
        i = min(t, self.length - 1)  # a shorter panel holds its last frame; -1: none
        if self._cache is None or self._cache[0] != i:
            if i < 0:
                panel = _blank(self.label, self.size)
            else:
                panel = label_strip(resize(_load(self.frames[i]), self.size), self.label)
            self._cache = (i, panel)
        return self._cache[1]


def _load(item: np.ndarray | Path) -> np.ndarray:
    return read_image(item) if isinstance(item, Path) else np.asarray(item, dtype=np.uint8)


def compose_grid(panels: Sequence[Panel], size: int) -> Iterator[np.ndarray]:
    """Frames of panels side by side, each ``size x size`` under its label (module doc).

    Args:
        panels: ``(label, frames)`` left to right. ``frames``: a sequence of ``(H, W, 3)
            uint8`` frames or a ``(T, H, W, 3)`` array (a video), or one ``(H, W, 3)``
            array (a still image, repeated). Sequences may load lazily (see
            :class:`ImageFiles`); frames are resized here.
        size: panel side in pixels.

    Yields:
        ``(label_height(size) + size, len(panels) * size, 3) uint8`` frames, as many as
        the longest panel has (a still image counts as one; none when all are empty).
    """
    columns = [_Frames(label, frames, size) for label, frames in panels]
    length = max((c.length for c in columns), default=0)
    for t in range(length):
        yield np.concatenate([c[t] for c in columns], axis=1)


class ImageFiles(Sequence[np.ndarray]):
    """Frame image files read on access (a panel of 500 frames is never all in memory)."""

    def __init__(self, files: Sequence[Path]):
        self.files = list(files)

    def __len__(self) -> int:
        return len(self.files)

    @overload
    def __getitem__(self, i: int) -> np.ndarray: ...
    @overload
    def __getitem__(self, i: slice) -> list[np.ndarray]: ...
    def __getitem__(self, i: int | slice) -> np.ndarray | list[np.ndarray]:
        if isinstance(i, slice):
            return [read_image(f) for f in self.files[i]]
        return read_image(self.files[i])


# ------------------------------------------------------------------ run directory
def _run_info(run_dir: Path) -> dict[str, Any]:
    path = Path(run_dir) / "run.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise InputError(
            f"{path}: cannot read the run ({e}); run `reenactbench run` first"
        ) from None


def chosen_pair(run_dir: Path, video: str) -> Pair:
    """The pair a grid of driving ``video`` shows: of the run's pairs (``pairs.csv``)
    driving it, the one with the smallest ``source_frame`` (ties: source name).

    Raises:
        InputError: no pair of the run drives ``video``.
    """
    pairs = [p for p in read_pairs(run_dir) if p.driving == video]
    if not pairs:
        raise InputError(
            f"{Path(run_dir) / 'pairs.csv'}: no pair drives video {video!r}; pick a driving "
            "video from per_video.csv"
        )
    return min(pairs, key=lambda p: (p.source_frame, p.source))


def _counted(run_dir: Path, info: dict[str, Any], method: str, pair: Pair) -> JobRecord | None:
    """The record of ``method`` on ``pair`` if the tables count it (current configs,
    frames unchanged), else ``None``."""
    ids = config_ids(info, method)
    if ids is None:
        return None
    stale = info.get("stale_jobs", {}).get(method, ())
    found, _ = load_records(run_dir, method, [pair], ids, stale)
    return found[0] if found else None


def _saved_frames(record: JobRecord) -> list[Path] | None:
    folder = record.path.parent / "frames"
    if not record.meta.get("frames_saved") or not folder.is_dir():
        return None
    files = frame_files(folder)
    return files[: record.n_frames] if len(files) >= record.n_frames > 0 else None


def pair_frames(run_dir: Path, method: str, pair: Pair) -> list[Path] | None:
    """The PNG frames ``method`` made for ``pair`` (``--save-frames``), in order.

    Returns:
        The record's ``n_frames`` frame files, or ``None``: no readable record, frames
        not saved (``frames_saved`` false), or the ``frames/`` folder missing or short.
    """
    try:
        record = JobRecord.read(record_path(run_dir, method, pair))
    except RecordError:
        return None
    return _saved_frames(record)


def run_data_dir(run_dir: Path) -> Path | None:
    """The data folder of the run's last command (``history.jsonl``'s last ``data``), or
    ``None`` when not recorded or no longer there."""
    path = Path(run_dir) / "history.jsonl"
    try:
        lines = [ln for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
        data = json.loads(lines[-1]).get("data") if lines else None
    except (OSError, ValueError, AttributeError):
        return None
    return Path(data) if data and Path(data).is_dir() else None


# ------------------------------------------------------------------ data folder
def _data_video(data_dir: Path | None, resolution: int, video: str) -> tuple[Path | None, str]:
    """The file or frame folder of ``video`` in the run's data, or ``None`` and why."""
    from reenactbench.data.dataset import load_dataset

    if data_dir is None or not Path(data_dir).is_dir():
        return None, f"data folder {data_dir} not found; pass the run's --data folder"
    try:
        record = load_dataset(Path(data_dir), resolution).by_name().get(video)
    except InputError as e:
        return None, str(e)
    if record is None:
        return None, f"{data_dir}: no video {video!r}; pass the data folder the run used"
    return record.path, ""


def _source_image(path: Path, index: int) -> np.ndarray:
    if path.is_dir():
        files = frame_files(path)
        if index >= len(files):
            raise InputError(f"{path}: no source frame {index} (it has {len(files)} frames)")
        return read_image(files[index])
    return next(iter_frames(path, max_frames=1, start=index))


def _driving_frames(path: Path, n: int | None, size: int) -> Sequence[np.ndarray] | np.ndarray:
    if path.is_dir():
        return ImageFiles(frame_files(path)[:n])
    return np.stack(list(iter_frames(path, max_frames=n, size=size)))


def _data_fps(data_dir: Path, video: str, path: Path) -> float:
    """The driving video's frame rate: the prepared manifest's ``fps`` column, a video
    file's own rate, else :data:`DEFAULT_FPS`."""
    manifest = Path(data_dir) / "manifest.csv"
    if manifest.is_file():
        with manifest.open(newline="", encoding="utf-8") as f:
            row = next((r for r in csv.DictReader(f) if r.get("video") == video), None)
        try:
            fps = float((row or {}).get("fps") or 0)
        except ValueError:
            fps = 0.0
        if fps > 0:
            return fps
    return probe(path).fps if path.is_file() else DEFAULT_FPS


# ------------------------------------------------------------------ grids and series
@dataclass(frozen=True)
class GridResult:
    """A grid video written by :func:`grid_for_video`.

    Attributes:
        path: the ``.webm`` file.
        n_frames: frames written.
        panels: panel labels, left to right (method panels by :func:`method_label`).
        missing: what has no frames: ``"source"``/``"driving"`` (no data folder) and
            method names (no counted record, or frames not saved): grey panels for
            methods; source and driving are left out.
        pair: the pair shown (:func:`chosen_pair`).
        fps: the frame rate written.
        notes: why things are missing, one line each.
    """

    path: Path
    n_frames: int
    panels: tuple[str, ...]
    missing: tuple[str, ...]
    pair: Pair
    fps: float
    notes: tuple[str, ...] = ()


def _method_panels(
    run_dir: Path, info: dict[str, Any], methods: Sequence[str], pair: Pair
) -> tuple[list[Panel], list[str], list[str], int | None]:
    """Panels of the methods, the methods without frames, notes, and the job length."""
    panels: list[Panel] = []
    missing, notes, lengths = [], [], []
    for method in methods:
        record = _counted(run_dir, info, method, pair)
        files = _saved_frames(record) if record is not None else None
        if record is not None:
            lengths.append(record.n_frames)
        if files is None:
            missing.append(method)
            why = "no counted job record" if record is None else "frames not saved"
            notes.append(f"{method}: {why} for {pair.key} (re-run with --save-frames)")
        panels.append((method_label(method), ImageFiles(files or [])))
    return panels, missing, notes, max(lengths, default=None)


def grid_for_video(
    run_dir: Path,
    video: str,
    methods: Sequence[str],
    data_dir: Path | None,
    out_path: Path,
    fps: float | None = None,
    size: int = 256,
) -> GridResult:
    """Write the side-by-side WebM of driving ``video``: source, driving, each method.

    Args:
        run_dir: the run directory (``run.json``, ``pairs.csv``, ``cache/``).
        video: a driving video of the run.
        methods: methods in panel order (registry names).
        data_dir: the run's data folder (:func:`run_data_dir`); ``None`` or missing: no
            source and driving panels.
        out_path: the ``.webm`` to write.
        fps: frame rate; ``None``: the driving video's (module doc), else 25.
        size: panel side in pixels.

    Raises:
        InputError: no pair drives ``video``; nothing has frames; unreadable data.
    """
    run_dir = Path(run_dir)
    info = _run_info(run_dir)
    pair = chosen_pair(run_dir, video)
    panels, missing, notes, n = _method_panels(run_dir, info, methods, pair)
    resolution = int(info.get("setup", {}).get("resolution", 256))
    n = n or info.get("setup", {}).get("frames")
    driving, why = _data_video(data_dir, resolution, pair.driving)
    source, why_src = _data_video(data_dir, resolution, pair.source)
    data_panels: list[Panel] = []
    if source is not None and driving is not None:
        data_panels = [
            (SOURCE, _source_image(source, pair.source_frame)),
            (DRIVING, _driving_frames(driving, n, size)),
        ]
        fps = fps or _data_fps(Path(str(data_dir)), pair.driving, driving)
    else:
        missing[:0] = [SOURCE, DRIVING]
        notes.insert(0, f"source/driving: {why or why_src}")
    if not data_panels and len(missing) == len(methods) + 2:
        raise InputError(
            f"{run_dir}: nothing to show for video {video!r} ({'; '.join(notes)}); pass the "
            "data folder or re-run with --save-frames"
        )
    fps = fps or DEFAULT_FPS
    all_panels = data_panels + panels
    written = encode_browser_video(compose_grid(all_panels, size), out_path, fps)
    return GridResult(
        Path(out_path), written, tuple(p[0] for p in all_panels), tuple(missing), pair, fps,
        tuple(notes),
    )  # fmt: skip


def frame_series(run_dir: Path, metric: str, video: str) -> dict[str, np.ndarray]:
    """Per-frame values of ``metric`` for driving ``video`` (the pair of
    :func:`chosen_pair`), per method of the run, from its counted job records.

    Returns:
        method -> ``(n_frames,) float64`` values indexed by driving frame (NaN: frame
        left out; the driving frame that is the source, which records drop, comes back
        as NaN so that index t is frame t of the grid video), in the run's method order.
        Methods without a counted record or without per-frame values of ``metric``
        (distribution or temporal metrics) are left out.
    """
    run_dir = Path(run_dir)
    info = _run_info(run_dir)
    pair = chosen_pair(run_dir, video)
    series: dict[str, np.ndarray] = {}
    for method in info.get("methods", ()):
        record = _counted(run_dir, info, method, pair)
        part = record.parts.get(metric) if record is not None else None
        if part is not None and part.values is not None and record is not None:
            series[method] = _on_driving_frames(part, record.n_frames, pair.source_frame)
    return series


def _on_driving_frames(part: JobPart, n_frames: int, source_frame: int) -> np.ndarray:
    """Values indexed by driving frame: a record drops the value of the driving frame that
    is the source (``source_frame_left_out``); it comes back here as NaN."""
    values = np.asarray(part.values, dtype=np.float64)
    dropped = part.info.get("source_frame_left_out") and len(values) == n_frames - 1
    return np.insert(values, source_frame, np.nan) if dropped else values
