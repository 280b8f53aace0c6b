"""Reports from fake run directories: table layout, number formats, paper rows, heatmaps."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from reenactbench.errors import InputError
from reenactbench.report import write_report
from reenactbench.report.heatmaps import load_heatmaps, shared_vmax
from reenactbench.report.tables import format_value
from tests.synthetic import write_summary_run as make_run

NOT_IMPL = "skipped: not implemented in reenactbench 0.1.0 (metric suite, issue #4)"
NO_WEIGHTS = "skipped: weights missing (reenactbench weights import i3d FILE)"


def md_header(text: str) -> list[str]:
    """Header cells of the Markdown table (padding removed)."""
    line = next(ln for ln in text.splitlines() if ln.startswith("| Method "))
    return [c.strip() for c in line.strip("|").split(" | ")]


def md_rows(text: str) -> dict[str, list[str]]:
    """Markdown table rows by label -> cell texts (label excluded)."""
    out = {}
    for line in text.splitlines():
        if line.startswith("| ") and not line.startswith("| Method"):
            cells = [c.strip() for c in line.strip("|").split(" | ")]
            out[cells[0]] = cells[1:]
    return out


@pytest.fixture
def same_id(tmp_path: Path) -> Path:
    rows = [
        ("fomm", "l1", 2.3712, 0.3, ""),
        ("fomm", "psnr", 32.84, 1.0, ""),
        ("fomm", "ssim", 0.95912, 0.01, ""),
        ("fomm", "lpips", 0.5, None, NOT_IMPL),  # a value beside a skip note must not print
        ("hybrid", "l1", 2.281, 0.2, ""),
        ("hybrid", "psnr", 33.06, 1.0, ""),
        ("hybrid", "ssim", 0.9571, 0.01, ""),
        ("hybrid", "lpips", None, None, NOT_IMPL),
    ]
    return make_run(
        tmp_path / "run", "same-id", ["fomm", "hybrid"], ["psnr", "lpips", "l1", "ssim"], rows
    )


def test_same_id_tables(same_id: Path) -> None:
    written = write_report(same_id)
    tables = same_id / "tables"
    tabs = [tables / f"table1_same_id.{ext}" for ext in ("csv", "tex", "md")]
    assert written[:4] == [*tabs, same_id / "report.html"]  # then the page's assets

    md = (tables / "table1_same_id.md").read_text(encoding="utf-8")
    assert md_header(md) == ["Method", "L1 ↓", "LPIPS ↓", "PSNR ↑", "SSIM ↑"]  # paper order
    rows = md_rows(md)
    assert rows["FOMM"] == ["2.37", "skipped [1]", "32.8", "**0.959**"]
    assert rows["Ours"] == ["**2.28**", "skipped [1]", "**33.1**", "0.957"]
    assert "[1] not implemented in reenactbench 0.1.0 (metric suite, issue #4)" in md
    assert "0.500" not in md and "(paper)" not in md

    tex = (tables / "table1_same_id.tex").read_text(encoding="utf-8")
    assert r"Method & L1 $\downarrow$ & LPIPS $\downarrow$ & PSNR $\uparrow$" in tex
    assert r"FOMM & 2.37 & skipped\textsuperscript{1} & 32.8 & 0.959 \\" in tex
    assert (
        r"\textsuperscript{1}not implemented in reenactbench 0.1.0 (metric suite, issue \#4)" in tex
    )

    with (tables / "table1_same_id.csv").open(newline="", encoding="utf-8") as f:
        long = list(csv.DictReader(f))
    assert len(long) == 8
    skipped = next(r for r in long if r["method"] == "fomm" and r["metric"] == "lpips")
    assert (skipped["value"], skipped["std"], skipped["note"]) == ("", "", NOT_IMPL)
    l1 = next(r for r in long if r["method"] == "fomm" and r["metric"] == "l1")
    assert l1 == {
        "source": "ours", "method": "fomm", "label": "FOMM", "metric": "l1",
        "value": "2.3712", "std": "0.3", "n": "25", "note": "",
    }  # fmt: skip


def test_same_id_paper_rows(same_id: Path) -> None:
    write_report(same_id, formats=["md", "csv"], paper=True)
    md = (same_id / "tables" / "table1_same_id.md").read_text(encoding="utf-8")
    labels = list(md_rows(md))
    assert labels[:5] == ["FOMM", "FOMM (paper)", "Ours", "Ours (paper)", "*paper*"]
    assert labels[5:] == [
        "PIRenderer (paper)", "LIA (paper)", "FS-Vid2Vid (paper)", "StyleHEAT (paper)",
        "Ours w/o ID reg (paper)", "Ours w/o Hybrid (paper)",
    ]  # fmt: skip
    rows = md_rows(md)
    assert rows["FOMM (paper)"] == ["2.37", "0.042", "32.8", "0.959"]
    assert rows["Ours (paper)"] == ["2.28", "0.027", "33.1", "0.967"]
    assert rows["FOMM"][0] == "2.37"  # paper numbers are never bolded or ranked with ours
    with (same_id / "tables" / "table1_same_id.csv").open(newline="", encoding="utf-8") as f:
        long = list(csv.DictReader(f))
    paper_l1 = next(r for r in long if r["source"] == "paper" and r["method"] == "fomm")
    assert (paper_l1["metric"], float(paper_l1["value"]), paper_l1["label"]) == ("l1", 2.37, "FOMM")


def test_cross_id_paper_dash_for_unreported(tmp_path: Path) -> None:
    rows = [
        ("fomm", "fid", 95.04, 2.0, ""),
        ("fomm", "au_gaze_corr", 0.4512, 0.1, ""),
        ("fomm", "l1", 7.123, 1.0, ""),
        ("mine", "fid", None, None, NO_WEIGHTS),
    ]
    run = make_run(tmp_path, "cross-id", ["fomm", "mine"], ["au_gaze_corr", "l1", "fid"], rows)
    assert write_report(run, formats=["md"], paper=True) == [run / "tables/table2_cross_id.md"]
    md = (run / "tables" / "table2_cross_id.md").read_text(encoding="utf-8")
    assert md_header(md) == ["Method", "L1 ↓", "FID ↓", "rho_AU+GZ ↑"]
    rows_md = md_rows(md)
    assert rows_md["FOMM"] == ["7.12", "95.0", "0.451"]
    assert rows_md["FOMM (paper)"] == ["—", "94.0", "0.450"]  # Table 2 has no L1
    assert rows_md["mine"] == ["—", "skipped [1]", "—"]  # unknown names print as-is
    assert rows_md["Ours \u2013 CMA + PTI (paper)"] == ["—", "84.8", "0.627"]
    assert "[1] weights missing (reenactbench weights import i3d FILE)" in md


def test_robustness_format_and_scales() -> None:
    assert format_value("robustness", "lpips", 0.075, 0.021) == "7.5 ± 2.1"
    assert format_value("robustness", "id", 0.23, 0.11) == "2.3 ± 1.1"
    assert format_value("robustness", "fid", 32.0, 10.0) == "3.2 ± 1.0"
    assert format_value("robustness", "fvd", 80.0, 10.0) == "0.8 ± 0.1"
    assert format_value("robustness", "l1", 2.3712, 0.5) == "2.37 ± 0.50"
    assert format_value("robustness", "lpips", 0.075) == "7.5"
    assert format_value("same-id", "lpips", 0.075, 0.021) == "0.075"
    assert format_value("same-id", "fvd_mouth", 19.94) == "19.9"


@pytest.fixture
def robustness(tmp_path: Path) -> Path:
    rows = [
        ("fomm", "lpips", 0.075, 0.021, ""),
        ("fomm", "l1", 2.3712, 0.5, ""),
        ("fomm", "fvd", None, None, NO_WEIGHTS),
        ("hybrid", "lpips", 0.03, 0.002, ""),
        ("hybrid", "l1", 2.1, 0.4, ""),
        ("hybrid", "fvd", None, None, NO_WEIGHTS),
    ]
    run = make_run(tmp_path / "run", "robustness", ["fomm", "hybrid"], ["fvd", "lpips", "l1"], rows)
    for method, level in (("fomm", 10.0), ("hybrid", 40.0)):
        for video in ("WDA_a", "WRA_b"):
            (run / "heatmaps" / method).mkdir(parents=True, exist_ok=True)
            ramp = np.linspace(0.0, level, 64 * 48, dtype=np.float32).reshape(64, 48)
            np.save(run / "heatmaps" / method / f"{video}.npy", ramp)
    return run


def test_robustness_tables(robustness: Path) -> None:
    write_report(robustness, formats=["md", "latex"], paper=True)
    md = (robustness / "tables" / "table3_robustness.md").read_text(encoding="utf-8")
    assert md_header(md) == ["Method", "L1 ↓", "LPIPS ↓ ×10⁻²", "FVD ↓ ×10²"]
    rows = md_rows(md)
    assert rows["FOMM"] == ["2.37 ± 0.50", "7.5 ± 2.1", "skipped [1]"]
    assert rows["Ours"] == ["**2.10 ± 0.40**", "**3.0 ± 0.2**", "skipped [1]"]
    assert rows["FOMM (paper)"] == ["—", "7.5 ± 2.1", "2.0 ± 0.7"]
    assert rows["Ours (paper)"] == ["—", "2.9 ± 0.2", "0.8 ± 0.1"]
    assert rows["StyleHEAT (paper)"] == ["—", "6.0 ± 0.4", "1.5 ± 0.2"]
    tex = (robustness / "tables" / "table3_robustness.tex").read_text(encoding="utf-8")
    assert r"LPIPS $\downarrow$ $\times 10^{-2}$" in tex
    assert r"FOMM & 2.37 $\pm$ 0.50 & 7.5 $\pm$ 2.1 & skipped\textsuperscript{1} \\" in tex


def test_heatmap_figures(robustness: Path) -> None:
    written = write_report(robustness, formats=["csv"])
    figures = robustness / "figures"
    assert written[1:] == [
        figures / "heatmap_fomm.png",
        figures / "heatmap_hybrid.png",
        figures / "heatmaps_grid.png",
    ]
    sizes = {p.name: Image.open(p).size for p in written[1:]}
    assert sizes["heatmap_fomm.png"] == (700, 240)  # 2 videos + mean panel
    assert sizes["heatmaps_grid.png"] == (500, 440)  # 2 methods x 2 videos
    for path in written[1:]:
        pixels = np.asarray(Image.open(path).convert("L"), dtype=np.float64)
        assert pixels.std() > 10  # not a blank canvas


def test_shared_colour_scale(robustness: Path) -> None:
    maps = load_heatmaps(robustness / "heatmaps", ["hybrid", "fomm"])
    assert list(maps) == ["hybrid", "fomm"] and list(maps["fomm"]) == ["WDA_a", "WRA_b"]
    pixels = np.concatenate([a.ravel() for v in maps.values() for a in v.values()])
    assert shared_vmax(maps) == pytest.approx(np.percentile(pixels, 99))
    assert 35.0 < shared_vmax(maps) < 40.0  # set by hybrid's larger errors, for both methods


def test_no_heatmaps_no_figures(same_id: Path) -> None:
    write_report(same_id, formats=["csv"])
    assert not (same_id / "figures").exists()


def test_bad_heatmap_shape(robustness: Path) -> None:
    np.save(robustness / "heatmaps" / "fomm" / "WDA_a.npy", np.zeros((2, 3, 4), np.float32))
    with pytest.raises(InputError, match=r"WDA_a\.npy: expected an \(H, W\) L1 heatmap"):
        write_report(robustness, formats=["csv"])


def test_not_a_run_directory(tmp_path: Path) -> None:
    with pytest.raises(
        InputError, match=r"is not a run directory \(no run\.json\); run `reenactbench run"
    ):
        write_report(tmp_path)
    (tmp_path / "run.json").write_text(
        json.dumps({"protocol": {"name": "x", "kind": "same-id"}, "methods": [], "metrics": []})
    )
    with pytest.raises(InputError, match=r"no summary\.csv"):
        write_report(tmp_path)


def test_unknown_format(same_id: Path) -> None:
    with pytest.raises(InputError, match="unknown report format pdf; use csv, latex, md or html"):
        write_report(same_id, formats=["md", "pdf"])
    assert not (same_id / "tables").exists()


def test_unknown_kind(tmp_path: Path) -> None:
    run = make_run(tmp_path, "same-id", ["fomm"], ["l1"], [("fomm", "l1", 2.0, 0.1, "")])
    info = json.loads((run / "run.json").read_text())
    info["protocol"]["kind"] = "talking-head"
    (run / "run.json").write_text(json.dumps(info))
    with pytest.raises(InputError, match="protocol kind 'talking-head'"):
        write_report(run)


def test_unquoted_note_is_an_error(same_id: Path) -> None:
    with (same_id / "summary.csv").open("a", encoding="utf-8") as f:
        f.write("fomm,fid,,,,,skipped: a, b\n")
    with pytest.raises(InputError, match="quote notes that hold commas"):
        write_report(same_id)
