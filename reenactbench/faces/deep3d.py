"""Deep3DFaceRecon 3DMM coefficients: the ResNet-50 regressor of ``epoch_20.pth``.

Our own code for sicxu/Deep3DFaceRecon_pytorch's ``ReconNetWrapper("resnet50",
use_last_fc=False)`` (``models/networks.py`` at 73d491102af6731bded9ae6b3cc7466c3b2e9e48,
the commit PIRender pins), with its exact state-dict layout: ``backbone.*`` (torchvision's
ResNet-50 without ``fc``) and ``final_layers.0-6`` (1x1 convs 2048 -> 80 id, 64 exp,
80 tex, 3 angle, 27 gamma, 2 xy, 1 z). The input is the 224x224 crop of
:mod:`reenactbench.faces.deep3d_align` as RGB in [0, 1] (no mean/std normalisation).

The 257 coefficients are the network output in upstream's order, which is also the order
PIRender concatenates ``pred_coeffs_dict`` in: id 0-79, exp 80-143, tex 144-223, angle
224-226, gamma 227-253, translation 254-256.

**No Basel Face Model file is needed for extraction**: the regressor needs only
``epoch_20.pth``, and the alignment's five 3D reference points are built in
(:data:`~reenactbench.faces.deep3d_align.LM3D_STD`). BFM is needed only to render the
face, which extraction does not do.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn
from torchvision.models.resnet import Bottleneck, ResNet

from reenactbench.errors import InputError
from reenactbench.faces.deep3d_align import align
from reenactbench.nn.loading import few, safe_load

__all__ = ["COEFF_SLICES", "ReconNet", "load_recon_net", "extract_coeffs"]

WEIGHT_NAME = "deep3d-recon"
_WHAT = "Deep3DFaceRecon checkpoint (epoch_20.pth)"
_HEADS = (80, 64, 80, 3, 27, 2, 1)
COEFF_SLICES = {
    "id": slice(0, 80),
    "exp": slice(80, 144),
    "tex": slice(144, 224),
    "angle": slice(224, 227),
    "gamma": slice(227, 254),
    "trans": slice(254, 257),
}


class ReconNet(nn.Module):
    """``ReconNetWrapper('resnet50', use_last_fc=False)``: (N, 3, 224, 224) in [0, 1] ->
    (N, 257)."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone = ResNet(Bottleneck, [3, 4, 6, 3])
        del self.backbone.fc  # upstream's backbone ends at the average pool
        self.final_layers = nn.ModuleList(nn.Conv2d(2048, c, 1, bias=True) for c in _HEADS)

    def forward(self, x: Tensor) -> Tensor:
        b = self.backbone
        x = b.maxpool(b.relu(b.bn1(b.conv1(x))))
        x = b.avgpool(b.layer4(b.layer3(b.layer2(b.layer1(x)))))  # (N, 2048, 1, 1)
        return torch.flatten(torch.cat([layer(x) for layer in self.final_layers], 1), 1)


def load_recon_net(path: Path | str, device: str | torch.device = "cpu") -> ReconNet:
    """The ``net_recon`` entry of an ``epoch_20.pth``-layout checkpoint (``{"net_recon": sd,
    "opt_00": ..., "sched_00": ...}`` as upstream's ``save_networks`` writes it; the other
    entries are ignored), loaded strictly, in eval mode.

    Raises:
        InputError: unreadable file, no ``net_recon``, or missing/unexpected keys or shapes
            (one line naming the file).
    """
    path = Path(path)
    ckpt = safe_load(path, _WHAT)
    if not isinstance(ckpt, Mapping) or not isinstance(ckpt.get("net_recon"), Mapping):
        keys = sorted(map(str, ckpt)) if isinstance(ckpt, Mapping) else type(ckpt).__name__
        raise InputError(
            f"{path}: not a Deep3DFaceRecon checkpoint (needs a 'net_recon' state dict, has "
            f"{keys}); use epoch_20.pth of Deep3DFaceRecon_pytorch"
        )
    net = ReconNet()
    sd = ckpt["net_recon"]
    want, have = net.state_dict(), dict(sd)
    missing, extra = sorted(set(want) - set(have)), sorted(set(have) - set(want))
    shapes = [k for k in want if k in have and tuple(have[k].shape) != tuple(want[k].shape)]
    if missing or extra or shapes:
        what = [
            f"missing {few(missing, 3)} [{len(missing)}]" if missing else "",
            f"extra {few(extra, 3)} [{len(extra)}]" if extra else "",
            f"shape mismatch {few(shapes, 3)}" if shapes else "",
        ]
        raise InputError(
            f"{path}: 'net_recon' does not match Deep3DFaceRecon's ResNet-50 layout "
            f"({'; '.join(w for w in what if w)}); is this the resnet50 epoch_20.pth?"
        )
    net.load_state_dict(have, strict=True)
    return net.eval().to(device)


def extract_coeffs(
    images: np.ndarray,
    landmarks: np.ndarray,
    weights: Path | str | None = None,
    device: str | torch.device = "cpu",
    batch_size: int = 16,
    net: ReconNet | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Deep3DFaceRecon coefficients as PIRender's ``face_recon_videos.py`` computes them.

    Args:
        images: (N, H, W, 3) uint8 RGB frames.
        landmarks: (N, 68, 2) iBUG 68 points per frame, pixels, x right, y down (the
            ``<frame>.txt`` keypoint format of PIRender); used as float32, like upstream.
        weights: ``epoch_20.pth``; ``None`` = the registry's ``deep3d-recon`` file.
        device: where the network runs.
        batch_size: frames per forward pass (the result does not depend on it).
        net: an already loaded :class:`ReconNet` (then ``weights`` is not read).

    Returns:
        ``(coeffs, crop)``: (N, 257) float32 (id, exp, tex, angle, gamma, translation) and
        (N, 3) float32 ``[s, tx, ty]`` (PIRender's columns 257-259). No BFM file is used.

    Raises:
        InputError: wrong shapes/dtypes or a bad checkpoint.
        WeightsMissing: ``weights`` is ``None`` and the file is not imported.
    """
    images = np.asarray(images)
    landmarks = np.asarray(landmarks)
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise InputError(f"images must be (N, H, W, 3) uint8, got {images.shape} {images.dtype}")
    if landmarks.shape != (images.shape[0], 68, 2):
        raise InputError(f"landmarks must be ({images.shape[0]}, 68, 2), got {landmarks.shape}")
    if not np.isfinite(landmarks).all():
        raise InputError("landmarks contain NaN or infinite values")
    if net is None:
        if weights is None:
            from reenactbench.weights import weight_path

            weights = weight_path(WEIGHT_NAME)
        net = load_recon_net(weights, device)
    n = images.shape[0]
    crops = np.empty((n, 224, 224, 3), np.uint8)
    crop_params = np.empty((n, 3), np.float32)
    for i in range(n):
        crops[i], crop_params[i] = align(images[i], landmarks[i])
    dev = next(net.parameters()).device
    out = []
    with torch.inference_mode():
        for i in range(0, n, batch_size):
            x = torch.from_numpy((crops[i : i + batch_size] / 255.0).astype(np.float32))
            out.append(net(x.permute(0, 3, 1, 2).to(dev)).float().cpu().numpy())
    coeffs = np.concatenate(out) if out else np.zeros((0, 257), np.float32)
    return coeffs, crop_params
