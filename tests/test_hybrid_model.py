"""Hybrid model: config files, latent routing (Eqs. 1-4), initialisation, checkpoints.

Everything runs on the tiny config (seeded random 64^2 generator, TinyPyramid); the
paper config is only read, never built.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from reenactbench.baselines.hybrid.checkpoint import (
    FORMAT,
    load_hybrid,
    read_checkpoint,
    save_checkpoint,
)
from reenactbench.baselines.hybrid.config import (
    HybridConfig,
    config_from_dict,
    config_path,
    config_to_dict,
    load_config,
)
from reenactbench.baselines.hybrid.model import (
    HybridModel,
    Latents,
    build_model,
    id_head_levels,
    make_generator,
    sf_head_levels,
    sf_indices_for,
    sf_w_rows,
)

from reenactbench.errors import InputError, WeightsMissing
from reenactbench.nn.fpn import FeaturePyramid
from reenactbench.nn.stylespace import style_layers

PAPER_CONV = (0, 2, 3, 5, 6, 8, 9, 11, 12, 14)  # conv1, convs.0-8 at 1024^2


def _with(cfg: HybridConfig, section: str, **changes: object) -> HybridConfig:
    return replace(cfg, **{section: replace(getattr(cfg, section), **changes)})


@pytest.fixture(scope="module")
def tiny() -> HybridConfig:
    return load_config("tiny")


@pytest.fixture(scope="module")
def model(tiny: HybridConfig) -> HybridModel:
    return build_model(tiny).eval()


def _frames(seed: int, n: int = 2) -> torch.Tensor:
    """``(n, 3, 64, 64)`` float32 in [-1, 1], smooth random images."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, 8, 8, generator=g) * 2 - 1
    return torch.nn.functional.interpolate(x, size=64, mode="bilinear", align_corners=False)


# --- config ---------------------------------------------------------------------------------


def test_shipped_configs_are_package_data_with_documented_defaults() -> None:
    assert config_path("tiny").is_file() and config_path("paper").is_file()
    paper = load_config("paper")
    assert (paper.generator.size, paper.generator.style_dim, paper.generator.weights) == (
        1024,
        512,
        "stylegan2-ffhq",
    )
    assert (paper.encoder.backbone, paper.encoder.input_size, paper.encoder.init_irse50) == (
        "irse50",
        256,
        True,
    )
    assert (paper.latent.sf_layers, paper.latent.n_sf, paper.latent.hybrid) == ("conv", 10, True)
    assert (paper.loss.l2, paper.loss.lpips, paper.loss.id, paper.loss.idreg) == (
        1.0,
        0.8,
        0.1,
        True,
    )
    assert (paper.train.iters_stage1, paper.train.iters_stage2) == (200_000, 20_000)
    assert (paper.cma.steps, paper.cma.lr, paper.pti.steps) == (50, 3e-4, 350)
    assert paper == HybridConfig()  # the TOML restates the dataclass defaults
    tiny = load_config("tiny")
    assert (tiny.generator.size, tiny.generator.style_dim, tiny.generator.weights) == (
        64,
        64,
        "seeded",
    )
    assert (tiny.encoder.backbone, tiny.latent.n_sf) == ("tiny", 7)


def test_config_dict_round_trip_and_strictness(tmp_path: Path, tiny: HybridConfig) -> None:
    assert config_from_dict(config_to_dict(tiny)) == tiny
    bad = tmp_path / "bad.toml"
    bad.write_text("[latent]\nn_sff = 3\n")
    with pytest.raises(InputError, match=r"bad\.toml.*unknown key.*n_sff"):
        load_config(bad)
    bad.write_text("[latnet]\n")
    with pytest.raises(InputError, match="unknown section"):
        load_config(bad)
    bad.write_text("[generator]\nsize = '64'\n")
    with pytest.raises(InputError, match="size"):
        load_config(bad)
    bad.write_text("[encoder]\nbackbone = 'tiny'\n")  # init_irse50 defaults to true
    with pytest.raises(InputError, match="init_irse50"):
        load_config(bad)
    bad.write_text("[generator]\nsize = 64\nchannel_multiplier = 1\n[latent]\nn_sf = 10\n")
    with pytest.raises(InputError, match="10 style layers"):  # only 9 conv layers at 64^2
        load_config(bad)
    with pytest.raises(InputError, match="huge: cannot read the hybrid config.*paper, tiny"):
        load_config("huge")
    with pytest.raises(InputError, match="missing.toml: cannot read"):
        load_config(tmp_path / "missing.toml")


