"""End to end through the CLI on the real demo data: prepare, the three protocols with
the offline methods (diverse source selection included), reports, and resume."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from reenactbench.cli import app

pytestmark = pytest.mark.faces
runner = CliRunner()


def invoke(*args: object) -> object:
    result = runner.invoke(app, ["--quiet", *map(str, args)])
    assert result.exit_code == 0, (result.output, result.exception)
    return result


def _summary(run: Path) -> dict[tuple[str, str], dict[str, str]]:
    with (run / "summary.csv").open() as f:
        return {(r["method"], r["metric"]): r for r in csv.DictReader(f)}


def test_demo_protocols_end_to_end(demo_data: Path, tmp_path: Path) -> None:
    methods = ["-m", "static", "-m", "oracle", "-m", "landmark-warp"]
    same = tmp_path / "same"
    invoke(
        "run",
        "same-id",
        "--data",
        demo_data,
        "--protocol",
        "demo_same_id",
        *methods,
        "--max-frames",
        8,
        "--out",
        same,
    )
    s = _summary(same)
    assert float(s["oracle", "l1"]["value"]) == 0.0
    # the warp follows the driving motion: closer to the ground truth than the static copy
    assert float(s["landmark-warp", "l1"]["value"]) < float(s["static", "l1"]["value"])
    assert float(s["landmark-warp", "ssim"]["value"]) > float(s["static", "ssim"]["value"])
    assert s["static", "fid"]["note"].startswith("skipped:")

    rob = tmp_path / "rob"
    invoke(
        "robustness",
        "--data",
        demo_data,
        "--protocol",
        "demo_robustness",
        "--sources",
        3,
        "--drivers",
        5,
        "-m",
        "static",
        "--max-frames",
        12,
        "--out",
        rob,
    )
    with (rob / "pairs.csv").open() as f:
        pairs = list(csv.DictReader(f))
    assert len(pairs) == 15
    frames = [int(p["source_frame"]) for p in pairs[:3]]
    assert len(set(frames)) == 3 and all(0 <= f < 12 for f in frames)
    out = invoke("report", rob, "--format", "md,latex,csv", "--paper")
    assert "table3_robustness.md" in out.output
    md = (rob / "tables" / "table3_robustness.md").read_text()
    assert "static" in md and "7.5 ± 2.1" in md  # FOMM's paper LPIPS beside ours
    assert (rob / "figures" / "heatmaps_grid.png").stat().st_size > 10_000

    cross = tmp_path / "cross"
    invoke(
        "run",
        "cross-id",
        "--data",
        demo_data,
        "--protocol",
        "demo_cross_id",
        "-m",
        "landmark-warp",
        "--max-frames",
        4,
        "--out",
        cross,
    )
    with (cross / "pairs.csv").open() as f:
        pairs = list(csv.DictReader(f))
    assert all(p["source"].split("_")[0] != p["driving"].split("_")[0] for p in pairs)
    run = json.loads((cross / "run.json").read_text())
    assert run["protocol"]["kind"] == "cross-id"
    assert json.loads((cross / "history.jsonl").read_text())["finished"]


def test_resume_after_losing_results_recomputes_only_missing(
    demo_data: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    args = [
        "run",
        "same-id",
        "--data",
        demo_data,
        "--protocol",
        "demo_same_id",
        "-m",
        "landmark-warp",
        "--max-frames",
        4,
        "--out",
        out,
    ]
    invoke(*args)
    before = (out / "summary.csv").read_text()
    jobs = sorted((out / "cache" / "landmark-warp").iterdir())
    shutil.rmtree(jobs[2])  # as if the run had been killed before this job finished
    kept = (jobs[0] / "job.npz").stat().st_mtime_ns
    invoke(*args)
    assert (out / "summary.csv").read_text() == before
    assert (jobs[0] / "job.npz").stat().st_mtime_ns == kept


def test_prepare_cli(feat_video, tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    raw.mkdir()
    shutil.copy(feat_video("single_face.mp4"), raw / "WRA_Someone_000.mp4")
    (raw / "RD_Broken_001.mp4").write_bytes(b"not a video")
    out = invoke("prepare", "hdtf", "--raw", raw, "--out", tmp_path / "data", "--max-frames", 6)
    with (tmp_path / "data" / "manifest.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [(r["video"], r["identity"], r["n_frames"]) for r in rows] == [
        ("WRA_Someone_000", "WRA_Someone", "6")
    ]
    assert "RD_Broken_001" in out.stderr
    assert len(list((tmp_path / "data" / "256" / "WRA_Someone_000").glob("*.png"))) == 6


def test_bad_data_folder_is_one_line_error(tmp_path: Path) -> None:
    result = runner.invoke(
        app,
        [
            "run",
            "same-id",
            "--data",
            str(tmp_path / "nope"),
            "-m",
            "static",
            "--out",
            str(tmp_path / "o"),
        ],
    )
    assert result.exit_code == 2
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "data folder not found" in lines[0]
