"""Read and write videos and frame folders; the one antialiased resize.

A *video* is a file (.mp4, .avi, .mov, .mkv, .webm) decoded with PyAV, or a folder of
frames (``000000.png``, ``000001.png``, ... or .jpg; numbers in names compared as
numbers, gaps reported by :func:`frame_gaps`). Frames are always ``(H, W, 3) uint8`` RGB
at the boundaries. Reading streams: one decoded frame at a time, so a 500-frame 1024^2
video is never held in memory unless the caller stacks it.

Outputs written for metric parity are PNG folders (lossless); ``.mp4`` output is H.264
yuv420p for viewing only (lossy: never score from it).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from reenactbench.errors import InputError

__all__ = [
    "RESIZE_MODE",
    "VIDEO_SUFFIXES",
    "IMAGE_SUFFIXES",
    "VideoInfo",
    "check_decoded",
    "frame_files",
    "frame_gaps",
    "lossy_video",
    "is_video",
    "list_videos",
    "probe",
    "iter_frames",
    "read_frames",
    "read_image",
    "resize",
    "write_png_folder",
    "write_mp4",
    "write_video",
]

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
#: Name of the resize used for every method output and ground truth (recorded in run.json).
RESIZE_MODE = "pil-bicubic-antialias"


@dataclass(frozen=True)
class VideoInfo:
    """Size of a video: ``n_frames`` frames of ``height x width`` pixels at ``fps``."""

    path: Path
    n_frames: int
    height: int
    width: int
    fps: float


def _natural_key(path: Path) -> list[object]:
    """``frame2.png`` before ``frame10.png``: digit runs compare as numbers."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", path.name)]


def frame_files(folder: Path) -> list[Path]:
    """The frame images of a frame folder, in reading order: by name, with numbers
    compared as numbers (``1.png, 2.png, 10.png``; zero-padded names sort as before)."""
    files = [p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES]
    return sorted(files, key=_natural_key)


_NUMBERED = re.compile(r"^(.*?)(\d+)$")


def frame_gaps(files: list[Path]) -> str | None:
    """What is wrong with the numbering of a frame folder's files (in reading order), or
    ``None``: numbers that skip (frames deleted or never written) or repeat (``1.png``
    and ``01.png``). Names without a trailing number are not checked."""
    matches = [_NUMBERED.match(f.stem) for f in files]
    if not matches or any(m is None for m in matches):
        return None
    if len({m.group(1) for m in matches if m}) > 1:
        return None  # several name patterns: not one numbered sequence
    numbers = [int(m.group(2)) for m in matches if m]
    if len(set(numbers)) < len(numbers):
        dup = next(n for n in numbers if numbers.count(n) > 1)
        return f"two frame files are numbered {dup}; keep one"
    missing = sorted(set(range(numbers[0], numbers[-1] + 1)) - set(numbers))
    if not missing:
        return None
    return (
        f"frame numbers skip {len(missing)} frame(s) (first missing: {missing[0]}); the "
        "frames around a gap are read as neighbours"
    )


def is_video(path: Path) -> bool:
    """True for a video file with a known suffix or a folder holding image frames."""
    if path.is_dir():
        return any(p.suffix.lower() in IMAGE_SUFFIXES for p in path.iterdir())
    return path.is_file() and path.suffix.lower() in VIDEO_SUFFIXES