def test_sf_layer_choice_paper_size() -> None:
    paper = HybridConfig()
    assert sf_indices_for(paper) == PAPER_CONV
    assert sf_w_rows(paper) == tuple(range(10))
    assert sf_head_levels(paper) == (0, 0, 0, 1, 1, 1, 1, 2, 2, 2)
    assert id_head_levels(paper) == (0,) * 3 + (1,) * 4 + (2,) * 11
    fwd = _with(paper, "latent", sf_layers="forward")
    assert sf_indices_for(fwd) == tuple(range(10))
    assert sf_w_rows(fwd) == (0, 1, 1, 2, 3, 3, 4, 5, 5, 6)
    assert sf_head_levels(fwd) == (0, 0, 0, 0, 1, 1, 1, 1, 1, 1)
    listed = _with(paper, "latent", sf_head_levels=("fine",) * 10)
    assert sf_head_levels(listed) == (2,) * 10
    no_hybrid = _with(paper, "latent", hybrid=False)
    assert sf_indices_for(no_hybrid) == tuple(range(10))


# --- model ----------------------------------------------------------------------------------
# Each 64^2 generator forward costs ~0.2 s of CPU: images are rendered in the ``ref``
# fixture once, and the routing tests compare the style lists G receives.


@pytest.fixture(scope="module")
def ref(model: HybridModel) -> tuple[Latents, torch.Tensor]:
    """Latents of ``_frames(0, 1)`` and ``G(A(W_ID) + S_F)`` of them, ``(1, 3, 64, 64)``."""
    with torch.no_grad():
        lat = model.encode(_frames(0, 1))
        return lat, model.reenact(lat, lat)


def test_shapes_and_preprocess(model: HybridModel, ref: tuple[Latents, torch.Tensor]) -> None:
    assert model.sf_indices == (0, 2, 3, 5, 6, 8, 9)
    assert model.sf_dims == (32,) * 7  # tiny: max_channels = 32
    frames = np.zeros((2, 100, 80, 3), np.uint8)
    frames[1] = 255
    x = model.preprocess(frames)
    assert x.shape == (2, 3, 64, 64) and x.dtype == torch.float32
    torch.testing.assert_close(x[0], torch.full_like(x[0], -1.0), atol=1e-6, rtol=0)
    torch.testing.assert_close(x[1], torch.full_like(x[1], 1.0), atol=1e-6, rtol=0)
    same = np.arange(64 * 64 * 3, dtype=np.int64).reshape(1, 64, 64, 3) % 256
    y = model.preprocess(same.astype(np.uint8))  # no resize at input_size: exact scaling
    assert torch.equal(y[0, :, 0, 0], torch.tensor([0.0, 1.0, 2.0]) / 127.5 - 1)
    with pytest.raises(InputError, match="uint8"):
        model.preprocess(frames.astype(np.float32))
    lat, img = ref
    assert lat.w_id.shape == (1, 10, 64)
    assert [tuple(s.shape) for s in lat.s_f] == [(1, 32)] * 7
    assert img.shape == (1, 3, 64, 64) and torch.isfinite(img).all()
    with pytest.raises(ValueError, match="encoder input"):
        model.encode(torch.zeros(1, 3, 32, 32))


def test_head_dims_follow_stylespace_layers(tiny: HybridConfig, model: HybridModel) -> None:
    G, avg = model.generator, model.latent_avg
    m = HybridModel(_with(tiny, "latent", n_sf=9), G, avg)  # every conv layer
    assert m.sf_indices == (0, 2, 3, 5, 6, 8, 9, 11, 12)
    assert m.sf_dims == (32,) * 9  # capped by max_channels; uncapped: see below
    uncapped = style_layers(64, 1)
    assert tuple(uncapped[i].dim for i in m.sf_indices) == (512,) * 8 + (256,)  # convs.7: 256
    assert [h.linear.weight.shape[0] for h in m.f_heads] == list(m.sf_dims)
    assert [h.spatial for h in m.f_heads] == [4, 4, 4, 8, 8, 8, 8, 16, 16]  # W+ rows 0-8
    assert [h.spatial for h in model.id_heads] == [4] * 3 + [8] * 4 + [16] * 3
    fwd = HybridModel(_with(tiny, "latent", sf_layers="forward"), G, avg, init=False)
    assert fwd.sf_indices == tuple(range(7))
    with pytest.raises(InputError, match="does not match"):
        HybridModel(_with(tiny, "generator", style_dim=32), G, avg, init=False)


