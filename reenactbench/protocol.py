"""Protocol files (TOML) -> dataclasses, and the seeded (source, driving) pairings.

A protocol states everything that changes the numbers: the split rule and its seed,
frames per video, evaluation resolution, pairing rule, metrics and FVD clip length
(design §6). ``docs/protocols.md`` documents every field; the shipped files live in
``protocols/`` (installed as ``reenactbench.protocols``).
"""

from __future__ import annotations

import hashlib
import json
import tomllib
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from importlib.resources import files
from pathlib import Path
from typing import Any

import numpy as np

from reenactbench.data.dataset import Dataset, VideoRecord
from reenactbench.errors import ProtocolError

__all__ = [
    "KINDS",
    "Protocol",
    "Pair",
    "load_protocol",
    "shipped_protocols",
    "select_videos",
    "make_pairs",
]

KINDS = ("same-id", "cross-id", "robustness")
SPLITS = ("all", "identity-holdout")
SOURCE_SELECTIONS = ("fps-landmarks", "uniform")
AU_GAZE_POOLINGS = ("groups", "series")


@dataclass(frozen=True)
class Protocol:
    """One evaluation protocol (see docs/protocols.md for each field)."""

    name: str
    kind: str  #: "same-id" | "cross-id" | "robustness"
    description: str = ""
    dataset: str = "hdtf"  #: informational name of the data set it was made for
    split: str = "identity-holdout"  #: "all" or "identity-holdout"
    split_seed: int = 0
    test_fraction: float = 0.2  #: share of videos in the held-out identities
    split_file: str | None = None  #: file with one test video name per line (overrides split)
    max_videos: int | None = 75  #: evaluate the first N test videos in seeded order
    frames: int = 500  #: first N frames of each video
    allow_short: bool = False  #: a video with fewer frames is used whole (else an error)
    resolution: int = 256  #: evaluation resolution (every output and ground truth resized)
    pairing_seed: int = 0
    source_frame: int = 0  #: same-id / cross-id: index of the source frame
    #: score the driving frame that is also the source (same video): an input, not a
    #: prediction, so frame metrics and FID leave it out unless this is true
    score_source_frame: bool = False
    drivers: int = 5  #: robustness: driving videos
    sources: int = 5  #: robustness: source frames per driving video
    source_selection: str = "fps-landmarks"  #: robustness: "fps-landmarks" | "uniform"
    metrics: tuple[str, ...] = ("l1", "psnr", "ssim")
    fvd_clip: int = 16
    fvd_clips: str = "aligned-all"  #: FVD clip protocol (docs/metrics.md)
    id_backend: str = "irse50"  #: `id` backend (the paper's ArcFace: irse50)
    temporal_backend: str = "landmarks"  #: AU / gaze / pose backend (paper: openface)
    #: rho_AU+GZ: "groups" (mean of rho_AU and rho_GZ) or "series" (mean of all 19 r)
    au_gaze_pooling: str = "groups"
    path: str = ""  #: file it was read from
    sha256: str = field(default="", compare=False)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def metric_options(self, overrides: dict[str, str | None] | None = None) -> dict[str, str]:
        """The metric backend options of this protocol, with the command line's
        ``overrides`` (a ``None`` value keeps the protocol's)."""
        options = {
            "id_backend": self.id_backend,
            "temporal_backend": self.temporal_backend,
            "fvd_clips": self.fvd_clips,
            "au_gaze_pooling": self.au_gaze_pooling,
        }
        options.update({k: v for k, v in (overrides or {}).items() if v is not None})
        return options


@dataclass(frozen=True)
class Pair:
    """One re-enactment job input: animate frame ``source_frame`` of ``source`` with
    the first frames of ``driving``. ``group`` names the unit results are grouped by
    (the driving video)."""

    driving: str
    source: str
    source_frame: int

    @property
    def key(self) -> str:
        """File-system-safe unique id, e.g. ``WRA_A_000__WRA_A_000_f000000``."""
        return f"{self.driving}__{self.source}_f{self.source_frame:06d}"


def shipped_protocols() -> dict[str, Path]:
    """Name -> file of every protocol shipped with the package."""
    root = files("reenactbench.protocols")
    return {Path(str(p)).stem: Path(str(p)) for p in root.iterdir() if str(p).endswith(".toml")}


