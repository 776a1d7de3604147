"""HeadFreeze (Li et al., "Task-assisted domain adaptation with anchor tasks"): surface normals
(the main task) moved from a labelled source to a target that only has labels of an anchor
task, and every compared method of Tables 1-2 as one `--variant`.

    python train_headfreeze.py                                   # HeadFreeze, procedural benchmark
    python train_headfreeze.py --variant mtl-both-anchor         # eq. 6; baseline, oracle, ...
    python train_headfreeze.py --src folder --src-root HYPERSIM --tgt nyuv2 --data-root DATA
    python train_headfreeze.py --src folder --src-root SFSYN --tgt folder --tgt-root FACEWH \\
        --anchor keypoints --keypoints 68 --keypoint-depth --val-split test   # SfSyn -> FaceWarehouse
    torchrun --nproc_per_node=4 train_headfreeze.py ...          # DDP

--src brings main (normals) and anchor labels, --tgt anchor labels only: the target's normals are
read by `--variant oracle` alone. On real data the defaults are the paper's where it gives them
(PRESETS below, `--preset`); on the procedural benchmark a small CPU run.
No arguments: 1.6 minutes (one thread beside another run on the
2-core CPU machine, 2026-12-04; an idle machine is faster).
"""
import argparse
import math
import os

import torch
import torch.nn.functional as F

from lib import engine, losses
from lib.args import add_common_args, apply_preset, new_parser, parse, set_presets
from lib.data import build_dataset, data_options, get_entry, resolve_classes
from lib.evaluation import evaluate_model, scoring_loader
from lib.models import build_model, model_spec, RawOutputs
from lib.models.discriminators import FeatureCritic, OutputDiscriminator

SCRIPT = "train_headfreeze.py"
# Tables 1-2 (Fig. 2): which supervised losses, eq. 1-3 (+ the target's main task for the
# oracle), whether a domain-adversarial loss is added, whether the head is frozen.
#            L_Sa   L_Ta   L_Tm   DA     HeadFreeze
VARIANTS = {
    "baseline":        (False, False, False, False, False),
    "baseline+da":     (False, False, False, True, False),
    "mtl-src-anchor":  (True, False, False, False, False),    # eq. 4
    "mtl-tgt-anchor":  (False, True, False, False, False),    # eq. 5
    "mtl-both-anchor": (True, True, False, False, False),     # eq. 6
    "headfreeze":      (True, True, False, False, True),      # eq. 4, freeze, eq. 6
    "headfreeze+da":   (True, True, False, True, True),
    "oracle":          (True, True, True, False, False),
}
LEVELS = ("p5", "p4", "p3")   # Ganin's multi-level alignment: the trainable top-down maps


def _paper_da(args):
    """Table 1: Tsai (output space) on indoor scenes, Ganin (features) on faces."""
    return "feature" if args.anchor == "keypoints" else "output"


def _paper_size(args):
    return (128, 128) if args.anchor == "keypoints" else (240, 320)


# flag: (paper value, its source, cpu value). The main text leaves most optimisation settings
# to its supplemental material, which we do not have: those are ours and say so.
PRESETS = {
    "backbone": ("resnet50", "Sec. 4.4: ResNet-50 + FPN", "resnet18"),
    "pretrained": ("imagenet", "Sec. 4.4: ResNet pre-trained on ImageNet", "none"),
    "fpn_width": (256, "ours: the FPN paper's width (Sec. 4.4 does not give one)", 128),
    "da": (_paper_da, "Table 1: Tsai on indoor scenes, Ganin on faces", "output"),
    "resize": (_paper_size, "ours: NYUv2 at half size; faces at SfSNet's 128x128", None),
    "size": (_paper_size, "ours: the whole resized image (no crop)", (64, 128)),
    "batch_size": (8, "ours: same-size batches per domain (Sec. 4.4); size not given", 4),
    "iters": (40000, "ours (not in the main text)", 250),
    "lr": (1e-4, "ours: Adam (not in the main text)", 1e-3),
    "save_every": (2000, "ours: one resumable checkpoint every 2000 steps", 250),
    "lambda_anchor": ("auto", "Sec. 4.4: chosen so the losses have similar magnitudes (our reading: "
                      "measured once, before the first step, on the initial network's first batch "
                      "of each domain with an anchor loss, then fixed; cpu: 1, as the procedural "
                      "table ran)", 1.0),
    "lambda_kp_depth": ("auto", "ours: Sec. 4.4's rule between the heatmap and depth terms", 1.0),
    "freeze_at": (None, "ours: half of --iters; Sec. 3.2 switches 'when it approaches convergence'", None),
    "freeze_after": (2, "Sec. 4.4: the layers after the second upsampling layer, skips included "
                     "(ours: which modules, lib/models/headfreeze.py; the paper tunes it)", 2),
}


