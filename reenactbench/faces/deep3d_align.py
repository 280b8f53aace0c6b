"""Deep3DFaceRecon's 5-point face alignment to the 224x224 input of its regressor.

Our own code reproducing ``util/preprocess.py`` of sicxu/Deep3DFaceRecon_pytorch at
73d491102af6731bded9ae6b3cc7466c3b2e9e48 (the commit PIRender pins as its submodule),
as PIRender's ``scripts/face_recon_videos.py`` / ``coeff_detector.py`` call it:

1. landmarks (68, 2) in pixels, y down, as float32 (upstream reads them with
   ``np.loadtxt(...).astype(np.float32)``) are flipped to y up: ``y' = H - 1 - y``;
2. five points (``extract_5p``): left-eye centre (mean of points 36, 39), right-eye centre
   (42, 45), nose tip (30), mouth corners (48, 54) (0-based iBUG indices);
3. ``POS``: least squares of an affine camera from :data:`LM3D_STD` to the five points,
   giving a translation ``t`` and scale ``s = 102 / ((|R1| + |R2|) / 2)``;
4. ``resize_n_crop_img``: PIL bicubic resize by ``s`` (sizes truncated to int), then a
   224x224 crop whose corner is truncated toward zero (``astype(np.int32)``), black
   outside the image.

The crop parameters PIRender keeps in its 260-d rows (``prepare_vox_lmdb.convert_3dmm``)
are ``[s, t[0], t[1]]`` of upstream's ``trans_params = [W, H, s, t0, t1]`` as float32;
``t`` is in the y-up frame.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

__all__ = ["LM3D_STD", "TARGET_SIZE", "RESCALE_FACTOR", "five_points_deep3d", "pos", "align"]

TARGET_SIZE = 224
RESCALE_FACTOR = 102.0

# The standard 3D five points: ``util/load_mats.load_lm3d`` on ``BFM/similarity_Lm3D_all.mat``,
# a file of the Deep3DFaceRecon_pytorch repository itself (not of the Basel Face Model
# download), at the commit above; float32 as stored. tests/test_deep3d.py checks them
# against upstream's function.
LM3D_STD = np.array(
    [
        [-0.3114865720272064, 0.29036077857017517, 0.13377952575683594],
        [0.30979886651039124, 0.289720356464386, 0.1317952573299408],
        [0.003253498813137412, -0.04617932438850403, 0.5524424314498901],
        [-0.25216928124427795, -0.3813391625881195, 0.22405731678009033],
        [0.24846619367599487, -0.38128235936164856, 0.22235769033432007],
    ],
    dtype=np.float32,
)


def five_points_deep3d(lm: np.ndarray) -> np.ndarray:
    """(68, 2) -> (5, 2): eye centres, nose tip, mouth corners (upstream's ``extract_5p``,
    same dtype arithmetic)."""
    p = np.stack(
        [lm[30], np.mean(lm[[36, 39]], 0), np.mean(lm[[42, 45]], 0), lm[48], lm[54]], axis=0
    )
    return p[[1, 2, 0, 3, 4]]


def pos(xp: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, float]:
    """Upstream's ``POS``: ``xp`` (2, n) image points, ``x`` (3, n) model points ->
    translation (2, 1) float64 and scale."""
    n = xp.shape[1]
    a = np.zeros([2 * n, 8])
    a[0 : 2 * n - 1 : 2, 0:3] = x.T
    a[0 : 2 * n - 1 : 2, 3] = 1
    a[1 : 2 * n : 2, 4:7] = x.T
    a[1 : 2 * n : 2, 7] = 1
    b = np.reshape(xp.T, [2 * n, 1])
    k = np.linalg.lstsq(a, b, rcond=None)[0]
    s = (np.linalg.norm(k[0:3]) + np.linalg.norm(k[4:7])) / 2
    return np.stack([k[3], k[7]], axis=0), s


def align(image: np.ndarray, landmarks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One frame: (H, W, 3) uint8 RGB and (68, 2) pixels y down -> the (224, 224, 3)
    uint8 crop and the crop parameters ``[s, tx, ty]`` float32."""
    h0, w0 = image.shape[:2]
    lm = np.array(landmarks, dtype=np.float32)  # a copy, as upstream's float32 txt
    lm[:, -1] = h0 - 1 - lm[:, -1]
    t, s = pos(five_points_deep3d(lm).T, LM3D_STD.T)
    s = RESCALE_FACTOR / s
    target = float(TARGET_SIZE)
    w = (w0 * s).astype(np.int32)
    h = (h0 * s).astype(np.int32)
    left = (w / 2 - target / 2 + float((t[0, 0] - w0 / 2) * s)).astype(np.int32)
    up = (h / 2 - target / 2 + float((h0 / 2 - t[1, 0]) * s)).astype(np.int32)
    pil = Image.fromarray(image).resize((int(w), int(h)), resample=Image.BICUBIC)
    crop = pil.crop((int(left), int(up), int(left) + TARGET_SIZE, int(up) + TARGET_SIZE))
    params = np.array([s, t[0, 0], t[1, 0]], dtype=np.float32)
    return np.asarray(crop), params
