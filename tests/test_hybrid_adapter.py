"""Hybrid method adapters on a tiny seeded checkpoint: frames, batching, edits, CMA / PTI
on a copy of G, variant checks. CMA and PTI themselves are replaced by recording fakes
(their own tests are tests/test_hybrid_cma.py); here only the adapter's use of them."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import reenactbench.baselines.hybrid.cma as cma_module
import reenactbench.baselines.hybrid.pti as pti_module
import torch
from reenactbench.baselines.hybrid.adapter import (
    HybridMethod,
    HybridNoCMA,
    HybridNoHybrid,
    HybridNoIdReg,
    HybridPTI,
    parse_edit,
    to_uint8,
)
from reenactbench.baselines.hybrid.checkpoint import save_checkpoint
from reenactbench.baselines.hybrid.config import load_config
from reenactbench.baselines.hybrid.model import HybridModel, build_model

from reenactbench.errors import InputError, MethodError, WeightsMissing
from reenactbench.methods import load_method

R = 64  # tiny generator size


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Tiny hybrid checkpoint, its no-hybrid variant, and a seeded lpips-alex trunk file."""
    root = tmp_path_factory.mktemp("hybrid-adapter")
    cfg = load_config("tiny")
    model = build_model(cfg)
    out = {"hybrid": save_checkpoint(root / "hybrid-tiny.pt", model)}
    cfg_nh = replace(cfg, latent=replace(cfg.latent, hybrid=False))
    out["no-hybrid"] = save_checkpoint(
        root / "no-hybrid-tiny.pt", HybridModel(cfg_nh, model.generator, model.latent_avg)
    )
    g = torch.Generator().manual_seed(0)
    shapes = {0: (64, 3, 11, 11), 3: (192, 64, 5, 5), 6: (384, 192, 3, 3)}
    shapes |= {8: (256, 384, 3, 3), 10: (256, 256, 3, 3)}
    alex = {}
    for i, shape in shapes.items():
        alex[f"features.{i}.weight"] = torch.randn(shape, generator=g) * 0.05
        alex[f"features.{i}.bias"] = torch.zeros(shape[0])
    out["lpips-alex"] = root / "alexnet-owt-7be5be79.pth"
    torch.save(alex, out["lpips-alex"])
    return out


