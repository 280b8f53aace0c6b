"""Latent edit directions (reenactbench.nn.directions) on seeded arrays."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from reenactbench.errors import InputError
from reenactbench.nn.directions import (
    Direction,
    StyleEdit,
    apply_direction,
    apply_style_edits,
    load_direction,
    load_ganspace,
    load_interfacegan,
    parse_style_edit,
)

L, D = 18, 512


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def _w_plus(batch: int = 2) -> torch.Tensor:
    return torch.from_numpy(_rng(1).normal(size=(batch, L, D)).astype(np.float32))


@pytest.mark.parametrize(
    ("shape", "space", "vshape"),
    [((D,), "w", (D,)), ((1, D), "w", (D,)), ((L, D), "w+", (L, D)), ((1, L, D), "w+", (L, D))],
)
def test_interfacegan_shapes(tmp_path, shape, space, vshape):
    arr = _rng().normal(size=shape)  # float64 accepted too (upstream writes float32)
    path = tmp_path / "smile.npy"
    np.save(path, arr)
    d = load_interfacegan(path)
    assert (d.space, tuple(d.vector.shape), d.name, d.vector.dtype) == (
        space, vshape, "smile", torch.float32,
    )  # fmt: skip
    assert np.array_equal(d.vector.numpy(), arr.reshape(vshape).astype(np.float32))
    assert load_direction(path).space == space


def test_interfacegan_bad_files(tmp_path):
    p = tmp_path / "b.npy"
    np.save(p, np.zeros((2, 3, 4, 5)))
    with pytest.raises(InputError, match=r"b\.npy: boundary shape \(2, 3, 4, 5\)"):
        load_interfacegan(p)
    np.save(p, np.zeros(4, dtype=np.int64))
    with pytest.raises(InputError, match="float array"):
        load_interfacegan(p)
    np.save(p, np.array([1.0, np.nan]))
    with pytest.raises(InputError, match="NaN"):
        load_interfacegan(p)
    with pytest.raises(InputError, match="unknown direction format"):
        load_direction(tmp_path / "x.pt")


def _ganspace(tmp_path, n: int = 5):
    comp = _rng(2).normal(size=(n, 1, D)).astype(np.float32)
    comp /= np.linalg.norm(comp, axis=-1, keepdims=True)
    std = np.linspace(1.0, 3.0, n).astype(np.float32)
    path = tmp_path / "ffhq-pca.npz"
    np.savez_compressed(
        path, lat_comp=comp, lat_mean=np.zeros((1, D), np.float32), lat_stdev=std,
        act_comp=comp, var_ratio=np.ones(n, np.float32),
    )  # fmt: skip
    return path, comp, std


def test_ganspace_units(tmp_path):
    path, comp, std = _ganspace(tmp_path)
    d = load_ganspace(path, 3, layers=(0, 4))
    assert (d.space, d.name, d.layers, tuple(d.vector.shape)) == ("w", "ffhq-pca:3", (0, 4), (D,))
    np.testing.assert_allclose(d.vector.numpy(), comp[3, 0] * std[3], rtol=1e-6)
    assert float(d.vector.norm()) == pytest.approx(2.5, rel=1e-5)  # unit vector x std 2.5
    raw = load_ganspace(path, 3, use_stdev=False)
    assert float(raw.vector.norm()) == pytest.approx(1.0, rel=1e-5)
    assert torch.equal(load_direction(path, 3).vector, load_ganspace(path, 3).vector)


def test_ganspace_errors(tmp_path):
    path, _, _ = _ganspace(tmp_path)
    with pytest.raises(InputError, match=r"ffhq-pca\.npz: component 5 out of range \(file has 5\)"):
        load_ganspace(path, 5)
    with pytest.raises(InputError, match="layer range"):
        load_ganspace(path, 0, layers=(4, 4))
    bad = tmp_path / "nope.npz"
    np.savez(bad, comp=np.zeros((2, D)))
    with pytest.raises(InputError, match=r"nope\.npz: no 'lat_comp'"):
        load_ganspace(bad, 0)
    np.savez(bad, lat_comp=np.zeros((2, D)))
    with pytest.raises(InputError, match="lat_stdev missing"):
        load_ganspace(bad, 0)
    assert load_ganspace(bad, 1, use_stdev=False).vector.shape == (D,)


def test_apply_w_direction_strength_and_layers():
    w = _w_plus()
    vec = torch.from_numpy(_rng(3).normal(size=D).astype(np.float32))
    d = Direction(vec, "w", "v")
    out = apply_direction(w, d, 2.0)
    torch.testing.assert_close(out - w, (2.0 * vec).expand(2, L, D), rtol=0, atol=1e-5)
    assert torch.equal(apply_direction(w, d, 0.0), w)
    out = apply_direction(w, d, -1.5, layers=[2, 5])
    changed = (out != w).any(dim=(0, 2))
    assert changed.nonzero().flatten().tolist() == [2, 5]
    torch.testing.assert_close(out[:, 5] - w[:, 5], (-1.5 * vec).expand(2, D), rtol=0, atol=1e-5)
    # default rows from the direction, explicit rows override them
    d4 = Direction(vec, "w", "v", layers=(0, 4))
    assert (apply_direction(w, d4, 1.0) != w).any(dim=(0, 2)).nonzero().flatten().tolist() == [
        0, 1, 2, 3,
    ]  # fmt: skip
    assert (apply_direction(w, d4, 1.0, layers=range(10, 12)) != w).any(dim=(0, 2)).sum() == 2
    # per-sample strength, unbatched input, input untouched
    w0 = w.clone()
    out = apply_direction(w, d, torch.tensor([1.0, -2.0]))
    torch.testing.assert_close(out[1] - w[1], (-2.0 * vec).expand(L, D), rtol=0, atol=1e-5)
    assert torch.equal(w, w0)
    assert apply_direction(w[0], d, 1.0).shape == (L, D)


def test_apply_w_plus_direction():
    w = _w_plus()
    vec = torch.from_numpy(_rng(4).normal(size=(L, D)).astype(np.float32))
    out = apply_direction(w, Direction(vec, "w+", "v"), 0.5, layers=range(0, 8))
    torch.testing.assert_close(
        out[:, :8] - w[:, :8], (0.5 * vec[:8]).expand(2, 8, D), rtol=0, atol=1e-5
    )
    assert torch.equal(out[:, 8:], w[:, 8:])


def test_apply_direction_errors():
    w = _w_plus()
    with pytest.raises(InputError, match="does not fit W\\+"):
        apply_direction(w, Direction(torch.zeros(256), "w", "small"), 1.0)
    with pytest.raises(InputError, match="does not fit"):
        apply_direction(w, Direction(torch.zeros(14, D), "w+", "w14"), 1.0)
    with pytest.raises(InputError, match=r"W\+ rows \[18\] out of range"):
        apply_direction(w, Direction(torch.zeros(D), "w", "v"), 1.0, layers=[18])
    with pytest.raises(InputError, match="out of range"):
        apply_direction(w, Direction(torch.zeros(D), "w", "v", layers=(10, 20)), 1.0)
    with pytest.raises(InputError, match="strength"):
        apply_direction(w, Direction(torch.zeros(D), "w", "v"), torch.ones(3))


def _styles() -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return [torch.randn(2, c, generator=g) for c in (512, 512, 256, 32)]


def test_style_edit_changes_one_channel():
    styles = _styles()
    before = [s.clone() for s in styles]
    out = apply_style_edits(styles, [StyleEdit(2, 77, 3.0)])
    for k, (a, b) in enumerate(zip(out, before, strict=True)):
        diff = (a - b).abs() > 0
        if k == 2:
            assert diff.sum() == 2 and diff[:, 77].all()  # both samples, channel 77 only
            torch.testing.assert_close(a[:, 77] - b[:, 77], torch.full((2,), 3.0))
        else:
            assert not diff.any() and a is styles[k]
    assert all(torch.equal(s, b) for s, b in zip(styles, before, strict=True))  # no in-place


def test_style_edit_std_units_and_accumulation():
    styles = _styles()
    stds = [torch.linspace(0.1, 1.0, s.shape[1]) for s in styles]
    out = apply_style_edits(styles, [StyleEdit(3, 5, 2.0), StyleEdit(3, 5, -0.5)], stds=stds)
    expect = styles[3][:, 5] + 1.5 * stds[3][5]
    torch.testing.assert_close(out[3][:, 5], expect)
    assert parse_style_edit("6_501:-3") == StyleEdit(6, 501, -3.0)


def test_style_edit_errors():
    styles = _styles()
    with pytest.raises(InputError, match="layer 4 out of range"):
        apply_style_edits(styles, [StyleEdit(4, 0, 1.0)])
    with pytest.raises(InputError, match="channel 32 out of range for layer 3"):
        apply_style_edits(styles, [StyleEdit(3, 32, 1.0)])
    with pytest.raises(InputError, match="stds has 1 layers"):
        apply_style_edits(styles, [], stds=[torch.ones(512)])
    with pytest.raises(InputError, match="LAYER_CHANNEL:STRENGTH"):
        parse_style_edit("6-501")
