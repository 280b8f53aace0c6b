"""FVD and FVD-mouth: Fréchet distance of I3D features of 16-frame clips (design §5).

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

Clips (our protocol): each job (generated video vs its ground truth, both at the
evaluation resolution) is cut into non-overlapping clips of ``ctx.fvd_clip`` (16)
consecutive frames from its first frame; a trailing partial clip is dropped and its
frames counted (``info["dropped_partial_frames"]``). StyleGAN-V samples one clip at a
random offset per real video and generates 16-frame fakes; we take every clip of both,
in the same positions, so FVD compares the same moments of each video.

``fvd_mouth`` is the same on mouth-centred square crops (:mod:`reenactbench.faces.mouth`:
box from the ground-truth landmarks, smoothed over time, the same box applied to both
videos, resized to 128 px before I3D). A job with no face in any ground-truth frame
contributes no clips and is counted (``info["excluded_no_face_jobs"]``).

Streaming: an evaluator holds at most ``max(1, ctx.batch_size // clip)`` clips of
frames (one clip at the default batch size 16) before running the detector on them,
so memory does not grow with the video length.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np

from reenactbench.errors import InputError
from reenactbench.metrics.base import JobPart, MetricContext
from reenactbench.metrics.registry import MetricSpec, register_metric

__all__ = [
    "I3D_KWARGS",
    "load_i3d",
    "i3d_features",
    "FVDEvaluator",
    "build_fvd",
    "build_fvd_mouth",
]

#: Keyword arguments of every detector call (StyleGAN-V's ``detector_kwargs``).
I3D_KWARGS = {"rescale": True, "resize": True, "return_features": True}
_HINT = "i3d needs StyleGAN-V's i3d_torchscript.pt (reenactbench weights fetch i3d)"


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
        clips_per_batch: clips buffered per detector call.
        device: torch device of the detector.
        cropper: a :class:`reenactbench.faces.mouth.MouthCropper` for FVD-mouth, or
            ``None`` for whole frames.
    """

    def __init__(
        self,
        detector: Any,
        clip: int = 16,
        clips_per_batch: int = 1,
        device: str = "cpu",
        cropper: Any | None = None,
    ) -> None:
        if clip < 1 or clips_per_batch < 1:
            raise ValueError(f"clip ({clip}) and clips_per_batch ({clips_per_batch}) must be >= 1")
        self.detector, self.clip, self.clips_per_batch = detector, clip, clips_per_batch
        self.device, self.cropper = device, cropper
        self._dim: int | None = None
        self.begin(np.zeros((1, 1, 3), dtype=np.uint8))

    def begin(self, source: np.ndarray) -> None:
        """Start a job (the source frame is not used)."""
        self._buf_f: list[np.ndarray] = []  # frames not yet in a clip, (H, W, 3) uint8
        self._buf_r: list[np.ndarray] = []
        self._rows_f: list[np.ndarray] = []  # (k, D) float32 per detector call
        self._rows_r: list[np.ndarray] = []
        if self.cropper is not None:
            self.cropper.begin()

    def add(self, fake: np.ndarray, real: np.ndarray) -> None:
        """``fake``, ``real``: ``(B, E, E, 3) uint8`` RGB, consecutive frames in order."""
        if fake.shape != real.shape or fake.ndim != 4 or fake.dtype != np.uint8:
            raise InputError(
                f"fake {fake.shape} {fake.dtype} and real {real.shape} {real.dtype} frames "
                "must be one (B,H,W,3) uint8 shape"
            )
        if self.cropper is not None:
            fake, real = self.cropper.push(fake, real)
        self._take(fake, real)

    def _take(self, fake: np.ndarray, real: np.ndarray) -> None:
        self._buf_f.extend(fake)
        self._buf_r.extend(real)
        n = self.clip * self.clips_per_batch
        while len(self._buf_f) >= n:
            self._run(n)

    def _run(self, n: int) -> None:
        """Detector on the first ``n`` buffered frames (a whole number of clips)."""
        k = n // self.clip
        for buf, rows in ((self._buf_f, self._rows_f), (self._buf_r, self._rows_r)):
            clips = np.stack(buf[:n]).reshape(k, self.clip, *buf[0].shape)
            rows.append(i3d_features(self.detector, clips, self.device))
            del buf[:n]
        self._dim = self._rows_f[-1].shape[1]

    def _feature_dim(self) -> int:
        if self._dim is None:  # a job without clips: ask the detector its width once
            probe = np.zeros((1, self.clip, 64, 64, 3), dtype=np.uint8)
            self._dim = i3d_features(self.detector, probe, self.device).shape[1]
        return self._dim

    def end(self) -> JobPart:
        """Feature rows ``(C, D) float32`` of the job's generated and real clips."""
        info: dict[str, Any] = {}
        if self.cropper is not None:
            self._take(*self.cropper.flush())
            c = self.cropper
            info = {"no_face_frames": c.no_face_frames, "dropped_no_face_frames": c.dropped_frames}
            if not c.found_face:
                info["excluded_no_face_jobs"] = 1
        full = len(self._buf_f) - len(self._buf_f) % self.clip
        if full:
            self._run(full)
        info["dropped_partial_frames"] = len(self._buf_f)
        self._buf_f.clear()
        self._buf_r.clear()
        dim = self._feature_dim() if not self._rows_f else self._rows_f[0].shape[1]
        fake = np.concatenate(self._rows_f) if self._rows_f else np.zeros((0, dim), np.float32)
        real = np.concatenate(self._rows_r) if self._rows_r else np.zeros((0, dim), np.float32)
        info["clips"] = len(fake)
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


def build_fvd(ctx: MetricContext) -> FVDEvaluator:
    """The ``fvd`` evaluator of a run."""
    return FVDEvaluator(_detector(ctx), ctx.fvd_clip, _clips_per_batch(ctx), ctx.device)


def build_fvd_mouth(ctx: MetricContext) -> FVDEvaluator:
    """The ``fvd_mouth`` evaluator of a run (dlib landmarks + I3D)."""
    from reenactbench.faces.mouth import MouthCropper

    return FVDEvaluator(
        _detector(ctx), ctx.fvd_clip, _clips_per_batch(ctx), ctx.device, cropper=MouthCropper()
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
