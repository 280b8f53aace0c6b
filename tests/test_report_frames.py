"""Tables as pandas DataFrames: ``reenactbench.load_run``, ``table_frame``, ``render_html``
and the docs' notebook example."""

from __future__ import annotations

import csv
import json
import math
import re
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd
import pytest

import reenactbench
from reenactbench.errors import InputError
from reenactbench.report.load import RunTables, load_run
from reenactbench.report.tables import (
    render_html,
    render_latex,
    render_markdown,
    table_frame,
)
from tests.synthetic import write_summary_run as make_run

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "results" / "demo" / "same-id"
NOT_IMPL = "skipped: not implemented in reenactbench 0.1.0 (metric suite, issue #4)"
SCRIPT = "<script>alert(1)</script>"


def md_cells(text: str) -> dict[str, list[str]]:
    """Markdown table rows: label -> cell texts, padding and bold removed."""
    out = {}
    for line in text.splitlines():
        if line.startswith("| ") and not line.startswith("| Method"):
            cells = [c.strip().replace("**", "") for c in line.strip("|").split(" | ")]
            out[cells[0]] = cells[1:]
    return out


def csv_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def number(text: str) -> float:
    return float(text) if text.strip() else math.nan


def same(a: object, b: float) -> bool:
    return (pd.isna(a) and math.isnan(b)) or float(a) == b  # type: ignore[arg-type]


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    rows = [
        ("fomm", "l1", 2.3712, 0.3, ""),
        ("fomm", "psnr", 32.84, 1.0, ""),
        ("fomm", "lpips", None, None, NOT_IMPL),
        ("NA", "l1", 2.281, 0.2, ""),  # pandas' default NA strings are method names here
        ("NA", "psnr", 33.06, 1.0, ""),
        ("null", "l1", 4.5, None, "partial: 3 of 25 videos"),
        ("null", "psnr", math.nan, None, ""),  # written as "nan": NaN, printed "skipped"
    ]
    return make_run(
        tmp_path / "run", "same-id", ["fomm", "NA", "null"], ["psnr", "lpips", "l1"], rows
    )


def test_load_run_matches_the_csv_and_the_markdown(run_dir: Path) -> None:
    run = load_run(run_dir)
    assert isinstance(run, RunTables) and run.info.methods == ("fomm", "NA", "null")
    assert list(run.summary["method"]) == [r["method"] for r in csv_rows(run_dir / "summary.csv")]
    for (_, got), want in zip(
        run.summary.iterrows(), csv_rows(run_dir / "summary.csv"), strict=True
    ):
        assert (got["method"], got["metric"], got["note"]) == (
            want["method"], want["metric"], want["note"],
        )  # fmt: skip
        for col in ("value", "std", "n", "n_frames"):
            assert same(got[col], number(want[col])), (col, got[col], want[col])
    assert run.summary["value"].dtype == "float64" and run.summary["n"].dtype == "Int64"
    assert run.per_video.empty and list(run.per_video.columns)[:2] == ["method", "video"]

    md = md_cells(render_markdown(run.layout))
    assert list(run.table.index) == ["FOMM", "NA", "null"] == list(md)
    assert list(run.table.columns) == ["L1 ↓", "LPIPS ↓", "PSNR ↑"]
    for label, cells in run.table.iterrows():
        assert list(cells) == md[label]
    assert list(run.table.loc["NA"]) == ["2.28", "—", "33.1"]
    assert list(run.table.loc["null"]) == ["4.50 [2]", "—", "skipped [3]"]
    assert run.footnotes == ("not implemented in reenactbench 0.1.0 (metric suite, issue #4)",
                             "partial: 3 of 25 videos", "no value in summary.csv")  # fmt: skip
    long = run.long.set_index(["method", "metric"])
    assert long.loc[("fomm", "l1"), "value"] == 2.3712 and long.loc[("NA", "l1"), "n"] == 25
    assert pd.isna(long.loc[("fomm", "lpips"), "value"])