def _weight(text):
    """A loss weight: a number >= 0, or 'auto' (Sec. 4.4's rule, measure_lambdas)."""
    if text == "auto":
        return text
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or auto, got {text!r}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"a loss weight must be 0 or more, got {text}")
    return value


def get_args_parser(add_help=True):
    parser = new_parser(__doc__, add_help)
    add_common_args(parser)
    g = parser.add_argument_group("HeadFreeze")
    g.add_argument("--variant", default="headfreeze", choices=list(VARIANTS),
                   help="a row of Tables 1-2: the supervised losses, DA and the freeze (Fig. 2)")
    g.add_argument("--anchor", default="semantic", choices=["semantic", "keypoints"],
                   help="anchor task: semantic segmentation (CE, Sec. 4.2) or keypoint heatmaps "
                        "(Sec. 4.1; the folder layout's keypoints/ extension)")
    g.add_argument("--keypoints", type=int, default=68, help="number of keypoints K (--anchor keypoints)")
    g.add_argument("--keypoint-depth", action="store_true",
                   help="the 2-layer FC branch (256 hidden) for keypoint depth (Sec. 4.4), trained "
                        "on keypoint_depth/ files")
    g.add_argument("--lambda-anchor", type=_weight, default=1.0,
                   help="lambda of eq. 4-6, a number or auto: L_Sm over the mean anchor loss, "
                        "measured once before the first step, on the network as initialised and the "
                        "first --batch-size samples of each domain with an anchor loss, then fixed "
                        "(our reading of Sec. 4.4: 'losses ... have similar magnitudes')")
    g.add_argument("--lambda-kp-depth", type=_weight, default=1.0,
                   help="weight of the keypoint-depth loss, a number or auto: the heatmap loss over "
                        "the depth loss, measured with --lambda-anchor auto's batches (ours)")
    g.add_argument("--freeze-at", type=int, default=None, metavar="ITER",
                   help="HeadFreeze's switch from eq. 4 to the frozen head and eq. 6 (Sec. 3.2: near "
                        "convergence), 1 <= ITER < --iters (default: half of --iters)")
    g.add_argument("--freeze-after", type=int, default=2, choices=[0, 1, 2, 3], metavar="N",
                   help="HeadFreeze freezes the layers after the N-th of the 3 upsampling layers, "
                        "skips included, and the output layers (Sec. 4.4: N = 2)")
    g.add_argument("--joint-bn", action="store_true",
                   help="source and target batches in one forward, so BatchNorm normalises them "
                        "together (default: one forward per domain; the paper is silent); refused "
                        "where no target batch is passed (baseline, mtl-src-anchor)")
    g.add_argument("--fpn-width", type=int, default=256, help="channels of the FPN top-down path")
    g.add_argument("--da", default="output", choices=["output", "feature"],
                   help="+DA variants: output-space adversarial (Tsai et al.) or multi-level feature "
                        "alignment through gradient reversal (Ganin & Lempitsky) (Sec. 4.3)")
    g.add_argument("--lambda-adv", type=float, default=1e-3, help="output-space adversarial weight (Tsai)")
    g.add_argument("--lambda-grl", type=float, default=0.1,
                   help="largest gradient-reversal weight (Ganin's schedule 2 / (1 + exp(-10 p)) - 1)")
    g.add_argument("--d-lr", type=float, default=1e-4, help="discriminator Adam lr (Tsai et al.)")
    g.add_argument("--target-through-bn", action="store_true",
                   help="control for baseline / mtl-src-anchor: target images pass through the network "
                        "in train mode with no loss, so only BatchNorm statistics see them")
    g.add_argument("--val-split", default="val",
                   help="split scored at the end, for the reported numbers (NYUv2: val = test; faces: "
                        "test, Sec. 4.1's 70/15/15 subject split). --eval-every scores the source's "
                        "val split, never a target's labels")
    parser.set_defaults(poly_power=0.9, output_dir=None)
    return set_presets(parser, PRESETS)


