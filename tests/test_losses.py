"""Losses against values worked out by hand (arithmetic in the comments) or plain-Python formulas."""
import math

import pytest
import torch

from lib import losses

LN2 = math.log(2.0)


# ------------------------------------------------------------------------- cross-entropy

def _ce_example():
    # 1x2x1x3: pixel 0 logits (0, 0) -> p = (1/2, 1/2); pixel 1 logits (ln 3, 0) -> p = (3/4, 1/4);
    # pixel 2 anything (ignored).
    logits = torch.tensor([[[[0.0, math.log(3.0), 5.0]], [[0.0, 0.0, -5.0]]]], requires_grad=True)
    target = torch.tensor([[[0, 1, 255]]])
    return logits, target


def test_cross_entropy_ignores_pixels():
    logits, target = _ce_example()
    # pixel 0, class 0: -ln(1/2) = ln 2; pixel 1, class 1: -ln(1/4) = 2 ln 2; mean = 1.5 ln 2.
    loss = losses.cross_entropy(logits, target)
    assert loss.item() == pytest.approx(1.5 * LN2, rel=1e-6)


def test_cross_entropy_weighted_mean_like_torch():
    logits, target = _ce_example()
    # weights (1, 3): (1 * ln 2 + 3 * 2 ln 2) / (1 + 3) = 7/4 ln 2.
    loss = losses.cross_entropy(logits, target, weight=torch.tensor([1.0, 3.0]))
    assert loss.item() == pytest.approx(1.75 * LN2, rel=1e-6)


def test_cross_entropy_all_ignored_is_zero_with_grad():
    logits, _ = _ce_example()
    target = torch.full((1, 1, 3), 255)
    loss = losses.cross_entropy(logits, target)
    assert loss.item() == 0.0 and not torch.isnan(loss)
    loss.backward()
    assert torch.equal(logits.grad, torch.zeros_like(logits))


def test_cross_entropy_custom_ignore_index():
    logits, _ = _ce_example()
    # ignore_index = -1 marks pixels 0 and 2; only pixel 1 (class 1, p = 1/4) counts -> 2 ln 2.
    target = torch.tensor([[[-1, 1, -1]]])
    loss = losses.cross_entropy(logits, target, ignore_index=-1)
    assert loss.item() == pytest.approx(2 * LN2, rel=1e-6)


# ---------------------------------------------------------------------------- L1 / L2

def test_masked_l1_l2_by_hand():
    pred = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    target = torch.zeros(2, 2)
    mask = torch.tensor([[True, False], [False, True]])
    # masked L1: (|1| + |4|) / 2 = 2.5 ; masked L2: (1 + 16) / 2 = 8.5
    assert losses.masked_l1(pred, target, mask).item() == pytest.approx(2.5)
    assert losses.masked_l2(pred, target, mask).item() == pytest.approx(8.5)
    # no mask: L1 (1+2+3+4)/4 = 2.5 ; L2 (1+4+9+16)/4 = 7.5
    assert losses.masked_l1(pred, target).item() == pytest.approx(2.5)
    assert losses.masked_l2(pred, target).item() == pytest.approx(7.5)


def test_masked_losses_empty_mask_and_nan_outside_mask():
    pred = torch.tensor([[1.0, 2.0]], requires_grad=True)
    target = torch.tensor([[0.0, float("nan")]])  # an invalid pixel must not poison the loss
    mask = torch.tensor([[True, False]])
    loss = losses.masked_l1(pred, target, mask) + losses.masked_l2(pred, target, mask)
    loss.backward()
    # L1 = 1, L2 = 1; dL1/dp0 = sign(1) = 1, dL2/dp0 = 2 * 1 = 2, dp1 = 0.
    assert loss.item() == pytest.approx(2.0)
    assert pred.grad.tolist() == [[3.0, 0.0]]
    empty = torch.zeros(1, 2, dtype=torch.bool)
    assert losses.masked_l1(pred, target, empty).item() == 0.0
    assert losses.masked_l2(pred, target, empty).item() == 0.0


def test_masked_losses_reject_bad_inputs():
    with pytest.raises(ValueError):
        losses.masked_l1(torch.zeros(2, 2), torch.zeros(2, 3))
    with pytest.raises(TypeError):
        losses.masked_l2(torch.zeros(2, 2), torch.zeros(2, 2), torch.ones(2, 2))


# ------------------------------------------------------------------------------ berHu

