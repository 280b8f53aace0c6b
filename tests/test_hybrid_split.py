"""Hybrid training data: a protocol's train split (test identities held out), test-identity
videos refused unless allowed, the video list recorded in the checkpoint, and the warning
of ``reenactbench run`` when a checkpoint was trained on a video it evaluates."""

from __future__ import annotations

import csv
import dataclasses
import shutil
from pathlib import Path

import pytest
from reenactbench.baselines.hybrid.checkpoint import (
    read_training_data,
    save_checkpoint,
    training_videos,
)
from reenactbench.baselines.hybrid.config import load_config
from reenactbench.baselines.hybrid.model import build_model
from reenactbench.baselines.hybrid.pairs import training_split
from typer.testing import CliRunner

from reenactbench.cli import app
from reenactbench.data.dataset import load_dataset
from reenactbench.errors import InputError
from reenactbench.protocol import _test_names, load_protocol, select_videos
from tests.synthetic import write_folder_dataset, write_protocol

runner = CliRunner()

#: 12 identities of 1-3 videos (HDTF-style names: identity = name without ``_<digits>``)
NAMES = [f"WRA_P{i:02d}_{k:03d}" for i in range(12) for k in range(1 + i % 3)]


@pytest.fixture(scope="module")
def folder_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_folder_dataset(tmp_path_factory.mktemp("split-data"), NAMES, n=3, size=16)


def test_train_split_is_the_complement_of_the_test_identities(folder_data: Path) -> None:
    dataset = load_dataset(folder_data)
    proto = load_protocol("hdtf_same_id")
    split = training_split(dataset, proto)
    test = set(_test_names(proto, dataset))  # the protocol's own split function
    identity = {v.name: v.identity for v in dataset.videos}
    assert test and split.videos
    assert not test & set(split.videos)
    assert test | set(split.videos) == set(NAMES)
    assert not {identity[v] for v in test} & {identity[v] for v in split.videos}
    # what the runner evaluates is inside the held-out part, whatever max_videos is
    capped = dataclasses.replace(proto, max_videos=2)
    assert {v.name for v in select_videos(capped, dataset)} <= test
    assert split.protocol == "hdtf_same_id" and split.split["split"] == "identity-holdout"
    assert split.test_identity_videos == () and not split.allow_test_identities


def test_split_file_and_all_split(folder_data: Path, tmp_path: Path) -> None:
    dataset = load_dataset(folder_data)
    (tmp_path / "test.txt").write_text("WRA_P01_000\n")  # identity P01 has two videos
    path = write_protocol(tmp_path, "same-id", split="identity-holdout", split_file="test.txt")
    split = training_split(dataset, load_protocol(path))
    assert "WRA_P01_000" not in split.videos and "WRA_P01_001" not in split.videos
    assert len(split.videos) == len(NAMES) - 2
    everything = load_protocol(write_protocol(tmp_path, "cross-id"))  # split = "all"
    with pytest.raises(InputError, match="leaves no training video"):
        training_split(dataset, everything)
    assert training_split(dataset, None).videos == tuple(sorted(NAMES))


def test_test_identity_video_is_an_error_unless_allowed(folder_data: Path) -> None:
    dataset = load_dataset(folder_data)
    proto = load_protocol("hdtf_same_id")
    test_video = _test_names(proto, dataset)[0]
    train_video = training_split(dataset, proto).videos[0]
    with pytest.raises(InputError, match=f"training video {test_video} .*allow-test-identities"):
        training_split(dataset, proto, [train_video, test_video])
    ok = training_split(dataset, proto, [train_video, test_video], allow_test_identities=True)
    assert ok.test_identity_videos == (test_video,) and ok.allow_test_identities
    assert ok.record(dataset, 1)["test_identity_videos"] == [test_video]
    with pytest.raises(InputError, match="not in"):
        training_split(dataset, proto, ["nobody_000"])


def test_cli_refuses_a_test_identity_video(folder_data: Path, tmp_path: Path) -> None:
    dataset = load_dataset(folder_data)
    test_video = _test_names(load_protocol("hdtf_same_id"), dataset)[0]
    listing = tmp_path / "videos.txt"
    listing.write_text(f"{test_video}\n")
    args = ["train", "hybrid", "--config", "tiny", "--data", str(folder_data)]
    result = runner.invoke(app, [*args, "--out", str(tmp_path / "o"), "--videos", str(listing)])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: training video " + test_video)
    assert "--allow-test-identities" in lines[0]
    assert not (tmp_path / "o").exists()


