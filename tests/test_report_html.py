"""The HTML report, opened in a real headless browser (Chromium + chromedriver from
Debian's packages, driven by Selenium): the page loads without console errors, every
cell of the results table is the Markdown table's cell and summary.csv's number, every
video plays with the job's frame count, the per-video table sorts, names are escaped.

The browser is installed by `make test` (apt-get, when it can). Without it these tests
skip with the reason, except where ``REENACTBENCH_REQUIRE_BROWSER`` (or ``CI``) is set:
then they fail. A screenshot of each page goes to ``$REENACTBENCH_ARTIFACTS`` (default
``.artifacts/`` in the repository).
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import av
import pytest
from typer.testing import CliRunner

from reenactbench.cli import REPORT_FORMATS, app
from reenactbench.protocol import load_protocol
from reenactbench.report import DEFAULT_FORMATS, write_report
from reenactbench.report.html import ASSETS, INDEX, PAGE
from reenactbench.report.tables import format_value
from reenactbench.runner import RunOptions, run_protocol
from tests.synthetic import write_folder_dataset, write_protocol

NAMES = ["a_000", "a_001", "b_000", "b_001"]
METHODS = ["static", "oracle"]
FRAMES = 6
ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = Path(os.environ.get("REENACTBENCH_ARTIFACTS", ROOT / ".artifacts"))


# ---------------------------------------------------------------------------- browser
def _need_browser(reason: str) -> None:
    if os.environ.get("REENACTBENCH_REQUIRE_BROWSER") or os.environ.get("CI"):
        pytest.fail(f"{reason} (required here: REENACTBENCH_REQUIRE_BROWSER or CI is set)")
    pytest.skip(f"{reason}; `make test` installs it (apt-get install chromium chromium-driver)")


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_path = shutil.which("chromedriver")
    if chromium is None or driver_path is None:
        _need_browser("no headless browser: chromium and chromedriver are not on PATH")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        _need_browser("selenium is not installed (the [dev] extra)")
    os.environ.setdefault("SE_OFFLINE", "true")  # never let Selenium Manager download
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1400,1000"):
        options.add_argument(arg)
    options.add_argument("--autoplay-policy=no-user-gesture-required")
    options.add_argument("--allow-file-access-from-files")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(driver_path))
    driver.set_script_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def open_page(driver, path: Path) -> list[dict]:
    """Load ``path``; returns the console entries of level SEVERE (errors)."""
    driver.get_log("browser")  # drop entries of earlier pages
    driver.get(path.resolve().as_uri())
    driver.execute_script("return document.readyState")
    return [e for e in driver.get_log("browser") if e.get("level") == "SEVERE"]


def screenshot(driver, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    out = ARTIFACTS / f"{name}.png"
    driver.save_screenshot(str(out))
    return out


ROWS_JS = """
return Array.from(arguments[0].querySelectorAll('tbody tr')).map(
  tr => Array.from(tr.children).map(c => c.textContent.trim()));
"""
VIDEO_JS = """
const done = arguments[arguments.length - 1];
const videos = Array.from(document.querySelectorAll('video'));
Promise.all(videos.map(v => new Promise(resolve => {
  const report = () => resolve({src: v.currentSrc, ready: v.readyState, error: v.error &&
    v.error.code, duration: v.duration, fps: +v.dataset.fps, frames: +v.dataset.frames,
    type: v.querySelector('source').type,
    canPlay: v.canPlayType(v.querySelector('source').type)});
  if (v.readyState >= 2) { report(); return; }
  v.addEventListener('loadeddata', report, {once: true});
  v.addEventListener('error', report, {once: true});
  v.load();
}))).then(done);
"""


# ------------------------------------------------------------------------------ runs
@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with a same-id and a robustness run of static and oracle on synthetic
    videos, frames saved, reported as `reenactbench report ROOT --paper` writes it."""
    tmp = tmp_path_factory.mktemp("html")
    data = write_folder_dataset(tmp / "data", NAMES, n=FRAMES, size=48)
    root = tmp / "runs"
    for kind in ("same-id", "robustness"):
        proto = write_protocol(tmp, kind, frames=FRAMES, metrics=["l1", "psnr", "ssim"])
        opts = RunOptions(
            data=data, methods=METHODS, out=root / kind, save_frames=True,
            bootstrap=200 if kind == "same-id" else 0,  # intervals in the same-id cells
        )  # fmt: skip
        run_protocol(load_protocol(proto), opts)
    result = CliRunner().invoke(app, ["report", str(root), "--paper", "--data", str(data)])
    assert result.exit_code == 0, result.output
    return root


