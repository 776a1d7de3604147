"""Scoring a model, or saved predictions, on a labelled split: shared by evaluate.py and
every training script, so all numbers in this repository come from one code path."""
import contextlib
import contextvars
import time

import torch
import torch.nn.functional as F

from lib import engine
from lib.engine import UserError, is_main, unwrap
from lib.metrics import ConfusionMatrix, DepthMeter, NormalMeter

TASKS = ("semantic", "depth", "normals")

# The label size of the batch being scored, for a model whose protocol upsamples its logits
# straight to it (DADA: lib/models/dada.py). Every other model ignores it (Scorer resizes).
_LABEL_SIZE = contextvars.ContextVar("label_size", default=None)


@contextlib.contextmanager
def scoring_at(size):
    """Within: label_size() is `size` (H, W), or None. evaluate_model sets it per batch."""
    token = _LABEL_SIZE.set(None if size is None else tuple(int(s) for s in size))
    try:
        yield
    finally:
        _LABEL_SIZE.reset(token)


def label_size():
    """The semantic label size of the batch evaluate_model is scoring, else None: DADA's
    official test upsamples the logits once, straight to it (ADVENT eval_UDA.py)."""
    return _LABEL_SIZE.get()


class Scorer:
    """Accumulates semantic / depth / normal metrics over batches (DDP-reducible)."""

    def __init__(self, tasks, num_classes=None, min_depth=1e-3, max_depth=80.0, device="cpu",
                 depth_focal=None, void_pred=False, absolute_min_depth=None):
        self.tasks = tuple(tasks)
        # The depth convention of the model scored (stored with it): None = metres; F = depth
        # as a camera of focal F pixels would see it, converted with each sample's own focal.
        self.depth_focal = depth_focal
        self.meters = {}
        if "semantic" in self.tasks:
            # void_pred: a prediction of 255 ("no class", e.g. a void Cityscapes labelId) is
            # allowed and counts as a false negative of the true class (cityscapesScripts).
            meter = VoidAwareConfusion if void_pred else ConfusionMatrix
            self.meters["semantic"] = meter(num_classes, device=device)
        if "depth" in self.tasks:
            # absolute_min_depth: RMSE's own floor (SemiMTL's ISPRS heights count the ground)
            self.meters["depth"] = DepthMeter(min_depth, max_depth, absolute_min_depth=absolute_min_depth)
        if "normals" in self.tasks:
            self.meters["normals"] = NormalMeter()

    def update(self, preds, batch):
        """preds: the model's output dict (any resolution); batch: the sample dict."""
        for task, meter in self.meters.items():
            if task not in preds or task not in batch:
                continue
            target = batch[task]
            pred = resize_prediction(task, preds[task], target.shape[-2:])
            if task == "depth":
                pred, target = self.to_metres(pred, target, batch)
            if task == "semantic":
                pred = pred.argmax(1) if pred.dim() == target.dim() + 1 else pred
            meter.update(pred, target)

    def to_metres(self, pred, target, batch):
        """Prediction and label in metres, each under its own convention: the label at the
        dataset's --focal-ref (batch["depth_scale"]), the prediction at the model's focal."""
        if "depth_scale" in batch:
            scale = torch.as_tensor(batch["depth_scale"], dtype=target.dtype, device=target.device)
            target = target * scale.view(-1, 1, 1)
        if self.depth_focal:
            if "focal" not in batch:
                raise UserError(f"the model predicts depth at a focal length of {self.depth_focal:g} px "
                                "but this dataset has no known focal length to convert it to metres")
            focal = torch.as_tensor(batch["focal"], dtype=pred.dtype, device=pred.device)
            pred = pred * focal.view(-1, 1, 1) / self.depth_focal
        return pred, target

    def compute(self):
        """Reduce over processes and return one flat dict (the keys of metrics.json)."""
        out = {}
        for meter in self.meters.values():
            meter.reduce_from_all_processes()
            out.update(meter.compute())
        return out


