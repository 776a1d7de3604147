"""UM-Adapt (Kundu et al., ICCV 2019): unsupervised multi-task adaptation with cross-task
distillation, contour-based content regularisation (CCR) and energy-based adaptation.

    python train_umadapt.py                                   # every stage, Adv, procedural benchmark
    python train_umadapt.py --stage adapt --variant noadv     # one more variant from the same run
    python train_umadapt.py --src folder --src-root PBRS --tgt nyuv2 --data-root DATA   # Tables 1-3
    python train_umadapt.py --src folder --src-root GTA5D --tgt cityscapes,kitti_depth \
        --data-root DATA                                      # Tables 4-5 (two target datasets)
    torchrun --nproc_per_node=4 train_umadapt.py --stage base ...

Stages share one run folder (--output-dir RUN), each in its own sub-folder:
  transfer  N(->t) on source ground-truth maps (Sec. 3.1.1)                 RUN/transfer
  base      Ms + task decoders, Algorithm 1 (alpha, one Adam per task)      RUN/base (base-bn)
  ccr       the contour decoder on the frozen Ms's res5 (Sec. 3.2)          RUN/ccr
  adapt     Mt = Ms with only res5 training, --variant (Sec. 3.3)           RUN/adapt-VARIANT
  all       the four in order (finished ones skipped with --resume auto)
Variants: b (UM-Adapt-B, joint discriminator + --content), noadv (Algorithm 2, N frozen),
noadv1 (only N(->semantic)), adv (Algorithm 2, N updated by a margin-bounded L_D), s
(semi-supervised, from RUN/adapt-adv, alternating labelled / unlabelled target batches), and
the control stats (no loss: target batches pass Mt in train mode, so only res5's BatchNorm
running statistics move).
"""
import copy
import json
import math
import os

import torch
import torch.nn.functional as F

from lib import engine, losses
from lib.args import add_common_args, apply_preset, new_parser, parse, set_presets
from lib.data import build_dataset, data_options, get_entry, require_labels, resolve_classes
from lib.evaluation import evaluate_model, scoring_loader
from lib.models import build_model, model_spec, RawOutputs
from lib.models.umadapt import (TASK_ORDER, ContourDecoder, FeatureReconstructor, JointDiscriminator,
                                TaskTransferNet, encode_maps, target_encoder)

SCRIPT = "train_umadapt.py"
STAGES = ("transfer", "base", "ccr", "adapt")
VARIANTS = ("b", "noadv", "noadv1", "adv", "s", "stats")


def indoor(args):
    """Tables 1-3 (PBRS -> NYUv2) when a target is nyuv2, else Tables 4-5 (GTA5 -> Cityscapes, KITTI)."""
    return "nyuv2" in str(args.tgt).split(",")


def _pick(a, b):
    return lambda args: a if indoor(args) else b


# flag: (paper value, its source, cpu value). Paper values that differ indoors / outdoors are
# functions of --tgt. The cpu column is this repository's small run from scratch at 64x128.
PRESETS = {
    "backbone": ("resnet50", "Sec. 3.1.2: ResNet-50 encoder", "resnet18"),
    "pretrained": ("imagenet", "Sec. 4.1: Laina et al.'s FCRN starts from ImageNet", "none"),
    "tasks": (_pick(["semantic", "depth", "normals"], ["semantic", "depth"]),
              "Sec. 4: three tasks indoors, two outdoors", ["semantic", "depth", "normals"]),
    "transfer": (_pick(["semantic=depth,normals", "depth=semantic"], ["semantic=depth", "depth=semantic"]),
                 "Sec. 4.1 'Training details'", ["semantic=depth,normals", "depth=semantic"]),
    "classes": (_pick(40, 19), "Table 3: NYUv2 40 classes; Table 5: Cityscapes 19", None),
    "resize": (_pick((240, 320), (256, 512)), "Sec. 4.1 / Laina et al.: NYU at 240x320, outdoor 256x512", None),
    "size": (_pick((228, 304), (256, 512)), "Sec. 4.1: inputs 228x304 / 256x512", (64, 128)),
    "flip": (True, "Sec. 4.1: flips (and scales, not done here) following Eigen et al.", False),
    "max_depth": (_pick(10.0, 80.0), "Tables 1, 4: NYUv2 up to 10 m, KITTI Eigen 80 m", 80.0),
    "decoder_width": (1024, "Laina et al.: 1024 channels after res5", 128),
    "batch_size": (16, "ours (not given; Laina et al. use 16)", 4),
    "lr": (1e-4, "ours (Adam per task, Sec. 4.1; no rate given)", 1e-3),
    "transfer_iters": (20000, "ours (not given)", 500),
    "base_iters": (40000, "ours (not given)", 200),
    "ccr_iters": (10000, "ours (not given)", 150),
    "adapt_iters": (20000, "ours (not given)", 100),
    "save_every": (2000, "ours: a resumable checkpoint every 2000 steps", 1000),
}