def resolve_variant(args):
    """The variant's switches as attributes, the switch point, and the one-line errors."""
    args.src_anchor, args.tgt_anchor, args.tgt_main, args.adapt, args.headfreeze = VARIANTS[args.variant]
    if args.freeze_at is None:
        args.freeze_at = args.iters // 2
        if args.headfreeze and args.freeze_at == 0:
            raise engine.UserError(f"--iters {args.iters} leaves no step before HeadFreeze's switch (default "
                                   "--freeze-at: half of --iters): give --iters 2 or more")
    if args.headfreeze and args.freeze_at == 0:
        # Sec. 3.2 freezes a head trained on eq. 4 "when it approaches convergence"; at 0 it
        # would freeze the head as initialised (random), before any step: not HeadFreeze.
        raise engine.UserError("--freeze-at 0 would freeze the head before it trains on eq. 4 (Sec. "
                               "3.2 freezes a head trained on the source): give 1 <= ITER < --iters, "
                               "or --variant mtl-both-anchor for eq. 6 with nothing frozen")
    if args.headfreeze and not 0 < args.freeze_at < args.iters:
        raise engine.UserError(f"--freeze-at must lie in [1, --iters), got {args.freeze_at}")
    if args.joint_bn and args.target_through_bn:
        raise engine.UserError("--target-through-bn passes the target separately; with --joint-bn "
                               "give one of the two")
    if args.joint_bn and args.variant in ("baseline", "mtl-src-anchor"):
        # These variants never forward a target batch with the source (forward(): tgt None).
        raise engine.UserError(f"--joint-bn has no effect with --variant {args.variant}, which never "
                               "passes a target batch: leave it off (or see --target-through-bn)")
    if args.target_through_bn and args.variant not in ("baseline", "mtl-src-anchor"):
        raise engine.UserError("--target-through-bn is the BatchNorm control of baseline / "
                               "mtl-src-anchor (no other target forward)")
    if args.anchor == "keypoints":
        if args.keypoints < 1:
            raise engine.UserError(f"--keypoints must be positive, got {args.keypoints}")
        if args.flip:
            raise engine.UserError("--flip mirrors keypoint heatmaps without swapping left and right "
                                   "keypoints: leave it off with --anchor keypoints")
        for name, flag in ((args.src, "--src"), (args.tgt, "--tgt")):
            if name != "folder":
                raise engine.UserError(f"--anchor keypoints reads keypoints/ of the folder layout; "
                                       f"{flag} {name} has none (docs/headfreeze.md)")
    elif args.keypoint_depth:
        raise engine.UserError("--keypoint-depth needs --anchor keypoints")
    return args


def phase(args, it):
    """The supervised losses (L_Sa, L_Ta, L_Tm) and DA of iteration `it` (0-based): HeadFreeze
    trains eq. 4 on the source before the switch (Sec. 3.2), eq. 6 (+ DA) after it."""
    if args.headfreeze and it < args.freeze_at:
        return True, False, False, False
    return args.src_anchor, args.tgt_anchor, args.tgt_main, args.adapt


def _up(x, size):
    """A half-resolution output brought to the labels' size for the losses."""
    return F.interpolate(x.float(), size=size, mode="bilinear", align_corners=False)


def anchor_parts(out, batch, args):
    """The terms of L_a (eq. 2-3), unweighted: {"ce"} for semantics (Sec. 4.2); for keypoints
    {"heat"}, the heatmap regression (squared error summed over keypoints, mean over pixels),
    and with --keypoint-depth {"depth"}, the depth vector's squared error (Sec. 4.1, after
    Bulat et al.)."""
    size = batch["image"].shape[-2:]
    if args.anchor == "semantic":
        return {"ce": losses.cross_entropy(_up(out["semantic"], size), batch["semantic"])}
    parts = {"heat": (_up(out["keypoints"], size) - batch["keypoints"]).square().sum(1).mean()}
    if args.keypoint_depth:
        parts["depth"] = losses.masked_l2(out["keypoint_depth"].float(), batch["keypoint_depth"])
    return parts


def anchor_loss(out, batch, args):
    """L_a (eq. 2-3): CE, or heatmap + lambda_kp_depth x keypoint depth (anchor_parts)."""
    parts = anchor_parts(out, batch, args)
    return parts.get("ce", 0.0) + parts.get("heat", 0.0) + args.lambda_kp_depth * parts.get("depth", 0.0)


