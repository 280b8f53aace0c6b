"""FS-Vid2Vid's test-time face labels: 68 dlib points to the edge maps and crops the
generator consumes, as NVlabs/imaginaire (c6f74845c699c58975fd12b778c375b72eb00e8d) builds
them for ``configs/projects/fs_vid2vid/face_forensics/ampO1.yaml`` (``test_data``).

Pipeline per driving frame ``t`` (upstream ``Dataset._getitem`` then ``full_data_ops``):

1. Resize. Every image is resized (cv2 ``INTER_LINEAR``, albumentations ``Resize``) so its
   smallest side is 1024 (:func:`resized_hw`; 640x480 -> 1365x1024), and its landmarks are
   scaled with it, ``x * W'/W, y * H'/H`` in float64 (:func:`resize_landmarks`). All points
   below are pixels of that resized frame, x right, y down. No flip at test time.
2. Normalise (:func:`normalize_keypoints`): each facial part of the driving points
   (38 groups of mirrored points) is rescaled about its own centre and moved along the ray
   from the chin (point 8) so that its spread and its distance from the chin match the
   reference's, times ``img_scale`` = driving x-extent / reference x-extent. The part
   scales are smoothed over frames with momentum 0.9 (``new = 0.9 * old + 0.1 * now``) and
   ``img_scale`` is fixed at the first driving frame.
3. Smooth: the last 5 normalised frames are median-filtered over time; a frame's output is
   the median of frames ``t-4 .. t`` (so it lags by two frames); the first four frames pass
   through unsmoothed. The history holds normalised, not smoothed, points.
4. Draw (:func:`render_label_map`) on a canvas the size of the resized *driving* image:
   15 upper-face points are added (the jaw mirrored about the line between points 0 and
   16 at 2/3 height) to close the face contour, every chain is cut into 3-point pieces,
   each piece is a least-squares parabola (a line for 2 points; pieces curving more than
   ``|a| > 1`` are dropped) sampled at ``round(span)`` integer points and every sample is
   stamped as a ``2bw x 2bw`` square (offsets ``-bw .. bw-1``, ``bw = max(1, H // 256)``
   = 4 at H = 1024), clamped to the canvas. One channel, values 0 or 1, no anti-aliasing.
   The reference label is drawn from the *raw* reference points on the same canvas size.
5. Crop (:func:`face_crop_box`, :func:`crop_face`): a square of side ``2w`` (``w`` the
   int x-extent of the points, no jitter at test time) with the points' bounding-box centre
   at ``(w, 1.25 w)`` inside it, clamped into the image, cut from the 1024 frame and
   resized to 512x512 (torch bilinear, ``align_corners=False``, no antialias). The same
   box cuts the images (in [-1, 1]) and the label map, so the cropped label is no longer
   binary. The driving box comes from the *raw* points of the first driving frame and is
   reused for every later frame; the reference box from the raw reference points (both
   clamped with the driving image's size).

Stateful across driving frames (upstream keeps them in ``data['common_attr']``): the
part scales and ``img_scale`` (step 2), the 5-frame history (step 3) and the driving crop
box (step 5): see :class:`KeypointNormalizer` and :class:`FaceLabelStream`. The reference
label and box do not change.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import curve_fit
from scipy.signal import medfilt

__all__ = [
    "RESIZE_SMALLEST_SIDE",
    "OUTPUT_SIZE",
    "NORMALIZE_MOMENTUM",
    "SMOOTH_KERNEL_SIZE",
    "LABEL_CHANNELS",
    "resized_hw",
    "resize_landmarks",
    "add_upper_face",
    "stroke_width",
    "render_label_map",
    "normalize_keypoints",
    "smooth_keypoints",
    "KeypointNormalizer",
    "prepare_keypoints",
    "face_crop_box",
    "crop_face",
    "FaceLabelStream",
]

#: ``test_data.test.augmentations.resize_smallest_side``.
RESIZE_SMALLEST_SIDE = 1024
#: ``test_data.output_h_w``: the generator's input size (h, w).
OUTPUT_SIZE = (512, 512)
#: ``for_face_dataset.normalize_momentum``.
NORMALIZE_MOMENTUM = 0.9
#: ``for_face_dataset.smooth_kernel_size``.
SMOOTH_KERNEL_SIZE = 5
#: Channels of the label map (edges only: no distance transform, no positional code).
LABEL_CHANNELS = 1

#: Point chains drawn as edges (indices into the 83 points with the upper face): face
#: contour closed over the upper face, brows, nose, eyes, outer and inner lips.
_CHAINS: tuple[tuple[tuple[int, ...], ...], ...] = (
    (tuple(range(17)) + tuple(range(68, 83)) + (0,),),
    (tuple(range(17, 22)),),
    (tuple(range(22, 27)),),
    ((28, 31), tuple(range(31, 36)), (35, 28)),
    ((36, 37, 38, 39), (39, 40, 41, 36)),
    ((42, 43, 44, 45), (45, 46, 47, 42)),
    (
        tuple(range(48, 55)),
        (54, 55, 56, 57, 58, 59, 48),
        tuple(range(60, 65)),
        (64, 65, 66, 67, 60),
    ),
)
#: Points per drawn piece of a chain (consecutive pieces share one point).
_PIECE = 3

#: Groups normalised together (mirrored pairs, or single midline points).
_PARTS: tuple[tuple[int, ...], ...] = (
    (0, 16), (1, 15), (2, 14), (3, 13), (4, 12), (5, 11), (6, 10), (7, 9, 8),
    (17, 26), (18, 25), (19, 24), (20, 23), (21, 22),
    (27,), (28,), (29,), (30,), (31, 35), (32, 34), (33,),
    (36, 45), (37, 44), (38, 43), (39, 42), (40, 47), (41, 46),
    (48, 54), (49, 53), (50, 52), (51,), (55, 59), (56, 58), (57,),
    (60, 64), (61, 63), (62,), (65, 67), (66,),
)  # fmt: skip
#: The face centre for normalisation: the chin.
_CENTRE = (8,)

Scales = tuple[list, list, float]


# ---------------------------------------------------------------------------- resize


def resized_hw(
    height: int, width: int, smallest_side: int = RESIZE_SMALLEST_SIDE
) -> tuple[int, int]:
    """``(H', W')`` of an image resized so its smallest side is ``smallest_side``; the other
    side is ``round(smallest_side * long / short)``."""
    if height <= width:
        return smallest_side, int(np.round(smallest_side * width / float(height)))
    return int(np.round(smallest_side * height / float(width))), smallest_side


def resize_landmarks(
    landmarks: np.ndarray, src_hw: tuple[int, int], dst_hw: tuple[int, int]
) -> np.ndarray:
    """``(..., 2) float64`` points ``x * W'/W, y * H'/H`` (albumentations' keypoint resize)."""
    pts = np.array(landmarks, dtype=np.float64)
    pts[..., 0] = pts[..., 0] * (dst_hw[1] / src_hw[1])
    pts[..., 1] = pts[..., 1] * (dst_hw[0] / src_hw[0])
    return pts


# ---------------------------------------------------------------------------- drawing


def add_upper_face(landmarks: np.ndarray) -> np.ndarray:
    """``(N, 83, 2) float64``: the 68 points plus 15 upper-face points (indices 68..82).

    Jaw points 15 .. 1 (int-truncated) are mirrored about the mean height ``b`` of points
    0 and 16 at 2/3 of their distance: ``y' = int(b + (b - y) * 2 // 3)``, x unchanged.
    """
    pts = np.asarray(landmarks, dtype=np.float64)
    jaw = pts[:, :17].astype(np.int32)
    base = (jaw[:, 0:1, 1] + jaw[:, 16:17, 1]) / 2
    upper = jaw[:, 1:16].copy()
    upper[:, :, 1] = base + (base - upper[:, :, 1]) * 2 // 3
    return np.concatenate([pts, upper[:, ::-1].astype(np.float64)], axis=1)


def stroke_width(height: int) -> int:
    """Half-width ``bw`` of the drawn stroke for a canvas ``height`` pixels high."""
    return max(1, height // 256)


def _quadratic(x: np.ndarray, a: float, b: float, c: float) -> np.ndarray:
    return a * x**2 + b * x + c


def _line(x: np.ndarray, a: float, b: float) -> np.ndarray:
    return a * x + b


def _piece_pixels(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """Integer ``(xs, ys)`` samples of the curve through 2 or 3 points, or ``None``.

    The curve is fitted along the axis of larger step (``y = f(x)``, or ``x = f(y)`` when
    the y steps are larger) with ``scipy.optimize.curve_fit`` from its default start, as
    upstream does (so float rounding, which decides the int truncation, matches). A
    parabola with ``|a| > 1`` or a failed fit draws nothing.
    """
    if np.abs(np.diff(x)).max() < np.abs(np.diff(y)).max():
        res = _piece_pixels(y, x)
        return None if res is None else (res[1], res[0])
    model = _line if len(x) < 3 else _quadratic
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            coef, _ = curve_fit(model, x, y)
        except Exception:
            return None
    if model is _quadratic and abs(coef[0]) > 1:
        return None
    lo, hi = (x[-1], x[0]) if x[0] > x[-1] else (x[0], x[-1])
    xs = np.linspace(lo, hi, int(np.round(hi - lo)))
    return xs.astype(int), model(xs, *coef).astype(int)


def _stamp(canvas: np.ndarray, xs: np.ndarray, ys: np.ndarray, bw: int) -> None:
    """Set a ``2bw x 2bw`` square (offsets ``-bw .. bw-1``) at every sample, clamped."""
    if xs.size == 0:
        return
    h, w = canvas.shape
    off = np.arange(-bw, bw)
    yy = np.clip(ys[:, None, None] + off[None, :, None], 0, h - 1)
    xx = np.clip(xs[:, None, None] + off[None, None, :], 0, w - 1)
    yy, xx = np.broadcast_arrays(yy, xx)
    canvas[yy.ravel(), xx.ravel()] = 1.0


def _draw_frame(points: np.ndarray, hw: tuple[int, int], bw: int) -> np.ndarray:
    """``(H, W) float32`` edge map of one frame's 83 points."""
    canvas = np.zeros(hw, dtype=np.float32)
    for part in _CHAINS:
        for chain in part:
            for start in range(0, max(1, len(chain) - 1), _PIECE - 1):
                idx = list(chain[start : start + _PIECE])
                pixels = _piece_pixels(points[idx, 0], points[idx, 1])
                if pixels is not None:
                    _stamp(canvas, pixels[0], pixels[1], bw)
    return canvas


def render_label_map(landmarks: np.ndarray, size: int | Sequence[int]) -> np.ndarray:
    """``(N, 1, H, W) float32`` label maps (0 / 1) of ``landmarks (N, 68, 2)``.

    Upstream's ``connect_face_keypoints`` with ``add_upper_face`` (and no distance map):
    the points are pixels of the canvas (x, y), ``size`` is ``H = W`` or ``(H, W)``; the
    stroke half-width is :func:`stroke_width` ``(H)``. Pass the points after
    :func:`prepare_keypoints` for driving frames, the raw points for the reference.
    """
    hw = (int(size), int(size)) if np.isscalar(size) else (int(size[0]), int(size[1]))
    pts = np.asarray(landmarks, dtype=np.float64)
    if pts.ndim != 3 or pts.shape[1:] != (68, 2):
        raise ValueError(f"landmarks must be (N, 68, 2), got {pts.shape}")
    full = add_upper_face(pts)
    bw = stroke_width(hw[0])
    maps = [_draw_frame(frame, hw, bw) for frame in full]
    return np.stack(maps)[:, None] if maps else np.zeros((0, 1, *hw), np.float32)


# ---------------------------------------------------------------------------- normalise


def _mean_dists(pts: np.ndarray, centre: np.ndarray) -> tuple[float, float]:
    """Mean distance of ``pts`` from their centre, and of their centre from ``centre``
    (each + 1e-3, summed point by point as upstream does)."""
    own = pts.mean(axis=0)
    spread = [np.linalg.norm(p - own) for p in pts]
    offset = [np.linalg.norm(own - centre) for _ in pts]
    return sum(spread) / len(spread) + 1e-3, sum(offset) / len(offset) + 1e-3


def normalize_keypoints(
    keypoints: np.ndarray,
    ref_keypoints: np.ndarray,
    scales: Scales | None = None,
    momentum: float = NORMALIZE_MOMENTUM,
) -> tuple[np.ndarray, Scales]:
    """One driving frame ``(68, 2)`` adapted to the reference face ``(68, 2)``.

    For each group of :data:`_PARTS` (points with ``x == 0`` count as missing), with
    ``c`` the group's centre and ``o`` the driving chin: ``p' = (p - c) * sx + (c - o) * sy
    + o``, ``sx`` / ``sy`` the reference / driving ratio of the group's spread / of its
    centre's distance to the chin, times ``img_scale``. With ``scales`` from the previous
    frame, ``s = momentum * s_prev + (1 - momentum) * s`` and ``img_scale`` is kept.

    Returns:
        ``(68, 2) float64`` points and the scales to pass with the next frame.
    """
    kp = np.array(keypoints, dtype=np.float64)
    ref = np.asarray(ref_keypoints, dtype=np.float64)
    if kp.shape != (68, 2) or ref.shape != (68, 2):
        raise ValueError(f"keypoints must be (68, 2), got {kp.shape} and {ref.shape}")
    centre = kp[list(_CENTRE)].mean(axis=0)
    ref_centre = ref[list(_CENTRE)].mean(axis=0)
    prev_x, prev_y, img_scale = scales if scales is not None else (None, None, None)
    if img_scale is None:
        img_scale = (kp[:, 0].max() - kp[:, 0].min()) / (ref[:, 0].max() - ref[:, 0].min())
    sx: list = [None] * len(_PARTS)
    sy: list = [None] * len(_PARTS)
    for i, part in enumerate(_PARTS):
        idx = list(part)
        pts = kp[idx]
        pts = pts[pts[:, 0] != 0]
        if not pts.shape[0]:
            continue
        spread, offset = _mean_dists(pts, centre)
        ref_spread, ref_offset = _mean_dists(ref[idx], ref_centre)
        sx[i] = ref_spread / spread * img_scale
        sy[i] = ref_offset / offset * img_scale
        if prev_x is not None:
            sx[i] = prev_x[i] * momentum + sx[i] * (1 - momentum)
            sy[i] = prev_y[i] * momentum + sy[i] * (1 - momentum)
        own = pts.mean(axis=0)
        kp[idx] = (pts - own) * sx[i] + (own - centre) * sy[i] + centre
    return kp, (sx, sy, img_scale)


def smooth_keypoints(window: np.ndarray) -> np.ndarray:
    """``(K, 2)`` middle frame of ``window (ks, K, 2)`` median-filtered over time (kernel
    ``ks``), zeros (missing points) filled from earlier filtered frames as upstream does."""
    ks = window.shape[0]
    out = medfilt(np.asarray(window, dtype=np.float64), kernel_size=[ks, 1, 1])
    if (out == 0).any():
        for t in range(1, ks):
            cur, fill = out[t], np.maximum(out[t], out[t - 1])
            cur[cur == 0] = fill[cur == 0]
    return out[ks // 2]


class KeypointNormalizer:
    """Steps 2 and 3 of the pipeline for one driving clip, frame by frame, in order.

    ``KeypointNormalizer(ref)(frame)`` returns the ``(68, 2) float64`` points to draw for
    the next driving frame. State: the part scales (momentum), ``img_scale`` (first frame)
    and the last ``smooth_kernel_size`` normalised frames. Use one instance per clip.
    """

    def __init__(
        self,
        ref_landmarks: np.ndarray,
        momentum: float = NORMALIZE_MOMENTUM,
        smooth_kernel_size: int = SMOOTH_KERNEL_SIZE,
    ) -> None:
        self.ref = np.array(ref_landmarks, dtype=np.float64)
        self.momentum = momentum
        self.kernel = smooth_kernel_size
        self.reset()

    def reset(self) -> None:
        """Forget the clip: the next frame is a first frame."""
        self.scales: Scales | None = None
        self.history = np.zeros((0, 68, 2), dtype=np.float64)

    def __call__(self, landmarks: np.ndarray) -> np.ndarray:
        kp, self.scales = normalize_keypoints(landmarks, self.ref, self.scales, self.momentum)
        self.history = np.concatenate([self.history, kp[None]])[-self.kernel :]
        if self.kernel > 1 and len(self.history) == self.kernel:
            return smooth_keypoints(self.history)
        return kp


def prepare_keypoints(
    ref_landmarks: np.ndarray,
    driving_landmarks: np.ndarray,
    momentum: float = NORMALIZE_MOMENTUM,
    smooth_kernel_size: int = SMOOTH_KERNEL_SIZE,
) -> np.ndarray:
    """``(T, 68, 2) float64`` points to draw for a whole driving clip ``(T, 68, 2)``
    (a fresh :class:`KeypointNormalizer` over the frames in order)."""
    norm = KeypointNormalizer(ref_landmarks, momentum, smooth_kernel_size)
    out = [norm(frame) for frame in np.asarray(driving_landmarks, dtype=np.float64)]
    return np.stack(out) if out else np.zeros((0, 68, 2), dtype=np.float64)


# ---------------------------------------------------------------------------- crop


def face_crop_box(landmarks: np.ndarray, image_hw: Sequence[int]) -> tuple[int, int, int, int]:
    """``(min_y, max_y, min_x, max_x)`` of the face crop for raw points ``(68, 2)`` of an
    image ``(H, W)``: side ``2w`` with ``w`` the int x-extent, centre of the int bounding
    box at ``(w, 1.25 w)`` in the box, clamped so the box starts inside the image (it may
    end past it: the crop is then cut short and stretched by the resize)."""
    pts = np.asarray(landmarks)
    min_y, max_y = int(pts[:, 1].min()), int(pts[:, 1].max())
    min_x, max_x = int(pts[:, 0].min()), int(pts[:, 0].max())
    x_cen, y_cen = (min_x + max_x) // 2, (min_y + max_y) // 2
    height, width = int(image_hw[0]), int(image_hw[1])
    side = max_x - min_x
    x_cen = max(side, min(width - side, x_cen))
    y_cen = max(side * 1.25, min(height - side * 0.75, y_cen))
    top, left = y_cen - side * 1.25, x_cen - side
    return int(top), int(top + side * 2), int(left), int(left + side * 2)


def crop_face(
    images: torch.Tensor, box: Sequence[int], size: Sequence[int] = OUTPUT_SIZE
) -> torch.Tensor:
    """``(N, C, h, w)``: ``images (N, C, H, W)`` cut to ``box`` (:func:`face_crop_box`)
    and resized bilinearly (``align_corners=False``) to ``size``; for images and labels."""
    min_y, max_y, min_x, max_x = box
    crop = images[:, :, min_y:max_y, min_x:max_x]
    return F.interpolate(
        crop, size=tuple(int(s) for s in size), mode="bilinear", align_corners=False
    )


# ---------------------------------------------------------------------------- stream


class FaceLabelStream:
    """The whole test-time label pipeline for one reference and one driving clip.

    Args:
        ref_landmarks: ``(68, 2)`` raw points of the reference frame (resized frame).
        image_hw: ``(H, W)`` of the resized *driving* frames (canvas and crop clamp).
        output_hw: crop size, upstream 512x512.
        crop: ``"face"`` (upstream's boxes, :func:`face_crop_box`) or ``"frame"`` (both boxes
            are the whole frame: the crop is only the resize to ``output_hw``, so outputs
            stay aligned with the input frames).

    Attributes:
        ref_box: crop box of the reference image (:func:`face_crop_box`).
        few_shot_label: ``(1, 1, h, w) float32`` cropped reference label.
        box: crop box of the driving frames, set by the first call.

    ``stream(landmarks (68, 2))`` returns the next driving frame's ``(1, 1, h, w)`` cropped
    label; crop its image with ``crop_face(image, stream.box)`` and the reference image
    with ``crop_face(ref_image, stream.ref_box)``.
    """

    def __init__(
        self,
        ref_landmarks: np.ndarray,
        image_hw: Sequence[int],
        output_hw: Sequence[int] = OUTPUT_SIZE,
        momentum: float = NORMALIZE_MOMENTUM,
        smooth_kernel_size: int = SMOOTH_KERNEL_SIZE,
        crop: str = "face",
    ) -> None:
        if crop not in ("face", "frame"):
            raise ValueError(f'crop must be "face" or "frame", got {crop!r}')
        ref = np.asarray(ref_landmarks, dtype=np.float64)
        self.image_hw = (int(image_hw[0]), int(image_hw[1]))
        self.output_hw = (int(output_hw[0]), int(output_hw[1]))
        self.crop = crop
        self.normalizer = KeypointNormalizer(ref, momentum, smooth_kernel_size)
        self.ref_box = self._box(ref)
        label = torch.from_numpy(render_label_map(ref[None], self.image_hw))
        self.few_shot_label = crop_face(label, self.ref_box, self.output_hw)
        self.box: tuple[int, int, int, int] | None = None

    def __call__(self, landmarks: np.ndarray) -> torch.Tensor:
        raw = np.asarray(landmarks, dtype=np.float64)
        if self.box is None:
            self.box = self._box(raw)
        points = self.normalizer(raw)
        label = torch.from_numpy(render_label_map(points[None], self.image_hw))
        return crop_face(label, self.box, self.output_hw)

    def _box(self, points: np.ndarray) -> tuple[int, int, int, int]:
        if self.crop == "frame":
            return (0, self.image_hw[0], 0, self.image_hw[1])
        return face_crop_box(points, self.image_hw)
