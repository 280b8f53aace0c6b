"""LPIPS: learned perceptual distance, AlexNet trunk, version 0.1 (design §5).

The network is the ``lpips`` package's ``LPIPS(net="alex", version="0.1")``; frames are
scaled to ``[-1, 1]`` as ``uint8 / 127.5 - 1`` (what ``lpips.im2tensor`` does). Its two
weight parts are loaded strictly and without any download:

* the AlexNet trunk from the ``lpips-alex`` weight, torchvision's
  ``alexnet-owt-7be5be79.pth`` (keys ``features.{0,3,6,8,10}.{weight,bias}``, plus the
  unused ``classifier.*``): ``features.N`` goes to the lpips slice that holds layer N
  (``net.slice1.0``, ``net.slice2.3``, ``net.slice3.6``, ``net.slice4.8``, ``net.slice5.10``);
* the linear heads ``lin0..lin4`` from ``lpips/weights/v0.1/alex.pth`` in the installed
  lpips wheel (found with ``importlib.resources``).

Values: one LPIPS distance per frame, ``(B,) float64``; identical frames give 0.

Wraps: richzhang/PerceptualSimilarity v0.1.4 (commit 3767a70e437c4020decf5888a83f438d2726a10f),
the ``lpips`` package, BSD-2-Clause. torch and lpips are imported only when an evaluator
is built, so importing this module is light.
"""

from __future__ import annotations

import importlib.util
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from reenactbench.errors import InputError
from reenactbench.metrics.base import FrameFnEvaluator, MetricContext
from reenactbench.metrics.pixel import check_pair
from reenactbench.metrics.registry import MetricSpec, register_metric
from reenactbench.nn.loading import safe_load

if TYPE_CHECKING:
    from torch import nn

__all__ = ["TRUNK_LAYERS", "load_lpips_alex", "lpips_distance", "LPIPSEvaluator", "build", "check"]

#: torchvision ``alexnet.features`` index of each conv layer -> lpips slice holding it.
TRUNK_LAYERS = {0: "slice1", 3: "slice2", 6: "slice3", 8: "slice4", 10: "slice5"}


def _heads_file() -> Path:
    from importlib.resources import files

    return Path(str(files("lpips") / "weights" / "v0.1" / "alex.pth"))


def _trunk_state(path: Path, state: object) -> dict[str, object]:
    """Map torchvision AlexNet keys to the lpips trunk (``net.`` module) keys, strictly."""
    if not isinstance(state, dict):
        raise InputError(
            f"{path}: expected torchvision's alexnet-owt-7be5be79.pth state dict, "
            f"got {type(state).__name__}"
        )
    wanted = {f"features.{i}.{p}" for i in TRUNK_LAYERS for p in ("weight", "bias")}
    missing = sorted(wanted - set(state))
    unexpected = sorted(k for k in state if k not in wanted and not k.startswith("classifier."))
    if missing or unexpected:
        what = f"missing {missing[:4]}" if missing else f"unexpected {unexpected[:4]}"
        raise InputError(
            f"{path}: not torchvision's AlexNet (alexnet-owt-7be5be79.pth) layout, {what}; "
            "reenactbench weights import lpips-alex FILE"
        )
    return {
        f"{TRUNK_LAYERS[i]}.{i}.{p}": state[f"features.{i}.{p}"]
        for i in TRUNK_LAYERS
        for p in ("weight", "bias")
    }


def load_lpips_alex(path: Path, device: str = "cpu") -> nn.Module:
    """``lpips.LPIPS(net="alex", version="0.1")`` with the trunk from ``path`` and the
    v0.1 heads from the lpips wheel, both loaded strictly; eval mode, on ``device``.

    Raises:
        InputError: ``path`` is not a torchvision AlexNet state dict (names the file),
            or the lpips wheel's heads file is not the expected layout.
    """
    import lpips

    with warnings.catch_warnings():
        # lpips calls torchvision's alexnet(pretrained=False): a deprecation warning only;
        # pnet_rand=True and pretrained=False mean nothing is fetched or loaded here.
        warnings.simplefilter("ignore", UserWarning)
        model = lpips.LPIPS(
            net="alex", version="0.1", pretrained=False, pnet_rand=True, verbose=False
        )
    state = safe_load(path, "lpips-alex weight file (torchvision AlexNet)")
    try:
        model.net.load_state_dict(_trunk_state(path, state), strict=True)
    except RuntimeError as e:  # shapes differ
        msg = str(e).strip().splitlines()[-1].strip()[:200]
        raise InputError(
            f"{path}: not torchvision's AlexNet weights ({msg}); "
            "reenactbench weights import lpips-alex FILE"
        ) from None
    heads_path = _heads_file()
    heads = safe_load(heads_path, "lpips v0.1 heads file")
    expected = {f"lin{k}.model.1.weight" for k in range(5)}
    if set(heads) != expected:
        raise InputError(f"{heads_path}: unexpected lpips v0.1 heads {sorted(heads)[:6]}")
    for k in range(5):
        getattr(model, f"lin{k}").load_state_dict(
            {"model.1.weight": heads[f"lin{k}.model.1.weight"]}, strict=True
        )
    return model.eval().to(device)


def lpips_distance(
    model: nn.Module, fake: np.ndarray, real: np.ndarray, device: str = "cpu", batch_size: int = 16
) -> np.ndarray:
    """Per-frame LPIPS.

    Args:
        model: from :func:`load_lpips_alex`, on ``device``.
        fake, real: ``(N, H, W, 3) uint8`` RGB of one shape.
        device: torch device of ``model``.
        batch_size: frame pairs per forward pass.

    Returns:
        ``(N,) float64`` distances (0 for identical frames).
    """
    import torch

    check_pair(fake, real)
    out = np.empty(len(fake), dtype=np.float64)

    def to_input(frames: np.ndarray) -> torch.Tensor:  # (B,3,H,W) float32 in [-1,1]
        x = torch.from_numpy(np.ascontiguousarray(frames)).to(device)
        return x.permute(0, 3, 1, 2).float() / 127.5 - 1

    with torch.inference_mode():
        for i in range(0, len(fake), batch_size):
            d = model(to_input(fake[i : i + batch_size]), to_input(real[i : i + batch_size]))
            out[i : i + len(d)] = d.reshape(-1).double().cpu().numpy()  # (B,1,1,1) -> (B,)
    return out


class LPIPSEvaluator(FrameFnEvaluator):
    """Per-frame LPIPS of a job; the network is loaded once and reused for all jobs."""

    def __init__(self, model: nn.Module, device: str = "cpu", batch_size: int = 16) -> None:
        self.model = model
        super().__init__(lambda f, r: lpips_distance(model, f, r, device, batch_size))


def check(ctx: MetricContext) -> str | None:
    """Why LPIPS cannot run here (a missing package), or ``None``."""
    for pkg in ("torch", "torchvision", "lpips"):
        if importlib.util.find_spec(pkg) is None:
            return f"package {pkg} missing (pip install torch torchvision lpips)"
    return None


def build(ctx: MetricContext) -> LPIPSEvaluator:
    """The LPIPS evaluator: loads the ``lpips-alex`` trunk once, on ``ctx.device``."""
    from reenactbench.weights import weight_path

    model = load_lpips_alex(weight_path("lpips-alex", ctx.weights), ctx.device)
    return LPIPSEvaluator(model, ctx.device, ctx.batch_size)


register_metric(
    MetricSpec(
        "lpips",
        "LPIPS",
        False,
        "AlexNet v0.1",
        "frame",
        build=build,
        weights=("lpips-alex",),
        check=check,
    ),
    replace=True,
)
