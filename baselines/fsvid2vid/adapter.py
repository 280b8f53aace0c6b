"""``fs-vid2vid`` method: few-shot vid2vid (Wang et al., NeurIPS 2019), NVIDIA imaginaire's
released face model, one-shot.

As imaginaire's ``inference.py`` -> ``trainers/fs_vid2vid.py`` ``test`` with the face
config (NVlabs/imaginaire c6f7484, NVIDIA Source Code License: non-commercial): the
source frame is the single reference (``few_shot_images``, its label drawn from its own
landmarks), every driving frame becomes an edge map of its landmarks normalised to the
reference face (``labelmap.py``), and the generator renders frame ``t`` from its label, the
reference and **one** previous frame (``num_frames_G: 2``): the previous label and the
previous *generated* frame (unquantised), as ``get_data_t`` feeds them back. Frames are
rendered one at a time (the recurrence allows no batching over time).

Images: upstream resizes every frame so its smallest side is 1024 (cv2 ``INTER_LINEAR`` on
uint8), normalises to [-1, 1], cuts the face box and resizes it to 512² (torch bilinear).
Here frames come in at 512² (``input_resolution``: HDTF's native size, so the runner does
not resize them) and go through the same cv2 resize to 1024.

Crop (``crop`` option): ``"frame"`` (default) uses the whole frame as the box for the
reference and the driving frames, so the output is the protocol's frame at 512² and
aligned with its ground truth; ``"face"`` is upstream's ``crop_face_from_data`` (box from the
first driving frame's landmarks, another from the reference's): the output is then that
box, not the input frame (for looking at upstream's behaviour with ``reenact``; its
numbers against the protocol's ground truth would compare misaligned frames).

Landmarks: dlib's 68 points (or ``<frame>.txt`` sidecars: the ``set_inputs`` hook), scaled to
the 1024 frame as upstream's resize scales its keypoints; detected points are kept per
distinct frame (and in the run directory through ``set_cache_dir``). Output: 512² frames
converted as upstream's ``tensor2im`` (truncation).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch

from reenactbench.errors import InputError, MethodError
from reenactbench.faces import faces_unavailable
from reenactbench.faces.sidecar import SidecarInputs
from reenactbench.metrics.framecache import FrameCache
from reenactbench.nn.precision import autocast, check_dtype
from reenactbench.weights import weight_path

from ..pirenderer.driven import landmarks_68
from ..pirenderer.model import to_uint8
from .labelmap import RESIZE_SMALLEST_SIDE, FaceLabelStream, crop_face
from .layers import concat_frames
from .model import load_fsvid2vid

__all__ = ["FSVid2VidMethod", "to_canvas"]

_IN = 512
_CANVAS = RESIZE_SMALLEST_SIDE  # 1024: square frames resize to 1024x1024


def to_canvas(frame: np.ndarray) -> torch.Tensor:
    """``(H, W, 3) uint8`` square frame -> ``(1, 3, 1024, 1024)`` in [-1, 1]: cv2
    ``INTER_LINEAR`` resize on uint8 (albumentations' ``Resize``), ``ToTensor`` +
    ``Normalize(0.5, 0.5)``."""
    import cv2

    big = cv2.resize(frame, (_CANVAS, _CANVAS), interpolation=cv2.INTER_LINEAR)
    x = torch.from_numpy(np.ascontiguousarray(big)).permute(2, 0, 1)[None].float().div(255)
    return x.sub(0.5).div(0.5)


class FSVid2VidMethod(SidecarInputs):
    """``fs-vid2vid``: imaginaire's few-shot vid2vid face model (``fs-vid2vid-face``, the
    EMA copy ``module.averaged_model.*`` of ``net_G``, strict) on dlib's 68 landmarks.

    Args:
        device: torch device.
        weights: weight name -> file overrides.
        crop: ``"frame"`` (default) or ``"face"`` (upstream's face box; module docstring).
        dtype: network precision, ``fp32`` (default), ``bf16`` or ``fp16`` (autocast).

    Raises:
        WeightsMissing: the checkpoint is neither given nor imported.
        InputError: a checkpoint that is unreadable or not in imaginaire's layout.
        MethodError: a bad option value.
    """

    name: ClassVar[str] = "fs-vid2vid"
    resolution: int = 512
    input_resolution: int = _IN
    weights: ClassVar[tuple[str, ...]] = ("fs-vid2vid-face",)
    license: ClassVar[str] = "NVIDIA Source Code License for Imaginaire (non-commercial)"

    def __init__(
        self,
        device: str = "cpu",
        weights: Mapping[str, Path] | None = None,
        crop: str = "frame",
        dtype: str = "fp32",
    ) -> None:
        if crop not in ("frame", "face"):
            raise MethodError(f'method {self.name!r}: crop must be "frame" or "face", got {crop!r}')
        self.device, self.crop = torch.device(device), crop
        self.dtype = check_dtype(dtype, f"method {self.name!r}")
        self._detected = FrameCache(self._detect, 20_000)
        self.net = load_fsvid2vid(weight_path("fs-vid2vid-face", weights), self.device)

    @classmethod
    def unavailable(cls) -> str | None:
        """Why this method cannot run here (dlib, its landmark model or OpenCV missing)."""
        reason = faces_unavailable()
        if reason:
            return reason
        try:
            import cv2  # noqa: F401
        except ImportError:
            return "needs OpenCV for upstream's resize: pip install 'reenactbench[fsvid2vid]'"
        return None

    def set_cache_dir(self, folder: Path) -> None:
        """Keep detected landmarks in ``folder`` across commands (docs/adapters.md)."""
        self._detected.persist(folder)

    @staticmethod
    def _detect(frames: np.ndarray) -> np.ndarray:
        rows = np.full((len(frames), 136), np.nan)
        for k, f in enumerate(frames):
            lm = landmarks_68(f)
            if lm is not None:
                rows[k] = lm.reshape(-1)
        return rows

    def _points(self, frame: np.ndarray, index: int | None) -> np.ndarray:
        """``(68, 2)`` points of a 512² frame in the 1024 canvas (``index`` None: source)."""
        given = self.given_landmarks(index, _IN)
        lm = self._detected(frame[None])[0].reshape(68, 2) if given is None else given
        if np.isnan(lm).any():
            what = "source frame" if index is None else f"driving frame {index}"
            raise InputError(f"{self.name}: {what} has no face the dlib 68-point detector finds")
        return np.asarray(lm, np.float64) * (_CANVAS / _IN)

    def _check(self, frame: np.ndarray, what: str) -> np.ndarray:
        frame = np.asarray(frame)
        if frame.shape != (_IN, _IN, 3) or frame.dtype != np.uint8:
            raise InputError(
                f"{self.name}: {what} is {frame.shape} {frame.dtype}; need ({_IN}, {_IN}, 3) "
                "uint8 RGB"
            )
        return frame

    def reenact(self, source: np.ndarray, driving: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        """Animate ``source`` with the landmarks of ``driving``.

        Args:
            source: ``(512, 512, 3) uint8`` RGB, the single reference frame.
            driving: frames of the same shape, streamed (one frame is held at a time).

        Yields:
            ``(512, 512, 3) uint8`` RGB, one per driving frame.
        """
        try:
            yield from self._reenact(source, driving)
        finally:  # landmarks detected so far are valid even when the job stops
            self._detected.flush()

    @torch.no_grad()
    def _reenact(self, source: np.ndarray, driving: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        source = self._check(source, "source")
        stream = FaceLabelStream(self._points(source, None), (_CANVAS, _CANVAS), crop=self.crop)
        ref_image = crop_face(to_canvas(source), stream.ref_box).to(self.device)[:, None]
        ref_label = stream.few_shot_label.to(self.device)[:, None]
        self.net.reset()
        prev_labels = prev_images = None
        for i, frame in enumerate(driving):
            label = stream(self._points(self._check(frame, f"driving frame {i}"), i))
            label = label.to(self.device)
            with autocast(self.device, self.dtype):
                out = self.net(label, ref_label, ref_image, prev_labels, prev_images)
            fake = out["fake_images"].float()
            prev_labels = concat_frames(prev_labels, label, 1)
            prev_images = concat_frames(prev_images, fake, 1)
            yield to_uint8(fake)[0]
