"""Metric conventions (issue 12): each has a stated default, a caption line in the
tables, and a test here that fails when the convention is broken."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest

from reenactbench.protocol import load_protocol
from reenactbench.report import write_report
from reenactbench.runner import RunOptions, run_protocol
from tests.synthetic import read_summary, write_folder_dataset, write_protocol


@pytest.fixture
def data(tmp_path: Path) -> Path:
    return write_folder_dataset(tmp_path / "data", ["a_000", "b_000"], n=5, size=256)


def _run(tmp_path: Path, data: Path, kind: str = "same-id", **extra: object) -> Path:
    proto = write_protocol(tmp_path, kind, frames=5, metrics=["l1", "psnr"], **extra)
    out = tmp_path / f"run_{kind}_{len(extra)}"
    run_protocol(load_protocol(proto), RunOptions(data, ["static", "oracle"], out))
    write_report(out, ["md", "latex"])
    return out


def _info(row: dict[str, str]) -> dict:
    return json.loads(row["info"]) if row["info"] else {}


def test_the_source_frame_is_not_scored_by_default(tmp_path: Path, data: Path) -> None:
    """Frame 0 of a same-id driving video is the source: `static` copied it and scored
    PSNR inf, ranked best. It is an input, not a prediction."""
    s = read_summary(_run(tmp_path, data))
    static = s["static", "psnr"]
    assert math.isfinite(float(static["value"]))
    assert _info(static)["source_frame_left_out"] == 2  # one frame per job
    s2 = read_summary(_run(tmp_path, data, score_source_frame=True))
    assert float(s2["static", "psnr"]["value"]) == math.inf
    assert _info(s2["static", "psnr"])["exact_frames"] == 2
    assert float(s2["static", "l1"]["value"]) < float(s["static", "l1"]["value"])


def test_robustness_leaves_out_each_runs_own_source_frame(tmp_path: Path, data: Path) -> None:
    out = _run(tmp_path, data, "robustness", drivers=2, sources=3)
    s = read_summary(out)
    assert math.isfinite(float(s["static", "psnr"]["value"]))  # sources 0, 2, 4: all left out
    assert _info(s["static", "psnr"])["source_frame_left_out"] == 6


def test_exact_frames_print_as_infinity_and_are_never_bold(tmp_path: Path, data: Path) -> None:
    md = (_run(tmp_path, data) / "tables" / "table1_same_id.md").read_text()
    rows = {ln.split(" | ")[0].strip("| "): ln for ln in md.splitlines() if ln.startswith("| ")}
    assert re.search(r"\|\s+\u221e \[", rows["oracle"]) and "**\u221e**" not in md
    assert "exact_frames: 8" in md
    assert "**" not in rows["static"].split(" | ")[2]  # the only finite PSNR: nothing to rank
    tex = (tmp_path / "run_same-id_0" / "tables" / "table1_same_id.tex").read_text()
    assert r"$\infty$" in tex


def test_caption_states_the_source_frame_rule(tmp_path: Path, data: Path) -> None:
    md = (_run(tmp_path, data) / "tables" / "table1_same_id.md").read_text()
    assert "leave out the driving frame that is the source" in md
    md2 = _run(tmp_path, data, score_source_frame=True) / "tables" / "table1_same_id.md"
    assert "The driving frame that is the source is scored" in md2.read_text()


def test_au_gaze_groups_weigh_the_same() -> None:
    """rho_AU+GZ = mean(rho_AU, rho_GZ) by default; `series` pools all 19 series."""
    import numpy as np

    from reenactbench.metrics.base import JobPart, grouped_pearson, job_value

    rng = np.random.default_rng(0)
    real = rng.normal(size=(40, 19))
    fake = real.copy()
    fake[:, 17:] = -real[:, 17:]  # AUs follow (r = 1), gaze is mirrored (r = -1)
    assert grouped_pearson(fake, real, [17, 2])[0] == pytest.approx(0.0)
    assert grouped_pearson(fake, real)[0] == pytest.approx((17 - 2) / 19)
    part = JobPart(fake=fake, real=real, info={"series_groups": [17, 2]})
    assert job_value("temporal", part) == pytest.approx(0.0)


def test_every_convention_has_a_caption_line() -> None:
    from reenactbench.report import caption_lines

    def lines(kind: str, metrics: list[str], **proto: object) -> str:
        return "\n".join(caption_lines({"protocol": {"kind": kind, **proto}, "metrics": metrics}))

    assert "leave out the driving frame" in lines("same-id", ["l1"])
    assert "leave out the driving frame" not in lines("cross-id", ["l1"])
    assert "\u221e" in lines("cross-id", ["psnr"]) and "\u221e" not in lines("cross-id", ["l1"])
    assert "scores 1 (no identity)" in lines("cross-id", ["id"])
    assert "counts as r = 0" in lines("same-id", ["pose_corr"])
    assert "mean of rho_AU and rho_GZ" in lines("cross-id", ["au_gaze_corr"])
    assert "mean of 19 r" in lines("cross-id", ["au_gaze_corr"], au_gaze_pooling="series")
    assert "StyleGAN-V" in lines("cross-id", ["fvd"], fvd_clips="stylegan-v")
    assert "biased upwards by sample size" in lines("robustness", ["fid"])
    assert "biased" not in lines("same-id", ["fid"])


def test_pooled_fvd_uses_its_clip_protocols_covariance() -> None:
    """stylegan-v's FVD pools with ddof=0 (StyleGAN-V's metric_utils); aligned-all and
    FID keep ddof=1 (pytorch-fid)."""
    import numpy as np

    from reenactbench.metrics.base import JobPart, pooled_value
    from reenactbench.metrics.frechet import GaussianStats, frechet_distance

    rng = np.random.default_rng(1)
    fake, real = rng.normal(size=(6, 4)), rng.normal(1.0, 2.0, size=(6, 4))
    a, b = GaussianStats.empty(4), GaussianStats.empty(4)
    a.add(fake)
    b.add(real)
    for info, ddof in (({}, 1), ({"covariance": "ddof=0"}, 0)):
        value, _ = pooled_value("distribution", [JobPart(fake=fake, real=real, info=info)])
        assert value == pytest.approx(frechet_distance(a, b, ddof), rel=1e-12)
    assert frechet_distance(a, b, 0) != pytest.approx(frechet_distance(a, b, 1), rel=1e-3)


def test_unknown_fvd_clips_or_pooling_is_a_usage_error(tmp_path: Path, data: Path) -> None:
    from typer.testing import CliRunner

    from reenactbench.cli import app

    for field, value, text in (
        ("fvd_clips", "random", "protocol field fvd_clips random: use one of aligned-all"),
        ("temporal_backend", "nope", "protocol's temporal_backend) nope: use one of"),
    ):
        proto = write_protocol(tmp_path, "same-id", frames=5, metrics=["l1"], **{field: value})
        args = ["run", "same-id", "--data", str(data), "-m", "static", "--protocol", str(proto),
                "--out", str(tmp_path / "out")]  # fmt: skip
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 2 and text in result.stderr, result.stderr
        assert not (tmp_path / "out").exists()


def test_the_protocol_names_the_backends_and_flags_override(tmp_path: Path, data: Path) -> None:
    """The demo protocols ask for the download-free backends; `demo` and the API read
    them from the protocol (they used the package defaults); a flag overrides."""
    from typer.testing import CliRunner

    from reenactbench.cli import app

    proto = write_protocol(tmp_path, "same-id", frames=2, metrics=["l1", "pose_corr"],
                           temporal_backend="mediapipe", id_backend="dlib")  # fmt: skip
    out = run_protocol(load_protocol(proto), RunOptions(data, ["static"], tmp_path / "api"))
    run = json.loads((out / "run.json").read_text())
    assert run["metric_options"]["temporal_backend"] == "mediapipe"
    assert run["metric_options"]["id_backend"] == "dlib"
    pose = read_summary(out)["static", "pose_corr"]
    assert _info(pose)["backend"] == "mediapipe"
    # no face in any frame of these videos: the table says so, never a bare NaN
    assert pose["value"] == "" or pose["note"].startswith("undefined"), pose
    assert _info(pose)["excluded_videos"] == 2 and _info(pose)["nan_frames_real"] == 4
    args = ["run", "same-id", "--data", str(data), "-m", "static", "--protocol", str(proto),
            "--temporal-backend", "landmarks", "--out", str(tmp_path / "cli")]  # fmt: skip
    assert CliRunner().invoke(app, args).exit_code == 0
    run = json.loads((tmp_path / "cli" / "run.json").read_text())
    assert run["metric_options"]["temporal_backend"] == "landmarks"
    assert run["metric_options"]["id_backend"] == "dlib"


def test_a_value_that_rounds_to_zero_has_no_sign() -> None:
    """The oracle's ID (1 - cos = -1e-16) printed as "-0.000", bold."""
    from reenactbench.report.tables import format_value

    assert format_value("same-id", "id", -1e-17) == "0.000"
    assert format_value("robustness", "id", -1e-17, 1e-18) == "0.0 \u00b1 0.0"
    assert format_value("same-id", "l1", -0.5) == "-0.50"


