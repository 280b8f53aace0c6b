"""The runner: result files, pooled values, skips, and resume after an interruption."""

from __future__ import annotations

import csv
import json
import shutil
import textwrap
from pathlib import Path

import numpy as np
import pytest

from reenactbench.errors import InputError, MethodError
from reenactbench.metrics.pixel import l1, psnr
from reenactbench.protocol import load_protocol
from reenactbench.runner import RunOptions, run_protocol
from reenactbench.video import read_frames, resize
from tests.synthetic import read_summary as _summary
from tests.synthetic import write_folder_dataset
from tests.synthetic import write_protocol as _protocol

NAMES = ["a_000", "a_001", "b_000", "b_001", "c_000", "c_001"]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_folder_dataset(tmp_path_factory.mktemp("data"), NAMES, n=6, size=48)


def test_same_id_values_match_direct_computation(data: Path, tmp_path: Path) -> None:
    proto = load_protocol(_protocol(tmp_path, "same-id"))
    out = run_protocol(
        proto,
        RunOptions(data=data, methods=["static", "oracle"], out=tmp_path / "run", batch_size=2),
    )
    summary = _summary(out)
    # static: every frame compared with its video's first frame, both resized to 256;
    # frame 0 is the source itself and is left out (protocol score_source_frame = false)
    frames = [read_frames(data / n, max_frames=5, size=256)[1:] for n in NAMES]
    sources = [resize(read_frames(data / n, max_frames=1)[0], 256) for n in NAMES]
    expected = [l1(np.repeat(s[None], 4, axis=0), f) for s, f in zip(sources, frames, strict=True)]
    assert float(summary["static", "l1"]["value"]) == pytest.approx(np.mean(expected), rel=1e-12)
    assert float(summary["static", "l1"]["std"]) == pytest.approx(
        np.std([e.mean() for e in expected], ddof=1), rel=1e-12
    )
    assert summary["static", "l1"]["n"] == "6" and summary["static", "l1"]["n_frames"] == "30"
    assert float(summary["oracle", "l1"]["value"]) == 0.0
    assert float(summary["oracle", "ssim"]["value"]) == 1.0
    assert summary["oracle", "psnr"]["value"] == "inf"
    # a metric whose weights are missing is skipped with how to get them, never a number
    assert summary["static", "lpips"]["value"] == ""
    assert summary["static", "lpips"]["note"].startswith("skipped: weights missing: lpips-alex")
    assert "reenactbench weights import lpips-alex" in summary["static", "lpips"]["note"]
    with (out / "per_video.csv").open() as f:
        rows = [r for r in csv.DictReader(f) if r["method"] == "static" and r["metric"] == "psnr"]
    assert len(rows) == 6
    got = {r["video"]: float(r["value"]) for r in rows}
    i = NAMES.index("b_000")
    direct = psnr(np.repeat(sources[i][None], 4, axis=0), frames[i])
    assert got["b_000"] == pytest.approx(np.mean(direct), rel=1e-12)
    run = json.loads((out / "run.json").read_text())
    assert run["methods"] == ["static", "oracle"]
    assert run["setup"]["resize"] == "pil-bicubic-antialias"
    (history,) = [json.loads(line) for line in (out / "history.jsonl").read_text().splitlines()]
    assert history["finished"] and set(history["timings"]) == {"static", "oracle"}
    assert history["data"] == str(data.resolve())


def test_batch_size_does_not_change_numbers(data: Path, tmp_path: Path) -> None:
    proto = load_protocol(_protocol(tmp_path, "same-id"))
    a = run_protocol(
        proto, RunOptions(data=data, methods=["static"], out=tmp_path / "a", batch_size=1)
    )
    b = run_protocol(
        proto, RunOptions(data=data, methods=["static"], out=tmp_path / "b", batch_size=7)
    )
    assert (a / "summary.csv").read_text() == (b / "summary.csv").read_text()


def test_robustness_writes_heatmaps(data: Path, tmp_path: Path) -> None:
    proto = load_protocol(_protocol(tmp_path, "robustness"))
    out = run_protocol(proto, RunOptions(data=data, methods=["static"], out=tmp_path / "r"))
    summary = _summary(out)
    assert summary["static", "l1"]["n"] == "6"  # 2 drivers x 3 sources
    with (out / "pairs.csv").open() as f:
        pairs = list(csv.DictReader(f))
    assert [int(p["source_frame"]) for p in pairs[:3]] == [0, 2, 4]
    maps = sorted((out / "heatmaps" / "static").glob("*.npy"))
    assert len(maps) == 2
    heat = np.load(maps[0])
    assert heat.shape == (256, 256) and heat.dtype == np.float32
    # the mean of the per-pixel map equals the mean L1 of that driving video's runs
    video = maps[0].stem
    with (out / "per_video.csv").open() as f:
        vals = [
            float(r["value"])
            for r in csv.DictReader(f)
            if r["video"] == video and r["metric"] == "l1"
        ]
    assert float(heat.mean()) == pytest.approx(np.mean(vals), rel=1e-5)