def list_videos(folder: Path) -> list[Path]:
    """Videos directly inside ``folder`` (files and frame folders), sorted by name.

    Raises:
        InputError: ``folder`` is missing, not a folder, or holds no video; a sub-folder
            is empty (a video whose frames were never written would silently drop out of
            the results). Sub-folders holding other files (``docs/``) are not videos.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder}: not a folder; pass a folder of videos or frame folders")
    entries = sorted(p for p in folder.iterdir() if not p.name.startswith("."))
    for p in entries:
        if p.is_dir() and not any(p.iterdir()):
            raise InputError(
                f"{p}: no frames (an empty frame folder); fill it, or remove it from {folder}"
            )
    videos = [p for p in entries if is_video(p)]
    if not videos:
        raise InputError(
            f"{folder}: no videos found; expected {'/'.join(VIDEO_SUFFIXES)} files "
            "or folders of PNG/JPG frames"
        )
    return videos


def read_image(path: Path) -> np.ndarray:
    """Read one RGB image as ``(H, W, 3) uint8``.

    Raises:
        InputError: unreadable file, or an image that is not 8-bit RGB (grayscale,
            RGBA, CMYK, 16-bit ...): the message says how to convert it.
    """
    path = Path(path)
    try:
        with Image.open(path) as im:
            im.load()
            mode = im.mode
            if mode != "RGB":
                raise InputError(
                    f"{path}: image mode is {mode}, not 8-bit RGB; convert it, "
                    f"e.g. PIL Image.open(...).convert('RGB').save(...)"
                )
            return np.asarray(im, dtype=np.uint8).copy()
    except FileNotFoundError:
        raise InputError(f"{path}: no such image file") from None
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        raise InputError(f"{path}: cannot read image ({e}); is it a valid PNG/JPG?") from None


def resize(frame: np.ndarray, size: int | tuple[int, int]) -> np.ndarray:
    """Antialiased bicubic resize (PIL, ``RESIZE_MODE``) of ``(H, W, 3) uint8``.

    Args:
        frame: ``(H, W, 3) uint8`` RGB.
        size: output side (square) or ``(height, width)``.

    Returns:
        ``(h, w, 3) uint8``, writable (torch warns on read-only arrays); the input
        itself when it already has that size.
    """
    h, w = (size, size) if isinstance(size, int) else size
    if frame.shape[:2] == (h, w):
        return frame
    im = Image.fromarray(frame).resize((w, h), Image.Resampling.BICUBIC, reducing_gap=None)
    return np.array(im, dtype=np.uint8)


def _decode_error(path: Path, err: Exception) -> InputError:
    return InputError(
        f"{path}: cannot decode video ({err}); re-encode it "
        f"(e.g. ffmpeg -i IN -c:v libx264 -crf 10 OUT.mp4) or export PNG frames"
    )


def _iter_file(path: Path) -> Iterator[np.ndarray]:
    import av

    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, OSError) as e:
        raise _decode_error(path, e) from None
    with container:
        if not container.streams.video:
            raise InputError(f"{path}: the file has no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        try:
            for frame in container.decode(stream):
                yield frame.to_ndarray(format="rgb24")
        except av.error.FFmpegError as e:
            raise _decode_error(path, e) from None


def _iter_folder(path: Path) -> Iterator[np.ndarray]:
    files = frame_files(path)
    first_shape: tuple[int, ...] | None = None
    for f in files:
        frame = read_image(f)
        if first_shape is None:
            first_shape = frame.shape
        elif frame.shape != first_shape:
            raise InputError(
                f"{f}: frame size {frame.shape[1]}x{frame.shape[0]} differs from the first "
                f"frame's {first_shape[1]}x{first_shape[0]}; all frames of a video must match"
            )
        yield frame


def iter_frames(
    path: Path,
    max_frames: int | None = None,
    size: int | tuple[int, int] | None = None,
    start: int = 0,
) -> Iterator[np.ndarray]:
    """Stream the frames of a video file or frame folder.

    Args:
        path: video file or frame folder.
        max_frames: stop after this many frames (``None``: all).
        size: if given, ``resize`` every frame to it.
        start: skip this many frames first.

    Yields:
        ``(H, W, 3) uint8`` RGB frames.

    Raises:
        InputError: missing, empty, corrupt or undecodable video; mixed frame sizes.
    """
    path = Path(path)
    if path.is_dir():
        source = _iter_folder(path)
    elif path.is_file():
        source = _iter_file(path)
    else:
        raise InputError(f"{path}: no such video file or frame folder")
    n = 0
    for i, frame in enumerate(source):
        if i < start:
            continue
        if max_frames is not None and n >= max_frames:
            break
        yield frame if size is None else resize(frame, size)
        n += 1
    if n == 0:
        raise InputError(
            f"{path}: the video has no frames" + (f" after frame {start}" if start else "")
        )


def read_frames(
    path: Path,
    max_frames: int | None = None,
    size: int | tuple[int, int] | None = None,
    start: int = 0,
) -> np.ndarray:
    """All (or the first ``max_frames``) frames as ``(T, H, W, 3) uint8``; see ``iter_frames``."""
    return np.stack(list(iter_frames(path, max_frames=max_frames, size=size, start=start)))


#: Codecs that store RGB frames exactly (with an RGB pixel format for h264: libx264rgb).
LOSSLESS_CODECS = ("png", "ffv1", "rawvideo", "qtrle", "utvideo", "huffyuv", "ffvhuff")


def lossy_video(path: Path) -> str | None:
    """Why the frames of ``path`` are not the frames that were encoded, or ``None``
    (a frame folder, or a lossless codec in an RGB pixel format). A YUV pixel format
    alone changes colours; lossy codecs change pixels (docs/metrics.md: never score
    from them)."""
    path = Path(path)
    if path.is_dir():
        return None
    import av

    try:
        with av.open(str(path)) as container:
            ctx = container.streams.video[0].codec_context
            codec, pix = ctx.name, ctx.pix_fmt or ""
    except (av.error.FFmpegError, IndexError, OSError):
        return None  # unreadable: reading it reports the error
    if codec in LOSSLESS_CODECS and not pix.startswith("yuv"):
        return None
    if codec == "h264" and pix in ("rgb24", "bgr24", "bgr0", "gbrp"):
        return None  # libx264rgb, lossless at qp 0 (the only way reenactbench writes it)
    return f"{codec} {pix}"


def probe(path: Path) -> VideoInfo:
    """Frame count, size and frame rate of a video, decoding it only when the container
    does not state its frame count. Frame folders report 25 fps.

    Raises:
        InputError: as ``iter_frames``.
    """
    path = Path(path)
    if path.is_dir():
        files = frame_files(path)
        if not files:
            raise InputError(f"{path}: the frame folder holds no PNG/JPG frames")
        h, w, _ = read_image(files[0]).shape
        return VideoInfo(path, len(files), h, w, 25.0)
    import av

    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise InputError(f"{path}: the file has no video stream")
            stream = container.streams.video[0]
            n, rate = stream.frames, stream.average_rate
            duration = container.duration / 1e6 if container.duration else None
            h, w = stream.codec_context.height, stream.codec_context.width
    except FileNotFoundError:  # before FFmpegError: av.error.FileNotFoundError is both
        raise InputError(f"{path}: no such video file or frame folder") from None
    except av.error.FFmpegError as e:
        raise _decode_error(path, e) from None
    fps = float(rate) if rate else 25.0
    if n <= 0 or h <= 0:
        n = 0
        for frame in iter_frames(path):
            n += 1
            h, w = frame.shape[:2]
        _check_duration(path, n, duration, fps)
    return VideoInfo(path, n, h, w, fps)


def _check_duration(path: Path, decoded: int, duration: float | None, fps: float) -> None:
    """A container that states its duration but decodes to fewer frames is truncated or
    damaged (a download cut short): reading on would score a fraction of the video."""
    if duration:
        stated = round(duration * fps)
        check_decoded(path, decoded, stated, slack=max(2, stated // 50))


def check_decoded(path: Path, decoded: int, stated: int, slack: int = 0) -> None:
    """Raise unless ``decoded`` frames (give or take ``slack``) are the ``stated`` ones.

    Raises:
        InputError: fewer frames decode than the container states.
    """
    if decoded < stated - slack:
        raise InputError(
            f"{path}: only {decoded} of the {stated} frames its container states decode; "
            "the file is truncated or damaged: download or copy it again"
        )


def write_png_folder(frames: Iterable[np.ndarray], out_dir: Path, start: int = 0) -> int:
    """Write frames losslessly as ``out_dir/000000.png``, ``000001.png``, ...

    Args:
        frames: ``(H, W, 3) uint8`` RGB frames.
        out_dir: created if missing.
        start: index of the first file name.

    Returns:
        The number of frames written.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    n = 0
    for i, frame in enumerate(frames, start=start):
        Image.fromarray(_checked(frame)).save(out_dir / f"{i:06d}.png", compress_level=1)
        n += 1
    return n


