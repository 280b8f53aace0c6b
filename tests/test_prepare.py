from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from reenactbench.data.prepare import (
    MANIFEST_COLUMNS,
    check_resolutions,
    prepare_clip,
    prepare_videos,
    square_crop_box,
)
from reenactbench.errors import InputError
from reenactbench.video import read_frames, read_image, write_mp4, write_png_folder


def _rows(path: Path) -> dict[str, dict[str, str]]:
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        assert tuple(reader.fieldnames or ()) == MANIFEST_COLUMNS
        return {r["video"]: r for r in reader}


@pytest.fixture(scope="module")
def raw_dir(feat_video, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two short real clips (man: 12 frames, woman: 10), a corrupt file, a faceless one."""
    raw = tmp_path_factory.mktemp("raw")
    write_mp4(read_frames(feat_video("single_face.mp4"), max_frames=12), raw / "man_000.mp4")
    woman = read_frames(feat_video("WolfgangLanger_Pexels.mp4"), max_frames=10, start=200)
    write_mp4(woman, raw / "WRA_Woman_007.mp4")
    (raw / "broken_000.mp4").write_bytes(b"\x00not a video\x00" * 64)
    noise = np.random.default_rng(0).integers(0, 256, (3, 96, 128, 3), dtype=np.uint8)
    write_png_folder(noise, raw / "noise_000")  # a frame folder without a face
    return raw


def test_square_crop_box_rules() -> None:
    # a 100x80 box, margin 0.1 of the larger side -> 120 square around its centre
    assert square_crop_box([(100, 100, 200, 180)], 480, 640, 0.1) == (90, 80, 210, 200)
    # union of boxes
    assert square_crop_box([(100, 100, 150, 150), (150, 150, 200, 200)], 480, 640, 0.0) == (
        100,
        100,
        200,
        200,
    )
    # shifted inside the frame
    assert square_crop_box([(0, 0, 50, 50)], 480, 640, 0.5) == (0, 0, 100, 100)
    assert square_crop_box([(600, 430, 640, 480)], 480, 640, 0.5) == (540, 380, 640, 480)
    # too big: shrunk to the frame's shorter side
    x0, y0, x1, y1 = square_crop_box([(100, 50, 500, 450)], 480, 640, 0.4)
    assert (y0, y1) == (0, 480) and x1 - x0 == 480 and 0 <= x0 and x1 <= 640
    with pytest.raises(ValueError):
        square_crop_box([], 480, 640)


@pytest.mark.parametrize("bad", [(), (0,), (-256,), (256.0,), (True,), ("256",)])
def test_bad_resolutions(bad: tuple) -> None:
    with pytest.raises(InputError, match="resolution"):
        check_resolutions(bad)


def test_resolutions_sorted_unique() -> None:
    assert check_resolutions([1024, 256, 256]) == (256, 1024)


def test_raw_dir_without_videos(tmp_path: Path) -> None:
    (tmp_path / "raw").mkdir()
    (tmp_path / "raw" / "notes.txt").write_text("x")
    with pytest.raises(InputError, match="no videos"):
        prepare_videos(tmp_path / "raw", tmp_path / "out")


@pytest.mark.faces
def test_prepare_clip_without_face_fails(synthetic_video, tmp_path: Path) -> None:
    frames = read_frames(synthetic_video("noise", n=4))
    with pytest.raises(InputError, match="noise: no face"):
        prepare_clip(frames, "noise", tmp_path / "out")


@pytest.mark.faces
@pytest.mark.slow
def test_prepare_layout_skip_and_resume(raw_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "data"
    seen: list[tuple[str, int, int]] = []
    result = prepare_videos(raw_dir, out, max_frames=8, on_progress=lambda *a: seen.append(a))
    assert result.manifest == out / "manifest.csv"
    assert sorted(result.prepared) == ["WRA_Woman_007", "man_000"]
    assert sorted(result.skipped) == ["broken_000", "noise_000"]
    assert "cannot decode" in result.skipped["broken_000"]
    assert "no face" in result.skipped["noise_000"]
    assert [s[1:] for s in seen] == [(1, 4), (2, 4), (3, 4), (4, 4)]

    rows = _rows(out / "manifest.csv")
    assert sorted(rows) == ["WRA_Woman_007", "man_000"]
    man = rows["man_000"]
    assert man["identity"] == "man" and rows["WRA_Woman_007"]["identity"] == "WRA_Woman"
    assert man["n_frames"] == "8" and man["source"] == "man_000.mp4"
    assert float(man["fps"]) == pytest.approx(25.0)
    x0, y0, x1, y1 = map(int, man["box"].split())
    assert x1 - x0 == y1 - y0 > 0 and 0 <= x0 and 0 <= y0 and x1 <= 640 and y1 <= 360
    assert x0 < 214 and x1 > 393 and y0 < 114 and y1 > 293  # holds the whole face box
    with (out / "skipped.csv").open(newline="") as f:
        skipped = list(csv.DictReader(f))
    assert [r["video"] for r in skipped] == ["broken_000", "noise_000"]
    assert not (out / "256" / "noise_000").exists()

    folder = out / "256" / "man_000"
    files = sorted(folder.iterdir())
    assert [p.name for p in files] == [f"{i:06d}.png" for i in range(8)]
    assert read_image(files[0]).shape == (256, 256, 3)
    assert not (out / "1024").exists()

    # resume: finished videos are not rewritten
    mtimes = {p: p.stat().st_mtime_ns for p in files}
    again = prepare_videos(raw_dir, out, max_frames=8)
    assert sorted(again.prepared) == ["WRA_Woman_007", "man_000"]
    assert {p: p.stat().st_mtime_ns for p in files} == mtimes
    assert _rows(out / "manifest.csv") == rows


@pytest.mark.faces
@pytest.mark.slow
def test_prepare_1024_and_identity_mapping(raw_dir: Path, tmp_path: Path) -> None:
    mapping = tmp_path / "ids.csv"
    mapping.write_text("video,identity\nman_000,person_a\n")
    out = tmp_path / "data"
    prepare_videos(raw_dir, out, resolutions=(256, 1024), max_frames=3, identities=mapping)
    rows = _rows(out / "manifest.csv")
    assert rows["man_000"]["identity"] == "person_a"
    assert rows["WRA_Woman_007"]["identity"] == "WRA_Woman"  # not in the mapping: name rule
    for video in rows:
        big = read_image(out / "1024" / video / "000002.png")
        small = read_image(out / "256" / video / "000002.png")
        assert big.shape == (1024, 1024, 3) and small.shape == (256, 256, 3)
        # same crop at both sizes
        down = np.asarray(big, np.float64).reshape(256, 4, 256, 4, 3).mean(axis=(1, 3))
        assert np.abs(down - small).mean() < 6


def test_bad_identity_file(raw_dir: Path, tmp_path: Path) -> None:
    bad = tmp_path / "ids.csv"
    bad.write_text("name,person\nman_000,a\n")
    with pytest.raises(InputError, match="video,identity"):
        prepare_videos(raw_dir, tmp_path / "out", identities=bad)
    with pytest.raises(InputError, match="not found"):
        prepare_videos(raw_dir, tmp_path / "out", identities=tmp_path / "missing.csv")


def test_bad_max_frames(raw_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="max_frames"):
        prepare_videos(raw_dir, tmp_path / "out", max_frames=0)


# ------------------------------------------------------------------ CelebV-HQ
def _celebvhq_json(clips: dict[str, str]) -> dict:
    """A CelebV-HQ-shaped annotation object: clip id -> ytb_id (other fields as released)."""
    box = {"top": 10, "bottom": 200, "left": 20, "right": 210}
    return {
        "meta_info": {"appearance_mapping": [], "action_mapping": []},
        "clips": {
            cid: {
                "ytb_id": ytb,
                "duration": {"start_sec": 1.0, "end_sec": 3.5},
                "bbox": box,
                "attributes": {"appearance": [], "action": [], "emotion": {}},
                "version": "v0.1",
            }
            for cid, ytb in clips.items()
        },
    }


@pytest.mark.faces
def test_prepare_celebvhq(raw_dir: Path, tmp_path: Path) -> None:
    import json
    import shutil

    from typer.testing import CliRunner

    from reenactbench.cli import app
    from reenactbench.data.celebvhq import prepare_celebvhq
    from reenactbench.data.dataset import load_dataset

    raw = tmp_path / "clips"
    raw.mkdir()
    shutil.copy(raw_dir / "man_000.mp4", raw / "-aB3_x9_0.mp4")  # ids may start with '-'
    shutil.copy(raw_dir / "WRA_Woman_007.mp4", raw / "clip_b.mp4")  # not the naming rule
    shutil.copy(raw_dir / "man_000.mp4", raw / "unlisted_0.mp4")
    info = tmp_path / "celebvhq_info.json"
    clips = {"-aB3_x9_0": "-aB3_x9", "clip_b": "Qz81LmN", "gone_1": "gone"}
    info.write_text(json.dumps(_celebvhq_json(clips)))

    done = prepare_celebvhq(raw, info, tmp_path / "out", max_frames=6)
    assert sorted(done.prepare.prepared) == ["-aB3_x9_0", "clip_b"]
    assert done.missing == ["gone_1"] and done.unlisted == ["unlisted_0"]
    rows = _rows(tmp_path / "out" / "manifest.csv")
    assert {v: r["identity"] for v, r in rows.items()} == {
        "-aB3_x9_0": "-aB3_x9",
        "clip_b": "Qz81LmN",
    }
    assert all(r["n_frames"] == "6" for r in rows.values())
    data = load_dataset(tmp_path / "out")  # the same prepared layout as `prepare hdtf`
    assert [v.identity for v in data.videos] == ["-aB3_x9", "Qz81LmN"]

    result = CliRunner().invoke(
        app,
        ["--quiet", "prepare", "celebvhq", "--raw", str(raw), "--annotations", str(info),
         "--out", str(tmp_path / "out"), "--max-frames", "6"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "skipped: 1 annotated clips not in" in result.output
    assert "ignored: 1 videos of" in result.output
    assert "2 clips prepared" in result.output


def test_prepare_celebvhq_bad_annotations(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from reenactbench.cli import app
    from reenactbench.data.celebvhq import read_celebvhq_identities

    raw = tmp_path / "clips"
    write_png_folder(np.zeros((2, 8, 8, 3), np.uint8), raw / "a_0")
    bad = tmp_path / "info.json"
    bad.write_text('{"clips": {"a_0": {"ytb_id": "a"},}')
    args = ["prepare", "celebvhq", "--raw", str(raw), "--annotations", str(bad), "--out"]
    result = CliRunner().invoke(app, [*args, str(tmp_path / "out")])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {bad}: invalid JSON")
    for text, match in [
        ('{"meta_info": {}}', 'no "clips" object'),
        ('{"clips": {"a_0": {"duration": {}}}}', "clip 'a_0' has no \"ytb_id\""),
        ("[1, 2]", 'no "clips" object'),
    ]:
        bad.write_text(text)
        with pytest.raises(InputError, match=match):
            read_celebvhq_identities(bad)
    bad.write_text('{"clips": {"b_0": {"ytb_id": "b"}}}')
    with pytest.raises(InputError, match="none of the 1 clips"):
        from reenactbench.data.celebvhq import prepare_celebvhq

        prepare_celebvhq(raw, bad, tmp_path / "out")
