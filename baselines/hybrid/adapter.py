"""Method adapters of the hybrid-latent method and its ablations (paper Tables 1-2).

=====================  ======================  ===========================================
method                 checkpoint (weight)     inference
=====================  ======================  ===========================================
``hybrid``             hybrid-hdtf             Eq. 3 + CMA per video (Sec. 3.3)
``hybrid-no-cma``      hybrid-hdtf             Eq. 3 only ("Ours w/o CMA")
``hybrid-pti``         hybrid-hdtf             Eq. 3 + PTI on the source ("Ours w/ PTI")
``hybrid-no-idreg``    hybrid-hdtf-no-idreg    as ``hybrid``; trained without Eq. 9
``hybrid-no-hybrid``   hybrid-hdtf-no-hybrid   as ``hybrid``; S_F as W+ offsets
``hybrid-sf-forward``  hybrid-hdtf-sf-forward  as ``hybrid``; S_F on the forward-order
                                               reading of "first 10 SS layers"
=====================  ======================  ===========================================

Per video: the source is encoded once (``W_ID^S``); driving frames are encoded and
rendered in batches of ``batch_size`` (``G(A(W_ID^S) + S_F^D)``). Without CMA they are
rendered as they arrive. CMA adjusts G to the latent space the driving sequence spans, so
it needs the clip first: the adapter reads the **whole** driving clip (kept at the
encoder's input size, 0.79 MB a frame at 256², 393 MB for 500 frames), CMA tunes a deep
copy of G on all of it (``[cma] frames = 0``, the default) or on ``frames`` frames evenly
spaced across it (:func:`cma_frames`), and every frame is then rendered with the tuned
copy; the loaded G is put back afterwards, so no video sees another's tuning. PTI needs
only the source. The CMA minibatches are drawn from
``torch.Generator().manual_seed(cfg.train.seed)``, fresh per video.

Frames: ``(R, R, 3) uint8`` RGB in and out, R = the checkpoint's generator size (the
class attribute ``resolution`` is the paper's 1024; an instance takes its checkpoint's
size, e.g. 64 for the tiny demo model). Output is G's image clamped to [-1, 1] and
rounded to uint8.

Edits (Eq. 4): ``edit="DIRECTION=STRENGTH"``, DIRECTION an InterFaceGAN ``.npy`` or a
GANSpace ``.npz`` (``file.npz:COMPONENT``, default component 0) read by
:mod:`reenactbench.nn.directions`; ``W_edit = STRENGTH * direction`` on its W+ rows is
added to ``W_ID^S`` for every frame.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from torch import Tensor

from reenactbench.batching import batched
from reenactbench.errors import InputError, MethodError
from reenactbench.nn.directions import apply_direction, load_direction
from reenactbench.nn.precision import autocast, check_dtype
from reenactbench.weights import weight_path

from .checkpoint import load_hybrid, read_config, training_videos
from .model import HybridModel, Latents

__all__ = [
    "HybridMethod",
    "HybridNoCMA",
    "HybridPTI",
    "HybridNoIdReg",
    "HybridNoHybrid",
    "HybridSfForward",
    "cma_frames",
    "parse_edit",
    "to_uint8",
]


def cma_frames(clip: Tensor, count: int) -> Tensor:
    """The frames of ``clip`` ``(T, ...)`` CMA adjusts to: all of them (``count`` 0 or
    >= T), else ``count`` frames evenly spaced across the clip (first and last included)."""
    n = clip.shape[0]
    if count <= 0 or count >= n:
        return clip
    idx = torch.linspace(0, n - 1, count).round().long().to(clip.device)
    return clip[idx]


def to_uint8(images: Tensor) -> np.ndarray:
    """``(B, 3, S, S)`` float about [-1, 1] -> ``(B, S, S, 3) uint8`` RGB (clamped, rounded)."""
    x = ((images.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).contiguous().cpu().numpy()


def parse_edit(text: str, model: HybridModel) -> Tensor:
    """``"DIRECTION=STRENGTH"`` -> W+ offset ``(1, n_latent, style_dim)`` (Eq. 4's W_edit).

    Raises:
        InputError: bad syntax, unreadable file, or a direction of the wrong dimension.
    """
    target, sep, strength_text = text.rpartition("=")
    try:
        strength = float(strength_text)
    except ValueError:
        strength = None
    if not sep or not target or strength is None:
        raise InputError(
            f"edit {text!r} is not DIRECTION=STRENGTH, e.g. smile.npy=1.5 or ganspace.npz:3=2"
        )
    component = 0
    stem, colon, comp = target.rpartition(":")
    if colon and stem.endswith(".npz") and comp.isdigit():
        target, component = stem, int(comp)
    path = Path(target)
    if not path.is_file():
        raise InputError(
            f"edit direction {path}: no such file (.npy InterFaceGAN or .npz GANSpace)"
        )
    direction = load_direction(path, component)
    zero = torch.zeros(1, model.n_latent, model.cfg.generator.style_dim, device=model.device)
    return apply_direction(zero, direction, strength)


class HybridMethod:
    """``hybrid``: the paper's method with CMA. See the module docstring.

    Args:
        device: torch device.
        weights: weight name -> file overrides (``hybrid-hdtf``, ``stylegan2-ffhq``,
            ``lpips-alex``).
        checkpoint: checkpoint file, overriding the method's weight.
        batch_size: driving frames encoded and rendered at once.
        cma_steps: override ``[cma] steps`` (``hybrid-pti``: ``[pti] steps``); 0 = skip.
        cma_frames: override ``[cma] frames`` (0 = the whole clip; N = N frames spread
            across it).
        cma_batch: override ``[cma] batch`` (driving frames per CMA step; a smaller batch
            needs less memory at 1024² and changes the optimisation, so the numbers).
        edit: ``"DIRECTION=STRENGTH"`` attribute edit (Eq. 4).
        dtype: inference precision, ``fp32`` (default), ``bf16`` or ``fp16`` (autocast;
            CMA / PTI tuning always runs in fp32).

    Raises:
        WeightsMissing: checkpoint, stylegan2-ffhq (if the checkpoint needs it) or
            lpips-alex (for CMA / PTI) absent.
        InputError: a malformed checkpoint, one trained for another variant, or a bad edit.
        MethodError: a bad option value.
    """

    name: ClassVar[str] = "hybrid"
    resolution: int = 1024
    weights: ClassVar[tuple[str, ...]] = ("hybrid-hdtf", "stylegan2-ffhq", "lpips-alex")
    checkpoint_weight: ClassVar[str] = "hybrid-hdtf"
    adjust: ClassVar[Literal["cma", "pti", "none"]] = "cma"
    #: config values the checkpoint must have (``section.key``: value)
    expects: ClassVar[Mapping[str, Any]] = {
        "latent.hybrid": True, "loss.idreg": True, "latent.sf_layers": "conv",
    }  # fmt: skip

    def __init__(
        self,
        device: str = "cpu",
        weights: Mapping[str, Path] | None = None,
        checkpoint: str | None = None,
        batch_size: int = 4,
        cma_steps: int | None = None,
        edit: str | None = None,
        dtype: str = "fp32",
        cma_frames: int | None = None,
        cma_batch: int | None = None,
    ) -> None:
        self.dtype = check_dtype(dtype, f"method {self.name!r}")
        if batch_size < 1:
            raise MethodError(f"method {self.name!r}: batch_size must be >= 1, got {batch_size}")
        for option, value in (("cma_steps", cma_steps), ("cma_frames", cma_frames)):
            if value is not None and (not isinstance(value, int) or value < 0):
                raise MethodError(f"method {self.name!r}: {option} must be >= 0, got {value}")
        if cma_batch is not None and (not isinstance(cma_batch, int) or cma_batch < 1):
            raise MethodError(f"method {self.name!r}: cma_batch must be >= 1, got {cma_batch}")
        self.device, self.batch_size = device, batch_size
        path = Path(checkpoint) if checkpoint else weight_path(self.checkpoint_weight, weights)
        cfg = read_config(path)  # check the variant before loading anything big
        for key, want in self.expects.items():
            section, field = key.split(".")
            got = getattr(getattr(cfg, section), field)
            if got != want:
                raise InputError(
                    f"{path}: trained with [{section}] {field} = {got}, method {self.name!r} "
                    f"needs {want}; use the checkpoint of its own variant"
                )
        self.cma_cfg = cfg.cma if cma_steps is None else replace(cfg.cma, steps=cma_steps)
        if cma_frames is not None:
            self.cma_cfg = replace(self.cma_cfg, frames=cma_frames)
        if cma_batch is not None:
            self.cma_cfg = replace(self.cma_cfg, batch=cma_batch)
        self.pti_cfg = cfg.pti if cma_steps is None else replace(cfg.pti, steps=cma_steps)
        steps = {"cma": self.cma_cfg.steps, "pti": self.pti_cfg.steps, "none": 0}[self.adjust]
        lpips_path = weight_path("lpips-alex", weights) if steps > 0 else None
        self.model = load_hybrid(path, device, (weights or {}).get("stylegan2-ffhq"))
        self.resolution = self.model.generator.size
        self._lpips: torch.nn.Module | None = None
        if lpips_path is not None:
            from reenactbench.metrics.lpips import load_lpips_alex

            self._lpips = load_lpips_alex(lpips_path, device).requires_grad_(False)
        self._edit = parse_edit(edit, self.model) if edit else None

    @classmethod
    def training_videos(
        cls, options: Mapping[str, Any], weights: Mapping[str, Path] | None = None
    ) -> frozenset[str] | None:
        """Videos the checkpoint was trained on, from its metadata only (no model is
        built); ``None`` when it does not record them. The runner's optional hook
        (reenactbench/runstate.py ``warn_trained_on_evaluated``).

        Raises:
            WeightsMissing, InputError: the checkpoint is absent or malformed.
        """
        ckpt = options.get("checkpoint")
        path = Path(ckpt) if ckpt else weight_path(cls.checkpoint_weight, weights)
        return training_videos(path)

    # --- inference ----------------------------------------------------------------------

    def _render(self, src: Latents, x: Tensor) -> np.ndarray:
        """Driving frames ``(B, 3, in, in)`` [-1, 1] -> ``(B, R, R, 3) uint8``."""
        with torch.no_grad(), autocast(self.device, self.dtype):
            drv = self.model.encode(x)
            return to_uint8(self.model.reenact(src, drv, edit=self._edit))

    def _lpips_fn(self) -> Callable[[Tensor, Tensor], Tensor]:
        if self._lpips is None:  # constructor loads it whenever CMA / PTI will run
            raise RuntimeError("LPIPS network not loaded")
        return self._lpips

    def _adjust(self, source: Tensor, head: Tensor | None) -> None:
        """Run CMA (on ``head``, the driving clip: :func:`cma_frames` of it) or PTI on
        ``model.generator``."""
        model = self.model
        if self.adjust == "cma" and head is not None and self.cma_cfg.steps > 0:
            from .cma import cyclic_manifold_adjustment

            rng = torch.Generator().manual_seed(model.cfg.train.seed)
            frames = cma_frames(head, self.cma_cfg.frames)
            cyclic_manifold_adjustment(model, source, frames, self.cma_cfg, self._lpips_fn(), rng)
        elif self.adjust == "pti" and self.pti_cfg.steps > 0:
            from .pti import pivotal_tuning

            pivotal_tuning(model, source, self.pti_cfg, self._lpips_fn())

    def reenact(self, source: np.ndarray, driving: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        """Animate ``source`` (``(R, R, 3) uint8``) with ``driving`` (``(R, R, 3) uint8``
        frames, read lazily); yields one ``(R, R, 3) uint8`` frame per driving frame."""
        model = self.model
        src_x = model.preprocess(source[None])  # (1, 3, in, in) in [-1, 1]
        with torch.no_grad():
            src = model.encode(src_x)  # once per video
        frames = iter(driving)
        head: Tensor | None = None  # the whole clip, read before CMA
        if self.adjust == "cma" and self.cma_cfg.steps > 0:
            parts = [model.preprocess(np.stack(c)) for c in batched(frames, 16)]
            head = torch.cat(parts) if parts else None
        original = model.generator
        tuned = self._lpips is not None and (self.adjust == "pti" or head is not None)
        try:
            if tuned:
                model.generator = copy.deepcopy(original)  # never tune the loaded G
                self._adjust(src_x, head)  # E is frozen: src stays valid
            if head is not None:
                for i in range(0, len(head), self.batch_size):
                    yield from self._render(src, head[i : i + self.batch_size])
            for chunk in batched(frames, self.batch_size):
                yield from self._render(src, model.preprocess(np.stack(chunk)))
        finally:
            model.generator = original


class HybridNoCMA(HybridMethod):
    """``hybrid-no-cma``: Eq. 3 without any tuning of G (ablation "w/o CMA")."""

    name = "hybrid-no-cma"
    weights = ("hybrid-hdtf", "stylegan2-ffhq")
    adjust = "none"


class HybridPTI(HybridMethod):
    """``hybrid-pti``: PTI on the source instead of CMA (ablation "w/ PTI")."""

    name = "hybrid-pti"
    adjust = "pti"


class HybridNoIdReg(HybridMethod):
    """``hybrid-no-idreg``: trained without Eq. 9 (ablation "w/o ID reg"); with CMA."""

    name = "hybrid-no-idreg"
    weights = ("hybrid-hdtf-no-idreg", "stylegan2-ffhq", "lpips-alex")
    checkpoint_weight = "hybrid-hdtf-no-idreg"
    expects = {"latent.hybrid": True, "loss.idreg": False, "latent.sf_layers": "conv"}


class HybridNoHybrid(HybridMethod):
    """``hybrid-no-hybrid``: S_F as W+ offsets (ablation "w/o Hybrid"); with CMA."""

    name = "hybrid-no-hybrid"
    weights = ("hybrid-hdtf-no-hybrid", "stylegan2-ffhq", "lpips-alex")
    checkpoint_weight = "hybrid-hdtf-no-hybrid"
    expects = {"latent.hybrid": False, "loss.idreg": True}


class HybridSfForward(HybridMethod):
    """``hybrid-sf-forward``: S_F on the *other* reading of "the first 10 SS layers" (the
    first 10 style vectors in forward order, toRGB included, up to 32²), trained with
    ``[latent] sf_layers = "forward"``; with CMA. Not a row of the paper: it compares the
    two readings (docs/hybrid.md)."""

    name = "hybrid-sf-forward"
    weights = ("hybrid-hdtf-sf-forward", "stylegan2-ffhq", "lpips-alex")
    checkpoint_weight = "hybrid-hdtf-sf-forward"
    expects = {"latent.hybrid": True, "loss.idreg": True, "latent.sf_layers": "forward"}
