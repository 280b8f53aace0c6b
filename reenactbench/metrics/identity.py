"""The ``id`` metric: 1 - cosine similarity of face-recognition embeddings (design §5).

Per frame, ``id = 1 - cos(e(fake), e(ref))`` where ``ref`` is the ground-truth frame
(same-id, robustness) or the job's source frame (cross-id, ``ctx.kind == "cross-id"``;
embedded once per job in ``begin``). Lower is better; 0 = same embedding.

Frames without a face (every backend; dlib's HOG detector decides):

* The reference decides which frames are scored. A reference without a face (ground
  truth, or the cross-id source, which then excludes every frame of the job) gives NaN:
  the frame is excluded and counted in ``info["no_face_ref"]``.
* A generated frame without a face whose reference has one scores **1.0**, the loss of
  orthogonal embeddings ("no face = no identity"), and is counted in
  ``info["no_face_fake"]``. A method that loses the face is maximally wrong about the
  identity; excluding such frames would drop a method's worst frames from its own
  average and reward failure.

``info`` always holds ``backend``, ``no_face_fake`` and ``no_face_ref``; tables footnote
the backend of every number (the backends' scales differ; only ``insightface`` with
buffalo_l weights and ``irse50`` are ArcFace).

Backends (``ctx.options["id_backend"]``, default ``"irse50"``):

* ``irse50``: pSp / e4e's IR-SE50 (weight ``ir-se50``, ``model_ir_se50.pth``) with pSp's
  ID-loss preprocessing: the 256x256 frame in [-1, 1], crop ``[35:223, 32:220]``, adaptive
  average pool to 112x112 (``IDLoss.extract_feats``). pSp applies it to FFHQ-aligned
  crops without any detector; our frames are FOMM-style 256x256 face crops, so the
  same fixed crop is used, and dlib's HOG detector on the whole frame only decides
  whether the frame has a face (the rule above). Needs 256x256 frames.
* ``insightface``: insightface's ArcFace R50 (weight ``arcface-r50``, buffalo_l
  ``w600k_r50.onnx``) through ``insightface.model_zoo.get_model`` (ArcFaceONNX; ONNX
  Runtime CPU, or CUDA when ``ctx.device`` is cuda and the CUDA provider is present).
  Alignment: dlib 68 landmarks of the largest face -> 5 points
  (:func:`reenactbench.faces.align.five_points`) -> ``face_align.norm_crop`` to 112x112;
  input RGB, ``(x - 127.5) / 127.5`` (the model's own mean/std as insightface reads them).
* ``dlib``: dlib's ResNet face descriptor (``dlib_face_recognition_resnet_model_v1.dat``
  from the ``[faces]`` extra; no weight file to bring), 128-d, on dlib's aligned chip:
  largest HOG face -> 5-point shape predictor -> ``dlib.get_face_chip`` (size 150,
  padding 0.25, dlib's defaults) (:mod:`reenactbench.faces.dlib_descriptor`). CPU only.
  Not ArcFace: its numbers are not comparable with the paper's ID column (different
  people are typically only 0.1-0.2 apart).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from reenactbench.errors import InputError
from reenactbench.metrics.base import JobPart, MetricContext
from reenactbench.metrics.registry import MetricSpec, register_metric

__all__ = [
    "BACKENDS",
    "DEFAULT_BACKEND",
    "WEIGHT_OF",
    "id_distance",
    "IRSE50Embedder",
    "ArcFaceEmbedder",
    "DlibEmbedder",
    "NO_FACE_LOSS",
    "IdentityEvaluator",
    "CachedEmbedder",
    "backend_of",
    "build_identity",
    "SPEC",
]

BACKENDS = ("irse50", "insightface", "dlib")
DEFAULT_BACKEND = "irse50"
#: Backend -> weight registry name (``dlib``'s model ships in the ``[faces]`` extra).
WEIGHT_OF = {"irse50": "ir-se50", "insightface": "arcface-r50"}
#: ID loss of a generated frame without a face whose reference has one (orthogonal).
NO_FACE_LOSS = 1.0

Embedder = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


def id_distance(fake: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """``1 - cos`` of matching rows.

    Args:
        fake, ref: ``(N, D)`` embeddings (any scale; NaN rows give NaN).

    Returns:
        ``(N,) float64`` in [0, 2].
    """
    a = np.asarray(fake, dtype=np.float64)
    b = np.asarray(ref, dtype=np.float64)
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return 1.0 - np.sum(a * b, axis=1)


def _check_frames(frames: np.ndarray, what: str) -> np.ndarray:
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise InputError(
            f"id: {what} must be (N,H,W,3) uint8 RGB, got {frames.shape} {frames.dtype}"
        )
    return frames


def _chunks(n: int, size: int) -> list[slice]:
    size = max(1, int(size))
    return [slice(i, min(n, i + size)) for i in range(0, n, size)]


class IRSE50Embedder:
    """pSp IR-SE50 embeddings of 256x256 frames; dlib decides which frames have a face.

    Args:
        path: ``model_ir_se50.pth``.
        device: torch device.
        batch_size: frames per network call.
    """

    backend = "irse50"

    def __init__(self, path: Path, device: str = "cpu", batch_size: int = 16) -> None:
        from reenactbench.nn.irse50 import load_irse50

        self.device = device
        self.batch_size = batch_size
        self.net = load_irse50(path, device)

    def embed(self, frames: np.ndarray) -> np.ndarray:
        """``(N, 256, 256, 3) uint8`` RGB -> ``(N, 512) float64`` (pSp crop, no detection)."""
        import torch

        from reenactbench.nn.irse50 import psp_id_input

        frames = _check_frames(frames, "frames")
        if frames.shape[1:3] != (256, 256):
            raise InputError(
                f"id (irse50 backend) needs 256x256 frames for pSp's fixed crop, got "
                f"{frames.shape[2]}x{frames.shape[1]}; evaluate at resolution 256"
            )
        out = np.empty((len(frames), 512), dtype=np.float64)
        with torch.inference_mode():
            for s in _chunks(len(frames), self.batch_size):
                x = torch.from_numpy(frames[s]).to(self.device).permute(0, 3, 1, 2).contiguous()
                x = x.float() / 127.5 - 1.0  # (B,3,256,256) float32 in [-1, 1]
                out[s] = self.net(psp_id_input(x)).double().cpu().numpy()
        return out

    def __call__(self, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(N, 256, 256, 3) uint8`` -> ``(embeddings (N, 512) float64, NaN rows where
        no face; found (N,) bool)``."""
        from reenactbench.faces import detect_faces

        frames = _check_frames(frames, "frames")
        found = np.array([bool(detect_faces(f)) for f in frames], dtype=bool)
        emb = np.full((len(frames), 512), np.nan)
        if found.any():
            emb[found] = self.embed(frames[found])
        return emb, found


