"""The HTML report's media: VP9 grid videos of a run and its line/spread plots."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from reenactbench.cache import JobRecord, job_fingerprint, record_path
from reenactbench.errors import InputError
from reenactbench.metrics.base import JobPart
from reenactbench.protocol import Pair
from reenactbench.report.media import (
    chosen_pair,
    compose_grid,
    encode_browser_video,
    frame_series,
    grid_for_video,
    label_height,
    label_strip,
    pair_frames,
    run_data_dir,
)
from reenactbench.report.plots import plot_frame_series, plot_spread
from reenactbench.video import write_png_folder

N, RES, SIZE = 8, 64, 32
VIDEO = "vid_000"
RED, BLUE, GREEN = (220, 40, 40), (40, 40, 220), (40, 200, 60)
CHOSEN, OTHER = Pair(VIDEO, VIDEO, 1), Pair(VIDEO, VIDEO, 3)  # robustness: two source frames
TOL = 10  # VP9 crf 32 + yuv420p conversion on flat colours


def _solid(colour: tuple[int, int, int], side: int = RES) -> np.ndarray:
    return np.broadcast_to(np.array(colour, np.uint8), (side, side, 3)).copy()


def _data_colour(t: int) -> tuple[int, int, int]:
    return (20 + 20 * t, 120, 200 - 15 * t)


def _decode(path: Path) -> tuple[list[np.ndarray], av.video.stream.VideoStream]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
        return frames, stream


def _panel(frame: np.ndarray, i: int, size: int = SIZE) -> np.ndarray:
    """Inner region of panel ``i`` below its label bar (edges left out: coding bleeds)."""
    top = label_height(size) + 4
    return frame[top : top + size - 8, i * size + 4 : (i + 1) * size - 4]


def _close(region: np.ndarray, colour: tuple[int, int, int], tol: float = TOL) -> bool:
    return bool(np.all(np.abs(region.reshape(-1, 3).mean(0) - colour) <= tol))


# ------------------------------------------------------------------ a fake run directory
def _write_record(run: Path, method: str, pair: Pair, values: np.ndarray, saved: bool) -> None:
    ids = {"setup": "s1", "metrics": "m1", "method": f"id-{method}"}
    meta = {
        "method": method,
        "pair": {"driving": pair.driving, "source": pair.source, "source_frame": pair.source_frame},
        "n_frames": N,
        "fingerprint": job_fingerprint(ids, pair),
        "config": ids,
        "frames_saved": saved,
    }
    path = record_path(run, method, pair)
    JobRecord.write(path, meta, {"l1": JobPart(values=values)}, {"l1": "frame"})
    if saved:
        write_png_folder([_solid(RED)] * N, path.parent / "frames")


@pytest.fixture
def data(tmp_path: Path) -> Path:
    """Prepared data: one video of N flat frames of changing colour, listed at 30 fps."""
    root = tmp_path / "data"
    write_png_folder([_solid(_data_colour(t)) for t in range(N)], root / str(RES) / VIDEO)
    (root / "manifest.csv").write_text(f"video,identity,n_frames,fps\n{VIDEO},vid,{N},30\n")
    return root


@pytest.fixture
def run(tmp_path: Path, data: Path) -> Path:
    """fomm: frames saved (red); lia: record without frames; styleheat: never ran."""
    run = tmp_path / "run"
    methods = ["fomm", "lia", "styleheat"]
    configs = {"setup": {"id": "s1"}, "metrics": {"id": "m1"}}
    configs["methods"] = {m: {"id": f"id-{m}"} for m in methods}
    info = {"methods": methods, "setup": {"resolution": RES, "frames": N}, "configs": configs}
    run.mkdir()
    (run / "run.json").write_text(json.dumps(info))
    with (run / "pairs.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["driving", "source", "source_frame"])
        w.writerows([[p.driving, p.source, p.source_frame] for p in (OTHER, CHOSEN)])
    for pair, offset in ((CHOSEN, 0.0), (OTHER, 100.0)):
        _write_record(run, "fomm", pair, np.arange(N, dtype=float) + offset, saved=True)
        _write_record(run, "lia", pair, np.full(N, 5.0) + offset, saved=False)
    (run / "history.jsonl").write_text(json.dumps({"data": str(data)}) + "\n")
    return run


# ------------------------------------------------------------------ encoding
def test_webm_decodes_to_every_frame_vp9_yuv420p_padded_to_even(tmp_path: Path) -> None:
    frames = [_solid(_data_colour(t), 45)[:, :43] for t in range(10)]  # 43 x 45: odd
    out = tmp_path / "v" / "grid.webm"
    assert encode_browser_video(iter(frames), out, fps=25.0) == 10
    decoded, stream = _decode(out)
    assert len(decoded) == 10 and decoded[0].shape == (46, 44, 3)
    assert stream.codec_context.name == "vp9" and stream.codec_context.pix_fmt == "yuv420p"
    assert stream.average_rate == 25
    assert _close(decoded[7][:40, :40], _data_colour(7))
    assert [p.name for p in out.parent.iterdir()] == ["grid.webm"]  # no temp file left
    again = tmp_path / "again.webm"
    encode_browser_video(frames, again, fps=25.0)
    assert again.read_bytes() == out.read_bytes()  # deterministic


def test_encoding_nothing_or_mixed_sizes_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no frames"):
        encode_browser_video([], tmp_path / "empty.webm")
    with pytest.raises(InputError, match="frame 1"):
        encode_browser_video([_solid(RED, 16), _solid(RED, 32)], tmp_path / "mixed.webm")
    assert not list(tmp_path.iterdir())


# ------------------------------------------------------------------ composing
def test_label_strip_puts_a_bar_with_text_above_the_frame() -> None:
    out = label_strip(_solid(GREEN, 64), "driving")
    bar = label_height(64)
    assert out.shape == (bar + 64, 64, 3)
    assert np.array_equal(out[bar:], _solid(GREEN, 64))
    assert out[:bar].max() > 200 and np.median(out[:bar]) < 60  # light text on a dark bar


def test_compose_grid_orders_panels_repeats_stills_and_holds_last_frames() -> None:
    video = [_solid(RED, 48)] * 6
    short = np.stack([_solid(_data_colour(t), 40) for t in range(3)])  # (T, H, W, 3)
    panels = [("red", video), ("still", _solid(GREEN, 20)), ("short", short), ("none", [])]
    frames = list(compose_grid(panels, SIZE))
    assert len(frames) == 6
    assert frames[0].shape == (label_height(SIZE) + SIZE, 4 * SIZE, 3)
    for t, frame in enumerate(frames):
        assert _close(_panel(frame, 0), RED, 0) and _close(_panel(frame, 1), GREEN, 0)
        assert _close(_panel(frame, 2), _data_colour(min(t, 2)), 0)
        assert np.array_equal(frame[-3:, 3 * SIZE :], np.full((3, SIZE, 3), 128, np.uint8))


def test_compose_grid_of_empty_panels_has_no_frames() -> None:
    assert list(compose_grid([("a", []), ("b", [])], SIZE)) == []


# ------------------------------------------------------------------ run directories
def test_pair_choice_and_saved_frames(run: Path, data: Path) -> None:
    assert chosen_pair(run, VIDEO) == CHOSEN  # smallest source frame, not the first row
    files = pair_frames(run, "fomm", CHOSEN)
    assert files is not None and [f.name for f in files] == [f"{i:06d}.png" for i in range(N)]
    assert pair_frames(run, "lia", CHOSEN) is None  # frames_saved false
    write_png_folder([_solid(BLUE)] * N, record_path(run, "lia", CHOSEN).parent / "frames")
    assert pair_frames(run, "lia", CHOSEN) is None  # frames not from this record
    assert pair_frames(run, "styleheat", CHOSEN) is None  # no record
    assert run_data_dir(run) == data
    with pytest.raises(InputError, match="no pair drives"):
        chosen_pair(run, "nope")


def test_grid_for_video_shows_source_driving_and_methods(run: Path, data: Path) -> None:
    out = run / "report" / f"{VIDEO}.webm"
    result = grid_for_video(run, VIDEO, ["fomm", "lia", "styleheat"], data, out, size=SIZE)
    assert result.panels == ("source", "driving", "FOMM", "LIA", "StyleHEAT")
    assert result.missing == ("lia", "styleheat") and result.n_frames == N
    assert result.pair == CHOSEN and result.fps == 30.0  # the manifest's rate
    frames, stream = _decode(out)
    assert len(frames) == N and stream.average_rate == 30
    assert frames[0].shape == (label_height(SIZE) + SIZE, 5 * SIZE, 3)
    for t in (0, N - 1):
        assert _close(_panel(frames[t], 0), _data_colour(CHOSEN.source_frame))
        assert _close(_panel(frames[t], 1), _data_colour(t))
        assert _close(_panel(frames[t], 2), RED)
        assert _close(frames[t][-4:, 3 * SIZE + 4 : 5 * SIZE - 4], (128, 128, 128))


def test_grid_without_data_leaves_out_source_and_driving(run: Path, tmp_path: Path) -> None:
    out = tmp_path / "g.webm"
    result = grid_for_video(run, VIDEO, ["fomm", "lia"], tmp_path / "gone", out, size=SIZE)
    assert result.panels == ("FOMM", "LIA") and result.missing == ("source", "driving", "lia")
    assert result.fps == 25.0 and result.n_frames == N
    assert _decode(out)[0][0].shape == (label_height(SIZE) + SIZE, 2 * SIZE, 3)
    with pytest.raises(InputError, match="nothing to show"):
        grid_for_video(run, VIDEO, ["lia", "styleheat"], None, out, size=SIZE)


def test_frame_series_reads_the_counted_records_of_the_chosen_pair(run: Path) -> None:
    series = frame_series(run, "l1", VIDEO)
    assert list(series) == ["fomm", "lia"]
    assert np.array_equal(series["fomm"], np.arange(N, dtype=float))
    assert np.array_equal(series["lia"], np.full(N, 5.0))
    assert frame_series(run, "lpips", VIDEO) == {}
    # as runs store it: without the driving frame that is the source (frame 1)
    record = JobRecord.read(record_path(run, "fomm", CHOSEN))
    kept = np.delete(np.arange(N, dtype=float), 1)
    left_out = JobPart(values=kept, info={"source_frame_left_out": 1})
    JobRecord.write(record.path, record.meta, {"l1": left_out}, {"l1": "frame"})
    back = frame_series(run, "l1", VIDEO)["fomm"]
    assert np.isnan(back[1]) and np.array_equal(np.delete(back, 1), np.delete(np.arange(N), 1))
    info = json.loads((run / "run.json").read_text())
    info["configs"]["methods"]["lia"]["id"] = "changed"  # lia's records are now stale
    (run / "run.json").write_text(json.dumps(info))
    assert list(frame_series(run, "l1", VIDEO)) == ["fomm"]


# ------------------------------------------------------------------ plots
def _png_size(path: Path) -> tuple[int, int]:
    with Image.open(io.BytesIO(path.read_bytes())) as im:
        assert im.format == "PNG"
        im.load()
        return im.size


def test_plots_write_pngs(tmp_path: Path) -> None:
    series = {"fomm": np.array([np.nan, 1.0, 2.0, np.inf]), "lia": np.arange(6.0)}
    out = plot_frame_series(series, "L1 (0-255)", "vid_000", tmp_path / "f" / "series.png")
    assert out == tmp_path / "f" / "series.png" and min(_png_size(out)) > 0
    spread = {"fomm": [1.0, 2.0, 3.5, np.nan], "lia": [2.0], "hybrid": []}
    out2 = plot_spread(spread, "L1", "Table 3", tmp_path / "spread.png")
    assert min(_png_size(out2)) > 0
    first = out2.read_bytes()
    plot_spread(spread, "L1", "Table 3", out2)
    assert out2.read_bytes() == first  # fixed jitter


def test_plots_refuse_empty_input(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no finite"):
        plot_spread({}, "L1", "t", tmp_path / "a.png")
    with pytest.raises(InputError, match="no finite"):
        plot_spread({"fomm": [np.nan]}, "L1", "t", tmp_path / "a.png")
    with pytest.raises(InputError, match="no finite"):
        plot_frame_series({"fomm": np.array([])}, "L1", "t", tmp_path / "b.png")
    assert not (tmp_path / "a.png").exists() and not (tmp_path / "b.png").exists()
