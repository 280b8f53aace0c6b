"""FOMM-style preprocessing of raw talking-head videos (``reenactbench prepare``).

The crop follows First Order Motion Model's ``crop-video.py``: detect the face on frames
of the clip, take the union of the boxes over the clip, enlarge it by ``margin`` of its
larger side on each side, make it square around its centre, move it inside the frame
(shrinking it to the frame's shorter side if it does not fit), crop every frame to that
one square and resize it (``video.resize``, antialiased bicubic) to each requested
resolution. One box per clip, so the camera does not move with the head.

Detection is dlib's HOG detector (``reenactbench.faces``) on every ``detect_every``-th
frame, run on a copy downscaled to a longer side of ``DETECT_SIZE`` px; boxes are mapped
back to source pixels. The largest face of each sampled frame enters the union.

Output layout (read by ``reenactbench.data.dataset``)::

    OUT/manifest.csv          video, identity, n_frames, fps, source, box
    OUT/skipped.csv           video, source, reason   (videos that could not be prepared)
    OUT/<res>/<video>/000000.png ...                  (lossless PNG, res x res)

``box`` is "x0 y0 x1 y1", the square crop in source pixels (x1, y1 exclusive).
"""

from __future__ import annotations

import csv
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from reenactbench.data.dataset import identity_of
from reenactbench.errors import InputError
from reenactbench.video import (
    check_decoded,
    frame_files,
    frame_gaps,
    iter_frames,
    list_videos,
    probe,
    resize,
    write_png_folder,
)

__all__ = [
    "DEFAULT_MARGIN",
    "DETECT_SIZE",
    "MANIFEST_COLUMNS",
    "Box",
    "ClipResult",
    "PrepareResult",
    "check_resolutions",
    "detect_clip_boxes",
    "square_crop_box",
    "find_crop_box",
    "format_box",
    "write_crops",
    "prepare_clip",
    "read_manifest",
    "write_manifest",
    "prepare_videos",
    "prepare_named",
]

#: Longer side (px) of the downscaled copy the detector runs on.
DETECT_SIZE = 640
#: Crop margin per side, as a fraction of the union box's larger side. FOMM's
#: crop-video.py uses 0.1 on S3FD boxes; dlib's HOG boxes are tighter (brows to chin),
#: and 0.1 cuts off the hair and neck, so the whole head + some shoulders needs ~0.4.
DEFAULT_MARGIN = 0.4
MANIFEST_COLUMNS = ("video", "identity", "n_frames", "fps", "source", "box")
_SKIPPED_COLUMNS = ("video", "source", "reason")

Box = tuple[int, int, int, int]  #: (x0, y0, x1, y1) pixels, x1/y1 exclusive
Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class ClipResult:
    """One prepared clip: ``n_frames`` written per resolution, crop ``box`` in source px."""

    name: str
    n_frames: int
    box: Box


@dataclass
class PrepareResult:
    """What ``prepare_videos`` did: the manifest, videos prepared in this call or found
    complete, videos skipped with the reason, and warnings about prepared ones."""

    manifest: Path
    prepared: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    warnings: dict[str, str] = field(default_factory=dict)


def check_resolutions(resolutions: Iterable[int]) -> tuple[int, ...]:
    """Sorted unique output sizes; each must be a positive int.

    Raises:
        InputError: empty, or a value that is not a positive int.
    """
    out = []
    for r in resolutions:
        if isinstance(r, bool) or not isinstance(r, int | np.integer) or r <= 0:
            raise InputError(f"resolution {r!r} is not a positive integer; use e.g. 256 or 1024")
        out.append(int(r))
    if not out:
        raise InputError("no output resolution requested; use e.g. 256 (and 1024)")
    return tuple(sorted(set(out)))


def _detect_one(frame: np.ndarray) -> Box | None:
    from reenactbench.faces import detect_faces

    h, w = frame.shape[:2]
    scale = min(1.0, DETECT_SIZE / max(h, w))
    small = frame if scale == 1.0 else resize(frame, (round(h * scale), round(w * scale)))
    faces = detect_faces(small)
    if not faces:
        return None
    x0, y0, x1, y1 = faces[0].box
    return (
        int(np.floor(x0 / scale)),
        int(np.floor(y0 / scale)),
        min(w, int(np.ceil(x1 / scale))),
        min(h, int(np.ceil(y1 / scale))),
    )


