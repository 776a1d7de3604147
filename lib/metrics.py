"""Evaluation metrics: segmentation, depth, surface normals, multi-task gain, negative transfer.

Meters (ConfusionMatrix, DepthMeter, NormalMeter) keep only *sums and counts* on the device,
so that one ``reduce_from_all_processes()`` (an all_reduce of those sums under DDP) gives
exactly the numbers a single process would get over the whole evaluation set. Call it
once, after the last ``update`` and before ``compute`` (a second call would add the other
ranks' sums again). Without torch.distributed initialised it is a no-op.

All percentages are in 0-100; results are Python floats (NaN when nothing was measured).
"""
import math

import torch
import torch.distributed as dist

__all__ = [
    "ConfusionMatrix",
    "depth_errors",
    "DepthMeter",
    "DEPTH_KEYS",
    "normal_errors",
    "NormalMeter",
    "NORMAL_KEYS",
    "delta_m",
    "per_image_miou",
    "negative_transfer_rate",
]


def _all_reduce_(tensor):
    """Sum ``tensor`` in place across processes when torch.distributed is initialised (DDP eval)."""
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def _nanmean(values):
    """Mean over the non-NaN entries of a 1-D float tensor; NaN when all are NaN (no warning)."""
    keep = ~torch.isnan(values)
    if not bool(keep.any()):
        return float("nan")
    return float(values[keep].mean())


def _confusion(pred, target, num_classes, ignore_index, batch=None):
    """Bincount confusion matrix (rows = ground truth, cols = prediction), optionally per image.

    ``pred``/``target`` integer tensors of equal shape; with ``batch`` given, dim 0 indexes
    images and the result is BxCxC, otherwise CxC. Ignored pixels are dropped; any other
    target outside [0, C) and any prediction outside [0, C) raises ValueError (a label-map
    bug must not be silently counted or dropped).
    """
    if pred.shape != target.shape:
        raise ValueError(f"pred shape {tuple(pred.shape)} != target shape {tuple(target.shape)}")
    if pred.is_floating_point() or target.is_floating_point():
        raise TypeError("pred and target must be integer class maps (take argmax of the logits first)")
    pred = pred.long()
    target = target.long()
    keep = target != ignore_index
    bad_target = keep & ((target < 0) | (target >= num_classes))
    if bool(bad_target.any()):
        raise ValueError(f"target values {torch.unique(target[bad_target]).tolist()} are outside "
                         f"[0, {num_classes}) and are not ignore_index={ignore_index}")
    bad_pred = keep & ((pred < 0) | (pred >= num_classes))
    if bool(bad_pred.any()):
        raise ValueError(f"prediction values {torch.unique(pred[bad_pred]).tolist()} are outside [0, {num_classes})")
    index = target * num_classes + pred
    size = num_classes * num_classes
    if batch is not None:
        # Offset each image into its own CxC block so one bincount serves the whole batch.
        image = torch.arange(batch, device=pred.device).view(-1, *([1] * (pred.dim() - 1)))
        index = index + image * size
        size = size * batch
    counts = torch.bincount(index[keep], minlength=size)
    shape = (num_classes, num_classes) if batch is None else (batch, num_classes, num_classes)
    return counts.view(shape)


def _iou_from_confusion(mat):
    """Per-class IoU (fraction) from a ...xCxC confusion matrix; NaN where gt and pred both lack the class."""
    mat = mat.double()
    tp = torch.diagonal(mat, dim1=-2, dim2=-1)
    union = mat.sum(-1) + mat.sum(-2) - tp
    return torch.where(union > 0, tp / union.clamp_min(1), torch.full_like(tp, float("nan")))