def get_args_parser(add_help=True):
    parser = new_parser(__doc__, add_help)
    add_common_args(parser)
    g = parser.add_argument_group("UM-Adapt")
    g.add_argument("--stage", default="all", choices=STAGES + ("all",), help="what to train (module docstring)")
    g.add_argument("--variant", default="adv", choices=VARIANTS, help="adaptation variant (Sec. 3.3, Tables 1-5; stats: the BatchNorm control of Mt)")
    g.add_argument("--tasks", nargs="+", choices=TASK_ORDER, help="tasks of the multi-task model (any subset)")
    g.add_argument("--transfer", nargs="*", metavar="T=A,B",
                   help="task-transfer networks N(->T)(A, B) (Sec. 3.1.1); the flag alone: none, no distillation")
    g.add_argument("--alpha", type=float, default=10.0, help="distillation weight (Algorithm 1, Sec. 4.1)")
    g.add_argument("--lambda-ccr", type=float, default=1.0, help="content weight lambda (Algorithm 2; not given)")
    g.add_argument("--content", default="ccr", choices=["ccr", "fcf", "none"],
                   help="content regulariser of the adaptation (Sec. 3.2; noadv / adv / s use CCR)")
    g.add_argument("--margin", type=float, default=2.0,
                   help="variant adv: L_D = E_src + max(0, m - E_tgt) with the EBGAN margin m = MARGIN "
                        "x E_src (ours: a ratio, so one value fits every task's loss scale)")
    g.add_argument("--g-steps", type=int, default=1, help="m: res5 steps per energy step (Algorithm 2)")
    g.add_argument("--class-weighting", default="median", choices=["median", "none"],
                   help="semantic CE weights from source class coverage: median frequency balancing")
    g.add_argument("--class-weight-images", type=int, default=200, help="source images counted for them")
    g.add_argument("--decoder-width", type=int, default=1024, help="FCRN width after res5")
    g.add_argument("--transfer-width", type=int, default=32, help="first width of each N(->t) (ours)")
    g.add_argument("--max-depth", type=float, default=80.0, help="depth evaluation cap (metres)")
    for stage in STAGES:
        g.add_argument(f"--{stage}-iters", type=int, default=100, help=f"iterations of the {stage} stage "
                       "(--iters, when given, overrides the stage run)")
    g.add_argument("--transfer-lr", type=float, default=1e-3, help="Adam lr of N(->t) and the contour decoder")
    g.add_argument("--adapt-lr", type=float, default=1e-4, help="Adam lr of res5 in the adaptation")
    g.add_argument("--d-lr", type=float, default=1e-4, help="Adam lr of N (adv) / the discriminator (b)")
    g.add_argument("--target-through-bn", action="store_true",
                   help="base stage control: target images pass in train mode, no loss (RUN/base-bn)")
    g.add_argument("--target-bn-stats", action="store_true",
                   help="adapt: the frozen layers of Mt and the decoders normalise with target batch "
                        "statistics (their weights stay frozen)")
    g.add_argument("--target-labelled", type=int, default=None,
                   help="variant s: labelled target images (the first N of its train split; default all)")
    parser.set_defaults(output_dir=None)
    return set_presets(parser, PRESETS)


# ----------------------------------------------------------------------------- set-up
def check_args(args):
    """Bad combinations as one-line errors, before anything trains; parses --tgt and --transfer."""
    args.targets = [t for t in str(args.tgt).split(",") if t]
    if not args.targets:
        raise engine.UserError("--tgt needs a dataset name (or two, comma-separated)")
    args.tasks = [t for t in TASK_ORDER if t in args.tasks]
    args.transfer_nets = {}
    for spec in args.transfer or []:
        target, _, inputs = spec.partition("=")
        inputs = [t for t in inputs.split(",") if t]
        if target not in args.tasks or not inputs or any(t not in args.tasks or t == target for t in inputs):
            raise engine.UserError(f"--transfer {spec}: expected T=A[,B] with T, A, B among --tasks "
                                   f"({' '.join(args.tasks)}) and T not an input")
        args.transfer_nets[target] = inputs
    energies = needed_energies(args)
    if args.stage in ("adapt", "all") and args.variant not in ("b", "stats") and not energies:
        raise engine.UserError(f"--variant {args.variant} needs task-transfer networks"
                               + (" with N(->semantic)" if args.variant == "noadv1" else "")
                               + f"; --transfer gives {args.transfer or 'none'}")
    if args.variant != "b" and args.content != "ccr":
        raise engine.UserError("--content fcf / none is UM-Adapt-B's ablation (--variant b)")
    if args.target_through_bn and args.stage != "base":
        raise engine.UserError("--target-through-bn is the BatchNorm control of --stage base (RUN/base-bn)")
    if args.margin <= 0 or args.alpha < 0 or args.lambda_ccr < 0 or args.g_steps < 1:
        raise engine.UserError("--margin and --g-steps must be positive, --alpha and --lambda-ccr not negative")
    return args


