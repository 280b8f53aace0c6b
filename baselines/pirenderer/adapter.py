"""``pirenderer`` method: PIRenderer vox-256 driven by Deep3DFaceRecon coefficients.

Per upstream's ``inference.py`` (RenYurui/PIRender 9e59f194, CC BY-NC 4.0): the source
image is rendered with the 73-d descriptor of each driving frame over a 27-frame window
(``descriptor.py``); rows are the 257 coefficients + crop ``[s, tx, ty]`` of
:func:`reenactbench.faces.deep3d.extract_coeffs` on the 68 dlib landmarks of each frame.

Streaming: only coefficient rows are buffered (never frames). Frame ``i`` needs rows
``i-13 .. i+13``, so it is rendered once frame ``i+13`` has been read (or the clip ended).
Driving frames are read ``batch_size`` at a time, so the adapter reads at most
``13 + batch_size - 1`` frames ahead of the frame it yields (exactly 13 with
``batch_size=1``).

Cross-id crop normalisation (``crop_norm``): upstream's ``--cross_id`` multiplies the crop
scale ``s`` of the driving rows by :func:`find_crop_norm_ratio`, which looks at *every*
driving frame. The adapter does not know the protocol, so it is an option: ``False``
(default, upstream's same-id inference) or ``True`` (upstream's cross-id; set
``--method-option pirenderer:crop_norm=true`` on cross-id runs). With ``True`` all driving
frames are read (their rows kept, ``260`` floats a frame) before the first frame is yielded.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch

from reenactbench.batching import batched
from reenactbench.errors import InputError, MethodError
from reenactbench.faces import detect_landmarks, faces_unavailable
from reenactbench.faces.deep3d import extract_coeffs, load_recon_net
from reenactbench.faces.sidecar import sidecar_landmarks
from reenactbench.metrics.framecache import FrameCache
from reenactbench.nn.precision import autocast, check_dtype
from reenactbench.weights import weight_path

from .descriptor import SEMANTIC_RADIUS, descriptor, find_crop_norm_ratio
from .model import load_pirenderer, to_input, to_uint8

__all__ = ["PIRendererMethod", "landmarks_68", "read_rows"]

_R = SEMANTIC_RADIUS


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


class PIRendererMethod:
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

    def __init__(
        self,
        device: str = "cpu",
        weights: Mapping[str, Path] | None = None,
        batch_size: int = 8,
        crop_norm: bool = False,
        dtype: str = "fp32",
        driving_coeffs: str | None = None,
    ) -> None:
        if not isinstance(batch_size, int) or batch_size < 1:
            raise MethodError(f"method {self.name!r}: batch_size must be >= 1, got {batch_size}")
        self.device, self.batch_size = torch.device(device), batch_size
        if not isinstance(crop_norm, bool):  # the CLI turns true/false into booleans
            raise MethodError(
                f"method 'pirenderer': crop_norm must be true or false, got {crop_norm!r}"
            )
        self.crop_norm = crop_norm
        self._files: tuple[Path | None, list[Path] | None] = (None, None)  # set_inputs
        # rows of detected frames, per distinct frame for the whole run: a driving video
        # recurs for every source of a robustness run and is extracted once
        self._detected = FrameCache(lambda f: self._extract(f, [None] * len(f)), 20_000)
        self.given_rows = None if driving_coeffs is None else read_rows(Path(driving_coeffs))
        self.dtype = check_dtype(dtype, f"method {self.name!r}")
        gen_path = weight_path("pirenderer-vox", weights)
        recon_path = weight_path("deep3d-recon", weights)
        self.net = load_pirenderer(gen_path, self.device)
        self.recon = load_recon_net(recon_path, self.device)

    def set_inputs(self, source: Path | None, driving: list[Path] | None) -> None:
        """The files of the next job's frames (the optional adapter hook,
        docs/adapters.md): a ``<frame>.txt`` beside a frame image holds its landmarks
        (:mod:`reenactbench.faces.sidecar`), used instead of detecting them."""
        self._files = (source, driving)

    def set_cache_dir(self, folder: Path) -> None:
        """Keep the coefficient rows of detected frames in ``folder`` (the optional hook,
        docs/adapters.md; ``run`` passes a folder of its run directory keyed by this
        method's config): a later command on the same frames reads them instead of
        extracting again. One shard of new rows is written per job."""
        self._detected.persist(folder)

    def _given_landmarks(self, index: int | None) -> np.ndarray | None:
        source, driving = self._files
        if index is None:
            return sidecar_landmarks(source, self.resolution)
        if driving is None or index >= len(driving):
            return None
        return sidecar_landmarks(driving[index], self.resolution)

    @classmethod
    def unavailable(cls) -> str | None:
        """Why this method cannot run here (dlib or its landmark model missing), or None."""
        return faces_unavailable()

    def _check(self, frame: np.ndarray, what: str) -> np.ndarray:
        r = self.resolution
        frame = np.asarray(frame)
        if frame.shape != (r, r, 3) or frame.dtype != np.uint8:
            raise InputError(
                f"pirenderer: {what} is {frame.shape} {frame.dtype}; need ({r}, {r}, 3) uint8 "
                "RGB (resize with reenactbench.video.resize)"
            )
        return frame

    def rows(self, frames: np.ndarray, first_index: int = 0, what: str = "driving") -> np.ndarray:
        """``(N, 260) float32`` rows (257 coefficients + crop) of ``(N, 256, 256, 3)`` frames;
        for driving frames, the rows of ``driving_coeffs`` when given (no extraction).

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
        given = [self._given_landmarks(first_index + k if what == "driving" else None)
                 for k in range(len(frames))]  # fmt: skip
        if all(lm is None for lm in given):  # detected: the same frame gives the same row
            rows = self._detected(np.asarray(frames)).astype(np.float32)
        else:
            rows = self._extract(np.asarray(frames), given)
        for k in np.flatnonzero(np.isnan(rows).any(axis=1)):
            where = f"frame {first_index + k}" if what == "driving" else "frame"
            raise InputError(
                f"pirenderer: {what} {where} has no face the dlib 68-point detector finds"
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

    @torch.no_grad()
    def _render(self, src: torch.Tensor, desc: list[np.ndarray]) -> np.ndarray:
        with autocast(self.device, self.dtype):
            d = torch.from_numpy(np.stack(desc)).to(self.device)
            out = self.net(src.expand(len(desc), -1, -1, -1), d)["fake_image"].float()
        return to_uint8(out)

    def reenact(self, source: np.ndarray, driving: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        """Animate ``source`` with the coefficients of ``driving``.

        Args:
            source: ``(256, 256, 3) uint8`` RGB.
            driving: ``(256, 256, 3) uint8`` RGB frames, streamed.

        Yields:
            ``(256, 256, 3) uint8`` RGB, one per driving frame.
        """
        try:
            yield from self._reenact(source, driving)
        finally:  # rows extracted so far are valid even when the job stops
            self._detected.flush()

    def _reenact(self, source: np.ndarray, driving: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        source = self._check(source, "source")
        src_rows = self.rows(source[None], what="source")
        src = to_input(source[None]).to(self.device)
        chunks = (
            np.stack([self._check(f, "driving frame") for f in c])
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
                yield from self._render(src, [descriptor(rows, i, ratio) for i in idx])
            return
        yield from self._stream(src, chunks)

    def _stream(self, src: torch.Tensor, chunks: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
        """Same-id path: keep rows ``next-13 .. read-1`` only; render frame ``i`` once frame
        ``i+13`` is read, or at the end of the clip."""
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
                yield from self._render(src, desc)
                nxt = idx[-1] + 1
                while base < nxt - _R:  # rows no window needs any more
                    window.popleft()
                    base += 1

        for chunk in chunks:
            window.extend(self.rows(chunk, read))
            read += len(chunk)
            yield from ready(read - _R)
        yield from ready(read)