@pytest.mark.parametrize(
    "field, value, module, text",
    [
        ("temporal_backend", "mediapipe", "mediapipe", "pip install 'reenactbench[mediapipe]'"),
        ("id_backend", "dlib", "dlib", "pip install 'reenactbench[faces]'"),
    ],
)
def test_a_named_backend_without_its_package_is_a_usage_error(
    tmp_path: Path, data: Path, monkeypatch: pytest.MonkeyPatch, field: str, value: str,
    module: str, text: str,
) -> None:  # fmt: skip
    """Asked for by name, a backend whose package is missing stops the run (exit 2,
    naming the extra) instead of quietly skipping the metric."""
    import importlib.util

    from typer.testing import CliRunner

    from reenactbench.cli import app
    from reenactbench.faces import faces_unavailable

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a, **k: None if name == module else real(name)
    )
    faces_unavailable.cache_clear()
    metric = "pose_corr" if field == "temporal_backend" else "id"
    proto = write_protocol(tmp_path, "same-id", frames=2, metrics=[metric], **{field: value})
    args = ["run", "same-id", "--data", str(data), "-m", "static", "--protocol", str(proto),
            "--out", str(tmp_path / "out")]  # fmt: skip
    result = CliRunner().invoke(app, args)
    faces_unavailable.cache_clear()
    errors = [ln for ln in result.stderr.splitlines() if ln.startswith("error:")]
    assert result.exit_code == 2 and len(errors) == 1, result.output
    assert f"metric {metric}" in errors[0] and text in errors[0], errors
    assert not (tmp_path / "out").exists()  # before any work
