"""PIRenderer's driving descriptor, as upstream's ``data/vox_video_dataset.py`` builds it
(RenYurui/PIRender 9e59f194f1a0eb32769a6f058ae55c124cd3d298).

Rows are ``(T, 260) float32``: Deep3DFaceRecon's 257 coefficients (id 0:80, expression
80:144, texture 144:224, angles 224:227, lighting 227:254, translation 254:257) plus the
crop parameters ``[s, tx, ty]`` (257:260). The descriptor of frame ``i`` is ``(73, 27)``:
expression 64 + angles 3 + translation 3 + crop 3, over frames ``i-13 .. i+13`` with each
index clamped to ``[0, T-1]`` (the first / last row repeats at the clip ends).
"""

from __future__ import annotations

import numpy as np

__all__ = ["SEMANTIC_RADIUS", "window_index", "descriptor", "descriptors", "find_crop_norm_ratio"]

#: config/face.yaml ``data.semantic_radius``: the window is ``2 * 13 + 1 = 27`` frames.
SEMANTIC_RADIUS = 13


def window_index(index: int, num_frames: int, radius: int = SEMANTIC_RADIUS) -> list[int]:
    """Frames ``index-radius .. index+radius``, each clamped to ``[0, num_frames-1]``."""
    return [min(max(i, 0), num_frames - 1) for i in range(index - radius, index + radius + 1)]


def descriptor(
    rows: np.ndarray, index: int, crop_norm_ratio: np.ndarray | None = None
) -> np.ndarray:
    """``(73, 27) float32`` descriptor of frame ``index`` of ``rows (T, 260)``.

    ``crop_norm_ratio`` (cross-id, from :func:`find_crop_norm_ratio`) multiplies the crop
    scale ``s`` of every row of the window, as upstream does when ``cross_id`` is set.
    """
    rows = np.asarray(rows, dtype=np.float32)
    if rows.ndim != 2 or rows.shape[1] != 260:
        raise ValueError(
            f"coefficient rows must be (T, 260) (257 + crop s, tx, ty), got {rows.shape}"
        )
    coeff = rows[window_index(index, len(rows))]
    crop = coeff[:, 257:260]
    if crop_norm_ratio is not None:
        crop[:, -3] = crop[:, -3] * crop_norm_ratio
    parts = [coeff[:, 80:144], coeff[:, 224:227], coeff[:, 254:257], crop]
    return np.ascontiguousarray(np.concatenate(parts, 1).T)


def descriptors(rows: np.ndarray, crop_norm_ratio: np.ndarray | None = None) -> np.ndarray:
    """``(T, 73, 27) float32``: :func:`descriptor` of every frame."""
    return np.stack([descriptor(rows, i, crop_norm_ratio) for i in range(len(rows))])


def find_crop_norm_ratio(source_coeff: np.ndarray, target_coeffs: np.ndarray) -> np.ndarray:
    """Cross-id crop-scale ratio: the source's ``s`` over ``s`` of the driving frame whose
    expression and angles are closest to the source's (``0.3 * mean |dexp| + 0.7 * mean
    |dangle|``).

    Args:
        source_coeff: ``(1, 260)`` rows of the source image.
        target_coeffs: ``(T, 260)`` rows of the driving clip.

    Returns:
        ``(1,) float32`` ratio.
    """
    src = np.asarray(source_coeff, dtype=np.float32).reshape(1, -1)
    tgt = np.asarray(target_coeffs, dtype=np.float32)
    alpha = 0.3
    exp_diff = np.mean(np.abs(tgt[:, 80:144] - src[:, 80:144]), 1)
    angle_diff = np.mean(np.abs(tgt[:, 224:227] - src[:, 224:227]), 1)
    index = np.argmin(alpha * exp_diff + (1 - alpha) * angle_diff)
    return src[:, -3] / tgt[index : index + 1, -3]
