"""Mouth-centred square crops for FVD-mouth (design §5), streamed with bounded memory.

Definition (part of the ``fvd_mouth`` contract):

* **Landmarks come from the ground truth.** Per frame, dlib 68 landmarks
  (:func:`reenactbench.faces.detect_landmarks`) of the *ground-truth (driving)* frame
  give the raw box: centre = mean of the 20 mouth points 48-67, side =
  ``SIDE_PER_IOD`` (1.5) x the inter-ocular distance (distance between the means of
  the eye points 36-41 and 42-47). The SAME box crops the generated and the
  ground-truth frame, so both are compared on the same region and a method cannot
  move the crop by moving its mouth.
* **Why inter-ocular distance, not mouth width.** The eyes do not change with
  expression; the mouth width grows ~30 % in a smile, so a mouth-width crop would
  zoom with the expression and the zoom itself would be a temporal signal for I3D.
  1.5 x IOD is about 2 x the neutral mouth width (HDTF-like 256 px crops: IOD ~50 px,
  mouth width ~35 px, crop ~75 px) and holds a wide-open mouth and the upper chin.
* **Smoothing over time.** Each of (centre x, centre y, side) is a centred moving
  average over the frames with a detected face in the window ``[t - L, t + L]``
  (``L = HALF_WINDOW`` = 4 frames, 0.36 s at 25 fps), truncated at the ends of the
  video. A frame with no detected face in its window holds the previous frame's box;
  frames before the first box take the first box (the nearest detection).
  :func:`smooth_boxes` is the offline reference of this rule; :class:`MouthCropper`
  computes the same boxes online.
* **Crop.** The smoothed box is rounded to integer pixels, its side clamped to the
  frame and the box shifted inside the frame (no padding: every crop pixel is real);
  the crop is resized with :func:`reenactbench.video.resize` (antialiased bicubic) to
  ``CROP_SIZE`` (128) px.

Memory: the centred window needs ``L`` frames of look-ahead, so :class:`MouthCropper`
holds only the frames whose box is not final yet (``L`` frames plus the current batch;
at most ``MAX_LEADING`` = 32 while no face has been seen at the start of a video) and
the raw box track (3 floats per frame), never the whole video: ~2 MB at 256 px with
``L = 4``, against ~200 MB for buffering 500 frames of fake and real. If the first
``MAX_LEADING`` frames have no face, the oldest waiting frames are dropped (counted);
a video with no face at all yields no crops (``found_face`` is False).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

import numpy as np

from reenactbench.video import resize

__all__ = [
    "CROP_SIZE",
    "SIDE_PER_IOD",
    "HALF_WINDOW",
    "MAX_LEADING",
    "mouth_box",
    "smooth_boxes",
    "pixel_box",
    "crop_square",
    "MouthCropper",
]

#: Side of the square mouth crop given to I3D, pixels.
CROP_SIZE = 128
#: Crop side as a multiple of the inter-ocular distance (eye-centre to eye-centre).
SIDE_PER_IOD = 1.5
#: Half width ``L`` of the centred moving average, frames (window ``2L + 1``).
HALF_WINDOW = 4
#: Most frames held while waiting for the first face of a video.
MAX_LEADING = 32

Detect = Callable[[np.ndarray], "np.ndarray | None"]


def mouth_box(landmarks: np.ndarray) -> np.ndarray:
    """Raw mouth box of one face.

    Args:
        landmarks: ``(68, 2)`` (x, y) pixels, iBUG 300-W order.

    Returns:
        ``(3,) float64`` (centre x, centre y, side) in pixels: centre = mean of points
        48-67, side = ``SIDE_PER_IOD`` x distance between the eye centres.
    """
    lm = np.asarray(landmarks, dtype=np.float64)
    if lm.shape != (68, 2):
        raise ValueError(f"landmarks must be (68, 2), got {lm.shape}")
    centre = lm[48:68].mean(axis=0)
    iod = float(np.linalg.norm(lm[42:48].mean(axis=0) - lm[36:42].mean(axis=0)))
    return np.array([centre[0], centre[1], SIDE_PER_IOD * iod])


def _window_mean(raw: np.ndarray, t: int, half_window: int) -> np.ndarray | None:
    win = raw[max(0, t - half_window) : t + half_window + 1]
    win = win[~np.isnan(win).any(axis=1)]
    return win.mean(axis=0) if len(win) else None


def smooth_boxes(raw: np.ndarray, half_window: int = HALF_WINDOW) -> np.ndarray:
    """Offline reference of the smoothing rule (module doc).

    Args:
        raw: ``(T, 3)`` raw boxes (:func:`mouth_box`); a NaN row = no face that frame.
        half_window: ``L`` of the centred moving average.

    Returns:
        ``(T, 3) float64`` smoothed boxes; all NaN when no frame has a face.
    """
    raw = np.asarray(raw, dtype=np.float64)
    out = np.full_like(raw, np.nan)
    prev: np.ndarray | None = None
    waiting: list[int] = []
    for t in range(len(raw)):
        box = _window_mean(raw, t, half_window)
        if box is None:
            box = prev
        if box is None:
            waiting.append(t)
            continue
        for w in waiting:
            out[w] = box
        waiting.clear()
        out[t] = prev = box
    return out


def pixel_box(box: np.ndarray, height: int, width: int) -> tuple[int, int, int]:
    """Integer square ``(x0, y0, side)`` of a smoothed box inside an ``height x width``
    frame: side rounded and clamped to ``[2, min(height, width)]``, the box shifted
    (not padded) to lie inside the frame."""
    cx, cy, side = (float(v) for v in box)
    s = int(min(max(round(side), 2), height, width))
    x0 = int(np.clip(round(cx - s / 2), 0, width - s))
    y0 = int(np.clip(round(cy - s / 2), 0, height - s))
    return x0, y0, s


def crop_square(frame: np.ndarray, box: tuple[int, int, int], size: int = CROP_SIZE) -> np.ndarray:
    """``(size, size, 3) uint8`` antialiased resize of ``frame[y0:y0+s, x0:x0+s]``."""
    x0, y0, s = box
    return resize(np.ascontiguousarray(frame[y0 : y0 + s, x0 : x0 + s]), size)


class MouthCropper:
    """Online mouth crops of one video at a time, boxes from the ground truth.

    ``begin()``, then ``push(fake, real)`` per batch (frames in order) returns the crops
    of the frames whose box is final, then ``flush()`` returns the rest. The crops, in
    order, are those of every input frame except dropped ones (see ``dropped_frames``).

    Args:
        size: crop side after resizing, pixels.
        half_window: ``L`` of the centred moving average, frames.
        max_leading: most frames held while no face has been seen yet.
        detect: ``(H, W, 3) uint8 -> (68, 2) landmarks | None``; default dlib
            (:func:`reenactbench.faces.detect_landmarks`).

    Attributes (per video):
        frames: frames pushed; ``no_face_frames``: ground-truth frames without a face;
        dropped_frames: frames given no crop (leading no-face frames beyond
        ``max_leading``, or every frame of a video without a face);
        found_face: a face was detected in some frame; boxes: the ``(x0, y0, side)``
        pixel box of every emitted crop, in order.
    """

    def __init__(
        self,
        size: int = CROP_SIZE,
        half_window: int = HALF_WINDOW,
        max_leading: int = MAX_LEADING,
        detect: Detect | None = None,
    ) -> None:
        if detect is None:
            from reenactbench.faces.dlib_faces import detect_landmarks

            detect = detect_landmarks
        self.size, self.half_window, self.max_leading = size, half_window, max_leading
        self.detect = detect
        self.begin()

    def begin(self) -> None:
        """Start a new video."""
        self.frames = self.no_face_frames = self.dropped_frames = 0
        self.found_face = False
        self.boxes: list[tuple[int, int, int]] = []
        self._raw: list[np.ndarray] = []  # (3,) per frame, NaN = no face; all frames
        self._pending: deque[tuple[int, np.ndarray, np.ndarray]] = deque()  # (t, fake, real)
        self._prev: np.ndarray | None = None

    def push(self, fake: np.ndarray, real: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Add ``(B, H, W, 3) uint8`` fake and real frames; return the crops now final,
        ``(K, size, size, 3) uint8`` each (K may be 0 or exceed B)."""
        if fake.shape != real.shape or fake.ndim != 4:
            raise ValueError(f"fake {fake.shape} and real {real.shape} must be one (B,H,W,3)")
        for f, r in zip(fake, real, strict=True):
            lm = self.detect(r)
            if lm is None:
                self.no_face_frames += 1
                self._raw.append(np.full(3, np.nan))
            else:
                self.found_face = True
                self._raw.append(mouth_box(lm))
            self._pending.append((self.frames, f, r))
            self.frames += 1
        return self._emit(final=False)

    def flush(self) -> tuple[np.ndarray, np.ndarray]:
        """Crops of the frames still held (end of the video)."""
        out = self._emit(final=True)
        self.dropped_frames += len(self._pending)
        self._pending.clear()
        return out

    def _emit(self, final: bool) -> tuple[np.ndarray, np.ndarray]:
        raw = np.asarray(self._raw).reshape(-1, 3)
        fakes: list[np.ndarray] = []
        reals: list[np.ndarray] = []
        waiting: list[tuple[int, np.ndarray, np.ndarray]] = []
        while self._pending:
            t = self._pending[0][0]
            if not final and t + self.half_window >= self.frames:
                break  # its window is not complete yet
            item = self._pending.popleft()
            box = _window_mean(raw, t, self.half_window)
            if box is None:
                box = self._prev
            if box is None:
                waiting.append(item)  # no box yet: before the first face
                continue
            self._prev = box
            for _, f, r in [*waiting, item]:
                px = pixel_box(box, r.shape[0], r.shape[1])
                self.boxes.append(px)
                fakes.append(crop_square(f, px, self.size))
                reals.append(crop_square(r, px, self.size))
            waiting.clear()
        self._pending.extendleft(reversed(waiting))
        while not final and len(self._pending) > max(self.max_leading, self.half_window + 1):
            if self._prev is not None:
                break
            self._pending.popleft()
            self.dropped_frames += 1
        empty = np.zeros((0, self.size, self.size, 3), dtype=np.uint8)
        return (np.stack(fakes), np.stack(reals)) if fakes else (empty, empty.copy())