def test_driving_changes_only_sf_styles(model: HybridModel) -> None:
    with torch.no_grad():
        src = model.encode(_frames(1, 1))
        d1, d2 = model.encode(_frames(2, 1)), model.encode(_frames(3, 1))
        s1 = model.styles_for(src.w_id, d1.s_f)
        s2 = model.styles_for(src.w_id, d2.s_f)
        base = model.styles_for(src.w_id, None)
    assert len(s1) == 14
    for k in range(14):
        if k in model.sf_indices:
            assert not torch.equal(s1[k], s2[k]), k
            j = model.sf_indices.index(k)
            torch.testing.assert_close(s1[k] - base[k], d1.s_f[j], rtol=0, atol=1e-6)
        else:
            assert torch.equal(s1[k], s2[k]) and torch.equal(s1[k], base[k]), k


def test_source_enters_only_through_w_id(
    model: HybridModel, ref: tuple[Latents, torch.Tensor]
) -> None:
    lat, img = ref
    nan_sf = [torch.full_like(s, float("nan")) for s in lat.s_f]
    with torch.no_grad():  # a NaN in a field reenact must not read stays out of the image
        out = model.reenact(Latents(lat.w_id, nan_sf), Latents(lat.w_id * np.nan, lat.s_f))
    assert torch.equal(out, img)
    with torch.no_grad():
        s1, s2 = model.encode(_frames(4, 1)), model.encode(_frames(5, 1))
        drv = model.encode(_frames(6, 2))
        # a new source changes every style vector (identity) but adds the same S_F^D
        a, b = model.styles_for(s1.w_id, drv.s_f), model.styles_for(s2.w_id, drv.s_f)
        a0, b0 = model.styles_for(s1.w_id, None), model.styles_for(s2.w_id, None)
    assert all(x.shape[0] == 2 for x in a)  # one source broadcast over two driving frames
    assert all(not torch.equal(x, y) for x, y in zip(a, b, strict=True))
    for j, k in enumerate(model.sf_indices):
        torch.testing.assert_close(a[k] - a0[k].expand(2, -1), drv.s_f[j], atol=1e-6, rtol=0)
        torch.testing.assert_close(b[k] - b0[k].expand(2, -1), drv.s_f[j], atol=1e-6, rtol=0)


def test_no_hybrid_puts_offsets_in_w_plus_rows(tiny: HybridConfig, model: HybridModel) -> None:
    cfg = _with(tiny, "latent", hybrid=False)
    m = HybridModel(cfg, model.generator, model.latent_avg)
    assert m.sf_indices == tuple(range(7)) and m.sf_dims == (64,) * 7
    with torch.no_grad():
        lat = m.encode(_frames(7, 2))
        assert [tuple(s.shape) for s in lat.s_f] == [(2, 64)] * 7
        got = m.styles_for(lat.w_id, lat.s_f)
        w = lat.w_id.clone()
        w[:, :7] += torch.stack(lat.s_f, 1)
        want = m.generator.styles(w)
        base = m.generator.styles(lat.w_id)
    for k, ly in enumerate(m.generator.style_layers):
        assert torch.equal(got[k], want[k]), k
        assert torch.equal(got[k], base[k]) == (ly.w_index >= 7), k


def test_edit_is_a_w_plus_offset_before_a(
    model: HybridModel, ref: tuple[Latents, torch.Tensor], monkeypatch: pytest.MonkeyPatch
) -> None:
    lat, _ = ref
    seen: list[list[torch.Tensor]] = []

    def synthesis(styles, noise="const", generator=None):  # noqa: ANN001, ANN202
        seen.append(list(styles))
        return torch.zeros(1, 3, 64, 64)

    monkeypatch.setattr(model.generator, "synthesis_from_styles", synthesis)
    edit = torch.zeros(10, 64)
    edit[3:6] = 2.0  # W+ rows 3-5
    with torch.no_grad():
        model.generate(lat.w_id, lat.s_f, edit=edit)
        want = model.styles_for(lat.w_id + edit, lat.s_f)
        plain = model.styles_for(lat.w_id, lat.s_f)
    assert all(torch.equal(x, y) for x, y in zip(seen[0], want, strict=True))
    rows = [ly.w_index for ly in model.generator.style_layers]
    assert [not torch.equal(x, y) for x, y in zip(want, plain, strict=True)] == [
        3 <= r <= 5 for r in rows
    ]


