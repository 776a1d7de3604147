"""Training losses shared by every method: segmentation, depth, normals, features, adversarial.

Conventions (docs/design.md, "The sample contract"):
- dense predictions are BxCxHxW, integer labels BxHxW with 255 = ignore;
- "mask" arguments are bool tensors that select the pixels a loss is averaged over;
- every loss returns a 0-dim tensor that stays connected to the graph even when no pixel is
  valid (it is then exactly 0), so a batch without labels never turns the loss into NaN and
  ``loss.backward()`` always works (needed under DDP, where every rank must backward).

Reductions use ``torch.where`` instead of boolean indexing: it keeps shapes static (no
host-device sync, friendly to torch.compile) and, because the selection happens before any
non-linearity, a NaN/inf at an excluded pixel (e.g. an invalid depth) cannot leak into the
value or into the gradient.
"""
import math

import torch
import torch.nn.functional as F

__all__ = [
    "cross_entropy",
    "masked_l1",
    "masked_l2",
    "berhu",
    "nda_loss",
    "cosine_normal_loss",
    "entropy_map",
    "surprisal_map",
    "bce_adv",
    "wgan_critic_loss",
    "wgan_generator_loss",
    "gradient_penalty",
    "grad_reverse",
    "GradReverse",
]


def _safe_mean(total, count):
    """Divide a masked sum by its element count, returning 0 (not NaN) when count is 0."""
    # The numerator is already 0 when nothing is selected, so dividing by 1 gives exactly 0
    # while keeping the graph (and the count > 0 case is untouched: no epsilon bias).
    count = count.to(total.dtype)
    return total / torch.where(count > 0, count, torch.ones_like(count))


def _check_mask(mask, like, name="mask"):
    """Validate an optional bool mask against a reference tensor; None selects everything."""
    if mask is None:
        return None
    if mask.dtype != torch.bool:
        # A float/int mask would silently act as a weight map; ask for an explicit bool.
        raise TypeError(f"{name} must be a bool tensor, got {mask.dtype}")
    if mask.shape != like.shape:
        raise ValueError(f"{name} shape {tuple(mask.shape)} != tensor shape {tuple(like.shape)}")
    return mask


def _check_same_shape(pred, target, fn):
    """Raise a clear error instead of letting broadcasting silently pair the wrong pixels."""
    if pred.shape != target.shape:
        raise ValueError(f"{fn}: pred shape {tuple(pred.shape)} != target shape {tuple(target.shape)}")


def cross_entropy(logits, target, ignore_index=255, weight=None):
    """Pixel-wise cross-entropy, DADA eq. 1 / AT/DT Sec. 4 / SemiMTL Sec. 3.4, mean over valid pixels.

    ``logits`` BxCxHxW (or NxC), ``target`` BxHxW (or N) int64 with ``ignore_index`` pixels
    dropped. Without ``weight`` the result is the mean over valid pixels; with a per-class
    ``weight`` (UM-Adapt's class-balanced CE) it is the weighted mean
    sum_i w_{y_i} l_i / sum_i w_{y_i}, exactly like ``torch.nn.functional.cross_entropy``.
    Unlike torch, a batch without any valid pixel gives 0 (with grad) rather than NaN.
    """
    per_pixel = F.cross_entropy(logits, target, weight=weight, ignore_index=ignore_index,
                                reduction="none")  # already 0 at ignored pixels
    valid = target != ignore_index
    if weight is None:
        denom = valid.sum()
    else:
        # Gather w_{y} with ignored pixels mapped to class 0 (any index works: they are masked).
        safe_target = torch.where(valid, target, torch.zeros_like(target))
        denom = torch.where(valid, weight.to(per_pixel.dtype)[safe_target],
                            torch.zeros((), dtype=per_pixel.dtype, device=per_pixel.device)).sum()
    return _safe_mean(per_pixel.sum(), denom)


def _masked_mean(values, mask):
    """Mean of ``values`` over ``mask`` (all elements when mask is None), 0 when mask is empty."""
    if mask is None:
        return values.mean()
    return _safe_mean(values.sum(), mask.sum())