def _checked(frame: np.ndarray) -> np.ndarray:
    if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
        raise ValueError(f"frames must be (H,W,3) uint8 RGB, got {frame.shape} {frame.dtype}")
    return frame


def write_mp4(frames: Iterable[np.ndarray], path: Path, fps: float = 25.0, crf: int = 18) -> int:
    """Write an H.264 (yuv420p, lossy) mp4 for viewing. Odd sizes are padded by one pixel.

    Returns:
        The number of frames written.
    """
    from fractions import Fraction

    import av

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with av.open(str(path), mode="w") as container:
        stream = None
        for frame in frames:
            frame = _checked(frame)
            h, w = frame.shape[:2]
            if stream is None:
                stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
                stream.width, stream.height = w + w % 2, h + h % 2
                stream.pix_fmt = "yuv420p"
                stream.options = {"crf": str(crf)}
            if (h % 2) or (w % 2):
                frame = np.pad(frame, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
            n += 1
        if stream is not None:
            for packet in stream.encode():
                container.mux(packet)
    return n


def write_video(frames: Iterable[np.ndarray], out: Path, fps: float = 25.0) -> int:
    """Write to ``out``: an H.264 mp4 when it ends in ``.mp4``, else a PNG folder."""
    out = Path(out)
    if out.suffix.lower() == ".mp4":
        return write_mp4(frames, out, fps=fps)
    if out.suffix:
        raise InputError(f"{out}: output must be a folder (PNG frames) or an .mp4 file")
    return write_png_folder(frames, out)