class ConfusionMatrix:
    """Segmentation meter: pixel acc, mean class acc, mIoU (DADA Sec. 4.2, AT/DT Sec. 4, SemiMTL Sec. 4.1).

    mIoU is the nanmean of the per-class IoU over the classes that occur in the ground truth
    *or* in the prediction of the accumulated set (a class absent from both has no defined
    IoU and is left out: it is reported as None in ``per_class``). This is the official
    ADVENT/DADA evaluation (``per_class_iu`` + ``nanmean``) and SemiMTL's "averaging the
    Jaccard scores over all predicted categories". A class that is predicted but never in
    the ground truth has IoU 0 and counts. ``mean_acc`` averages recall over classes present
    in the ground truth.
    """

    def __init__(self, num_classes, ignore_index=255, device=None):
        """Empty CxC matrix; ``device=None`` adopts the device of the first update."""
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes = int(num_classes)
        self.ignore_index = ignore_index
        self.device = None if device is None else torch.device(device)
        self.mat = None
        self.reset()

    def reset(self):
        """Clear the counts (keeps the device)."""
        device = self.device if self.device is not None else (self.mat.device if self.mat is not None else "cpu")
        # int64: a float32 matrix would stop counting exactly past 2^24 pixels per cell.
        self.mat = torch.zeros(self.num_classes, self.num_classes, dtype=torch.int64, device=device)
        self._placed = self.device is not None

    def update(self, pred, target):
        """Accumulate integer predictions vs labels of any equal shape (e.g. BxHxW)."""
        if not self._placed:
            # Lazy placement: count where the predictions live (no GPU->CPU copy per batch).
            self.mat = self.mat.to(target.device)
            self._placed = True
        pred = pred.detach().to(self.mat.device)
        target = target.detach().to(self.mat.device)
        self.mat += _confusion(pred, target, self.num_classes, self.ignore_index)
        return self

    def reduce_from_all_processes(self):
        """Sum the matrix over DDP processes (no-op without torch.distributed); call once."""
        _all_reduce_(self.mat)
        return self

    def compute(self):
        """Return {"mIoU", "acc", "mean_acc", "per_class"} in percent (per_class: None = undefined)."""
        mat = self.mat.double().cpu()
        tp = torch.diagonal(mat)
        gt_count = mat.sum(1)
        total = mat.sum()
        iou = _iou_from_confusion(mat) * 100.0
        recall = torch.where(gt_count > 0, tp / gt_count.clamp_min(1), torch.full_like(tp, float("nan")))
        return {
            "mIoU": _nanmean(iou),
            "acc": float(tp.sum() / total * 100.0) if total > 0 else float("nan"),
            "mean_acc": _nanmean(recall * 100.0),
            "per_class": [None if math.isnan(v) else v for v in iou.tolist()],
        }


# ----------------------------------------------------------------------------------- depth

DEPTH_KEYS = ("abs_rel", "sq_rel", "rmse", "rmse_log", "log10", "a1", "a2", "a3")
_RMSE = DEPTH_KEYS.index("rmse")


def _per_image_depth_errors(pred, gt, min_depth, max_depth, absolute_min_depth=None):
    """Eigen et al. errors for each row of (B, N) pred/gt: returns ((B, 8) float64, (B,) valid
    counts, (B,) rmse counts).

    Valid pixels: min_depth < gt < max_depth (strict, as monodepth2's evaluation); pred is
    clamped to [min_depth, max_depth] (monodepth2; AT/DT clips to [0.001, 100]). Rows without
    a valid pixel get 0 errors and count 0 (callers decide to skip or report NaN).
    absolute_min_depth (None: min_depth) is RMSE's own floor, with pred clamped to
    [absolute_min_depth, max_depth] for it: the ratio errors are undefined at 0, the absolute one
    is not (SemiMTL's ISPRS heights, where the ground is at 0: docs/semimtl.md).
    """
    pred = pred.double()
    gt = gt.double()
    valid = (gt > min_depth) & (gt < max_depth)
    count = valid.sum(1)
    rmse, rmse_count = None, count
    if absolute_min_depth is not None:
        if not 0 <= absolute_min_depth <= min_depth:
            raise ValueError(f"need 0 <= absolute_min_depth <= min_depth, got {absolute_min_depth}, {min_depth}")
        keep = (gt > absolute_min_depth) & (gt < max_depth)
        sq = torch.where(keep, (pred.clamp(absolute_min_depth, max_depth) - gt).square(), torch.zeros_like(gt))
        rmse_count = keep.sum(1)
        rmse = (sq.sum(1) / rmse_count.clamp_min(1).double()).sqrt()
    # Replace invalid gt by 1 so log/division stay finite; those pixels are zeroed anyway.
    gt = torch.where(valid, gt, torch.ones_like(gt))
    pred = pred.clamp(min_depth, max_depth)
    diff = pred - gt
    log_diff = torch.log(pred) - torch.log(gt)
    ratio = torch.maximum(pred / gt, gt / pred)
    per_pixel = torch.stack([
        diff.abs() / gt,                               # abs_rel
        diff.square() / gt,                            # sq_rel
        diff.square(),                                 # rmse (sqrt after the mean)
        log_diff.square(),                             # rmse_log (sqrt after the mean)
        (torch.log10(pred) - torch.log10(gt)).abs(),   # log10
        (ratio < 1.25).double(),                       # a1
        (ratio < 1.25 ** 2).double(),                  # a2
        (ratio < 1.25 ** 3).double(),                  # a3
    ], dim=-1)  # (B, N, 8)
    per_pixel = torch.where(valid.unsqueeze(-1), per_pixel, torch.zeros_like(per_pixel))
    mean = per_pixel.sum(1) / count.clamp_min(1).unsqueeze(-1).double()
    errors = torch.cat([
        mean[:, :2], mean[:, 2:4].sqrt(), mean[:, 4:5], mean[:, 5:] * 100.0,
    ], dim=1)
    if rmse is not None:
        errors[:, _RMSE] = rmse
    return errors, count, rmse_count