def _check(cond: bool, path: Path, msg: str) -> None:
    if not cond:
        raise ProtocolError(f"{path}: {msg}")


def load_protocol(name_or_path: str | Path) -> Protocol:
    """Read a shipped protocol by name (``hdtf_same_id``) or any protocol file.

    Raises:
        ProtocolError: unknown name, unreadable TOML, unknown or invalid field.
    """
    shipped = shipped_protocols()
    path = shipped.get(str(name_or_path)) or Path(name_or_path)
    if not path.is_file():
        raise ProtocolError(
            f"unknown protocol {str(name_or_path)!r}; shipped: {', '.join(sorted(shipped))} "
            "(or pass a .toml file)"
        )
    raw = path.read_bytes()
    try:
        data = tomllib.loads(raw.decode())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ProtocolError(f"{path}: invalid TOML ({e})") from None
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):  # sections only group fields for readability
            flat.update(value)
        else:
            flat[key] = value
    known = {f for f in Protocol.__dataclass_fields__ if f not in ("path", "sha256")}
    unknown = sorted(set(flat) - known)
    _check(not unknown, path, f"unknown field(s) {', '.join(unknown)}; see docs/protocols.md")
    _check("name" in flat and "kind" in flat, path, "needs name and kind")
    _check_types(flat, path)
    if "metrics" in flat:
        flat["metrics"] = tuple(flat["metrics"])
    try:
        proto = Protocol(**flat, path=str(path), sha256=hashlib.sha256(raw).hexdigest())
    except TypeError as e:
        raise ProtocolError(f"{path}: {e}") from None
    _check(proto.kind in KINDS, path, f"kind must be one of {', '.join(KINDS)}")
    _check(proto.split in SPLITS, path, f"split must be one of {', '.join(SPLITS)}")
    _check(
        proto.source_selection in SOURCE_SELECTIONS,
        path,
        f"source_selection must be one of {', '.join(SOURCE_SELECTIONS)}",
    )
    _check(0 < proto.test_fraction < 1, path, "test_fraction must be in (0, 1)")
    for name in ("frames", "resolution", "drivers", "sources", "fvd_clip"):
        _check(getattr(proto, name) > 0, path, f"{name} must be > 0")
    _check(proto.max_videos is None or proto.max_videos > 0, path, "max_videos must be > 0")
    _check(proto.source_frame >= 0, path, "source_frame must be >= 0")
    _check(proto.split_file != "", path, "split_file is empty; remove it or name a file")
    _check(
        proto.au_gaze_pooling in AU_GAZE_POOLINGS,
        path,
        f"au_gaze_pooling must be one of {', '.join(AU_GAZE_POOLINGS)}",
    )
    return proto


#: Field -> the TOML types it accepts (bool is not an int here: `frames = true` is an error).
_TYPES: dict[str, tuple[type, ...]] = {
    "name": (str,), "kind": (str,), "description": (str,), "dataset": (str,),
    "split": (str,), "split_seed": (int,), "test_fraction": (int, float),
    "split_file": (str,), "max_videos": (int,), "frames": (int,), "allow_short": (bool,),
    "resolution": (int,),
    "pairing_seed": (int,), "source_frame": (int,), "score_source_frame": (bool,),
    "drivers": (int,), "sources": (int,),
    "source_selection": (str,), "metrics": (list,), "fvd_clip": (int,),
    "fvd_clips": (str,), "id_backend": (str,), "temporal_backend": (str,),
    "au_gaze_pooling": (str,),
}  # fmt: skip


def _check_types(flat: dict[str, Any], path: Path) -> None:
    """Each field has its declared type (TOML booleans and floats are not integers)."""
    for key, value in flat.items():
        want = _TYPES[key]
        ok = isinstance(value, want) and (bool in want or not isinstance(value, bool))
        if key == "metrics" and ok:
            ok = all(isinstance(m, str) for m in value)
        names = " or ".join("list of strings" if t is list else t.__name__ for t in want)
        _check(ok, path, f"{key} = {json.dumps(value)} must be {names}")