def main_loss(out, batch):
    """L_m (eq. 1): the cosine loss on surface normals (Sec. 4.1), over valid pixels."""
    return losses.cosine_normal_loss(_up(out["normals"], batch["image"].shape[-2:]), batch["normals"])


def forward(model, src, tgt, args):
    """The training outputs of both domains' batches (Sec. 4.4: batches of the same size): one
    forward per domain, so BatchNorm normalises each domain by itself (the paper is silent;
    train_dada.py does the same), or with --joint-bn one forward of the two batches together,
    split afterwards. tgt None: the source alone."""
    if tgt is None:
        return model(src["image"]), None
    if not args.joint_bn:
        return model(src["image"]), model(tgt["image"])
    if src["image"].shape[1:] != tgt["image"].shape[1:]:
        raise engine.UserError(f"--joint-bn needs source and target images of one size, got "
                               f"{tuple(src['image'].shape[-2:])} and {tuple(tgt['image'].shape[-2:])}")
    out = model(torch.cat([src["image"], tgt["image"]]))
    n = src["image"].shape[0]
    return _split(out, slice(0, n)), _split(out, slice(n, None))


def _split(out, part):
    """One domain's share (batch rows `part`) of a joint forward's outputs (dicts nested)."""
    return {k: _split(v, part) if isinstance(v, dict) else v[part] for k, v in out.items()}


def train_step(model, discs, src, tgt, optims, amp, args, it):
    """One iteration: the supervised terms of this phase and the adversarial terms on both
    domains' batches (same size; `forward`), one backward for the network's losses
    (discriminators frozen), then the output discriminator's on detached maps; every
    optimizer steps once."""
    for opt in optims.values():
        opt.zero_grad(set_to_none=True)
    sa, ta, tm, adapt = phase(args, it)
    # The target's main-task labels are loaded and read by the oracle only (Table 1).
    if tgt is not None and "normals" in tgt and args.variant != "oracle":
        raise AssertionError("target normals leaked")   # a real raise: python -O keeps it
    for d in discs.values():
        d.requires_grad_(args.da == "feature")     # GRL critics learn from the same backward
    stats, maps = {}, None
    with amp.autocast():
        out_s, out_t = forward(model, src, tgt if (ta or tm or adapt) else None, args)
        terms = {"Sm": main_loss(out_s, src)}
        if sa:
            terms["Sa"] = args.lambda_anchor * anchor_loss(out_s, src, args)
        if ta:
            terms["Ta"] = args.lambda_anchor * anchor_loss(out_t, tgt, args)
        if tm:
            terms["Tm"] = main_loss(out_t, tgt)
        if adapt:
            sizes = (src["image"].shape[-2:], tgt["image"].shape[-2:])
            adv, stats, maps = adversarial_terms(discs, out_s, out_t, args, it, sizes)
            terms.update(adv)
    if args.target_through_bn:
        with torch.no_grad(), amp.autocast():
            model(tgt["image"])                    # BatchNorm statistics only
    amp.backward(sum(terms.values()))
    for d in discs.values():
        d.requires_grad_(True)
    if maps is not None:
        d_terms, stats = discriminator_step(discs["output"], *maps, amp)
        terms.update(d_terms)
    values = engine.check_finite(terms, it + 1, list(src["name"]))
    values.update({k: float(v) for k, v in stats.items()})
    engine.average_grads(discs.values())
    amp.step(list(optims.values()))
    return values


def adversarial_terms(discs, out_s, out_t, args, it, sizes=None):
    """+DA (Sec. 4.3, eq. 7); source = 0, target = 1. "output" (Tsai et al.): the network's term
    lambda_adv BCE(D(target normals), source label), D frozen; D learns in discriminator_step;
    D sees the outputs upsampled to the input size (`sizes`), as Tsai et al.'s code does.
    "feature" (Ganin & Lempitsky, multi-level): a critic per top-down level behind a gradient
    reversal layer (Ganin's weight schedule, its p counted from the first adapted step:
    `grl_progress`), so one loss trains the critics and pushes the features the other way.
    Returns (loss terms, {"d_acc": accuracy}, detached output maps)."""
    if args.da == "output":
        n_s, n_t = (F.normalize(_up(o["normals"], size), dim=1) for o, size in zip((out_s, out_t), sizes))
        adv = args.lambda_adv * losses.bce_adv(discs["output"](n_t), 0.0)
        return {"adv": adv}, {}, (n_s.detach(), n_t.detach())
    lam = args.lambda_grl * (2.0 / (1.0 + math.exp(-10.0 * grl_progress(args, it))) - 1.0)
    total, accs = 0.0, []
    for level in LEVELS:
        ls = discs[level](losses.grad_reverse(out_s["feats"][level].float(), lam))
        lt = discs[level](losses.grad_reverse(out_t["feats"][level].float(), lam))
        total = total + (losses.bce_adv(ls, 0.0) + losses.bce_adv(lt, 1.0)) / 2
        accs.append(domain_accuracy(ls.detach(), lt.detach()))
    return {"grl": total / len(LEVELS)}, {"d_acc": sum(accs) / len(accs)}, None


