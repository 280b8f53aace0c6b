"""The ``fomm`` method: First Order Motion Model, vox-256, with relative motion.

Inference follows upstream's ``demo.py`` ``make_animation`` and ``animate.py``
``normalize_kp`` (AliaksandrSiarohin/first-order-model at commit
c0274845cb2dd8f0f2fe6da580d97b60fef90c91, MIT code; the ``vox-cpk.pth.tar`` checkpoint is
the authors' release, CC BY-NC 4.0 per the registry): keypoints of driving frame 0 are
the reference, motion is relative to them, scaled by sqrt(area ratio) of the keypoints'
convex hulls (source vs driving frame 0), and jacobians are relative too.

Images enter the network as ``(B,3,256,256) float32 in [0,1]`` (upstream's skimage
``resize`` output); the prediction (sigmoid, [0,1]) leaves as ``round(x * 255)`` uint8.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

import numpy as np
import torch
from scipy.spatial import ConvexHull
from torch import Tensor

from reenactbench.batching import batched
from reenactbench.errors import InputError
from reenactbench.nn.loading import safe_load
from reenactbench.nn.precision import autocast, check_dtype
from reenactbench.weights import weight_path

from .model import KPDetector, OcclusionAwareGenerator, build_vox256

__all__ = ["FOMMMethod", "load_fomm", "normalize_kp"]


def load_fomm(
    path: Path | str,
    device: str | torch.device = "cpu",
    *,
    align_corners: bool = False,
) -> tuple[OcclusionAwareGenerator, KPDetector]:
    """Load a checkpoint in the official layout (``{"generator": sd, "kp_detector": sd, ...}``).

    Args:
        path: e.g. ``vox-cpk.pth.tar``; other keys (discriminator, optimizers) are ignored.
        device: where the modules go.
        align_corners: ``grid_sample`` setting of the generator (see ``model``).

    Returns:
        ``(generator, kp_detector)`` in eval mode, loaded with ``strict=True``.

    Raises:
        InputError: unreadable file, missing top-level key, or a state-dict key/shape
            mismatch; the message names the file.
    """
    path = Path(path)
    ckpt = safe_load(path, "FOMM checkpoint (vox-cpk.pth.tar)")
    if not isinstance(ckpt, Mapping) or not {"generator", "kp_detector"} <= set(ckpt):
        keys = sorted(ckpt) if isinstance(ckpt, Mapping) else type(ckpt).__name__
        raise InputError(
            f"{path}: not a FOMM checkpoint (needs keys 'generator' and 'kp_detector', has "
            f"{keys}); use the vox-256 vox-cpk.pth.tar layout"
        )
    generator, kp_detector = build_vox256(align_corners=align_corners)
    for name, module in (("generator", generator), ("kp_detector", kp_detector)):
        sd = ckpt[name]
        want, have = set(module.state_dict()), set(sd)
        missing, extra = sorted(want - have), sorted(have - want)
        if missing or extra:
            raise InputError(
                f"{path}: '{name}' does not match the FOMM vox-256 layout (missing "
                f"{missing[:3]}{'...' if len(missing) > 3 else ''} [{len(missing)}], extra "
                f"{extra[:3]}{'...' if len(extra) > 3 else ''} [{len(extra)}]); "
                "is this a vox-256 config checkpoint?"
            )
        try:
            module.load_state_dict(sd, strict=True)
        except RuntimeError as e:
            msg = " ".join(str(e).split())[:300]
            raise InputError(f"{path}: '{name}' shapes differ from vox-256 ({msg})") from None
    return generator.to(device).eval(), kp_detector.to(device).eval()


def normalize_kp(
    kp_source: dict[str, Tensor],
    kp_driving: dict[str, Tensor],
    kp_driving_initial: dict[str, Tensor],
    adapt_movement_scale: bool = True,
    relative: bool = True,
) -> dict[str, Tensor]:
    """Upstream ``normalize_kp`` with ``use_relative_movement = use_relative_jacobian =
    relative``. ``kp_source`` and ``kp_driving_initial`` have batch 1, ``kp_driving``
    batch B; values ``(.,K,2)`` in [-1,1], jacobians ``(.,K,2,2)``.

    scale = sqrt(hull area of source kps / hull area of driving-frame-0 kps);
    value = (d - d0) * scale + s;  jacobian = (J_d J_d0^-1) J_s.
    """
    if adapt_movement_scale:
        src = ConvexHull(kp_source["value"][0].detach().cpu().numpy()).volume
        drv = ConvexHull(kp_driving_initial["value"][0].detach().cpu().numpy()).volume
        scale = float(np.sqrt(src) / np.sqrt(drv))
    else:
        scale = 1.0
    out = dict(kp_driving)
    if relative:
        delta = kp_driving["value"] - kp_driving_initial["value"]  # (B,K,2)
        out["value"] = delta * scale + kp_source["value"]
        jac = torch.matmul(kp_driving["jacobian"], torch.inverse(kp_driving_initial["jacobian"]))
        out["jacobian"] = torch.matmul(jac, kp_source["jacobian"])
    return out


def _fp32(kp: dict[str, Tensor]) -> dict[str, Tensor]:
    return {k: v.float() for k, v in kp.items()}


class FOMMMethod:
    """FOMM vox-256 re-enactment (relative motion, keypoints of driving frame 0 as reference).

    Args:
        device: torch device string.
        weights: ``--weights`` overrides, ``{"fomm-vox": path}``.
        checkpoint: explicit checkpoint path (bypasses the registry; restricted unpickling
            only, so the file must load with ``weights_only=True``).
        batch_size: driving frames per forward pass.
        relative: relative keypoint motion and jacobians (upstream ``--relative``).
        adapt_movement_scale: scale motion by the keypoint hull-area ratio.
        align_corners: ``grid_sample`` setting; ``False`` = upstream on current torch.
        dtype: network precision, ``fp32`` (default), ``bf16`` or ``fp16`` (autocast).
    """

    name = "fomm"
    resolution = 256
    weights: tuple[str, ...] = ("fomm-vox",)

    def __init__(
        self,
        device: str = "cpu",
        weights: dict[str, Path] | None = None,
        checkpoint: Path | str | None = None,
        batch_size: int = 8,
        relative: bool = True,
        adapt_movement_scale: bool = True,
        align_corners: bool = False,
        dtype: str = "fp32",
    ) -> None:
        if batch_size < 1:
            raise InputError(f"fomm: batch_size must be >= 1, got {batch_size}")
        self.dtype = check_dtype(dtype, "method 'fomm'")
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.relative = relative
        self.adapt_movement_scale = adapt_movement_scale
        path = Path(checkpoint) if checkpoint is not None else weight_path("fomm-vox", weights)
        self.generator, self.kp_detector = load_fomm(path, self.device, align_corners=align_corners)

    def _to_model(self, frames: np.ndarray) -> Tensor:
        """``(N,256,256,3) uint8`` -> ``(N,3,256,256) float32 in [0,1]`` on the device."""
        if frames.ndim != 4 or frames.shape[1:] != (256, 256, 3) or frames.dtype != np.uint8:
            raise InputError(
                f"fomm: frames are {frames.shape[1:]} {frames.dtype}; need (256, 256, 3) uint8 "
                "RGB (resize with reenactbench.video.resize)"
            )
        t = torch.tensor(frames, device=self.device)  # copy: inputs may be read-only
        return t.permute(0, 3, 1, 2).float() / 255.0

    @torch.no_grad()
    def reenact(self, source: np.ndarray, driving: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        """``source`` (256,256,3) uint8; yields one (256,256,3) uint8 per driving frame."""
        src = self._to_model(np.asarray(source)[None])  # (1,3,256,256) in [0,1]
        with autocast(self.device, self.dtype):  # networks only; keypoint algebra in fp32
            kp_src = _fp32(self.kp_detector(src))
            feats = self.generator.encode(src)  # (1,256,64,64), reused for every frame
        kp_init: dict[str, Tensor] | None = None
        for chunk in batched(driving, self.batch_size):
            drv = self._to_model(np.stack(chunk))  # (B,3,256,256) in [0,1]
            with autocast(self.device, self.dtype):  # left before yielding: metrics stay fp32
                kp_drv = _fp32(self.kp_detector(drv))
            if kp_init is None:
                kp_init = {k: v[:1] for k, v in kp_drv.items()}  # driving frame 0
            kp_norm = normalize_kp(
                kp_src, kp_drv, kp_init, self.adapt_movement_scale, self.relative
            )
            b = drv.shape[0]
            kp_s = {k: v.expand(b, *v.shape[1:]) for k, v in kp_src.items()}
            with autocast(self.device, self.dtype):
                out = self.generator(
                    src.expand(b, -1, -1, -1), kp_norm, kp_s, features=feats.expand(b, -1, -1, -1)
                )["prediction"].float()
            u8 = (out.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
            yield from u8
