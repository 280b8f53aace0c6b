"""Method options from the command line: `reenact --option`, `run --method-option`."""

from __future__ import annotations

import csv
import textwrap
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from reenactbench.cli import app
from reenactbench.video import read_frames
from tests.synthetic import write_folder_dataset

PLUGIN = textwrap.dedent("""
    import numpy as np

    class Dim:
        name, resolution, weights = "dim", 32, ()
        def __init__(self, device="cpu", weights=None, level=0):
            self.level = level
        def reenact(self, source, driving):
            for _ in driving:
                yield np.full((32, 32, 3), self.level, np.uint8)
""")


@pytest.fixture
def plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "dimplugin.py").write_text(PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    return write_folder_dataset(tmp_path / "data", ["a_000", "b_000"], n=3, size=32)


def test_reenact_option_reaches_the_method(plugin: Path, tmp_path: Path) -> None:
    args = ["reenact", "--method", "dimplugin:Dim", "--source", str(plugin / "a_000"),
            "--driving", str(plugin / "b_000"), "--out", str(tmp_path / "o")]  # fmt: skip
    assert CliRunner().invoke(app, [*args, "--option", "level=7"]).exit_code == 0
    assert np.all(read_frames(tmp_path / "o") == 7)
    bad = CliRunner().invoke(app, [*args, "--option", "levels=7"])
    assert bad.exit_code == 2 and "bad options ['levels']" in bad.stderr
    assert CliRunner().invoke(app, [*args, "--option", "novalue"]).exit_code == 2


def test_run_method_option(plugin: Path, tmp_path: Path) -> None:
    proto = tmp_path / "p.toml"
    proto.write_text('name = "p"\nkind = "same-id"\nsplit = "all"\nframes = 3\n'
                     'resolution = 32\nmetrics = ["l1"]\n')  # fmt: skip
    result = CliRunner().invoke(app, [
        "--quiet", "run", "same-id", "--data", str(plugin), "--protocol", str(proto),
        "-m", "dimplugin:Dim", "--method-option", "dimplugin:Dim:level=255",
        "--out", str(tmp_path / "run"),
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    with (tmp_path / "run" / "summary.csv").open() as f:
        (row,) = list(csv.DictReader(f))
    # frame 0 of each video is its source: left out (protocol score_source_frame = false)
    frames = np.concatenate([read_frames(plugin / v, size=32)[1:] for v in ("a_000", "b_000")])
    assert float(row["value"]) == pytest.approx(np.abs(255 - frames.astype(float)).mean())
