"""FS-Vid2Vid test-time face labels: parity of our ``baselines/fsvid2vid/labelmap.py`` with
NVlabs/imaginaire's own ``full_data_ops`` (keypoint normalisation with momentum, temporal
median, upper face, edge drawing, face crop) on imaginaire's unit-test dlib landmarks.

Regenerate the fixture (see tests/fixtures/README.md):
``python -m tests.test_fsvid2vid_labelmap --regenerate UPSTREAM_DIR`` where ``UPSTREAM_DIR``
holds NVlabs/imaginaire at c6f74845c699c58975fd12b778c375b72eb00e8d (``git archive HEAD
imaginaire dataset/unit_test/raw/fs_vid2vid``); upstream code runs in a child Python only.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from reenactbench.baselines.fsvid2vid.labelmap import (
    FaceLabelStream,
    KeypointNormalizer,
    add_upper_face,
    face_crop_box,
    normalize_keypoints,
    prepare_keypoints,
    render_label_map,
    resize_landmarks,
    resized_hw,
    stroke_width,
)

FIXTURE = Path(__file__).parent / "fixtures" / "fsvid2vid_labelmap_reference.npz"
UPSTREAM_COMMIT = "c6f74845c699c58975fd12b778c375b72eb00e8d"
#: imaginaire's unit-test clip (5 frames, 640x480, dlib 68 points as int JSON).
LANDMARK_DIR = "dataset/unit_test/raw/fs_vid2vid/face/landmarks-dlib68/ZzTpJYDc62E_4_ZzTpJYDc62E_4"
SRC_HW = (480, 640)
HW = resized_hw(*SRC_HW)  # (1024, 1365)
#: Driving frames (indices into the clip; frame 0 is the reference). Eight frames so the
#: 5-frame median runs on the last four.
DRIVING = (1, 2, 3, 4, 0, 4, 2, 3)
#: Driving frames whose cropped 512x512 label the fixture keeps (size).
CROPPED = (0, 4, 7)
CASES = ("same", "cross")


def cases(raw: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{case: (ref (68, 2), driving (T, 68, 2))}`` in the 1024 frame: ``same`` uses
    frame 0 as reference, ``cross`` a copy of it scaled by (0.8, 0.9) about its mean and
    shifted by (70, -40) pixels (another face shape and place)."""
    pts = resize_landmarks(raw, SRC_HW, HW)
    ref = pts[0]
    centre = ref.mean(axis=0)
    other = (ref - centre) * np.array([0.8, 0.9]) + centre + np.array([70.0, -40.0])
    driving = pts[list(DRIVING)]
    return {"same": (ref, driving), "cross": (other, driving)}


# Child process: upstream code only (imported from the checkout, never into our tree).
# It feeds upstream's full_data_ops one driving frame at a time with the data dict that
# paired_few_shot_videos._getitem builds at test time (batch of one frame, common_attr
# shared from index 0 on), and records what connect_face_keypoints draws.
_CHILD = r"""
import sys, types
import numpy as np, torch
up, tmp = sys.argv[1:3]
sys.path.insert(0, up)
import imaginaire.utils.visualization.face as face
from imaginaire.model_utils import label as label_ops
from imaginaire.model_utils.fs_vid2vid import crop_face_from_data
d = np.load(tmp + "/inputs.npz")
cfg = types.SimpleNamespace(
    type="imaginaire.datasets.paired_few_shot_videos",
    for_face_dataset=types.SimpleNamespace(
        add_upper_face=True, smooth_kernel_size=5, normalize_momentum=0.9),
    input_labels=["landmarks-dlib68"], input_few_shot_labels=["few_shot_landmarks-dlib68"],
    output_h_w="512, 512")
calls = []
connect = face.connect_face_keypoints
def recording(*args):
    out = connect(*args)
    calls.append((np.array(args[-1], dtype=np.float64), out[0][..., 0].copy()))
    return out
face.connect_face_keypoints = recording
H, W = (int(v) for v in d["hw"])
out = {}
for case in ("same", "cross"):
    ref, drv = d[case + "_ref"], d[case + "_driving"]
    common, kps, labels, cropped = None, [], [], []
    for t in range(len(drv)):
        data = {
            "images": torch.zeros(1, 3, H, W), "few_shot_images": torch.zeros(1, 3, H, W),
            "landmarks-dlib68": torch.from_numpy(drv[t][None].copy()).unsqueeze(0),
            "few_shot_landmarks-dlib68": torch.from_numpy(ref[None].copy()).unsqueeze(0),
            "landmarks-dlib68_xy": drv[t][None].copy(),
            "few_shot_landmarks-dlib68_xy": ref[None].copy(),
        }
        if common is not None:
            data["common_attr"] = common
        data = label_ops.concat_labels(cfg, True, data)
        data = label_ops.concat_few_shot_labels(cfg, True, data)
        calls.clear()
        data = face.normalize_and_connect_face_keypoints(cfg, True, data)
        (kp, lab), (ref_kp, ref_lab) = calls
        assert np.array_equal(data["label"][0, 0].numpy(), lab)
        data = crop_face_from_data(cfg, True, data)
        common = data["common_attr"]
        kps.append(kp[0]); labels.append(lab)
        cropped.append(data["label"][0, 0].numpy())
    out[case + "_keypoints"] = np.stack(kps)
    out[case + "_label"] = np.stack(labels) > 0.5
    out[case + "_ref_label"] = ref_lab > 0.5
    out[case + "_boxes"] = np.array(common["crop_coords"])
    out[case + "_cropped"] = np.stack(cropped)
    out[case + "_ref_cropped"] = data["few_shot_label"][0, 0].numpy()
cfgd = types.SimpleNamespace(for_face_dataset=cfg.for_face_dataset)
raw = d["landmarks_json"].astype(np.float64)
maps = face.convert_face_landmarks_to_image(cfgd, raw, tuple(d["src_hw"]), output_tensor=False)
out["raw_label"] = np.stack([m[..., 0] for m in maps]) > 0.5
np.savez(tmp + "/out.npz", **out)
"""