def needed_energies(args):
    """The N(->t) of Algorithm 2: all of them, or N(->semantic) alone for noAdv-1 (Tables 1-3)."""
    if args.variant == "noadv1":
        return {t: v for t, v in args.transfer_nets.items() if t == "semantic"}
    return dict(args.transfer_nets)


def stage_dir(args, stage):
    if stage == "base" and args.target_through_bn:
        return "base-bn"
    if stage == "adapt":
        return f"adapt-{args.variant}" + ("" if args.content == "ccr" else f"-{args.content}")
    return stage


def load_models(run_dir, stage, models, what):
    """Load the final models of an earlier stage of this run, strictly."""
    path = os.path.join(run_dir, stage, "model.pth")
    if not os.path.isfile(path):
        raise engine.UserError(f"the {what} needs {path}: run --stage {stage.split('-')[0]} "
                               f"first in --output-dir {run_dir}")
    engine.restore(engine.load_checkpoint(path, SCRIPT, "--output-dir"), models=models)


def freeze(module):
    """No gradient and eval mode for good (BatchNorm statistics included): a frozen network."""
    from lib.models import freeze_bn
    module.requires_grad_(False)
    return freeze_bn(module.eval())


def output_size(size):
    """The decoders' size: 16x the res5 grid of the stride-32 ResNet (228x304 -> 128x160)."""
    return tuple(16 * math.ceil(s / 32) for s in size)


def labels_at(batch, tasks, size):
    """Ground truth at the decoders' size (nearest: no mixing across invalid or class borders)."""
    out = {}
    for t in tasks:
        if t not in batch:
            continue
        y = batch[t]
        if t == "normals":
            out[t] = F.interpolate(y, size=size, mode="nearest")
        else:
            out[t] = F.interpolate(y[:, None].float(), size=size, mode="nearest")[:, 0].to(y.dtype)
    if "edges" in batch:                # contour maps: area average keeps thin contours visible
        out["edges"] = F.adaptive_avg_pool2d(batch["edges"][:, None], size)[:, 0]
    return out


def class_weights(args, data):
    """Median frequency balancing (Eigen & Fergus 2015): w_c = median_k f_k / f_c, f_c = pixels
    of c / pixels of the images holding c, over the first --class-weight-images source images.
    Sec. 4.1 only says "a weighing scheme ... depending on their coverage"; classes never seen
    get weight 0 (they cannot occur in the labels)."""
    path, nc = os.path.join(args.run_dir, "class_weights.json"), args.num_classes
    if os.path.isfile(path):
        with open(path) as f:
            saved = json.load(f)
        if not isinstance(saved, list) or len(saved) != nc:
            raise engine.UserError(f"{path} holds weights for another class count than this run's "
                                   f"{nc}: use a fresh --output-dir (or delete the file)")
        return torch.tensor(saved)
    pixels, image_pixels = torch.zeros(nc, dtype=torch.float64), torch.zeros(nc, dtype=torch.float64)
    for i in range(min(len(data), args.class_weight_images)):
        y = data[i]["semantic"]
        y = y[y != 255]
        counts = torch.bincount(y, minlength=nc).double()
        pixels += counts
        image_pixels += (counts > 0).double() * y.numel()
    weights = median_frequency_weights(pixels, image_pixels)
    if engine.is_main():
        os.makedirs(args.run_dir, exist_ok=True)
        engine.write_json(weights.tolist(), path)
    return weights


def median_frequency_weights(pixels, image_pixels):
    """w_c = median(f) / f_c with f_c = pixels_c / image_pixels_c over the classes seen."""
    seen = pixels > 0
    freq = torch.where(seen, pixels / image_pixels.clamp_min(1), torch.zeros_like(pixels))
    median = freq[seen].median() if seen.any() else torch.tensor(1.0, dtype=freq.dtype)
    return torch.where(seen, median / freq.clamp_min(1e-12), torch.zeros_like(freq)).float()


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
    """L_t(N(->t)(O), Y): the cross-task discrepancy used as distillation loss (Algorithm 1) and
    as the energy of a tuple (Sec. 3.3.2)."""
    return task_loss(task, nets[task](maps), target, weight)


def margin_d_loss(e_src, e_tgt, ratio):
    """L_D of Algorithm 2, bounded: E(src gt tuple) + max(0, m - E(tgt predicted tuple)) with
    m = ratio x E_src (a constant for the gradient). As printed, L_D = E_src - E_tgt is
    unbounded below (N can push E_tgt to infinity); EBGAN's margin (Zhao et al. 2017, eq. 1)
    keeps the sign of the update (E_src down, E_tgt up) and stops raising E_tgt past m."""
    return e_src + F.relu(ratio * e_src.detach() - e_tgt)