def test_checkpoint_training_data_round_trip(tmp_path: Path) -> None:
    model = build_model(load_config("tiny"))
    bare = save_checkpoint(tmp_path / "bare.pt", model)
    assert read_training_data(bare) is None and training_videos(bare) is None
    records = [{"stage": 1, "videos": ["a_000"]}, {"stage": 2, "videos": ["b_000", "c_000"]}]
    path = save_checkpoint(tmp_path / "rec.pt", model, training_data=records)
    assert read_training_data(path) == records
    assert training_videos(path) == {"a_000", "b_000", "c_000"}


# ----------------------------------------------------------- training on real faces
@pytest.fixture(scope="module")
def six_identities(demo_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo data with one identity per video (6), so a 20 % holdout leaves >= 2."""
    root = tmp_path_factory.mktemp("six-ids")
    shutil.copytree(demo_data / "256", root / "256")
    with (demo_data / "manifest.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        r["identity"] = r["video"]
    with (root / "manifest.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return root


@pytest.mark.faces
def test_training_records_its_videos_and_run_warns(six_identities: Path, tmp_path: Path) -> None:
    dataset = load_dataset(six_identities)
    proto = load_protocol("hdtf_same_id")
    test = set(_test_names(proto, dataset))
    expected = sorted(v.name for v in dataset.videos if v.name not in test)
    out = tmp_path / "train"
    base = ["train", "hybrid", "--config", "tiny", "--data", str(six_identities), "--out", str(out)]
    result = runner.invoke(app, ["--quiet", *base, "--max-iters", "1"])
    assert result.exit_code == 0, result.output
    assert "protocol hdtf_same_id's train split" in result.output
    (s1,) = read_training_data(out / "stage1.pt")
    assert s1["videos"] == expected and s1["protocol"] == "hdtf_same_id"
    assert s1["split"]["split"] == "identity-holdout" and s1["stage"] == 1
    assert s1["data_fingerprint"] == dataset.fingerprint()
    assert s1["allow_test_identities"] is False and s1["test_identity_videos"] == []

    # stage 2 on every video (--protocol none): warned, and both stages recorded
    result = runner.invoke(
        app, ["--quiet", *base, "--stage", "2", "--protocol", "none", "--max-iters", "1"]
    )
    assert result.exit_code == 0, result.output
    assert "warning: --protocol none: training uses every video" in result.output
    s1_again, s2 = read_training_data(out / "stage2.pt")
    assert s1_again == s1
    assert s2["protocol"] is None and s2["split"] == "none"
    assert s2["videos"] == sorted(v.name for v in dataset.videos)

    # run on a protocol evaluating every video: the stage-1 split alone does not warn...
    proto_file = write_protocol(
        tmp_path, "same-id", frames=3, metrics=["l1"], max_videos=6, allow_short=True
    )

    def run(ckpt: Path, where: str) -> str:
        result = runner.invoke(
            app,
            ["run", "same-id", "--data", str(six_identities), "--protocol", str(proto_file),
             "-m", "hybrid-no-cma", "--method-option", f"hybrid-no-cma:checkpoint={ckpt}",
             "--out", str(tmp_path / where)],
        )  # fmt: skip
        assert result.exit_code == 0, (result.output, result.exception)
        return result.output

    text = run(out / "stage2.pt", "run2")
    (line,) = [ln for ln in text.splitlines() if "trained on" in ln]
    assert line.startswith("warning: method hybrid-no-cma: its checkpoint was trained on 6 of")
    assert f"({', '.join(sorted(v.name for v in dataset.videos)[:3])}, ...)" in line
    text = run(out / "stage1.pt", "run1")
    (line,) = [ln for ln in text.splitlines() if "trained on" in ln]
    assert f"trained on {len(expected)} of the 6 videos evaluated" in line
    # ...and a protocol that evaluates only the held-out identities gives no warning
    (tmp_path / "p2").mkdir()
    held_out = write_protocol(
        tmp_path / "p2", "same-id", split="identity-holdout", frames=3, metrics=["l1"],
        max_videos=6, allow_short=True,
    )  # fmt: skip
    result = runner.invoke(
        app,
        ["run", "same-id", "--data", str(six_identities), "--protocol", str(held_out),
         "-m", "hybrid-no-cma", "--method-option", f"hybrid-no-cma:checkpoint={out / 'stage1.pt'}",
         "--out", str(tmp_path / "run3")],
    )  # fmt: skip
    assert result.exit_code == 0, (result.output, result.exception)
    assert "trained on" not in result.output
