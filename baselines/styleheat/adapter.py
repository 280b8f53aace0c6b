"""``styleheat`` method: StyleHEAT (Yin et al., ECCV 2022) video re-enactment at 1024².

As upstream's ``inference.py`` ``reenactment`` (OpenTalker/StyleHEAT, MIT) with
``--inversion_option encode`` (its default): the source is inverted once per job
(:meth:`~.model.StyleHEAT.invert`), then each driving frame's ``(73, 27)`` descriptor over
the 27-frame window (the same rows and window as PIRenderer: ``pirenderer/driven.py``)
drives the warping and calibration of the 64² StyleGAN2 feature (``model.py``).

Frames: given at 256² (``input_resolution``; the runner and ``reenact`` resize them from
the data with the shared resize, PIL's bicubic, as upstream's ``read_video(resize=256)``),
returned at 1024² (``resolution``). Coefficients are extracted from the 256² frames and the
source is inverted from its 256² frame (upstream: ``source_align`` at 256, same-id).
Output: 1024² frames, truncated to uint8 as upstream's ``write2video``.

Not as upstream (docs/baselines.md): upstream re-crops driving videos FFHQ-style
(``Croper``) before extracting coefficients when it extracts them itself, and aligns the
source with ``--if_align``; the benchmark's protocols give prepared face crops, which are
used as they are. Upstream's cross-id uses the same path with another source image (no
crop normalisation).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch

from reenactbench.nn.precision import autocast

from ..pirenderer.driven import COEFF_RES, CoeffDrivenMethod
from ..pirenderer.model import to_input, to_uint8
from .model import Inversion, load_model

__all__ = ["StyleHEATMethod"]


class StyleHEATMethod(CoeffDrivenMethod):
    """``styleheat``: StyleHEAT (``styleheat``, ``styleheat-e4e``, ``styleheat-hfgi``,
    ``styleheat-stylegan``) on Deep3DFaceRecon coefficients (``deep3d-recon``) of dlib's 68
    landmarks.

    Args:
        device: torch device.
        weights: weight name -> file overrides.
        batch_size: frames per coefficient extraction and per 1024² synthesis (speed and
            memory only).
        dtype: network precision, ``fp32`` (default), ``bf16`` or ``fp16`` (autocast).
        driving_coeffs: a ``.npy`` file of ``(T, 260)`` driving rows used instead of
            extracting them (``reenact --driving-coeffs FILE``).

    Raises:
        WeightsMissing: a weight file is neither given nor imported.
        InputError: a checkpoint is unreadable or not in the official layout.
        MethodError: a bad option value.
    """

    name: ClassVar[str] = "styleheat"
    resolution: int = 1024
    input_resolution: int = COEFF_RES
    weights: ClassVar[tuple[str, ...]] = (
        "styleheat", "styleheat-e4e", "styleheat-hfgi", "styleheat-stylegan", "deep3d-recon",
    )  # fmt: skip
    license: ClassVar[str] = (
        "MIT (StyleHEAT, e4e, HFGI, Deep3DFaceRecon); FFHQ StyleGAN2 weights: NVIDIA "
        "Source Code License-NC"
    )

    def __init__(
        self,
        device: str = "cpu",
        weights: Mapping[str, Path] | None = None,
        batch_size: int = 4,
        dtype: str = "fp32",
        driving_coeffs: str | None = None,
    ) -> None:
        super().__init__(device, weights, batch_size, dtype, driving_coeffs)
        self.model = load_model(weights, self.device)

    def prepare_source(self, source: np.ndarray) -> Inversion:
        with autocast(self.device, self.dtype):
            inv = self.model.invert(to_input(source[None]).to(self.device))
        return Inversion(*(t.float() for t in (inv.ix, inv.wx, inv.fx)),
                         tuple(c.float() for c in inv.condition))  # type: ignore[arg-type]  # fmt: skip

    @torch.no_grad()
    def render(self, state: Inversion, desc: list[np.ndarray]) -> np.ndarray:
        with autocast(self.device, self.dtype):
            d = torch.from_numpy(np.stack(desc)).to(self.device)
            out = self.model(state, d).float()
        return to_uint8(out)
