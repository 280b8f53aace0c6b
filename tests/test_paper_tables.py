"""The paper's Tables 1-3 as shipped in ``reenactbench.paper_results`` (results/paper/)."""

from __future__ import annotations

import csv
import io
import math
from importlib.resources import files

import pytest

from reenactbench.metrics import PAPER_ORDER
from reenactbench.report.paper import (
    PAPER_LABELS,
    ROBUSTNESS_EXPONENTS,
    load_paper_table,
    method_label,
)
from reenactbench.report.tables import format_value

TABLES = {
    "same-id": "table1_same_id",
    "cross-id": "table2_cross_id",
    "robustness": "table3_robustness",
}
COLUMNS = [
    "method", "label", "resolution", "metric", "printed", "printed_std", "scale", "value", "std",
    "rank",
]  # fmt: skip


def _rows(name: str) -> list[dict[str, str]]:
    text = files("reenactbench.paper_results").joinpath(f"{name}.csv").read_text("utf-8")
    reader = csv.DictReader(io.StringIO(text))
    assert reader.fieldnames == COLUMNS
    return list(reader)


def _cell(name: str, method: str, metric: str) -> dict[str, str]:
    (row,) = [r for r in _rows(name) if r["method"] == method and r["metric"] == metric]
    return row


def test_package_data_is_installed() -> None:
    for name in TABLES.values():
        assert files("reenactbench.paper_results").joinpath(f"{name}.csv").is_file()


@pytest.mark.parametrize(
    ("name", "methods", "metrics"),
    [("table1_same_id", 8, 11), ("table2_cross_id", 10, 5), ("table3_robustness", 6, 4)],
)
def test_row_counts(name: str, methods: int, metrics: int) -> None:
    rows = _rows(name)
    assert len(rows) == methods * metrics
    assert len({r["method"] for r in rows}) == methods
    assert len({r["metric"] for r in rows}) == metrics
    assert len({(r["method"], r["metric"]) for r in rows}) == len(rows)


@pytest.mark.parametrize("name", TABLES.values())
def test_value_is_printed_times_scale(name: str) -> None:
    for r in _rows(name):
        assert math.isclose(float(r["value"]), float(r["printed"]) * float(r["scale"]))
        if r["printed_std"]:
            assert math.isclose(float(r["std"]), float(r["printed_std"]) * float(r["scale"]))
        else:
            assert r["std"] == ""
        assert r["metric"] in PAPER_ORDER
        assert r["label"] == PAPER_LABELS[r["method"]]
        assert r["rank"] in ("", "second")


def test_pinned_cells() -> None:
    ours = _cell("table1_same_id", "hybrid", "fid")
    assert (ours["label"], ours["printed"], float(ours["value"])) == ("Ours", "19.3", 19.3)
    assert ours["resolution"] == "1024"
    fomm_l1 = _cell("table1_same_id", "fomm", "l1")
    assert (fomm_l1["printed"], fomm_l1["rank"], fomm_l1["resolution"]) == ("2.37", "second", "256")
    assert _cell("table1_same_id", "hybrid", "id")["rank"] == "second"  # underlined 0.097
    assert _cell("table1_same_id", "fs-vid2vid", "fvd")["printed"] == "255.0"
    assert _cell("table1_same_id", "hybrid-no-hybrid", "gaze_corr")["printed"] == "0.798"
    assert _cell("table2_cross_id", "fomm", "fvd")["printed"] == "529.4"
    assert _cell("table2_cross_id", "hybrid", "au_gaze_corr")["printed"] == "0.718"
    pti = _cell("table2_cross_id", "hybrid-pti", "fid")
    assert (pti["label"], pti["printed"]) == ("Ours \u2013 CMA + PTI", "84.8")
    lpips = _cell("table3_robustness", "fomm", "lpips")
    assert (lpips["printed"], lpips["printed_std"], lpips["scale"]) == ("7.5", "2.1", "0.01")
    assert math.isclose(float(lpips["value"]), 0.075)
    assert math.isclose(float(lpips["std"]), 0.021)
    fvd = _cell("table3_robustness", "hybrid", "fvd")
    assert math.isclose(float(fvd["value"]), 80.0) and math.isclose(float(fvd["std"]), 10.0)


def test_underline_counts() -> None:
    """paper.md shows 11 underlines in Table 1, 6 in Table 2, none in Table 3."""
    counts = [sum(r["rank"] == "second" for r in _rows(n)) for n in TABLES.values()]
    assert counts == [11, 6, 0]


def test_typo_fixed() -> None:
    assert {r["label"] for r in _rows("table1_same_id") if r["method"] == "pirenderer"} == {
        "PIRenderer"
    }
    assert method_label("pirenderer") == "PIRenderer"


def test_table3_scales_match_report_constants() -> None:
    for r in _rows("table3_robustness"):
        assert float(r["scale"]) == 10.0 ** ROBUSTNESS_EXPONENTS[r["metric"]]


@pytest.mark.parametrize("kind", TABLES)
def test_report_format_reproduces_printed(kind: str) -> None:
    """Formatting the stored values the report's way gives back the printed text."""
    for cells in load_paper_table(kind).values():
        for c in cells.values():
            expected = f"{c.printed} \u00b1 {c.printed_std}" if c.printed_std else c.printed
            assert format_value(kind, c.metric, c.value, c.std) == expected
