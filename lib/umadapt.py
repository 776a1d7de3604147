"""Training helpers of train_umadapt.py (UM-Adapt, Kundu et al., ICCV 2019): labels at the
decoders' size, median-frequency class weights, the task losses and cross-task energies, the
maps the task-transfer networks and UM-Adapt-B's critic read (ground truth with pseudo-softmax
semantics, predictions behind a random gradient mask: the supplementary's "Other
Implementation Details"), and one optimizer update. The stages' own losses and update orders
stay in the script."""
import copy
import json
import math
import os

import torch
import torch.nn.functional as F

from lib import engine, losses
from lib.data import build_dataset, data_options, get_entry
from lib.data.base import DataError
from lib.evaluation import Scorer, evaluate_model, scoring_loader
from lib.models import build_model, freeze_bn, model_spec
from lib.models.umadapt import TASK_ORDER, TaskTransferNet, encode_map

PSEUDO_STD = 0.075      # Supp.: the true class drawn from a truncated Normal, mean 1, std 0.075
MASK_KEEP = 0.5         # ours: in a masked sample, the share of pixels whose gradient passes


def output_size(size):
    """The decoders' size: 16x the res5 grid of the stride-32 ResNet (Sec. 4.1: 228x304 -> 128x160)."""
    return tuple(16 * math.ceil(s / 32) for s in size)


def labels_at(batch, tasks=TASK_ORDER):
    """The batch's labels of `tasks` and its contour map ("edges") at the decoders' size:
    nearest for labels (no mixing across invalid pixels or class borders), area average for
    contour maps (thin contours stay visible)."""
    size, out = output_size(batch["image"].shape[-2:]), {}
    for t in (t for t in tasks if t in batch):
        y = batch[t] if t == "normals" else batch[t][:, None].float()
        y = F.interpolate(y, size=size, mode="nearest")
        out[t] = y if t == "normals" else y[:, 0].to(batch[t].dtype)
    if "edges" in batch:
        out["edges"] = F.adaptive_avg_pool2d(batch["edges"][:, None], size)[:, 0]
    return out


# ----------------------------------------------------------------------------- class weights
def median_frequency_weights(pixels, image_pixels):
    """Median frequency balancing (Eigen & Fergus 2015): w_c = median(f) / f_c with f_c =
    pixels_c / pixels of the images holding c, over the classes seen; unseen classes get 0."""
    seen = pixels > 0
    freq = torch.where(seen, pixels / image_pixels.clamp_min(1), torch.zeros_like(pixels))
    median = freq[seen].median() if seen.any() else torch.tensor(1.0, dtype=freq.dtype)
    return torch.where(seen, median / freq.clamp_min(1e-12), torch.zeros_like(freq)).float()


def class_weights(path, data, num_classes, images):
    """Sec. 4.1's "weighing scheme ... depending on their coverage" as median frequency weights
    over the first `images` samples of `data`, cached in `path` (a later stage reads them)."""
    if os.path.isfile(path):
        with open(path) as f:
            saved = json.load(f)
        if not isinstance(saved, list) or len(saved) != num_classes:
            raise engine.UserError(f"{path} holds weights for another class count than this run's "
                                   f"{num_classes}: use a fresh --output-dir (or delete the file)")
        return torch.tensor(saved)
    pixels, image_pixels = (torch.zeros(num_classes, dtype=torch.float64) for _ in range(2))
    for i in range(min(len(data), images)):
        y = data[i]["semantic"]
        counts = torch.bincount(y[y != 255], minlength=num_classes).double()
        pixels += counts
        image_pixels += (counts > 0).double() * counts.sum()
    weights = median_frequency_weights(pixels, image_pixels)
    if engine.is_main():
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        engine.write_json(weights.tolist(), path)
    return weights


# ----------------------------------------------------------------------------- losses
def task_loss(task, pred, target, weight=None):
    """L_t (Sec. 4.1): class-weighted CE, berHu, 1 - cos (Eigen's inverse dot product up to a
    constant). A predicted semantic map (logits) as target gives the soft CE
    -sum softmax(target) log softmax(pred), differentiable in both: the energy of a predicted
    tuple (Algorithm 2, L_G / L_D)."""
    if task == "semantic" and target.is_floating_point():
        return -(target.softmax(1) * pred.log_softmax(1)).sum(1).mean()
    return losses.supervised_loss(task, pred, target, weight)