# ----------------------------------------------------------------------------- steps
def transfer_step(nets, optims, src, amp, args):
    """Sec. 3.1.1: each N(->t) maps the other tasks' ground truth to task t's ground truth."""
    y = labels_at(src, args.tasks, output_size(src["image"].shape[-2:]))
    terms = {}
    for t, net in nets.items():
        optims[t].zero_grad(set_to_none=True)
        with amp.autocast():
            loss = energy(nets, t, y, y[t], args.cw)
        amp.backward(loss)
        engine.average_grads([net])        # unwrapped: average over processes by hand
        amp.step([optims[t]])
        terms[f"n_{t}"] = loss.detach()
    return terms


def base_step(model, nets, optims, src, tgt, amp, args):
    """Algorithm 1: for each task in turn, L_t(pred, gt) + alpha L_t(N(->t)(other preds), gt),
    minimised over all base parameters by that task's own Adam; N stays frozen. The BN control
    (--target-through-bn) passes the target batch after each task's step, with no loss."""
    y = labels_at(src, args.tasks, output_size(src["image"].shape[-2:]))
    terms = {}
    for t in args.tasks:
        optims[t].zero_grad(set_to_none=True)
        with amp.autocast():
            preds = {k: v.float() for k, v in model(src["image"]).items()}
            loss = task_loss(t, preds[t], y[t], args.cw)
            terms[t] = loss.detach()
            if t in nets and args.alpha:
                dist = energy(nets, t, preds, y[t], args.cw)
                terms[f"dist_{t}"] = dist.detach()
                loss = loss + args.alpha * dist
        amp.backward(loss)
        amp.step([optims[t]])
        if args.target_through_bn:     # the control: as many target passes as source ones, each
            with torch.no_grad(), amp.autocast():   # after its source pass; BN statistics only
                model(tgt["image"])
    return terms


def ccr_step(ms, contour, fcf, optim, src, amp):
    """Sec. 3.2: C_contour on the frozen Ms's res5 vs the input's contour map (MSE); FCF's
    reconstructor R learns res5 -> res4f on the same frozen features."""
    optim.zero_grad(set_to_none=True)
    with torch.no_grad(), amp.autocast():
        feats = ms(src["image"])
    f4, z = feats["layer3"].float(), feats["layer4"].float()
    with amp.autocast():
        edges = labels_at(src, (), output_size(src["image"].shape[-2:]))["edges"]
        l_ccr = losses.masked_l2(contour(z).float(), edges)
        l_fcf = losses.masked_l2(fcf(z, f4.shape[-2:]).float(), f4)
    amp.backward(l_ccr + l_fcf)
    engine.average_grads([contour, fcf])   # unwrapped: average over processes by hand
    amp.step([optim])
    return {"ccr": l_ccr.detach(), "fcf": l_fcf.detach()}


def content_loss(kind, z, f4, edges, contour, fcf):
    """lambda-weighted term of Algorithm 2: L_CCR (frozen contour decoder) or FCF's L2."""
    if kind == "ccr":
        return losses.masked_l2(contour(z), edges)
    if kind == "fcf":
        return losses.masked_l2(fcf(z, f4.shape[-2:]), f4)
    return z.new_zeros(())


def target_forward(net, x):
    """Mt(x) split at res4f: the frozen trunk (no graph), then res5 and the frozen decoders."""
    enc = net.encoder
    with torch.no_grad():
        h = enc.maxpool(enc.relu(enc.bn1(enc.conv1(x))))
        f4 = enc.layer3(enc.layer2(enc.layer1(h)))
    z = enc.layer4(f4)
    return f4, z, {k: v.float() for k, v in net.decode(z).items()}


def energy_g_step(net, nets, aux, optims, tgt, amp, args, energies):
    """Algorithm 2's inner loop: for each task, res5 minimises L_G^t + lambda L_CCR with L_G^t
    = L_t(N(->t)(O_t predicted), Y_t predicted), the target tuple's energy (that task's Adam)."""
    terms = {}
    for t in energies:
        optims[f"res5_{t}"].zero_grad(set_to_none=True)
        with amp.autocast():
            f4, z, preds = target_forward(net, tgt["image"])
            edges = labels_at(tgt, (), preds[t].shape[-2:])["edges"]
            e_t = energy(nets, t, preds, preds[t])
            ccr = content_loss("ccr", z, f4, edges, aux["contour"], None)
        amp.backward(e_t + args.lambda_ccr * ccr)
        engine.average_grads([net.encoder.layer4])
        amp.step([optims[f"res5_{t}"]])
        terms[f"g_{t}"], terms["ccr"] = e_t.detach(), ccr.detach()
    return terms


