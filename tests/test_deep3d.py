"""Deep3DFaceRecon coefficients: strict loading of the ``epoch_20.pth`` layout and parity
with upstream's own ``align_img`` + ``ReconNetWrapper`` on seeded weights and real faces.

Regenerate the parity fixture (see tests/fixtures/README.md):
``python -m tests.test_deep3d --regenerate UPSTREAM_DIR OLD_NUMPY_SITE`` where
``UPSTREAM_DIR`` holds sicxu/Deep3DFaceRecon_pytorch's ``util/preprocess.py``,
``util/load_mats.py``, ``models/networks.py`` and ``BFM/similarity_Lm3D_all.mat`` at
73d491102af6731bded9ae6b3cc7466c3b2e9e48 and ``OLD_NUMPY_SITE`` a ``pip install --target``
folder with numpy 1.23.5, scipy 1.10.1, opencv-python-headless 4.7.0.72, scikit-image
0.20.0 (upstream's ``align_img`` builds a ragged array, an error since numpy 1.24).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch

from reenactbench.errors import InputError
from reenactbench.faces.deep3d import ReconNet, extract_coeffs, load_recon_net
from reenactbench.faces.deep3d_align import LM3D_STD, align

FIXTURE = Path(__file__).parent / "fixtures" / "deep3d_upstream_reference.npz"


def seeded_checkpoint(seed: int = 0) -> dict[str, object]:
    """``{"net_recon": sd, "opt_00": ..., "sched_00": ...}`` as upstream's
    ``save_networks`` writes ``epoch_20.pth`` (one Adam optimizer, one StepLR scheduler;
    their states here are small stand-ins).

    Convs N(0, 2/fan_in), except each bottleneck's last BN weight scaled by 0.3 (keeps the
    50-layer residual stack in range); BN weight 1 + N(0, 0.1^2), bias/running_mean
    N(0, 0.1^2), running_var exp(N(0, 0.1^2)); head weights N(0, 1/2048), biases
    N(0, 0.1^2); ``num_batches_tracked`` as constructed. One torch.Generator.
    """
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for key, ref in ReconNet().state_dict().items():

        def n(std: float, shape: torch.Size = ref.shape) -> torch.Tensor:
            return torch.randn(shape, generator=g) * std

        if key.endswith("num_batches_tracked"):
            sd[key] = ref.clone()
        elif key.endswith("running_var"):
            sd[key] = torch.exp(n(0.1))
        elif key.endswith("running_mean"):
            sd[key] = n(0.1)
        elif key.startswith("final_layers"):
            sd[key] = n(2048**-0.5) if key.endswith("weight") else n(0.1)
        elif ref.ndim == 4:
            sd[key] = n((2 / ref[0].numel()) ** 0.5)
        elif key.endswith("weight"):  # BN
            sd[key] = (1 + n(0.1)) * (0.3 if ".bn3." in key else 1.0)
        else:
            sd[key] = n(0.1)
    opt = {
        "state": {},
        "param_groups": [
            {"lr": 1e-4, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0, "params": [0]}
        ],
    }
    sched = {"step_size": 10, "gamma": 0.2, "base_lrs": [1e-4], "last_epoch": 20}
    return {"net_recon": sd, "opt_00": opt, "sched_00": sched}


def reference_frames() -> np.ndarray:
    """(4, 256, 320, 3) uint8: three slices of skimage's astronaut photo (one face, at
    different places and margins) and one mirrored; H != W on purpose."""
    from skimage import data

    a = data.astronaut()
    crops = [a[0:256, 60:380], a[30:286, 100:420], a[60:316, 20:340]]
    crops.append(crops[0][:, ::-1])
    return np.ascontiguousarray(np.stack(crops))


def _sha(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


# Child process: upstream code only, run from the checkout (never imported into our tree).
_CHILD = r"""
import sys, types
up, tmp = sys.argv[1], sys.argv[2]
import numpy as np, torch
from PIL import Image
# networks.py imports kornia and arcface backbones for the recognition net only: stub them.
for name, attrs in {"kornia": {}, "kornia.geometry": {"warp_affine": None},
                    "models.arcface_torch": {},
                    "models.arcface_torch.backbones": {"get_model": None}}.items():
    m = types.ModuleType(name); m.__dict__.update(attrs); sys.modules[name] = m