class VoidAwareConfusion(ConfusionMatrix):
    """Confusion matrix whose predictions may be void (255): one extra column holds them, so
    a labelled pixel predicted void is a false negative of its class and nobody's false
    positive, as cityscapesScripts' evalPixelLevelSemanticLabeling counts a void labelId."""

    def __init__(self, num_classes, ignore_index=255, device=None):
        super().__init__(num_classes + 1, ignore_index, device)
        self.void = num_classes

    def update(self, pred, target):
        """Accumulate like ConfusionMatrix, void predictions (ignore_index) in the extra column."""
        for what, x in (("target", target), ("prediction", pred)):
            if bool((x == self.void).any()):   # the extra column is for void predictions only
                raise ValueError(f"{what} values [{self.void}] are outside [0, {self.void}) "
                                 f"and are not ignore_index={self.ignore_index}")
        pred = torch.where(pred == self.ignore_index, torch.full_like(pred, self.void), pred)
        return super().update(pred, target)

    def compute(self):
        """ConfusionMatrix.compute over the real classes (the void column only adds misses)."""
        out = super().compute()
        per_class = out["per_class"][:-1]
        defined = [v for v in per_class if v is not None]
        out["per_class"] = per_class
        out["mIoU"] = sum(defined) / len(defined) if defined else float("nan")
        return out


def depth_focal_of(model):
    """The focal length (px) a model's depth refers to, None for metres (lib/models/encdec.py)."""
    return getattr(unwrap(model), "depth_focal", None)


