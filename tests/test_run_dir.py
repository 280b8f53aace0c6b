"""A run directory you can trust (issue 10): one job record per job, fingerprints that
cover method, metrics, code and frames, tables from the union of commands, the lock,
options checked before work. Each test names the defect it guards against."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from reenactbench.cache import JobRecord, record_path
from reenactbench.cli import app
from reenactbench.errors import InputError, MethodError
from reenactbench.lock import RunDirLocked, RunLock
from reenactbench.protocol import Pair, load_protocol
from reenactbench.runner import RunOptions, run_protocol
from tests.synthetic import blob_video, read_summary, write_folder_dataset, write_protocol

NAMES = ["a_000", "a_001", "b_000", "b_001"]
PLUGIN = textwrap.dedent('''
    import os

    class Counted:
        """Repeats the source, plus ``shift``; logs each job to $CALLS; raises if
        $FAIL_CALLS is set (a job that must not be recomputed)."""
        name, resolution, weights = "counted", 32, ()

        def __init__(self, device="cpu", weights=None, shift=0):
            self.shift = shift

        def reenact(self, source, driving):
            if os.environ.get("CALLS"):
                with open(os.environ["CALLS"], "a") as f:
                    f.write(self.name + "\\n")
            if os.environ.get("FAIL_CALLS"):
                raise AssertionError(f"{self.name}: a finished job was recomputed")
            out = (source.astype(int) + self.shift).clip(0, 255).astype("uint8")
            for _ in driving:
                yield out

    class Weighted(Counted):
        name, weights = "weighted", ("fomm-vox",)

    class FakeStatic(Counted):
        name = "static"
''')


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_folder_dataset(tmp_path_factory.mktemp("data"), NAMES, n=5, size=32)


@pytest.fixture(scope="module")
def plugin(tmp_path_factory: pytest.TempPathFactory) -> str:
    folder = tmp_path_factory.mktemp("plugin")
    (folder / "rdplug.py").write_text(PLUGIN)
    sys.path.insert(0, str(folder))
    return "rdplug"


@pytest.fixture
def proto(tmp_path: Path):
    return load_protocol(write_protocol(tmp_path, "same-id", resolution=64, metrics=["l1", "psnr"]))


@pytest.fixture
def calls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    log = tmp_path / "calls.log"
    monkeypatch.setenv("CALLS", str(log))
    return log


def _n_calls(log: Path) -> int:
    return len(log.read_text().splitlines()) if log.exists() else 0


def test_cache_key_of_a_method_ignores_the_other_methods_of_the_command(
    data: Path, tmp_path: Path, plugin: str, proto, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Defect 1: `run -m weighted -m counted` then `run -m counted` recomputed counted."""
    weight = tmp_path / "vox-cpk.pth.tar"
    weight.write_bytes(b"seeded stand-in")
    out, w = tmp_path / "run", {"fomm-vox": weight}
    run_protocol(
        proto, RunOptions(data, [f"{plugin}:Weighted", f"{plugin}:Counted"], out, weights=w)
    )
    monkeypatch.setenv("FAIL_CALLS", "1")
    run_protocol(proto, RunOptions(data, [f"{plugin}:Counted"], out, weights=w))
    assert read_summary(out)["counted", "l1"]["n"] == "4"


def test_tables_hold_every_method_of_the_directory_and_rebuild_from_the_cache(
    data: Path, tmp_path: Path, proto
) -> None:
    """Defect 2: adding a method to an existing --out dropped the earlier methods' rows."""
    out = tmp_path / "run"
    run_protocol(proto, RunOptions(data, ["static"], out))
    first = read_summary(out)
    run_protocol(proto, RunOptions(data, ["oracle"], out))
    summary = read_summary(out)
    assert summary["static", "l1"] == first["static", "l1"]
    assert float(summary["oracle", "l1"]["value"]) < 1  # the oracle: driving frames
    assert json.loads((out / "run.json").read_text())["methods"] == ["static", "oracle"]
    tables = {f: (out / f).read_bytes() for f in ("summary.csv", "per_video.csv")}
    for f in tables:
        (out / f).unlink()
    result = CliRunner().invoke(app, ["report", str(out), "--format", "md"])
    assert result.exit_code == 0, result.output
    assert {f: (out / f).read_bytes() for f in tables} == tables
    md = (out / "tables" / "table1_same_id.md").read_text()
    assert "static" in md and "oracle" in md