def energy(nets, task, maps, target, weight=None):
    """L_t(N(->t)(O), Y): the cross-task discrepancy, distillation loss (Algorithm 1) and energy
    of a tuple (Sec. 3.3.2). maps: {task: encoded map} (true_maps / predicted_maps)."""
    return task_loss(task, nets[task](maps), target, weight)


def energy_floor(task, target):
    """The least energy any N(->task) can reach on a tuple whose target is `target`: for a
    predicted semantic map (logits) the soft CE's floor, the prediction's own mean entropy
    H(softmax(target)) (soft CE = H + KL); 0 for every other target (berHu, 1 - cos, CE
    against labels). Detached: N cannot move it."""
    if task == "semantic" and target.is_floating_point():
        p = target.detach().float().softmax(1)
        return -(p * p.clamp_min(1e-12).log()).sum(1).mean()
    return target.new_zeros((), dtype=torch.float32)


def margin_d_loss(e_src, e_tgt, ratio, floor=0.0):
    """L_D of Algorithm 2. ratio 0: as printed, E_src - E_tgt, unbounded below (N can push E_tgt
    to infinity). ratio > 0 (ours): EBGAN's margin (Zhao et al. 2017, eq. 1), E_src + max(0, m -
    (E_tgt - floor)) with m = ratio x E_src (a constant for the gradient), which keeps the sign
    of the update (E_src down, E_tgt up) and stops raising E_tgt once E_tgt - floor passes m. `floor`
    (energy_floor): the part of E_tgt no N can lower, so the margin compares discrepancies
    (for semantics the KL part of the soft CE) and not the target prediction's entropy."""
    if ratio == 0:
        return e_src - e_tgt
    return e_src + F.relu(ratio * e_src.detach() - (e_tgt - floor))


# ----------------------------------------------------------------------------- N's and D's inputs
def pick_share(n, share, device=None):
    """A random bool mask over n samples that holds floor(share n) of them, plus one more with
    the probability of the remainder: exactly `share` of an even batch, `share` on average."""
    k = int(share * n)
    k += int(torch.rand(()) < share * n - k)
    out = torch.zeros(n, dtype=torch.bool)
    out[torch.randperm(n)[:k]] = True
    return out.to(device)


def one_hot(labels, num_classes):
    """(B, H, W) labels -> (B, K, H, W) one-hot, all 0 at ignored (255) pixels."""
    valid = labels != 255
    x = F.one_hot(torch.where(valid, labels, torch.zeros_like(labels)), num_classes)
    return x.permute(0, 3, 1, 2).float() * valid[:, None]


def pseudo_softmax(labels, num_classes, std=PSEUDO_STD):
    """Supp. "Other Implementation Details": a random "pseudo-softmax" of one-hot labels. Per
    pixel the true class gets p ~ Normal(1, std) truncated to [0, 1]; the other classes share
    1 - p in proportion to U(0, 1) draws (ours: the paper only asks for values in [0, 1] that
    sum to one). Ignored pixels stay all 0, as in one_hot."""
    hot = one_hot(labels, num_classes)
    p = torch.nn.init.trunc_normal_(torch.empty_like(hot[:, :1]), 1.0, std, 0.0, 1.0)
    rest = torch.rand_like(hot) * (1 - hot)
    rest = rest / rest.sum(1, keepdim=True).clamp_min(1e-12) * (1 - p)
    return (hot * p + rest) * hot.sum(1, keepdim=True)


def true_maps(labels, num_classes, pseudo=0.0):
    """Ground truth as N(->t) and the critic read it (encode_map): semantics one-hot, but a
    random `pseudo` share of the batch's images as pseudo-softmax (Supp.: "50% of direct one-hot
    and 50% of such pseudo-softmax (at each batch iteration)")."""
    out = {}
    for t in (t for t in TASK_ORDER if t in labels):
        x = labels[t]
        if t == "semantic":
            x, picked = one_hot(x, num_classes), pick_share(len(x), pseudo, x.device)
            if picked.any():
                x = torch.where(picked.view(-1, 1, 1, 1), pseudo_softmax(labels[t], num_classes), x)
        out[t] = encode_map(t, x)
    return out


class _GradMask(torch.autograd.Function):
    """Identity forward; the gradient times a fixed mask backward."""

    @staticmethod
    def forward(ctx, x, mask):
        ctx.save_for_backward(mask)
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        (mask,) = ctx.saved_tensors
        return grad * mask, None


