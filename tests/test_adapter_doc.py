"""The adapter example in docs/adapters.md runs as written."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import numpy as np
import pytest

from reenactbench.methods import load_method
from reenactbench.protocol import load_protocol
from reenactbench.runner import RunOptions, run_protocol
from tests.synthetic import write_folder_dataset

DOC = Path(__file__).parents[1] / "docs" / "adapters.md"


def test_adapter_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    code = re.search(r"```python\n(.*?)```", DOC.read_text(), re.S)
    assert code is not None
    (tmp_path / "mirror_method.py").write_text(code.group(1))
    monkeypatch.syspath_prepend(str(tmp_path))
    method = load_method("mirror_method:MirrorMethod", alpha=0.0, batch_size=3)
    frames = [np.full((256, 256, 3), i, np.uint8) for i in range(5)]
    frames[0][:, :10] = 200
    out = list(method.reenact(frames[0], iter(frames)))
    assert len(out) == 5 and out[0].dtype == np.uint8
    assert np.array_equal(out[0], frames[0][:, ::-1])  # alpha=0: the mirrored driving frame

    data = write_folder_dataset(tmp_path / "data", ["a_000", "b_000"], n=4, size=32)
    proto_file = tmp_path / "p.toml"
    proto_file.write_text(
        'name = "p"\nkind = "same-id"\nsplit = "all"\nframes = 4\nmetrics = ["l1"]\n'
    )
    run = run_protocol(
        load_protocol(proto_file),
        RunOptions(data=data, methods=["mirror_method:MirrorMethod"], out=tmp_path / "run"),
    )
    with (run / "summary.csv").open() as f:
        (row,) = list(csv.DictReader(f))
    assert row["method"] == "mirror" and float(row["value"]) > 0