def _flatten_depth(pred, gt, batched):
    """Check shapes and return (B, N) views; a Bx1xHxW map is accepted next to a BxHxW one."""
    if batched:
        if pred.dim() == 4 and pred.shape[1] == 1:
            pred = pred[:, 0]
        if gt.dim() == 4 and gt.shape[1] == 1:
            gt = gt[:, 0]
    if pred.shape != gt.shape:
        raise ValueError(f"depth pred shape {tuple(pred.shape)} != gt shape {tuple(gt.shape)}")
    if batched:
        return pred.reshape(pred.shape[0], -1), gt.reshape(gt.shape[0], -1)
    return pred.reshape(1, -1), gt.reshape(1, -1)


def depth_errors(pred, gt, min_depth=1e-3, max_depth=80.0, absolute_min_depth=None):
    """Standard depth errors (Eigen et al.; AT/DT Sec. 4, SemiMTL Sec. 4.1) pooled over all valid pixels.

    ``pred`` and ``gt`` in metres, any equal shape (one image, or a batch pooled as one set of
    pixels). Valid: min_depth < gt < max_depth (strict); pred clamped to [min_depth, max_depth].
    Returns a dict with DEPTH_KEYS: abs_rel, sq_rel, rmse, rmse_log, log10 (natural log for
    rmse_log, base 10 for log10) and a1..a3 = % of pixels with max(p/g, g/p) < 1.25^i.
    absolute_min_depth: RMSE's own floor (None: min_depth; _per_image_depth_errors). A key is
    NaN when none of its pixels is valid.
    """
    errors, count, rmse_count = _per_image_depth_errors(*_flatten_depth(pred, gt, batched=False),
                                                        min_depth, max_depth, absolute_min_depth)
    counts = [int(rmse_count[0]) if k == "rmse" else int(count[0]) for k in DEPTH_KEYS]
    return {k: v if n else float("nan") for k, v, n in zip(DEPTH_KEYS, errors[0].tolist(), counts)}


