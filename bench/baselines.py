"""FOMM and LIA frames/s at 256x256 on this machine, batch 1 and 8, PIRenderer per stage
(landmarks, extraction, rendering) at batch 8, StyleHEAT (source inversion per job,
1024² rendering per frame, batch 1 and 4) and FS-Vid2Vid (labels and the 512² generator,
frame by frame), with seeded weights in the official layouts (speed does not depend on
the weight values).

    python bench/baselines.py
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from machine import cpu_name  # bench/machine.py


def _frames(n: int) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)
    return [np.roll(base, 2 * i, axis=1) for i in range(n)]


def main() -> None:
    sys.path.insert(0, str(Path(__file__).parents[1]))
    from reenactbench.methods import load_method
    from tests.test_fomm import seeded_checkpoint
    from tests.test_lia import seeded_state_dict

    print(f"machine: {cpu_name()}, {os.cpu_count()} cores, torch {torch.__version__}")
    with tempfile.TemporaryDirectory() as tmp:
        fomm, lia = Path(tmp) / "vox-cpk.pth.tar", Path(tmp) / "vox.pt"
        torch.save(seeded_checkpoint(), fomm)
        torch.save({"gen": seeded_state_dict(0)}, lia)
        frames = _frames(16)
        for name, weights in (("fomm", {"fomm-vox": fomm}), ("lia", {"lia-vox": lia})):
            for batch in (1, 8):
                method = load_method(name, weights=weights, batch_size=batch)
                list(method.reenact(frames[0], frames[:batch]))  # warm-up
                t0 = time.perf_counter()
                n = sum(1 for _ in method.reenact(frames[0], frames))
                print(f"{name} 256², batch {batch}: {n / (time.perf_counter() - t0):.2f} frames/s")
        _pirenderer(Path(tmp))
        _styleheat(Path(tmp))
        _fsvid2vid(Path(tmp))


def _pirenderer(tmp: Path) -> None:
    """PIRenderer stages at batch 8: dlib 68 points, Deep3DFaceRecon extraction, rendering."""
    from reenactbench.baselines.pirenderer.adapter import PIRendererMethod
    from reenactbench.baselines.pirenderer.descriptor import descriptors

    from reenactbench.faces import detect_landmarks, faces_unavailable
    from reenactbench.faces.deep3d import extract_coeffs
    from tests.test_deep3d import seeded_checkpoint as deep3d_checkpoint
    from tests.test_pirenderer import seeded_checkpoint, seeded_rows, source_image

    if faces_unavailable():
        print(f"pirenderer: skipped ({faces_unavailable()})")
        return
    torch.save(seeded_checkpoint(0), tmp / "pirenderer.pt")
    torch.save(deep3d_checkpoint(0), tmp / "epoch_20.pth")
    m = PIRendererMethod(
        weights={"pirenderer-vox": tmp / "pirenderer.pt", "deep3d-recon": tmp / "epoch_20.pth"}
    )
    face = source_image()
    frames, n = np.stack([face] * 8), 8
    t0 = time.perf_counter()
    lms = np.stack([detect_landmarks(f) for f in frames])
    t1 = time.perf_counter()
    extract_coeffs(frames, lms, net=m.recon, batch_size=n)
    t2 = time.perf_counter()
    m.render(torch.zeros(1, 3, 256, 256), list(descriptors(seeded_rows(1, n))))
    t3 = time.perf_counter()
    print(
        f"pirenderer 256², batch {n}: landmarks {n / (t1 - t0):.1f}, extraction "
        f"{n / (t2 - t1):.2f}, rendering {n / (t3 - t2):.2f} frames/s"
    )


def _styleheat(tmp: Path) -> None:
    """StyleHEAT: inversion of one source, then rendering at 1024² (batch 1 and 4)."""
    import resource

    from reenactbench.baselines.pirenderer.descriptor import descriptors
    from reenactbench.baselines.pirenderer.model import to_input
    from reenactbench.baselines.styleheat.model import load_model

    from tests.test_pirenderer import seeded_rows, source_image
    from tests.test_stylegan2 import seeded_checkpoint
    from tests.test_styleheat_calibration import seeded_styleheat_checkpoint
    from tests.test_styleheat_inversion import seeded_e4e_checkpoint, seeded_hfgi_checkpoint

    files = {
        "styleheat": seeded_styleheat_checkpoint(0),
        "styleheat-e4e": seeded_e4e_checkpoint(0),
        "styleheat-hfgi": seeded_hfgi_checkpoint(0),
        "styleheat-stylegan": seeded_checkpoint(
            0, size=1024, n_mlp=8, style_dim=512, channel_multiplier=2
        )["g_ema"],
    }
    for name, obj in files.items():
        torch.save(obj, tmp / f"{name}.pt")
    del files
    model = load_model({name: tmp / f"{name}.pt" for name in (
        "styleheat", "styleheat-e4e", "styleheat-hfgi", "styleheat-stylegan")})  # fmt: skip
    x = to_input(source_image()[None])
    model.invert(x)  # warm-up
    t0 = time.perf_counter()
    inv = model.invert(x)
    t1 = time.perf_counter()
    desc = torch.from_numpy(descriptors(seeded_rows(1, 8), None))
    rates = []
    for batch in (1, 4):
        model(inv, desc[:batch])  # warm-up
        t = time.perf_counter()
        for lo in range(0, 8, batch):
            model(inv, desc[lo : lo + batch])
        rates.append(f"batch {batch} {8 / (time.perf_counter() - t):.2f}")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(
        f"styleheat 1024²: inversion {t1 - t0:.2f} s per source, rendering "
        f"{', '.join(rates)} frames/s; peak RSS of the whole script {peak:.1f} GiB"
    )


def _fsvid2vid(tmp: Path) -> None:
    """FS-Vid2Vid at 512²: the label pipeline and the generator, 8 frames in sequence."""
    from reenactbench.baselines.fsvid2vid.labelmap import FaceLabelStream
    from reenactbench.baselines.fsvid2vid.layers import concat_frames
    from reenactbench.baselines.fsvid2vid.model import load_fsvid2vid

    from tests.test_fsvid2vid_labelmap import FIXTURE
    from tests.test_fsvid2vid_model import seeded_checkpoint

    torch.save(seeded_checkpoint(0), tmp / "fsv.pt")
    net = load_fsvid2vid(tmp / "fsv.pt")
    pts = np.load(FIXTURE)["landmarks_json"].astype(np.float64) * (1024 / 480)
    t0 = time.perf_counter()
    stream = FaceLabelStream(pts[0], (1024, 1024), crop="frame")
    labels = [stream(pts[i % len(pts)]) for i in range(8)]
    t1 = time.perf_counter()
    ref_l, ref_i = stream.few_shot_label[:, None], torch.zeros(1, 1, 3, 512, 512)
    prev_l = prev_i = None
    with torch.no_grad():
        for label in labels:
            fake = net(label, ref_l, ref_i, prev_l, prev_i)["fake_images"]
            prev_l, prev_i = concat_frames(prev_l, label, 1), concat_frames(prev_i, fake, 1)
    t2 = time.perf_counter()
    print(f"fs-vid2vid 512²: labels {8 / (t1 - t0):.1f}, generator {8 / (t2 - t1):.2f} frames/s")


if __name__ == "__main__":
    main()