def test_berhu_both_branches_and_gradient():
    # residuals e = pred - target = (0.1, -0.5, 1.0) on valid pixels, plus an excluded pixel
    # with residual 10 that must not set c. c = 0.2 * max|e| = 0.2 * 1.0 = 0.2.
    target = torch.zeros(1, 4)
    pred = torch.tensor([[0.1, -0.5, 1.0, 10.0]], requires_grad=True)
    mask = torch.tensor([[True, True, True, False]])
    loss = losses.berhu(pred, target, mask)
    # |0.1| <= 0.2 -> 0.1 ; |-0.5| > 0.2 -> (0.25 + 0.04) / 0.4 = 0.725 ;
    # |1.0| > 0.2 -> (1 + 0.04) / 0.4 = 2.6 ; mean = 3.425 / 3.
    assert loss.item() == pytest.approx(3.425 / 3, rel=1e-6)
    loss.backward()
    # c detached: d/de |e| = sign(e) = 1 ; d/de (e^2 + c^2)/2c = e / c = -2.5 and 5.0 ; all / 3.
    expected = torch.tensor([[1.0, -2.5, 5.0, 0.0]]) / 3
    assert torch.allclose(pred.grad, expected, atol=1e-6)


def test_berhu_is_homogeneous_in_the_scale_of_pred_and_target():
    """berHu(s z, s t) = s berHu(z, t) and, in z, grad_z berHu(z, s t) at z = s z' equals
    grad berHu(z', t) (c scales with the residual): what a depth target's scale does (DADA's
    --depth-target-scale, docs/dada.md). By hand on e = (1, -4): c = 0.8, both beyond it, so the
    loss is ((1 + 0.64) / 1.6 + (16 + 0.64) / 1.6) / 2."""
    z, t = torch.tensor([2.0, 1.0]), torch.tensor([1.0, 5.0])
    base = losses.berhu(z, t)
    assert base.item() == pytest.approx(((1.0 + 0.64) / 1.6 + (16.0 + 0.64) / 1.6) / 2, rel=1e-6)
    for s in (1 / 64, 3.0):
        assert losses.berhu(s * z, s * t).item() == pytest.approx(s * base.item(), rel=1e-6)
        zs = (s * z).requires_grad_()
        losses.berhu(zs, s * t).backward()
        z1 = z.clone().requires_grad_()
        losses.berhu(z1, t).backward()
        assert torch.allclose(zs.grad, z1.grad, rtol=1e-5)   # the same per-pixel gradient


def test_berhu_without_mask_and_zero_residual():
    # e = (2, 1): c = 0.4 ; both > c: (4 + 0.16)/0.8 = 5.2 and (1 + 0.16)/0.8 = 1.45 ; mean 3.325
    pred = torch.tensor([2.0, 1.0])
    assert losses.berhu(pred, torch.zeros(2)).item() == pytest.approx(3.325, rel=1e-6)
    # c_ratio = 1: c = 2, both |e| <= c -> plain L1: (2 + 1) / 2 = 1.5
    assert losses.berhu(pred, torch.zeros(2), c_ratio=1.0).item() == pytest.approx(1.5)
    # All residuals 0 -> c = 0: loss 0, finite gradient (guarded division).
    p = torch.ones(3, requires_grad=True)
    loss = losses.berhu(p, torch.ones(3))
    loss.backward()
    assert loss.item() == 0.0 and torch.isfinite(p.grad).all()


# -------------------------------------------------------------------------------- NDA

def test_nda_loss_by_hand():
    # 1x2x1x2 features. A: (3,4) -> 5, (0,0) -> 0 ; B: (0,1) -> 1, (6,8) -> 10.
    feat_a = torch.tensor([[[[3.0, 0.0]], [[4.0, 0.0]]]], requires_grad=True)
    feat_b = torch.tensor([[[[0.0, 6.0]], [[1.0, 8.0]]]])
    loss = losses.nda_loss(feat_a, feat_b)
    # (|5 - 1| + |0 - 10|) / 2 = 7
    assert loss.item() == pytest.approx(7.0)
    loss.backward()
    # At (0,0): d|5-1|/df = f/||f|| / 2 = (0.3, 0.4) ; at the zero vector the grad must be finite.
    assert torch.allclose(feat_a.grad[0, :, 0, 0], torch.tensor([0.3, 0.4]))
    assert torch.isfinite(feat_a.grad).all()


def test_nda_loss_shape_errors():
    with pytest.raises(ValueError):
        losses.nda_loss(torch.zeros(1, 2, 3, 3), torch.zeros(1, 2, 3, 4))
    with pytest.raises(ValueError):
        losses.nda_loss(torch.zeros(2, 3, 3), torch.zeros(2, 3, 3))


# ---------------------------------------------------------------------------- normals

def test_cosine_normal_loss_by_hand():
    # 1x3x1x4 pixels: pred (2,0,0) vs gt (1,0,0): cos 1 -> 0 ; pred (0,3,0) vs (1,0,0): cos 0 -> 1 ;
    # pred (-1,0,0) vs (1,0,0): cos -1 -> 2 ; gt (0,0,0): invalid, excluded. Mean = 3 / 3 = 1.
    pred = torch.tensor([[2.0, 0.0, -1.0, 5.0], [0.0, 3.0, 0.0, 5.0], [0.0, 0.0, 0.0, 5.0]]).view(1, 3, 1, 4)
    gt = torch.tensor([[1.0, 1.0, 1.0, 0.0], [0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]]).view(1, 3, 1, 4)
    assert losses.cosine_normal_loss(pred, gt).item() == pytest.approx(1.0, abs=1e-6)
    # An explicit mask keeping only pixel 1 -> 1.0 ; only pixel 2 -> 2.0
    mask = torch.tensor([[[False, False, True, False]]])
    assert losses.cosine_normal_loss(pred, gt, mask).item() == pytest.approx(2.0, abs=1e-6)
    # No valid pixel -> 0
    assert losses.cosine_normal_loss(pred, torch.zeros_like(gt)).item() == 0.0