sys.path.insert(0, up)
from util.preprocess import align_img
from util.load_mats import load_lm3d
from models.networks import define_net_recon
lm3d = load_lm3d(up + "/BFM")
net = define_net_recon("resnet50", use_last_fc=False, init_path=None)
net.load_state_dict(torch.load(tmp + "/epoch_20.pth", map_location="cpu")["net_recon"])
net.eval()
d = np.load(tmp + "/inputs.npz")
imgs, crops, params = [], [], []
for frame, lm in zip(d["frames"], d["landmarks"]):
    # scripts/coeff_detector.py CoeffDetector.image_transform, as PIRender runs it
    image = Image.fromarray(frame)
    W, H = image.size
    lm = lm.astype(np.float32).copy()
    lm[:, -1] = H - 1 - lm[:, -1]
    trans_params, img, _, _ = align_img(image, lm, lm3d)
    crops.append(np.array(img))
    img = torch.tensor(np.array(img) / 255., dtype=torch.float32).permute(2, 0, 1)
    tp = np.array([float(item) for item in np.hsplit(trans_params, 5)]).astype(np.float32)
    _, _, ratio, t0, t1 = np.hsplit(tp[None], 5)  # prepare_vox_lmdb.convert_3dmm
    params.append(np.concatenate([ratio, t0, t1], 1)[0])
    imgs.append(img)
with torch.no_grad():
    coeffs = net(torch.stack(imgs)).numpy()
layout = [k + ":" + "x".join(map(str, v.shape)) for k, v in net.state_dict().items()]
np.savez(tmp + "/out.npz", coeffs=coeffs, crop=np.stack(params), crops=np.stack(crops),
         lm3d=lm3d, layout=np.array(layout), numpy=np.__version__)