def da_start(args):
    """The first iteration with a DA term: the switch for HeadFreeze+DA (its first phase is
    HeadFreeze's own), 0 for Baseline+DA."""
    return args.freeze_at if args.headfreeze else 0


def grl_progress(args, it):
    """Ganin's training progress p in [0, 1] of iteration `it`, counted over the adapted steps
    only (from da_start), so the reversal weight starts at 0 where the DA term starts."""
    start = da_start(args)
    return max(0, it - start) / max(1, args.iters - start)


def schedulers(optims, args):
    """Poly 0.9 for every optimizer over --iters; the discriminators' and critics' counted from
    da_start, as they first train there (their lr is the base lr until then, unused)."""
    start = da_start(args) if args.adapt else 0
    out = {}
    for name, opt in optims.items():
        begin, steps = (0, args.iters) if name == "model" else (start, args.iters - start)
        out[name] = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda it, b=begin, n=max(1, steps): max(0.0, 1.0 - max(0, it - b) / n) ** args.poly_power)
    return out


def discriminator_step(d, n_s, n_t, amp):
    """Tsai et al.'s discriminator update on the detached source (0) and target (1) normals."""
    ls, lt = d(n_s), d(n_t)
    loss = (losses.bce_adv(ls, 0.0) + losses.bce_adv(lt, 1.0)) / 2
    amp.backward(loss)
    return {"d": loss.detach()}, {"d_acc": domain_accuracy(ls.detach(), lt.detach())}


def domain_accuracy(logits_s, logits_t):
    """Share of locations a discriminator assigns to the right domain, the two domains weighted
    equally (Sec. 4.4: adaptation works when this stays below 55%)."""
    return ((logits_s < 0).float().mean() + (logits_t > 0).float().mean()) / 2


def wrap(net, args):
    """DDP (and --compile) around the training forward; rebuilt at the switch, so the frozen head
    leaves DDP's reducer. The baselines never train their anchor head: DDP must allow that."""
    return engine.prepare_model(RawOutputs(net), args,
                                find_unused=args.variant in ("baseline", "baseline+da"))


def tasks_of(args, num_classes):
    """Normals (the main task) and the anchor: C semantic classes or K keypoint heatmaps."""
    anchor = {"semantic": num_classes} if args.anchor == "semantic" else {"keypoints": args.keypoints}
    return {"normals": 3, **anchor}


def build(args, num_classes):
    """The network, its Adam, and the +DA discriminators with theirs."""
    spec = model_spec("headfreeze", backbone=args.backbone, pretrained=args.pretrained,
                      tasks=tasks_of(args, num_classes), width=args.fpn_width,
                      keypoint_depth=args.keypoints if args.keypoint_depth else 0,
                      freeze_after=args.freeze_after)
    net = build_model(spec)
    optims = {"model": torch.optim.Adam(net.parameters(), lr=args.lr)}
    discs = {}
    if args.adapt and args.da == "output":
        discs["output"] = OutputDiscriminator(3)
    elif args.adapt:
        discs = {level: FeatureCritic(args.fpn_width) for level in LEVELS}
    for k, d in discs.items():
        optims[f"d_{k}"] = torch.optim.Adam(d.parameters(), lr=args.d_lr, betas=(0.9, 0.99))
    return spec, net, discs, optims


def labels_of(args, role):
    """What each domain's training set loads: the target's normals for the oracle only."""
    anchor = ["semantic"] if args.anchor == "semantic" else []
    if role == "src":
        return ["normals"] + anchor
    return (anchor if args.tgt_anchor else []) + (["normals"] if args.tgt_main else [])


