"""Methods driven by Deep3DFaceRecon coefficients over PIRenderer's 27-frame window
(``pirenderer``, ``styleheat``): what they share.

A driving frame becomes a ``(260,)`` row (257 coefficients + crop ``[s, tx, ty]``) from
:func:`reenactbench.faces.deep3d.extract_coeffs` on its 68 landmarks (a ``<frame>.txt``
sidecar, else dlib), or a row of a ``--driving-coeffs`` file; frame ``i`` is rendered from
the ``(73, 27)`` descriptor of rows ``i-13 .. i+13`` (``descriptor.py``).

Streaming: only rows are buffered (never frames). Frame ``i`` is rendered once frame
``i+13`` has been read (or the clip ended). Driving frames are read ``batch_size`` at a
time, so :class:`CoeffDrivenMethod` reads at most ``13 + batch_size - 1`` frames ahead of
the frame it yields (exactly 13 with ``batch_size=1``). With ``crop_norm`` (PIRenderer's
cross-id) every driving row is needed first: all frames are read (rows kept, 260 floats a
frame) before the first frame is yielded.

Rows of detected frames are kept per distinct frame (:class:`FrameCache`) for the whole
command, and across commands in the folder ``run`` gives through the ``set_cache_dir``
hook (docs/adapters.md).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from reenactbench.batching import batched
from reenactbench.errors import InputError, MethodError
from reenactbench.faces import detect_landmarks, faces_unavailable
from reenactbench.faces.deep3d import extract_coeffs, load_recon_net
from reenactbench.faces.sidecar import SidecarInputs
from reenactbench.metrics.framecache import FrameCache
from reenactbench.nn.precision import autocast, check_dtype
from reenactbench.weights import weight_path

from .descriptor import SEMANTIC_RADIUS, descriptor, find_crop_norm_ratio

__all__ = ["COEFF_RES", "CoeffDrivenMethod", "landmarks_68", "read_rows"]

_R = SEMANTIC_RADIUS
#: The frame size coefficients are extracted at (upstream reads videos at 256).
COEFF_RES = 256


def landmarks_68(frame: np.ndarray) -> np.ndarray | None:
    """``(68, 2) float32`` dlib landmarks of the largest face (upsampled retry for small
    faces), or ``None``."""
    lm = detect_landmarks(frame)
    if lm is None:
        lm = detect_landmarks(frame, upsample=1)
    return None if lm is None else np.asarray(lm, np.float32)


def read_rows(path: Path) -> tuple[np.ndarray, Path]:
    """``(T, 260) float32`` driving rows (257 coefficients + crop ``[s, tx, ty]``, the
    layout of upstream's lmdb and of :func:`~reenactbench.faces.deep3d.extract_coeffs`)
    from a ``.npy`` file, and the path.

    Raises:
        InputError: unreadable, not a (T, 260) array of finite numbers (names the file).
    """
    try:
        rows = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise InputError(f"{path}: cannot read coefficients ({e}); give a .npy array") from None
    if rows.ndim != 2 or rows.shape[1] != 260 or not len(rows):
        raise InputError(
            f"{path}: coefficients of shape {rows.shape}; need (T, 260): 257 Deep3DFaceRecon "
            "coefficients + crop s, tx, ty per driving frame"
        )
    if not np.issubdtype(rows.dtype, np.number) or not np.isfinite(rows).all():
        raise InputError(f"{path}: coefficients must be finite numbers")
    return rows.astype(np.float32), path


class CoeffDrivenMethod(SidecarInputs, ABC):
    """Base of the coefficient-driven adapters. A subclass sets ``name``, ``resolution``
    (of its output), ``weights`` (its own plus ``deep3d-recon``) and implements
    :meth:`prepare_source` and :meth:`render`. Frames come in at :data:`COEFF_RES` (the
    class's ``input_resolution``, or its ``resolution`` when that is 256), where
    coefficients are extracted.

    Args:
        device: torch device.
        weights: weight name -> file overrides.
        batch_size: frames per coefficient extraction and per rendering pass (speed only).
        dtype: network precision, ``fp32``, ``bf16`` or ``fp16`` (autocast).
        driving_coeffs: a ``.npy`` file of ``(T, 260)`` driving rows (:func:`read_rows`)
            used instead of extracting them (``reenact --driving-coeffs FILE``).
        crop_norm: PIRenderer's cross-id crop-scale normalisation (module docstring).
    """

    name: ClassVar[str]
    resolution: int
    input_resolution: int = COEFF_RES
    weights: ClassVar[tuple[str, ...]]

    def __init__(
        self,
        device: str,
        weights: Mapping[str, Path] | None,
        batch_size: int,
        dtype: str,
        driving_coeffs: str | None,
        crop_norm: bool = False,
    ) -> None:
        if not isinstance(batch_size, int) or batch_size < 1:
            raise MethodError(f"method {self.name!r}: batch_size must be >= 1, got {batch_size}")
        if not isinstance(crop_norm, bool):  # the CLI turns true/false into booleans
            raise MethodError(
                f"method {self.name!r}: crop_norm must be true or false, got {crop_norm!r}"
            )
        self.device, self.batch_size, self.crop_norm = torch.device(device), batch_size, crop_norm
        self.dtype = check_dtype(dtype, f"method {self.name!r}")
        self._detected = FrameCache(lambda f: self._extract(f, [None] * len(f)), 20_000)
        self.given_rows = None if driving_coeffs is None else read_rows(Path(driving_coeffs))
        self.recon = load_recon_net(weight_path("deep3d-recon", weights), self.device)

    @classmethod
    def unavailable(cls) -> str | None:
        """Why this method cannot run here (dlib or its landmark model missing), or None."""
        return faces_unavailable()

    # ------------------------------------------------------------- the optional hooks
    def set_cache_dir(self, folder: Path) -> None:
        """Keep the rows of detected frames in ``folder`` (docs/adapters.md; ``run`` passes
        a folder of its run directory keyed by this method's config): a later command on
        the same frames reads them instead of extracting. One shard per job."""
        self._detected.persist(folder)

    # ------------------------------------------------------------------ subclass API
    @abstractmethod
    def prepare_source(self, source: np.ndarray) -> Any:
        """What :meth:`render` needs of the ``(256, 256, 3)`` source."""

    @abstractmethod
    def render(self, state: Any, desc: list[np.ndarray]) -> np.ndarray:
        """``(B, resolution, resolution, 3) uint8`` frames of ``(73, 27)`` descriptors."""

    # ------------------------------------------------------------------------ rows
    def check(self, frame: np.ndarray, what: str) -> np.ndarray:
        r = self.input_resolution
        frame = np.asarray(frame)
        if frame.shape != (r, r, 3) or frame.dtype != np.uint8:
            raise InputError(
                f"{self.name}: {what} is {frame.shape} {frame.dtype}; need ({r}, {r}, 3) "
                "uint8 RGB (resize with reenactbench.video.resize)"
            )
        return frame

    def rows(self, frames: np.ndarray, first_index: int = 0, what: str = "driving") -> np.ndarray:
        """``(N, 260) float32`` rows of ``(N, 256, 256, 3)`` frames; for driving frames, the
        rows of ``driving_coeffs`` when given (no extraction).

        Raises:
            InputError: a frame without a face the 68-point detector finds (names its index);
                a ``driving_coeffs`` file with fewer rows than driving frames.
        """
        if what == "driving" and self.given_rows is not None:
            rows, path = self.given_rows
            if first_index + len(frames) > len(rows):
                raise InputError(
                    f"{path}: {len(rows)} coefficient rows, but the driving video has more "
                    f"frames (frame {first_index + len(frames) - 1}); give one row per frame"
                )
            return rows[first_index : first_index + len(frames)]
        given = [self.given_landmarks(first_index + k if what == "driving" else None, COEFF_RES)
                 for k in range(len(frames))]  # fmt: skip
        if all(lm is None for lm in given):  # detected: the same frame gives the same row
            rows = self._detected(np.asarray(frames)).astype(np.float32)
        else:
            rows = self._extract(np.asarray(frames), given)
        for k in np.flatnonzero(np.isnan(rows).any(axis=1)):
            where = f"frame {first_index + k}" if what == "driving" else "frame"
            raise InputError(
                f"{self.name}: {what} {where} has no face the dlib 68-point detector finds"
            )
        return rows

    def _extract(self, frames: np.ndarray, given: list[np.ndarray | None]) -> np.ndarray:
        """Rows of ``frames``: given landmarks, else detected ones; a NaN row where
        neither gives a face."""
        lms = [landmarks_68(f) if lm is None else lm for f, lm in zip(frames, given, strict=True)]
        rows = np.full((len(frames), 260), np.nan, np.float32)
        ok = [k for k, lm in enumerate(lms) if lm is not None]
        if ok:
            with autocast(self.device, self.dtype):
                coeffs, crop = extract_coeffs(
                    frames[ok], np.stack([lms[k] for k in ok]), net=self.recon,
                    batch_size=self.batch_size,
                )  # fmt: skip
            rows[ok] = np.concatenate([coeffs, crop], 1)
        return rows

    # --------------------------------------------------------------------- reenact
    def reenact(self, source: np.ndarray, driving: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        """Animate ``source`` with the coefficients of ``driving``.

        Args:
            source: ``(256, 256, 3) uint8`` RGB (``input_resolution``).
            driving: frames of the same shape, streamed.

        Yields:
            ``(resolution, resolution, 3) uint8`` RGB, one per driving frame.
        """
        try:
            yield from self._reenact(source, driving)
        finally:  # rows extracted so far are valid even when the job stops
            self._detected.flush()

    def _reenact(self, source: np.ndarray, driving: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        source = self.check(source, "source")
        src_rows = self.rows(source[None], what="source")
        state = self.prepare_source(source)
        chunks = (
            np.stack([self.check(f, "driving frame") for f in c])
            for c in batched(driving, self.batch_size)
        )
        if self.crop_norm:
            rows_all: list[np.ndarray] = []
            for chunk in chunks:
                rows_all.append(self.rows(chunk, sum(map(len, rows_all))))
            if not rows_all:
                return
            rows = np.concatenate(rows_all)
            ratio = find_crop_norm_ratio(src_rows, rows)
            for lo in range(0, len(rows), self.batch_size):
                idx = range(lo, min(lo + self.batch_size, len(rows)))
                yield from self.render(state, [descriptor(rows, i, ratio) for i in idx])
            return
        yield from self._stream(state, chunks)

    def _stream(self, state: Any, chunks: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
        """Keep rows ``next-13 .. read-1`` only; render frame ``i`` once frame ``i+13`` is
        read, or at the end of the clip."""
        window: deque[np.ndarray] = deque()  # rows of frames base .. read-1
        base = read = nxt = 0  # first row held, frames read, next frame to yield

        def ready(upto: int) -> Iterator[np.ndarray]:
            nonlocal nxt, base
            while nxt < upto:
                idx = range(nxt, min(nxt + self.batch_size, upto))
                desc = []
                for i in idx:
                    lo, hi = max(0, i - _R), min(read, i + _R + 1)
                    sub = np.stack([window[j - base] for j in range(lo, hi)])
                    desc.append(descriptor(sub, i - lo))
                yield from self.render(state, desc)
                nxt = idx[-1] + 1
                while base < nxt - _R:  # rows no window needs any more
                    window.popleft()
                    base += 1

        for chunk in chunks:
            window.extend(self.rows(chunk, read))
            read += len(chunk)
            yield from ready(read - _R)
        yield from ready(read)