"""


def regenerate(upstream: Path, old_numpy_site: Path, out: Path = FIXTURE) -> None:
    """Run upstream's alignment and regressor on the seeded checkpoint; write the fixture.
    Landmarks come from our dlib 68-point detector (stored in the fixture, with a fixed
    sub-pixel offset so that they are not integers)."""
    from reenactbench.faces.dlib_faces import detect_landmarks

    frames = reference_frames()
    jitter = np.random.default_rng(5).uniform(-0.5, 0.5, (len(frames), 68, 2))
    lms = []
    for f in frames:
        lm = detect_landmarks(f)
        assert lm is not None, "no face found"
        lms.append(lm)
    landmarks = (np.stack(lms) + jitter).astype(np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        torch.save(seeded_checkpoint(0), Path(tmp) / "epoch_20.pth")
        np.savez(Path(tmp) / "inputs.npz", frames=frames, landmarks=landmarks)
        env = dict(os.environ, PYTHONPATH=str(old_numpy_site))
        cmd = [sys.executable, "-c", _CHILD, str(upstream), tmp]
        subprocess.run(cmd, check=True, cwd=tmp, env=env)
        r = dict(np.load(Path(tmp) / "out.npz"))
    crops = r.pop("crops")
    np.savez_compressed(
        out,
        **r,
        landmarks=landmarks,
        frames_sha256=np.array(_sha(frames)),
        crops_sha256=np.array([_sha(c) for c in crops]),
        crops_grid=crops[:, 3::8, 3::8].copy(),
    )


# ---------------------------------------------------------------------------- tests


@pytest.fixture(scope="module")
def ckpt_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("deep3d") / "epoch_20.pth"
    torch.save(seeded_checkpoint(0), path)
    return path


@pytest.fixture(scope="module")
def ref() -> dict[str, np.ndarray]:
    return dict(np.load(FIXTURE))


def test_layout_matches_upstream(ref: dict[str, np.ndarray]) -> None:
    ours = [k + ":" + "x".join(map(str, v.shape)) for k, v in ReconNet().state_dict().items()]
    assert ours == list(ref["layout"])


def test_standard_points_match_upstream(ref: dict[str, np.ndarray]) -> None:
    np.testing.assert_array_equal(LM3D_STD, ref["lm3d"])


def test_alignment_matches_upstream(ref: dict[str, np.ndarray]) -> None:
    frames = reference_frames()
    assert _sha(frames) == str(ref["frames_sha256"])
    for i, (f, lm) in enumerate(zip(frames, ref["landmarks"], strict=True)):
        crop, params = align(f, lm)
        np.testing.assert_array_equal(crop[3::8, 3::8], ref["crops_grid"][i])
        assert _sha(crop) == ref["crops_sha256"][i]
        np.testing.assert_allclose(params, ref["crop"][i], rtol=1e-6)


def test_coefficients_match_upstream(ckpt_file: Path, ref: dict[str, np.ndarray]) -> None:
    coeffs, crop = extract_coeffs(reference_frames(), ref["landmarks"], weights=ckpt_file)
    assert coeffs.shape == (4, 257) and coeffs.dtype == np.float32
    assert crop.shape == (4, 3) and crop.dtype == np.float32
    want = ref["coeffs"]
    tol = 1e-4 * np.abs(want).max()  # 1e-4 relative to the largest coefficient
    assert np.abs(want[0] - want[1]).max() > 10 * tol  # the frames' differences matter
    assert np.abs(coeffs - want).max() < tol, np.abs(coeffs - want).max() / tol * 1e-4
    np.testing.assert_allclose(crop, ref["crop"], rtol=1e-6)


def test_batch_size_does_not_matter(ckpt_file: Path, ref: dict[str, np.ndarray]) -> None:
    net = load_recon_net(ckpt_file)
    a, _ = extract_coeffs(reference_frames(), ref["landmarks"], net=net, batch_size=1)
    b, _ = extract_coeffs(reference_frames(), ref["landmarks"], net=net, batch_size=4)
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-5 * np.abs(b).max())


@pytest.mark.parametrize("change", ["missing", "extra", "shape", "no-net-recon"])
def test_strict_loading_one_line_error(tmp_path: Path, change: str) -> None:
    ckpt = seeded_checkpoint(0)
    sd = ckpt["net_recon"]
    assert isinstance(sd, dict)
    if change == "missing":
        del sd["final_layers.1.bias"]
    elif change == "extra":
        sd["backbone.fc.weight"] = torch.zeros(257, 2048)
    elif change == "shape":
        sd["final_layers.0.weight"] = torch.zeros(81, 2048, 1, 1)
    else:
        del ckpt["net_recon"]
    path = tmp_path / "bad_epoch_20.pth"
    torch.save(ckpt, path)
    with pytest.raises(InputError) as e:
        load_recon_net(path)
    msg = str(e.value)
    assert "\n" not in msg and str(path) in msg
    if change != "no-net-recon":
        assert {"missing": "final_layers.1.bias", "extra": "backbone.fc.weight"}.get(
            change, "final_layers.0.weight"
        ) in msg


def test_bad_inputs(ckpt_file: Path) -> None:
    frames = reference_frames()[:1]
    with pytest.raises(InputError, match="68, 2"):
        extract_coeffs(frames, np.zeros((1, 5, 2)), weights=ckpt_file)
    with pytest.raises(InputError, match="uint8"):
        extract_coeffs(frames.astype(np.float32), np.zeros((1, 68, 2)), weights=ckpt_file)


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--regenerate":
        regenerate(Path(sys.argv[2]), Path(sys.argv[3]))
        print(f"wrote {FIXTURE}")
    else:
        sys.exit(__doc__)