def test_second_process_on_a_run_directory_is_refused_and_a_dead_holder_is_taken_over(
    data: Path, tmp_path: Path, proto
) -> None:
    """Defect 3: two processes on one --out raced (last writer won)."""
    out = tmp_path / "run"
    run_protocol(proto, RunOptions(data, ["static"], out))
    before = (out / "summary.csv").read_bytes()
    with RunLock(out):  # another holder (flock conflicts across open files)
        with pytest.raises(RunDirLocked, match=rf"in use by pid {os.getpid()} on "):
            run_protocol(proto, RunOptions(data, ["oracle"], out))
        result = CliRunner().invoke(
            app, ["run", "same-id", "--data", str(data), "-m", "oracle", "--out", str(out),
                  "--protocol", str(proto.path)],
        )  # fmt: skip
        assert result.exit_code == 2
        assert result.stderr.count("\n") == 1 and "error:" in result.stderr
    assert (out / "summary.csv").read_bytes() == before  # nothing lost or rewritten
    killer = f"from reenactbench.lock import RunLock; import os, signal; RunLock({str(out)!r}).acquire(); os.kill(os.getpid(), signal.SIGKILL)"  # noqa: E501
    assert subprocess.run([sys.executable, "-c", killer]).returncode == -signal.SIGKILL
    said: list[str] = []
    run_protocol(proto, RunOptions(data, ["oracle"], out), on_message=said.append)
    assert any("taking over the lock of a process that is gone" in m for m in said)