# ------------------------------------------------------------------- entropy / surprisal

def test_entropy_and_surprisal_maps():
    # C = 2, pixel 0 logits (0, 0): uniform -> normalised entropy 1.
    # pixel 1 logits (ln 3, 0): p = (3/4, 1/4).
    logits = torch.tensor([[[[0.0, math.log(3.0)]], [[0.0, 0.0]]]])
    ent = losses.entropy_map(logits)
    assert ent.shape == (1, 1, 1, 2)
    h1 = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25)) / math.log(2)  # = 0.8112781...
    assert ent[0, 0, 0].tolist() == pytest.approx([1.0, h1], rel=1e-6)
    sur = losses.surprisal_map(logits)
    assert sur.shape == (1, 2, 1, 2)
    # per class -p ln p / ln 2: pixel 0: (0.5, 0.5); pixel 1: (-0.75 ln .75 / ln 2, -0.25 ln .25 / ln 2)
    assert sur[0, :, 0, 0].tolist() == pytest.approx([0.5, 0.5], rel=1e-6)
    assert sur[0, :, 0, 1].tolist() == pytest.approx(
        [-0.75 * math.log(0.75) / LN2, -0.25 * math.log(0.25) / LN2], rel=1e-6)


def test_surprisal_uniform_four_classes_and_extreme_logits():
    # C = 4 uniform: each class -1/4 ln(1/4) / ln 4 = 1/4, sum 1.
    sur = losses.surprisal_map(torch.zeros(1, 4, 1, 1))
    assert sur.flatten().tolist() == pytest.approx([0.25] * 4)
    # Very confident logits stay finite (log_softmax, no log(0)).
    ent = losses.entropy_map(torch.tensor([[[[1000.0]], [[-1000.0]]]]))
    assert torch.isfinite(ent).all() and ent.item() == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError):
        losses.entropy_map(torch.zeros(1, 1, 2, 2))


# ------------------------------------------------------------------------ adversarial

def test_bce_adv_by_hand():
    # sigmoid(0) = 1/2 -> ln 2 for either label ; sigmoid(ln 3) = 3/4:
    # label 1 -> -ln(3/4) = ln(4/3) ; label 0 -> -ln(1/4) = ln 4.
    logits = torch.tensor([0.0, math.log(3.0)]).view(1, 1, 1, 2)
    assert losses.bce_adv(logits, 1.0).item() == pytest.approx((LN2 + math.log(4 / 3)) / 2, rel=1e-6)
    assert losses.bce_adv(logits, 0).item() == pytest.approx((LN2 + math.log(4)) / 2, rel=1e-6)
    with pytest.raises(ValueError):
        losses.bce_adv(logits, 2.0)


def test_grad_reverse_sign_and_scale():
    x = torch.tensor([1.0, -2.0, 3.0], requires_grad=True)
    w = torch.tensor([0.5, 1.0, -4.0])
    y = losses.grad_reverse(x, lambd=0.5)
    assert torch.equal(y, x)  # identity forward
    (y * w).sum().backward()
    # d/dx sum(w * x) = w, reversed and scaled: -0.5 * w = (-0.25, -0.5, 2.0)
    assert x.grad.tolist() == [-0.25, -0.5, 2.0]


def test_supervised_loss_dispatches_to_the_task_loss():
    from lib.losses import cosine_normal_loss, cross_entropy, supervised_loss
    logits, labels = torch.randn(1, 3, 2, 2), torch.tensor([[[0, 1], [255, 2]]])
    assert torch.equal(supervised_loss("semantic", logits, labels), cross_entropy(logits, labels))
    # depth: berHu over pixels with a label only (0 = invalid); residuals 1 and 3 -> c = 0.6,
    # both above c: (1 + 0.36) / 1.2 and (9 + 0.36) / 1.2, mean = (1.36 + 9.36) / 2.4 = 4.4667
    pred, gt = torch.tensor([[2.0, 5.0, 9.0]]), torch.tensor([[1.0, 0.0, 6.0]])
    assert supervised_loss("depth", pred, gt).item() == pytest.approx(10.72 / 2.4)
    n = torch.randn(1, 3, 2, 2)
    assert torch.equal(supervised_loss("normals", n, n.flip(1)), cosine_normal_loss(n, n.flip(1)))
    with pytest.raises(ValueError, match="edges"):
        supervised_loss("edges", pred, gt)
