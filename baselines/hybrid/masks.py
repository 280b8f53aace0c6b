"""Facial-feature masks and the feature reconstruction loss (paper Eq. 13).

"a dilated masked region consisting of the mouth, eyes, and eyebrows": from the 68 iBUG
landmarks (dlib / face_alignment order, 0-based) the mask fills

- the outer lip contour, points 48-59 (the inner lip 60-67 lies inside it);
- each eye, points 36-41 and 42-47;
- each eyebrow, points 17-21 and 22-26: an open curve, closed by its chord (for an arched
  brow this is its convex hull); the boundary band below keeps a straight brow covered,

then dilates the union with a square max-pool of ``2 * dilate_px + 1`` pixels.

Pixel convention: landmark ``(x, y)`` is in pixels of the ``size x size`` image with
integer coordinates at pixel centres (dlib's convention), x to the right, y down. A pixel
is in a region when its centre lies inside the polygon (even-odd rule) or within
``sqrt(2) / 2`` pixels of its boundary, so every pixel a polygon edge passes through and
every landmark's own pixel is covered. Masks are not differentiable (nor need to be).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from .losses import LpipsFn, RecWeights, rec_loss

__all__ = ["REGIONS", "face_region_mask", "masked", "feature_rec_loss"]

#: Region name -> 0-based indices of the 68-point landmarks forming its closed polygon.
REGIONS: dict[str, tuple[int, ...]] = {
    "mouth": tuple(range(48, 60)),
    "right_eye": tuple(range(36, 42)),
    "left_eye": tuple(range(42, 48)),
    "right_brow": tuple(range(17, 22)),
    "left_brow": tuple(range(22, 27)),
}

_BAND = math.sqrt(2) / 2  # pixels: half the diagonal of a pixel


def _polygon_mask(poly: Tensor, px: Tensor, py: Tensor) -> Tensor:
    """Pixels inside or on the boundary of closed polygons.

    Args:
        poly: ``(B, K, 2)`` vertices (x, y), the last joined to the first.
        px, py: ``(P,)`` pixel-centre coordinates.

    Returns:
        ``(B, P)`` bool.
    """
    inside = torch.zeros(poly.shape[0], px.numel(), dtype=torch.bool, device=poly.device)
    near = torch.zeros_like(inside)
    k = poly.shape[1]
    for i in range(k):
        ax, ay = poly[:, i, 0:1], poly[:, i, 1:2]  # (B, 1)
        bx, by = poly[:, (i + 1) % k, 0:1], poly[:, (i + 1) % k, 1:2]
        # even-odd rule: a ray towards +x crosses this edge
        straddles = (ay > py) != (by > py)  # (B, P)
        dy = torch.where(by == ay, torch.ones_like(by), by - ay)
        x_cross = ax + (py - ay) * (bx - ax) / dy
        inside ^= straddles & (px < x_cross)
        # distance from the pixel centre to the segment a-b
        ex, ey = bx - ax, by - ay
        len2 = (ex * ex + ey * ey).clamp_min(1e-12)
        t = (((px - ax) * ex + (py - ay) * ey) / len2).clamp(0, 1)
        dist2 = (px - ax - t * ex) ** 2 + (py - ay - t * ey) ** 2
        near |= dist2 <= _BAND**2
    return inside | near


def face_region_mask(
    landmarks: Tensor, size: int, dilate_px: int, regions: Sequence[str] = tuple(REGIONS)
) -> Tensor:
    """Mask M of Eq. 13: mouth, eyes and eyebrows, dilated.

    Args:
        landmarks: ``(B, 68, 2)`` float (x, y) in pixels of the ``size x size`` image,
            pixel centres at integers (see module docstring).
        size: mask side S in pixels.
        dilate_px: dilation radius in pixels (square structuring element), ``>= 0``.
        regions: which entries of :data:`REGIONS` to fill (default: all five).

    Returns:
        ``(B, 1, S, S)`` float32 in {0, 1}, on the landmarks' device.
    """
    if landmarks.ndim != 3 or landmarks.shape[1:] != (68, 2):
        raise ValueError(
            f"face_region_mask: landmarks must be (B, 68, 2), got {tuple(landmarks.shape)}"
        )
    if size < 1 or dilate_px < 0:
        raise ValueError(
            f"face_region_mask: need size >= 1, dilate_px >= 0; got {size}, {dilate_px}"
        )
    unknown = sorted(set(regions) - set(REGIONS))
    if unknown:
        raise ValueError(f"face_region_mask: unknown regions {unknown}; known: {sorted(REGIONS)}")
    pts = landmarks.detach().float()
    if not bool(torch.isfinite(pts).all()):
        raise ValueError("face_region_mask: landmarks must be finite (no NaN / inf)")
    mask = torch.zeros(pts.shape[0], size, size, dtype=torch.bool, device=pts.device)
    for name in regions:
        poly = pts[:, list(REGIONS[name])]  # (B, K, 2)
        # only pixels in the batch's bounding box of this polygon (+1 px) can be set
        lo = poly.amin(dim=(0, 1)).floor().sub(1).clamp(0, size - 1).long().tolist()
        hi = poly.amax(dim=(0, 1)).ceil().add(1).clamp(0, size - 1).long().tolist()
        xs = torch.arange(lo[0], hi[0] + 1, dtype=torch.float32, device=pts.device)
        ys = torch.arange(lo[1], hi[1] + 1, dtype=torch.float32, device=pts.device)
        py, px = torch.meshgrid(ys, xs, indexing="ij")
        sub = _polygon_mask(poly, px.reshape(-1), py.reshape(-1))
        mask[:, lo[1] : hi[1] + 1, lo[0] : hi[0] + 1] |= sub.view(-1, len(ys), len(xs))
    out = mask[:, None].float()
    if dilate_px > 0:
        k = 2 * dilate_px + 1  # a square max-pool, done as two separable 1-D passes
        out = F.max_pool2d(out, kernel_size=(k, 1), stride=1, padding=(dilate_px, 0))
        out = F.max_pool2d(out, kernel_size=(1, k), stride=1, padding=(0, dilate_px))
    return out


def masked(x: Tensor, mask: Tensor) -> Tensor:
    """``M ⊙ I``: ``(B, C, H, W) * (B, 1, H, W)``; outside the mask images become 0 (mid
    grey in [-1, 1])."""
    if (
        mask.ndim != 4
        or mask.shape[1] != 1
        or mask.shape[0] != x.shape[0]
        or (mask.shape[-2:] != x.shape[-2:])
    ):
        raise ValueError(
            f"masked: mask must be (B, 1, H, W) matching image {tuple(x.shape)}, "
            f"got {tuple(mask.shape)}"
        )
    return x * mask.to(x.dtype)


def feature_rec_loss(
    pairs: Sequence[tuple[Tensor, Tensor, Tensor]], lpips_fn: LpipsFn, weights: RecWeights
) -> tuple[Tensor, dict[str, Tensor]]:
    """Feature reconstruction loss, Eq. 13: ``sum_k L_rec(M_k ⊙ I_k, M_k ⊙ Î_k)``.

    The paper's two pairs are ``(I^{S->S}, I^S, M^S)`` and ``(I^{S->D1}, I^{D1}, M^{D1})``.

    Args:
        pairs: ``(generated, target, mask)`` triples: images ``(B, 3, H, W)`` in [-1, 1],
            mask ``(B, 1, H, W)`` from :func:`face_region_mask`.
        lpips_fn, weights: as :func:`reenactbench.baselines.hybrid.losses.rec_loss`.

    Returns:
        ``(total, parts)``: the sum over pairs of rec_loss's total and of each part.
    """
    if not pairs:
        raise ValueError("feature_rec_loss: need at least one (generated, target, mask) pair")
    total: Tensor | None = None
    parts: dict[str, Tensor] = {}
    for fake, real, mask in pairs:
        t, p = rec_loss(masked(fake, mask), masked(real, mask), lpips_fn, weights)
        total = t if total is None else total + t
        parts = {k: parts[k] + v for k, v in p.items()} if parts else dict(p)
    assert total is not None
    return total, parts
