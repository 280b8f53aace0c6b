"""``lia`` method: LIA re-enactment with relative motion, as upstream's ``run_demo.py``.

Upstream (github.com/wyhsirius/LIA @ b9f15fb, CC BY-NC 4.0) encodes the motion of driving
frame 0 once (``h_start = gen.enc.enc_motion(vid[:, 0])``) and renders every driving
frame ``i`` as ``gen(img_source, vid[:, i], h_start)``. Frames enter as ``(x/255 - 0.5)
* 2`` in [-1,1]. Output: clamped to [-1,1], then ``round((x+1)/2*255)``. Upstream's
``save_video`` instead stretches each whole clip by its own min/max and truncates to
uint8; that needs the entire clip before writing a frame and makes a frame depend on the
others, so we use the fixed mapping (identical when the clip spans [-1,1], which
real-weight outputs nearly do; at most 1 level apart from truncation otherwise).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from torch import Tensor

from reenactbench.batching import batched
from reenactbench.errors import InputError, MethodError
from reenactbench.nn.precision import autocast, check_dtype
from reenactbench.weights import weight_path

from .model import load_lia

__all__ = ["LIAMethod", "to_model", "to_uint8"]


def to_model(frames: np.ndarray, device: str | torch.device) -> Tensor:
    """``(B,S,S,3) uint8`` RGB -> ``(B,3,S,S) float32`` in [-1,1] (``(x/255 - 0.5) * 2``)."""
    x = torch.from_numpy(np.ascontiguousarray(frames)).to(device).permute(0, 3, 1, 2)
    return (x.float() / 255.0 - 0.5) * 2.0


def to_uint8(images: Tensor) -> np.ndarray:
    """``(B,3,S,S)`` float about [-1,1] -> ``(B,S,S,3) uint8`` (clamped, ``round((x+1)/2*255)``)."""
    x = ((images.detach().float().clamp(-1, 1) + 1) / 2 * 255).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).contiguous().cpu().numpy()


class LIAMethod:
    """``lia``: the official LIA vox model (or any checkpoint in its layout).

    Args:
        device: torch device.
        weights: weight name -> file overrides (``lia-vox``).
        checkpoint: checkpoint file, overriding ``lia-vox`` (e.g. one retrained on HDTF).
        batch_size: driving frames rendered at once.
        dtype: network precision, ``fp32`` (default), ``bf16`` or ``fp16`` (autocast).

    Raises:
        WeightsMissing: no checkpoint given and ``lia-vox`` not in the cache.
        InputError: the checkpoint is unreadable or not in the official layout.
        MethodError: a bad option value.
    """

    name: ClassVar[str] = "lia"
    resolution: int = 256
    weights: ClassVar[tuple[str, ...]] = ("lia-vox",)

    def __init__(
        self,
        device: str = "cpu",
        weights: Mapping[str, Path] | None = None,
        checkpoint: str | None = None,
        batch_size: int = 8,
        dtype: str = "fp32",
    ) -> None:
        if batch_size < 1:
            raise MethodError(f"method {self.name!r}: batch_size must be >= 1, got {batch_size}")
        self.device, self.batch_size = device, batch_size
        self.dtype = check_dtype(dtype, f"method {self.name!r}")
        path = Path(checkpoint) if checkpoint else weight_path("lia-vox", weights)
        self.model = load_lia(path, device, size=self.resolution)

    @torch.no_grad()
    def reenact(self, source: np.ndarray, driving: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        """Animate ``source`` with the motion of ``driving`` relative to its first frame.

        Args:
            source: ``(256,256,3) uint8`` RGB.
            driving: ``(256,256,3) uint8`` RGB frames, streamed.

        Yields:
            ``(256,256,3) uint8`` RGB, one per driving frame.
        """
        r = self.resolution
        if source.shape != (r, r, 3) or source.dtype != np.uint8:
            raise InputError(
                f"lia: source must be ({r},{r},3) uint8, got {source.shape} {source.dtype}"
            )
        with autocast(self.device, self.dtype):
            wa, d_src, feats = self.model.encode_source(to_model(source[None], self.device))
        alpha_start: Tensor | None = None
        for chunk in batched(driving, self.batch_size):
            batch = to_model(np.stack(chunk), self.device)  # (B,3,256,256) in [-1,1]
            with autocast(self.device, self.dtype):  # left before yielding: metrics stay fp32
                if alpha_start is None:  # motion of driving frame 0, the reference
                    alpha_start = self.model.enc.enc_motion(batch[:1])
                out = to_uint8(self.model.animate(wa, d_src, feats, batch, alpha_start))
            yield from out