def grad_mask(x, share, keep=MASK_KEEP):
    """Supp.'s "randomly generated gradient mask layer (50% of the batch without masking)":
    identity forward; backward, a random `share` of the samples get their gradient times a
    random binary pixel mask (`keep` of the pixels pass, ours: the paper gives no rate), the
    others pass unmasked."""
    if share <= 0 or not x.requires_grad:
        return x
    masked = pick_share(len(x), share, x.device).view(-1, 1, 1, 1)
    pixels = torch.rand(len(x), 1, *x.shape[2:], device=x.device) < keep
    return _GradMask.apply(x, (pixels | ~masked).to(x.dtype))


def predicted_maps(preds, mask=0.0):
    """Predictions as N(->t) and the critic read them: semantics as softmax, each map behind the
    gradient mask (grad_mask with share `mask`), "in-between the UM-Adapt prediction and the
    corresponding Task-transfer or the discriminator network" (Supp.)."""
    return {t: grad_mask(encode_map(t, p.softmax(1) if t == "semantic" else p), mask)
            for t, p in preds.items()}


# ----------------------------------------------------------------------------- stages' plumbing
def parse_pairs(specs, allowed, flag, form, empty=False):
    """'K=V1,V2' strings -> {K: [V, ...]}, with K a key of `allowed` and every V in allowed[K];
    `empty`: 'K=' (no value) is allowed and gives K an empty list."""
    out = {}
    for spec in specs or []:
        key, sep, vals = spec.partition("=")
        vals = [v for v in vals.split(",") if v]
        if key not in allowed or not sep or (not vals and not empty) or any(v not in allowed[key] for v in vals):
            raise engine.UserError(f"{flag} {spec}: expected {form}")
        out[key] = vals
    return out


def load_models(run_dir, stage, models, what, script="train_umadapt.py"):
    """Load the final models of an earlier stage of this run (RUN/stage/model.pth), strictly."""
    path = os.path.join(run_dir, stage, "model.pth")
    if not os.path.isfile(path):
        raise engine.UserError(f"the {what} needs {path}: run --stage {stage.split('-')[0]} "
                               f"first in --output-dir {run_dir}")
    engine.restore(engine.load_checkpoint(path, script, "--output-dir"), models=models)


def freeze(module):
    """No gradient and eval mode for good (BatchNorm statistics included): a frozen network."""
    module.requires_grad_(False)
    return freeze_bn(module.eval())


def named(nets):
    """{task: N(->task)} -> their checkpoint names {"n_task": N(->task)}."""
    return {f"n_{t}": n for t, n in nets.items()}


def adam(params, lr, betas=(0.9, 0.999)):
    """Adam (Sec. 4.1) over the parameters that train."""
    return torch.optim.Adam([p for p in params if p.requires_grad], lr=lr, betas=betas)


def transfer_nets(args, stage=None, what=""):
    """N(->t) of every --transfer pair (Supp. Table 2), loaded from `stage` when given."""
    nets = {t: TaskTransferNet(t, inputs, args.num_classes, args.transfer_width)
            for t, inputs in args.transfer_nets.items()}
    if nets and stage:
        load_models(args.run_dir, stage, named(nets), what)
    return nets


def net_spec(args):
    """The base model's spec (lib.models.build_model), stored with every checkpoint of it."""
    return model_spec("umadapt", backbone=args.backbone, pretrained=args.pretrained, tasks=args.tasks,
                      num_classes=args.num_classes, decoder_width=args.decoder_width)


def base_net(args, what):
    """The base model Ms + decoders as the base stage left it."""
    net = build_model(net_spec(args))
    load_models(args.run_dir, "base", {"model": net}, what)
    return net


def stage_args(args, stage, folder):
    """The args of one stage: its folder RUN/folder and iterations (--iters overrides --STAGE-iters)."""
    a = copy.copy(args)
    a.output_dir, a.current_stage = os.path.join(args.run_dir, folder), stage
    a.iters = args.iters if "iters" in args.explicit else getattr(args, f"{stage}_iters")
    return a


def finished(a):
    """The metrics of a stage that has finished in a.output_dir (--stage all skips it), else None."""
    done = os.path.join(a.output_dir, "metrics.json")
    if not os.path.isfile(done):
        return None
    print(f"stage {a.current_stage}: finished in {a.output_dir}, skipped", flush=True)
    with open(done) as f:
        return json.load(f)


def source_class_weights(a):
    """The semantic CE's class weights (class_weights over the source's train split), or None."""
    if "semantic" not in a.tasks or a.class_weighting != "median":
        return None
    src = build_dataset(a.src, "train", a.size, a.data_root, a.seed, a.proc_length, labels=["semantic"],
                        role="--src", **data_options(a, "src"))
    return class_weights(os.path.join(a.run_dir, "class_weights.json"), src, a.num_classes,
                         a.class_weight_images).to(a.device)


