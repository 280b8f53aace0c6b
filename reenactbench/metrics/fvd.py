"""FVD and FVD-mouth: Fréchet distance of I3D features of video clips (design §5).

Detector: StyleGAN-V's TorchScript I3D (Kinetics-400, converted from the tf.hub model
of the original FVD), weight ``i3d`` = ``i3d_torchscript.pt``, loaded with
``torch.jit.load(path, map_location=device)``. Input convention, as in StyleGAN-V
(universome/stylegan-v @ 3fecd69c602e1cda204357201461c0fb0a634909,
``src/metrics/frechet_video_distance.py`` and ``metric_utils.py``; NVIDIA Source Code
License; the code here is ours, only the convention is followed):

* clips are ``(C, 3, T, H, W) torch.uint8`` RGB in 0..255 (frames permuted from
  ``(C, T, H, W, 3)``), on the detector's device;
* the call is ``detector(clips, rescale=True, resize=True, return_features=True)``:
  the detector itself maps 0..255 to [-1, 1] (``rescale``) and resizes every frame to
  224x224 (``resize``); ``return_features`` returns the 400 logits before the softmax;
* the output is ``(C, 400) float32``, one feature row per clip; FVD is the Fréchet
  distance (:mod:`reenactbench.metrics.frechet`) between the Gaussians of the
  generated and the ground-truth clips' rows.

Clip protocols (metric option ``fvd_clips``, :data:`CLIP_PROTOCOLS`; recorded in every
job's info as ``clips``, with the covariance convention as ``covariance``). A job is one
generated video and its ground truth, both at the evaluation resolution; clips are
``ctx.fvd_clip`` (16) consecutive frames, taken at the same positions in both videos.

* ``aligned-all`` (default): every non-overlapping clip from frame 0; a trailing
  partial clip is dropped and its frames counted (``dropped_partial_frames``).
  Covariance ddof=1 (``np.cov``, as pytorch-fid and this package's FID): the numbers of
  earlier runs stay valid, and at the pooled level (2,325 clips on HDTF) the choice
  changes the covariances by 1/n (0.04 %). Per-job values use the same rows and rule.
* ``stylegan-v``: StyleGAN-V's ``fvd2048_16f`` sampling: one clip per video at a
  random offset, uniform over ``0 .. T - clip``, covariance ddof=0 (its
  ``FeatureStats.get_mean_cov``: raw_cov / n − μμᵀ), at most 2048 clips pooled. The
  offset is seeded by the job key (``set_job``; the pair key ``<driving>__<source>_fNNNNNN``
  in a run, the video name in ``score``) and not by the method, so every method, every
  rerun, resume or shard uses the same moment of each ground-truth video. It is chosen
  while streaming: position ``p`` gets the ``p``-th draw of ``default_rng(seed)`` and
  the clip with the smallest draw wins (uniform, and independent of the batch size and
  of the order of the jobs). StyleGAN-V draws the offset with Python's unseeded
  ``random``, takes the real clip at it and the generated clip at offset 0 of an
  unrelated sample; our generated video re-enacts its ground truth, so both clips are
  taken at the same offset. A video shorter than a clip has none
  (``excluded_short_jobs``; StyleGAN-V discards short videos too). One row per job
  leaves the per-job value undefined (NaN): this protocol gives pooled values only.
  The cap (:func:`capped_jobs`, applied where jobs are pooled): when more than 2048
  jobs have a clip, the 2048 with the smallest sha256 of ``"fvd-cap:" + job key`` are
  kept (StyleGAN-V keeps the first 2048 videos of its data set; a hash ranking does not
  depend on the order or subset of finished jobs).

``fvd_mouth`` is the same on mouth-centred square crops (:mod:`reenactbench.faces.mouth`:
the generated frames cropped with boxes from the generated video's landmarks, the
ground-truth frames with boxes from the ground truth's, smoothed over time, resized to
128 px). Every frame keeps its position, so mouth clips cover the same frames as the
full-frame clips; a clip holding a frame without a box (a leading stretch of more than
32 frames without a face) is excluded and counted (``excluded_no_face_clips``); under
``stylegan-v`` the offset is the valid position with the smallest draw (the full-frame
offset whenever that one is valid). A job where either video has no face at all gives
no clips and is counted (``excluded_no_face_jobs``), with ``no_face_frames_fake``,
``no_face_frames_real`` (frames without a detection) and ``no_box_frames``.

Streaming: an ``aligned-all`` evaluator holds at most ``max(1, ctx.batch_size // clip)``
clips of frames (one clip at the default batch size 16) before running the detector
on them; a ``stylegan-v`` evaluator holds the last ``clip`` frames and the best clip so
far. Memory does not grow with the video length.
"""