def test_load_run_of_the_committed_demo() -> None:
    run = load_run(DEMO, paper=True)
    want = csv_rows(DEMO / "summary.csv")
    assert len(run.summary) == len(want)
    for (_, got), row in zip(run.summary.iterrows(), want, strict=True):
        assert (got["method"], got["metric"]) == (row["method"], row["metric"])
        for col in ("value", "std", "n", "n_frames", "ci_low", "ci_high"):
            assert same(got[col], number(row[col])), (col, got[col], row[col])
    assert math.isinf(run.summary.set_index(["method", "metric"]).loc[("oracle", "psnr"), "value"])
    per_video = csv_rows(DEMO / "per_video.csv")
    assert len(run.per_video) == len(per_video) and run.per_video["value"].dtype == "float64"
    assert run.per_video["value"].tolist() == [float(r["value"]) for r in per_video]

    md = md_cells((DEMO / "tables" / "table1_same_id.md").read_text(encoding="utf-8"))
    assert list(run.table.index) == [label for label in md if label != "*paper*"]
    for label, cells in run.table.iterrows():
        assert list(cells) == md[label], label
    long = csv_rows(DEMO / "tables" / "table1_same_id.csv")
    assert len(run.long) == len(long)
    for (_, got), row in zip(run.long.iterrows(), long, strict=True):
        assert [got[c] for c in ("source", "method", "label", "metric", "note")] == [
            row[c] for c in ("source", "method", "label", "metric", "note")
        ]
        assert same(got["value"], number(row["value"])) and same(got["std"], number(row["std"]))
    assert run.paper_table().equals(run.table)
    assert "FOMM (paper)" not in load_run(DEMO).table.index


def test_load_run_is_a_lazy_attribute_of_the_package() -> None:
    assert reenactbench.load_run is load_run and "load_run" in reenactbench.__all__


def test_load_run_of_a_folder_that_is_not_a_run(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=rf"{re.escape(str(tmp_path))} is not a run directory"):
        load_run(tmp_path)
    make_run(tmp_path / "bad", "same-id", ["m"], ["l1"], [("m", "l1", 1.0, None, "")])
    with (tmp_path / "bad" / "per_video.csv").open("w", encoding="utf-8") as f:
        f.write("method,video,source,source_frame,metric,value,n_frames\nm,v,v,0,l1,oops,3\n")
    with pytest.raises(InputError, match=r"per_video\.csv: column value"):
        load_run(tmp_path / "bad")