def test_cross_id_sources_are_other_identities(data: Path, tmp_path: Path) -> None:
    proto = load_protocol(_protocol(tmp_path, "cross-id"))
    out = run_protocol(proto, RunOptions(data=data, methods=["static"], out=tmp_path / "c"))
    with (out / "pairs.csv").open() as f:
        pairs = list(csv.DictReader(f))
    assert len(pairs) == 6
    assert all(p["source"].split("_")[0] != p["driving"].split("_")[0] for p in pairs)


FLAKY = textwrap.dedent('''
    import os
    from pathlib import Path

    class Flaky:
        """Repeats the source like `static`; raises on the job named in $FLAKY_FAIL_ON."""
        name, resolution, weights = "flaky", 32, ()
        def __init__(self, device="cpu", weights=None):
            self.calls = 0
        def reenact(self, source, driving):
            self.calls += 1
            if str(self.calls) == os.environ.get("FLAKY_FAIL_ON"):
                raise KeyboardInterrupt("killed")
            for _ in driving:
                yield source
''')


def test_interrupted_run_resumes_to_identical_tables(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "flakyplugin.py").write_text(FLAKY)
    monkeypatch.syspath_prepend(str(tmp_path))
    proto = load_protocol(_protocol(tmp_path, "same-id"))
    ref = run_protocol(
        proto, RunOptions(data=data, methods=["flakyplugin:Flaky", "static"], out=tmp_path / "ref")
    )
    monkeypatch.setenv("FLAKY_FAIL_ON", "4")
    opts = RunOptions(data=data, methods=["flakyplugin:Flaky", "static"], out=tmp_path / "run")
    with pytest.raises(KeyboardInterrupt):
        run_protocol(proto, opts)
    partial = _summary(tmp_path / "run")
    assert partial["flaky", "l1"]["note"] == "partial: 3/6 jobs"  # finished work is kept
    assert len(list((tmp_path / "run" / "cache" / "flaky").glob("*/job.npz"))) == 3
    # the resumed run makes a fresh method whose calls restart at 1: only the 3 missing
    # jobs call it, so it never reaches call 4 again
    run_protocol(proto, opts)
    for name in ("summary.csv", "per_video.csv", "pairs.csv"):
        assert (tmp_path / "run" / name).read_text() == (ref / name).read_text()


def test_resume_skips_finished_jobs(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "flakyplugin2.py").write_text(FLAKY)
    monkeypatch.syspath_prepend(str(tmp_path))
    proto = load_protocol(_protocol(tmp_path, "same-id"))
    opts = RunOptions(data=data, methods=["flakyplugin2:Flaky"], out=tmp_path / "run")
    run_protocol(proto, opts)
    monkeypatch.setenv("FLAKY_FAIL_ON", "1")  # any new call would raise
    run_protocol(proto, opts)


def test_run_dir_of_another_protocol_is_refused(data: Path, tmp_path: Path) -> None:
    opts = RunOptions(data=data, methods=["static"], out=tmp_path / "run")
    run_protocol(load_protocol(_protocol(tmp_path, "same-id")), opts)
    with pytest.raises(InputError, match="different protocol"):
        run_protocol(load_protocol(_protocol(tmp_path, "same-id", frames=4)), opts)


def test_unknown_method_fails_before_work(data: Path, tmp_path: Path) -> None:
    with pytest.raises(MethodError, match="unknown method 'nope'.*static"):
        run_protocol(
            load_protocol(_protocol(tmp_path, "same-id")),
            RunOptions(data=data, methods=["static", "nope"], out=tmp_path / "x"),
        )
    assert not (tmp_path / "x").exists()


BAD = textwrap.dedent("""
    class Short:
        name, resolution, weights = "short", 32, ()
        def __init__(self, device="cpu", weights=None):
            pass
        def reenact(self, source, driving):
            yield source

    class Missing:
        name, resolution, weights = "missing", 32, ("no-such-weight",)
        @classmethod
        def unavailable(cls):
            return "weights missing: no-such-weight (reenactbench weights import ...)"
        def __init__(self, device="cpu", weights=None):
            raise AssertionError("must not be constructed")
        def reenact(self, source, driving):
            yield source
""")


def test_method_contract_violations_and_skips(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "badplugin.py").write_text(BAD)
    monkeypatch.syspath_prepend(str(tmp_path))
    proto = load_protocol(_protocol(tmp_path, "same-id"))
    with pytest.raises(MethodError, match="yielded frame 1 before reading driving frame 1"):
        run_protocol(proto, RunOptions(data=data, methods=["badplugin:Short"], out=tmp_path / "s"))
    out = run_protocol(
        proto, RunOptions(data=data, methods=["badplugin:Missing", "static"], out=tmp_path / "m")
    )
    summary = _summary(out)
    assert summary["missing", "l1"]["value"] == ""
    assert "weights missing: no-such-weight" in summary["missing", "l1"]["note"]
    assert summary["static", "l1"]["value"] != ""


