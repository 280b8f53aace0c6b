"""StyleHEAT's video re-enactment network on the shared StyleGAN2 (upstream
``models/styleheat/styleheat.py`` ``StyleHEAT.forward`` and ``models/hfgi/hfgi.py``,
OpenTalker/StyleHEAT, MIT), our implementation.

Per frame batch, as upstream's ``inference.py`` ``reenactment`` (``--inversion_option
encode``, no audio, no editing):

1. **Inversion** of the source (once per video, :meth:`StyleHEAT.invert`): e4e W+ of the
   256² source, the StyleGAN2 image of it (clamped, resized to 256), the HFGI residual
   ``x - ix`` aligned and encoded into a scale/shift ``(c0, c1)`` applied to the 64² feature
   (``out * (1 + c0) + c1``); ``fx`` is that feature, ``ix`` the resulting image at 256².
2. **Warping**: the VideoWarper (a PIRenderer mapping + warping net) turns ``ix`` and the
   ``(73, 27)`` driving descriptor into a 64² flow (pixel units) and a 256-d descriptor;
   ``fx`` warped by the flow is calibrated (CalibrationNet) into refining conditions.
3. **Synthesis** from W+ with the 64² feature replaced: the feature becomes ``fx``, is warped
   by the flow, then refined ``out * (1 + r[i - 1]) + r[i]`` at every layer index
   ``i = 7, 9, ...`` below ``len(r)`` (upstream's generator indices: 7 is the first conv of
   the 64² block, 9 of 128², ...), through the shared generator's ``feature_hook``.

No noise: StyleHEAT's StyleGAN2 copy disables noise injection (its ``NoiseInjection.forward``
returns the input; the ``weight * noise`` line is commented out), so synthesis here runs
with ``noise="none"`` although the file holds noise strengths and buffers (loaded, unused).

Upstream also renders a ``video_warp_image`` (synthesis without calibration) that its
inference never writes; it is not computed here. Output: the 1024² image clamped to
``[-1, 1]`` (``F.interpolate`` to ``imsize=1024`` is the identity), converted as upstream's
``write2video`` (truncation, :func:`~reenactbench.baselines.pirenderer.model.to_uint8`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from reenactbench.errors import InputError
from reenactbench.nn.stylegan2 import Generator, load_generator
from reenactbench.weights import weight_path

from ..pirenderer.model import warp_image
from .calibration import CalibrationNet, VideoWarper, load_styleheat
from .inversion import E4eEncoder, ResidualAligner, ResidualEncoder, load_e4e, load_hfgi

__all__ = ["FEATURE_RES", "Inversion", "StyleHEAT", "layer_index", "load_model"]

#: The resolution of the feature StyleHEAT inverts, warps and calibrates (upstream's
#: ``warp_index = refine_index = 7``).
FEATURE_RES = 64


def layer_index(resolution: int) -> int:
    """Upstream's generator index ``i`` of the first conv of a block (64 -> 7, 128 -> 9)."""
    return 2 * int(math.log2(resolution)) - 5


@dataclass
class Inversion:
    """A source inverted as upstream's ``HFGI.inverse`` (batch 1)."""

    ix: Tensor  #: (1, 3, 256, 256) the inversion's image, clamped, in [-1, 1]
    wx: Tensor  #: (1, 18, 512) e4e W+
    fx: Tensor  #: (1, 512, 64, 64) the conditioned 64² feature
    condition: tuple[Tensor, Tensor]  #: HFGI (scale, shift), each (1, 512, 64, 64)


def _to256(x: Tensor) -> Tensor:
    return F.interpolate(x, size=(256, 256), mode="bilinear", align_corners=False)