class DepthMeter:
    """Eigen-protocol depth meter: errors computed per image, then averaged over images (AT/DT Sec. 4).

    Per-image then mean over images is what the Eigen/monodepth2 evaluation does (the
    papers do not say; pooled numbers are available from ``depth_errors`` on a batch);
    note that rmse is therefore the mean of per-image RMSEs.
    Images with no valid pixel are skipped. State: 8 error sums + image count + the image
    count of RMSE (float64), which differs only with absolute_min_depth: RMSE's own floor
    (None: min_depth; _per_image_depth_errors), so an image whose every pixel lies at or
    below min_depth (an all-ground ISPRS patch) counts in RMSE alone.
    """

    def __init__(self, min_depth=1e-3, max_depth=80.0, device=None, absolute_min_depth=None):
        """Empty meter for valid range (min_depth, max_depth) in metres."""
        if not 0 < min_depth < max_depth:
            raise ValueError(f"need 0 < min_depth < max_depth, got {min_depth}, {max_depth}")
        if absolute_min_depth is not None and not 0 <= absolute_min_depth <= min_depth:
            raise ValueError(f"need 0 <= absolute_min_depth <= min_depth, got {absolute_min_depth}, {min_depth}")
        self.min_depth = float(min_depth)
        self.max_depth = float(max_depth)
        self.absolute_min_depth = None if absolute_min_depth is None else float(absolute_min_depth)
        self.device = None if device is None else torch.device(device)
        self.sums = None
        self.reset()

    def reset(self):
        """Clear the accumulated sums."""
        device = self.device if self.device is not None else (self.sums.device if self.sums is not None else "cpu")
        # [error sums..., image count, RMSE's image count]
        self.sums = torch.zeros(len(DEPTH_KEYS) + 2, dtype=torch.float64, device=device)
        self._placed = self.device is not None

    def update(self, pred, gt):
        """Add a batch: pred/gt BxHxW (or Bx1xHxW) in metres, one error set per image."""
        if not self._placed:
            self.sums = self.sums.to(gt.device)
            self._placed = True
        # detach: a meter must never keep an autograd graph alive across updates.
        pred, gt = _flatten_depth(pred.detach().to(self.sums.device), gt.detach().to(self.sums.device),
                                  batched=True)
        errors, count, rmse_count = _per_image_depth_errors(pred, gt, self.min_depth, self.max_depth,
                                                            self.absolute_min_depth)
        has = (count > 0).unsqueeze(1).repeat(1, len(DEPTH_KEYS))
        has[:, _RMSE] = rmse_count > 0
        self.sums[:-2] += torch.where(has, errors, torch.zeros_like(errors)).sum(0)
        self.sums[-2] += (count > 0).sum()
        self.sums[-1] += (rmse_count > 0).sum()
        return self

    @property
    def count(self):
        """Number of images accumulated (with at least one valid pixel)."""
        return int(self.sums[-2])

    def reduce_from_all_processes(self):
        """Sum error sums and image counts over DDP processes (no-op otherwise); call once."""
        _all_reduce_(self.sums)
        return self

    def compute(self):
        """Mean over images of each DEPTH_KEYS error (NaN when no image was counted)."""
        sums = self.sums.cpu().tolist()
        counts = [sums[-1] if k == "rmse" else sums[-2] for k in DEPTH_KEYS]
        return {k: v / n if n else float("nan") for k, v, n in zip(DEPTH_KEYS, sums[:-2], counts)}


# --------------------------------------------------------------------------------- normals

NORMAL_KEYS = ("mean", "median", "rmse_deg", "pct_11_25", "pct_22_5", "pct_30")
_NORMAL_THRESHOLDS = (11.25, 22.5, 30.0)


def _normal_angles_deg(pred, gt, eps=1e-8):
    """Angles (degrees, float64, 1-D) between pred and gt normals at pixels where gt norm > 0.

    ``pred``/``gt``: Bx3xHxW or 3xHxW; both are normalised (pred is a raw network output).
    """
    if pred.shape != gt.shape:
        raise ValueError(f"normal pred shape {tuple(pred.shape)} != gt shape {tuple(gt.shape)}")
    if pred.dim() == 3:
        pred, gt = pred.unsqueeze(0), gt.unsqueeze(0)
    if pred.dim() != 4 or pred.shape[1] != 3:
        raise ValueError(f"normals must be Bx3xHxW or 3xHxW, got {tuple(pred.shape)}")
    pred = pred.double()
    gt = gt.double()
    gt_norm = torch.linalg.vector_norm(gt, dim=1)
    valid = gt_norm > 0
    pred_unit = pred / torch.linalg.vector_norm(pred, dim=1, keepdim=True).clamp_min(eps)
    cos = (pred_unit * gt).sum(1) / gt_norm.clamp_min(eps)
    # Rounding can push |cos| slightly above 1, where acos is NaN.
    return torch.rad2deg(torch.acos(cos[valid].clamp(-1.0, 1.0)))


