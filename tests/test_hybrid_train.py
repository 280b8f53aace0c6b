"""Hybrid encoder training (baselines/hybrid/train.py) and its triplet sampler (pairs.py).

Runs on the demo data set (real faces, 16 frames per video) with the tiny config (every
StyleGAN2 layer capped at 32 channels, ``max_channels``), so a step takes ~0.1 s on 2 CPU
cores. LPIPS and the identity loss are off (their weights are not in the test
environment); their wiring is checked with small stand-in networks.
"""

from __future__ import annotations

import csv
import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

pytestmark = pytest.mark.faces


def tiny(**train) -> object:
    """The tiny config without LPIPS / identity (no weights here), log every step."""
    from reenactbench.baselines.hybrid.config import load_config

    cfg = load_config("tiny")
    loss = dataclasses.replace(cfg.loss, lpips=0.0, id=0.0)
    opts = {"log_every": 1, "iters_stage1": 60, "iters_stage2": 10, **train}
    return dataclasses.replace(cfg, loss=loss, train=dataclasses.replace(cfg.train, **opts))


def read_log(out: Path) -> list[dict[str, str]]:
    with (out / "log.csv").open(newline="") as f:
        return list(csv.DictReader(f))


def encoder_state(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)["encoder"]


# ------------------------------------------------------------------------------ pairs
def test_evenly_spaced() -> None:
    from reenactbench.baselines.hybrid.pairs import evenly_spaced

    assert evenly_spaced(16, 50).tolist() == list(range(16))
    assert evenly_spaced(100, 5).tolist() == [0, 25, 50, 74, 99]
    assert evenly_spaced(0, 5).tolist() == []


def test_pair_sampler(demo_data: Path) -> None:
    from reenactbench.baselines.hybrid.pairs import PairSampler

    from reenactbench.data.dataset import load_dataset

    sampler = PairSampler(demo_data, input_size=64, frames_per_video=8, seed=3)
    assert sampler.n_cached == 48 and sampler.excluded == 0  # 6 videos x 8 faces
    assert sampler.memory_bytes == 48 * 64 * 64 * 3 + 48 * 68 * 2 * 4
    video_of = np.repeat(np.arange(6), 8)  # cache rows in video order
    identity = {v.name: v.identity for v in load_dataset(demo_data).videos}
    ident_of = np.array([identity[sampler.videos[v]] for v in video_of])
    idx = sampler.sample_indices(200)
    assert (idx[:, 0] != idx[:, 1]).all()  # S != D1
    assert (video_of[idx[:, 0]] == video_of[idx[:, 1]]).all()  # same video
    assert (ident_of[idx[:, 2]] != ident_of[idx[:, 0]]).all()  # D2: other identity
    assert len(set(idx[:, 0].tolist())) > 30  # covers the cache

    batch = sampler.sample(4)
    assert batch.src.shape == (4, 3, 64, 64) and batch.src.dtype == torch.float32
    assert -1 <= float(batch.src.min()) and float(batch.src.max()) <= 1
    assert batch.src_target is batch.src  # loss size == input size: same tensor
    assert batch.src_landmarks.shape == (4, 68, 2)
    assert 0 < float(batch.src_landmarks.min()) and float(batch.src_landmarks.max()) < 64

    # resume continues the exact stream; a state for other settings is refused
    state = sampler.state_dict()
    ahead = sampler.sample_indices(5)
    again = PairSampler(demo_data, input_size=64, frames_per_video=8, seed=3)
    again.load_state_dict(state)
    assert (again.sample_indices(5) == ahead).all()
    other = PairSampler(demo_data, input_size=64, frames_per_video=8, seed=4)
    from reenactbench.errors import InputError

    with pytest.raises(InputError, match="differs in seed"):
        other.load_state_dict(state)


def test_pair_sampler_excludes_faceless_frames(demo_data: Path) -> None:
    from reenactbench.baselines.hybrid.pairs import PairSampler

    from reenactbench.errors import InputError
    from reenactbench.faces import detect_landmarks

    calls = iter(range(10_000))

    def every_third_fails(frame: np.ndarray) -> np.ndarray | None:
        return None if next(calls) % 3 == 0 else detect_landmarks(frame)

    s = PairSampler(demo_data, 64, frames_per_video=6, detector=every_third_fails)
    assert (s.n_cached, s.excluded) == (24, 12)
    assert sum(s.excluded_by_video.values()) == 12
    with pytest.raises(InputError, match="no video has two frames with a detected face"):
        PairSampler(demo_data, 64, frames_per_video=6, detector=lambda f: None)
    calls = iter(range(10_000))  # videos are read in name order: man_* (18 frames) first

    def only_the_man(frame: np.ndarray) -> np.ndarray | None:
        return detect_landmarks(frame) if next(calls) < 18 else None

    with pytest.raises(InputError, match="at least two identities"):
        PairSampler(demo_data, 64, frames_per_video=6, detector=only_the_man)