class _Tags(HTMLParser):
    """Start tags and text of an HTML fragment."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def test_html_escapes_what_comes_from_the_run(tmp_path: Path) -> None:
    rows = [
        (SCRIPT, "l1", 2.0, 0.1, "odd: a & b <i>c</i>"),
        (SCRIPT, "psnr", 30.0, 1.0, ""),
        ("fomm", "l1", 3.0, 0.1, ""),
        ("fomm", "psnr", None, None, "skipped: weights <missing> & more"),
    ]
    run_dir = make_run(tmp_path, "same-id", [SCRIPT, "fomm"], ["l1", "psnr"], rows)
    info = json.loads((run_dir / "run.json").read_text(encoding="utf-8"))
    info["protocol"]["name"] = "p<b>&q"  # in the title (<caption>)
    info |= {"short_videos": {"<img src=x>": 3}, "setup": {"frames": 8}}  # a caption line
    (run_dir / "run.json").write_text(json.dumps(info), encoding="utf-8")
    run = load_run(run_dir, paper=True)
    page = render_html(run.layout)
    assert "protocol p&lt;b&gt;&amp;q;" in page and "&lt;img src=x&gt; (3)" in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert not re.search(r"<(script|i|b|img)[ >]", page.lower())
    assert "odd: a &amp; b &lt;i&gt;c&lt;/i&gt;" in page
    assert "weights &lt;missing&gt; &amp; more" in page
    parsed = _Tags()
    parsed.feed(page)
    names = [tag for tag, _ in parsed.tags]
    assert "html" not in names and "body" not in names and names.count("table") == 1
    assert ("table", {"id": "T_table1_same_id", "class": "results"}) in parsed.tags
    assert "caption" in names and any(a.get("class") == "caption" for t, a in parsed.tags)
    assert ("ol", {"class": "footnotes"}) in parsed.tags and names.count("li") == 2
    assert SCRIPT in parsed.text  # shown as text, exactly
    cells = [a.get("class") or "" for t, a in parsed.tags if t == "td"]
    assert sum("best" in c.split() for c in cells) == 1  # L1 of SCRIPT (2.00 < 3.00)
    assert any("paper" in c.split() for c in cells) and any("separator" in c for c in cells)


def test_html_marks_best_and_paper_cells(tmp_path: Path) -> None:
    rows = [("fomm", "l1", 3.0, 0.1, ""), ("hybrid", "l1", 2.0, 0.1, "")]
    run = load_run(make_run(tmp_path, "same-id", ["fomm", "hybrid"], ["l1"], rows), paper=True)
    parsed = _Tags()
    parsed.feed(render_html(run.layout))
    classes = [(a.get("class") or "").split() for t, a in parsed.tags if t == "td"]
    frame = table_frame(run.layout, "html")
    flat = [c for label, row in frame.iterrows() for c in (label, *row)]
    assert len(flat) == len(classes)
    best = [text for text, c in zip(flat, classes, strict=True) if "best" in c]
    assert best == ["2.00"]
    paper = {text for text, c in zip(flat, classes, strict=True) if "paper" in c and "method" in c}
    assert paper >= {"FOMM (paper)", "Ours (paper)", "LIA (paper)"}


def test_latex_paper_separator_is_before_the_paper_only_rows(tmp_path: Path) -> None:
    rows = [("fomm", "l1", 3.0, 0.1, ""), ("mine", "l1", 2.0, 0.1, "")]
    run = load_run(make_run(tmp_path, "same-id", ["fomm", "mine"], ["l1"], rows), paper=True)
    lines = render_latex(run.layout).splitlines()
    at = lines.index(r"\multicolumn{2}{l}{\textit{paper}} \\")
    assert lines[at - 3 : at] == [r"FOMM (paper) & 2.37 \\", r"mine & 2.00 \\", r"\midrule"]
    assert lines[at + 1] == r"PIRenderer (paper) & 3.52 \\"
    assert lines[:4] == [
        r"\begin{table}[t]",
        r"\centering",
        lines[2],
        r"\label{tab:table1_same_id}",
    ]
    assert lines[2].startswith(r"\caption{Table 1: same-identity")


def test_markdown_frame_escapes_pipes(tmp_path: Path) -> None:
    rows = [("a|b", "l1", 2.0, 0.1, "")]
    run = load_run(make_run(tmp_path, "same-id", ["a|b"], ["l1"], rows))
    assert list(table_frame(run.layout, "md").index) == ["a\\|b"]
    assert list(run.table.index) == ["a|b"]
    assert "| a\\|b " in render_markdown(run.layout)
    with pytest.raises(ValueError, match="unknown table style 'pdf'"):
        table_frame(run.layout, "pdf")


def docs_example() -> str:
    """The ```python block under "## From Python: load_run" in docs/reports.md."""
    text = (ROOT / "docs" / "reports.md").read_text(encoding="utf-8")
    section = text.split("\n## From Python: load_run\n", 1)[1].split("\n## ", 1)[0]
    return section.split("```python\n", 1)[1].split("\n```", 1)[0]


def test_docs_example_runs(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    monkeypatch.chdir(ROOT)
    names: dict[str, object] = {}
    exec(compile(docs_example(), "docs/reports.md", "exec"), names)
    run, means = names["run"], names["means"]
    assert isinstance(run, RunTables) and run.info.protocol == "demo_same_id"
    assert isinstance(means, pd.DataFrame)
    assert set(means.index) == {"static", "oracle", "landmark-warp"}
    want = {(r["method"], r["metric"]): number(r["value"]) for r in csv_rows(DEMO / "summary.csv")}
    assert means.loc["static", "l1"] == want[("static", "l1")]
    out = capsys.readouterr().out
    assert "demo_same_id" in out and "13.83 [1]" in out and "[2] weights missing" in out
    assert len(names["l1"]) == 6  # type: ignore[arg-type]
