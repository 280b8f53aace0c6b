"""Untrusted files and inputs (issue 11), one place: each test names the class of bad
input it covers. Security first: no weight file, by any route, runs pickled code."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from reenactbench.cli import app
from reenactbench.errors import InputError
from reenactbench.weights import WEIGHTS
from tests.synthetic import write_folder_dataset


class _Evil:
    """A pickle that runs ``touch MARKER`` when it is fully unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture
def evil(tmp_path: Path) -> tuple[Path, Path]:
    """(a malicious checkpoint in each official layout at once, its marker file)."""
    marker = tmp_path / "PWNED"
    payload = _Evil(marker)
    path = tmp_path / "evil.pt"
    torch.save(
        {k: payload for k in ("generator", "kp_detector", "gen", "g_ema", "latent_avg",
                              "G_ema", "format", "config", "encoder", "net_G_ema")},
        path,
    )  # fmt: skip
    return path, marker


def _loaders() -> dict[str, object]:
    """Weight name -> a call that loads a file as that weight (None: no loader yet)."""
    from reenactbench.baselines.pirenderer.model import load_pirenderer
    from reenactbench.baselines.styleheat.calibration import load_styleheat
    from reenactbench.baselines.styleheat.inversion import load_e4e, load_hfgi

    from reenactbench.faces.deep3d import load_recon_net
    from reenactbench.methods import load_method
    from reenactbench.metrics.fvd import load_i3d
    from reenactbench.metrics.inception import load_fid_inception
    from reenactbench.metrics.lpips import load_lpips_alex
    from reenactbench.nn.irse50 import load_irse50
    from reenactbench.nn.stylegan2 import load_generator

    def method(name: str, weight: str):
        return lambda p: load_method(name, weights={weight: p, "lpips-alex": p})

    return {
        "fid-inception": load_fid_inception,
        "lpips-alex": load_lpips_alex,
        "i3d": load_i3d,
        "arcface-r50": None,  # ONNX: onnxruntime parses protobuf, no pickle
        "ir-se50": load_irse50,
        "stylegan2-ffhq": load_generator,
        "fomm-vox": method("fomm", "fomm-vox"),
        "lia-vox": method("lia", "lia-vox"),
        "pirenderer-vox": load_pirenderer,
        "deep3d-recon": load_recon_net,
        "styleheat": load_styleheat,
        "styleheat-e4e": load_e4e,
        "styleheat-hfgi": load_hfgi,
        "styleheat-stylegan": lambda p: load_generator(p, entry=None),
        "fs-vid2vid-face": None,  # no adapter yet (issue 15)
        "hybrid-hdtf": method("hybrid", "hybrid-hdtf"),
        "hybrid-hdtf-no-idreg": method("hybrid-no-idreg", "hybrid-hdtf-no-idreg"),
        "hybrid-hdtf-no-hybrid": method("hybrid-no-hybrid", "hybrid-hdtf-no-hybrid"),
        "hybrid-hdtf-sf-forward": method("hybrid-sf-forward", "hybrid-hdtf-sf-forward"),
    }


def test_every_weight_loader_refuses_pickled_code(evil: tuple[Path, Path]) -> None:
    path, marker = evil
    loaders = _loaders()
    assert set(loaders) == set(WEIGHTS), "a new weight needs a loader here"
    for name, load in loaders.items():
        if load is None:
            continue
        with pytest.raises(InputError, match=str(path)):
            load(path)  # type: ignore[operator]
        assert not marker.exists(), f"{name}: loading ran the pickle's code"