def energy_d_step(net, nets, optims, src, tgt, amp, args, energies):
    """Algorithm 2's outer step (Adv only): each N(->t), with its own Adam, lowers the energy
    of the source ground-truth tuple and raises the target predicted tuple's (margin_d_loss)."""
    with torch.no_grad(), amp.autocast():
        _, _, preds = target_forward(net, tgt["image"])
    y = labels_at(src, args.tasks, output_size(src["image"].shape[-2:]))
    terms = {}
    for t in energies:
        optims[f"n_{t}"].zero_grad(set_to_none=True)
        with amp.autocast():
            e_s = energy(nets, t, y, y[t], args.cw)
            e_t = energy(nets, t, preds, preds[t])
            loss = margin_d_loss(e_s, e_t, args.margin)
        amp.backward(loss)
        engine.average_grads([nets[t]])
        amp.step([optims[f"n_{t}"]])
        terms[f"d_{t}"] = loss.detach()
    return terms


def b_step(ms, net, aux, optims, src, tgt, amp, args):
    """UM-Adapt-B (Sec. 3.3.1): D tells (Ms(x_s), source ground truth) from (Mt(x_t), target
    predictions) while res5 (and FCF's R) fools it, plus lambda times the content loss: res5's
    backward first (D frozen), then D's on detached maps, then both step at once."""
    d = aux["d"]
    size = output_size(src["image"].shape[-2:])
    y = labels_at(src, args.tasks, size)
    with torch.no_grad(), amp.autocast():
        z_s = ms.features(src["image"]).float()
    optims["res5"].zero_grad(set_to_none=True)
    if "fcf" in optims:
        optims["fcf"].zero_grad(set_to_none=True)
    d.requires_grad_(False)
    with amp.autocast():
        f4, z_t, preds = target_forward(net, tgt["image"])
        maps_t = encode_maps(preds, args.num_classes)
        adv = losses.bce_adv(d(z_t, maps_t), 1.0)
        edges = labels_at(tgt, (), size)["edges"]
        content = content_loss(args.content, z_t, f4, edges, aux["contour"], aux["fcf"])
    amp.backward(adv + args.lambda_ccr * content)
    d.requires_grad_(True)
    optims["d"].zero_grad(set_to_none=True)
    with amp.autocast():
        real = losses.bce_adv(d(z_s, encode_maps(y, args.num_classes)), 1.0)
        fake = losses.bce_adv(d(z_t.detach().float(), maps_t.detach()), 0.0)
        loss_d = (real + fake) / 2
    amp.backward(loss_d)
    engine.average_grads([d, net.encoder.layer4] + ([aux["fcf"]] if "fcf" in optims else []))
    amp.step([o for k, o in optims.items() if k in ("res5", "fcf", "d")])
    return {"adv": adv.detach(), "content": content.detach(), "d": loss_d.detach()}


def s_step(net, nets, aux, optims, tgt, lab, amp, args, energies, it):
    """UM-Adapt-S (Sec. 4.1): alternate batches; labelled ones minimise L_dist (Algorithm 1's
    loss on target ground truth), unlabelled ones L_G + lambda L_CCR, both over res5 only."""
    if it % 2:
        return energy_g_step(net, nets, aux, optims, tgt, amp, args, energies)
    terms = {}
    y = labels_at(lab, args.tasks, output_size(lab["image"].shape[-2:]))
    for t in [t for t in args.tasks if t in y]:
        opt = optims[f"res5_{t}"] if f"res5_{t}" in optims else optims["res5"]
        opt.zero_grad(set_to_none=True)
        with amp.autocast():
            _, _, preds = target_forward(net, lab["image"])
            loss = task_loss(t, preds[t], y[t], args.cw)
            if t in nets and all(k in preds for k in nets[t].inputs):
                loss = loss + args.alpha * energy(nets, t, preds, y[t], args.cw)
        amp.backward(loss)
        engine.average_grads([net.encoder.layer4])
        amp.step([opt])
        terms[f"sup_{t}"] = loss.detach()
    return terms


# ----------------------------------------------------------------------------- stages

def build_transfer_nets(args):
    return {t: TaskTransferNet(t, inputs, args.num_classes, args.transfer_width)
            for t, inputs in args.transfer_nets.items()}


def net_spec(args):
    return model_spec("umadapt", backbone=args.backbone, pretrained=args.pretrained, tasks=args.tasks,
                      num_classes=args.num_classes, decoder_width=args.decoder_width)


def adam(params, lr):
    return torch.optim.Adam([p for p in params if p.requires_grad], lr=lr, betas=(0.9, 0.999))


def setup_transfer(args, amp):
    nets = {t: n.to(args.device) for t, n in build_transfer_nets(args).items()}
    optims = {t: adam(n.parameters(), args.transfer_lr) for t, n in nets.items()}
    return dict(models={f"n_{t}": n for t, n in nets.items()}, optimizers=optims,
                step=lambda b, it: transfer_step(nets, optims, b["src"], amp, args),
                evaluate=lambda: {"source": score_transfer(nets, args, amp)})