def finish_stage(a, s, logger, script):
    """Score a stage (s["evaluate"]), then write model.pth (after scoring, so that its args record
    how it scored), the log's last line and metrics.json."""
    stage = a.current_stage
    metrics = {"stage": stage, "variant": a.variant if stage == "adapt" else None, "iteration": a.iters,
               **s["evaluate"]()}
    specs = {"model": s["spec"]} if "spec" in s else {}
    engine.save_checkpoint(os.path.join(a.output_dir, "model.pth"), script=script, iteration=a.iters, args=a,
                           models=s["models"], model_specs=specs, extra={"inference_model": "model"} if specs else {})
    logger.write({"iter": a.iters, **metrics})
    if engine.is_main():
        engine.write_json(metrics, os.path.join(a.output_dir, "metrics.json"))
        print(f"stage {stage} ({os.path.basename(a.output_dir)}): " + summary(metrics), flush=True)
    return metrics


# ----------------------------------------------------------------------------- one update
def update(amp, optimizers, loss, modules=()):
    """One step of `loss`: zero the optimizers' gradients, backward (scaled under fp16), average
    the gradients of `modules` (kept out of DDP) over processes, step, then give every process
    rank 0's BatchNorm statistics of `modules`, as DDP does for the models it wraps."""
    optimizers = optimizers if isinstance(optimizers, (list, tuple)) else [optimizers]
    for opt in optimizers:
        opt.zero_grad(set_to_none=True)
    amp.backward(loss)
    engine.average_grads(modules)
    amp.step(optimizers)
    engine.broadcast_modules(modules, params=False)


def detached(terms):
    """The step's loss terms for the log: detached, so no graph outlives the step."""
    return {k: v.detach() for k, v in terms.items()}


# ----------------------------------------------------------------------------- scores
def options(args, name, role):
    """build_dataset options of one dataset: with two targets both come from --data-root, and
    --classes is the class map of those with semantic labels (KITTI has none)."""
    opts = data_options(args, role)
    if role != "src" and len(args.targets) > 1:
        opts["root"] = None
    if "semantic" not in get_entry(name).labels:
        opts["classes"] = None
    return opts


def scored_tasks(name, args):
    """The tasks of a target whose val labels this download has (evaluate.py's rule): one whose
    files are missing (Cityscapes without disparity/) is not scored, with a note."""
    def has(task):
        try:
            build_dataset(name, "val", args.size, args.data_root, length=args.proc_length, labels=[task],
                          role="--tgt", **options(args, name, "tgt"))
            return True
        except DataError as why:
            if engine.is_main():
                print(f"note: no {task} labels for {name} val here, {task} not scored: {str(why).splitlines()[0]}")
            return False
    return [t for t in args.tasks if t in get_entry(name).labels and has(t)]


def val_data(name, role, labels, args):
    """The val loader of one dataset of the run, its protocol recorded for evaluate.py."""
    return scoring_loader(name, labels, args, f"--{role}", max(args.batch_size, 4), **options(args, name, role))


def score_model(net, args, amp, source):
    """Tables 1-5's metrics (lib.metrics via lib.evaluation) on each target's val split for the
    tasks it has labels of (scored_tasks), and on the source's for the base model."""
    def score(name, role, tasks):
        return evaluate_model(net, val_data(name, role, tasks, args), args.device, tasks, args.num_classes,
                              max_depth=args.max_depth, amp=amp)
    out = {"source": score(args.src, "src", args.tasks)} if source else {}
    out["target"] = {n: score(n, "tgt", args.scored[n]) for n in args.targets if args.scored[n]}
    return out


@torch.no_grad()
def score_transfer(nets, args, amp):
    """Each N(->t) on source val ground truth (one-hot): how well task t is recovered from the others.
    In eval mode: BatchNorm with its running statistics, which scoring leaves untouched."""
    for n in nets.values():
        n.eval()
    scorer = Scorer(list(nets), args.num_classes, max_depth=args.max_depth, device=args.device)
    for batch in val_data(args.src, "src", args.tasks, args):
        batch = engine.to_device(batch, args.device)
        maps = true_maps(labels_at(batch, args.tasks), args.num_classes)
        with amp.autocast():
            scorer.update({t: n(maps).float() for t, n in nets.items()}, batch)
    return scorer.compute()


