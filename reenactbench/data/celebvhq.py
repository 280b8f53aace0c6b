"""CelebV-HQ clips -> the prepared layout (``reenactbench prepare celebvhq``).

CelebV-HQ (Zhu et al., ECCV 2022) ships an annotation file, ``celebvhq_info.json``::

    {"meta_info": {...},
     "clips": {"<clip_id>": {"ytb_id": "<YouTube id>",
                             "duration": {"start_sec": float, "end_sec": float},
                             "bbox": {"top": float, "bottom": float, "left": float,
                                      "right": float},
                             "attributes": {...}, "version": ...}, ...}}

and a download script that writes each clip, already trimmed to its ``duration`` and
cropped to its ``bbox``, as ``<clip_id>.mp4``. This module prepares those files exactly as
``prepare hdtf`` does (:func:`reenactbench.data.prepare.prepare_named`: the FOMM-style
crop, ``manifest.csv``, ``skipped.csv``, resumable). A clip's **identity** is its
``ytb_id``: clips of one YouTube video show one person, so ``D2`` triplets of another
identity come from another video. (A person filmed in two YouTube videos counts as two
identities; for stage-1 training, which only needs ``D2`` to differ, that is harmless.)

Clips of the annotations that are not in the raw folder (the download script skips
unavailable videos) are counted and left out; files of the raw folder that the
annotations do not name are ignored and counted.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from reenactbench.data.prepare import DEFAULT_MARGIN, PrepareResult, Progress, prepare_named
from reenactbench.errors import InputError
from reenactbench.video import list_videos

__all__ = ["CelebVHQResult", "read_celebvhq_identities", "prepare_celebvhq"]


@dataclass
class CelebVHQResult:
    """What :func:`prepare_celebvhq` did: ``prepare`` (the manifest, prepared and skipped
    clips), ``missing`` annotated clips not in the raw folder, ``unlisted`` raw files the
    annotations do not name (names, sorted)."""

    prepare: PrepareResult
    missing: list[str] = field(default_factory=list)
    unlisted: list[str] = field(default_factory=list)


def read_celebvhq_identities(path: Path) -> dict[str, str]:
    """Clip id -> identity (its ``ytb_id``) from a CelebV-HQ annotation file.

    Raises:
        InputError: missing file, invalid JSON, or not the CelebV-HQ structure (the
            message names the file and, where it applies, the clip).
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: annotation file not found; pass CelebV-HQ's celebvhq_info.json")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise InputError(f"{path}: not UTF-8 text; pass CelebV-HQ's celebvhq_info.json") from None
    except json.JSONDecodeError as e:
        raise InputError(
            f"{path}: invalid JSON ({e.msg} at line {e.lineno}); pass CelebV-HQ's "
            "celebvhq_info.json"
        ) from None
    clips = data.get("clips") if isinstance(data, dict) else None
    if not isinstance(clips, dict) or not clips:
        raise InputError(
            f'{path}: no "clips" object of clip id -> annotation; not a CelebV-HQ '
            "celebvhq_info.json"
        )
    out = {}
    for clip_id, info in clips.items():
        ytb = info.get("ytb_id") if isinstance(info, dict) else None
        if not isinstance(ytb, str) or not ytb.strip():
            raise InputError(f'{path}: clip {clip_id!r} has no "ytb_id" string')
        out[str(clip_id)] = ytb.strip()
    return out


def prepare_celebvhq(
    raw_dir: Path,
    annotations: Path,
    out_dir: Path,
    resolutions: tuple[int, ...] = (256,),
    max_frames: int = 500,
    margin: float = DEFAULT_MARGIN,
    detect_every: int = 5,
    on_progress: Progress | None = None,
) -> CelebVHQResult:
    """Prepare the CelebV-HQ clips of ``raw_dir`` (``<clip_id>.mp4``, or any video file
    or frame folder named by its clip id) that ``annotations`` lists.

    Raises:
        InputError: a bad annotation file, a raw folder without videos, two files of
            one clip id, none of the annotated clips in the raw folder, or a bad option.
    """
    identities = read_celebvhq_identities(annotations)
    files: dict[str, Path] = {}
    for path in list_videos(Path(raw_dir)):
        name = path.stem if path.is_file() else path.name
        if name in files:
            raise InputError(
                f"{path}: two videos are named {name!r} ({files[name].name}); rename one"
            )
        files[name] = path
    listed = {name: path for name, path in sorted(files.items()) if name in identities}
    missing = sorted(set(identities) - set(files))
    unlisted = sorted(set(files) - set(identities))
    if not listed:
        raise InputError(
            f"{raw_dir}: none of the {len(identities)} clips of {annotations} is here "
            f"(expected files such as {next(iter(identities))}.mp4); pass the folder the "
            "CelebV-HQ download script wrote"
        )
    result = prepare_named(
        listed,
        out_dir,
        {name: identities[name] for name in listed},
        resolutions,
        max_frames,
        margin,
        detect_every,
        on_progress,
    )
    return CelebVHQResult(result, missing, unlisted)