def _masked_residual(pred, target, mask):
    """pred - target with excluded pixels set to 0 *before* any non-linearity (no NaN leaks)."""
    residual = pred - target
    if mask is None:
        return residual
    return torch.where(mask, residual, torch.zeros_like(residual))


def masked_l1(pred, target, mask=None):
    """Masked mean absolute error: AT/DT Sec. 4 depth loss (L1) over valid pixels."""
    _check_same_shape(pred, target, "masked_l1")
    mask = _check_mask(mask, pred)
    return _masked_mean(_masked_residual(pred, target, mask).abs(), mask)


def masked_l2(pred, target, mask=None):
    """Masked mean squared error: AT/DT Sec. 4 auxiliary edge loss (L2); UM-Adapt Sec. 3.2 CCR (MSE)."""
    _check_same_shape(pred, target, "masked_l2")
    mask = _check_mask(mask, pred)
    return _masked_mean(_masked_residual(pred, target, mask).square(), mask)


def berhu(pred, target, mask=None, c_ratio=0.2):
    """Reverse Huber (berHu) loss, DADA eq. 3 (also SemiMTL / UM-Adapt depth), mean over valid pixels.

    berHu(e) = |e| if |e| <= c, else (e^2 + c^2) / (2c), with c = c_ratio * max |e| over the
    batch's valid pixels ("1/5 of the maximum depth residual", DADA Sec. 3.1).
    Choices the paper leaves open, following the official DADA code:
    - c is a constant for the gradient (detached; the official code takes ``.item()``);
    - the result is the *mean* over valid pixels, where DADA eq. 2 writes a sum: a mean keeps
      lambda_dep independent of the image size (and the official code divides by numel);
      the leading minus sign of DADA eq. 2 is a typo (berHu is non-negative).
    When every residual is 0, c = 0 and the loss is 0 (the division is guarded).
    """
    _check_same_shape(pred, target, "berhu")
    if not c_ratio > 0:
        raise ValueError(f"c_ratio must be > 0, got {c_ratio}")
    mask = _check_mask(mask, pred)
    abs_err = _masked_residual(pred, target, mask).abs()  # excluded pixels are exactly 0
    # Excluded pixels are 0, so they cannot raise the max; no valid pixel -> c = 0 -> loss 0.
    c = c_ratio * abs_err.detach().amax() if abs_err.numel() else abs_err.new_zeros(())
    # Guard the quadratic branch's division; it is only selected when |e| > c >= 0, i.e. c > 0
    # or |e| > 0, and with c = 0 no |e| can exceed it because all are 0 (c is their max * ratio).
    c_safe = torch.where(c > 0, c, torch.ones_like(c))
    quadratic = (abs_err.square() + c * c) / (2 * c_safe)
    per_pixel = torch.where(abs_err <= c, abs_err, quadratic)
    return _masked_mean(per_pixel, mask)


def nda_loss(feat_a, feat_b):
    """Norm Discrepancy Alignment loss, AT/DT eq. 3: mean_ij | ||f^A_ij||_2 - ||f^B_ij||_2 |.

    ``feat_a`` (domain A) and ``feat_b`` (domain B) are BxCxHxW encoder features of equal
    shape; the L2 norm is taken over channels at each location and the absolute norm gap is
    averaged over (i, j) and over the batch (images of A and B are paired by batch index,
    which is what the spatially-aware loss compares: same location, different domain).
    """
    if feat_a.dim() != 4 or feat_b.dim() != 4:
        raise ValueError(f"nda_loss expects BxCxHxW features, got {tuple(feat_a.shape)} and {tuple(feat_b.shape)}")
    if feat_a.shape != feat_b.shape:
        raise ValueError(f"nda_loss: feature shapes differ: {tuple(feat_a.shape)} vs {tuple(feat_b.shape)}")
    # torch's vector_norm backward returns 0 (not NaN) at an all-zero vector (e.g. after ReLU).
    norm_a = torch.linalg.vector_norm(feat_a, ord=2, dim=1)
    norm_b = torch.linalg.vector_norm(feat_b, ord=2, dim=1)
    return (norm_a - norm_b).abs().mean()