def detect_clip_boxes(
    frames: Iterable[np.ndarray], detect_every: int = 5
) -> tuple[dict[int, Box], int, tuple[int, int]]:
    """Detect the largest face on frames 0, k, 2k, ... (k = ``detect_every``).

    Args:
        frames: ``(H, W, 3) uint8`` RGB, streamed once.
        detect_every: sampling step, >= 1.

    Returns:
        (frame index -> box in source pixels for sampled frames with a face,
        number of frames seen, (H, W)).
    """
    if detect_every < 1:
        raise InputError(f"detect_every must be >= 1, got {detect_every}")
    boxes: dict[int, Box] = {}
    n, size = 0, (0, 0)
    for i, frame in enumerate(frames):
        n, size = i + 1, frame.shape[:2]
        if i % detect_every == 0:
            box = _detect_one(frame)
            if box is not None:
                boxes[i] = box
    return boxes, n, size


def square_crop_box(
    boxes: Iterable[Box], height: int, width: int, margin: float = DEFAULT_MARGIN
) -> Box:
    """The FOMM-style square crop for a clip.

    Union of ``boxes``; enlarged by ``margin`` x its larger side on each side; made square
    (side = the larger enlarged side) around the union's centre; shrunk to
    ``min(height, width)`` if larger; shifted to lie inside the frame.

    Returns:
        (x0, y0, x1, y1) integer pixels, x1 - x0 == y1 - y0, inside the frame.

    Raises:
        ValueError: no boxes, or a negative margin.
    """
    b = np.array(list(boxes), dtype=np.float64).reshape(-1, 4)
    if len(b) == 0:
        raise ValueError("no face boxes to crop around")
    if margin < 0:
        raise ValueError(f"margin must be >= 0, got {margin}")
    x0, y0 = b[:, 0].min(), b[:, 1].min()
    x1, y1 = b[:, 2].max(), b[:, 3].max()
    big = max(x1 - x0, y1 - y0)
    side = int(round(min(big * (1 + 2 * margin), height, width)))
    side = max(side, 1)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    left = int(round(cx - side / 2))
    top = int(round(cy - side / 2))
    left = min(max(left, 0), width - side)
    top = min(max(top, 0), height - side)
    return (left, top, left + side, top + side)


def find_crop_box(
    frames: Iterable[np.ndarray], name: str, margin: float = DEFAULT_MARGIN, detect_every: int = 5
) -> tuple[Box, int]:
    """Detect faces on a clip and return its square crop box and its frame count.

    Raises:
        InputError: no face on any sampled frame (the message names ``name``).
    """
    boxes, n, (h, w) = detect_clip_boxes(frames, detect_every)
    if not boxes:
        raise InputError(
            f"{name}: no face found on any of its {len(range(0, n, detect_every))} sampled "
            f"frames (every {detect_every}th of {n}); check the video or lower detect_every"
        )
    return square_crop_box(boxes.values(), h, w, margin), n


def write_crops(
    frames: Iterable[np.ndarray], box: Box, out_dir: Path, name: str, resolutions: Sequence[int]
) -> int:
    """Crop every frame to ``box`` and write ``out_dir/<res>/<name>/%06d.png`` for each
    resolution (any previous folder of that name is replaced). Returns the frame count."""
    x0, y0, x1, y1 = box
    folders = [Path(out_dir) / str(r) / name for r in resolutions]
    for folder in folders:
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
    n = 0
    for frame in frames:
        crop = np.ascontiguousarray(frame[y0:y1, x0:x1])
        for r, folder in zip(resolutions, folders, strict=True):
            write_png_folder([resize(crop, r)], folder, start=n)
        n += 1
    return n