@pytest.mark.parametrize(
    "route",
    [
        ["reenact", "--method", "fomm", "--weights", "fomm-vox={evil}"],
        ["reenact", "--method", "lia", "--weights", "lia-vox={evil}"],
        ["reenact", "--method", "fomm", "--option", "checkpoint={evil}"],
        ["reenact", "--method", "lia", "--option", "checkpoint={evil}"],
        ["reenact", "--method", "hybrid-no-cma", "--option", "checkpoint={evil}"],
        ["import", "fomm-vox"],
        ["import", "lia-vox"],
        ["weights", "convert", "{evil}", "{out}"],
    ],
)
def test_no_cli_route_runs_pickled_code(
    route: list[str], evil: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path, marker = evil
    monkeypatch.setenv("REENACTBENCH_HOME", str(tmp_path / "home"))
    data = write_folder_dataset(tmp_path / "data", ["a_000"], n=2, size=32)
    frame = data / "a_000" / "000000.png"
    reenact = ["reenact", "--source", str(frame), "--driving", str(data / "a_000"),
               "--out", str(tmp_path / "o")]  # fmt: skip
    if route[0] == "import":  # bring the file into the cache, then use it
        CliRunner().invoke(app, ["weights", "import", "--force", route[1], str(path)])
        method = route[1].split("-")[0]
        args = [*reenact, "--method", method]
    elif route[0] == "reenact":
        args = [*reenact, *(a.format(evil=path) for a in route[1:])]
    else:
        args = [a.format(evil=path, out=tmp_path / "out.pt") for a in route]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1
    assert not marker.exists()


def test_fetch_and_import_check_the_format_before_installing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`weights fetch NAME --url file:///etc/passwd` installed any file with exit 0."""
    home = tmp_path / "home"
    monkeypatch.setenv("REENACTBENCH_HOME", str(home))
    text = tmp_path / "notes.txt"
    text.write_text("root:x:0:0:root:/root:/bin/bash\n")
    for args in (
        ["weights", "fetch", "fid-inception", "--url", f"file://{text}"],
        ["weights", "import", "fid-inception", str(text)],
        ["weights", "import", "--force", "ir-se50", str(text)],
        ["weights", "import", "i3d", str(text)],
        ["weights", "import", "arcface-r50", str(text)],
    ):
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 2, (args, result.output)
        errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and "is not a" in errors[0], result.stderr
    assert not any(p.is_file() for p in home.rglob("*"))  # nothing installed, no .part left
    good = tmp_path / "model_ir_se50.pth"
    torch.save({"w": torch.zeros(3)}, good)  # the right format (layout checked at load)
    result = CliRunner().invoke(app, ["weights", "import", "ir-se50", str(good)])
    assert result.exit_code == 0, result.output


# ---------------------------------------------------------------- usage errors
@pytest.fixture
def tiny(tmp_path: Path) -> dict[str, Path]:
    from tests.synthetic import write_protocol

    data = write_folder_dataset(tmp_path / "data", ["a_000", "b_000"], n=3, size=32)
    proto = write_protocol(tmp_path, "same-id", frames=3, resolution=32, metrics=["l1"])
    return {"data": data, "proto": proto, "out": tmp_path / "run"}


def _run_args(t: dict[str, Path], *extra: str, kind: str = "same-id") -> list[str]:
    return ["run", kind, "--data", str(t["data"]), "-m", "static", "--out", str(t["out"]),
            "--protocol", str(t["proto"]), *extra]  # fmt: skip


def _plugin(
    tiny: dict[str, Path], monkeypatch: pytest.MonkeyPatch, module: str, source: str
) -> None:
    """Write a plug-in module beside the data and make it importable."""
    (tiny["data"].parent / f"{module}.py").write_text(source)
    monkeypatch.syspath_prepend(str(tiny["data"].parent))


def _one_error(result, text: str) -> None:
    assert result.exit_code == 2, result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and text in errors[0], result.stderr


@pytest.mark.parametrize(
    "extra, text",
    [
        (["--id-backend", "arcface"], "id_backend) arcface: use one of irse50, insightface"),
        (["--temporal-backend", "x"], "temporal_backend) x: use one of landmarks"),
        (["--weights", "nope=f.pt"], "unknown weight 'nope'"),
        (["--weights", "i3d=/no/such.pt"], "/no/such.pt: no such file"),
        (["--device", "tpu"], "--device tpu: use cpu, cuda or cuda:N"),
        (["--method-option", "fomm:batch_size=2"], "not a --method of this command"),
    ],
)
def test_invalid_settings_are_usage_errors_before_any_work(
    tiny: dict[str, Path], extra: list[str], text: str
) -> None:
    _one_error(CliRunner().invoke(app, _run_args(tiny, *extra)), text)
    assert not tiny["out"].exists()


def test_subcommand_and_protocol_kind_must_agree(tiny: dict[str, Path]) -> None:
    result = CliRunner().invoke(app, _run_args(tiny, kind="cross-id"))
    _one_error(result, "a same-id protocol; run it with `reenactbench run same-id`")
    args = ["robustness", "--data", str(tiny["data"]), "-m", "static", "--out",
            str(tiny["out"]), "--protocol", str(tiny["proto"]), "--sources", "3"]  # fmt: skip
    _one_error(CliRunner().invoke(app, args), "a same-id protocol")
    assert not tiny["out"].exists()


@pytest.mark.parametrize(
    "field, text",
    [
        ("frames = true", "frames = true must be int"),
        ("frames = 32.5", "frames = 32.5 must be int"),
        ('frames = "abc"', 'frames = "abc" must be int'),
        ("fvd_clip = 0", "fvd_clip must be > 0"),
        ("max_videos = 0", "max_videos must be > 0"),
        ("source_frame = -1", "source_frame must be >= 0"),
        ('split_file = ""', "split_file is empty"),
    ],
)
def test_invalid_protocol_fields(tiny: dict[str, Path], field: str, text: str) -> None:
    proto = tiny["proto"].with_name("bad.toml")
    key = field.split(" = ")[0]
    kept = [ln for ln in tiny["proto"].read_text().splitlines() if not ln.startswith(key + " ")]
    proto.write_text("\n".join([*kept, field]) + "\n")
    args = _run_args(tiny)
    args[args.index("--protocol") + 1] = str(proto)
    _one_error(CliRunner().invoke(app, args), text)


def test_foreign_out_folder_is_refused_and_kept(tiny: dict[str, Path]) -> None:
    tiny["out"].mkdir()
    (tiny["out"] / "summary.csv").write_text("my own results\n")
    _one_error(CliRunner().invoke(app, _run_args(tiny)), "holds other files (summary.csv)")
    assert (tiny["out"] / "summary.csv").read_text() == "my own results\n"
    file_out = tiny["out"] / "summary.csv"
    args = _run_args(tiny)
    args[args.index("--out") + 1] = str(file_out)
    _one_error(CliRunner().invoke(app, args), "is a file")


def test_plugin_that_raises_or_exits_names_itself_and_keeps_finished_jobs(
    tiny: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    _plugin(
        tiny,
        monkeypatch,
        "badexit",
        "import sys\n"
        "class Bad:\n"
        "    name, resolution, weights = 'bad', 32, ()\n"
        "    def __init__(self, device='cpu', weights=None, how='raise'):\n"
        "        self.how = how\n"
        "    def reenact(self, source, driving):\n"
        "        for i, frame in enumerate(driving):\n"
        "            if i == 1:\n"
        "                sys.exit(3) if self.how == 'exit' else 1 / 0\n"
        "            yield frame\n",
    )
    for how, text in (("raise", "ZeroDivisionError"), ("exit", "SystemExit: 3")):
        args = _run_args(tiny, "-m", "badexit:Bad", "--method-option", f"bad:how={how}")
        result = CliRunner().invoke(app, args)
        _one_error(result, f"method 'bad' failed on job a_000__a_000_f000000: {text}")
    assert len(list((tiny["out"] / "cache" / "static").glob("*/job.npz"))) == 2


def test_reenact_refuses_a_non_empty_output(tiny: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "frames"
    args = ["reenact", "--method", "static", "--source", str(tiny["data"] / "a_000"),
            "--driving", str(tiny["data"] / "b_000"), "--out", str(out)]  # fmt: skip
    assert CliRunner().invoke(app, args).exit_code == 0
    (out / "999999.png").write_bytes(b"stale")
    _one_error(CliRunner().invoke(app, args), "exists and is not empty")
    assert CliRunner().invoke(app, [*args, "--overwrite"]).exit_code == 0
    assert sorted(p.name for p in out.iterdir()) == ["000000.png", "000001.png", "000002.png"]


def test_score_json_has_no_infinity(tiny: dict[str, Path], tmp_path: Path) -> None:
    import json

    video = str(tiny["data"])
    args = ["score", "--real", video, "--fake", video, "--metrics", "l1,psnr", "--json", "-"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["metrics"]["psnr"] == "inf"  # strict JSON parses it
    _one_error(
        CliRunner().invoke(app, [*args[:-1], str(tmp_path)]), f"--json {tmp_path}: is a folder"
    )


def test_version() -> None:
    from reenactbench import __version__

    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0 and result.stdout.strip() == f"reenactbench {__version__}"


def test_partial_methods_are_never_ranked(tmp_path: Path) -> None:
    """A killed run's report bolded a method that finished 1/4 of its jobs as best."""
    from reenactbench.report import write_report
    from tests.test_report import make_run

    run = make_run(tmp_path / "r", "same-id", ["fomm", "lia", "static"], ["l1"], [
        ("fomm", "l1", 1.0, 0.1, "partial: 1/4 jobs"),
        ("lia", "l1", 3.0, 0.1, ""),
        ("static", "l1", 5.0, 0.1, ""),
    ])  # fmt: skip
    md = next(p for p in write_report(run, ["md"]) if p.suffix == ".md").read_text()
    rows = {ln.split(" | ")[0].strip("| "): ln for ln in md.splitlines() if ln.startswith("| ")}
    assert "**" not in rows["FOMM"] and "**3.00**" in rows["LIA"]


def test_unpadded_frame_names_are_read_in_numeric_order(tmp_path: Path) -> None:
    """`0.png, 1.png, 10.png, 2.png` was read as text order: identical videos scored L1 1.86."""
    import numpy as np
    from PIL import Image

    from reenactbench.video import read_frames

    folder = tmp_path / "v"
    folder.mkdir()
    for i in range(12):
        Image.fromarray(np.full((8, 8, 3), 20 * i, np.uint8)).save(folder / f"{i}.png")
    assert [int(f[0, 0, 0]) // 20 for f in read_frames(folder)] == list(range(12))


def test_usage_errors_of_the_parser_are_one_line() -> None:
    """typer printed a 5-line box for a bad option value."""
    import subprocess
    import sys

    for args, text in (
        (["run", "same-id", "--data", "x", "-m", "static", "--out", "y", "--max-frames", "0"],
         "error: Invalid value for '--max-frames': Input should be greater than or equal to 1"),
        (["nosuch"], "error: No such command 'nosuch'."),
    ):  # fmt: skip
        result = subprocess.run(
            [sys.executable, "-m", "reenactbench", *args], capture_output=True, text=True
        )
        assert result.returncode == 2
        assert result.stderr.count("\n") == 1 and result.stderr.startswith(text), result.stderr


def test_piped_tables_are_plain_and_complete() -> None:
    """`methods | cat` showed `hybrid-no-hyb…` inside box drawing."""
    for args, whole in (
        (["methods"], "reenactbench.baselines.hybrid.adapter:HybridNoHybrid"),
        (
            ["weights", "list"],
            "https://github.com/AliaksandrSiarohin/first-order-model#pre-trained-checkpoint",
        ),
    ):
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 0
        assert whole in result.stdout and "…" not in result.stdout
        assert not set("│╭╰┃━") & set(result.stdout)


def test_robustness_takes_max_videos(tiny: dict[str, Path], tmp_path: Path) -> None:
    from tests.synthetic import write_protocol

    proto = write_protocol(tmp_path, "robustness", frames=3, resolution=32, metrics=["l1"])
    args = ["robustness", "--data", str(tiny["data"]), "-m", "static", "--out", str(tiny["out"]),
            "--protocol", str(proto), "--sources", "1", "--drivers", "2"]  # fmt: skip
    _one_error(CliRunner().invoke(app, [*args, "--max-videos", "1"]), "needs 2 driving videos")
    assert CliRunner().invoke(app, [*args, "--max-videos", "2"]).exit_code == 0


def test_score_warns_when_fakes_are_lossy_video(tmp_path: Path) -> None:
    """docs/metrics.md says never to score from H.264 yuv420p; score now says so too."""
    import json

    from reenactbench.video import read_frames, write_mp4, write_png_folder
    from tests.synthetic import blob_video

    frames = blob_video(4, 64, seed=0)
    write_png_folder(frames, tmp_path / "real" / "v")
    (tmp_path / "fake").mkdir()
    write_mp4(frames, tmp_path / "fake" / "v.mp4")
    assert read_frames(tmp_path / "fake" / "v.mp4").shape == frames.shape
    args = ["score", "--real", str(tmp_path / "real"), "--fake", str(tmp_path / "fake"),
            "--metrics", "l1", "--json", str(tmp_path / "s.json")]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "warning: " in result.stderr and "v.mp4: h264 yuv420p is lossy" in result.stderr
    assert json.loads((tmp_path / "s.json").read_text())["warnings"][0].endswith("docs/metrics.md)")
    write_png_folder(frames, tmp_path / "fake2" / "v")  # lossless frames: no warning
    args[4] = str(tmp_path / "fake2")
    assert "warning" not in CliRunner().invoke(app, args).stderr


@pytest.mark.parametrize(
    "args",
    [["score", "--real", ".", "--fake", ".", "--resolution", "100000"],
     ["run", "same-id", "--data", ".", "-m", "static", "--out", "x", "--bootstrap", "10000000"]],
)  # fmt: skip
def test_limits_instead_of_an_oom_kill_or_a_silent_hour(args: list[str]) -> None:
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2 and "Invalid value" in result.output


def test_run_writes_tables_and_reports_progress_in_frames(tiny: dict[str, Path]) -> None:
    result = CliRunner().invoke(app, _run_args(tiny))
    assert result.exit_code == 0, result.output
    assert (tiny["out"] / "tables" / "table1_same_id.md").is_file()
    progress = [ln for ln in result.stderr.splitlines() if ln.startswith("static: ")]
    assert progress[0] == "static: 1/6" and progress[-1] == "static: 6/6"  # 2 videos x 3


def test_import_with_a_wrong_checksum_names_the_weight(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REENACTBENCH_HOME", str(tmp_path / "home"))
    file = tmp_path / "alexnet.pth"
    torch.save({"w": torch.zeros(2)}, file)
    result = CliRunner().invoke(app, ["weights", "import", "lpips-alex", str(file)])
    _one_error(result, "of lpips-alex (alexnet-owt-7be5be79.pth); pass --force")


def test_a_method_cannot_change_its_own_ground_truth(
    tiny: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A method writing into its driving frames scored L1 0 (it held the truth array)."""
    _plugin(
        tiny,
        monkeypatch,
        "cheat",
        "class Cheat:\n"
        "    name, resolution, weights = 'cheat', 32, ()\n"
        "    def __init__(self, device='cpu', weights=None):\n"
        "        pass\n"
        "    def reenact(self, source, driving):\n"
        "        for frame in driving:\n"
        "            frame[...] = 0\n"
        "            source[...] = 0\n"
        "            yield frame\n",
    )
    args = _run_args(tiny, "-m", "cheat:Cheat")
    assert CliRunner().invoke(app, args).exit_code == 0
    from tests.synthetic import read_summary

    assert float(read_summary(tiny["out"])["cheat", "l1"]["value"]) > 10


# ---------------------------------------------------------------- frame completeness
def test_short_video_is_an_error_unless_the_protocol_allows_it(tiny: dict[str, Path]) -> None:
    """A 3-frame video under a 5-frame protocol was scored on 3 frames without a word."""
    import json

    from tests.synthetic import write_protocol

    five = write_protocol(tiny["proto"].parent, "same-id", frames=5, resolution=32, metrics=["l1"])
    args = _run_args({**tiny, "proto": five})
    _one_error(CliRunner().invoke(app, args), f"{tiny['data'] / 'a_000'} (3): fewer frames")
    assert not tiny["out"].exists()
    write_protocol(five.parent, "same-id", frames=5, resolution=32, metrics=["l1"],
                   allow_short=True)  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    run = json.loads((tiny["out"] / "run.json").read_text())
    assert run["short_videos"] == {"a_000": 3, "b_000": 3}
    md = (tiny["out"] / "tables" / "table1_same_id.md").read_text()
    assert "2 video(s) have fewer than 5 frames and are used whole: a_000 (3), b_000 (3)" in md


def test_prepared_frames_must_match_the_manifest(tmp_path: Path) -> None:
    """Frames deleted from a prepared video were never noticed (manifest n_frames)."""
    from reenactbench.data.dataset import load_dataset

    write_folder_dataset(tmp_path / "32", ["a_000", "b_000"], n=3, size=32)
    (tmp_path / "manifest.csv").write_text("video,identity,n_frames\na_000,a,3\nb_000,b,3\n")
    assert len(load_dataset(tmp_path, resolution=32).videos) == 2
    (tmp_path / "32" / "b_000" / "000001.png").unlink()
    with pytest.raises(InputError, match="b_000: holds 2 frames, manifest.csv lists 3"):
        load_dataset(tmp_path, resolution=32)


def test_gaps_in_frame_numbers_are_warned_about(tiny: dict[str, Path]) -> None:
    from reenactbench.video import frame_files, frame_gaps

    folder = tiny["data"] / "a_000"
    assert frame_gaps(frame_files(folder)) is None
    (folder / "000001.png").rename(folder / "000004.png")
    assert "skip 2 frame(s) (first missing: 1)" in str(frame_gaps(frame_files(folder)))
    result = CliRunner().invoke(app, _run_args(tiny, "--max-frames", "2"))
    assert result.exit_code == 0, result.output
    assert f"warning: {folder}: frame numbers skip 2" in result.stderr
    (folder / "4.png").write_bytes((folder / "000004.png").read_bytes())
    assert "two frame files are numbered 4" in str(frame_gaps(frame_files(folder)))


def _truncated_mkv(path: Path, n: int = 40) -> Path:
    import av

    from tests.synthetic import blob_video

    full = path.with_suffix(".full.mkv")

    with av.open(str(full), "w") as c:
        s = c.add_stream("ffv1", rate=25)
        s.width = s.height = 32
        s.pix_fmt = "yuv420p"
        for frame in blob_video(n, 32):
            for p in s.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    data = full.read_bytes()
    full.unlink()
    path.write_bytes(data[: len(data) // 3])
    return path


def test_truncated_video_file_is_an_error(tiny: dict[str, Path]) -> None:
    """A truncated .mkv decoded as a fraction of its frames, silently (run and prepare)."""
    import shutil

    from reenactbench.video import probe

    shutil.rmtree(tiny["data"] / "a_000")
    cut = _truncated_mkv(tiny["data"] / "a_000.mkv")
    with pytest.raises(InputError, match="of the 40 frames its container states decode"):
        probe(cut)
    _one_error(CliRunner().invoke(app, _run_args(tiny)), f"{cut}: only")


def test_a_job_that_decodes_fewer_frames_than_planned_stops(tiny: dict[str, Path]) -> None:
    """The run checks lengths first; a video damaged afterwards must not give a short job."""
    from reenactbench.data.dataset import load_dataset
    from reenactbench.job import run_job
    from reenactbench.methods import load_method
    from reenactbench.metrics import resolve_metrics
    from reenactbench.metrics.base import MetricContext
    from reenactbench.protocol import Pair
    from reenactbench.scoring import JobScorer, build_evaluators

    videos = load_dataset(tiny["data"]).by_name()
    scorer = JobScorer(build_evaluators(resolve_metrics(["l1"]), MetricContext()))
    pair = Pair("a_000", "a_000", 0)
    args = (load_method("static"), pair, videos, 32)
    assert run_job(*args, 3, scorer, 8).n_frames == 3
    with pytest.raises(InputError, match="a_000: decoded 3 of the 4 frames the run planned"):
        run_job(*args, 4, scorer, 8)


def test_a_rerun_leaves_tracked_files_unchanged(tiny: dict[str, Path]) -> None:
    """`make demo` dirtied a clean clone: run.json held the data path, timings, the
    commit and dates. Those go to history.jsonl (one line per command, not tracked)."""
    import json

    assert CliRunner().invoke(app, _run_args(tiny)).exit_code == 0
    out = tiny["out"]
    tracked = ["run.json", "summary.csv", "per_video.csv", "pairs.csv", "tables/table1_same_id.md"]
    first = {name: (out / name).read_bytes() for name in tracked}
    assert str(tiny["data"].parent) not in first["run.json"].decode()  # no absolute paths
    assert CliRunner().invoke(app, _run_args(tiny, "--batch-size", "1")).exit_code == 0
    assert {name: (out / name).read_bytes() for name in tracked} == first
    lines = [json.loads(ln) for ln in (out / "history.jsonl").read_text().splitlines()]
    assert [h["batch_size"] for h in lines] == [8, 1]
    assert lines[0]["data"] == str(tiny["data"].resolve()) and lines[0]["timings"]["static"]


def _in_the_way(tiny: dict[str, Path]) -> Path:
    blocker = tiny["data"].parent / "afile"
    blocker.write_text("not a folder")
    return blocker


@pytest.mark.parametrize("command", ["run", "reenact", "prepare", "report"])
def test_unwritable_output_is_one_line(
    tiny: dict[str, Path], monkeypatch: pytest.MonkeyPatch, command: str
) -> None:
    """`--out` under a file or on a read-only file system gave tracebacks."""
    import errno

    blocker = _in_the_way(tiny)
    src, drv = str(tiny["data"] / "a_000"), str(tiny["data"] / "b_000")
    args = {
        "run": _run_args({**tiny, "out": blocker / "run"}),
        "reenact": ["reenact", "--method", "static", "--source", src, "--driving", drv,
                    "--out", str(blocker / "x")],
        "prepare": ["prepare", "hdtf", "--raw", str(tiny["data"]), "--out", str(blocker)],
        "report": ["report", str(tiny["out"])],
    }[command]  # fmt: skip
    if command == "report":
        assert CliRunner().invoke(app, _run_args(tiny)).exit_code == 0
        summary = (tiny["out"] / "summary.csv").read_bytes()
        (tiny["out"] / "tables").rename(tiny["out"] / "old")
        (tiny["out"] / "tables").write_text("in the way")
    _one_error(CliRunner().invoke(app, args), "a file is in the way")
    if command == "report":
        assert (tiny["out"] / "summary.csv").read_bytes() == summary  # finished work kept
        (tiny["out"] / "tables").unlink()

    def read_only(*a, **k):
        raise OSError(errno.EROFS, "Read-only file system", str(tiny["out"]))

    monkeypatch.setattr("tempfile.mkstemp", read_only)
    monkeypatch.setattr("pathlib.Path.mkdir", read_only)
    if command != "report":
        args = [str(tiny["out"]) if a.startswith(str(blocker)) else a for a in args]
    _one_error(CliRunner().invoke(app, args), "the file system is read-only")


def test_an_empty_frame_folder_is_named(tiny: dict[str, Path]) -> None:
    """An empty real/b_000 gave "no videos found", or dropped b_000 from the scores."""
    (tiny["data"] / "c_000").mkdir()
    args = ["score", "--fake", str(tiny["data"]), "--real", str(tiny["data"]), "--metrics", "l1"]
    _one_error(CliRunner().invoke(app, args), f"{tiny['data'] / 'c_000'}: no frames")


def test_a_source_a_method_refuses_is_named(
    tiny: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """landmark-warp on a source without a face said only "source frame has no
    detectable face": which file, which job?"""
    _plugin(tiny, monkeypatch, "faceless", (
        "from reenactbench.errors import InputError\n"
        "class Faceless:\n"
        "    name = 'faceless'\n"
        "    resolution = 32\n"
        "    weights = ()\n"
        "    def __init__(self, device='cpu', weights=None): pass\n"
        "    def reenact(self, source, driving):\n"
        "        raise InputError('source frame has no detectable face')\n"
        "        yield source\n"
    ))  # fmt: skip
    args = [*_run_args(tiny), "-m", "faceless:Faceless"]
    result = CliRunner().invoke(app, args)
    _one_error(result, f"{tiny['data'] / 'a_000'}: frame 0: method 'faceless' cannot use it")
    assert "job a_000__a_000_f000000): source frame has no detectable face" in result.stderr
    assert (tiny["out"] / "cache" / "static").is_dir()  # the finished jobs stay


@pytest.mark.parametrize("name", ["lpips-alex", "fid-inception"])
def test_random_bytes_as_a_weight_are_one_line(tiny: dict[str, Path], name: str) -> None:
    junk = tiny["data"].parent / "junk.pt"
    junk.write_bytes(os.urandom(50_000))
    metric = {"lpips-alex": "lpips", "fid-inception": "fid"}[name]
    args = ["score", "--fake", str(tiny["data"]), "--real", str(tiny["data"]), "--metrics", metric,
            "--weights", f"{name}={junk}"]  # fmt: skip
    _one_error(CliRunner().invoke(app, args), f"{junk}: cannot be read as a {name} weight")


def test_the_package_builds_without_warnings(tmp_path: Path) -> None:
    """setuptools warned at install (a TOML licence table; configs/ outside `packages`);
    the wheel must hold every data file the code reads."""
    import subprocess
    import sys
    import zipfile

    root = Path(__file__).resolve().parents[1]
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(tmp_path), str(root)],
        capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "always"},
    )  # fmt: skip
    assert build.returncode == 0, build.stderr
    assert "Warning" not in build.stdout + build.stderr, build.stdout + build.stderr
    (wheel,) = tmp_path.glob("*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for data in ("reenactbench/baselines/hybrid/configs/tiny.toml",
                 "reenactbench/protocols/demo_same_id.toml",
                 "reenactbench/paper_results/table1_same_id.csv"):  # fmt: skip
        assert data in names


def test_no_stray_warnings_from_our_code() -> None:
    """numpy's "Mean of empty slice" (a correlation over a video without faces) and
    torch's "non-writable array" (frames resized by PIL) were printed to users."""
    import warnings

    import numpy as np

    from reenactbench.metrics.base import pearson_over_time
    from reenactbench.video import resize

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        no_face = np.full((4, 3), np.nan)
        r, excluded, frozen = pearson_over_time(no_face, no_face)
        assert np.isnan(r) and excluded == 3 and frozen == 0
        small = resize(np.zeros((16, 16, 3), np.uint8), 8)
        assert small.flags.writeable
        torch.from_numpy(small)


def test_the_hybrid_sampler_reads_unpadded_frames_in_numeric_order(tmp_path: Path) -> None:
    """The training sampler listed frame files itself, sorted as text (10.png before 2.png)."""
    import numpy as np
    from PIL import Image
    from reenactbench.baselines.hybrid.pairs import _n_frames, _read_selected

    from reenactbench.data.dataset import VideoRecord

    folder = tmp_path / "v"
    folder.mkdir()
    for i in range(12):
        Image.fromarray(np.full((8, 8, 3), 20 * i, np.uint8)).save(folder / f"{i}.png")
    video = VideoRecord("v", "v", folder)
    frames = _read_selected(video, np.array([2, 10]))
    assert [int(f[0, 0, 0]) // 20 for f in frames] == [2, 10] and _n_frames(video) == 12