def cosine_normal_loss(pred, target, mask=None, eps=1e-8):
    """Cosine loss 1 - cos(pred, target) for surface normals, HeadFreeze Sec. 4.1 / UM-Adapt Sec. 4.1.

    ``pred``, ``target`` Bx3xHxW; ``pred`` is normalised here (the network output is an
    unconstrained 3-vector), ``target`` too (a no-op for unit ground truth). ``mask`` BxHxW
    bool, default: pixels whose target norm is > 0 (the contract's "0 = invalid").
    UM-Adapt's "inverse of the dot product" (Eigen et al.: -n.n^) differs only by the
    constant 1, so gradients are identical; 1 - cos keeps the loss in [0, 2].
    """
    _check_same_shape(pred, target, "cosine_normal_loss")
    if pred.dim() != 4 or pred.shape[1] != 3:
        raise ValueError(f"cosine_normal_loss expects Bx3xHxW, got {tuple(pred.shape)}")
    target_norm = torch.linalg.vector_norm(target, dim=1)
    if mask is None:
        mask = target_norm > 0
    else:
        if mask.dtype != torch.bool:
            raise TypeError(f"mask must be a bool tensor, got {mask.dtype}")
        if mask.shape != target_norm.shape:
            raise ValueError(f"mask shape {tuple(mask.shape)} != BxHxW {tuple(target_norm.shape)}")
    # eps keeps the direction of a (near-)zero prediction defined instead of 0/0.
    pred_unit = F.normalize(pred, dim=1, eps=eps)
    target_unit = target / target_norm.clamp_min(eps).unsqueeze(1)
    per_pixel = 1.0 - (pred_unit * target_unit).sum(dim=1)
    per_pixel = torch.where(mask, per_pixel, torch.zeros_like(per_pixel))
    return _safe_mean(per_pixel.sum(), mask.sum())


def _plogp_normalised(logits):
    """-P log P / log C per class from logits (log_softmax for stability), BxCxHxW."""
    num_classes = logits.shape[1]
    if num_classes < 2:
        # log C = 0: entropy is undefined as a normalised quantity for a single class.
        raise ValueError(f"need at least 2 classes along dim 1, got {num_classes}")
    log_p = F.log_softmax(logits, dim=1)
    # Logits must be finite: with -inf, p * log p would be 0 * -inf = NaN.
    return -(log_p.exp() * log_p) / math.log(num_classes)


def entropy_map(logits):
    """Normalised per-pixel entropy -sum_c P log P / log C in [0, 1], Bx1xHxW (ADVENT; DADA Sec. 3.2)."""
    return _plogp_normalised(logits).sum(dim=1, keepdim=True)


def surprisal_map(logits):
    """Weighted self-information I = -P log P / log C per class, BxCxHxW, DADA eq. 5.

    DADA eq. 5 has no normaliser but states I in [0, 1]; the official code
    (``prob_2_entropy``) divides by log C, which we follow so that the channel sum is the
    normalised entropy map.
    """
    return _plogp_normalised(logits)


def bce_adv(logits, label):
    """BCE-with-logits of a discriminator output vs a constant domain label, DADA eqs. 6-7 / ADVENT.

    ``label`` is a Python number in [0, 1]; the result is the mean over every output element.
    DADA's eqs. 6-7 write source 1 / target 0; train_dada.py, like the official train_UDA.py,
    labels source 0 and target 1 (equivalent).
    """
    label = float(label)
    if not 0.0 <= label <= 1.0:
        raise ValueError(f"domain label must lie in [0, 1], got {label}")
    return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, label))


def _per_sample(critic_out):
    """A critic's value per sample: the mean over its patch outputs (B, ...) -> (B,)."""
    return critic_out.reshape(len(critic_out), -1).mean(1)


