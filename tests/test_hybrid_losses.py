"""Hybrid method: losses (Eqs. 7-13), facial masks, e4e latent discriminator.

Every expected value is computed by hand (closed forms) or by an independent
re-implementation (scipy / numpy for the gradient variance loss).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from reenactbench.baselines.hybrid.discriminator import (
    LatentDiscriminator,
    d_logistic_loss,
    g_nonsaturating_loss,
    r1_penalty,
    r1_penalty_from_logits,
    sample_real_w,
)
from reenactbench.baselines.hybrid.losses import (
    GRAY_WEIGHTS,
    LossWeights,
    gradient_variance_loss,
    identity_loss,
    rec_loss,
    regularization,
    w_id_consistency,
)
from reenactbench.baselines.hybrid.masks import (
    REGIONS,
    face_region_mask,
    feature_rec_loss,
    masked,
)
from scipy.ndimage import correlate

from reenactbench.nn.stylegan2 import Generator


def seeded(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def mean_abs_lpips(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Cheap LPIPS stand-in: per-image mean |x - y|, shape (B, 1, 1, 1) like lpips.LPIPS."""
    return (x - y).abs().mean(dim=(1, 2, 3), keepdim=True)


# --- gradient variance (Abrahamyan et al. 2022) -------------------------------------------