def read_upstream_landmarks(upstream: Path) -> np.ndarray:
    """``(5, 68, 2) int64``: imaginaire's unit-test landmark JSON files, in order."""
    files = sorted((Path(upstream) / LANDMARK_DIR).glob("*.json"))
    return np.stack([np.array(json.loads(f.read_text()), dtype=np.int64) for f in files])


def regenerate(upstream: Path, out: Path = FIXTURE) -> None:
    """Run upstream's test-time face ops on the unit-test landmarks; write the fixture."""
    raw = read_upstream_landmarks(upstream)
    inputs = {"landmarks_json": raw, "hw": np.array(HW), "src_hw": np.array(SRC_HW)}
    for case, (ref, driving) in cases(raw).items():
        inputs[case + "_ref"], inputs[case + "_driving"] = ref, driving
    with tempfile.TemporaryDirectory() as tmp:
        np.savez(Path(tmp) / "inputs.npz", **inputs)
        subprocess.run([sys.executable, "-c", _CHILD, str(upstream), tmp], check=True, cwd=tmp)
        r = dict(np.load(Path(tmp) / "out.npz"))
    fixture = {k: inputs[k] for k in ("landmarks_json", "hw", "src_hw")}
    fixture["upstream_commit"] = np.array(UPSTREAM_COMMIT)
    fixture["raw_label_bits"] = np.packbits(r["raw_label"], axis=-1)
    for case in CASES:
        fixture[case + "_keypoints"] = r[case + "_keypoints"]
        fixture[case + "_label_bits"] = np.packbits(r[case + "_label"], axis=-1)
        fixture[case + "_ref_label_bits"] = np.packbits(r[case + "_ref_label"], axis=-1)
        fixture[case + "_boxes"] = r[case + "_boxes"]
        fixture[case + "_cropped"] = r[case + "_cropped"][list(CROPPED)].astype(np.float32)
        fixture[case + "_ref_cropped"] = r[case + "_ref_cropped"].astype(np.float32)
    np.savez_compressed(out, **fixture)


# ---------------------------------------------------------------------------- tests


@pytest.fixture(scope="module")
def ref() -> dict[str, np.ndarray]:
    return dict(np.load(FIXTURE))


def unpack(bits: np.ndarray, width: int) -> np.ndarray:
    return np.unpackbits(bits, axis=-1, count=width).astype(np.float32)