def test_unreadable_or_foreign_records_are_recomputed_never_trusted(
    data: Path, tmp_path: Path, plugin: str, proto, calls: Path
) -> None:
    """Defect 4: values and features were two files; a corrupt one crashed resume, a
    foreign one was paired silently."""
    ref = run_protocol(proto, RunOptions(data, [f"{plugin}:Counted"], tmp_path / "ref"))
    other = run_protocol(
        proto,
        RunOptions(data, [f"{plugin}:Counted"], tmp_path / "other",
                   method_options={"counted": {"shift": 9}}),
    )  # fmt: skip
    out = tmp_path / "run"
    shutil.copytree(ref, out)
    pairs = [Pair(n, n, 0) for n in NAMES]
    torn = record_path(out, "counted", pairs[0])
    torn.write_bytes(torn.read_bytes()[: torn.stat().st_size // 2])
    flipped = record_path(out, "counted", pairs[1])
    blob = bytearray(flipped.read_bytes())
    blob[200] ^= 0xFF  # inside the first member: its CRC no longer matches
    flipped.write_bytes(bytes(blob))
    shutil.copy(record_path(other, "counted", pairs[2]), record_path(out, "counted", pairs[2]))
    n = _n_calls(calls)
    run_protocol(proto, RunOptions(data, [f"{plugin}:Counted"], out))
    assert _n_calls(calls) - n == 3
    for f in ("summary.csv", "per_video.csv"):
        assert (out / f).read_bytes() == (ref / f).read_bytes()


def test_robustness_heatmap_lives_in_the_record(
    data: Path, tmp_path: Path, plugin: str, calls: Path
) -> None:
    """Defect 5: the heatmap was written after the result; a kill in between lost it."""
    proto = load_protocol(
        write_protocol(tmp_path, "robustness", resolution=64, metrics=["l1"], sources=2)
    )
    out = run_protocol(proto, RunOptions(data, [f"{plugin}:Counted"], tmp_path / "r"))
    heatmaps = {p.name: p.read_bytes() for p in (out / "heatmaps" / "counted").iterdir()}
    driving = (out / "pairs.csv").read_text().splitlines()[1].split(",")[0]
    mates = [JobRecord.read(p) for p in sorted((out / "cache" / "counted").glob(f"{driving}__*/*"))]
    assert len(mates) == 2 and all(m.heatmap() is not None for m in mates)
    mean = np.mean([m.heatmap() for m in mates], axis=0).astype(np.float32)
    assert np.array_equal(np.load(out / "heatmaps" / "counted" / f"{driving}.npy"), mean)
    record = mates[0]
    parts = {k: record.full_part(k) for k in record.parts}
    JobRecord.write(record.path, record.meta, parts, record.meta["kinds"], heatmap=None)
    shutil.rmtree(out / "heatmaps")
    n = _n_calls(calls)
    run_protocol(proto, RunOptions(data, [f"{plugin}:Counted"], out))
    assert _n_calls(calls) - n == 1  # the record without its map was not trusted
    assert {p.name: p.read_bytes() for p in (out / "heatmaps" / "counted").iterdir()} == heatmaps


def test_method_options_are_checked_before_any_work(
    data: Path, tmp_path: Path, plugin: str, proto
) -> None:
    """Defect 6: a mistyped --method-option became "skipped: method ..." with exit 0."""
    out = tmp_path / "run"
    base = ["run", "same-id", "--data", str(data), "--out", str(out), "--protocol",
            str(proto.path), "-m", "static", "-m", f"{plugin}:Counted"]  # fmt: skip
    for option, message in (
        (
            f"{plugin}:Counted:shfit=1",
            "bad options ['shfit'] (got an unexpected keyword argument 'shfit'); "
            "its options: shift",
        ),
        ("counted:shfit=1", "bad options ['shfit']"),
        ("fomm:batch_size=2", "'fomm', which is not a --method of this command"),
    ):
        result = CliRunner().invoke(app, [*base, "--method-option", option])
        assert result.exit_code == 2, result.output
        assert result.stderr.count("\n") == 1
        assert message in result.stderr, result.stderr
    assert not out.exists()
    with pytest.raises(MethodError, match="bad options"):
        run_protocol(proto, RunOptions(data, ["static"], out, method_options={"static": {"x": 1}}))


def test_code_changes_recompute_and_unrelated_methods_do_not(
    data: Path, tmp_path: Path, plugin: str, proto, calls: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Defect 7: the fingerprint held only the package version, so an edited plug-in or
    metric resumed to the old numbers."""
    from reenactbench.metrics.registry import _REGISTRY

    folder = tmp_path / "edits"
    folder.mkdir()
    monkeypatch.syspath_prepend(str(folder))
    method = folder / "editedmethod.py"
    method.write_text(PLUGIN.replace('"counted"', '"edited"'))
    metric = folder / "editedmetric.py"
    metric_src = textwrap.dedent("""
        import numpy as np
        from reenactbench.metrics import MetricSpec, register_metric

        SCALE = 1.0
        register_metric(
            MetricSpec("edited_l1", "E", False, "", "frame",
                       fn=lambda f, r: SCALE * np.abs(f.astype(float) - r).mean(axis=(1, 2, 3))),
            replace=True,
        )
    """)
    metric.write_text(metric_src)
    proto = load_protocol(write_protocol(tmp_path, "same-id", resolution=64, metrics=["edited_l1"]))

    def run(methods: list[str]) -> dict:
        for name in ("editedmethod", "editedmetric"):  # a new command imports afresh
            sys.modules.pop(name, None)
        __import__("editedmetric")
        try:
            run_protocol(proto, RunOptions(data, methods, tmp_path / "run"))
        finally:
            _REGISTRY.pop("edited_l1", None)
        return read_summary(tmp_path / "run")

    first = float(run(["editedmethod:Counted"])["edited", "edited_l1"]["value"])
    method.write_text(PLUGIN.replace('"counted"', '"edited"').replace("+ self.shift", "+ 40"))
    second = float(run(["editedmethod:Counted"])["edited", "edited_l1"]["value"])
    assert second != first and _n_calls(calls) == 8
    metric.write_text(metric_src.replace("SCALE = 1.0", "SCALE = 100.0"))
    third = float(run(["editedmethod:Counted"])["edited", "edited_l1"]["value"])
    assert third == pytest.approx(100 * second) and _n_calls(calls) == 12
    monkeypatch.setenv("FAIL_CALLS", "1")  # adding another method recomputes nothing
    summary = run(["oracle"])
    assert float(summary["edited", "edited_l1"]["value"]) == third
    assert summary["oracle", "edited_l1"]["value"] != ""


def _uncompressed_dataset(root: Path) -> Path:
    """Frames saved without compression: a pixel edit keeps the file size."""
    for i, name in enumerate(NAMES):
        (root / name).mkdir(parents=True)
        for t, frame in enumerate(blob_video(5, 32, seed=i)):
            Image.fromarray(frame).save(root / name / f"{t:06d}.png", compress_level=0)
    return root


def test_edited_frames_recompute_only_the_jobs_that_read_them(
    tmp_path: Path, plugin: str, proto, calls: Path
) -> None:
    """Defect 7: edited data frames resumed to the old numbers."""
    data = _uncompressed_dataset(tmp_path / "data")
    out = tmp_path / "run"
    run_protocol(proto, RunOptions(data, [f"{plugin}:Counted"], out))
    frame = data / "b_001" / "000003.png"
    stat = frame.stat()
    pixels = np.array(Image.open(frame))
    pixels[5, 5] = 255 - pixels[5, 5]
    Image.fromarray(pixels).save(frame, compress_level=0)
    assert frame.stat().st_size == stat.st_size
    run_protocol(proto, RunOptions(data, [f"{plugin}:Counted"], out))
    assert _n_calls(calls) == 4 + 1  # the mtime changed: b_001's job only
    pixels[5, 5] = 255 - pixels[5, 5]  # edit back, then hide the edit from stat
    Image.fromarray(pixels).save(frame, compress_level=0)
    os.utime(frame, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    run_protocol(proto, RunOptions(data, [f"{plugin}:Counted"], out))
    assert _n_calls(calls) == 6  # stat differs from the record: content checked, differs
    pixels[5, 5] = 0  # an edit with the same size and mtime as the record's
    recorded = frame.stat()
    Image.fromarray(pixels).save(frame, compress_level=0)
    os.utime(frame, ns=(recorded.st_atime_ns, recorded.st_mtime_ns))
    run_protocol(proto, RunOptions(data, [f"{plugin}:Counted"], out))
    assert _n_calls(calls) == 6  # stat mode cannot see it (documented) ...
    run_protocol(proto, RunOptions(data, [f"{plugin}:Counted"], out, frames_key="content"))
    assert _n_calls(calls) == 7  # ... content mode does


def test_copied_data_resumes_by_content(tmp_path: Path, plugin: str, proto, calls: Path) -> None:
    """Data copied without its mtimes (cp -r, git): stat keys differ, content keys match."""
    data = write_folder_dataset(tmp_path / "data", NAMES, n=5, size=32)
    out = tmp_path / "run"
    run_protocol(proto, RunOptions(data, [f"{plugin}:Counted"], out))
    moved = tmp_path / "moved"
    shutil.copytree(data, moved, copy_function=shutil.copyfile)  # new mtimes
    run_protocol(proto, RunOptions(moved, [f"{plugin}:Counted"], out))
    assert _n_calls(calls) == 4


def test_method_names_are_unique_per_run_directory(
    data: Path, tmp_path: Path, plugin: str, proto
) -> None:
    """Defect 8: a plug-in named `static` silently replaced the built-in's results."""
    out = tmp_path / "run"
    with pytest.raises(MethodError, match="two methods are named 'static'"):
        run_protocol(proto, RunOptions(data, ["static", f"{plugin}:FakeStatic"], out))
    run_protocol(proto, RunOptions(data, ["static"], out))
    before = (out / "summary.csv").read_bytes()
    with pytest.raises(InputError, match="'static' belongs to reenactbench.baselines.reference"):
        run_protocol(proto, RunOptions(data, [f"{plugin}:FakeStatic"], out))
    assert (out / "summary.csv").read_bytes() == before


def test_writes_are_synced_and_dead_writers_temp_files_removed(
    data: Path, tmp_path: Path, proto, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Defect 9: no fsync; temp files left after SIGKILL stayed forever."""
    out = tmp_path / "run"
    run_protocol(proto, RunOptions(data, ["static"], out))
    leftovers = [
        out / ".summary.csv.k2j3.tmp",
        record_path(out, "static", Pair("a_000", "a_000", 0)).with_name(".job.npz.x1.tmp"),
    ]  # noqa: E501
    for f in leftovers:
        f.write_bytes(b"half")
    events: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        events.append(f"fsync {Path(os.readlink(f'/proc/self/fd/{fd}')).name}")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(
        os,
        "replace",
        lambda a, b: (events.append(f"replace {Path(b).name}"), real_replace(a, b))[1],
    )  # noqa: E501
    run_protocol(proto, RunOptions(data, ["oracle"], out))
    assert not any(f.exists() for f in leftovers)
    first = events.index("replace job.npz")
    assert events[first - 1].startswith("fsync .job.npz.") and events[first - 1].endswith(".tmp")
    assert events[first + 1].endswith("_f000000")  # the data, then the rename in its folder
    assert oct((out / "summary.csv").stat().st_mode & 0o777) == oct(0o666 & ~_umask())


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_other_metric_settings_make_earlier_methods_stale_not_mixed(
    data: Path, tmp_path: Path, proto
) -> None:
    out = tmp_path / "run"
    run_protocol(proto, RunOptions(data, ["static", "oracle"], out))
    run_protocol(
        proto, RunOptions(data, ["static"], out, metric_options={"temporal_backend": "openface"})
    )
    summary = read_summary(out)
    assert summary["static", "l1"]["value"] != ""
    assert summary["oracle", "l1"]["value"] == ""
    assert "stale: 4 job(s)" in summary["oracle", "l1"]["note"]
    assert "re-run with -m oracle" in summary["oracle", "l1"]["note"]


def test_changed_frames_leave_earlier_methods_stale_until_rerun(
    tmp_path: Path, proto, plugin: str, calls: Path
) -> None:
    data = write_folder_dataset(tmp_path / "data", NAMES, n=5, size=32)
    out = tmp_path / "run"
    run_protocol(proto, RunOptions(data, ["static", f"{plugin}:Counted"], out))
    frame = data / "b_001" / "000002.png"
    Image.fromarray(255 - np.array(Image.open(frame))).save(frame)
    run_protocol(proto, RunOptions(data, ["static"], out))
    note = "partial: 3/4 jobs; stale: 1 job(s) made with other metric settings, code or frames"
    assert read_summary(out)["counted", "l1"]["note"].startswith(note)
    assert read_summary(out)["static", "l1"]["note"] == ""
    assert CliRunner().invoke(app, ["report", str(out)]).exit_code == 0  # rebuilt: still stale
    assert read_summary(out)["counted", "l1"]["note"].startswith(note)
    run_protocol(proto, RunOptions(data, [f"{plugin}:Counted"], out))
    assert read_summary(out)["counted", "l1"]["note"] == "" and _n_calls(calls) == 5


RUNTIME = textwrap.dedent('''
    import json, os

    class Tunable:
        """Records the runtime options it was built with."""
        name, resolution, weights = "tunable", 32, ()

        def __init__(self, device="cpu", weights=None, batch_size=4, dtype="fp32"):
            with open(os.environ["CALLS"], "a") as f:
                f.write(json.dumps({"batch_size": batch_size, "dtype": dtype}) + "\\n")

        def reenact(self, source, driving):
            for _ in driving:
                yield source
''')


def test_batch_size_and_dtype_reach_the_methods(
    data: Path, tmp_path: Path, proto, calls: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "tunableplug.py").write_text(RUNTIME)
    monkeypatch.syspath_prepend(str(tmp_path))
    out = tmp_path / "run"
    said: list[str] = []
    run_protocol(
        proto,
        RunOptions(data, ["tunableplug:Tunable", "static"], out, batch_size=3, dtype="bf16"),
        on_message=said.append,
    )
    assert json.loads(calls.read_text()) == {"batch_size": 3, "dtype": "bf16"}
    assert "method static has no dtype option: it runs as it is, not in bf16" in said
    run_protocol(proto, RunOptions(data, ["tunableplug:Tunable"], out, batch_size=5))
    lines = calls.read_text().splitlines()  # dtype is in the fingerprint, batch_size not
    assert [json.loads(x)["dtype"] for x in lines] == ["bf16", "fp32"]
    run_protocol(proto, RunOptions(data, ["tunableplug:Tunable"], out, batch_size=7))
    assert len(calls.read_text().splitlines()) == 2


def test_reduced_precision_stays_inside_the_method(tmp_path: Path) -> None:
    """--dtype bf16 runs FOMM's networks under autocast, never the metrics that score it."""
    import torch

    from reenactbench.metrics import MetricSpec, register_metric
    from reenactbench.metrics.registry import _REGISTRY
    from tests.test_fomm import seeded_checkpoint

    seen: list[bool] = []

    def probe(fake: np.ndarray, real: np.ndarray) -> np.ndarray:
        seen.append(torch.is_autocast_enabled("cpu"))
        return np.abs(fake.astype(float) - real).mean(axis=(1, 2, 3))

    register_metric(MetricSpec("autocast_probe", "P", False, "", "frame", fn=probe))
    try:
        data = write_folder_dataset(tmp_path / "data", ["a_000", "b_000"], n=3, size=64)
        torch.save(seeded_checkpoint(), tmp_path / "vox-cpk.pth.tar")
        proto = load_protocol(
            write_protocol(tmp_path, "same-id", frames=3, metrics=["autocast_probe"])
        )
        values = {}
        for dtype in ("fp32", "bf16"):
            out = run_protocol(proto, RunOptions(
                data, ["fomm"], tmp_path / dtype, batch_size=2, dtype=dtype,
                weights={"fomm-vox": tmp_path / "vox-cpk.pth.tar"},
            ))  # fmt: skip
            values[dtype] = read_summary(out)["fomm", "autocast_probe"]["value"]
    finally:
        _REGISTRY.pop("autocast_probe")
    assert seen and not any(seen)
    assert values["fp32"] != values["bf16"]  # bf16 did run, inside the method
