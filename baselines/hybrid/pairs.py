"""Training triplets (I^S, I^D1, I^D2) for the hybrid encoder (paper Sec. 3.2).

``I^S`` and ``I^D1`` are two different frames of one video (same identity); ``I^D2`` is a
frame of a video of a different identity, chosen at random. From every video,
``frames_per_video`` frames (the paper's 50 samples per video) are taken evenly spaced
and cached in memory once, as ``uint8`` arrays:

* at ``loss_size`` (the size the losses are computed at: targets and Eq. 13 masks), and
* at ``input_size`` (the encoder input) when it differs from ``loss_size``.

Memory: ``n_cached * (loss_size**2 + input_size**2 [if different]) * 3`` bytes plus
``n_cached * 68 * 2 * 4`` bytes of landmarks. E.g. 400 videos x 50 frames at 256^2:
20,000 x 196,608 B = 3.9 GB; the tiny config (64^2) on the demo data (6 x 16 frames):
1.2 MB. Every DDP rank holds its own copy.

Landmarks (Eq. 13's mouth/eye/eyebrow masks) are found once per cached frame with
``reenactbench.faces.detect_landmarks`` on the frame at the data set's resolution (dlib's
HOG detector needs faces of about 80 px) and scaled to ``loss_size``. Frames without a
detected face are excluded from sampling (no fallback mask) and counted in
``excluded``; a video with fewer than two usable frames cannot be a source and is only
used as ``D2`` if it has one. Randomness: one ``numpy.random.Generator`` seeded from
``(seed, rank)``; ``state_dict`` / ``load_state_dict`` make a resumed run draw exactly
the stream an uninterrupted run would.

Which videos: :func:`training_split` (the complement of an evaluation protocol's test
identities, or every video with ``protocol=None``); the sampler reads only those
(``videos=``), and the training checkpoint records them (``TrainingSplit.record``).
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from reenactbench.data.dataset import Dataset, VideoRecord, load_dataset
from reenactbench.errors import InputError
from reenactbench.protocol import Protocol, select_videos
from reenactbench.video import frame_files, iter_frames, probe, read_image, resize

__all__ = [
    "PairBatch",
    "PairSampler",
    "TrainingSplit",
    "evenly_spaced",
    "to_tensor",
    "training_split",
]

#: Landmark detector: ``(H, W, 3) uint8`` RGB -> ``(68, 2) float32`` (x, y pixels) or None.
Detector = Callable[[np.ndarray], np.ndarray | None]


def evenly_spaced(n_frames: int, count: int) -> np.ndarray:
    """``min(count, n_frames)`` distinct frame indices spread evenly over ``[0, n_frames)``,
    first and last included: ``(k,) int64``, increasing."""
    if n_frames <= 0 or count <= 0:
        return np.zeros(0, dtype=np.int64)
    k = min(count, n_frames)
    return np.unique(np.round(np.linspace(0, n_frames - 1, k)).astype(np.int64))


def to_tensor(frames: np.ndarray) -> Tensor:
    """``(B, H, W, 3) uint8`` RGB -> ``(B, 3, H, W) float32`` in [-1, 1] (``x / 127.5 - 1``)."""
    return torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float() / 127.5 - 1


@dataclass
class PairBatch:
    """One batch of triplets; ``B`` = batch size.

    Attributes:
        src, d1, d2: encoder inputs ``(B, 3, input_size, input_size) float32`` in [-1, 1].
        src_target, d1_target: the same frames at ``loss_size``, ``(B, 3, L, L)`` in [-1, 1]
            (the very tensors ``src``/``d1`` when ``input_size == loss_size``).
        src_landmarks, d1_landmarks: ``(B, 68, 2) float32`` (x, y) pixels at ``loss_size``.
        index: ``(B, 3) int64`` cache rows of (S, D1, D2), for logging and tests.
    """

    src: Tensor
    d1: Tensor
    d2: Tensor
    src_target: Tensor
    d1_target: Tensor
    src_landmarks: Tensor
    d1_landmarks: Tensor
    index: np.ndarray

    def to(self, device: str | torch.device) -> PairBatch:
        """The tensors moved to ``device`` (``index`` stays a numpy array)."""
        t = {k: getattr(self, k).to(device) for k in _TENSOR_FIELDS}
        return PairBatch(**t, index=self.index)


_TENSOR_FIELDS = ("src", "d1", "d2", "src_target", "d1_target", "src_landmarks", "d1_landmarks")


@dataclass(frozen=True)
class TrainingSplit:
    """The videos a training run uses and the rule that chose them.

    Attributes:
        videos: training video names, sorted.
        protocol: the evaluation protocol whose test identities were held out, or
            ``None`` (no split: every video of the data, or the ``videos`` given).
        protocol_sha256: sha256 of that protocol file ("" without one).
        split: the protocol's split fields (``split``, ``split_seed``, ``test_fraction``,
            ``split_file``), empty without one.
        allow_test_identities: videos of test identities were allowed in.
        test_identity_videos: the training videos that belong to a test identity (only
            ever non-empty with ``allow_test_identities``).
    """

    videos: tuple[str, ...]
    protocol: str | None = None
    protocol_sha256: str = ""
    split: dict[str, Any] = dataclasses.field(default_factory=dict)
    allow_test_identities: bool = False
    test_identity_videos: tuple[str, ...] = ()

    def record(self, dataset: Dataset, stage: int) -> dict[str, Any]:
        """What a checkpoint stores about this split (plain values, ``weights_only``
        loadable): the stage, data root and fingerprint, the video list and the rule."""
        return {
            "stage": int(stage),
            "data": str(dataset.root),
            "data_fingerprint": dataset.fingerprint(),
            "videos": list(self.videos),
            "protocol": self.protocol,
            "protocol_sha256": self.protocol_sha256,
            "split": dict(self.split) if self.protocol is not None else "none",
            "allow_test_identities": self.allow_test_identities,
            "test_identity_videos": list(self.test_identity_videos),
        }


def training_split(
    dataset: Dataset,
    protocol: Protocol | None,
    videos: Sequence[str] | None = None,
    allow_test_identities: bool = False,
) -> TrainingSplit:
    """The training videos of ``dataset``: with ``protocol``, every video whose identity
    is not one of the protocol's test identities (the identities of *all* its test
    videos, :func:`reenactbench.protocol.select_videos` without the ``max_videos`` cap);
    without, every video. ``videos`` names the training videos explicitly instead.

    Raises:
        InputError: a name of ``videos`` not in the data; a video of a test identity in
            ``videos`` without ``allow_test_identities``; no training video left.
    """
    by_name = dataset.by_name()
    if videos is not None:
        unknown = [v for v in videos if v not in by_name]
        if unknown:
            raise InputError(
                f"training video {unknown[0]!r} is not in {dataset.root} ({len(unknown)} "
                "unknown name(s)); list names of its manifest.csv / videos"
            )
    if protocol is None:
        chosen = sorted(set(videos)) if videos is not None else sorted(by_name)
        return TrainingSplit(tuple(chosen), allow_test_identities=allow_test_identities)
    uncapped = dataclasses.replace(protocol, max_videos=None)
    test_ids = {v.identity for v in select_videos(uncapped, dataset)}
    split = {
        "split": protocol.split,
        "split_seed": protocol.split_seed,
        "test_fraction": protocol.test_fraction,
        "split_file": protocol.split_file,
    }
    if videos is None:
        chosen = sorted(n for n, v in by_name.items() if v.identity not in test_ids)
    else:
        chosen = sorted(set(videos))
    leaked = tuple(n for n in chosen if by_name[n].identity in test_ids)
    if leaked and not allow_test_identities:
        raise InputError(
            f"training video {leaked[0]} is of identity {by_name[leaked[0]].identity!r}, a "
            f"test identity of protocol {protocol.name} ({len(leaked)} such video(s)); leave "
            "it out of --videos, or pass --allow-test-identities (recorded in the checkpoint)"
        )
    if not chosen:
        raise InputError(
            f"protocol {protocol.name} (split = {protocol.split}) leaves no training video in "
            f"{dataset.root}: all {len(by_name)} are of test identities; train on other data "
            "with --protocol none, or use a protocol with split = identity-holdout"
        )
    return TrainingSplit(
        tuple(chosen), protocol.name, protocol.sha256, split, allow_test_identities, leaked
    )


def _read_selected(video: VideoRecord, indices: np.ndarray) -> list[np.ndarray]:
    """Frames ``indices`` of a frame folder (only those files are read) or a video file."""
    wanted = set(int(i) for i in indices)
    if video.path.is_dir():
        files = frame_files(video.path)  # numbers compared as numbers (reenactbench.video)
        return [read_image(files[i]) for i in indices]
    return [f for i, f in enumerate(iter_frames(video.path)) if i in wanted]


def _n_frames(video: VideoRecord) -> int:
    if video.path.is_dir():
        return len(frame_files(video.path))
    return probe(video.path).n_frames


class PairSampler:
    """Seeded sampler of (I^S, I^D1, I^D2) batches over a prepared data set.

    Args:
        dataset_root: a data set ``reenactbench.data.dataset.load_dataset`` opens (prepared
            layout or plain folder of videos with identities).
        input_size: encoder input side (``cfg.encoder.input_size``).
        loss_size: side the losses are computed at (default ``input_size``).
        frames_per_video: frames cached per video, evenly spaced (paper: 50).
        seed: sampling seed; the stream is ``numpy.random.default_rng([seed, rank])``.
        resolution: which prepared resolution to read (``ROOT/<resolution>/``).
        rank: DDP rank (shards the random stream, not the data).
        detector: landmark detector (default ``reenactbench.faces.detect_landmarks``).
        videos: names of the videos to train on (default: every video of the data set;
            see :func:`training_split`).

    Attributes:
        n_cached: frames kept for sampling; excluded: frames dropped (no face detected);
        excluded_by_video: per-video count of those; videos: names of the cached videos.

    Raises:
        InputError: no usable source video (two face frames), fewer than two
            identities with usable frames (``D2`` needs a different identity), or a
            name in ``videos`` that the data set does not hold.
    """

    def __init__(
        self,
        dataset_root: Path,
        input_size: int,
        loss_size: int | None = None,
        frames_per_video: int = 50,
        seed: int = 0,
        resolution: int = 256,
        rank: int = 0,
        detector: Detector | None = None,
        videos: Sequence[str] | None = None,
    ) -> None:
        if frames_per_video < 2:
            raise InputError(
                f"frames_per_video must be >= 2 (S and D1 differ), got {frames_per_video}"
            )
        self.input_size, self.loss_size = input_size, loss_size or input_size
        self.frames_per_video, self.seed, self.rank = frames_per_video, seed, rank
        if detector is None:
            from reenactbench.faces import detect_landmarks

            detector = detect_landmarks
        self.dataset: Dataset = load_dataset(Path(dataset_root), resolution)
        self.selected = self._select(videos)
        self._build_cache(detector)
        self._rng = np.random.default_rng([seed, rank])
        self.batches_drawn = 0

    # ------------------------------------------------------------------ cache
    def _select(self, videos: Sequence[str] | None) -> tuple[VideoRecord, ...]:
        """The data set's videos named in ``videos`` (all when None), in name order."""
        if videos is None:
            return self.dataset.videos
        wanted = set(videos)
        missing = sorted(wanted - set(self.dataset.by_name()))
        if missing:
            raise InputError(
                f"{self.dataset.root}: has no video {missing[0]!r} ({len(missing)} of the "
                f"{len(wanted)} training videos missing); train on the data the list is for"
            )
        return tuple(v for v in self.dataset.videos if v.name in wanted)

    def _build_cache(self, detector: Detector) -> None:
        L, S = self.loss_size, self.input_size
        frames_l: list[np.ndarray] = []
        frames_i: list[np.ndarray] = []
        marks: list[np.ndarray] = []
        rows_by_video: dict[str, list[int]] = {}
        identity: dict[str, str] = {}
        self.excluded_by_video: dict[str, int] = {}
        for video in self.selected:
            indices = evenly_spaced(_n_frames(video), self.frames_per_video)
            rows: list[int] = []
            dropped = 0
            for frame in _read_selected(video, indices):
                lm = detector(frame)
                if lm is None:
                    dropped += 1
                    continue
                h, w = frame.shape[:2]
                scale = np.array([L / w, L / h], dtype=np.float32)
                rows.append(len(frames_l))
                frames_l.append(resize(frame, L))
                if S != L:
                    frames_i.append(resize(frame, S))
                marks.append(np.asarray(lm, dtype=np.float32) * scale)
            self.excluded_by_video[video.name] = dropped
            if rows:
                rows_by_video[video.name] = rows
                identity[video.name] = video.identity
        self.excluded = sum(self.excluded_by_video.values())
        self.n_cached = len(frames_l)
        self.videos = tuple(rows_by_video)
        self._frames_loss = np.stack(frames_l) if frames_l else np.zeros((0, L, L, 3), np.uint8)
        self._frames_input = np.stack(frames_i) if frames_i else None
        self._landmarks = np.stack(marks) if marks else np.zeros((0, 68, 2), np.float32)
        self._rows = {v: np.asarray(r, dtype=np.int64) for v, r in rows_by_video.items()}
        self._sources = [v for v in self.videos if len(self._rows[v]) >= 2]
        by_identity: dict[str, list[str]] = {}
        for v in self.videos:
            by_identity.setdefault(identity[v], []).append(v)
        self._identity = identity
        self._by_identity = by_identity
        self._identities = sorted(by_identity)
        root = self.dataset.root
        if not self._sources:
            raise InputError(
                f"{root}: no video has two frames with a detected face ({self.excluded} of "
                f"{self.excluded + self.n_cached} sampled frames had none); use face videos "
                "prepared with `reenactbench prepare`"
            )
        if len(self._identities) < 2:
            raise InputError(
                f"{root}: training needs videos of at least two identities with faces, found "
                f"{self._identities}; add videos or fix identities.csv / manifest.csv"
            )

    @property
    def memory_bytes(self) -> int:
        """Bytes held by the frame and landmark caches."""
        n = self._frames_loss.nbytes + self._landmarks.nbytes
        return n + (self._frames_input.nbytes if self._frames_input is not None else 0)

    # --------------------------------------------------------------- sampling
    def sample_indices(self, batch: int) -> np.ndarray:
        """Draw ``batch`` triplets of cache rows ``(batch, 3) int64`` (S, D1, D2): a source
        video uniformly among those with >= 2 frames, two distinct frames of it, then a
        different identity uniformly, a video of it uniformly, a frame uniformly."""
        rng = self._rng
        out = np.empty((batch, 3), dtype=np.int64)
        for b in range(batch):
            video = self._sources[int(rng.integers(len(self._sources)))]
            rows = self._rows[video]
            i, j = rng.choice(len(rows), size=2, replace=False)
            others = [k for k in self._identities if k != self._identity[video]]
            other = others[int(rng.integers(len(others)))]
            vids = self._by_identity[other]
            d2_rows = self._rows[vids[int(rng.integers(len(vids)))]]
            out[b] = (rows[i], rows[j], d2_rows[int(rng.integers(len(d2_rows)))])
        self.batches_drawn += 1
        return out

    def batch_from_indices(self, index: np.ndarray) -> PairBatch:
        """The :class:`PairBatch` of cache rows ``index`` ``(B, 3)``."""
        loss = self._frames_loss
        inp = self._frames_input if self._frames_input is not None else loss
        src_t, d1_t = to_tensor(loss[index[:, 0]]), to_tensor(loss[index[:, 1]])
        same = self._frames_input is None
        return PairBatch(
            src=src_t if same else to_tensor(inp[index[:, 0]]),
            d1=d1_t if same else to_tensor(inp[index[:, 1]]),
            d2=to_tensor(inp[index[:, 2]]),
            src_target=src_t,
            d1_target=d1_t,
            src_landmarks=torch.from_numpy(self._landmarks[index[:, 0]]),
            d1_landmarks=torch.from_numpy(self._landmarks[index[:, 1]]),
            index=index,
        )

    def sample(self, batch: int) -> PairBatch:
        """Next batch of ``batch`` triplets (advances the random stream)."""
        return self.batch_from_indices(self.sample_indices(batch))

    def frames(self, rows: np.ndarray) -> np.ndarray:
        """Cached frames ``rows`` at ``loss_size``: ``(N, L, L, 3) uint8``."""
        return self._frames_loss[rows]

    # ------------------------------------------------------------------ state
    def _fingerprint(self) -> dict[str, Any]:
        names = "\n".join(v.name for v in self.selected).encode()
        return {
            "dataset": self.dataset.fingerprint(),
            "videos": hashlib.sha256(names).hexdigest()[:16],
            "frames_per_video": self.frames_per_video,
            "input_size": self.input_size,
            "loss_size": self.loss_size,
            "n_cached": self.n_cached,
            "seed": self.seed,
            "rank": self.rank,
        }

    def state_dict(self) -> dict[str, Any]:
        """Random-stream state plus what identifies the cache (checked on load)."""
        return {
            "rng": self._rng.bit_generator.state,
            "batches_drawn": self.batches_drawn,
            "fingerprint": self._fingerprint(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue the stream of ``state``.

        Raises:
            InputError: the state was saved for other data, sizes, seed or rank.
        """
        mine, theirs = self._fingerprint(), state.get("fingerprint")
        if theirs != mine:
            diff = sorted(k for k in mine if not theirs or theirs.get(k) != mine[k])
            raise InputError(
                f"sampler state is for other data or settings (differs in {', '.join(diff)}); "
                "resume with the same --data, config and seed, or start a new --out"
            )
        self._rng.bit_generator.state = state["rng"]
        self.batches_drawn = int(state["batches_drawn"])