@pytest.fixture(scope="module")
def prepared(ref: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {c: prepare_keypoints(*cases(ref["landmarks_json"])[c]) for c in CASES}


def test_fixture_provenance(ref: dict[str, np.ndarray]) -> None:
    assert str(ref["upstream_commit"]) == UPSTREAM_COMMIT
    assert ref["landmarks_json"].shape == (5, 68, 2)
    assert tuple(ref["hw"]) == HW == (1024, 1365)


def test_raw_frames_draw_like_upstream(ref: dict[str, np.ndarray]) -> None:
    """Original 640x480 frames, int points, stroke half-width 1: pixel-exact."""
    ours = render_label_map(ref["landmarks_json"], SRC_HW)
    assert ours.shape == (5, 1, *SRC_HW) and ours.dtype == np.float32
    np.testing.assert_array_equal(ours[:, 0], unpack(ref["raw_label_bits"], SRC_HW[1]))


@pytest.mark.parametrize("case", CASES)
def test_keypoints_match_upstream(
    ref: dict[str, np.ndarray], prepared: dict[str, np.ndarray], case: str
) -> None:
    """Normalisation (momentum), median smoothing: within 1e-4 px (measured 0)."""
    assert prepared[case].shape == (len(DRIVING), 68, 2)
    np.testing.assert_allclose(prepared[case], ref[case + "_keypoints"], rtol=0, atol=1e-4)


@pytest.mark.parametrize("case", CASES)
def test_label_maps_match_upstream(
    ref: dict[str, np.ndarray], prepared: dict[str, np.ndarray], case: str
) -> None:
    """1024x1365 edge maps of every driving frame and of the reference: pixel-exact."""
    ours = render_label_map(prepared[case], HW)
    assert ours.shape == (len(DRIVING), 1, *HW)
    np.testing.assert_array_equal(ours[:, 0], unpack(ref[case + "_label_bits"], HW[1]))
    ref_points = cases(ref["landmarks_json"])[case][0]
    ref_map = render_label_map(ref_points[None], HW)[0, 0]
    np.testing.assert_array_equal(ref_map, unpack(ref[case + "_ref_label_bits"], HW[1]))


@pytest.mark.parametrize("case", CASES)
def test_stream_crops_like_upstream(ref: dict[str, np.ndarray], case: str) -> None:
    """Crop boxes (first driving frame, reference) and the 512x512 cropped labels."""
    ref_points, driving = cases(ref["landmarks_json"])[case]
    stream = FaceLabelStream(ref_points, HW)
    labels = [stream(frame) for frame in driving]
    boxes = ref[case + "_boxes"]
    assert stream.box == tuple(boxes[0]) and stream.ref_box == tuple(boxes[1])
    assert stream.box == face_crop_box(driving[0], HW)
    assert labels[0].shape == (1, 1, 512, 512) and labels[0].dtype == torch.float32
    ours = torch.cat([labels[i] for i in CROPPED])[:, 0].numpy()
    np.testing.assert_allclose(ours, ref[case + "_cropped"], rtol=0, atol=1e-6)
    np.testing.assert_allclose(
        stream.few_shot_label[0, 0].numpy(), ref[case + "_ref_cropped"], rtol=0, atol=1e-6
    )


def test_normalizer_state_and_smoothing(ref: dict[str, np.ndarray]) -> None:
    """Frames 0-3 are the momentum-normalised points; frame 4 on is the median of the
    last five of those; a reset starts over."""
    ref_points, driving = cases(ref["landmarks_json"])["cross"]
    scales, plain = None, []
    for frame in driving:
        kp, scales = normalize_keypoints(frame, ref_points, scales)
        plain.append(kp)
    plain = np.stack(plain)
    norm = KeypointNormalizer(ref_points)
    out = np.stack([norm(frame) for frame in driving])
    np.testing.assert_array_equal(out[:4], plain[:4])
    np.testing.assert_array_equal(out[6], np.median(plain[2:7], axis=0))
    assert not np.array_equal(out[6], plain[6])
    norm.reset()
    np.testing.assert_array_equal(norm(driving[0]), plain[0])


def test_self_normalisation_is_identity(ref: dict[str, np.ndarray]) -> None:
    points = cases(ref["landmarks_json"])["same"][0]
    kp, (sx, sy, img_scale) = normalize_keypoints(points, points)
    assert img_scale == 1.0 and set(sx) == {1.0} and set(sy) == {1.0}
    np.testing.assert_allclose(kp, points, atol=1e-9)


def test_upper_face_and_stroke(ref: dict[str, np.ndarray]) -> None:
    full = add_upper_face(ref["landmarks_json"][:1])
    assert full.shape == (1, 83, 2)
    np.testing.assert_array_equal(full[0, 68:, 0], ref["landmarks_json"][0, 15:0:-1, 0])
    assert (full[0, 68:, 1] < full[0, 1:16, 1].min()).all()  # above the jaw
    assert [stroke_width(h) for h in (128, 256, 512, 1024)] == [1, 1, 2, 4]


def test_bad_inputs() -> None:
    with pytest.raises(ValueError, match="68, 2"):
        render_label_map(np.zeros((2, 5, 2)), 64)
    with pytest.raises(ValueError, match="68, 2"):
        normalize_keypoints(np.zeros((5, 2)), np.zeros((68, 2)))
    assert render_label_map(np.zeros((0, 68, 2)), (8, 12)).shape == (0, 1, 8, 12)


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] != "--regenerate":
        sys.exit("usage: python -m tests.test_fsvid2vid_labelmap --regenerate UPSTREAM_DIR")
    regenerate(Path(sys.argv[2]))