def normal_errors(pred, gt):
    """Angular normal errors over valid pixels (HeadFreeze Sec. 4.1, UM-Adapt Table 2), pooled.

    Returns NORMAL_KEYS: mean, median (numpy convention: average of the two middle values
    for an even count), rmse_deg and the % of pixels with error < 11.25, < 22.5, < 30 degrees.
    Valid pixels: gt norm > 0. All NaN when none is valid.
    """
    angles = _normal_angles_deg(pred, gt)
    n = angles.numel()
    if n == 0:
        return {k: float("nan") for k in NORMAL_KEYS}
    ordered = angles.sort().values
    median = 0.5 * (ordered[(n - 1) // 2] + ordered[n // 2])
    return {
        "mean": float(angles.mean()),
        "median": float(median),
        "rmse_deg": float(angles.square().mean().sqrt()),
        **{key: float((angles < t).double().mean() * 100.0)
           for key, t in zip(NORMAL_KEYS[3:], _NORMAL_THRESHOLDS)},
    }


class NormalMeter:
    """Normal-error meter pooled over all valid pixels of the set (HeadFreeze Sec. 4.1).

    Keeps sum, sum of squares, count and exact threshold counts (float64), plus a histogram
    of angles with ``bin_deg`` wide bins over [0, 180] (int64). Everything is a sum, so the
    DDP reduction is exact; the median is read from the histogram, at the centre of the
    bin(s) holding the middle rank(s), hence within bin_deg / 2 of the exact median.
    """

    def __init__(self, bin_deg=0.01, device=None):
        """Empty meter; ``bin_deg`` must divide 180 into whole bins."""
        num_bins = round(180.0 / bin_deg)
        if num_bins < 1 or abs(num_bins * bin_deg - 180.0) > 1e-9:
            raise ValueError(f"bin_deg must divide 180 evenly, got {bin_deg}")
        self.bin_deg = float(bin_deg)
        self.num_bins = num_bins
        self.device = None if device is None else torch.device(device)
        self.stats = None
        self.hist = None
        self.reset()

    def reset(self):
        """Clear the accumulated statistics."""
        device = self.device if self.device is not None else (self.stats.device if self.stats is not None else "cpu")
        # stats = [sum, sum of squares, count, n < 11.25, n < 22.5, n < 30]
        self.stats = torch.zeros(3 + len(_NORMAL_THRESHOLDS), dtype=torch.float64, device=device)
        self.hist = torch.zeros(self.num_bins, dtype=torch.int64, device=device)
        self._placed = self.device is not None

    def update(self, pred, gt):
        """Add a batch of normals (Bx3xHxW or 3xHxW; pixels with gt norm 0 are skipped)."""
        if not self._placed:
            self.stats = self.stats.to(gt.device)
            self.hist = self.hist.to(gt.device)
            self._placed = True
        angles = _normal_angles_deg(pred.detach().to(self.stats.device), gt.detach().to(self.stats.device))
        self.stats += torch.stack([
            angles.sum(), angles.square().sum(), angles.new_tensor(angles.numel()),
            *[(angles < t).sum().double() for t in _NORMAL_THRESHOLDS],
        ])
        # 180 deg exactly would fall one past the end: clamp it into the last bin.
        bins = (angles / self.bin_deg).floor().long().clamp_(0, self.num_bins - 1)
        self.hist += torch.bincount(bins, minlength=self.num_bins)
        return self

    @property
    def count(self):
        """Number of valid pixels accumulated."""
        return int(self.stats[2])

    def reduce_from_all_processes(self):
        """Sum statistics and histogram over DDP processes (no-op otherwise); call once."""
        _all_reduce_(self.stats)
        _all_reduce_(self.hist)
        return self

    def _histogram_quantile_rank(self, cumulative, rank):
        """Centre (degrees) of the bin that holds the element of 0-based ``rank`` in sorted order."""
        index = int(torch.searchsorted(cumulative, torch.tensor([rank + 1], dtype=cumulative.dtype)))
        return (index + 0.5) * self.bin_deg

    def compute(self):
        """Return NORMAL_KEYS over all accumulated pixels (NaN when none)."""
        stats = self.stats.cpu()
        n = int(stats[2])
        if n == 0:
            return {k: float("nan") for k in NORMAL_KEYS}
        cumulative = torch.cumsum(self.hist.cpu(), 0)
        # Same convention as normal_errors: average of the two middle ranks for even n.
        median = 0.5 * (self._histogram_quantile_rank(cumulative, (n - 1) // 2)
                        + self._histogram_quantile_rank(cumulative, n // 2))
        return {
            "mean": float(stats[0] / n),
            "median": median,
            "rmse_deg": math.sqrt(float(stats[1]) / n),
            **{key: float(stats[3 + i]) / n * 100.0 for i, key in enumerate(NORMAL_KEYS[3:])},
        }


# ------------------------------------------------------------------- multi-task and transfer

def delta_m(multi, single, lower_is_better):
    """Multi-task gain Delta-M in percent, SemiMTL eq. 10: mean_t (-1)^{l_t} (M_m,t - M_b,t) / M_b,t * 100.

    ``multi`` and ``single`` map metric names to values (multi-task model m, single-task
    baseline b); ``lower_is_better`` is either a dict name -> bool or a collection of the
    names for which lower is better (l_t = 1). Positive = the multi-task model is better.
    """
    if set(multi) != set(single):
        raise ValueError(f"metric names differ: multi {sorted(multi)} vs single {sorted(single)}")
    if not multi:
        raise ValueError("delta_m needs at least one metric")
    if isinstance(lower_is_better, dict):
        if set(lower_is_better) != set(multi):
            raise ValueError(f"lower_is_better keys {sorted(lower_is_better)} != metric names {sorted(multi)}")
        lower = {k for k, v in lower_is_better.items() if v}
    else:
        if isinstance(lower_is_better, str):
            lower_is_better = [lower_is_better]  # a bare name, not its characters
        lower = set(lower_is_better)
        unknown = lower - set(multi)
        if unknown:
            raise ValueError(f"lower_is_better names {sorted(unknown)} are not metrics")
    total = 0.0
    for name in multi:
        base = float(single[name])
        if base == 0.0:
            raise ValueError(f"baseline value of {name!r} is 0: relative gain undefined")
        sign = -1.0 if name in lower else 1.0
        total += sign * (float(multi[name]) - base) / base
    return total / len(multi) * 100.0


def per_image_miou(pred, target, num_classes, ignore_index=255):
    """Per-image mIoU in percent, for DADA Sec. 4.2's negative transfer rate; returns a list.

    ``pred``/``target`` BxHxW (B images) or HxW (one image). Each image's mIoU is the
    nanmean of IoU over classes present in that image's ground truth or prediction (the
    same rule as ConfusionMatrix); an image without any valid pixel gets NaN.
    """
    if pred.dim() == 2:
        pred, target = pred.unsqueeze(0), target.unsqueeze(0)
    if pred.dim() != 3:
        raise ValueError(f"expected BxHxW or HxW class maps, got {tuple(pred.shape)}")
    mats = _confusion(pred, target, num_classes, ignore_index, batch=pred.shape[0]).cpu()
    iou = _iou_from_confusion(mats) * 100.0  # (B, C)
    return [_nanmean(row) for row in iou]


def negative_transfer_rate(adapted_scores, source_scores):
    """Negative transfer rate (%), DADA Sec. 4.2 after SPIGAN [18]: share of images whose adapted score < source-only score.

    Both arguments are per-image scores (e.g. from ``per_image_miou``) in the same image
    order. "Lower" is strict (a tie is not negative transfer). Images whose score is NaN
    in either run (no valid pixel) are left out of numerator and denominator.
    """
    adapted = [float(a) for a in adapted_scores]
    source = [float(s) for s in source_scores]
    if len(adapted) != len(source):
        raise ValueError(f"score lists differ in length: {len(adapted)} adapted vs {len(source)} source")
    pairs = [(a, s) for a, s in zip(adapted, source) if not (math.isnan(a) or math.isnan(s))]
    if not pairs:
        raise ValueError("no image with a defined score in both runs")
    return sum(a < s for a, s in pairs) / len(pairs) * 100.0