def setup_base(args, amp):
    net = build_model(net_spec(args))
    nets = build_transfer_nets(args)
    if nets:
        load_models(args.run_dir, "transfer", {f"n_{t}": n for t, n in nets.items()}, "base stage")
    nets = {t: freeze(n).to(args.device) for t, n in nets.items()}
    model = engine.prepare_model(RawOutputs(net), args, find_unused=True)
    net = engine.unwrap(model).net
    optims = {t: adam(net.parameters(), args.lr) for t in args.tasks}     # one Adam per task
    return dict(models={"model": net, **{f"n_{t}": n for t, n in nets.items()}}, optimizers=optims,
                step=lambda b, it: base_step(model, nets, optims, b["src"], b["tgt"], amp, args),
                evaluate=lambda: score_model(net, args, amp, source=True), spec=net_spec(args))


def setup_ccr(args, amp):
    net = build_model(net_spec(args))
    load_models(args.run_dir, "base", {"model": net}, "ccr stage")
    enc = freeze(net.encoder).to(args.device)
    c4, c5 = enc.channels["layer3"], enc.channels["layer4"]
    contour, fcf = ContourDecoder(c5).to(args.device), FeatureReconstructor(c5, c4).to(args.device)
    optim = adam(list(contour.parameters()) + list(fcf.parameters()), args.transfer_lr)
    return dict(models={"contour": contour, "fcf": fcf}, optimizers={"ccr": optim},
                step=lambda b, it: ccr_step(enc, contour, fcf, optim, b["src"], amp),
                evaluate=lambda: score_contour(enc, contour, args))


def setup_adapt(args, amp):
    """Mt from the base model (or from adapt-adv for s), frozen decoders, N and C_contour."""
    base = build_model(net_spec(args))
    load_models(args.run_dir, "base", {"model": base}, "adaptation")
    nets = build_transfer_nets(args)
    if nets:
        load_models(args.run_dir, "transfer", {f"n_{t}": n for t, n in nets.items()}, "adaptation")
    dims = base.encoder.channels
    aux = {"contour": ContourDecoder(dims["layer4"]), "fcf": FeatureReconstructor(dims["layer4"], dims["layer3"])}
    load_models(args.run_dir, "ccr", dict(aux), "adaptation")
    net = copy.deepcopy(base)
    net.encoder = target_encoder(base.encoder, args.target_bn_stats)
    net.decoders.requires_grad_(False)
    if not args.target_bn_stats:
        freeze(net.decoders)
    if args.variant == "s":                                   # UM-Adapt-S starts from UM-Adapt-(Adv.)
        load_models(args.run_dir, "adapt-adv", {"model": net, **{f"n_{t}": n for t, n in nets.items()}},
                    "variant s")
    energies = needed_energies(args)
    train_n = args.variant == "adv"
    for t, n in nets.items():
        n.requires_grad_(train_n and t in energies)
    freeze(aux["contour"])
    if not (args.variant == "b" and args.content == "fcf"):
        freeze(aux["fcf"])
    net, ms = net.to(args.device), freeze(base).to(args.device)
    nets = {t: n.to(args.device) for t, n in nets.items()}
    aux = {k: m.to(args.device) for k, m in aux.items()}
    res5 = net.encoder.layer4.parameters
    optims = {}
    if args.variant == "b":
        aux["d"] = JointDiscriminator(dims["layer4"], sum(encode_maps_channels(args))).to(args.device)
        optims = {"res5": adam(res5(), args.adapt_lr), "d": adam(aux["d"].parameters(), args.d_lr)}
        if args.content == "fcf":
            optims["fcf"] = adam(aux["fcf"].parameters(), args.adapt_lr)
    else:
        optims = {f"res5_{t}": adam(res5(), args.adapt_lr) for t in args.tasks}
        if train_n:
            optims.update({f"n_{t}": adam(nets[t].parameters(), args.d_lr) for t in energies})

    def step(b, it):
        if args.variant == "stats":                 # the control: no loss, no update
            with torch.no_grad():
                f4, z, preds = target_forward(net, b["tgt"]["image"])
                edges = labels_at(b["tgt"], (), next(iter(preds.values())).shape[-2:])["edges"]
                return {"ccr": content_loss("ccr", z, f4, edges, aux["contour"], None)}
        if args.variant == "b":
            return b_step(ms, net, aux, optims, b["src"], b["tgt"], amp, args)
        if args.variant == "s":
            return s_step(net, nets, aux, optims, b["tgt"], b["lab"], amp, args, energies, it)
        terms = {}
        for _ in range(args.g_steps):
            terms = energy_g_step(net, nets, aux, optims, b["tgt"], amp, args, energies)
        if train_n:
            terms.update(energy_d_step(net, nets, optims, b["src"], b["tgt"], amp, args, energies))
        return terms

    kept = [k for k in aux if k != "fcf" or "fcf" in optims]      # C_contour is kept to show it frozen
    models = {"model": net, **{f"n_{t}": n for t, n in nets.items()}, **{k: aux[k] for k in kept}}
    return dict(models=models, optimizers=optims, step=step, spec=net_spec(args),
                evaluate=lambda: score_model(net, args, amp, source=False))


