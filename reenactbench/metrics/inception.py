"""The FID Inception network (pool3, 2048-d): pytorch-fid's, loaded from the local file.

pytorch-fid's ``InceptionV3([3])`` cannot be built offline: its ``fid_inception_v3()``
downloads ``pt_inception-2015-12-05-6726825d.pth`` (and ``use_fid_inception=False``
downloads torchvision's ImageNet weights instead). So :func:`fid_inception_v3` repeats
that function's assembly (torchvision's ``inception_v3`` with 1008 classes, no aux head,
pytorch-fid's ``FIDInceptionA`` / ``C`` / ``E_1`` / ``E_2`` blocks) without the download,
and :class:`FIDInception` is pytorch-fid's ``InceptionV3([3])`` built around it; the
forward pass is pytorch-fid's code. :func:`load_fid_inception` loads the local weight file
(the ``fid-inception`` weight) through :func:`~reenactbench.nn.loading.safe_load` with
``strict=True``.

Input convention (pytorch-fid ``InceptionV3(resize_input=True, normalize_input=True)``):
``(B, 3, H, W) float32`` RGB in ``[0, 1]`` (uint8 / 255), bilinearly resized to 299x299
(``align_corners=False``, no antialias), then scaled to ``[-1, 1]``.

Uses mseitzer/pytorch-fid v0.3.0 (``src/pytorch_fid/inception.py``, Apache-2.0) as a
library. torch, torchvision and pytorch-fid are imported by this module, so import it
lazily from metric code.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytorch_fid.inception as pfi
from torch import Tensor
from torchvision.models import inception_v3
from torchvision.models.inception import Inception3

from reenactbench.errors import InputError
from reenactbench.nn.loading import safe_load

__all__ = ["FIDInception", "fid_inception_v3", "load_fid_inception", "FEATURE_DIM"]

#: Size of the pool3 feature vector.
FEATURE_DIM = 2048

_BUILD_LOCK = threading.Lock()


def fid_inception_v3() -> Inception3:
    """pytorch-fid's ``fid_inception_v3()`` without its download (untrained weights)."""
    net = inception_v3(weights=None, aux_logits=False, init_weights=False, num_classes=1008)
    net.Mixed_5b = pfi.FIDInceptionA(192, pool_features=32)
    net.Mixed_5c = pfi.FIDInceptionA(256, pool_features=64)
    net.Mixed_5d = pfi.FIDInceptionA(288, pool_features=64)
    net.Mixed_6b = pfi.FIDInceptionC(768, channels_7x7=128)
    net.Mixed_6c = pfi.FIDInceptionC(768, channels_7x7=160)
    net.Mixed_6d = pfi.FIDInceptionC(768, channels_7x7=160)
    net.Mixed_6e = pfi.FIDInceptionC(768, channels_7x7=192)
    net.Mixed_7b = pfi.FIDInceptionE_1(1280)
    net.Mixed_7c = pfi.FIDInceptionE_2(2048)
    return net


class FIDInception(pfi.InceptionV3):
    """pytorch-fid's ``InceptionV3([3])`` around :func:`fid_inception_v3`, untrained.

    Its modules are registered under the names of ``fid_inception_v3()``, i.e. of the
    weight file (``Conv2d_1a_3x3.*`` ... ``Mixed_7c.*``, ``fc.*``), so ``state_dict()`` and
    ``load_state_dict()`` use the file's layout; pytorch-fid's ``blocks`` hold the same
    modules and stay out of the state dict. ``fc`` (2048 -> 1008) is never evaluated.
    """

    def __init__(self) -> None:
        net = fid_inception_v3()
        # InceptionV3.__init__ calls the module-level fid_inception_v3(), which downloads:
        # hand it ours for the duration of the call.
        with _BUILD_LOCK:
            downloading, pfi.fid_inception_v3 = pfi.fid_inception_v3, lambda: net
            try:
                super().__init__(output_blocks=[3], resize_input=True, normalize_input=True)
            finally:
                pfi.fid_inception_v3 = downloading
        blocks = self._modules.pop("blocks")
        for name, module in net.named_children():
            self.add_module(name, module)
        self.__dict__["blocks"] = blocks  # read by InceptionV3.forward, not registered

    def forward(self, x: Tensor) -> Tensor:
        """Pool3 features.

        Args:
            x: ``(B, 3, H, W) float32`` RGB in ``[0, 1]``, any H, W.

        Returns:
            ``(B, 2048) float32``.
        """
        return super().forward(x)[0].flatten(1)  # (B,2048,1,1) -> (B,2048)


def load_fid_inception(path: Path, device: str = "cpu") -> FIDInception:
    """Build :class:`FIDInception` and load ``path`` strictly, in eval mode on ``device``.

    Raises:
        InputError: the file is not a state dict of pytorch-fid's FID Inception
            (missing / unexpected keys or wrong shapes), naming the file.
    """
    net = FIDInception()
    state = safe_load(path, "fid-inception weight file")
    if not isinstance(state, dict):
        raise InputError(
            f"{path}: expected pytorch-fid's pt_inception-2015-12-05 state dict, "
            f"got {type(state).__name__}"
        )
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as e:
        first = str(e).strip().splitlines()[1:2] or [str(e)]
        raise InputError(
            f"{path}: not pytorch-fid's pt_inception-2015-12-05-6726825d.pth layout "
            f"({first[0].strip()[:200]}); reenactbench weights import fid-inception FILE"
        ) from None
    return net.eval().to(device)