def wgan_critic_loss(d_real, d_fake):
    """WGAN critic loss (Arjovsky et al. 2017; Gulrajani et al. 2017, eq. 3 without the penalty):
    E[D(fake)] - E[D(real)], each critic output averaged over its patches and the batch."""
    return _per_sample(d_fake).mean() - _per_sample(d_real).mean()


def wgan_generator_loss(d_fake):
    """WGAN generator loss -E[D(fake)] (Gulrajani et al. 2017, Algorithm 1)."""
    return -_per_sample(d_fake).mean()


def gradient_penalty(critic, real, fake, lam=10.0):
    """WGAN-GP's penalty (Gulrajani et al. 2017, eq. 3): lam E[(||grad D(x_hat)||_2 - 1)^2] with
    x_hat = eps x_real + (1 - eps) x_fake, eps ~ U[0, 1] per sample.

    ``real`` and ``fake``: sequences of tensors (a critic of several inputs, such as UM-Adapt-B's
    (latent, maps)) with equal shapes pairwise and the batch first; one eps per sample serves
    every input and the norm is over all of them. ``critic(*x_hat)`` returns (B, ...) (a patch
    critic: its value per sample is the mean). Computed in float32 with autocast off, so the
    double backward needs no gradient scaling under --amp fp16; ``create_graph`` keeps the
    penalty differentiable in the critic's parameters."""
    real, fake = [t.detach().float() for t in real], [t.detach().float() for t in fake]
    eps = torch.rand(len(real[0]), device=real[0].device)
    x_hat = [torch.lerp(f, r, eps.view(-1, *[1] * (r.dim() - 1))).requires_grad_(True)
             for r, f in zip(real, fake)]
    with torch.autocast(real[0].device.type, enabled=False):
        out = _per_sample(critic(*x_hat)).sum()
    grads = torch.autograd.grad(out, x_hat, create_graph=True)
    # vector_norm's backward is 0, not NaN, at a zero gradient
    norm = torch.linalg.vector_norm(torch.cat([g.reshape(len(g), -1) for g in grads], 1), dim=1)
    return lam * (norm - 1).square().mean()


class GradReverse(torch.autograd.Function):
    """Gradient reversal layer, Ganin & Lempitsky 2015 (HeadFreeze +DA, Sec. 4.3)."""

    @staticmethod
    def forward(ctx, x, lambd):
        ctx.lambd = lambd
        # view_as: an identity that still gives autograd a new node to attach backward to.
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad_output):
        return -ctx.lambd * grad_output, None


def grad_reverse(x, lambd=1.0):
    """Identity forward, -lambd * grad backward: Ganin & Lempitsky's GRL (HeadFreeze +DA)."""
    return GradReverse.apply(x, float(lambd))


def supervised_loss(task, pred, target, weight=None):
    """The default loss of each task for supervised baselines: CE (class `weight`s optional),
    berHu (DADA eq. 3), 1 - cos.

    Method scripts that prescribe another (AT/DT's L1 depth) call that loss directly.
    """
    if task == "semantic":
        return cross_entropy(pred, target, weight=weight)
    if task == "depth":
        return berhu(pred, target, mask=target > 0)
    if task == "normals":
        return cosine_normal_loss(pred, target)
    raise ValueError(f"no supervised loss for task {task!r}; expected semantic, depth or normals")


def larger_norm_loss(feat, radius):
    """Hard Adaptive Feature Norm (Xu et al. 2019, "LargerNorm" in AT/DT Table 7):
    (mean_{b,i,j} ||f_bij||_2 - R)^2, the mean feature norm of one domain pulled to radius R.

    AT/DT applies it to the dense E1 features of each domain; the norm is over channels at
    every location, as in NDA (eq. 3), and averaged over locations and images.
    """
    if feat.dim() != 4:
        raise ValueError(f"larger_norm_loss expects BxCxHxW features, got {tuple(feat.shape)}")
    return (torch.linalg.vector_norm(feat, ord=2, dim=1).mean() - float(radius)).square()