def _providers(device: str) -> list[Any]:
    import onnxruntime

    if (
        device.startswith("cuda")
        and "CUDAExecutionProvider" in onnxruntime.get_available_providers()
    ):
        index = int(device.split(":")[1]) if ":" in device else 0
        return [("CUDAExecutionProvider", {"device_id": index}), "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


class ArcFaceEmbedder:
    """insightface ArcFace (ONNX) embeddings of 5-point aligned 112x112 crops.

    Args:
        path: ``w600k_r50.onnx`` (any ArcFace-style ONNX model, 112x112x3 -> D).
        device: ``"cpu"`` or ``"cuda[:i]"`` (ONNX Runtime provider; CPU if CUDA's is absent).
        batch_size: crops per ONNX Runtime call.

    Raises:
        InputError: the file is not a recognition model insightface can route.
    """

    backend = "insightface"

    def __init__(self, path: Path, device: str = "cpu", batch_size: int = 16) -> None:
        from insightface.model_zoo import get_model
        from insightface.model_zoo.arcface_onnx import ArcFaceONNX

        self.batch_size = batch_size
        try:
            model = get_model(str(path), providers=_providers(device))
        except Exception as e:  # onnxruntime cannot parse it
            raise InputError(f"{path}: cannot be loaded as an ONNX model ({e})") from None
        if not isinstance(model, ArcFaceONNX):
            raise InputError(
                f"{path}: not an insightface ArcFace recognition model (w600k_r50.onnx: "
                "1x3x112x112 -> 512)"
            )
        self.model = model
        self.size = int(model.input_size[0])

    def embed_crops(self, crops: np.ndarray) -> np.ndarray:
        """``(N, S, S, 3) uint8`` RGB aligned crops -> ``(N, D) float64`` raw embeddings.

        Same numbers as insightface's ``ArcFaceONNX.get_feat`` on the BGR crops: the model's
        ``(x - input_mean) / input_std`` on the RGB NCHW float32 blob, batched.
        """
        out = []
        for s in _chunks(len(crops), self.batch_size):
            blob = crops[s].transpose(0, 3, 1, 2).astype(np.float32)  # (B,3,S,S) RGB 0..255
            out.append(self.model.forward(blob).astype(np.float64))
        return np.concatenate(out) if out else np.zeros((0, 512))

    def crops(self, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Aligned crops ``(M, S, S, 3) uint8`` of the frames with a face and ``found (N,)``."""
        from reenactbench.faces import detect_landmarks
        from reenactbench.faces.align import arcface_crop

        frames = _check_frames(frames, "frames")
        crops, found = [], np.zeros(len(frames), dtype=bool)
        for i, frame in enumerate(frames):
            lm = detect_landmarks(frame)
            if lm is not None:
                found[i] = True
                crops.append(arcface_crop(frame, lm, self.size))
        empty = np.zeros((0, self.size, self.size, 3), np.uint8)
        return (np.stack(crops) if crops else empty), found

    def __call__(self, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(N, H, W, 3) uint8`` -> ``(embeddings (N, D) float64, NaN rows where no face;
        found (N,) bool)``."""
        crops, found = self.crops(frames)
        emb = self.embed_crops(crops)
        out = np.full((len(found), emb.shape[1] if len(emb) else 512), np.nan)
        out[found] = emb
        return out, found


class DlibEmbedder:
    """dlib's 128-d ResNet descriptors on dlib's 5-point aligned 150x150 chips
    (:mod:`reenactbench.faces.dlib_descriptor`; CPU, no weight file)."""

    backend = "dlib"

    def __call__(self, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(N, H, W, 3) uint8`` -> ``(embeddings (N, 128) float64, NaN rows where no
        face; found (N,) bool)``."""
        from reenactbench.faces.dlib_descriptor import descriptors, face_chip

        frames = _check_frames(frames, "frames")
        chips = [face_chip(f) for f in frames]
        found = np.array([c is not None for c in chips], dtype=bool)
        out = np.full((len(frames), 128), np.nan)
        if found.any():
            out[found] = descriptors([c for c in chips if c is not None])
        return out, found


class IdentityEvaluator:
    """Streams one job of the ``id`` metric (see the module doc for the no-face rule).

    Args:
        embedder: an :class:`IRSE50Embedder`, :class:`ArcFaceEmbedder` or
            :class:`DlibEmbedder` (or any ``frames -> (embeddings, found)`` callable with
            a ``backend`` attribute).
        cross_id: compare with the source frame instead of the ground truth.
    """

    def __init__(self, embedder: Embedder, cross_id: bool = False) -> None:
        self.embedder = embedder
        self.cross_id = cross_id
        self.backend = str(getattr(embedder, "backend", "custom"))
        self._values: list[np.ndarray] = []
        self._source: np.ndarray | None = None
        self._source_found = False
        self._no_face_fake = self._no_face_ref = 0

    def begin(self, source: np.ndarray) -> None:
        """``source``: ``(E, E, 3) uint8``; embedded now in cross-id."""
        self._values = []
        self._source = None
        self._source_found = False
        self._no_face_fake = self._no_face_ref = 0
        if self.cross_id:
            emb, found = self.embedder(_check_frames(np.asarray(source)[None], "source"))
            self._source, self._source_found = emb[0], bool(found[0])

    def _score(self, fake: np.ndarray, ref_emb: np.ndarray) -> np.ndarray:
        """Values of ``fake`` frames whose reference has a face (``ref_emb`` rows)."""
        emb, found = self.embedder(fake)
        values = np.full(len(fake), NO_FACE_LOSS)  # no face = no identity
        if found.any():
            values[found] = id_distance(emb[found], ref_emb[found])
        self._no_face_fake += int((~found).sum())
        return values

    def add(self, fake: np.ndarray, real: np.ndarray) -> None:
        """``fake``, ``real``: ``(B, E, E, 3) uint8`` RGB."""
        fake = _check_frames(fake, "fake frames")
        if self.cross_id:
            assert self._source is not None, "begin() was not called"
            if not self._source_found:  # faceless source: every frame is excluded
                self._values.append(np.full(len(fake), np.nan))
                self._no_face_ref += len(fake)
                return
            self._values.append(
                self._score(fake, np.broadcast_to(self._source, (len(fake), len(self._source))))
            )
            return
        real = _check_frames(real, "real frames")
        if real.shape != fake.shape:
            raise InputError(f"id: fake {fake.shape} and real {real.shape} frames differ")
        ref, ref_found = self.embedder(real)  # the reference decides which frames count
        values = np.full(len(fake), np.nan)
        if ref_found.any():
            values[ref_found] = self._score(fake[ref_found], ref[ref_found])
        self._no_face_ref += int((~ref_found).sum())
        self._values.append(values)

    def end(self) -> JobPart:
        """Per-frame values (NaN = no face in the reference; 1.0 = no face in the fake)
        and ``info``: ``{"backend", "no_face_fake", "no_face_ref"}`` (frame counts)."""
        values = np.concatenate(self._values) if self._values else np.zeros(0)
        info = {
            "backend": self.backend,
            "no_face_fake": self._no_face_fake,
            "no_face_ref": self._no_face_ref,
        }
        return JobPart(values=values, info=info)


def backend_of(ctx: MetricContext) -> str:
    """``ctx.options["id_backend"]`` or the default ``"irse50"``."""
    return str(ctx.options.get("id_backend", DEFAULT_BACKEND))


def _weights(ctx: MetricContext) -> tuple[str, ...]:
    name = WEIGHT_OF.get(backend_of(ctx))
    return (name,) if name else ()


def _packages(ctx: MetricContext) -> str | None:
    """The chosen backend's missing package, naming the extra to install, or ``None``."""
    backend = backend_of(ctx)
    if backend not in BACKENDS:
        return None  # an unknown name: reported by _check
    from reenactbench.faces import faces_unavailable

    if backend == "dlib":
        from reenactbench.faces.dlib_descriptor import descriptor_unavailable

        return descriptor_unavailable()
    reason = faces_unavailable()  # dlib decides which frames have a face
    if reason:
        return f"id_backend={backend} {reason}"
    if backend == "insightface" and not all(
        importlib.util.find_spec(m) for m in ("insightface", "onnxruntime")
    ):
        return "id_backend=insightface needs: pip install 'reenactbench[insightface]'"
    return None


def _check(ctx: MetricContext) -> str | None:
    backend = backend_of(ctx)
    if backend not in BACKENDS:
        return f"unknown id_backend {backend!r}; choose one of {', '.join(BACKENDS)}"
    if backend == "dlib":
        from reenactbench.faces.dlib_descriptor import descriptor_unavailable

        reason = descriptor_unavailable()
        return f"id (dlib backend) {reason}" if reason else None
    from reenactbench.faces import faces_unavailable

    reason = faces_unavailable()
    if reason:
        return f"face detection {reason}"
    needs = ("torch",) if backend == "irse50" else ("insightface", "onnxruntime")
    missing = [m for m in needs if importlib.util.find_spec(m) is None]
    if missing:
        return f"id ({backend} backend) needs {', '.join(missing)}: pip install {' '.join(missing)}"
    return None


class CachedEmbedder:
    """An embedder whose results are kept per distinct frame (:class:`FrameCache`): the
    driving frames recur for every method and every source of a run, and each is
    embedded once. Same numbers as ``embedder``: rows are stored in float64."""

    def __init__(self, embedder: Embedder, max_frames: int = 10_000) -> None:
        from reenactbench.metrics.framecache import FrameCache

        self.embedder = embedder
        self.backend = str(getattr(embedder, "backend", "custom"))
        self.cache = FrameCache(self._rows, max_frames=max_frames)

    def _rows(self, frames: np.ndarray) -> np.ndarray:
        emb, found = self.embedder(frames)
        return np.column_stack([np.asarray(emb, np.float64), np.asarray(found, np.float64)])

    def __call__(self, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        rows = self.cache(frames)
        return rows[:, :-1], rows[:, -1] > 0.5


def _shared_embedder(ctx: MetricContext, key: str, make: Callable[[], Embedder]) -> Embedder:
    if key not in ctx.shared:
        ctx.shared[key] = CachedEmbedder(make())
    return ctx.shared[key]


def build_identity(ctx: MetricContext) -> IdentityEvaluator:
    """The ``id`` evaluator for ``ctx``; the network is loaded once per run and shared
    through ``ctx.shared`` (call ``why_not`` first: it reports bad options and missing
    weights)."""
    from reenactbench.weights import weight_path

    backend = backend_of(ctx)
    if backend not in BACKENDS:
        raise InputError(_check(ctx) or backend)
    cross_id = ctx.kind == "cross-id"
    if backend == "dlib":  # no weight file; dlib runs on the CPU
        embedder = _shared_embedder(ctx, "id-embedder:dlib", DlibEmbedder)
        return IdentityEvaluator(embedder, cross_id=cross_id)
    path = weight_path(WEIGHT_OF[backend], ctx.weights)
    cls = IRSE50Embedder if backend == "irse50" else ArcFaceEmbedder
    embedder = _shared_embedder(
        ctx, f"id-embedder:{backend}:{path}:{ctx.device}",
        lambda: cls(path, ctx.device, ctx.batch_size),
    )  # fmt: skip
    return IdentityEvaluator(embedder, cross_id=cross_id)


SPEC = register_metric(
    MetricSpec(
        "id",
        "L_ID",
        False,
        "1 - cos",
        "frame",
        build=build_identity,
        weights=_weights,
        check=_check,
        packages=_packages,
    ),
    replace=True,
)
