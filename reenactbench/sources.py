"""Choice of the source frames for the one-shot robustness protocol (design §6).

``fps-landmarks`` (default): 68-point landmarks on candidate frames (every ``stride``-th
of the evaluated frames), a pose + expression descriptor per frame
(:func:`reenactbench.faces.expression_pose_features`), then deterministic greedy
farthest-point sampling: the chosen frames are as different in head pose and expression
as the video allows. ``uniform``: evenly spaced frames (no face model needed). The
chosen indices are written to ``pairs.csv`` of the run.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from reenactbench.data.dataset import VideoRecord
from reenactbench.errors import InputError, ProtocolError
from reenactbench.video import iter_frames, probe

__all__ = ["source_chooser", "uniform_sources", "diverse_sources"]

#: Candidate frames per video examined by ``fps-landmarks`` (at most).
CANDIDATES = 100


def uniform_sources(n_frames: int, k: int) -> list[int]:
    """``k`` evenly spaced frame indices in ``[0, n_frames)``, first and last included."""
    if k > n_frames:
        raise InputError(f"cannot pick {k} source frames from {n_frames} frames")
    return [int(i) for i in np.linspace(0, n_frames - 1, k).round()]


def diverse_sources(video: VideoRecord, n_frames: int, k: int, size: int) -> list[int]:
    """``k`` frame indices among the first ``n_frames`` of ``video`` that are diverse in
    pose and expression (farthest-point sampling on landmark features), sorted.

    Raises:
        ProtocolError: the face tools are not installed.
        InputError: fewer than ``k`` frames with a detectable face.
    """
    from reenactbench.faces import (
        detect_landmarks,
        expression_pose_features,
        faces_unavailable,
        farthest_point_sampling,
    )

    why = faces_unavailable()
    if why:
        raise ProtocolError(f"source_selection fps-landmarks {why}; or use 'uniform'")
    stride = max(1, n_frames // CANDIDATES)
    index, feats = [], []
    for i, frame in enumerate(iter_frames(video.path, max_frames=n_frames, size=size)):
        if i % stride:
            continue
        lms = detect_landmarks(frame)
        if lms is not None:
            index.append(i)
            feats.append(expression_pose_features(lms))
    if len(index) < k:
        raise InputError(
            f"{video.path}: only {len(index)} frames with a detectable face, {k} sources "
            "needed; check the crop or use source_selection = 'uniform'"
        )
    chosen = farthest_point_sampling(np.stack(feats), k)
    return sorted(index[c] for c in chosen)


def source_chooser(
    selection: str, n_frames: int, size: int
) -> Callable[[VideoRecord, int], list[int]]:
    """``(video, k) -> frame indices`` for the protocol's ``source_selection``."""
    if selection == "uniform":
        return lambda video, k: uniform_sources(min(n_frames, probe(video.path).n_frames), k)
    if selection == "fps-landmarks":
        return lambda video, k: diverse_sources(video, n_frames, k, size)
    raise ProtocolError(f"unknown source_selection {selection!r}")