def _options(args, role):
    """The shared data options; keypoint files (the folder extension) where the anchor trains."""
    opts = data_options(args, role)
    if args.anchor == "keypoints" and (role == "src" or args.tgt_anchor):
        opts.update(keypoints=True, keypoint_depth=args.keypoint_depth)
    return opts


def datasets(args):
    """Source train (normals + anchor) and target train (what labels_of allows), same size."""
    data_a = build_dataset(args.src, "train", args.size, args.data_root, args.seed, args.proc_length,
                           labels=labels_of(args, "src"), role="--src", train=True, **_options(args, "src"))
    data_b = build_dataset(args.tgt, "train", args.size, args.data_root, args.seed + 1, args.proc_length,
                           labels=labels_of(args, "tgt"), role="--tgt", train=True, **_options(args, "tgt"))
    if args.anchor == "keypoints":
        for data, flag in ((data_a, "--src"), (data_b, "--tgt")):
            if len(data):
                check_keypoints(data[0], flag, args)
    return data_a, data_b


def check_keypoints(sample, flag, args):
    """The keypoint files hold --keypoints heatmaps (and depths): a one-line error before training,
    not a broadcast loss or a shape error at the first step."""
    for key in ("keypoints", "keypoint_depth"):
        if key in sample and sample[key].shape[0] != args.keypoints:
            raise engine.UserError(f"{flag}: the {key} file of {sample['name']} holds "
                                   f"{sample[key].shape[0]} keypoints, --keypoints is {args.keypoints}")


def val_data(name, role, args):
    """One domain's --val-split with normals (and the semantic anchor), built before training
    so a bad split is a one-line error, not a finished run that cannot be scored."""
    tasks = ["normals"] + (["semantic"] if args.anchor == "semantic" else [])
    return scoring_loader(name, tasks, args, f"--{role}", max(args.batch_size, 4), split=args.val_split,
                          **data_options(args, role))


def source_val_loader(args, vals):
    """What --eval-every scores: the source's val split (Sec. 4.4 tunes "stop criteria, learning
    rate, layers to freeze" on available ground truth; never a target's labels). Not a scoring
    protocol of the run (args.scoring), which is the reported --val-split's."""
    if args.val_split == "val":
        return vals["source"]
    tasks = ["normals"] + (["semantic"] if args.anchor == "semantic" else [])
    data = build_dataset(args.src, "val", args.size, args.data_root, length=args.proc_length, labels=tasks,
                         role="--src", **data_options(args, "src"))
    return engine.eval_loader(data, max(args.batch_size, 4), args, args.eval_batches)


def _first_batch(data, args):
    """The first --batch-size samples of a training set as one batch on the device, drawn
    under a fixed seed that leaves the run's random streams alone."""
    with engine.isolated_rng(args.seed):
        samples = [data[i] for i in range(min(args.batch_size, len(data)))]
    return engine.to_device(torch.utils.data.default_collate(samples), args.device, args.channels_last)


