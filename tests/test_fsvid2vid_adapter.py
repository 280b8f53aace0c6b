"""The ``fs-vid2vid`` method end to end (baselines/fsvid2vid/adapter.py): seeded weights in
imaginaire's layout, landmark sidecars, the recurrence, the CLI and the runner. The
generator's and the label pipeline's parity with upstream are in
tests/test_fsvid2vid_{model,labelmap}.py."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from reenactbench.cli import app
from reenactbench.errors import MethodError
from tests.test_fsvid2vid_model import seeded_checkpoint


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    path = tmp_path_factory.mktemp("fsvid2vid") / "ampO1-1F_22ctFmo553nRHy1d_BX7aorc9zk9cF.pt"
    torch.save(seeded_checkpoint(0), path)
    return {"fs-vid2vid-face": path}


def _faces_with_sidecars(folder: Path, n: int) -> list[np.ndarray]:
    """``n`` 512² frames (a gradient, no face) with ``<frame>.txt`` sidecars holding a mean
    face shape moving a little (the demo clips' first frame's dlib points)."""
    from reenactbench.video import write_png_folder

    rng = np.random.default_rng(3)
    base = _face_points()
    frames = np.stack([np.full((512, 512, 3), 40 + 20 * i, np.uint8) for i in range(n)])
    write_png_folder(frames, folder)
    for i, f in enumerate(sorted(folder.glob("*.png"))):
        pts = base + np.array([3.0 * i, -2.0 * i]) + rng.normal(0, 0.5, base.shape)
        f.with_suffix(".txt").write_text("\n".join(f"{x:.3f} {y:.3f}" for x, y in pts))
    return list(frames)


def _face_points() -> np.ndarray:
    """68 plausible points of a frontal face in a 512² frame (imaginaire's unit-test
    landmarks of frame 0, scaled into the frame)."""
    from tests.test_fsvid2vid_labelmap import FIXTURE

    pts = np.load(FIXTURE)["landmarks_json"][0].astype(np.float64)
    pts = (pts - pts.mean(0)) / np.ptp(pts[:, 0]) * 230 + np.array([256, 280])
    return pts


def _weights_args(weights: dict[str, Path]) -> list[str]:
    return [a for k, v in weights.items() for a in ("--weights", f"{k}={v}")]


def test_adapter_equals_the_pipeline_with_feedback(
    weights: dict[str, Path], tmp_path: Path
) -> None:
    """Frames from sidecar landmarks (the frames have no face): the adapter's output is
    the label stream + generator with the previous label and previous *output* fed back,
    truncated to uint8; feeding back nothing gives other frames from the second on."""
    from reenactbench.baselines.fsvid2vid.adapter import FSVid2VidMethod, to_canvas
    from reenactbench.baselines.fsvid2vid.labelmap import FaceLabelStream, crop_face
    from reenactbench.baselines.fsvid2vid.layers import concat_frames
    from reenactbench.baselines.pirenderer.model import to_uint8

    from reenactbench.faces.sidecar import sidecar_landmarks

    frames = _faces_with_sidecars(tmp_path / "drv", 3)
    files = sorted((tmp_path / "drv").glob("*.png"))
    m = FSVid2VidMethod(weights=weights)
    m.set_inputs(files[0], files)
    got = np.stack(list(m.reenact(frames[0], iter(frames))))
    assert got.shape == (3, 512, 512, 3) and got.std() > 1

    def direct(feedback: bool) -> np.ndarray:
        pts = [sidecar_landmarks(f, 512).astype(np.float64) * 2 for f in files]
        stream = FaceLabelStream(pts[0], (1024, 1024), crop="frame")
        ref_img = crop_face(to_canvas(frames[0]), stream.ref_box)[:, None]
        ref_lbl = stream.few_shot_label[:, None]
        m.net.reset()
        prev_l = prev_i = None
        out = []
        with torch.no_grad():
            for p in pts:
                label = stream(p)
                fake = m.net(label, ref_lbl, ref_img, prev_l, prev_i)["fake_images"]
                if feedback:
                    prev_l, prev_i = concat_frames(prev_l, label, 1), concat_frames(prev_i, fake, 1)
                out.append(to_uint8(fake)[0])
        return np.stack(out)

    assert np.array_equal(got, direct(True))
    alone = direct(False)
    assert np.array_equal(alone[0], got[0]) and not np.array_equal(alone[1:], got[1:])
    with pytest.raises(MethodError, match='crop must be "frame" or "face"'):
        FSVid2VidMethod(weights=weights, crop="box")


def test_reenact_cli_and_bad_inputs(weights: dict[str, Path], tmp_path: Path) -> None:
    """`reenact` writes 512² frames; a source without a face or a sidecar, and a file of
    another layout, are one line with exit 2."""
    _faces_with_sidecars(tmp_path / "drv", 2)
    drv = tmp_path / "drv"
    args = ["reenact", "--method", "fs-vid2vid", "--source", str(drv / "000000.png"),
            "--driving", str(drv)]  # fmt: skip
    r = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "o"), *_weights_args(weights)])
    assert r.exit_code == 0, r.output
    assert len(list((tmp_path / "o").glob("*.png"))) == 2
    (drv / "000000.txt").unlink()
    r = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "o2"), *_weights_args(weights)])
    assert r.exit_code == 2 and "source frame has no face" in r.stderr, r.output
    bad = tmp_path / "bad.pt"
    torch.save({"net_G": {"module.module.x": torch.zeros(1)}}, bad)
    r = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "o3"), "--weights",
                                 f"fs-vid2vid-face={bad}"])  # fmt: skip
    assert r.exit_code == 2 and str(bad) in r.stderr and len(r.stderr.splitlines()) == 1


@pytest.mark.faces
def test_run_same_id_on_demo_data(
    weights: dict[str, Path], demo_data: Path, tmp_path: Path
) -> None:
    """`run same-id` end to end on the real demo clips (dlib landmarks)."""
    out = tmp_path / "run"
    r = CliRunner().invoke(app, [
        "--quiet", "run", "same-id", "--data", str(demo_data), "--protocol", "demo_same_id",
        "-m", "fs-vid2vid", "--max-videos", "1", "--max-frames", "3", "--out", str(out),
        *_weights_args(weights),
    ])  # fmt: skip
    assert r.exit_code == 0, (r.output, r.exception)
    with (out / "summary.csv").open() as f:
        rows = {r["metric"]: r for r in csv.DictReader(f) if r["method"] == "fs-vid2vid"}
    assert float(rows["l1"]["value"]) > 0 and rows["l1"]["n"] == "1"
    assert list((out / "cache" / "fs-vid2vid" / "_rows").glob("*/*.rows.npz"))