from __future__ import annotations

import hashlib
import warnings
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from reenactbench.errors import InputError
from reenactbench.metrics.base import JobPart, MetricContext
from reenactbench.metrics.registry import MetricSpec, register_metric

__all__ = [
    "I3D_KWARGS",
    "FVD_CLIPS_OPTION",
    "DEFAULT_FVD_CLIPS",
    "ClipProtocol",
    "CLIP_PROTOCOLS",
    "clip_protocol",
    "clip_seed",
    "capped_jobs",
    "load_i3d",
    "i3d_features",
    "FVDEvaluator",
    "build_fvd",
    "build_fvd_mouth",
]

#: Keyword arguments of every detector call (StyleGAN-V's ``detector_kwargs``).
I3D_KWARGS = {"rescale": True, "resize": True, "return_features": True}
_HINT = "i3d needs StyleGAN-V's i3d_torchscript.pt (reenactbench weights fetch i3d)"

#: ``MetricContext.options`` key that selects the clip protocol.
FVD_CLIPS_OPTION = "fvd_clips"
DEFAULT_FVD_CLIPS = "aligned-all"


@dataclass(frozen=True)
class ClipProtocol:
    """How clips are taken from a job and how their rows are pooled (module doc).

    Attributes:
        name: the ``fvd_clips`` value.
        one_per_video: one clip per job at a seeded offset (else every aligned clip).
        ddof: covariance convention of the Fréchet distance.
        max_clips: most clips in a pooled value (``None``: all).
    """

    name: str
    one_per_video: bool
    ddof: int
    max_clips: int | None

    @property
    def info(self) -> dict[str, str]:
        """What every job part records about the protocol."""
        return {"clips": self.name, "covariance": f"ddof={self.ddof}"}


CLIP_PROTOCOLS: dict[str, ClipProtocol] = {
    "aligned-all": ClipProtocol("aligned-all", one_per_video=False, ddof=1, max_clips=None),
    "stylegan-v": ClipProtocol("stylegan-v", one_per_video=True, ddof=0, max_clips=2048),
}


def clip_protocol(name: str | None = None) -> ClipProtocol:
    """The protocol called ``name`` (``None``: the default, ``aligned-all``).

    Raises:
        InputError: an unknown name (one line, naming the allowed values).
    """
    key = DEFAULT_FVD_CLIPS if name is None else name
    if key not in CLIP_PROTOCOLS:
        allowed = ", ".join(CLIP_PROTOCOLS)
        raise InputError(f"fvd_clips = {key!r} is not a clip protocol; use one of: {allowed}")
    return CLIP_PROTOCOLS[key]