def resize_prediction(task, pred, size):
    """Bring a prediction to the label's HxW: bilinear for scores, depth and normals."""
    if tuple(pred.shape[-2:]) == tuple(size):
        return pred
    if task == "semantic" and not pred.is_floating_point():
        return F.interpolate(pred[:, None].float(), size=size, mode="nearest")[:, 0].long()
    if task == "depth":
        return F.interpolate(pred[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]
    out = F.interpolate(pred, size=size, mode="bilinear", align_corners=False)
    return F.normalize(out, dim=1) if task == "normals" else out


def scoring_loader(name, labels, args, role, batch_size, split="val", size=None, capped=True, **options):
    """An evaluation loader of one dataset split, its protocol recorded in args.scoring (size,
    resize, class map, label resolution, root, batch, cap, KITTI protocol), which every later
    checkpoint stores, so that `evaluate.py --checkpoint` re-scores a run as the run scored itself.

    options: build_dataset's (root, classes, resize, focal_ref, native_labels, kitti_protocol,
    ...). Labels kept at their own resolution (native_labels, DADA's protocol; always under
    KITTI's eigen protocol) can differ in size from image to image (Mapillary Vistas, KITTI raw):
    such a split is scored one image at a time, as the official test."""
    from lib.data import build_dataset   # late: lib.data imports the engine
    size = list(size or args.size)
    data = build_dataset(name, split, size, args.data_root, length=args.proc_length,
                         labels=labels, role=role, **options)
    native = bool(getattr(data, "native_labels", False))   # the dataset's own say (KITTI eigen)
    batch_size = 1 if native else batch_size
    cap = args.eval_batches if capped else None
    record = {"dataset": name, "role": role, "split": split, "size": size, "batch_size": batch_size,
              "max_batches": cap, "native_labels": native, "proc_length": args.proc_length,
              **{k: options.get(k) for k in SCORING_OPTIONS},
              "kitti_protocol": getattr(data, "kitti_protocol", None), "carla_focal": options.get("carla_focal")}
    record = {k: list(v) if isinstance(v, tuple) else v for k, v in record.items()}
    kept = [r for r in getattr(args, "scoring", None) or [] if (r["dataset"], r["role"]) != (name, role)]
    args.scoring = kept + [record]
    return engine.eval_loader(data, batch_size, args, cap)


# The build_dataset options of a scoring protocol that evaluate.py re-applies (scoring_loader;
# kitti_protocol too, recorded as the dataset applied it, and carla_focal). image_resample:
# how --resize resampled the image (train_dada.py's paper preset: the official PIL bicubic).
SCORING_OPTIONS = ("root", "classes", "resize", "focal_ref", "image_resample")


def depth_protocol(dataset, min_depth, max_depth):
    """How depth is scored on `dataset`, in words (metrics.json's `depth_protocol` and the
    console): the dataset's own protocol where it has one (KITTI: annotated | eigen), the label
    resolution (resized with the image, or kept at its own: native labels) and the valid range,
    e.g. 'eigen (raw velodyne LiDAR projected to the image, Garg crop), labels at their own
    resolution, 0.001 < depth < 80 m'. None for the procedural benchmark (one protocol: labels
    rendered at the scoring size)."""
    if not hasattr(dataset, "native_labels"):   # not a file dataset (lib.data.base.FileDataset)
        return None
    resize = getattr(dataset, "resize", None)
    parts = [getattr(dataset, "depth_protocol", None),
             f"labels resized to {resize[0]}x{resize[1]}" if resize and not dataset.native_labels
             else "labels at their own resolution", f"{min_depth:g} < depth < {max_depth:g} m"]
    return ", ".join(p for p in parts if p)


class Progress:
    """`[eval k/n] elapsed` on rank 0 every `every` batches (default: about ten lines) and at
    the end, so a long evaluation is not silent."""

    def __init__(self, total, every=None):
        self.total, self.every = total, every or max(1, total // 10)
        self.start = time.time()

    def __call__(self, k):
        if is_main() and (k % self.every == 0 or k == self.total):
            print(f"[eval {k}/{self.total}] {time.time() - self.start:.1f}s", flush=True)


@torch.no_grad()
def evaluate_model(model, loader, device, tasks, num_classes=None, min_depth=1e-3,
                   max_depth=80.0, amp=None, on_batch=None, progress=True, absolute_min_depth=None):
    """Run `model` (returning the dict of lib.models) over `loader` and score `tasks`.

    on_batch(batch, preds) is called for every batch (e.g. to save predictions or panels);
    progress: print `[eval k/n]` lines (False when the caller prints its own); absolute_min_depth:
    RMSE's own floor (lib.metrics.DepthMeter; None: min_depth)."""
    # Under DDP every process scores rank 0's model (the one checkpoints hold): BatchNorm's
    # running statistics move with each rank's own batch after DDP's last broadcast of them
    # (and are never shared in modules kept out of DDP), so rank 1's would score other weights.
    engine.broadcast_modules([unwrap(model)], params=False)
    was_training = model.training
    model.eval()
    scorer = Scorer(tasks, num_classes, min_depth, max_depth, device, depth_focal_of(model),
                    absolute_min_depth=absolute_min_depth)
    dataset = getattr(loader, "dataset", None)
    protocol = depth_protocol(dataset, min_depth, max_depth) if "depth" in tasks else None
    if protocol and progress and is_main():
        print(f"[eval] {dataset.key} {dataset.split} depth protocol: {protocol}", flush=True)
    report = Progress(len(loader)) if progress else (lambda k: None)
    for k, batch in enumerate(loader, 1):
        batch = {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v
                 for k, v in batch.items()}
        size = batch["semantic"].shape[-2:] if "semantic" in tasks and "semantic" in batch else None
        with amp.autocast() if amp is not None else contextlib.nullcontext(), scoring_at(size):
            preds = model(batch["image"])
        preds = {k: v.float() for k, v in preds.items()}
        scorer.update(preds, batch)
        if on_batch is not None:
            on_batch(batch, preds)
        report(k)
    model.train(was_training)
    scores = scorer.compute()
    return {**scores, "depth_protocol": protocol} if protocol else scores


def per_class_line(per_class, names=None):
    """'road 93.1 sidewalk 68.9 ...': per-class IoU by class name ('-' where a class is absent)."""
    names = names if names is not None and len(names) == len(per_class) else range(len(per_class))
    return " ".join(f"{n} {'-' if v is None else f'{v:.1f}'}" for n, v in zip(names, per_class))
