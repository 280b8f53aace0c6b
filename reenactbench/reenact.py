"""Re-enact one source image with one driving video (``reenactbench reenact``)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from reenactbench.errors import InputError, MethodError
from reenactbench.job import announce_inputs
from reenactbench.methods import (
    check_options,
    check_output_frame,
    input_resolution,
    load_method,
    method_class,
)
from reenactbench.video import IMAGE_SUFFIXES, iter_frames, probe, read_image, resize, write_video

__all__ = ["reenact_file"]


def reenact_file(
    method_name: str,
    source: Path,
    driving: Path,
    out: Path,
    device: str = "cpu",
    max_frames: int | None = None,
    weights: dict[str, Path] | None = None,
    on_progress: Callable[[str, int, int], None] | None = None,
    overwrite: bool = False,
    **options: Any,
) -> int:
    """Animate ``source`` (an RGB image, or a video whose first frame is used) with
    ``driving`` and write the result to ``out``: a folder of lossless PNG frames
    (``000000.png`` ...) or, for a ``.mp4`` path, an H.264 video at the driving video's
    frame rate. Frames are resized (antialiased) to the method's input resolution
    (``input_resolution``, else ``resolution``); it writes frames at ``resolution``.

    Returns:
        The number of frames written.

    Raises:
        InputError: unreadable or non-RGB source, unreadable driving video, or an output
            that exists (a non-empty folder, a file) without ``overwrite``.
        MethodError, WeightsMissing: the method cannot be loaded.
    """
    check_options(method_class(method_name), options)  # usage errors first, loading last
    out = Path(out)
    if not overwrite and (out.is_file() or (out.is_dir() and any(out.iterdir()))):
        raise InputError(
            f"--out {out}: exists and is not empty (older frames would stay beside the new "
            "ones); pass another --out, or --overwrite to replace it"
        )
    if overwrite and out.is_dir():
        import shutil

        shutil.rmtree(out)
    if Path(source).suffix.lower() in IMAGE_SUFFIXES:
        src = read_image(source)
    else:
        src = next(iter_frames(source, max_frames=1))
    info = probe(driving)
    for path, (h, w) in ((source, src.shape[:2]), (driving, (info.height, info.width))):
        if h != w:
            raise InputError(
                f"{path}: {w}x{h} is not square; methods take square face crops, and "
                "squashing would distort the face: crop it first (reenactbench prepare "
                "hdtf --raw DIR makes FOMM-style square crops)"
            )
    method = load_method(method_name, device=device, weights=weights, **options)
    announce_inputs(method, Path(source), 0, Path(driving))
    res = input_resolution(method)
    src = resize(src, res)
    total = min(info.n_frames, max_frames) if max_frames else info.n_frames

    def frames() -> Iterator[np.ndarray]:
        n = 0
        for frame in method.reenact(src, iter_frames(driving, max_frames, res)):
            n += 1
            if on_progress:
                on_progress("reenact", n, total)
            yield check_output_frame(frame, method)
        if n != total:
            raise MethodError(f"method {method.name!r} yielded {n} frames for {total} driving")

    return write_video(frames(), out, fps=info.fps)
