"""``landmark-warp``: a classical, weight-free re-enactment baseline.

The source image is warped piecewise-affinely so that its 68 dlib landmarks follow the
driving video's motion, transferred relatively as in FOMM (``relative=True`` with
``adapt_movement_scale=True``)::

    target_t = src_lm + (drv_lm_t - drv_lm_0) * s
    s = sqrt(area(hull(src_lm)) / area(hull(drv_lm_0)))

where ``drv_lm_0`` are the landmarks of the first driving frame with a face. The mesh is
a Delaunay triangulation of the source landmarks plus fixed points on the image border
(so the background stays put), computed once per source. Each output pixel is mapped
back through the affine map of the target triangle that covers it and sampled
bilinearly from the source.

A driving frame without a detected face reuses the previous landmarks (before the first
face is seen, the source is returned unchanged). No hidden state crosses ``reenact``
calls. Needs the ``[faces]`` extra (dlib).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from scipy.spatial import ConvexHull, Delaunay

from reenactbench.errors import InputError
from reenactbench.faces import detect_landmarks, faces_unavailable

__all__ = ["LandmarkWarpMethod", "piecewise_affine_warp"]

_BORDER_POINTS_PER_SIDE = 4  # segments per image side; corners included


def _border_points(h: int, w: int) -> np.ndarray:
    """``(4 * n, 2) float64`` (x, y) points evenly spaced on the image border."""
    n = _BORDER_POINTS_PER_SIDE
    xs = np.linspace(0, w - 1, n + 1)
    ys = np.linspace(0, h - 1, n + 1)
    top = np.stack([xs[:-1], np.zeros(n)], 1)
    right = np.stack([np.full(n, w - 1.0), ys[:-1]], 1)
    bottom = np.stack([xs[::-1][:-1], np.full(n, h - 1.0)], 1)
    left = np.stack([np.zeros(n), ys[::-1][:-1]], 1)
    return np.concatenate([top, right, bottom, left])


def _hull_area(points: np.ndarray) -> float:
    return float(ConvexHull(points).volume)  # in 2-D, "volume" is the area


def piecewise_affine_warp(
    image: np.ndarray, src_pts: np.ndarray, dst_pts: np.ndarray, triangles: np.ndarray
) -> np.ndarray:
    """Warp ``image`` so that ``src_pts`` land on ``dst_pts``.

    Args:
        image: ``(H, W, 3) uint8`` RGB.
        src_pts, dst_pts: ``(P, 2)`` (x, y) pixels; same mesh topology.
        triangles: ``(K, 3) int`` vertex indices (e.g. a Delaunay triangulation of
            ``src_pts``); ``dst_pts`` triangles should cover the output image.

    Returns:
        ``(H, W, 3) uint8``; pixels covered by no triangle are copied from ``image``.
    """
    h, w = image.shape[:2]
    # Triangle index map of the destination mesh (0 = uncovered, k + 1 = triangle k).
    id_map = Image.new("I", (w, h), 0)
    draw = ImageDraw.Draw(id_map)
    for k, tri in enumerate(triangles):
        draw.polygon([tuple(p) for p in dst_pts[tri].tolist()], fill=k + 1)
    tid = np.asarray(id_map, dtype=np.int32).reshape(-1)

    # Affine map per triangle, destination -> source: [x y 1] @ m = [xs ys].
    dst = np.concatenate([dst_pts[triangles], np.ones((len(triangles), 3, 1))], axis=2)
    src = src_pts[triangles]  # (K, 3, 2)
    det = np.linalg.det(dst)
    ok = np.abs(det) > 1e-6
    m = np.tile(np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]]), (len(triangles) + 1, 1, 1))
    m[1:][ok] = np.linalg.solve(dst[ok], src[ok])
    mt = m[tid].astype(np.float32)  # (H*W, 3, 2); row 0 of m is the identity map

    ys, xs = np.divmod(np.arange(h * w, dtype=np.float32), np.float32(w))
    sx = xs * mt[:, 0, 0] + ys * mt[:, 1, 0] + mt[:, 2, 0]
    sy = xs * mt[:, 0, 1] + ys * mt[:, 1, 1] + mt[:, 2, 1]
    sx = np.clip(sx, 0, w - 1)
    sy = np.clip(sy, 0, h - 1)
    x0 = np.minimum(sx.astype(np.int32), w - 2)
    y0 = np.minimum(sy.astype(np.int32), h - 2)
    fx = (sx - x0)[:, None]
    fy = (sy - y0)[:, None]
    flat = image.reshape(-1, 3).astype(np.float32)
    i00 = y0 * w + x0
    top = flat[i00] * (1 - fx) + flat[i00 + 1] * fx
    bottom = flat[i00 + w] * (1 - fx) + flat[i00 + w + 1] * fx
    out = top * (1 - fy) + bottom * fy
    return np.clip(out + 0.5, 0, 255).astype(np.uint8).reshape(h, w, 3)


class LandmarkWarpMethod:
    """Piecewise-affine landmark warp of the source (see the module doc)."""

    name = "landmark-warp"
    resolution = 256
    weights: tuple[str, ...] = ()

    def __init__(
        self, device: str = "cpu", weights: dict[str, Path] | None = None, resolution: int = 256
    ) -> None:
        self.device = device  # CPU only; kept for the constructor convention
        self.resolution = resolution

    @classmethod
    def unavailable(cls) -> str | None:
        """Why this method cannot run here (dlib or its landmark model missing), or None."""
        return faces_unavailable()

    def _landmarks(self, frame: np.ndarray) -> np.ndarray | None:
        lm = detect_landmarks(frame)
        if lm is None:
            lm = detect_landmarks(frame, upsample=1)  # small faces
        return None if lm is None else lm.astype(np.float64)

    def _check(self, frame: np.ndarray, what: str) -> np.ndarray:
        r = self.resolution
        if frame.shape != (r, r, 3) or frame.dtype != np.uint8:
            raise InputError(
                f"{what} frame is {frame.shape} {frame.dtype}; landmark-warp needs "
                f"({r}, {r}, 3) uint8 RGB (resize with reenactbench.video.resize)"
            )
        return frame

    def reenact(self, source: np.ndarray, driving: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        """Animate ``source`` with the relative landmark motion of ``driving``.

        Args:
            source: ``(R, R, 3) uint8`` RGB with a detectable face.
            driving: ``(R, R, 3) uint8`` RGB frames, streamed.

        Yields:
            ``(R, R, 3) uint8`` RGB, one per driving frame.

        Raises:
            InputError: no face in ``source``, or a frame of the wrong size/dtype.
        """
        source = self._check(np.asarray(source), "source")
        src_lm = self._landmarks(source)
        if src_lm is None:
            raise InputError("source frame has no detectable face")
        h, w = source.shape[:2]
        border = _border_points(h, w)
        src_pts = np.concatenate([src_lm, border])
        triangles = Delaunay(src_pts).simplices
        src_area = _hull_area(src_lm)
        drv0: np.ndarray | None = None
        scale = 1.0
        prev: np.ndarray | None = None
        for frame in driving:
            lm = self._landmarks(self._check(np.asarray(frame), "driving"))
            lm = prev if lm is None else lm
            prev = lm
            if lm is None:
                yield source
                continue
            if drv0 is None:
                drv0 = lm
                scale = float(np.sqrt(src_area / max(_hull_area(drv0), 1e-9)))
            target = src_lm + (lm - drv0) * scale
            target[:, 0] = np.clip(target[:, 0], 0, w - 1)
            target[:, 1] = np.clip(target[:, 1], 0, h - 1)
            dst_pts = np.concatenate([target, border])
            yield piecewise_affine_warp(source, src_pts, dst_pts, triangles)
