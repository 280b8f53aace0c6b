"""`score` end to end on the real demo videos with every metric of the paper: the ones
whose (seeded) weights are present give numbers, the others a clean skip."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from reenactbench.cli import app
from reenactbench.video import read_frames, write_png_folder
from tests.test_metric_fid import seeded_inception_state
from tests.test_metric_fvd import write_standin_i3d
from tests.test_metric_lpips import seeded_alexnet_state

pytestmark = [pytest.mark.faces, pytest.mark.slow]
ALL = "l1,lpips,id,psnr,ssim,fid,fvd,fvd_mouth,au_corr,gaze_corr,pose_corr,au_gaze_corr"


def test_score_every_metric(demo_data: Path, tmp_path: Path) -> None:
    real, fake = tmp_path / "real", tmp_path / "fake"
    rng = np.random.default_rng(0)
    for name in ("man_000", "woman_001"):
        shutil.copytree(demo_data / "256" / name, real / name)
        frames = read_frames(real / name).astype(np.int16)
        noisy = np.clip(frames + rng.integers(-6, 7, frames.shape), 0, 255).astype(np.uint8)
        write_png_folder(noisy, fake / name)
    torch.save(seeded_alexnet_state(), tmp_path / "alex.pth")
    torch.save(seeded_inception_state(), tmp_path / "inception.pth")
    write_standin_i3d(tmp_path / "i3d_torchscript.pt")
    result = CliRunner().invoke(app, [
        "--quiet", "score", "--real", str(real), "--fake", str(fake), "--metrics", ALL,
        "--weights", f"lpips-alex={tmp_path / 'alex.pth'}",
        "--weights", f"fid-inception={tmp_path / 'inception.pth'}",
        "--weights", f"i3d={tmp_path / 'i3d_torchscript.pt'}",
        "--json", str(tmp_path / "out.json"),
    ])  # fmt: skip
    assert result.exit_code == 0, (result.output, result.exception)
    out = json.loads((tmp_path / "out.json").read_text())
    m = out["metrics"]
    assert set(m) == {"l1", "lpips", "psnr", "ssim", "fid", "fvd", "fvd_mouth", "gaze_corr",
                      "pose_corr"}  # fmt: skip
    assert 2.5 < m["l1"] < 3.5  # uniform noise in [-6, 6], clipped: E|n| ~ 3.0
    assert all(math.isfinite(v) for v in m.values())
    assert m["lpips"] > 0 and m["fid"] > 0 and m["fvd"] >= 0
    assert 0.5 < m["pose_corr"] <= 1.0  # small noise barely moves the landmarks
    # weights that are absent, and AUs the offline backend cannot measure, are skipped
    assert out["skipped"]["id"].startswith("weights missing: ir-se50")
    assert "AU intensities" in out["skipped"]["au_corr"]
    assert "AU intensities" in out["skipped"]["au_gaze_corr"]
    assert out["backends"]["pose_corr"]["backend"] == "landmarks"
    assert set(out["weights"]) == {"lpips-alex", "fid-inception", "i3d"}
    assert out["weights_status"]["i3d"] == "unpinned"
    assert out["weights_status"]["lpips-alex"] == "mismatch"  # seeded, not torchvision's
    assert out["n_frames"] == 32 and set(out["per_video"]) == {"man_000", "woman_001"}
