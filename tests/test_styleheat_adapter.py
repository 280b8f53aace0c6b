"""The ``styleheat`` method end to end (baselines/styleheat/adapter.py): seeded weights in
upstream's layouts, the CLI, the runner, bad inputs. The networks' parity with upstream is
in tests/test_styleheat_{inversion,calibration,parity}.py."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from reenactbench.cli import app
from tests.test_pirenderer import seeded_rows, source_image
from tests.test_stylegan2 import seeded_checkpoint as stylegan_checkpoint
from tests.test_styleheat_calibration import seeded_styleheat_checkpoint
from tests.test_styleheat_inversion import seeded_e4e_checkpoint, seeded_hfgi_checkpoint


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The five files under their official names (e4e at full size: about 1 GB)."""
    from tests.test_deep3d import seeded_checkpoint as deep3d_checkpoint

    d = tmp_path_factory.mktemp("styleheat")
    sg = stylegan_checkpoint(0, size=1024, style_dim=512, n_mlp=8, channel_multiplier=2)
    files = {
        "styleheat": (d / "StyleHEAT_visual.pt", seeded_styleheat_checkpoint(0)),
        "styleheat-e4e": (d / "Encoder_e4e.pth", seeded_e4e_checkpoint(0)),
        "styleheat-hfgi": (d / "hfgi.pth", seeded_hfgi_checkpoint(0)),
        "styleheat-stylegan": (d / "StyleGAN_e4e.pth", sg["g_ema"]),
        "deep3d-recon": (d / "epoch_20.pth", deep3d_checkpoint(0)),
    }
    for path, obj in files.values():
        torch.save(obj, path)
    return {k: p for k, (p, _) in files.items()}


def _args(weights: dict[str, Path]) -> list[str]:
    return [a for k, v in weights.items() for a in ("--weights", f"{k}={v}")]


def test_adapter_equals_the_model_on_given_coefficients(
    weights: dict[str, Path], tmp_path: Path
) -> None:
    """`reenact --driving-coeffs`: the adapter's 1024² frames are the model's output on the
    256² source (``input_resolution``) and the rows' descriptors (the window clamped at
    the clip ends as PIRenderer's), truncated to uint8: identical, batch for batch."""
    from reenactbench.baselines.pirenderer.descriptor import descriptors
    from reenactbench.baselines.pirenderer.model import to_input, to_uint8
    from reenactbench.baselines.styleheat.adapter import StyleHEATMethod

    rows = seeded_rows(5, 3)
    np.save(tmp_path / "rows.npy", rows)
    m = StyleHEATMethod(weights=weights, batch_size=2, driving_coeffs=str(tmp_path / "rows.npy"))
    src = source_image()  # frames come in at input_resolution 256
    blank = [np.zeros((256, 256, 3), np.uint8)] * 3  # rows given: no driving faces needed
    got = np.stack(list(m.reenact(src, iter(blank))))
    with torch.no_grad():
        inv = m.model.invert(to_input(src[None]))
        desc = torch.from_numpy(descriptors(rows, None))
        want = np.concatenate([to_uint8(m.model(inv, d)) for d in (desc[:2], desc[2:])])
    assert got.shape == (3, 1024, 1024, 3)
    assert np.array_equal(got, want)  # the adapter's batches: frames 0-1, then 2
    assert got.std() > 5  # not a blank frame


def test_reenact_cli_and_bad_inputs(weights: dict[str, Path], tmp_path: Path) -> None:
    """One line, exit 2, naming the file: a checkpoint of another layout; a source without a
    face (driven by given coefficients, so only the source is checked)."""
    from reenactbench.video import write_png_folder

    np.save(tmp_path / "rows.npy", seeded_rows(1, 2))
    drv = tmp_path / "drv"
    write_png_folder(np.zeros((2, 64, 64, 3), np.uint8), drv)
    base = ["reenact", "--method", "styleheat", "--driving", str(drv), "--driving-coeffs",
            str(tmp_path / "rows.npy")]  # fmt: skip
    wrong = {**weights, "styleheat-hfgi": weights["styleheat"]}  # another file's layout
    r = CliRunner().invoke(app, [*base, "--source", str(drv / "000000.png"),
                                 "--out", str(tmp_path / "o1"), *_args(wrong)])  # fmt: skip
    assert r.exit_code == 2 and str(weights["styleheat"]) in r.stderr, r.output
    assert len(r.stderr.strip().splitlines()) == 1
    small = tmp_path / "small.pt"  # a StyleGAN2 state dict, but not StyleHEAT's 1024² one
    torch.save(stylegan_checkpoint(0)["g_ema"], small)
    r = CliRunner().invoke(app, [*base, "--source", str(drv / "000000.png"), "--out",
                                 str(tmp_path / "o3"),
                                 *_args({**weights, "styleheat-stylegan": small})])  # fmt: skip
    assert r.exit_code == 2 and "needs StyleGAN_e4e.pth" in r.stderr, r.output
    r = CliRunner().invoke(app, [*base, "--source", str(drv / "000000.png"),
                                 "--out", str(tmp_path / "o2"), *_args(weights)])  # fmt: skip
    assert r.exit_code == 2 and "source frame has no face" in r.stderr, r.output


@pytest.mark.faces
def test_run_same_id_on_demo_data(
    weights: dict[str, Path], demo_data: Path, tmp_path: Path
) -> None:
    """`run same-id` end to end on the real demo clips; a missing weight skips the method
    with the reason."""
    out = tmp_path / "run"
    args = ["--quiet", "run", "same-id", "--data", str(demo_data), "--protocol", "demo_same_id",
            "-m", "styleheat", "--max-videos", "1", "--max-frames", "2", "--out"]  # fmt: skip
    r = CliRunner().invoke(app, [*args, str(out), *_args(weights)])
    assert r.exit_code == 0, (r.output, r.exception)
    with (out / "summary.csv").open() as f:
        rows = {r["metric"]: r for r in csv.DictReader(f) if r["method"] == "styleheat"}
    assert float(rows["l1"]["value"]) > 0 and rows["l1"]["n"] == "1"
    run = json.loads((out / "run.json").read_text())
    assert run["weights"]["styleheat-e4e"]["status"] == "unpinned"
    assert list((out / "cache" / "styleheat" / "_rows").glob("*/*.rows.npz"))
    partial = {k: v for k, v in weights.items() if k != "styleheat-stylegan"}
    r = CliRunner().invoke(app, [*args, str(tmp_path / "run2"), *_args(partial)])
    run = json.loads((tmp_path / "run2" / "run.json").read_text())
    assert "styleheat-stylegan" in run["skipped_methods"]["styleheat"], r.output