def test_latent_avg_start(model: HybridModel, tiny: HybridConfig) -> None:
    G, avg = make_generator(tiny.generator)
    assert torch.equal(model.latent_avg, avg)
    assert torch.equal(G.state_dict()["conv1.conv.weight"], model.generator.conv1.conv.weight)
    m = HybridModel(tiny, G, avg, init=False)
    with torch.no_grad():
        for p in m.id_heads.parameters():
            p.zero_()
        lat = m.encode(_frames(9, 1))
    assert torch.equal(lat.w_id, avg.expand(1, 10, 64))


def test_seeded_init_is_deterministic_and_leaves_global_rng(
    tiny: HybridConfig, model: HybridModel, ref: tuple[Latents, torch.Tensor]
) -> None:
    state = torch.get_rng_state()
    m = HybridModel(tiny, model.generator, model.latent_avg)
    assert torch.equal(torch.get_rng_state(), state)
    mine = m.encoder_state_dict()
    assert all(torch.equal(v, mine[k]) for k, v in model.encoder_state_dict().items())
    other = HybridModel(_with(tiny, "train", seed=1), model.generator, model.latent_avg)
    assert not torch.equal(other.f_heads[0].linear.weight, m.f_heads[0].linear.weight)
    # pinned values of the seeded init (tiny config, seeds 0): encoder, latent_avg, an image
    lat, img = ref
    pins = {
        "id_heads.0": (m.id_heads[0].linear.weight[0, :3], [0.829832, 1.570423, -0.592386]),
        "pyramid.0": (m.pyramid.convs[0].weight.flatten()[:3], [-0.001441, 0.103239, -0.158395]),
        "f_heads.0": (m.f_heads[0].convs[0].weight.flatten()[:3], [0.016563, -0.019694, -0.051363]),
        "latent_avg": (m.latent_avg[:3], [0.093426, 0.346071, 0.327943]),
        "w_id": (lat.w_id[0, 0, :3], [0.094902, 0.346435, 0.355732]),
        "s_f": (lat.s_f[0][0, :3], [0.008333, 0.001451, 0.013129]),
        "image": (img[0, :, 32, 32], [-0.509309, 2.138353, -1.224196]),
    }  # fmt: skip
    for name, (got, want) in pins.items():
        torch.testing.assert_close(got.detach(), torch.tensor(want), atol=2e-5, rtol=0, msg=name)
    assert set(mine) == {
        k for k in m.state_dict() if k.startswith(("pyramid.", "id_heads.", "f_heads."))
    }
    n_enc = sum(p.numel() for p in m.encoder_parameters())
    n_heads = sum(p.numel() for p in m.head_parameters())
    assert n_enc - n_heads == sum(p.numel() for p in m.pyramid.parameters())


def test_build_model_needs_irse50(tiny: HybridConfig) -> None:
    cfg = _with(tiny, "encoder", backbone="irse50", init_irse50=True)
    with pytest.raises(WeightsMissing, match="ir-se50"):
        build_model(cfg)
    with pytest.raises(WeightsMissing, match="stylegan2-ffhq"):
        build_model(HybridConfig())


def test_build_model_copies_irse50_trunk(tmp_path: Path, tiny: HybridConfig) -> None:
    from tests.test_irse50 import seeded_state_dict

    state = seeded_state_dict(3)
    path = tmp_path / "model_ir_se50.pth"
    torch.save(state, path)
    cfg = _with(tiny, "encoder", backbone="irse50", init_irse50=True)
    cfg = _with(cfg, "latent", n_sf=1)
    m = build_model(cfg, weights={"ir-se50": path})
    own = m.pyramid.state_dict()
    for key in (
        "input_layer.0.weight",
        "body.3.shortcut_layer.0.weight",
        "body.23.res_layer.4.running_var",
    ):
        assert torch.equal(own[key], state[key]), key
    assert isinstance(m.pyramid, FeaturePyramid)
    broken = tmp_path / "broken.pth"
    torch.save({k: v for k, v in state.items() if k != "body.0.res_layer.1.weight"}, broken)
    with pytest.raises(InputError, match="broken.pth.*missing keys body.0.res_layer.1.weight"):
        build_model(cfg, weights={"ir-se50": broken})