def _video(seed: int, n: int) -> list[np.ndarray]:
    """``n`` smooth random ``(64, 64, 3) uint8`` frames."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (n, 8, 8, 3)).astype(np.float32)
    big = np.repeat(np.repeat(small, 8, axis=1), 8, axis=2)
    return list(big.astype(np.uint8))


SOURCE = _video(100, 1)[0]
DRIVING = _video(101, 3)


class Reader:
    """A driving iterable that records how many frames were read."""

    def __init__(self, frames: list[np.ndarray]) -> None:
        self.frames, self.read = frames, 0

    def __iter__(self):  # noqa: ANN204
        for f in self.frames:
            self.read += 1
            yield f


@pytest.fixture(scope="module")
def plain(files: dict[str, Path]) -> list[np.ndarray]:
    """``hybrid-no-cma`` output for SOURCE / DRIVING (batch_size 2)."""
    method = HybridNoCMA(checkpoint=str(files["hybrid"]), batch_size=2)
    return list(method.reenact(SOURCE, DRIVING))


def _g_state(method: HybridMethod) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in method.model.generator.state_dict().items()}


def test_class_attributes() -> None:
    classes = [HybridMethod, HybridNoCMA, HybridPTI, HybridNoIdReg, HybridNoHybrid]
    # (+ hybrid-sf-forward: test_sf_layer_readings_are_separate_variants)
    assert [c.name for c in classes] == [
        "hybrid",
        "hybrid-no-cma",
        "hybrid-pti",
        "hybrid-no-idreg",
        "hybrid-no-hybrid",
    ]
    assert all(c.resolution == 1024 for c in classes)
    assert [c.weights[0] for c in classes] == ["hybrid-hdtf"] * 3 + [
        "hybrid-hdtf-no-idreg",
        "hybrid-hdtf-no-hybrid",
    ]
    assert "lpips-alex" not in HybridNoCMA.weights
    assert all("lpips-alex" in c.weights for c in classes if c is not HybridNoCMA)


def test_one_frame_per_driving_frame_source_encoded_once(
    files: dict[str, Path], plain: list[np.ndarray], monkeypatch: pytest.MonkeyPatch
) -> None:
    method = load_method(
        "reenactbench.baselines.hybrid.adapter:HybridNoCMA",
        checkpoint=str(files["hybrid"]),
        batch_size=2,
    )
    assert method.resolution == R and HybridNoCMA.resolution == 1024
    model = method.model
    batches: list[int] = []
    encode = model.encode

    def counting(x: torch.Tensor):  # noqa: ANN202
        batches.append(x.shape[0])
        return encode(x)

    monkeypatch.setattr(model, "encode", counting)
    reader = Reader(DRIVING)
    out = method.reenact(SOURCE, reader)
    first = next(out)
    assert reader.read <= 2  # driving frames are read lazily, one batch at a time
    frames = [first, *out]
    assert batches == [1, 2, 1]  # source once, then driving batches
    assert len(frames) == 3
    assert all(f.shape == (R, R, 3) and f.dtype == np.uint8 for f in frames)
    assert all(np.array_equal(a, b) for a, b in zip(frames, plain, strict=True))
    # the adapter is Eq. 3 on preprocessed frames, converted to uint8
    with torch.no_grad():
        src = encode(model.preprocess(SOURCE[None]))
        drv = encode(model.preprocess(np.stack(DRIVING[:2])))
        want = to_uint8(model.reenact(src, drv))
    assert np.array_equal(np.stack(frames[:2]), want)
    assert len({f.tobytes() for f in frames}) == 3  # the driving frame matters


def test_options_and_missing_weights(files: dict[str, Path]) -> None:
    path = "reenactbench.baselines.hybrid.adapter:HybridNoCMA"
    with pytest.raises(MethodError, match="bad options"):
        load_method(path, checkpoint=str(files["hybrid"]), colour="red")
    with pytest.raises(MethodError, match="batch_size"):
        HybridNoCMA(checkpoint=str(files["hybrid"]), batch_size=0)
    with pytest.raises(WeightsMissing, match="hybrid-hdtf"):
        HybridNoCMA()  # empty weight cache
    with pytest.raises(WeightsMissing, match="lpips-alex"):
        HybridMethod(checkpoint=str(files["hybrid"]))


def test_edit_moves_the_image(
    files: dict[str, Path], plain: list[np.ndarray], tmp_path: Path
) -> None:
    direction = np.random.default_rng(0).standard_normal(64).astype(np.float32)
    direction /= np.linalg.norm(direction)
    npy = tmp_path / "smile.npy"
    np.save(npy, direction)
    method = HybridNoCMA(checkpoint=str(files["hybrid"]), batch_size=2, edit=f"{npy}=3")
    offset = method._edit
    assert offset is not None and offset.shape == (1, 10, 64)
    assert torch.equal(offset[0], 3 * torch.from_numpy(direction).expand(10, 64))
    edited = list(method.reenact(SOURCE, DRIVING[:1]))
    diff = np.abs(edited[0].astype(np.int16) - plain[0]).mean()
    assert diff > 2.0  # levels of 0..255
    model = method.model
    with pytest.raises(InputError, match="DIRECTION=STRENGTH"):
        parse_edit(str(npy), model)
    with pytest.raises(InputError, match="DIRECTION=STRENGTH"):
        parse_edit(f"{npy}=big", model)
    with pytest.raises(InputError, match="no such file"):
        parse_edit(f"{tmp_path / 'absent.npy'}=1", model)
    np.save(tmp_path / "w512.npy", np.ones(512, np.float32))
    with pytest.raises(InputError, match="does not fit"):
        parse_edit(f"{tmp_path / 'w512.npy'}=1", model)
    comps = np.zeros((3, 1, 64), np.float32)
    comps[2, 0, 5] = 1.0
    npz = tmp_path / "ganspace.npz"
    np.savez(npz, lat_comp=comps, lat_stdev=np.array([1.0, 1.0, 2.0], np.float32))
    got = parse_edit(f"{npz}:2=-1.5", model)
    assert float(got[0, 4, 5]) == -3.0 and float(got.abs().sum()) == 30.0


def _fake_cma(calls: list[dict[str, Any]], original: torch.nn.Module):  # noqa: ANN202
    def fake(model, source, driving, cfg, lpips_fn, generator):  # noqa: ANN001, ANN202
        bias = model.generator.to_rgbs[-1].bias
        calls.append(
            {
                "source": tuple(source.shape),
                "driving": tuple(driving.shape),
                "steps": cfg.steps,
                "rng": isinstance(generator, torch.Generator),
                "lpips": lpips_fn is not None,
                "is_copy": model.generator is not original,
                "fresh": torch.equal(bias, original.to_rgbs[-1].bias),
            }
        )
        with torch.no_grad():
            model.generator.to_rgbs[-1].bias.add_(0.2)  # "tune" the copy (weights are demodulated)
        return []

    return fake


def test_cma_tunes_a_copy_of_g_per_video(
    files: dict[str, Path], plain: list[np.ndarray], monkeypatch: pytest.MonkeyPatch
) -> None:
    method = HybridMethod(
        checkpoint=str(files["hybrid"]),
        weights={"lpips-alex": files["lpips-alex"]},
        batch_size=2,
        cma_steps=1,
    )
    original = method.model.generator
    before = _g_state(method)
    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(cma_module, "cyclic_manifold_adjustment", _fake_cma(calls, original))
    first = list(method.reenact(SOURCE, DRIVING))  # CMA sees the whole clip (3 frames)
    second = list(method.reenact(SOURCE, DRIVING[:1]))
    assert [len(first), len(second)] == [3, 1]
    assert all(f.shape == (R, R, 3) and f.dtype == np.uint8 for f in first + second)
    common = {"source": (1, 3, R, R), "steps": 1, "rng": True, "lpips": True, "is_copy": True}
    assert calls == [
        {**common, "driving": (3, 3, R, R), "fresh": True},
        {**common, "driving": (1, 3, R, R), "fresh": True},
    ]
    assert method.model.generator is original
    assert all(torch.equal(v, before[k]) for k, v in original.state_dict().items())
    assert all(not np.array_equal(a, b) for a, b in zip(first, plain, strict=True))
    # each video starts from the loaded G (batch 2 vs 1 may differ by rounding only)
    assert np.abs(first[0].astype(np.int16) - second[0]).max() <= 1


def test_cma_frames_spread_across_the_clip(
    files: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """CMA adjusts to the whole clip by default ([cma] frames = 0); ``cma_frames=N`` gives
    it N frames evenly spaced across the clip (first and last included), not the first N."""
    from reenactbench.baselines.hybrid.adapter import cma_frames

    clip = torch.arange(10.0).view(10, 1)
    assert torch.equal(cma_frames(clip, 0), clip) and torch.equal(cma_frames(clip, 12), clip)
    assert cma_frames(clip, 3).view(-1).tolist() == [0.0, 4.0, 9.0]  # round(4.5) = 4
    seen: list[torch.Tensor] = []

    def spy(model, source, driving, cfg, lpips_fn, generator):  # noqa: ANN001, ANN202
        seen.append(driving.clone())
        return []

    monkeypatch.setattr(cma_module, "cyclic_manifold_adjustment", spy)
    kwargs = {"checkpoint": str(files["hybrid"]), "weights": {"lpips-alex": files["lpips-alex"]},
              "cma_steps": 1}  # fmt: skip
    list(HybridMethod(**kwargs).reenact(SOURCE, DRIVING))
    list(HybridMethod(**kwargs, cma_frames=2).reenact(SOURCE, DRIVING))
    model = HybridMethod(**kwargs).model
    every = model.preprocess(np.stack(DRIVING))
    assert torch.equal(seen[0], every)  # all 3 frames
    assert torch.equal(seen[1], every[[0, 2]])  # 2 spread: the first and the last
    with pytest.raises(MethodError, match="cma_frames must be >= 0"):
        HybridMethod(**kwargs, cma_frames=-1)


def test_cma_batch_option_reaches_cma(
    files: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``cma_batch=N`` is the batch CMA steps with (``[cma] batch`` otherwise)."""
    batches: list[int] = []

    def spy(model, source, driving, cfg, lpips_fn, generator):  # noqa: ANN001, ANN202
        batches.append(cfg.batch)
        return []

    monkeypatch.setattr(cma_module, "cyclic_manifold_adjustment", spy)
    kwargs = {"checkpoint": str(files["hybrid"]), "weights": {"lpips-alex": files["lpips-alex"]},
              "cma_steps": 1}  # fmt: skip
    list(HybridMethod(**kwargs).reenact(SOURCE, DRIVING))
    list(HybridMethod(**kwargs, cma_batch=1).reenact(SOURCE, DRIVING))
    assert batches[1] == 1 and batches[0] == HybridMethod(**kwargs).cma_cfg.batch != 1
    with pytest.raises(MethodError, match="cma_batch must be >= 1"):
        HybridMethod(**kwargs, cma_batch=0)