def md_rows(run_dir: Path) -> dict[str, list[str]]:
    """The Markdown table's rows (label -> cells), bold and italic marks removed."""
    md = next((run_dir / "tables").glob("*.md")).read_text(encoding="utf-8")
    rows = {}
    for line in md.splitlines():
        cells = [c.strip().replace("*", "") for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and not set(line) <= set("|-: "):
            rows[cells[0]] = cells[1:]
    return rows


def summary(run_dir: Path) -> dict[tuple[str, str], dict[str, str]]:
    with (run_dir / "summary.csv").open(newline="") as f:
        return {(r["method"], r["metric"]): r for r in csv.DictReader(f)}


# ----------------------------------------------------------------------------- tests
def test_default_formats_agree() -> None:
    assert REPORT_FORMATS.split(",") == list(DEFAULT_FORMATS)


def test_pages_and_assets_are_written(runs: Path) -> None:
    index = (runs / INDEX).read_text(encoding="utf-8")
    for kind in ("same-id", "robustness"):
        assert f'href="{kind}/{PAGE}"' in index
        page = (runs / kind / PAGE).read_text(encoding="utf-8")
        assert f'href="../{INDEX}"' in page
        for src in re.findall(r'src="([^"]+)"', page):  # every asset is in the folder
            assert src.startswith(f"{ASSETS}/") and (runs / kind / src).is_file(), src
        assert "http://" not in page and "https://" not in page  # self-contained
    robust = (runs / "robustness" / PAGE).read_text(encoding="utf-8")
    assert "spread.png" in robust and "heatmaps_grid.png" in robust


def test_grid_videos_hold_every_frame(runs: Path) -> None:
    """The WebM of a grid decodes (outside the browser) to the job's frame count, VP9
    4:2:0, one panel per source / driving / method."""
    page = (runs / "same-id" / PAGE).read_text(encoding="utf-8")
    videos = re.findall(r'src="([^"]+\.webm)"', page)
    assert len(videos) == 2  # the default: the first two driving videos
    for src in videos:
        with av.open(str(runs / "same-id" / src)) as c:
            stream = c.streams.video[0]
            frames = [f.to_ndarray(format="rgb24") for f in c.decode(stream)]
            assert stream.codec_context.name == "vp9"
            assert stream.codec_context.pix_fmt == "yuv420p"
        assert len(frames) == FRAMES
        assert frames[0].shape[1] == 4 * 256  # source | driving | static | oracle


def test_report_in_a_browser(runs: Path, browser) -> None:
    driver = browser
    errors = open_page(driver, runs / INDEX)
    assert errors == [], errors
    links = driver.execute_script(
        "return Array.from(document.querySelectorAll('a')).map(a => a.href)"
    )
    assert [Path(p).parent.name for p in links] == ["robustness", "same-id"]
    for kind in ("same-id", "robustness"):
        run_dir = runs / kind
        errors = open_page(driver, run_dir / PAGE)
        assert errors == [], f"{kind}: console errors {errors}"
        check_results_table(driver, run_dir)
        check_videos(driver, run_dir)
        driver.execute_script("window.scrollTo(0, 0)")
        assert screenshot(driver, f"report_{kind}").stat().st_size > 10_000
        check_sorting(driver)


def check_results_table(driver, run_dir: Path) -> None:
    """Every cell of the page's results table: the Markdown table's cell, and for our
    rows summary.csv's value (and bootstrap interval) in the table's number format."""
    from selenium.webdriver.common.by import By

    table = driver.find_element(By.CSS_SELECTOR, "#table table")
    shown = {r[0]: r[1:] for r in driver.execute_script(ROWS_JS, table) if r}
    want = md_rows(run_dir)
    heads = want.pop("Method")
    assert shown == want
    kind = json.loads((run_dir / "run.json").read_text())["protocol"]["kind"]
    values = summary(run_dir)
    metrics = ["l1", "psnr", "ssim"]  # the protocol's, in the paper's order
    assert [h.split()[0] for h in heads] == ["L1", "PSNR", "SSIM"]
    intervals = 0
    for method, label in (("static", "Static"), ("oracle", "Oracle")):
        row = next(v for k, v in shown.items() if k.lower() == label.lower())
        for metric, cell in zip(metrics, row, strict=True):
            r = values[method, metric]
            std = float(r["std"]) if kind == "robustness" and r["std"] else None
            assert cell.startswith(format_value(kind, metric, float(r["value"]), std)), cell
            if r.get("ci_low"):  # the bootstrap interval, as in the Markdown table
                lo, hi = (format_value(kind, metric, float(r[c])) for c in ("ci_low", "ci_high"))
                assert f" [{lo}, {hi}]" in cell, cell
                intervals += 1
    assert intervals >= (2 if kind == "same-id" else 0)


def check_videos(driver, run_dir: Path) -> None:
    found = driver.execute_async_script(VIDEO_JS)
    assert found, "no video element"
    for v in found:
        assert v["error"] is None and v["ready"] >= 2, v
        assert v["canPlay"] in ("probably", "maybe"), v
        assert v["src"].endswith(".webm") and v["type"].startswith("video/webm"), v
        assert round(v["duration"] * v["fps"]) == v["frames"] == FRAMES, v


def check_sorting(driver) -> None:
    """Clicking the l1 header orders the per-video rows by l1; again reverses them."""
    from selenium.webdriver.common.by import By

    table = driver.find_element(By.CSS_SELECTOR, "table.sortable")
    heads = [h.text.strip() for h in table.find_elements(By.CSS_SELECTOR, "thead th")]
    col = heads.index("l1")
    header = table.find_elements(By.CSS_SELECTOR, "thead th")[col]
    for order in (1, -1):
        header.click()
        column = [float(r[col]) for r in driver.execute_script(ROWS_JS, table)]
        assert column == sorted(column, key=lambda x: order * x), column
        assert len(column) >= 4


def test_names_are_escaped(tmp_path: Path, browser) -> None:
    """A method named like a script tag is shown as text and never runs."""
    evil = "<script>window.pwned=1</script>"
    run_dir = tmp_path / "evil"
    run_dir.mkdir()
    run = {"protocol": {"name": "t<b>", "kind": "same-id"}, "methods": [evil], "metrics": ["l1"]}
    (run_dir / "run.json").write_text(json.dumps(run))
    with (run_dir / "summary.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["method", "metric", "value", "std", "n", "n_frames", "note"])
        w.writerow([evil, "l1", "3.5", "0.1", "2", "10", "a & <b>note</b>"])
    with (run_dir / "per_video.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["method", "video", "source", "source_frame", "metric", "value", "n_frames"])
        w.writerow([evil, "<img src=x onerror=window.pwned=2>", "s", "0", "l1", "3.5", "10"])
    write_report(run_dir, ["html"])
    html = (run_dir / PAGE).read_text(encoding="utf-8")
    assert "<script>window.pwned" not in html and "&lt;script&gt;window.pwned" in html
    assert "<img src=x" not in html and "<b>note</b>" not in html
    assert open_page(browser, run_dir / PAGE) == []
    assert browser.execute_script("return window.pwned === undefined")
    assert evil in browser.find_element("css selector", "#table").text


def test_report_without_saved_frames_says_how(tmp_path: Path) -> None:
    data = write_folder_dataset(tmp_path / "data", NAMES[:2], n=4, size=32)
    proto = write_protocol(tmp_path, "same-id", frames=4, metrics=["l1"])
    run_dir = run_protocol(
        load_protocol(proto), RunOptions(data=data, methods=["static"], out=tmp_path / "r")
    )
    write_report(run_dir, ["html"], data_dir=data)
    page = (run_dir / PAGE).read_text(encoding="utf-8")
    assert "<video" not in page and "--save-frames" in page


def test_unknown_grid_video_is_one_line(runs: Path) -> None:
    result = CliRunner().invoke(
        app, ["report", str(runs / "same-id"), "--format", "html", "--video", "nope"]
    )
    assert result.exit_code == 2
    assert "nope" in result.output and "a_000" in result.output


def test_the_same_run_gives_the_same_page(tmp_path: Path) -> None:
    """Reports are reproducible: writing the page again gives the same bytes (no random
    element ids), grids included."""
    data = write_folder_dataset(tmp_path / "data", NAMES[:2], n=4, size=32)
    proto = write_protocol(tmp_path, "same-id", frames=4, metrics=["l1"])
    opts = RunOptions(data=data, methods=["static"], out=tmp_path / "r", save_frames=True)
    run_dir = run_protocol(load_protocol(proto), opts)
    pages = []
    for _ in range(2):
        written = write_report(run_dir, ["html"], data_dir=data)
        pages.append({p.name: p.read_bytes() for p in written})
    assert any(name.endswith(".webm") for name in pages[0])
    assert pages[0] == pages[1]