# --- checkpoints ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ckpt(model: HybridModel, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ckpt") / "hybrid-tiny.pt"
    return save_checkpoint(path, model, step=12, stage=2, train={"lr": torch.tensor(1e-4)})


def test_checkpoint_round_trip_is_bit_identical(
    ckpt: Path, model: HybridModel, ref: tuple[Latents, torch.Tensor]
) -> None:
    raw = read_checkpoint(ckpt)
    assert raw["format"] == FORMAT and (raw["step"], raw["stage"]) == (12, 2)
    assert "generator" in raw and torch.equal(raw["train"]["lr"], torch.tensor(1e-4))
    loaded = load_hybrid(ckpt)
    assert loaded.cfg == model.cfg and not loaded.training
    assert not any(p.requires_grad for p in loaded.parameters())
    lat, img = ref
    with torch.no_grad():
        got = loaded.encode(_frames(0, 1))
        assert torch.equal(got.w_id, lat.w_id)
        assert all(torch.equal(s, t) for s, t in zip(got.s_f, lat.s_f, strict=True))
        assert torch.equal(loaded.reenact(got, got), img)


def test_checkpoint_strict_errors(
    ckpt: Path, tmp_path: Path, tiny: HybridConfig, model: HybridModel
) -> None:
    raw = torch.load(ckpt, weights_only=True, mmap=True)
    raw["encoder"] = dict(raw["encoder"])
    del raw["encoder"]["f_heads.0.linear.bias"]
    bad = tmp_path / "bad.pt"
    torch.save(raw, bad)
    with pytest.raises(InputError, match="bad.pt: encoder .*missing keys f_heads.0.linear.bias"):
        load_hybrid(bad)
    raw = torch.load(ckpt, weights_only=True, mmap=True)
    del raw["generator"]["conv1.conv.weight"]
    torch.save(raw, bad)
    with pytest.raises(InputError, match=r"bad.pt \(generator\).*missing.*conv1.conv.weight"):
        load_hybrid(bad)
    # the same strict checks, without writing files
    state = model.encoder_state_dict()
    m = HybridModel(tiny, model.generator, model.latent_avg, init=False)
    cases = [
        ({**state, "f_heads.9.linear.bias": torch.zeros(3)}, "unexpected keys f_heads.9"),
        ({**state, "pyramid.latlayer1.bias": torch.zeros(5)}, r"shape mismatch .*\(5,\)"),
    ]
    for bad_state, message in cases:
        with pytest.raises(InputError, match="ck.pt: encoder does not match.*" + message):
            m.load_encoder_state_dict(bad_state, "ck.pt")
    m6 = HybridModel(_with(tiny, "latent", n_sf=6), model.generator, model.latent_avg, init=False)
    with pytest.raises(InputError, match="unexpected keys f_heads.6"):
        m6.load_encoder_state_dict(state, "ck.pt")
    conf = config_to_dict(tiny)
    conf["latent"]["bogus"] = 1
    with pytest.raises(InputError, match=r"ck.pt \(config\): \[latent\]: unknown key.*bogus"):
        config_from_dict(conf, "ck.pt (config)")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a torch file")
    with pytest.raises(InputError, match="junk.pt: cannot be read"):
        load_hybrid(junk)
    other = tmp_path / "other.pt"
    torch.save({"g_ema": {}}, other)
    with pytest.raises(InputError, match="other.pt: not a reenactbench hybrid checkpoint"):
        load_hybrid(other)
    with pytest.raises(InputError, match="no such hybrid checkpoint"):
        load_hybrid(tmp_path / "absent.pt")


def test_checkpoint_without_generator_uses_stylegan2_file(
    tmp_path: Path, tiny: HybridConfig, model: HybridModel
) -> None:
    cfg = _with(tiny, "generator", weights="stylegan2-ffhq")
    m = HybridModel(cfg, model.generator, model.latent_avg)
    path = save_checkpoint(tmp_path / "h.pt", m)
    assert "generator" not in read_checkpoint(path)
    with pytest.raises(WeightsMissing, match="stylegan2-ffhq"):
        load_hybrid(path)
    g_file = tmp_path / "stylegan2-64.pt"
    torch.save({"g_ema": model.generator.state_dict(), "latent_avg": model.latent_avg}, g_file)
    loaded = load_hybrid(path, generator_path=g_file)
    want = model.state_dict()
    assert all(torch.equal(v, want[k]) for k, v in loaded.state_dict().items())
