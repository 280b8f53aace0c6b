"""Mouth-centred square crops for FVD-mouth (design §5), streamed with bounded memory.

Definition (part of the ``fvd_mouth`` contract):

* **Each frame is cropped with a box from its own landmarks.** Per frame, dlib 68
  landmarks (:func:`reenactbench.faces.detect_landmarks`) give the raw box: centre =
  mean of the 20 mouth points 48-67, side = ``SIDE_PER_IOD`` (1.5) x the inter-ocular
  distance (distance between the means of the eye points 36-41 and 42-47). The
  generated frames are cropped with the box track of the *generated* video, the
  ground-truth frames with that of the *ground truth*: a method that puts the mouth in
  the wrong place (cross-id: a source face of another size or position) gets a crop
  where its mouth is, and FVD-mouth compares mouth motion with mouth motion. (A single
  ground-truth box on both videos would crop the generated frame's cheek or chin and
  measure misplacement only indirectly.)
* **Why inter-ocular distance, not mouth width.** The eyes do not change with
  expression; the mouth width grows ~30 % in a smile, so a mouth-width crop would
  zoom with the expression and the zoom itself would be a temporal signal for I3D.
  1.5 x IOD is about 2 x the neutral mouth width (HDTF-like 256 px crops: IOD ~50 px,
  mouth width ~35 px, crop ~75 px) and holds a wide-open mouth and the upper chin.
* **Smoothing over time** (each video's track on its own). Each of (centre x,
  centre y, side) is a centred moving average over the frames with a detected face in
  the window ``[t - L, t + L]`` (``L = HALF_WINDOW`` = 4 frames, 0.36 s at 25 fps),
  truncated at the ends of the video. A frame with no detected face in its window
  holds the previous frame's box.
* **Leading frames without a face are filled, never dropped.** Frames before a video's
  first box take that first box (the nearest detection), if it comes at most
  ``MAX_LEADING`` (32) frames later; a frame further from it, and every frame of a video
  with no face at all, has *no box* (``NaN`` in :func:`smooth_boxes`). The cropper
  emits one output per input frame, in order, with a ``valid`` flag that is False when
  the generated or the ground-truth frame has no box; FVD-mouth excludes (and counts)
  the clips holding such a frame. Frames are never removed, so mouth clip *k* covers
  the same frames as full-frame clip *k*. (Filling keeps the common case, a detector
  that misses the first few frames, whole; the limit keeps memory bounded.)
  :func:`smooth_boxes` is the offline reference of this rule; :class:`MouthCropper`
  computes the same boxes online, for any batch size.
* **Crop.** The smoothed box is rounded to integer pixels, its side clamped to the
  frame and the box shifted inside the frame (no padding: every crop pixel is real);
  the crop is resized with :func:`reenactbench.video.resize` (antialiased bicubic) to
  ``CROP_SIZE`` (128) px.

Memory: the centred window needs ``L`` frames of look-ahead, so :class:`MouthCropper`
holds only the frame pairs whose boxes are not final yet (``L`` frames plus the current
batch; at most ``MAX_LEADING + L`` plus a batch while a video has shown no face yet)
and the raw box tracks (3 floats per frame and video), never the whole video: ~2 MB at
256 px with ``L = 4``, against ~200 MB for buffering 500 frames of fake and real. A
frame pair is released as soon as one of its frames is known to get no box.
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
#: Most frames before a video's first box that still take that box (others get none).
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
    """Mean of the face rows (no NaN) of ``raw[t - L : t + L + 1]``, or ``None``."""
    win = raw[max(0, t - half_window) : t + half_window + 1]
    win = win[~np.isnan(win).any(axis=1)]
    return win.mean(axis=0) if len(win) else None


def smooth_boxes(
    raw: np.ndarray, half_window: int = HALF_WINDOW, max_leading: int | None = None
) -> np.ndarray:
    """Offline reference of the smoothing rule (module doc), for one video.

    Args:
        raw: ``(T, 3)`` raw boxes (:func:`mouth_box`); a NaN row = no face that frame.
        half_window: ``L`` of the centred moving average.
        max_leading: frames before the first box take it if at most this many frames
            before it; ``None``: all of them.

    Returns:
        ``(T, 3) float64`` smoothed boxes; NaN rows = no box (leading frames beyond
        ``max_leading``; every frame when no frame has a face).
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
            if max_leading is None or t - w <= max_leading:
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


class _Track:
    """One video's boxes, decided online in frame order (the rule of :func:`smooth_boxes`).

    ``decided[t]`` is the smoothed box of frame ``t`` or ``None`` (no box) once final."""

    def __init__(self, half_window: int, max_leading: int) -> None:
        self.half_window, self.max_leading = half_window, max_leading
        self.raw: list[np.ndarray] = []  # (3,) per frame, NaN = no face
        self.decided: dict[int, np.ndarray | None] = {}
        self.waiting: list[int] = []  # frames before the first box
        self.prev: np.ndarray | None = None
        self.next_t = 0  # first frame not decided or waiting
        self.no_face_frames = 0

    @property
    def found_face(self) -> bool:
        return len(self.raw) > self.no_face_frames

    def add(self, landmarks: np.ndarray | None) -> None:
        if landmarks is None:
            self.no_face_frames += 1
            self.raw.append(np.full(3, np.nan))
        else:
            self.raw.append(mouth_box(landmarks))

    def advance(self, final: bool) -> None:
        """Decide every frame whose window is complete (all frames when ``final``)."""
        n, half = len(self.raw), self.half_window
        while self.next_t < n and (final or self.next_t + half < n):
            t = self.next_t
            lo = max(0, t - half)
            box = _window_mean(np.asarray(self.raw[lo : t + half + 1]), t - lo, half)
            if box is None:
                box = self.prev
            if box is None:
                self.waiting.append(t)
            else:
                for w in self.waiting:
                    self.decided[w] = box if t - w <= self.max_leading else None
                self.waiting.clear()
                self.decided[t] = self.prev = box
            self.next_t += 1
        # the first box is at frame >= next_t: a waiting frame further back gets none
        hopeless = [w for w in self.waiting if final or self.next_t - w > self.max_leading]
        for w in hopeless:
            self.decided[w] = None
        self.waiting = self.waiting[len(hopeless) :]