def prepare_clip(
    frames: Sequence[np.ndarray] | np.ndarray,
    name: str,
    out_dir: Path,
    resolutions: Iterable[int] = (256,),
    margin: float = DEFAULT_MARGIN,
    detect_every: int = 5,
) -> ClipResult:
    """Crop one in-memory clip FOMM-style and write its frame folders (no manifest row).

    Args:
        frames: ``(T, H, W, 3) uint8`` RGB array or a sequence of such frames.
        name: video name (folder name under each resolution).
        out_dir: data set root.
        resolutions: output sizes, e.g. (256, 1024).
        margin: crop margin per side, fraction of the union box's larger side.
        detect_every: detect on every k-th frame.

    Raises:
        InputError: no face found, or a bad resolution.
    """
    res = check_resolutions(resolutions)
    box, _ = find_crop_box(frames, name, margin, detect_every)
    n = write_crops(frames, box, out_dir, name, res)
    return ClipResult(name, n, box)


def read_manifest(path: Path) -> list[dict[str, str]]:
    """Rows of a manifest.csv (empty list when the file is missing)."""
    path = Path(path)
    if not path.is_file():
        return []
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def _atomic_csv(path: Path, columns: Sequence[str], rows: Iterable[dict[str, object]]) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(columns), lineterminator="\n")
            writer.writeheader()
            writer.writerows(rows)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_manifest(path: Path, rows: Iterable[dict[str, object]]) -> None:
    """Write manifest rows (``MANIFEST_COLUMNS``) sorted by video, atomically."""
    _atomic_csv(Path(path), MANIFEST_COLUMNS, sorted(rows, key=lambda r: str(r["video"])))


def format_box(box: Box) -> str:
    """``(x0, y0, x1, y1)`` -> ``"x0 y0 x1 y1"`` (the manifest's box column)."""
    return " ".join(str(int(v)) for v in box)


def _complete(out_dir: Path, row: dict[str, str], resolutions: Sequence[int]) -> bool:
    try:
        n = int(row["n_frames"])
    except (KeyError, ValueError):
        return False
    for r in resolutions:
        folder = out_dir / str(r) / row["video"]
        if not folder.is_dir() or not (folder / f"{n - 1:06d}.png").is_file():
            return False
        if sum(1 for p in folder.iterdir() if p.suffix == ".png") != n:
            return False
    return True


def _read_identities(path: Path) -> dict[str, str]:
    path = Path(path)
    if not path.is_file():
        raise InputError(
            f"{path}: identities file not found; pass a CSV with columns video,identity"
        )
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        if not reader.fieldnames or not {"video", "identity"} <= set(reader.fieldnames):
            raise InputError(f"{path}: needs the columns video,identity (a header line)")
        mapping = {}
        for row in reader:
            video, ident = (row["video"] or "").strip(), (row["identity"] or "").strip()
            if not video or not ident:
                raise InputError(f"{path}: line {reader.line_num} has an empty video or identity")
            mapping[video] = ident
    return mapping


def _check_settings(
    resolutions: Iterable[int], max_frames: object, detect_every: int
) -> tuple[int, ...]:
    """The checked resolutions; usage errors and a missing face detector raise first.

    Raises:
        InputError: bad resolutions, ``max_frames`` or ``detect_every``; no face detector.
    """
    res = check_resolutions(resolutions)
    if isinstance(max_frames, bool) or not isinstance(max_frames, int) or max_frames < 1:
        raise InputError(f"max_frames must be a positive integer, got {max_frames!r}")
    if detect_every < 1:
        raise InputError(f"detect_every must be >= 1, got {detect_every}")
    from reenactbench.faces import faces_unavailable

    reason = faces_unavailable()
    if reason:
        raise InputError(f"prepare {reason}")
    return res


def _video_name(path: Path) -> str:
    return path.stem if path.is_file() else path.name