def encode_maps_channels(args):
    return [{"semantic": args.num_classes, "depth": 1, "normals": 3}[t] for t in args.tasks]


SETUPS = {"transfer": setup_transfer, "base": setup_base, "ccr": setup_ccr, "adapt": setup_adapt}


# ----------------------------------------------------------------------------- data and scores
def train_loaders(args, stage):
    """Source: every task's labels + contour maps; targets: images (+ contour maps when
    adapting); variant s also reads labelled target batches (--target-labelled)."""
    def make(name, role, labels, length, domain, seed):
        data = build_dataset(name, "train", args.size, args.data_root, seed, length, labels=labels,
                             role=f"--{role}", train=True, **options(args, name, role))
        return engine.InfiniteLoader(data, args.batch_size, args, domain=domain)
    loaders = {"src": make(args.src, "src", args.tasks + ["edges"], args.proc_length, 0, args.seed)}
    tgt_labels = ["edges"] if stage in ("adapt", "ccr") else []
    for i, name in enumerate(args.targets):
        loaders[f"tgt{i}"] = make(name, "tgt", tgt_labels, args.proc_length, 1, args.seed + 1)
        if stage == "adapt" and args.variant == "s":
            have = [t for t in args.tasks if t in get_entry(name).labels]
            length = args.target_labelled or args.proc_length
            loaders[f"lab{i}"] = make(name, "tgt", have + ["edges"], length, 1, args.seed + 2)
    return loaders


def options(args, name, role):
    """build_dataset options of one dataset: with two targets both come from --data-root, and
    --classes is the class map of those with semantic labels (KITTI has none)."""
    opts = data_options(args, role)
    if role != "src" and len(args.targets) > 1:
        opts["root"] = None
    if "semantic" not in get_entry(name).labels:
        opts["classes"] = None
    return opts


def val_data(name, role, labels, args):
    return scoring_loader(name, labels, args, f"--{role}", max(args.batch_size, 4), **options(args, name, role))


def score_model(net, args, amp, source):
    """Tables 1-5's metrics (lib.metrics via lib.evaluation) on each dataset's val split, for
    the tasks it has labels of; the source split only for the base model."""
    out = {"target": {}}
    names = ([("source", args.src, "src")] if source else []) + [(n, n, "tgt") for n in args.targets]
    for key, name, role in names:
        tasks = [t for t in args.tasks if t in get_entry(name).labels]
        m = evaluate_model(net, val_data(name, role, tasks, args), args.device, tasks, args.num_classes,
                           max_depth=args.max_depth, amp=amp)
        if key == "source":
            out["source"] = m
        else:
            out["target"][name] = m
    return out


@torch.no_grad()
def score_transfer(nets, args, amp):
    """Each N(->t) on source val ground truth: how well task t is recovered from the others."""
    from lib.evaluation import Scorer
    scorer = Scorer(list(nets), args.num_classes, max_depth=args.max_depth, device=args.device)
    for batch in val_data(args.src, "src", args.tasks, args):
        batch = engine.to_device(batch, args.device)
        y = labels_at(batch, args.tasks, output_size(batch["image"].shape[-2:]))
        with amp.autocast():
            scorer.update({t: n(y).float() for t, n in nets.items()}, batch)
    return scorer.compute()


@torch.no_grad()
def score_contour(enc, contour, args):
    """L_CCR (MSE) of the frozen Ms + C_contour on source and target val contour maps."""
    out = {}
    for key, name, role in [("source", args.src, "src")] + [(n, n, "tgt") for n in args.targets]:
        total, count = 0.0, 0
        for batch in val_data(name, role, ["edges"], args):
            batch = engine.to_device(batch, args.device)
            edges = labels_at(batch, (), output_size(batch["image"].shape[-2:]))["edges"]
            total += float(losses.masked_l2(contour(enc(batch["image"])["layer4"]), edges)) * len(edges)
            count += len(edges)
        # each rank scored its shard: the ratio of the means over ranks is that of the sums
        sums = engine.all_reduce_mean({"total": total, "count": count})
        out[key if key == "source" else f"target_{name}"] = {"ccr_mse": sums["total"] / max(sums["count"], 1e-12)}
    return out