DIAG_BATCHES = 10      # ours: the energies' diagnostic reads at most 10 val batches per dataset


@torch.no_grad()
def score_energies(net, nets, args, amp):
    """Algorithm 2's energies after a stage (ours, the benchmark's diagnostic), Mt and every
    N(->t) in eval mode: on source val the ground-truth tuples' (E_src, class-weighted as in
    L_D), on each target's val the predicted tuples' (E_tgt) and their floor (energy_floor),
    mean over batches; no target label is read. On rank 0 alone (the other ranks return {})."""
    if not engine.is_main():
        return {}
    net.eval()
    for n in nets.values():
        n.eval()
    sums = {}

    def add(key, value):
        sums[key] = sums.get(key, 0.0) + float(value)
    for key, name, role in [("source", args.src, "src")] + [(n, n, "tgt") for n in args.targets]:
        labels = list(args.tasks) if role == "src" else []
        data = build_dataset(name, "val", args.size, args.data_root, length=args.proc_length, labels=labels,
                             role=f"--{role}", **options(args, name, role))
        for batch in engine.first_batches(data, max(args.batch_size, 4), args, args.eval_batches or DIAG_BATCHES):
            batch = engine.to_device(batch, args.device)
            with amp.autocast():
                if role == "src":
                    y = labels_at(batch, args.tasks)
                    maps = true_maps(y, args.num_classes)
                    for t in nets:
                        add(f"{key}/e_{t}", energy(nets, t, maps, y[t], getattr(args, "cw", None)))
                else:
                    preds = {k: v.float() for k, v in net.decode(net.features(batch["image"])).items()}
                    maps = predicted_maps(preds)
                    for t in nets:
                        add(f"{key}/e_{t}", energy(nets, t, maps, preds[t]))
                        add(f"{key}/floor_{t}", energy_floor(t, preds[t]))
            add(f"{key}/batches", 1)
    out = {}
    for k, v in sums.items():
        split, term = k.split("/")
        if term != "batches":
            out.setdefault(split, {})[term] = v / sums[f"{split}/batches"]
    return out


@torch.no_grad()
def score_contour(enc, contour, args):
    """L_CCR (MSE) of the frozen Ms + C_contour on source and target val contour maps."""
    out = {}
    for key, name, role in [("source", args.src, "src")] + [(n, n, "tgt") for n in args.targets]:
        total, count = 0.0, 0
        for batch in val_data(name, role, ["edges"], args):
            batch = engine.to_device(batch, args.device)
            edges = labels_at(batch, ())["edges"]
            total += float(losses.masked_l2(contour(enc(batch["image"])["layer4"]), edges)) * len(edges)
            count += len(edges)
        # each rank scored its shard: the ratio of the means over ranks is that of the sums
        sums = engine.all_reduce_mean({"total": total, "count": count})
        out[key if key == "source" else f"target_{name}"] = {"ccr_mse": sums["total"] / max(sums["count"], 1e-12)}
    return out


def summary(metrics):
    """One line of the headline numbers of each scored split."""
    keys = ("mIoU", "abs_rel", "rmse", "a1", "mean", "pct_11_25", "ccr_mse")
    splits = [("source", metrics.get("source"))] + list((metrics.get("target") or {}).items()) \
        + [(k, v) for k, v in metrics.items() if k.startswith("target_")]
    return "; ".join(f"{name}: " + " ".join(f"{k}={m[k]:.3f}" for k in keys if isinstance(m.get(k), float))
                     for name, m in splits if isinstance(m, dict))


# S's labels per target: NYUv2 "the ground-truth maps of all the 3 tasks" (Sec. 4.1); outdoors
# "only depth-map ground-truth for KITTI and only segmentation map ground-truth for Cityscapes" (Supp.)
S_LABELS = {"nyuv2": "semantic,depth,normals", "kitti_depth": "depth", "cityscapes": "semantic"}


def s_labels(args):
    """The --target-labels preset: S_LABELS of each --tgt within --tasks (a subset reads its own).
    A target of S_LABELS left with none ('cityscapes=' under --tasks depth) gets an empty set, so
    S refuses it rather than reading labels the supplementary says it has not (Cityscapes depth)."""
    names = [n for n in str(args.tgt).split(",") if n in S_LABELS]
    kept = {n: [t for t in S_LABELS[n].split(",") if t in args.tasks] for n in names}
    return [f"{n}={','.join(ts)}" for n, ts in kept.items()]