def _digest(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")


def clip_seed(job_key: str) -> int:
    """Seed of a job's ``stylegan-v`` clip offset: the first 8 bytes of
    sha256(``"fvd-clip:" + job_key``), big-endian."""
    return _digest(f"fvd-clip:{job_key}")


def capped_jobs(keys: Sequence[str], infos: Sequence[Mapping[str, Any]]) -> list[int]:
    """Indices, in the given order, of the jobs whose rows enter a pooled value.

    All jobs, unless their info names a clip protocol with a cap (``stylegan-v``: 2048
    clips): then the jobs with clips are ranked by sha256(``"fvd-cap:" + key``) and
    taken while the clip count stays within the cap. Deterministic: it depends on the
    set of keys, not on their order.

    Args:
        keys: the jobs' keys (pair keys in a run; video names in ``score``).
        infos: their parts' ``info`` (for other metrics, anything: all are kept).
    """
    if len(keys) != len(infos):
        raise ValueError(f"{len(keys)} keys for {len(infos)} infos")
    names = {info.get("clips") for info in infos}
    caps = {CLIP_PROTOCOLS[n].max_clips for n in names if n in CLIP_PROTOCOLS}
    if len(names) > 1 and caps:
        raise ValueError(f"jobs made with different clip protocols: {sorted(map(str, names))}")
    cap = caps.pop() if caps else None
    if cap is None:
        return list(range(len(keys)))
    ranked = sorted(range(len(keys)), key=lambda i: (_digest(f"fvd-cap:{keys[i]}"), keys[i]))
    kept, total = [], 0
    for i in ranked:
        n = int(infos[i].get("n_clips", 0))
        if n and total + n <= cap:
            kept.append(i)
            total += n
    return sorted(kept)


def load_i3d(path: Path, device: str = "cpu") -> Any:
    """Load the TorchScript I3D detector.

    Args:
        path: ``i3d_torchscript.pt``.
        device: torch device for the module (``map_location``).

    Returns:
        The ``torch.jit.ScriptModule`` in eval mode.

    Raises:
        InputError: not a TorchScript archive, or its ``forward`` lacks the
            ``rescale``, ``resize``, ``return_features`` arguments.
    """
    import torch

    path = Path(path)
    try:
        with warnings.catch_warnings():  # torch.jit.load is deprecated; the file format is not
            warnings.simplefilter("ignore", FutureWarning)
            module = torch.jit.load(str(path), map_location=device)
    except (RuntimeError, ValueError, OSError) as e:
        why = (str(e).splitlines() or [type(e).__name__])[0][:100]
        raise InputError(f"{path}: not a TorchScript file ({why}); {_HINT}") from None
    try:
        args = {a.name for a in module.forward.schema.arguments}
    except AttributeError:
        args = set()
    if not set(I3D_KWARGS) <= args:
        raise InputError(
            f"{path}: its forward() takes {sorted(args - {'self'})}, not the I3D detector's "
            f"(x, rescale, resize, return_features); {_HINT}"
        )
    return module.eval()


def i3d_features(detector: Any, clips: np.ndarray, device: str = "cpu") -> np.ndarray:
    """I3D feature rows of clips.

    Args:
        detector: the module from :func:`load_i3d` (or a stand-in with its signature).
        clips: ``(C, T, H, W, 3) uint8`` RGB clips.
        device: torch device of the detector.

    Returns:
        ``(C, D) float32`` (D = 400 for the real I3D).
    """
    import torch

    if clips.dtype != np.uint8 or clips.ndim != 5 or clips.shape[-1] != 3:
        raise ValueError(f"clips must be (C,T,H,W,3) uint8, got {clips.shape} {clips.dtype}")
    x = torch.from_numpy(np.ascontiguousarray(clips)).to(device)
    x = x.permute(0, 4, 1, 2, 3).contiguous()  # (C, 3, T, H, W) uint8 0..255
    with torch.no_grad():
        out = detector(x, **I3D_KWARGS)
    if out.ndim != 2 or out.shape[0] != len(clips):
        raise InputError(
            f"the i3d detector returned {tuple(out.shape)} for {len(clips)} clips, not "
            f"({len(clips)}, D); {_HINT}"
        )
    return out.float().cpu().numpy()


class FVDEvaluator:
    """Streams one job at a time into I3D feature rows of its clips (kind distribution).

    Args:
        detector: the I3D module (:func:`load_i3d`).
        clip: frames per clip (``ctx.fvd_clip``).
        clips_per_batch: clips buffered per detector call (``aligned-all``).
        device: torch device of the detector.
        cropper: a :class:`reenactbench.faces.mouth.MouthCropper` for FVD-mouth, or
            ``None`` for whole frames.
        protocol: the clip protocol's name (:data:`CLIP_PROTOCOLS`).

    ``stylegan-v`` needs the job key: :meth:`set_job` before each :meth:`begin` (the
    runner's and ``score``'s :class:`~reenactbench.scoring.JobScorer` call it).
    ``offset`` is the first frame of the job's clip after :meth:`end` (``None``: none).
    """

    def __init__(
        self,
        detector: Any,
        clip: int = 16,
        clips_per_batch: int = 1,
        device: str = "cpu",
        cropper: Any | None = None,
        protocol: str = DEFAULT_FVD_CLIPS,
    ) -> None:
        if clip < 1 or clips_per_batch < 1:
            raise ValueError(f"clip ({clip}) and clips_per_batch ({clips_per_batch}) must be >= 1")
        self.protocol = clip_protocol(protocol)
        self.detector, self.clip, self.clips_per_batch = detector, clip, clips_per_batch
        self.device, self.cropper = device, cropper
        self.offset: int | None = None
        self._dim: int | None = None
        self._key: str | None = None
        self._start()

    def set_job(self, method: str, key: str, driving: str) -> None:
        """The job about to begin (``key`` seeds the ``stylegan-v`` offset)."""
        self._key = key

    def begin(self, source: np.ndarray) -> None:
        """Start a job (the source frame is not used)."""
        if self.protocol.one_per_video and self._key is None:
            raise ValueError("fvd_clips = stylegan-v: call set_job() before begin()")
        self._start()
        if self.cropper is not None:
            self.cropper.begin()

    def _start(self) -> None:
        self._t = 0  # frames taken
        self._rows_f: list[np.ndarray] = []  # (k, D) float32 per detector call
        self._rows_r: list[np.ndarray] = []
        # aligned-all: the clip being filled, and complete clips awaiting the detector
        self._cur_f: list[np.ndarray] = []
        self._cur_r: list[np.ndarray] = []
        self._cur_ok = True
        self._ready_f: list[np.ndarray] = []
        self._ready_r: list[np.ndarray] = []
        self._excluded_clips = 0
        # stylegan-v: the last `clip` frames, the best clip so far and its draw
        self._win: deque[tuple[np.ndarray, np.ndarray, bool]] = deque(maxlen=self.clip)
        self._rng = np.random.default_rng(clip_seed(self._key or ""))
        self._best: tuple[np.ndarray, np.ndarray] | None = None
        self._best_u = np.inf
        self.offset = None

    def add(self, fake: np.ndarray, real: np.ndarray) -> None:
        """``fake``, ``real``: ``(B, E, E, 3) uint8`` RGB, consecutive frames in order."""
        if fake.shape != real.shape or fake.ndim != 4 or fake.dtype != np.uint8:
            raise InputError(
                f"fake {fake.shape} {fake.dtype} and real {real.shape} {real.dtype} frames "
                "must be one (B,H,W,3) uint8 shape"
            )
        if self.cropper is not None:
            self._take(*self.cropper.push(fake, real))
        else:
            self._take(fake, real, np.ones(len(fake), dtype=bool))

    def _take(self, fake: np.ndarray, real: np.ndarray, valid: np.ndarray) -> None:
        """Frames in order; ``valid`` False: no crop for this frame (FVD-mouth)."""
        step = self._slide if self.protocol.one_per_video else self._fill
        for f, r, ok in zip(fake, real, valid, strict=True):
            step(f, r, bool(ok))
            self._t += 1

    def _fill(self, f: np.ndarray, r: np.ndarray, ok: bool) -> None:
        """aligned-all: clip k is frames ``k*clip .. k*clip + clip - 1``."""
        self._cur_f.append(f)
        self._cur_r.append(r)
        self._cur_ok &= ok
        if len(self._cur_f) < self.clip:
            return
        if self._cur_ok:
            self._ready_f.append(np.stack(self._cur_f))
            self._ready_r.append(np.stack(self._cur_r))
        else:
            self._excluded_clips += 1
        self._cur_f, self._cur_r, self._cur_ok = [], [], True
        if len(self._ready_f) == self.clips_per_batch:
            self._run()

    def _slide(self, f: np.ndarray, r: np.ndarray, ok: bool) -> None:
        """stylegan-v: position p (frames ``p .. p + clip - 1``) gets the p-th draw."""
        self._win.append((f, r, ok))
        if len(self._win) < self.clip:
            return
        u = self._rng.random()
        if u < self._best_u and all(w[2] for w in self._win):
            self._best_u = u
            self._best = (np.stack([w[0] for w in self._win]), np.stack([w[1] for w in self._win]))
            self.offset = self._t - self.clip + 1

    def _run(self) -> None:
        """Detector on the complete clips waiting."""
        for ready, rows in ((self._ready_f, self._rows_f), (self._ready_r, self._rows_r)):
            rows.append(i3d_features(self.detector, np.stack(ready), self.device))
            ready.clear()
        self._dim = self._rows_f[-1].shape[1]

    def _feature_dim(self) -> int:
        if self._dim is None:  # a job without clips: ask the detector its width once
            probe = np.zeros((1, self.clip, 64, 64, 3), dtype=np.uint8)
            self._dim = i3d_features(self.detector, probe, self.device).shape[1]
        return self._dim

    def end(self) -> JobPart:
        """Feature rows ``(C, D) float32`` of the job's generated and real clips."""
        info: dict[str, Any] = dict(self.protocol.info)
        if self.cropper is not None:
            self._take(*self.cropper.flush())
            c = self.cropper
            info.update(
                no_face_frames_fake=c.no_face_fake,
                no_face_frames_real=c.no_face_real,
                no_box_frames=c.no_box_frames,
            )
        if self.protocol.one_per_video:
            if self._best is not None:
                self._ready_f.append(self._best[0])
                self._ready_r.append(self._best[1])
            elif self._t < self.clip:
                info["excluded_short_jobs"] = 1
            self._best = None
            self._win.clear()
        else:
            info["dropped_partial_frames"] = len(self._cur_f)
            if self.cropper is not None:
                info["excluded_no_face_clips"] = self._excluded_clips
        if self._ready_f:
            self._run()
        no_clip = self._t >= self.clip and not self._rows_f
        if self.cropper is not None and (not self.cropper.found_face or no_clip):
            info["excluded_no_face_jobs"] = 1
        dim = self._feature_dim() if not self._rows_f else self._rows_f[0].shape[1]
        fake = np.concatenate(self._rows_f) if self._rows_f else np.zeros((0, dim), np.float32)
        real = np.concatenate(self._rows_r) if self._rows_r else np.zeros((0, dim), np.float32)
        self._rows_f, self._rows_r, self._cur_f, self._cur_r = [], [], [], []
        self._key = None  # the next job names itself again
        info["n_clips"] = len(fake)
        return JobPart(fake=fake, real=real, info=info)


def _detector(ctx: MetricContext) -> Any:
    """The run's I3D module, loaded once and shared by fvd and fvd_mouth."""
    from reenactbench.weights import weight_path

    path = weight_path("i3d", ctx.weights)
    key = f"i3d:{path}:{ctx.device}"
    if key not in ctx.shared:
        ctx.shared[key] = load_i3d(path, ctx.device)
    return ctx.shared[key]


def _clips_per_batch(ctx: MetricContext) -> int:
    return max(1, ctx.batch_size // ctx.fvd_clip)


def _protocol(ctx: MetricContext) -> str:
    """The run's clip protocol name (checked: an unknown one raises InputError)."""
    return clip_protocol(ctx.options.get(FVD_CLIPS_OPTION)).name


def build_fvd(ctx: MetricContext) -> FVDEvaluator:
    """The ``fvd`` evaluator of a run."""
    protocol = _protocol(ctx)
    return FVDEvaluator(
        _detector(ctx), ctx.fvd_clip, _clips_per_batch(ctx), ctx.device, protocol=protocol
    )


def build_fvd_mouth(ctx: MetricContext) -> FVDEvaluator:
    """The ``fvd_mouth`` evaluator of a run (dlib landmarks + I3D)."""
    from reenactbench.faces.mouth import MouthCropper

    protocol = _protocol(ctx)
    return FVDEvaluator(
        _detector(ctx),
        ctx.fvd_clip,
        _clips_per_batch(ctx),
        ctx.device,
        cropper=MouthCropper(),
        protocol=protocol,
    )


def _faces_check(ctx: MetricContext) -> str | None:
    from reenactbench.faces.dlib_faces import faces_unavailable

    return faces_unavailable()


register_metric(
    MetricSpec("fvd", "FVD", False, "", "distribution", build=build_fvd, weights=("i3d",)),
    replace=True,
)
register_metric(
    MetricSpec(
        "fvd_mouth",
        "FVD_M",
        False,
        "",
        "distribution",
        build=build_fvd_mouth,
        weights=("i3d",),
        check=_faces_check,
    ),
    replace=True,
)
