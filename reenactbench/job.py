"""One job: a method animates one source frame with one driving video; every frame it
yields is scored against the ground truth as it arrives.

The driving video is streamed once: frames go to the method at its resolution; outputs
and ground truth are resized to the protocol's evaluation resolution (``video.resize``)
and scored in batches. This module is part of the scoring code whose hash enters every
job's fingerprint (reenactbench/cache.py).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from reenactbench.data.dataset import VideoRecord
from reenactbench.errors import InputError, MethodError, ReenactbenchError
from reenactbench.methods import Method, check_output_frame, input_resolution
from reenactbench.metrics.base import JobPart
from reenactbench.protocol import Pair
from reenactbench.scoring import JobScorer
from reenactbench.video import IMAGE_SUFFIXES, frame_files, iter_frames, resize, write_png_folder

__all__ = ["JobOutput", "announce_inputs", "run_job", "read_source"]


@dataclass
class JobOutput:
    """What a job produced: the evaluators' parts, the per-pixel mean L1 map ``(E, E)
    float32`` over the scored frames (mean over channels, 0..255) and the number of
    frames generated."""

    parts: dict[str, JobPart]
    heatmap: np.ndarray
    n_frames: int


def read_source(video: VideoRecord, frame: int) -> np.ndarray:
    """Frame ``frame`` of ``video`` at its native size.

    Raises:
        InputError: the video has no such frame.
    """
    try:
        return next(iter_frames(video.path, max_frames=1, start=frame))
    except InputError:
        raise InputError(f"{video.path}: has no frame {frame} to use as source") from None


def announce_inputs(method: Method, source: Path, source_frame: int, driving: Path) -> None:
    """Tell a method that wants them (the optional ``set_inputs`` hook, docs/adapters.md)
    the image files of the source frame and of the driving frames: ``None`` for a video
    file (no per-frame files)."""
    set_inputs = getattr(method, "set_inputs", None)
    if not callable(set_inputs):
        return
    if source.is_dir():
        files = frame_files(source)
        source_file = files[source_frame] if source_frame < len(files) else None
    else:
        source_file = source if source.suffix.lower() in IMAGE_SUFFIXES else None
    set_inputs(source_file, frame_files(driving) if driving.is_dir() else None)


def _guarded(
    method: Method, pair: Pair, paths: tuple[Path, Path], frames: Iterator[np.ndarray]
) -> Iterator[np.ndarray]:
    """``frames``, with a method's own failure (an exception, ``sys.exit``) turned into a
    :class:`MethodError` naming the method and the job, and an input the method refuses
    (an :class:`InputError` such as no face in the source) naming the source file; the
    runner's finished jobs stay. ``paths``: the (source, driving) video."""
    source = paths[0]
    try:
        yield from frames
    except InputError as e:
        if str(e).startswith(tuple(str(p) for p in paths)):
            raise  # names its file already
        raise InputError(
            f"{source}: frame {pair.source_frame}: method {method.name!r} cannot use it as a "
            f"source (job {pair.key}): {e}; leave the video out or choose another source "
            "frame (finished jobs are kept)"
        ) from e
    except ReenactbenchError:
        raise
    except (Exception, SystemExit) as e:
        raise MethodError(
            f"method {method.name!r} failed on job {pair.key}: {type(e).__name__}: {e} "
            "(--debug shows the traceback; finished jobs are kept: run the command again "
            "after fixing it)"
        ) from e


def run_job(
    method: Method,
    pair: Pair,
    videos: dict[str, VideoRecord],
    eval_res: int,
    n_frames: int,
    scorer: JobScorer,
    batch_size: int,
    frame_dir: Path | None = None,
    on_frame: Callable[[], None] | None = None,
    score_source_frame: bool = False,
) -> JobOutput:
    """Run ``method`` on ``pair`` and score it.

    Args:
        eval_res: evaluation resolution E (protocol).
        n_frames: driving frames to use (the first ones); a video that decodes fewer
            is an error (a file damaged since the run checked its length).
        batch_size: frames per scoring batch.
        frame_dir: also write the generated frames there as PNG (lossless).
        on_frame: called after each generated frame (progress).
        score_source_frame: also score the driving frame that is the source (same
            video); by default frame metrics and FID leave it out (protocol field
            ``score_source_frame``): it is the method's input, not a prediction.

    Raises:
        MethodError: the method broke the adapter contract (frame count, shape, dtype).
        InputError: the driving video gave fewer than ``n_frames`` frames.
    """
    res = input_resolution(method)
    truth: deque[np.ndarray] = deque()
    path = videos[pair.driving].path

    def driving() -> Iterator[np.ndarray]:
        read = 0
        for frame in iter_frames(path, max_frames=n_frames):
            real = resize(frame, eval_res)
            # the method must never hold the array it is scored against (a method that
            # wrote into its input would change its own ground truth)
            truth.append(real.copy() if real is frame else real)
            read += 1
            yield resize(frame, res)
        if read < n_frames:
            raise InputError(
                f"{path}: decoded {read} of the {n_frames} frames the run planned; the video "
                "changed or is damaged since: restore it (finished jobs are kept)"
            )

    source = read_source(videos[pair.source], pair.source_frame)
    source_eval = resize(source, eval_res)
    source_eval = source_eval.copy() if source_eval is source else source_eval
    scorer.begin(source_eval, (method.name, pair.key, pair.driving))
    own_source = pair.source == pair.driving and not score_source_frame
    leave_out = pair.source_frame if own_source else None
    heat = np.zeros((eval_res, eval_res), dtype=np.float64)
    fakes: list[np.ndarray] = []
    reals: list[np.ndarray] = []
    n = 0

    def flush() -> None:
        if fakes:
            fake, real = np.stack(fakes), np.stack(reals)
            scorer.add(fake, real)
            per_frame = np.abs(fake.astype(np.int16) - real).mean(axis=3)
            first = n - len(fake)
            if leave_out is not None and first <= leave_out < n:
                per_frame[leave_out - first] = 0.0  # the source frame: not a prediction
            heat[...] += per_frame.sum(axis=0)
            if frame_dir is not None:
                write_png_folder(fake, frame_dir, start=n - len(fake))
            fakes.clear()
            reals.clear()

    paths = (videos[pair.source].path, path)
    announce_inputs(method, videos[pair.source].path, pair.source_frame, path)
    for out in _guarded(method, pair, paths, method.reenact(resize(source, res), driving())):
        out = check_output_frame(out, method)
        if not truth:
            raise MethodError(
                f"method {method.name!r} yielded frame {n + 1} before reading driving frame "
                f"{n + 1}; it must yield one frame per driving frame read"
            )
        fakes.append(resize(out, eval_res))
        reals.append(truth.popleft())
        n += 1
        if on_frame is not None:
            on_frame()
        if len(fakes) >= batch_size:
            flush()
    flush()
    if truth or n == 0:
        raise MethodError(f"method {method.name!r} yielded {n} frames for {n + len(truth)} driving")
    scored = n - (leave_out is not None and leave_out < n)
    heatmap = (heat / max(scored, 1)).astype(np.float32)
    return JobOutput(scorer.end(leave_out=leave_out), heatmap, n)