class MouthCropper:
    """Online mouth crops of one (generated, ground-truth) video pair at a time, each
    frame cropped with a box from its own video's landmarks (module doc).

    ``begin()``, then ``push(fake, real)`` per batch (frames in order) returns the crops
    of the frames whose boxes are final, then ``flush()`` returns the rest. Over a video
    the outputs are exactly one per input frame, in order; ``valid`` is False where the
    generated or the ground-truth frame has no box (its crops are then black).

    Args:
        size: crop side after resizing, pixels.
        half_window: ``L`` of the centred moving average, frames.
        max_leading: most frames before a video's first box that still take that box.
        detect: ``(H, W, 3) uint8 -> (68, 2) landmarks | None``; default dlib
            (:func:`reenactbench.faces.detect_landmarks`).

    Attributes (per video pair):
        frames: frame pairs pushed; no_face_fake, no_face_real: frames without a
        detected face; no_box_frames: outputs with ``valid`` False; found_face_fake,
        found_face_real: a face was detected in some frame of that video (``found_face``:
        both); fake_boxes, real_boxes: the ``(x0, y0, side)`` pixel box of every output
        frame, ``None`` where that video has no box.
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
        if half_window < 0 or max_leading < 0:
            raise ValueError(f"half_window ({half_window}), max_leading ({max_leading}) < 0")
        self.size, self.half_window, self.max_leading = size, half_window, max_leading
        self.detect = detect
        self.begin()

    def begin(self) -> None:
        """Start a new video pair."""
        self.frames = self.no_box_frames = 0
        self.fake_boxes: list[tuple[int, int, int] | None] = []
        self.real_boxes: list[tuple[int, int, int] | None] = []
        self._fake = _Track(self.half_window, self.max_leading)
        self._real = _Track(self.half_window, self.max_leading)
        # (t, fake, real) frame pairs not emitted yet; pixels set to None once invalid
        self._pending: deque[list] = deque()
        self._hw = (0, 0)  # frame (height, width)

    @property
    def no_face_fake(self) -> int:
        return self._fake.no_face_frames

    @property
    def no_face_real(self) -> int:
        return self._real.no_face_frames

    @property
    def found_face_fake(self) -> bool:
        return self._fake.found_face

    @property
    def found_face_real(self) -> bool:
        return self._real.found_face

    @property
    def found_face(self) -> bool:
        """Both videos had a face in some frame."""
        return self.found_face_fake and self.found_face_real

    def push(self, fake: np.ndarray, real: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Add ``(B, H, W, 3) uint8`` fake and real frames; return the outputs now final:
        ``(K, size, size, 3) uint8`` fake and real crops and ``(K,) bool`` valid
        (K may be 0 or exceed B)."""
        if fake.shape != real.shape or fake.ndim != 4:
            raise ValueError(f"fake {fake.shape} and real {real.shape} must be one (B,H,W,3)")
        self._hw = fake.shape[1:3]
        for f, r in zip(fake, real, strict=True):
            self._fake.add(self.detect(f))
            self._real.add(self.detect(r))
            self._pending.append([self.frames, f, r])
            self.frames += 1
        return self._emit(final=False)

    def flush(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The outputs of the frames still held (end of the video pair)."""
        return self._emit(final=True)

    def _emit(self, final: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        self._fake.advance(final)
        self._real.advance(final)
        fd, rd = self._fake.decided, self._real.decided
        for item in self._pending:  # release the pixels of frames that get no crop
            t = item[0]
            if (t in fd and fd[t] is None) or (t in rd and rd[t] is None):
                item[1] = item[2] = None
        fakes: list[np.ndarray] = []
        reals: list[np.ndarray] = []
        valid: list[bool] = []
        while self._pending and self._pending[0][0] in fd and self._pending[0][0] in rd:
            t, f, r = self._pending.popleft()
            bf, br = fd.pop(t), rd.pop(t)
            pf = None if bf is None else pixel_box(bf, *self._hw)
            pr = None if br is None else pixel_box(br, *self._hw)
            self.fake_boxes.append(pf)
            self.real_boxes.append(pr)
            if f is None or pf is None or pr is None:
                self.no_box_frames += 1
                black = np.zeros((self.size, self.size, 3), dtype=np.uint8)
                fakes.append(black)
                reals.append(black)
                valid.append(False)
            else:
                fakes.append(crop_square(f, pf, self.size))
                reals.append(crop_square(r, pr, self.size))
                valid.append(True)
        if not fakes:
            empty = np.zeros((0, self.size, self.size, 3), dtype=np.uint8)
            return empty, empty.copy(), np.zeros(0, dtype=bool)
        return np.stack(fakes), np.stack(reals), np.array(valid)