def test_same_data_at_another_path_resumes(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run directory is tied to the data's content, not its path (a fresh clone of a
    committed run, or data moved to another disk, resumes)."""
    (tmp_path / "flakyplugin3.py").write_text(FLAKY)
    monkeypatch.syspath_prepend(str(tmp_path))
    proto = load_protocol(_protocol(tmp_path, "same-id"))
    run_protocol(proto, RunOptions(data=data, methods=["flakyplugin3:Flaky"], out=tmp_path / "r"))
    moved = tmp_path / "moved"
    shutil.copytree(data, moved)
    monkeypatch.setenv("FLAKY_FAIL_ON", "1")  # any recomputation would raise
    run_protocol(proto, RunOptions(data=moved, methods=["flakyplugin3:Flaky"], out=tmp_path / "r"))
    (moved / "a_000" / "000000.png").unlink()  # other frames: that job alone recomputes
    monkeypatch.setenv("FLAKY_FAIL_ON", "2")
    run_protocol(proto, RunOptions(data=moved, methods=["flakyplugin3:Flaky"], out=tmp_path / "r"))
    (moved / "a_001").rename(moved / "z_001")  # another data set: refused, not mixed
    with pytest.raises(InputError, match="different protocol, data"):
        run_protocol(proto, RunOptions(data=moved, methods=["static"], out=tmp_path / "r"))


def test_bootstrap_interval_and_weight_flags(data: Path, tmp_path: Path) -> None:
    from reenactbench.metrics import MetricSpec, register_metric
    from reenactbench.metrics.registry import _REGISTRY

    register_metric(
        MetricSpec("l1_with_i3d_test", "T", False, "", "frame",
                   fn=lambda f, r: np.abs(f.astype(float) - r).mean(axis=(1, 2, 3)),
                   weights=("i3d",))
    )  # fmt: skip
    try:
        weight = tmp_path / "i3d.pt"
        weight.write_bytes(b"seeded stand-in")
        proto = load_protocol(_protocol(tmp_path, "same-id", metrics=["l1", "l1_with_i3d_test"]))
        out = run_protocol(
            proto,
            RunOptions(
                data=data,
                methods=["static"],
                out=tmp_path / "b",
                bootstrap=200,
                weights={"i3d": weight},
            ),
        )
    finally:
        _REGISTRY.pop("l1_with_i3d_test")
    s = _summary(out)
    value, lo, hi = (float(s["static", "l1"][k]) for k in ("value", "ci_low", "ci_high"))
    assert lo < value < hi
    assert float(s["static", "l1_with_i3d_test"]["value"]) == pytest.approx(value)
    assert "i3d unpinned" in json.loads(s["static", "l1_with_i3d_test"]["info"])["weights"]
    run = json.loads((out / "run.json").read_text())
    assert run["weights"]["i3d"]["status"] == "unpinned"


class _ColourFeatures:
    """A cheap distribution metric: per-frame mean colour + its square as features."""

    def begin(self, source: np.ndarray) -> None:
        self.fake: list[np.ndarray] = []
        self.real: list[np.ndarray] = []

    def add(self, fake: np.ndarray, real: np.ndarray) -> None:
        for frames, out in ((fake, self.fake), (real, self.real)):
            m = frames.reshape(len(frames), -1, 3).mean(axis=1)
            out.append(np.concatenate([m, m**2 / 255], axis=1))

    def end(self):
        from reenactbench.metrics.base import JobPart

        return JobPart(fake=np.concatenate(self.fake), real=np.concatenate(self.real))


def test_distribution_metric_pooled_over_all_jobs_and_resumed(data: Path, tmp_path: Path) -> None:
    from reenactbench.metrics import MetricSpec, register_metric
    from reenactbench.metrics.frechet import frechet_from_rows
    from reenactbench.metrics.registry import _REGISTRY

    register_metric(MetricSpec("colour_fd_test", "CFD", False, "", "distribution",
                               build=lambda ctx: _ColourFeatures()))  # fmt: skip
    try:
        proto = load_protocol(_protocol(tmp_path, "same-id", metrics=["colour_fd_test"]))
        opts = RunOptions(data=data, methods=["static"], out=tmp_path / "d")
        out = run_protocol(proto, opts)
        first = (out / "summary.csv").read_text()
        ev = _ColourFeatures()
        fakes, reals = [], []
        for name in NAMES:
            frames = read_frames(data / name, max_frames=5, size=256)
            ev.begin(frames[0])
            ev.add(np.repeat(frames[:1], 5, axis=0), frames)
            part = ev.end()
            fakes.append(part.fake)
            reals.append(part.real)
        expected = frechet_from_rows(np.concatenate(fakes), np.concatenate(reals))
        value = float(_summary(out)["static", "colour_fd_test"]["value"])
        assert value == pytest.approx(expected, rel=1e-6)
        shutil.rmtree(next((out / "cache" / "static").iterdir()))
        run_protocol(proto, opts)  # one job recomputed, the rest read back from disk
        assert (out / "summary.csv").read_text() == first
    finally:
        _REGISTRY.pop("colour_fd_test")
