"""``pirenderer`` method: PIRenderer vox-256 driven by Deep3DFaceRecon coefficients.

Per upstream's ``inference.py`` (RenYurui/PIRender 9e59f194, CC BY-NC 4.0): the source
image is rendered with the 73-d descriptor of each driving frame over a 27-frame window
(``descriptor.py``); rows are the 257 coefficients + crop ``[s, tx, ty]`` of
:func:`reenactbench.faces.deep3d.extract_coeffs` on the 68 landmarks of each frame. Rows,
landmark sidecars, ``--driving-coeffs``, streaming and caching: ``driven.py``.

Cross-id crop normalisation (``crop_norm``): upstream's ``--cross_id`` multiplies the crop
scale ``s`` of the driving rows by :func:`find_crop_norm_ratio`, which looks at *every*
driving frame. The adapter does not know the protocol, so it is an option: ``False``
(default, upstream's same-id inference) or ``True`` (upstream's cross-id; set
``--method-option pirenderer:crop_norm=true`` on cross-id runs). With ``True`` all driving
frames are read (their rows kept, ``260`` floats a frame) before the first frame is yielded.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch

from reenactbench.nn.precision import autocast
from reenactbench.weights import weight_path

from .descriptor import find_crop_norm_ratio  # noqa: F401  (re-exported for users)
from .driven import CoeffDrivenMethod, landmarks_68, read_rows
from .model import load_pirenderer, to_input, to_uint8

__all__ = ["PIRendererMethod", "landmarks_68", "read_rows"]


class PIRendererMethod(CoeffDrivenMethod):
    """``pirenderer``: PIRenderer vox-256 (``pirenderer-vox``) on Deep3DFaceRecon
    coefficients (``deep3d-recon``) of dlib's 68 landmarks.

    Args:
        device: torch device.
        weights: weight name -> file overrides (``pirenderer-vox``, ``deep3d-recon``).
        batch_size: frames per coefficient extraction and per rendering pass (speed only).
        crop_norm: cross-id crop-scale normalisation (see the module docstring).
        dtype: network precision, ``fp32`` (default), ``bf16`` or ``fp16`` (autocast).
        driving_coeffs: a ``.npy`` file of ``(T, 260)`` driving rows (:func:`read_rows`)
            used instead of extracting them (``reenact --driving-coeffs FILE``).

    Raises:
        WeightsMissing: a weight file is neither given nor imported.
        InputError: a checkpoint is unreadable or not in the official layout.
        MethodError: a bad option value.
    """

    name: ClassVar[str] = "pirenderer"
    resolution: int = 256
    weights: ClassVar[tuple[str, ...]] = ("pirenderer-vox", "deep3d-recon")
    license: ClassVar[str] = "CC BY-NC 4.0 (PIRender); MIT (Deep3DFaceRecon)"

    def __init__(
        self,
        device: str = "cpu",
        weights: Mapping[str, Path] | None = None,
        batch_size: int = 8,
        crop_norm: bool = False,
        dtype: str = "fp32",
        driving_coeffs: str | None = None,
    ) -> None:
        super().__init__(device, weights, batch_size, dtype, driving_coeffs, crop_norm)
        self.net = load_pirenderer(weight_path("pirenderer-vox", weights), self.device)

    def prepare_source(self, source: np.ndarray) -> torch.Tensor:
        return to_input(source[None]).to(self.device)

    @torch.no_grad()
    def render(self, state: torch.Tensor, desc: list[np.ndarray]) -> np.ndarray:
        with autocast(self.device, self.dtype):
            d = torch.from_numpy(np.stack(desc)).to(self.device)
            out = self.net(state.expand(len(desc), -1, -1, -1), d)["fake_image"].float()
        return to_uint8(out)