# ------------------------------------------------------------------------------ train
@pytest.fixture(scope="module")
def trained(demo_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 50-step stage-1 run at lr 1e-3 (log every step)."""
    from reenactbench.baselines.hybrid.train import train_hybrid

    out = tmp_path_factory.mktemp("hybrid-train")
    seen: list[tuple[str, int, int]] = []
    cfg = tiny(lr=1e-3, ckpt_every=25, sample_every=25)
    path = train_hybrid(
        cfg, demo_data, out, stage=1, max_iters=50, on_progress=lambda *a: seen.append(a)
    )
    assert path == out / "stage1.pt"
    assert seen[-1] == ("train stage 1", 50, 50) and len(seen) == 50
    return out


def test_reconstruction_loss_falls(trained: Path) -> None:
    rows = read_log(trained)
    assert [int(r["step"]) for r in rows] == list(range(1, 51))
    rec = np.array([float(r["self"]) for r in rows])
    first, last = rec[:5].mean(), rec[-5:].mean()
    # measured: 3.07 -> 1.77 (seeded, CPU)
    assert last < 0.75 * first, (first, last)


def test_log_and_outputs(trained: Path) -> None:
    import json

    from reenactbench.baselines.hybrid.train import LOG_COLUMNS

    with (trained / "log.csv").open() as f:
        assert f.readline().strip() == ",".join(LOG_COLUMNS)
    rows = read_log(trained)
    r16 = rows[15]
    assert r16["id"] == ""  # loss.id = 0: skipped, logged blank
    assert r16["r1"] != "" and rows[14]["r1"] == ""  # lazy R1 every 16 steps
    for k in ("total", "self", "reenact", "w_id", "reg", "feat", "adv", "d"):
        assert np.isfinite(float(r16[k])), k
    assert float(rows[0]["lr"]) == 1e-3 and {r["stage"] for r in rows} == {"1"}
    secs = [float(r["seconds"]) for r in rows]
    assert secs == sorted(secs)
    meta = json.loads((trained / "train_stage1.json").read_text())
    assert meta["skipped_terms"] == ["id"] and meta["frames_cached"] == 48
    assert meta["frames_excluded_no_face"] == 0
    from PIL import Image

    with Image.open(trained / "samples" / "stage1_0000050.png") as im:
        assert im.size == (5 * 64, 2 * 64)  # 5 columns, batch 2


def test_checkpoint_loads(trained: Path) -> None:
    from reenactbench.baselines.hybrid.checkpoint import load_hybrid

    model = load_hybrid(trained / "stage1.pt")
    state = encoder_state(trained / "stage1.pt")
    for k, v in model.encoder_state_dict().items():
        assert torch.equal(v, state[k]), k
    ckpt = torch.load(trained / "stage1.pt", weights_only=True)
    assert (ckpt["step"], ckpt["stage"]) == (50, 1)


def _params(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.named_parameters()}


def test_gradient_flow_per_stage(trained: Path, demo_data: Path, tmp_path: Path) -> None:
    """Stage 1 moved pyramid and heads, stage 2 only heads; G never changes."""
    from reenactbench.baselines.hybrid.checkpoint import load_hybrid
    from reenactbench.baselines.hybrid.model import build_model
    from reenactbench.baselines.hybrid.train import train_hybrid

    cfg = tiny(lr=1e-3, lr_finetune=1e-3)
    fresh = build_model(cfg)
    s1 = load_hybrid(trained / "stage1.pt")
    out = tmp_path / "run"
    s2_path = train_hybrid(cfg, demo_data, out, stage=2, max_iters=3, init=trained / "stage1.pt")
    s2 = load_hybrid(s2_path)
    p0, p1, p2 = _params(fresh), _params(s1), _params(s2)
    for name in p0:
        if name.startswith("generator."):
            assert torch.equal(p0[name], p1[name]) and torch.equal(p1[name], p2[name]), name
        elif name.startswith("pyramid."):
            assert not torch.equal(p0[name], p1[name]), name  # stage 1 trains F
            assert torch.equal(p1[name], p2[name]), name  # stage 2: F bit-identical
        else:
            assert name.startswith(("id_heads.", "f_heads.")), name
            assert not torch.equal(p1[name], p2[name]), name  # stage 2 trains the heads
    rows = read_log(out)
    assert [(r["stage"], r["step"]) for r in rows] == [("2", "1"), ("2", "2"), ("2", "3")]


def test_resume_is_bit_identical(demo_data: Path, tmp_path: Path) -> None:
    from reenactbench.baselines.hybrid.train import train_hybrid

    cfg = tiny(log_every=3, ckpt_every=7, iters_stage1=20)
    straight, split = tmp_path / "straight", tmp_path / "split"
    train_hybrid(cfg, demo_data, straight, stage=1)
    train_hybrid(cfg, demo_data, split, stage=1, max_iters=10)
    train_hybrid(cfg, demo_data, split, stage=1, resume=True)
    a, b = encoder_state(straight / "stage1.pt"), encoder_state(split / "stage1.pt")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k

    def strip(rows: list[dict[str, str]]) -> list[dict[str, str]]:
        return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]

    rows = read_log(straight)
    assert [int(r["step"]) for r in rows] == [3, 6, 9, 12, 15, 18]
    assert strip(rows) == strip(read_log(split))
    assert rows[-1]["r1"] != ""  # the step-16 R1 falls in the last window


def test_run_folder_rules(demo_data: Path, tmp_path: Path, trained: Path) -> None:
    from reenactbench.baselines.hybrid.train import train_hybrid

    from reenactbench.errors import InputError, WeightsMissing

    cfg = tiny()
    with pytest.raises(InputError, match="nothing to resume"):
        train_hybrid(cfg, demo_data, tmp_path / "new", resume=True)
    with pytest.raises(InputError, match="already holds a stage-1 run"):
        train_hybrid(cfg, demo_data, trained, stage=1)
    with pytest.raises(
        InputError, match="is a stage-2 checkpoint, expected stage 1"
    ):  # init must be stage 1
        train_hybrid(cfg, demo_data, tmp_path / "x", stage=2, init=_stage2_ckpt(trained, tmp_path))
    lpips_on = dataclasses.replace(cfg, loss=dataclasses.replace(cfg.loss, lpips=0.8))
    with pytest.raises(WeightsMissing, match="lpips-alex"):
        train_hybrid(lpips_on, demo_data, tmp_path / "y")
    id_on = dataclasses.replace(cfg, loss=dataclasses.replace(cfg.loss, id=0.1))
    with pytest.raises(WeightsMissing, match="ir-se50"):
        train_hybrid(id_on, demo_data, tmp_path / "z")


def _stage2_ckpt(trained: Path, tmp_path: Path) -> Path:
    from reenactbench.baselines.hybrid.checkpoint import load_hybrid, save_checkpoint

    return save_checkpoint(tmp_path / "s2.pt", load_hybrid(trained / "stage1.pt"), 5, 2)


def test_identity_and_lpips_terms_wired(demo_data: Path, tmp_path: Path, monkeypatch) -> None:
    """With stand-in networks, Eqs. 8-9 and LPIPS enter the objective and the log."""
    import reenactbench.baselines.hybrid.train as tr

    embed_net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 4, 4), torch.nn.Flatten(), torch.nn.LazyLinear(16)
    )
    embed_net(torch.zeros(1, 3, 64, 64))
    embed_net.requires_grad_(False)
    seen: dict[str, int] = {"id": 0, "lpips": 0}

    def fake_id(cfg, weights, device):
        def embed(x: torch.Tensor) -> torch.Tensor:
            seen["id"] += 1
            return embed_net(x)

        return embed

    def fake_lpips(cfg, weights, device):
        def dist(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            seen["lpips"] += 1
            return (x - y).abs().mean(dim=(1, 2, 3), keepdim=True)

        return dist

    monkeypatch.setattr(tr, "identity_fn", fake_id)
    monkeypatch.setattr(tr, "lpips_fn", fake_lpips)
    cfg = tiny()
    cfg = dataclasses.replace(cfg, loss=dataclasses.replace(cfg.loss, id=0.1, lpips=0.8))
    tr.train_hybrid(cfg, demo_data, tmp_path / "run", max_iters=2)
    rows = read_log(tmp_path / "run")
    assert all(0 <= float(r["id"]) <= 4 for r in rows)
    assert seen["id"] == 2 * 2  # per step: real source (no grad) + (S->D, S->D2) batch
    assert seen["lpips"] == 2 * 4  # per step: self, reenact, two masked pairs (Eq. 13)


def _ddp_worker(rank: int, world: int, data: str, out: str, port: int) -> None:
    import os

    import reenactbench.baselines.hybrid.train as tr
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.set_num_threads(1)
    runs = []
    step = tr.train_step

    def spy(run, batch, i):
        runs.append(run)
        return step(run, batch, i)

    tr.train_step = spy
    try:
        tr.train_hybrid(tiny(), Path(data), Path(out), max_iters=3)
        run = runs[-1]
        state = {"enc": run.model.encoder_state_dict(), "d": run.disc.state_dict()}
        torch.save({**state, "idx": run.sampler.sample_indices(2)}, f"{out}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_ddp_two_ranks_stay_in_sync(demo_data: Path, tmp_path: Path) -> None:
    """torchrun-style run on 2 CPU processes (gloo): encoder and latent discriminator stay
    identical on both ranks, the sample streams differ, only rank 0 writes."""
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "ddp"
    mp.spawn(_ddp_worker, args=(2, str(demo_data), str(out), port), nprocs=2)
    a, b = (torch.load(out / f"rank{r}.pt", weights_only=False) for r in (0, 1))
    for part in ("enc", "d"):
        assert all(torch.equal(a[part][k], b[part][k]) for k in a[part]), part
    assert not np.array_equal(a["idx"], b["idx"])
    assert [r["step"] for r in read_log(out)] == ["1", "2", "3"]  # one writer
