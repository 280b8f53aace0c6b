"""Protocol files, splits and pairings: deterministic, seeded, and validated."""

from __future__ import annotations

from pathlib import Path

import pytest

from reenactbench.data.dataset import Dataset, VideoRecord, identity_of, load_dataset
from reenactbench.errors import InputError, ProtocolError
from reenactbench.protocol import (
    Pair,
    load_protocol,
    make_pairs,
    select_videos,
    shipped_protocols,
)
from reenactbench.sources import uniform_sources
from tests.synthetic import write_folder_dataset


def _dataset(ids: dict[str, int]) -> Dataset:
    videos = [
        VideoRecord(f"{ident}_{i:03d}", ident, Path(f"/nowhere/{ident}_{i:03d}"))
        for ident, k in sorted(ids.items())
        for i in range(k)
    ]
    return Dataset(Path("/nowhere"), 256, tuple(videos))


def test_shipped_protocols_load() -> None:
    names = set(shipped_protocols())
    assert {"hdtf_same_id", "hdtf_cross_id", "hdtf_robustness"} <= names
    assert {"demo_same_id", "demo_cross_id", "demo_robustness"} <= names
    table1 = load_protocol("hdtf_same_id")
    assert (table1.kind, table1.frames, table1.max_videos, table1.resolution) == (
        "same-id",
        500,
        75,
        256,
    )
    assert table1.metrics[:5] == ("l1", "lpips", "id", "psnr", "ssim")
    table3 = load_protocol("hdtf_robustness")
    assert (table3.drivers, table3.sources) == (5, 5)


def test_bad_protocol_files(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "x"\nkind = "same-id"\nframez = 3\n')
    with pytest.raises(ProtocolError, match="unknown field.*framez"):
        load_protocol(bad)
    bad.write_text('name = "x"\nkind = "sideways"\n')
    with pytest.raises(ProtocolError, match="kind must be"):
        load_protocol(bad)
    bad.write_text("name = [")
    with pytest.raises(ProtocolError, match="invalid TOML"):
        load_protocol(bad)
    with pytest.raises(ProtocolError, match="unknown protocol 'nope'.*hdtf_same_id"):
        load_protocol("nope")


def test_identity_rule() -> None:
    assert identity_of("WRA_AdamKinzinger_000") == "WRA_AdamKinzinger"
    assert identity_of("RD_Radio1_012") == "RD_Radio1"
    assert identity_of("plain") == "plain"


def test_identity_holdout_split_is_seeded_and_disjoint() -> None:
    data = _dataset({f"id{i}": 1 + i % 3 for i in range(40)})
    proto = load_protocol("hdtf_same_id")
    test = select_videos(proto, data)
    assert [v.name for v in test] == [v.name for v in select_videos(proto, data)]
    test_ids = {v.identity for v in test}
    train_ids = {v.identity for v in data.videos} - test_ids
    assert test_ids and train_ids and not test_ids & train_ids
    # every video of a held-out identity is in the test split, about 20% of the videos
    assert {v.name for v in test} == {v.name for v in data.videos if v.identity in test_ids}
    assert 0.2 * len(data.videos) <= len(test) < 0.2 * len(data.videos) + 3
    assert len(select_videos(proto, data, max_videos=3)) == 3


def test_cross_id_pairs_are_a_seeded_derangement_across_identities() -> None:
    data = _dataset({"a": 3, "b": 3, "c": 2})
    proto = load_protocol("demo_cross_id")
    videos = select_videos(proto, data)
    pairs = make_pairs(proto, videos)
    assert pairs == make_pairs(proto, videos)
    ident = {v.name: v.identity for v in videos}
    assert sorted(p.source for p in pairs) == sorted(v.name for v in videos)  # a permutation
    assert all(ident[p.source] != ident[p.driving] for p in pairs)
    assert all(p.source_frame == 0 for p in pairs)


def test_cross_id_impossible_is_a_clear_error() -> None:
    data = _dataset({"a": 4, "b": 1})
    proto = load_protocol("demo_cross_id")
    with pytest.raises(ProtocolError, match="another identity"):
        make_pairs(proto, select_videos(proto, data))


def test_same_id_and_robustness_pairs() -> None:
    data = _dataset({"a": 3, "b": 3})
    same = load_protocol("demo_same_id")
    videos = select_videos(same, data)
    assert make_pairs(same, videos) == [Pair(v.name, v.name, 0) for v in videos]
    rob = load_protocol("demo_robustness")
    pairs = make_pairs(rob, videos, lambda v, k: uniform_sources(32, k))
    assert len(pairs) == 25
    assert [p.source_frame for p in pairs[:5]] == [0, 8, 16, 23, 31]
    assert all(p.source == p.driving for p in pairs)
    with pytest.raises(ProtocolError, match="needs 5 driving videos"):
        make_pairs(rob, videos[:4], lambda v, k: [0] * k)


def test_folder_dataset_and_mapping(tmp_path: Path) -> None:
    root = write_folder_dataset(tmp_path / "d", ["x_000", "x_001", "y_000"], n=2, size=16)
    data = load_dataset(root)
    assert [(v.name, v.identity) for v in data.videos] == [
        ("x_000", "x"),
        ("x_001", "x"),
        ("y_000", "y"),
    ]
    (root / "identities.csv").write_text("video,identity\ny_000,x\n")
    assert {v.identity for v in load_dataset(root).videos} == {"x"}
    with pytest.raises(InputError, match="data folder not found"):
        load_dataset(tmp_path / "missing")


def test_paper_column_order_of_table2() -> None:
    from reenactbench.metrics import PAPER_ORDER

    cross = load_protocol("hdtf_cross_id").metrics
    assert sorted(cross, key=PAPER_ORDER.index) == [
        "fid", "fvd", "fvd_mouth", "au_gaze_corr", "pose_corr"]  # fmt: skip