@torch.no_grad()
def measure_lambdas(net, data_a, data_b, args, amp, start=0):
    """Sec. 4.4: "We choose lambda so losses from different domains and tasks have similar
    magnitudes", read as a rule measured once, before the first step, and then fixed (ours: the
    paper states the aim, not when or how it is measured). On the first --batch-size samples of
    each domain whose anchor this variant trains, with the network as initialised (ImageNet
    backbone under the paper preset, random heads) in train mode, its BatchNorm buffers restored
    afterwards: --lambda-kp-depth auto = heatmap / depth loss, then --lambda-anchor auto = L_Sm /
    the mean over those domains of L_a. Sets both weights; returns the record that metrics.json,
    the log and the checkpoints keep (`measured_on` says on what). `start`: the iteration the
    run starts at, 0 except for a resumed checkpoint that predates the record."""
    rule = {"anchor": args.lambda_anchor, "kp_depth": args.lambda_kp_depth}
    record = {"rule": {k: "auto" if v == "auto" else "fixed" for k, v in rule.items()}}
    domains = [d for d, used in (("S", args.src_anchor), ("T", args.tgt_anchor)) if used]
    if "auto" in rule.values() and domains:
        batches = {"S": _first_batch(data_a, args)}
        if "T" in domains:
            batches["T"] = _first_batch(data_b, args)
        buffers = [b.clone() for b in net.buffers()]
        net.train()
        with amp.autocast():
            outs = {d: net.forward_raw(b["image"]) for d, b in batches.items()}
            measured = {"Sm": main_loss(outs["S"], batches["S"])}
            for d in domains:
                measured.update({f"{d}_{k}": v for k, v in anchor_parts(outs[d], batches[d], args).items()})
        for b, saved in zip(net.buffers(), buffers):
            b.copy_(saved)
        measured = engine.all_reduce_mean({k: float(v) for k, v in measured.items()})
        record["measured"] = measured
        record["measured_on"] = {
            "iteration": start, "domains": domains, "samples_per_domain": len(batches["S"]["name"]),
            "network": "as initialised, before the first step" if start == 0 else
                       f"as restored at iteration {start} (its checkpoint holds no measured lambda)",
            "reading": "ours: Sec. 4.4 gives the aim (similar loss magnitudes), not how to measure it"}

        def mean(part):
            values = [measured[f"{d}_{part}"] for d in domains if f"{d}_{part}" in measured]
            return sum(values) / len(values) if values else 0.0
        if rule["kp_depth"] == "auto" and mean("depth") > 0:
            rule["kp_depth"] = mean("heat") / mean("depth")
        kp = 1.0 if rule["kp_depth"] == "auto" else rule["kp_depth"]
        anchor = mean("ce") + mean("heat") + kp * mean("depth")
        if rule["anchor"] == "auto" and anchor > 0:
            rule["anchor"] = measured["Sm"] / anchor
    # auto with nothing to balance (no anchor trained, no depth branch): the weight is unused
    args.lambda_anchor, args.lambda_kp_depth = (1.0 if v == "auto" else float(v) for v in rule.values())
    record.update(lambda_anchor=args.lambda_anchor, lambda_kp_depth=args.lambda_kp_depth)
    return record


def score(net, loader, args, nc, amp):
    """Normal metrics (Sec. 4.1: % < 11.25, % < 30, RMSE, mean, median over valid pixels) and,
    with a semantic anchor, mIoU, on the --val-split of one domain."""
    tasks = ["normals"] + (["semantic"] if args.anchor == "semantic" else [])
    m = evaluate_model(net, loader, args.device, tasks, nc, amp=amp, progress=False)
    return {k: m[k] for k in ("pct_11_25", "pct_30", "rmse_deg", "mean", "median", "mIoU") if k in m}