def test_cma_restores_g_when_the_consumer_stops_early(
    files: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    method = HybridMethod(
        checkpoint=str(files["hybrid"]),
        weights={"lpips-alex": files["lpips-alex"]},
        batch_size=1,
        cma_steps=1,
    )
    original = method.model.generator
    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(cma_module, "cyclic_manifold_adjustment", _fake_cma(calls, original))
    out = method.reenact(SOURCE, DRIVING[:2])
    next(out)
    assert method.model.generator is not original  # the tuned copy renders
    out.close()
    assert method.model.generator is original and len(calls) == 1


def test_pti_tunes_a_copy_on_the_source_only(
    files: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    method = HybridPTI(
        checkpoint=str(files["hybrid"]),
        weights={"lpips-alex": files["lpips-alex"]},
        batch_size=1,
        cma_steps=3,
    )
    original = method.model.generator
    before = _g_state(method)
    calls: list[tuple[Any, ...]] = []

    def fake(model, source, cfg, lpips_fn):  # noqa: ANN001, ANN202
        calls.append((tuple(source.shape), cfg.steps, model.generator is not original))
        with torch.no_grad():
            model.generator.conv1.conv.weight.mul_(2.0)
        return []

    monkeypatch.setattr(pti_module, "pivotal_tuning", fake)
    reader = Reader(DRIVING[:2])
    out = method.reenact(SOURCE, reader)
    next(out)
    assert reader.read == 1  # PTI needs no driving frames up front
    assert len([*out]) == 1
    assert calls == [((1, 3, R, R), 3, True)]
    assert all(torch.equal(v, before[k]) for k, v in original.state_dict().items())


def test_variants_check_their_checkpoint(files: dict[str, Path]) -> None:
    with pytest.raises(InputError, match=r"hybrid-tiny.pt: trained with \[latent\] hybrid"):
        HybridNoHybrid(checkpoint=str(files["hybrid"]))
    with pytest.raises(InputError, match=r"trained with \[loss\] idreg = True"):
        HybridNoIdReg(checkpoint=str(files["hybrid"]))
    with pytest.raises(InputError, match=r"trained with \[latent\] hybrid = False"):
        HybridNoCMA(checkpoint=str(files["no-hybrid"]))
    method = HybridNoHybrid(checkpoint=str(files["no-hybrid"]), cma_steps=0)
    assert method.model.sf_indices == tuple(range(7)) and method._lpips is None


def test_sf_layer_readings_are_separate_variants(files: dict[str, Path], tmp_path: Path) -> None:
    """``hybrid-sf-forward`` (S_F on the first 7 style vectors in forward order at 64²,
    toRGB included) takes only a checkpoint trained with sf_layers = "forward"; ``hybrid``
    refuses it, and the other way round."""
    from reenactbench.baselines.hybrid.adapter import HybridSfForward

    cfg = load_config("tiny")
    fwd = replace(cfg, latent=replace(cfg.latent, sf_layers="forward"))
    path = save_checkpoint(tmp_path / "forward.pt", build_model(fwd))
    method = HybridSfForward(checkpoint=str(path), cma_steps=0)
    assert method.model.sf_indices == tuple(range(7))
    assert HybridNoCMA(checkpoint=str(files["hybrid"])).model.sf_indices == (0, 2, 3, 5, 6, 8, 9)
    with pytest.raises(InputError, match=r"sf_layers = forward, method .hybrid-no-cma. needs conv"):
        HybridNoCMA(checkpoint=str(path))
    with pytest.raises(InputError, match=r"sf_layers = conv, method .hybrid-sf-forward."):
        HybridSfForward(checkpoint=str(files["hybrid"]), cma_steps=0)