def prepare_videos(
    raw_dir: Path,
    out_dir: Path,
    resolutions: Iterable[int] = (256,),
    max_frames: int = 500,
    margin: float = DEFAULT_MARGIN,
    detect_every: int = 5,
    identities: Path | None = None,
    on_progress: Progress | None = None,
) -> PrepareResult:
    """Prepare every video in ``raw_dir`` into the layout described in the module doc.

    Each video is read twice (detect, then crop and write), so memory does not grow with
    its length. Resumable: a video already in ``manifest.csv`` whose frame folders are
    complete at every requested resolution is not redone; the manifest and
    ``skipped.csv`` are rewritten atomically after each video.

    Args:
        raw_dir: folder of video files (.mp4 .avi .mov .mkv .webm) or frame folders.
        out_dir: data set root (created).
        resolutions: output sizes in px, positive ints, e.g. (256, 1024).
        max_frames: keep the first N frames of each video (>= 1).
        margin: crop margin per side, fraction of the union box's larger side.
        detect_every: detect faces on every k-th of the kept frames.
        identities: optional CSV (video, identity); videos it does not name get the
            default rule: the name without a trailing ``_<digits>``.
        on_progress: called as ``(video_name, done, total)`` after each video.

    Returns:
        The manifest path, prepared video names (including ones found complete), and
        skipped videos with their reason (no face, undecodable file).

    Raises:
        InputError: ``raw_dir`` has no videos, duplicate video names, bad resolutions,
            bad ``max_frames``/``detect_every``, bad identities file.
    """
    res = _check_settings(resolutions, max_frames, detect_every)
    videos = list_videos(Path(raw_dir))
    names: dict[str, Path] = {}
    for path in videos:
        name = _video_name(path)
        if name in names:
            raise InputError(
                f"{path}: two videos are named {name!r} ({names[name].name}); rename one"
            )
        names[name] = path
    mapping = _read_identities(identities) if identities is not None else {}
    return prepare_named(
        names,
        out_dir,
        {name: mapping.get(name) or identity_of(name) for name in names},
        res,
        max_frames,
        margin,
        detect_every,
        on_progress,
    )


def prepare_named(
    names: dict[str, Path],
    out_dir: Path,
    identities: dict[str, str],
    resolutions: Iterable[int] = (256,),
    max_frames: int = 500,
    margin: float = DEFAULT_MARGIN,
    detect_every: int = 5,
    on_progress: Progress | None = None,
) -> PrepareResult:
    """Prepare the videos ``names`` (video name -> file or frame folder) with the given
    identities (video name -> identity) into ``out_dir``: the work of
    :func:`prepare_videos` once the videos are listed (``prepare celebvhq`` lists them
    from its annotation file). Same layout, crop rule, resumption and skip rules.

    Raises:
        InputError: bad resolutions, ``max_frames`` or ``detect_every``; no face
            detector installed.
    """
    res = _check_settings(resolutions, max_frames, detect_every)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest = out_dir / "manifest.csv"
    rows = {r["video"]: r for r in read_manifest(manifest) if r.get("video")}
    result = PrepareResult(manifest)
    skipped_rows: list[dict[str, object]] = []
    for done, (name, path) in enumerate(names.items(), start=1):
        identity = identities[name]
        old = rows.get(name)
        if old is not None and _complete(out_dir, old, res):
            if old.get("identity") != identity:  # mapping changed: metadata only
                rows[name] = {**old, "identity": identity}
                write_manifest(manifest, rows.values())
            result.prepared.append(name)
        else:
            try:
                info = probe(path)  # a truncated file with a stated duration fails here
                box, _ = find_crop_box(
                    iter_frames(path, max_frames=max_frames), name, margin, detect_every
                )
                n = write_crops(iter_frames(path, max_frames=max_frames), box, out_dir, name, res)
                check_decoded(path, n, min(info.n_frames, max_frames))
            except InputError as e:
                for r in res:  # drop a half-written clip
                    shutil.rmtree(out_dir / str(r) / name, ignore_errors=True)
                result.skipped[name] = str(e)
                skipped_rows.append({"video": name, "source": path.name, "reason": str(e)})
                rows.pop(name, None)
            else:
                rows[name] = {
                    "video": name,
                    "identity": identity,
                    "n_frames": n,
                    "fps": f"{info.fps:.6g}",
                    "source": path.name,
                    "box": format_box(box),
                }
                result.prepared.append(name)
                gaps = frame_gaps(frame_files(path)) if path.is_dir() else None
                if gaps:
                    result.warnings[name] = f"{path}: {gaps} (prepared frames are renumbered)"
            write_manifest(manifest, rows.values())
            _atomic_csv(out_dir / "skipped.csv", _SKIPPED_COLUMNS, skipped_rows)
        if on_progress is not None:
            on_progress(name, done, len(names))
    if not skipped_rows:
        (out_dir / "skipped.csv").unlink(missing_ok=True)
    return result