# ----------------------------------------------------------------------------- main
def run_stage(stage, args):
    """One stage in RUN/<stage folder>: set-up, the loop, checkpoints, model.pth and metrics.json."""
    a = copy.copy(args)
    a.output_dir = os.path.join(args.run_dir, stage_dir(args, stage))
    a.iters = args.iters if "iters" in args.explicit else getattr(args, f"{stage}_iters")
    a.current_stage = stage
    done = os.path.join(a.output_dir, "metrics.json")
    if args.stage == "all" and a.resume and os.path.isfile(done):
        print(f"stage {stage}: finished in {a.output_dir}, skipped", flush=True)
        return json.load(open(done))
    logger = engine.setup_run(a, SCRIPT)
    amp = engine.Amp(a.amp, a.device)
    # The set-up first: it loads the earlier stages' models, so a stage run before them stops
    # before class_weights.json is written (no run folder from a bad input). The steps read
    # a.cw only when they run.
    s = SETUPS[stage](a, amp)
    # N(->t), C_contour, R and D are built per rank (seed + rank) and kept out of DDP: every
    # rank starts from rank 0's weights, which average_grads then keeps in step.
    engine.broadcast_modules(s["models"].values())
    if "semantic" in a.tasks and a.class_weighting == "median":
        src = build_dataset(a.src, "train", a.size, a.data_root, a.seed, a.proc_length,
                            labels=["semantic"], role="--src", **data_options(a, "src"))
        a.cw = class_weights(a, src).to(a.device)
    else:
        a.cw = None
    loaders = train_loaders(a, stage)
    state = dict(models=s["models"], optimizers=s["optimizers"], amp=amp, loaders=loaders)
    start = 0
    if path := engine.resume_path(a):
        start = engine.restore(engine.load_checkpoint(path, SCRIPT), **state)
    logger.start(start)
    for m in s["models"].values():
        m.train()
    ckpt = os.path.join(a.output_dir, "checkpoint.pth")
    for it in range(start, engine.stop_iteration(a)):
        k = it % len(a.targets)                          # two targets: alternate their batches
        batch = {"src": next(loaders["src"]), "tgt": next(loaders[f"tgt{k}"])}
        if f"lab{k}" in loaders:
            batch["lab"] = next(loaders[f"lab{k}"])
        batch = {key: engine.to_device(b, a.device, a.channels_last) for key, b in batch.items()}
        names = list(batch["src"]["name"]) + list(batch["tgt"]["name"])
        values = engine.check_finite(s["step"](batch, it), it + 1, names)
        logger.step(it + 1, values)
        if engine.should_save(it + 1, a):
            engine.save_checkpoint(ckpt, script=SCRIPT, iteration=it + 1, args=a, **state)
    if engine.stop_iteration(a) < a.iters:
        return None
    metrics = {"stage": stage, "variant": a.variant if stage == "adapt" else None, "iteration": a.iters,
               **s["evaluate"]()}
    # After scoring (checkpoint.pth holds the weights already): its args record how it scored.
    specs = {"model": s["spec"]} if "spec" in s else {}
    engine.save_checkpoint(os.path.join(a.output_dir, "model.pth"), script=SCRIPT, iteration=a.iters, args=a,
                           models=s["models"], model_specs=specs,
                           extra={"inference_model": "model"} if specs else {})
    logger.write({"iter": a.iters, **metrics})
    if engine.is_main():
        engine.write_json(metrics, done)
        print(f"stage {stage} ({stage_dir(a, stage)}): " + summary(metrics), flush=True)
    return metrics


def summary(metrics):
    """One line of the headline numbers of each scored split."""
    keys = ("mIoU", "abs_rel", "rmse", "a1", "mean", "pct_11_25", "ccr_mse")
    parts = []
    splits = [("source", metrics.get("source"))] + list((metrics.get("target") or {}).items()) \
        + [(k, v) for k, v in metrics.items() if k.startswith("target_")]
    for name, m in splits:
        if isinstance(m, dict):
            parts.append(f"{name}: " + " ".join(f"{k}={m[k]:.3f}" for k in keys if isinstance(m.get(k), float)))
    return "; ".join(parts)


def main(args):
    apply_preset(args, PRESETS, [args.src, *str(args.tgt).split(",")])
    check_args(args)
    if len(args.targets) > 1 and args.tgt_root:
        raise engine.UserError("--tgt-root names one folder: with two targets put both under --data-root")
    args.num_classes = resolve_classes([(args.src, "--src")] + [(n, "--tgt") for n in args.targets], args.classes)
    require_labels(args.src, args.tasks + ["edges"], "--src")
    if "semantic" in args.tasks:
        args.num_classes = args.num_classes or get_entry(args.src).num_classes
        if not args.num_classes:
            raise engine.UserError(f"--src {args.src}: give --classes (its class list fixes it)")
    args.classes = args.num_classes
    args.run_dir = args.output_dir or os.path.join("runs", SCRIPT.removesuffix(".py"))
    if args.stage == "adapt" and args.variant == "s" and any(
            not set(args.tasks) & set(get_entry(n).labels) for n in args.targets):
        raise engine.UserError("--variant s needs target labels of at least one task in every --tgt")
    stages = STAGES if args.stage == "all" else (args.stage,)
    if args.stage == "all" and not args.transfer_nets:
        stages = stages[1:]
    metrics = None
    for stage in stages:
        metrics = run_stage(stage, args)
        if metrics is None:
            break                                     # --stop-at: continue with --resume auto
    engine.cleanup_distributed()
    return metrics


if __name__ == "__main__":
    engine.cli(main, parse(get_args_parser()))