def main(args):
    apply_preset(args, PRESETS, [args.src, args.tgt])
    resolve_variant(args)
    if args.headfreeze and engine.is_main():
        from lib.models.headfreeze import head_module_names
        print(f"HeadFreeze: switch at iteration {args.freeze_at} (ours: --freeze-at, by default half of "
              f"--iters), then {', '.join(head_module_names(args.freeze_after))} frozen (--freeze-after "
              f"{args.freeze_after}: the layers after upsampling layer {args.freeze_after})", flush=True)
    args.classes = resolve_classes([(args.src, "--src"), (args.tgt, "--tgt")], args.classes)
    logger = engine.setup_run(args, SCRIPT)
    data_a, data_b = datasets(args)
    vals = {"source": val_data(args.src, "src", args), "target": val_data(args.tgt, "tgt", args)}
    nc = getattr(data_a, "classes", None) or args.classes or get_entry(args.src).num_classes
    spec, net, discs, optims = build(args, nc)
    model = wrap(net, args)
    net = engine.unwrap(model).net                 # SyncBN conversion may have replaced modules
    discs = {k: engine.prepare_model(d, args, ddp=False) for k, d in discs.items()}
    loaders = {"a": engine.InfiniteLoader(data_a, args.batch_size, args, domain=0),
               "b": engine.InfiniteLoader(data_b, args.batch_size, args, domain=1)}
    scheds = schedulers(optims, args)
    amp = engine.Amp(args.amp, args.device)
    select = source_val_loader(args, vals) if args.eval_every else None
    state = dict(models={"model": net, **{f"d_{k}": d for k, d in discs.items()}}, optimizers=optims,
                 schedulers=scheds, amp=amp, loaders=loaders)
    start, acc, lam = 0, {"steps": 0, "below_55": 0}, None
    if path := engine.resume_path(args):
        ckpt = engine.load_checkpoint(path, SCRIPT)
        start, acc = engine.restore(ckpt, **state), ckpt["extra"].get("d_acc", acc)
        if lam := ckpt["extra"].get("lambda"):     # measured at the start of the run, not again
            args.lambda_anchor, args.lambda_kp_depth = lam["lambda_anchor"], lam["lambda_kp_depth"]
        if bool(net.head_frozen):                  # DDP must be rebuilt without the frozen head
            model = wrap(net, args)
    if lam is None:
        lam = measure_lambdas(net, data_a, data_b, args, amp, start)
        logger.write({"iter": start, "event": "lambda", **lam})
        if engine.is_main():
            print(f"lambda_anchor {args.lambda_anchor:.4g} ({lam['rule']['anchor']}), lambda_kp_depth "
                  f"{args.lambda_kp_depth:.4g} ({lam['rule']['kp_depth']})"
                  + (", measured " + " ".join(f"{k}={v:.4g}" for k, v in lam["measured"].items())
                     if "measured" in lam else ""), flush=True)
    ckpt_path = os.path.join(args.output_dir, "checkpoint.pth")
    logger.start(start)
    model.train()
    for it in range(start, engine.stop_iteration(args)):
        if args.headfreeze and it == args.freeze_at and not bool(net.head_frozen):
            net.freeze_head()                      # Sec. 3.2: the head stops learning here
            model = wrap(net, args)
            model.train()
            logger.write({"iter": it, "event": "head frozen"})
        src = engine.to_device(next(loaders["a"]), args.device, args.channels_last)
        uses_target = any(phase(args, it)[1:]) or args.target_through_bn
        tgt = engine.to_device(next(loaders["b"]), args.device, args.channels_last) if uses_target else None
        values = train_step(model, discs, src, tgt, optims, amp, args, it)
        if "d_acc" in values:
            acc = {"steps": acc["steps"] + 1, "below_55": acc["below_55"] + (values["d_acc"] < 0.55)}
        engine.step_schedulers(scheds.values())   # after the optimizers (engine: its warning)
        logger.step(it + 1, values, lr=scheds["model"].get_last_lr()[0])
        if engine.should_save(it + 1, args):
            engine.save_checkpoint(ckpt_path, script=SCRIPT, iteration=it + 1, args=args,
                                   model_specs={"model": spec}, extra={"inference_model": "model",
                                                                       "d_acc": acc, "lambda": lam}, **state)
        if select is not None and (it + 1) % args.eval_every == 0 and it + 1 != args.iters:
            # A curve to tune on (the switch point, the stop): logged, the last model is reported.
            logger.write({"iter": it + 1, "source_val": score(net, select, args, nc, amp)})
    if engine.stop_iteration(args) < args.iters:
        engine.cleanup_distributed()
        return None  # --stop-at: continue with --resume auto
    return finish(net, spec, nc, args, amp, acc, logger, vals, lam)


def finish(net, spec, nc, args, amp, acc, logger, vals, lam):
    """The last model, saved, then scored on both domains' validation splits."""
    if engine.is_main():
        engine.save_checkpoint(os.path.join(args.output_dir, "model.pth"), script=SCRIPT,
                               iteration=args.iters, args=args, models={"model": net},
                               model_specs={"model": spec}, extra={"inference_model": "model"})
    metrics = {"selection": "last", "variant": args.variant, "iteration": args.iters,
               "val_split": args.val_split, "head_frozen": bool(net.head_frozen),
               "freeze_at": args.freeze_at if args.headfreeze else None,
               "freeze_after": args.freeze_after if args.headfreeze else None, "lambda": lam,
               "d_acc_below_55": acc["below_55"] / acc["steps"] if acc["steps"] else None,
               "source": score(net, vals["source"], args, nc, amp),
               "target": score(net, vals["target"], args, nc, amp)}
    logger.write({"iter": args.iters, **metrics})
    if engine.is_main():
        engine.write_json(metrics, os.path.join(args.output_dir, "metrics.json"))
        for dom in ("source", "target"):
            m = metrics[dom]
            print(f"{dom} ({args.src if dom == 'source' else args.tgt} {args.val_split}): "
                  f"<11.25 {m['pct_11_25']:.1f}% <30 {m['pct_30']:.1f}% rmse {m['rmse_deg']:.2f} "
                  f"mean {m['mean']:.2f} median {m['median']:.2f}"
                  + (f" | anchor mIoU {m['mIoU']:.2f}" if "mIoU" in m else ""))
    engine.cleanup_distributed()
    return metrics


if __name__ == "__main__":
    engine.cli(main, parse(get_args_parser()))