class StyleHEAT(nn.Module):
    """The networks of StyleHEAT's video re-enactment (module docstring).

    Args:
        e4e, aligner, encoder: the inversion (``Encoder_e4e.pth``, ``hfgi.pth``).
        generator: the 1024² StyleGAN2 (``StyleGAN_e4e.pth``).
        warper, calibrator: ``net_G_ema`` of ``StyleHEAT_visual.pt``.
    """

    def __init__(
        self,
        e4e: E4eEncoder,
        aligner: ResidualAligner,
        encoder: ResidualEncoder,
        generator: Generator,
        warper: VideoWarper,
        calibrator: CalibrationNet,
    ) -> None:
        super().__init__()
        self.e4e, self.aligner, self.encoder = e4e, aligner, encoder
        self.generator, self.warper, self.calibrator = generator, warper, calibrator

    def _synthesize(self, wx: Tensor, hook_64: object, refine: list[Tensor] | None) -> Tensor:
        """Synthesis from W+ with ``hook_64`` at 64² and the refining conditions."""

        def hook(res: int, out: Tensor) -> Tensor:
            if res == FEATURE_RES:
                out = hook_64(out)  # type: ignore[operator]
            i = layer_index(res)
            if refine is not None and FEATURE_RES <= res and i < len(refine):
                out = out * (1 + refine[i - 1]) + refine[i]
            return out

        return self.generator.synthesis(wx, noise="none", feature_hook=hook)

    @torch.no_grad()
    def invert(self, x: Tensor) -> Inversion:
        """``x``: ``(1, 3, H, W)`` in ``[-1, 1]`` (resized to 256² bilinearly, as upstream)."""
        x = _to256(x)
        wx = self.e4e(x)
        ix = _to256(self.generator.synthesis(wx, noise="none").clamp(-1, 1))
        condition = self.encoder(self.aligner(torch.cat([x - ix, ix], 1)))
        c0, c1 = condition[0], condition[1]
        kept: list[Tensor] = []

        def invert_64(out: Tensor) -> Tensor:
            out = out * (1 + c0) + c1
            kept.append(out)
            return out

        image = self._synthesize(wx, invert_64, None)
        return Inversion(_to256(image.clamp(-1, 1)), wx, kept[0], (c0, c1))

    @torch.no_grad()
    def forward(self, inv: Inversion, descriptors: Tensor) -> Tensor:
        """Render ``descriptors`` ``(B, 73, 27)`` with the inverted source: ``(B, 3, 1024,
        1024)`` in ``[-1, 1]`` (clamped)."""
        b = len(descriptors)
        ix, wx, fx = (t.expand(b, *t.shape[1:]) for t in (inv.ix, inv.wx, inv.fx))
        out = self.warper(ix, descriptors)
        flow, descriptor = out["flow_field"], out["descriptor"]
        refine = self.calibrator(warp_image(fx, flow), descriptor)

        def drive_64(feature: Tensor) -> Tensor:
            # upstream: inversion affine, then the feature is replaced by fx, then warped
            return warp_image(fx, flow)

        return self._synthesize(wx, drive_64, list(refine)).clamp(-1, 1)


def load_model(
    weights: Mapping[str, Path] | None = None, device: str | torch.device = "cpu"
) -> StyleHEAT:
    """The four StyleHEAT files (``styleheat``, ``styleheat-e4e``, ``styleheat-hfgi``,
    ``styleheat-stylegan``; ``weights`` overrides the cache), each loaded strictly, in eval
    mode on ``device``.

    Raises:
        WeightsMissing: a file is neither given nor imported.
        InputError: a file is unreadable or not in upstream's layout (names it).
    """
    e4e = load_e4e(weight_path("styleheat-e4e", weights), device)
    aligner, encoder = load_hfgi(weight_path("styleheat-hfgi", weights), device)
    sg_path = weight_path("styleheat-stylegan", weights)
    generator, _ = load_generator(sg_path, device, entry=None)
    got = (generator.size, generator.style_dim, generator.n_mlp, generator.channel_multiplier)
    if got != (1024, 512, 8, 2):
        raise InputError(
            f"{sg_path}: a Generator{got} (size, style_dim, n_mlp, channel_multiplier); "
            "StyleHEAT needs StyleGAN_e4e.pth, a Generator(1024, 512, 8, 2)"
        )
    warper, calibrator = load_styleheat(weight_path("styleheat", weights), device)
    return StyleHEAT(e4e, aligner, encoder, generator, warper, calibrator).eval()