def gv_reference(x: np.ndarray, y: np.ndarray, patch: int) -> float:
    """Independent numpy/scipy version of the reference code (zero padding, ddof=1)."""
    sx = np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], np.float64)
    sy = np.array([[1, 2, 1], [0, 0, 0], [-1, -2, -1]], np.float64)
    total = 0.0
    for kernel in (sx, sy):
        vs = []
        for img in (x, y):
            per_image = []
            for im in img:
                gray = np.tensordot(np.array(GRAY_WEIGHTS), im.astype(np.float64), axes=1)
                g = correlate(gray, kernel, mode="constant", cval=0.0)
                h, w = (g.shape[0] // patch) * patch, (g.shape[1] // patch) * patch
                tiles = g[:h, :w].reshape(h // patch, patch, w // patch, patch)
                per_image.append(tiles.transpose(0, 2, 1, 3).reshape(-1, patch * patch))
            vs.append(np.stack(per_image).var(axis=-1, ddof=1))
        total += float(((vs[0] - vs[1]) ** 2).mean())
    return total


def test_gv_matches_independent_reference() -> None:
    x, y = seeded(2, 3, 20, 17, seed=1), seeded(2, 3, 20, 17, seed=2)  # remainders dropped
    got = gradient_variance_loss(x.double(), y.double(), patch=8)
    want = gv_reference(x.numpy(), y.numpy(), 8)
    assert got.item() == pytest.approx(want, rel=1e-10)
    assert gradient_variance_loss(x, y, patch=4).item() == pytest.approx(
        gv_reference(x.numpy(), y.numpy(), 4), rel=1e-5
    )


def test_gv_known_values() -> None:
    x = seeded(1, 3, 16, 16, seed=3)
    assert gradient_variance_loss(x, x).item() == 0.0
    flat = torch.zeros(1, 3, 16, 16)
    textured = torch.zeros(1, 3, 16, 16)
    textured[..., ::2, :] = 1.0  # horizontal stripes: gy varies inside every tile
    assert gradient_variance_loss(flat, textured).item() > 1.0
    # symmetric, and the pinned value for this seeded pair
    y = seeded(1, 3, 16, 16, seed=4)
    assert gradient_variance_loss(x, y).item() == pytest.approx(
        gradient_variance_loss(y, x).item(), rel=1e-6
    )


def test_gv_brightness_shift() -> None:
    x, y = seeded(2, 3, 16, 16, seed=5), seeded(2, 3, 16, 16, seed=6)
    base = gradient_variance_loss(x, y, pad="replicate")
    shifted = gradient_variance_loss(x + 0.3, y - 0.2, pad="replicate")
    assert shifted.item() == pytest.approx(base.item(), rel=1e-5)
    # zero padding (the reference code's) sees the shift only through the border
    z0 = gradient_variance_loss(x, y)
    z1 = gradient_variance_loss(x + 0.3, y)
    assert z1.item() != pytest.approx(z0.item(), rel=1e-3)


def test_gv_runs_in_fp32_for_half_inputs() -> None:
    x, y = seeded(1, 3, 16, 16, seed=25), seeded(1, 3, 16, 16, seed=26)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = gradient_variance_loss(x.bfloat16(), y)
    assert got.dtype == torch.float32
    assert got.item() == pytest.approx(gradient_variance_loss(x.bfloat16().float(), y).item())


def test_gv_gradient_and_errors() -> None:
    x = seeded(1, 3, 16, 16, seed=7).requires_grad_(True)
    y = seeded(1, 3, 16, 16, seed=8)
    gradient_variance_loss(x, y).backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="patch"):
        gradient_variance_loss(x, y, patch=32)
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        gradient_variance_loss(x[:, :1], y[:, :1])


# --- reconstruction loss (Eq. 7) -----------------------------------------------------------


def test_rec_loss_hand_computed() -> None:
    x = torch.zeros(2, 3, 8, 8, requires_grad=True)
    y = torch.full((2, 3, 8, 8), 0.5)
    w = LossWeights(l2=2.0, lpips=3.0, gv=0.0)
    total, parts = rec_loss(x, y, mean_abs_lpips, w)
    assert parts["l2"].item() == pytest.approx(0.25)
    assert parts["lpips"].item() == pytest.approx(0.5)
    assert parts["gv"].item() == 0.0
    assert total.item() == pytest.approx(2 * 0.25 + 3 * 0.5)
    total.backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert not y.requires_grad


def test_rec_loss_default_weights_and_gv_part() -> None:
    x, y = seeded(2, 3, 16, 16, seed=9), seeded(2, 3, 16, 16, seed=10)
    w = LossWeights()
    total, parts = rec_loss(x, y, mean_abs_lpips, w)
    assert parts["gv"].item() == pytest.approx(gradient_variance_loss(x, y).item())
    assert parts["l2"].item() == pytest.approx(((x - y) ** 2).mean().item())
    want = 1.0 * parts["l2"] + 0.8 * parts["lpips"] + 0.5 * parts["gv"]
    assert total.item() == pytest.approx(want.item())
    same, same_parts = rec_loss(x, x, mean_abs_lpips, w)
    assert same.item() == 0.0 and all(v.item() == 0.0 for v in same_parts.values())


def test_rec_loss_skips_zero_weight_and_checks_lpips_shape() -> None:
    x, y = seeded(2, 3, 8, 8, seed=11), seeded(2, 3, 8, 8, seed=12)

    def never(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        raise AssertionError("lpips_fn must not run when its weight is 0")

    total, parts = rec_loss(x, y, never, LossWeights(lpips=0.0, gv=0.0))
    assert total.item() == pytest.approx(parts["l2"].item())
    with pytest.raises(ValueError, match="one distance per image"):
        rec_loss(x, y, lambda a, b: torch.zeros(3), LossWeights())


# --- identity loss (Eqs. 8-9) --------------------------------------------------------------


def test_identity_loss_closed_forms() -> None:
    e0 = torch.tensor([[1.0, 0.0, 0.0]])
    e1 = torch.tensor([[0.0, 2.0, 0.0]])  # orthogonal, not unit: normalised inside
    assert identity_loss(e0, 3 * e0, 5 * e0).item() == pytest.approx(0.0, abs=1e-7)
    assert identity_loss(e0, e1, e1).item() == pytest.approx(2.0)  # 1 per term
    assert identity_loss(e0, e1, None, idreg=False).item() == pytest.approx(1.0)
    assert identity_loss(e0, e0, -e0).item() == pytest.approx(2.0)  # opposite: 2
    # batch mean: sample 0 identical, sample 1 orthogonal; 60 degrees -> 1 - 0.5
    src = torch.cat([e0, e0])
    other = torch.cat([e0, e1])
    at60 = torch.tensor([[0.5, math.sqrt(3) / 2, 0.0]] * 2)
    assert identity_loss(src, other, at60).item() == pytest.approx(0.5 + 0.5)
    with pytest.raises(ValueError, match="emb_cross"):
        identity_loss(e0, e0, None)


def test_identity_loss_gradient_reaches_generated_embeddings() -> None:
    src = seeded(2, 8, seed=13)
    gen = seeded(2, 8, seed=14).requires_grad_(True)
    cross = seeded(2, 8, seed=15).requires_grad_(True)
    identity_loss(src, gen, cross).backward()
    assert gen.grad is not None and cross.grad is not None
    assert gen.grad.abs().sum() > 0 and cross.grad.abs().sum() > 0
    cross.grad = None
    identity_loss(src, gen, cross, idreg=False).backward()
    assert cross.grad is None


# --- W_ID consistency (Eq. 10) and regularisation (Eqs. 11-12) -----------------------------


def test_w_id_consistency_known() -> None:
    w_src = torch.zeros(2, 3, 4)
    w_cyc = torch.zeros(2, 3, 4)
    w_cyc[0] = 1.0  # norm sqrt(12)
    w_cyc[1, 0, 0], w_cyc[1, 2, 3] = 3.0, 4.0  # norm 5
    assert w_id_consistency(w_src, w_cyc).item() == pytest.approx((math.sqrt(12) + 5) / 2)
    a = seeded(2, 3, 4, seed=16).requires_grad_(True)
    loss = w_id_consistency(a, a.detach().clone())
    loss.backward()
    assert loss.item() == 0.0 and a.grad is not None and torch.isfinite(a.grad).all()
    with pytest.raises(ValueError, match="equal shape"):
        w_id_consistency(w_src, w_cyc[:, :2])


def test_regularization_known_deltas() -> None:
    n, d = 5, 4
    w = torch.zeros(2, n, d)
    w[:, 0] = 7.0  # an offset shared by all rows cancels in the deltas
    for i in range(n):
        w[0, i, 0] += i  # ||delta_i|| = i      -> sum 0+1+2+3+4 = 10
        w[1, i, 1] += 2 * i  # ||delta_i|| = 2i -> sum 20
    w[:, 1:] += 7.0
    s_f = [torch.tensor([[3.0, 4.0], [0.0, 0.0]]), torch.tensor([[0.0, 0.0, 1.0], [2.0, 0.0, 0.0]])]
    # S_F norms: sample 0: 5 + 1 = 6, sample 1: 0 + 2 = 2 -> mean 4
    assert regularization(w, s_f, 0.5).item() == pytest.approx(15.0 + 0.5 * 4.0)
    assert regularization(w, [], 0.5).item() == pytest.approx(15.0)
    stacked = seeded(2, 3, d, seed=17)
    assert regularization(w, stacked, 2.0).item() == pytest.approx(
        regularization(w, list(stacked.unbind(1)), 2.0).item()
    )


def test_regularization_gradients() -> None:
    w = torch.ones(2, 4, 3, requires_grad=True)  # all deltas 0: gradient must be finite
    s = seeded(2, 3, seed=18).requires_grad_(True)
    regularization(w, [s], 1.0).backward()
    assert w.grad is not None and torch.isfinite(w.grad).all()
    assert s.grad is not None and torch.allclose(s.grad, s / s.norm(dim=1, keepdim=True) / 2)
    with pytest.raises(ValueError, match="S_F"):
        regularization(w, [torch.zeros(3, 2)], 1.0)


# --- masks and the feature reconstruction loss (Eq. 13) ------------------------------------


def landmarks_with(**regions: list[tuple[float, float]]) -> torch.Tensor:
    """(1, 68, 2): every point at (0, 0) except the given regions' polygons."""
    pts = torch.zeros(1, 68, 2)
    for name, poly in regions.items():
        idx = REGIONS[name]
        assert len(poly) == len(idx)
        pts[0, list(idx)] = torch.tensor(poly, dtype=torch.float32)
    return pts


def rect(x0: float, y0: float, x1: float, y1: float, k: int) -> list[tuple[float, float]]:
    """k points walking the rectangle's boundary (corners first), clockwise in image axes."""
    corners = [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]
    extra = [((x0 + x1) / 2, y0), ((x0 + x1) / 2, y1), (x1, (y0 + y1) / 2), (x0, (y0 + y1) / 2)]
    order = [corners[0], extra[0], corners[1], extra[2], corners[2], extra[1], corners[3], extra[3]]
    pts = order[: min(k, 8)]
    while len(pts) < k:  # repeat the last corner: degenerate edges are harmless
        pts.append(pts[-1])
    return pts


def test_mouth_rectangle_exact_area_and_dilation() -> None:
    lm = landmarks_with(mouth=rect(10, 10, 20, 16, 12))
    m0 = face_region_mask(lm, 32, 0, regions=("mouth",))
    assert m0.shape == (1, 1, 32, 32) and m0.dtype == torch.float32
    assert set(m0.unique().tolist()) <= {0.0, 1.0}
    want = torch.zeros(32, 32)
    want[10:17, 10:21] = 1  # pixel centres on the boundary count: 7 rows x 11 columns
    assert torch.equal(m0[0, 0], want)
    m2 = face_region_mask(lm, 32, 2, regions=("mouth",))
    want2 = torch.zeros(32, 32)
    want2[8:19, 8:23] = 1  # square dilation by 2 px
    assert torch.equal(m2[0, 0], want2)
    assert m2.sum() == 11 * 15 and bool((m2 >= m0).all())


def test_full_mask_covers_every_region_and_nothing_else() -> None:
    lm = landmarks_with(
        mouth=rect(24, 44, 40, 52, 12),
        right_eye=[(14, 24), (17, 22), (21, 22), (24, 24), (21, 26), (17, 26)],
        left_eye=[(40, 24), (43, 22), (47, 22), (50, 24), (47, 26), (43, 26)],
        right_brow=[(12, 18), (15, 15), (19, 14), (23, 15), (25, 17)],  # arch
        left_brow=[(39, 16), (42, 16), (45, 16), (48, 16), (51, 16)],  # straight line
    )
    mask = face_region_mask(lm, 64, 0)[0, 0]
    for idx in REGIONS.values():  # every landmark's own pixel
        for x, y in lm[0, list(idx)].round().long().tolist():
            assert mask[y, x] == 1
    assert mask[24, 19] == 1 and mask[48, 32] == 1  # eye and mouth interiors
    assert mask[16, 18] == 1  # under the arch: the brow is closed by its chord
    assert mask[16, 39:52].sum() == 13  # the straight brow is a 1-px line
    assert mask[15, 45] == 0 and mask[17, 45] == 0
    assert mask[0:10].sum() == 0 and mask[55:].sum() == 0 and mask[32:42].sum() == 0
    grown = [face_region_mask(lm, 64, d).sum().item() for d in (0, 1, 3)]
    assert grown[0] < grown[1] < grown[2]


def test_mask_concave_polygon_even_odd() -> None:
    # U-shaped mouth: the notch between the arms is outside
    u = [(10, 10), (14, 10), (14, 20), (26, 20), (26, 10), (30, 10), (30, 26), (10, 26)]
    u += [(10, 26)] * 4
    mask = face_region_mask(landmarks_with(mouth=u), 40, 0, regions=("mouth",))[0, 0]
    assert mask[12, 20] == 0 and mask[15, 12] == 1 and mask[23, 20] == 1 and mask[15, 28] == 1


def test_mask_batch_and_errors() -> None:
    a = landmarks_with(mouth=rect(2, 2, 6, 6, 12))
    b = landmarks_with(mouth=rect(8, 8, 12, 12, 12))
    both = face_region_mask(torch.cat([a, b]), 16, 1, regions=("mouth",))
    assert torch.equal(both[0], face_region_mask(a, 16, 1, regions=("mouth",))[0])
    assert torch.equal(both[1], face_region_mask(b, 16, 1, regions=("mouth",))[0])
    clipped = face_region_mask(landmarks_with(mouth=rect(-5, -5, 3, 3, 12)), 16, 0, ("mouth",))
    assert clipped.sum() == 16 and clipped[0, 0, :4, :4].sum() == 16  # partly off-image
    with pytest.raises(ValueError, match=r"\(B, 68, 2\)"):
        face_region_mask(torch.zeros(1, 5, 2), 16, 0)
    with pytest.raises(ValueError, match="unknown regions"):
        face_region_mask(a, 16, 0, regions=("nose",))


def test_masked_and_feature_rec_loss() -> None:
    x = seeded(2, 3, 16, 16, seed=19)
    mask = torch.zeros(2, 1, 16, 16)
    mask[:, :, 4:12, 4:12] = 1
    mx = masked(x, mask)
    assert torch.equal(mx[..., 4:12, 4:12], x[..., 4:12, 4:12])
    assert mx[..., :4, :].abs().sum() == 0
    with pytest.raises(ValueError, match="mask"):
        masked(x, mask[:, :, :8])
    # differences outside the mask do not count
    y = x.clone()
    y[..., :4, :] += 1.0
    fake = x.clone().requires_grad_(True)
    w = LossWeights()
    total, _ = feature_rec_loss([(fake, y, mask)], mean_abs_lpips, w)
    assert total.item() == 0.0
    # two pairs: the sum of rec_loss on the masked images (Eq. 13)
    y2 = seeded(2, 3, 16, 16, seed=20)
    total, parts = feature_rec_loss([(fake, y, mask), (fake, y2, mask)], mean_abs_lpips, w)
    want, want_parts = rec_loss(masked(x, mask), masked(y2, mask), mean_abs_lpips, w)
    assert total.item() == pytest.approx(want.item())
    assert parts["l2"].item() == pytest.approx(want_parts["l2"].item())
    total.backward()
    assert fake.grad is not None and fake.grad[..., :4, :].abs().sum() == 0
    assert fake.grad[..., 4:12, 4:12].abs().sum() > 0


# --- latent discriminator (e4e) ------------------------------------------------------------


def test_discriminator_layout_init_and_rng() -> None:
    state = torch.random.get_rng_state()
    d = LatentDiscriminator(512)  # e4e's LatentCodesDiscriminator(512, 4)
    assert torch.equal(torch.random.get_rng_state(), state)  # no global RNG draw
    shapes = {k: tuple(v.shape) for k, v in d.state_dict().items()}
    assert shapes == {
        "mlp.0.weight": (512, 512), "mlp.0.bias": (512,),
        "mlp.2.weight": (512, 512), "mlp.2.bias": (512,),
        "mlp.4.weight": (512, 512), "mlp.4.bias": (512,),
        "mlp.6.weight": (1, 512), "mlp.6.bias": (1,),
    }  # fmt: skip
    assert all(v.abs().sum() == 0 for v in d.state_dict().values())
    small = LatentDiscriminator(64, hidden=32).reset_parameters(torch.Generator().manual_seed(0))
    again = LatentDiscriminator(64, hidden=32).reset_parameters(torch.Generator().manual_seed(0))
    pairs = zip(small.parameters(), again.parameters(), strict=True)
    assert all(torch.equal(a, b) for a, b in pairs)
    assert small.mlp[0].weight.abs().max() <= 1 / 8  # U(-1/sqrt(in), 1/sqrt(in))
    assert small.mlp[2].weight.abs().max() <= 1 / math.sqrt(32)
    assert small.mlp[0].weight.std() > 0.05  # U(-1/8, 1/8): std 0.072
    w_plus = seeded(2, 6, 64, seed=21)
    out = small(w_plus)
    assert out.shape == (2, 6, 1)
    assert torch.allclose(out[:, 3], small(w_plus[:, 3]))
    with pytest.raises(ValueError, match="style_dim"):
        small(torch.zeros(2, 32))


def test_adversarial_losses_closed_forms() -> None:
    big = torch.full((4, 1), 50.0)
    assert d_logistic_loss(big, -big).item() < 1e-20  # perfect separation
    zero = torch.zeros(4, 1)
    assert d_logistic_loss(zero, zero).item() == pytest.approx(2 * math.log(2))
    assert g_nonsaturating_loss(zero).item() == pytest.approx(math.log(2))
    assert g_nonsaturating_loss(big).item() < 1e-20
    assert g_nonsaturating_loss(torch.tensor([[-1.0], [1.0]])).item() == pytest.approx(
        (math.log1p(math.e) + math.log1p(1 / math.e)) / 2
    )


def test_r1_linear_discriminator_closed_form() -> None:
    d = LatentDiscriminator(8, n_layers=1).reset_parameters(torch.Generator().manual_seed(1))
    a = d.mlp[0].weight  # D(w) = a.w + c
    real = seeded(5, 8, seed=22)
    r1 = r1_penalty(d, real)
    assert r1.item() == pytest.approx(float((a.detach() ** 2).sum()), rel=1e-6)
    r1.backward()  # graph to D's parameters: d r1 / d a = 2 a
    assert torch.allclose(a.grad, 2 * a.detach())
    assert not real.requires_grad


def test_r1_two_layer_all_active() -> None:
    # D(w) = v . lrelu(I w + b) + c with b >> |w|: every unit active, grad = v
    d = LatentDiscriminator(4, n_layers=2, hidden=4)
    v = torch.tensor([[1.0, -2.0, 0.5, 3.0]])
    with torch.no_grad():
        d.mlp[0].weight.copy_(torch.eye(4))
        d.mlp[0].bias.fill_(10.0)
        d.mlp[2].weight.copy_(v)
    w = seeded(3, 4, seed=23).requires_grad_(True)
    assert r1_penalty_from_logits(d(w), w).item() == pytest.approx(float((v**2).sum()))
    with torch.no_grad():  # all units negative: grad = 0.2 v
        d.mlp[0].bias.fill_(-10.0)
    assert r1_penalty(d, w).item() == pytest.approx(0.04 * float((v**2).sum()))
    with pytest.raises(ValueError, match="requires_grad"):
        r1_penalty_from_logits(d(w.detach()), w.detach())


def tiny_generator() -> Generator:
    g = Generator(64, style_dim=64, n_mlp=2, channel_multiplier=1)
    return g.reset_parameters(torch.Generator().manual_seed(0))


def test_sample_real_w() -> None:
    g = tiny_generator()
    w = sample_real_w(g, 5, torch.Generator().manual_seed(3))
    assert w.shape == (5, 64) and not w.requires_grad
    z = torch.randn(5, 64, generator=torch.Generator().manual_seed(3))
    assert torch.allclose(w, g.mapping(z))
    assert torch.equal(w, sample_real_w(g, 5, torch.Generator().manual_seed(3)))
    assert not torch.allclose(w, sample_real_w(g, 5, torch.Generator().manual_seed(4)))
    # a D step and an encoder step on W_ID rows run end to end
    d = LatentDiscriminator(64, hidden=64).reset_parameters(torch.Generator().manual_seed(5))
    w_id = seeded(2, 10, 64, seed=24).requires_grad_(True)
    d_loss = d_logistic_loss(d(w), d(w_id[:, 0].detach()))
    d_loss.backward()
    assert d.mlp[0].weight.grad is not None and w_id.grad is None
    g_loss = g_nonsaturating_loss(d(w_id))
    g_loss.backward()
    assert w_id.grad is not None and w_id.grad.abs().sum() > 0