def _test_names(proto: Protocol, dataset: Dataset) -> list[str]:
    names = [v.name for v in dataset.videos]
    if proto.split_file:
        split_path = Path(proto.split_file)
        if not split_path.is_absolute():
            split_path = Path(proto.path).parent / split_path
        if not split_path.is_file():
            raise ProtocolError(f"{proto.path}: split_file {split_path} not found")
        wanted = [ln.strip() for ln in split_path.read_text().splitlines() if ln.strip()]
        missing = sorted(set(wanted) - set(names))
        if missing:
            raise ProtocolError(
                f"{split_path}: {len(missing)} test video(s) not in {dataset.root}, "
                f"e.g. {missing[0]}; prepare them or edit the split file"
            )
        return wanted
    if proto.split == "all":
        return names
    identities = sorted({v.identity for v in dataset.videos})
    rng = np.random.default_rng(proto.split_seed)
    per_identity: dict[str, list[str]] = {}
    for v in dataset.videos:
        per_identity.setdefault(v.identity, []).append(v.name)
    target = proto.test_fraction * len(names)
    test: list[str] = []
    for i in rng.permutation(len(identities)):
        if len(test) >= target:
            break
        test.extend(per_identity[identities[i]])
    return sorted(test)


def select_videos(
    proto: Protocol, dataset: Dataset, max_videos: int | None = None
) -> list[VideoRecord]:
    """The test videos of ``dataset`` under ``proto``, in seeded evaluation order.

    The held-out identities are drawn by a seeded permutation of the sorted identities
    until they hold ``test_fraction`` of the videos (no identity in both splits); the
    test videos are then shuffled with the same seed and the first ``max_videos`` kept
    (the CLI's ``--max-videos`` can only lower the protocol's number).
    """
    names = _test_names(proto, dataset)
    order = np.random.default_rng(proto.split_seed).permutation(len(names))
    limit = min(x for x in (proto.max_videos, max_videos, len(names)) if x is not None)
    by_name = dataset.by_name()
    return [by_name[names[i]] for i in order[:limit]]


def _cross_identity(videos: list[VideoRecord], seed: int, tries: int = 10_000) -> list[int]:
    """A seeded permutation p with identity(videos[p[i]]) != identity(videos[i]) for all i
    (a derangement across identities), by rejection sampling."""
    ids = np.array([v.identity for v in videos])
    rng = np.random.default_rng(seed)
    for _ in range(tries):
        perm = rng.permutation(len(videos))
        if np.all(ids[perm] != ids):
            return [int(i) for i in perm]
    counts = {i: int((ids == i).sum()) for i in set(ids.tolist())}
    raise ProtocolError(
        f"cannot give each of {len(videos)} videos a source of another identity "
        f"(videos per identity: {counts}); the largest identity must hold at most half "
        "of the videos"
    )


def make_pairs(
    proto: Protocol,
    videos: list[VideoRecord],
    choose_sources: Callable[[VideoRecord, int], list[int]] | None = None,
) -> list[Pair]:
    """The (source, driving) pairs of ``proto`` over ``videos``, deterministic.

    Args:
        proto: the protocol.
        videos: test videos from :func:`select_videos`.
        choose_sources: robustness only: ``(video, k) -> k frame indices`` (diverse
            source frames); see :mod:`reenactbench.sources`.

    Raises:
        ProtocolError: the data cannot satisfy the pairing rule.
    """
    if proto.kind == "same-id":
        return [Pair(v.name, v.name, proto.source_frame) for v in videos]
    if proto.kind == "cross-id":
        if len(videos) < 2:
            raise ProtocolError(f"{proto.name}: cross-id needs at least 2 videos")
        perm = _cross_identity(videos, proto.pairing_seed)
        return [
            Pair(v.name, videos[j].name, proto.source_frame)
            for v, j in zip(videos, perm, strict=True)
        ]
    if len(videos) < proto.drivers:
        raise ProtocolError(
            f"{proto.name}: robustness needs {proto.drivers} driving videos, the data has "
            f"{len(videos)}; lower `drivers` or add videos"
        )
    if choose_sources is None:
        raise ProtocolError(f"{proto.name}: robustness pairing needs a source chooser")
    pairs = []
    for v in videos[: proto.drivers]:
        frames = choose_sources(v, proto.sources)
        pairs.extend(Pair(v.name, v.name, f) for f in frames)
    return pairs
