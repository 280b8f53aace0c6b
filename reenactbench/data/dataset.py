"""Data sets the runner evaluates on: prepared layouts and plain folders of videos.

Two layouts are accepted (see docs/data.md):

* **prepared** (written by ``reenactbench prepare`` and the demo builder):
  ``ROOT/manifest.csv`` (columns ``video, identity, n_frames, ...``) and frame folders
  ``ROOT/<resolution>/<video>/000000.png ...``;
* **folder**: ``ROOT`` holds videos (files or frame folders) directly. The identity of a
  video is its name with a trailing ``_<digits>`` removed (``WRA_AdamKinzinger_000`` ->
  ``WRA_AdamKinzinger``), unless ``ROOT/identities.csv`` (columns ``video, identity``)
  says otherwise.
"""

from __future__ import annotations

import csv
import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from reenactbench.errors import InputError
from reenactbench.video import frame_files, list_videos

__all__ = ["VideoRecord", "Dataset", "identity_of", "load_dataset"]

_TRAILING_INDEX = re.compile(r"_\d+$")


def identity_of(video: str) -> str:
    """Identity from a video name: the name without a trailing ``_<digits>``."""
    return _TRAILING_INDEX.sub("", video) or video


@dataclass(frozen=True)
class VideoRecord:
    """One video of a data set: ``name`` (unique), ``identity``, and its file or folder."""

    name: str
    identity: str
    path: Path


@dataclass(frozen=True)
class Dataset:
    """Videos at one resolution (``resolution`` is ``None`` for a plain folder, whose
    videos may have any size and are resized by the runner)."""

    root: Path
    resolution: int | None
    videos: tuple[VideoRecord, ...]

    def by_name(self) -> dict[str, VideoRecord]:
        return {v.name: v for v in self.videos}

    def fingerprint(self) -> str:
        """Identifies the data set, not where it lies nor its frames' bytes: the sha256
        of ``manifest.csv`` for a prepared data set, else of the sorted (name, identity)
        list. A run directory moved to another machine with the same data resumes; the
        frames each job read are checked per job (reenactbench/cache.py), so fixing one
        frame recomputes the jobs that read it instead of refusing the run directory."""
        manifest = self.root / "manifest.csv"
        if self.resolution is not None and manifest.is_file():
            blob = manifest.read_bytes()
        else:
            blob = "\n".join(f"{v.name},{v.identity}" for v in self.videos).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


def _read_mapping(path: Path) -> dict[str, str]:
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        if not reader.fieldnames or not {"video", "identity"} <= set(reader.fieldnames):
            raise InputError(f"{path}: needs the columns video,identity")
        return {row["video"]: row["identity"] for row in reader}


def _prepared(root: Path, resolution: int) -> Dataset:
    manifest = root / "manifest.csv"
    folder = root / str(resolution)
    if not folder.is_dir():
        have = sorted(p.name for p in root.iterdir() if p.is_dir() and p.name.isdigit())
        raise InputError(
            f"{root}: no {resolution}x{resolution} frames (folder {folder.name}/ missing; "
            f"present: {', '.join(have) or 'none'}); run `reenactbench prepare` with "
            f"--resolution {resolution}"
        )
    with manifest.open(newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows or not {"video", "identity"} <= set(rows[0]):
        raise InputError(f"{manifest}: empty or without video,identity columns; re-run prepare")
    videos = []
    for row in rows:
        path = folder / row["video"]
        if not path.is_dir():
            raise InputError(f"{path}: listed in {manifest.name} but missing; re-run prepare")
        _check_count(path, row.get("n_frames"), manifest)
        videos.append(VideoRecord(row["video"], row["identity"], path))
    return Dataset(root, resolution, tuple(sorted(videos, key=lambda v: v.name)))


def _check_count(path: Path, listed: str | None, manifest: Path) -> None:
    """The frame folder holds the frames the manifest lists (frames deleted or added
    after ``prepare`` would silently change what is scored)."""
    if not listed:
        return
    have = len(frame_files(path))
    if str(have) != listed.strip():
        raise InputError(
            f"{path}: holds {have} frames, {manifest.name} lists {listed.strip()}; frames "
            "were deleted or added after prepare: restore them or re-run prepare"
        )


def load_dataset(root: Path, resolution: int = 256) -> Dataset:
    """Open a prepared data set at ``resolution`` or a plain folder of videos.

    Raises:
        InputError: missing folder, no videos, duplicate names, bad manifest.
    """
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"{root}: data folder not found; pass --data DIR (see docs/data.md)")
    if (root / "manifest.csv").is_file():
        return _prepared(root, resolution)
    mapping_file = root / "identities.csv"
    mapping = _read_mapping(mapping_file) if mapping_file.is_file() else {}
    videos: dict[str, VideoRecord] = {}
    for path in list_videos(root):
        name = path.stem if path.is_file() else path.name
        if name in videos:
            raise InputError(f"{path}: two videos are named {name!r}; rename one")
        videos[name] = VideoRecord(name, mapping.get(name) or identity_of(name), path)
    return Dataset(root, None, tuple(videos[k] for k in sorted(videos)))
