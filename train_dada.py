"""DADA (Vu et al., ICCV 2019): depth-aware adversarial domain adaptation for semantic
segmentation, with its AdvEnt and source-only baselines: every setup of Table 3 (S1-S7).

    python train_dada.py                                     # DADA (S7) on the procedural benchmark
    python train_dada.py --setup s2                          # AdvEnt; s1: source only
    python train_dada.py --src synthia --tgt cityscapes --data-root DATA        # the paper's run
    python train_dada.py --src synthia --tgt mapillary --data-root DATA --classes 7

--src (A) brings semantic and depth labels, --tgt (B) only images: a target batch never
reaches a supervised loss. On real data the defaults are the paper's and the official code's
(PRESETS below, `--preset`); on the procedural benchmark a small CPU run.
No arguments (300 steps): 7.1 minutes (one thread beside another run on the
2-core CPU machine, 2026-12-04; an idle machine is faster).
"""
import argparse
import os

import torch
import torch.nn.functional as F

from lib import engine, losses
from lib.args import add_common_args, apply_preset, new_parser, parse, set_presets
from lib.data import build_dataset, data_options, get_entry, require_labels, resolve_classes
from lib.data.labels import CLASS_NAMES
from lib.data.transforms import IMAGE_RESAMPLE
from lib.evaluation import evaluate_model, per_class_line, scoring_loader
from lib.models import build_model, model_spec, RawOutputs
from lib.models.discriminators import OutputDiscriminator
from lib.optim import RepeatedSGD

SCRIPT = "train_dada.py"
OFFICIAL = "official code (valeoai/DADA, ADVENT)"
# Table 3: surprisal adaptation, depth adaptation, feature fusion, DADA fusion.
# --backbone-sgd: None = torch.optim.SGD, each tensor once; else lib.optim.RepeatedSGD's semantics.
BACKBONE_SGD = {"once": None, "official": "torch1.2", "official-torch2": "torch2"}
SETUPS = {"s1": (0, 0, 0, 0), "s2": (1, 0, 0, 0), "s3": (1, 0, 1, 0), "s4": (0, 1, 0, 0),
          "s5": (0, 1, 1, 0), "s6": (1, 1, 1, 0), "s7": (1, 1, 1, 1)}
# flag: (paper value, its source, cpu value). The cpu column is this repository's small run
# from scratch at 64x128; its lr is ours and untuned (docs/dada.md).
PRESETS = {
    "backbone": ("resnet101", "Sec. 4.1: DeepLab-v2 ResNet-101", "resnet18"),
    "pretrained": ("imagenet", "Sec. 4.1: ImageNet initialisation (the official file via PATH)", "none"),
    "classes": (16, "Table 1: 16 SYNTHIA classes (13-class mIoU* from the same scores)", None),
    "src_resize": ((760, 1280), "official config (INPUT_SIZE_SOURCE; Sec. 4.1 gives none): SYNTHIA resized to 1280x760", None),
    "tgt_resize": (lambda a: (768, 1024) if a.tgt == "mapillary" else (512, 1024),
                   "official configs: Cityscapes resized to 1024x512; Vistas fitted into 1024x768 "
                   "and padded (configs_s2m, dataset/mapillary.py)", None),
    "size": ((512, 1024), "no crops: each domain trains at its --src/--tgt-resize", (64, 128)),
    "image_resample": ("bicubic", "official code: images resized with PIL BICUBIC, labels NEAREST "
                       "(ADVENT dataset/base_dataset.py; DADA dataset/mapillary.py)", "bilinear"),
    "batch_size": (1, "Sec. 3.2: a mini-batch of one source and one target image", 4),
    "iters": (90000, "official config: 90k iterations", 300),   # cpu: the no-argument run; the tables pass 600
    "lr": (2.5e-4, "Sec. 4.1: SGD 2.5e-4, momentum 0.9 (poly 0.9: official config)", 1e-2),
    "weight_decay": (5e-4, "official config (the paper's text says 1e-4)", 5e-4),
    "backbone_sgd": ("official", "official code: ADVENT's get_1x_lr_params_no_scale lists each "
                     "backbone tensor 1-4 times, stepped as PyTorch 1.2 (the official Dockerfile)", "once"),
    "lambda_dep": (1e-3, "Sec. 4.1: lambda_dep 1e-3; cpu: fits the source's depth from scratch (docs/dada.md)", 0.1),
    "depth_target_scale": (1.0, "official SYNTHIA loader: 65536 / (depth_cm + 1); cpu: the procedural source's "
                    "mean target 64 brought to 1 (docs/dada.md)", 1 / 64),
    "save_every": (5000, "ours: one resumable checkpoint every 5000 steps", 300),
}


def get_args_parser(add_help=True):
    parser = new_parser(__doc__, add_help)
    add_common_args(parser)
    g = parser.add_argument_group("DADA")
    g.add_argument("--setup", default="s7", choices=list(SETUPS),
                   help="Table 3: s1 source only, s2 AdvEnt, s3-s6 ablations, s7 DADA; sets the "
                        "four switches below unless they are given")
    for flag, what in (("surprisal-adapt", "adversarial adaptation of the surprisal I (eq. 5)"),
                       ("depth-adapt", "adversarial adaptation of the inverse depth Z"),
                       ("feat-fusion", "depth block fused into the features (Sec. 3.1)"),
                       ("dada-fusion", "one discriminator on I x Z (eq. 6, Sec. 3.2)")):
        g.add_argument(f"--{flag}", action=argparse.BooleanOptionalAction, default=None, help=what)
    g.add_argument("--lambda-dep", type=float, default=None, help="depth loss weight (Sec. 4.1)")
    g.add_argument("--depth-target-scale", type=float, default=None,
                   help="multiplies the official inverse-depth target 65536 / (100 d + 1), d in metres")
    g.add_argument("--lambda-adv", type=float, default=1e-3, help="adversarial weight (Sec. 4.1)")
    g.add_argument("--momentum", type=float, default=0.9, help="SGD momentum (Sec. 4.1)")
    g.add_argument("--weight-decay", type=float, default=5e-4, help="SGD weight decay")
    g.add_argument("--backbone-sgd", default="once", choices=list(BACKBONE_SGD),
                   help="once: each backbone tensor one SGD update per step (the nominal rate); "
                        "official: the official group's 1x conv1, 3x block convs, 4x downsample "
                        "convs, updated in a row as PyTorch 1.2 does (about 3x the rate; what "
                        "produced the paper's numbers); official-torch2: the same group as "
                        "PyTorch 2's SGD(foreach=False) steps it (lib/optim.py)")
    g.add_argument("--d-lr", type=float, default=1e-4, help="discriminator Adam lr (Sec. 4.1)")
    g.add_argument("--d-width", type=int, default=64,
                   help="first width of each discriminator (ADVENT's ndf: 64, doubling to 512)")
    g.add_argument("--src-resize", type=int, nargs=2, default=None, metavar=("H", "W"),
                   help="resize of --src images and labels (default: --resize)")
    g.add_argument("--tgt-resize", type=int, nargs=2, default=None, metavar=("H", "W"),
                   help="resize of --tgt images (default: --resize)")
    g.add_argument("--image-resample", default="bilinear", choices=list(IMAGE_RESAMPLE),
                   help="how --src/--tgt-resize resample the images: bilinear (antialiased; ours) "
                        "or bicubic (PIL's, as the official loaders); labels are always nearest")
    g.add_argument("--source-fraction", type=float, default=1.0,
                   help="train on this fraction of the source split, its first images (Table 4)")
    g.add_argument("--freeze-bn-stats", action="store_true",
                   help="BN normalises with running statistics (the official loop uses batch ones)")
    g.add_argument("--target-through-bn", action="store_true",
                   help="control for s1: target images pass through the network in train mode "
                        "with no loss, so only BatchNorm statistics see them")
    g.add_argument("--select-on-target-val", action="store_true",
                   help="the official protocol: keep the snapshot best on target val every "
                        "--eval-every (uses target labels; recorded in metrics.json)")
    parser.set_defaults(poly_power=0.9, output_dir=None)
    return set_presets(parser, PRESETS)


def resolve_setup(args):
    """Table 3's switches from --setup, unless given explicitly."""
    for name, value in zip(("surprisal_adapt", "depth_adapt", "feat_fusion", "dada_fusion"),
                           SETUPS[args.setup]):
        if getattr(args, name) is None:
            setattr(args, name, bool(value))
    if args.dada_fusion and not (args.surprisal_adapt and args.depth_adapt):
        raise engine.UserError("--dada-fusion fuses surprisal and depth: it needs --surprisal-adapt "
                               "and --depth-adapt")
    if not args.depth_target_scale > 0:
        raise engine.UserError(f"--depth-target-scale must be positive, got {args.depth_target_scale}")
    if not 0 < args.source_fraction <= 1:
        raise engine.UserError(f"--source-fraction must lie in (0, 1], got {args.source_fraction}")
    if args.target_through_bn and (args.surprisal_adapt or args.depth_adapt):
        raise engine.UserError("--target-through-bn is the BatchNorm control of source-only "
                               "training (--setup s1)")
    args.depth_block = args.depth_adapt or args.feat_fusion
    return args


def inverse_depth_target(depth_m, scale=1.0):
    """The inverse depth z_s that eq. 2's berHu regresses (Sec. 3.1: the depth block predicts
    inverse depth), as the official SYNTHIA loader writes it, 65536 / (depth_cm + 1), here for
    depth in metres so every dataset gets the same scale, times --depth-target-scale (1:
    official); invalid pixels (0) are masked."""
    return scale * 65536.0 / (100.0 * depth_m + 1.0), depth_m > 0


def discriminator_inputs(logits, inv_depth, args):
    """The maps the discriminators see (eq. 6-7): I (S2-S3), Z (S4-S5), I and Z apart (S6),
    or I x Z (S7, DADA fusion), at the input size as the official code upsamples them."""
    maps = {}
    if args.dada_fusion:
        maps["fused"] = losses.surprisal_map(logits) * inv_depth.unsqueeze(1)
        return maps
    if args.surprisal_adapt:
        maps["surprisal"] = losses.surprisal_map(logits)
    if args.depth_adapt:
        maps["depth"] = inv_depth.unsqueeze(1)
    return maps


def forward(model, x):
    """Logits and inverse depth upsampled to the input size (align_corners, as the official)."""
    logits, inv_depth = model(x)
    size = x.shape[-2:]
    logits = F.interpolate(logits, size=size, mode="bilinear", align_corners=True)
    if inv_depth is not None:
        inv_depth = F.interpolate(inv_depth[:, None], size=size, mode="bilinear", align_corners=True)[:, 0]
    return logits.float(), None if inv_depth is None else inv_depth.float()


def train_step(model, discs, src, tgt, optims, amp, args, it):
    """One iteration in the official order (train_UDA.py): the network's losses, then each
    discriminator's, then every optimizer steps once."""
    for opt in optims.values():
        opt.zero_grad(set_to_none=True)
    terms, maps_s, maps_t = generator_step(model, discs, src, tgt, amp, args)
    terms.update(discriminator_step(discs, maps_s, maps_t, amp))
    values = engine.check_finite(terms, it + 1, list(src["name"]) + list(tgt["name"]))
    engine.average_grads(discs.values())
    amp.step(list(optims.values()))
    return values


def generator_step(model, discs, src, tgt, amp, args):
    """The source's supervised losses (CE, lambda_dep berHu on inverse depth), backward; then
    the target's fooling losses (eq. 7, target maps labelled as source), backward, with the
    discriminators frozen so these losses never reach them."""
    for d in discs.values():
        d.requires_grad_(False)
    with amp.autocast():
        logits_s, z_s = forward(model, src["image"])
    terms = {"seg": losses.cross_entropy(logits_s, src["semantic"])}
    if z_s is not None:
        target, mask = inverse_depth_target(src["depth"], args.depth_target_scale)
        terms["dep"] = args.lambda_dep * losses.berhu(z_s, target, mask)
    amp.backward(sum(terms.values()))
    maps_s, maps_t = discriminator_inputs(logits_s.detach(), _detach(z_s), args), {}
    if args.target_through_bn:
        with torch.no_grad(), amp.autocast():
            forward(model, tgt["image"])                  # BatchNorm statistics only
    if discs:
        with amp.autocast():
            logits_t, z_t = forward(model, tgt["image"])   # no label of B is read here
        maps_t = discriminator_inputs(logits_t, z_t, args)
        terms["adv"] = args.lambda_adv * sum(losses.bce_adv(discs[k](m), 0.0) for k, m in maps_t.items())
        amp.backward(terms["adv"])
    for d in discs.values():
        d.requires_grad_(True)
    return terms, maps_s, {k: m.detach() for k, m in maps_t.items()}


def discriminator_step(discs, maps_s, maps_t, amp):
    """Eq. 6: each discriminator on the detached source (label 0) and target (label 1) maps,
    so its loss never reaches the network. One backward of the mean of the two BCE terms.

    ADVENT's advent/domain_adaptation/train_UDA.py (train_advent, the AdvEnt of S2) halves each
    term and backpropagates it alone, `loss_d_main = loss_d_main / 2; loss_d_main.backward()`
    for the source and again for the target: gradients add up, so that is this gradient
    exactly. DADA's own dada/domain_adaptation/train_UDA.py (train_dada) does not halve
    (`loss_d_main = loss_d_main` before each backward), so its discriminator gradient is twice
    this one; Adam's step is unchanged by a constant gradient scale except through its eps
    (1e-8), so the updates agree but for weights whose gradient is that small (tests/test_dada.py,
    test_discriminator_loss_is_advents_halves_and_dadas_sum_up_to_adams_eps). The
    logged d_* is the mean of the two terms (DADA's log prints the target term alone)."""
    terms = {}
    for k, d in discs.items():
        loss = (losses.bce_adv(d(maps_s[k]), 0.0) + losses.bce_adv(d(maps_t[k]), 1.0)) / 2
        amp.backward(loss)
        terms[f"d_{k}"] = loss.detach()
    return terms


def _detach(x):
    return None if x is None else x.detach()


def build(args, num_classes):
    """DeepLab-v2 (+ the depth block), its SGD with the 10x head group (the backbone group with
    the official repeats under --backbone-sgd official*), the discriminators."""
    # The official ImageNet file expects Caffe-style BGR input; torchvision's and random
    # initialisations take this repository's normalised RGB (docs/dada.md).
    official_init = str(args.pretrained).lower() not in ("none", "imagenet")
    spec = model_spec("dada", backbone=args.backbone, num_classes=num_classes,
                      depth_block=args.depth_block, feat_fusion=args.feat_fusion,
                      freeze_bn_stats=args.freeze_bn_stats, pretrained=args.pretrained,
                      caffe_input=official_init)
    model = build_model(spec)
    semantics = BACKBONE_SGD[args.backbone_sgd]
    groups = model.param_groups(args.lr, official_repeats=semantics is not None)
    sgd = dict(lr=args.lr, momentum=args.momentum, weight_decay=args.weight_decay)
    optims = {"model": torch.optim.SGD(groups, **sgd) if semantics is None
              else RepeatedSGD(groups, semantics=semantics, **sgd)}
    channels = {"surprisal": num_classes, "depth": 1, "fused": num_classes}
    discs = {k: OutputDiscriminator(channels[k], args.d_width) for k in discriminator_names(args)}
    for k, d in discs.items():
        optims[f"d_{k}"] = torch.optim.Adam(d.parameters(), lr=args.d_lr, betas=(0.9, 0.99))
    return spec, model, discs, optims


def discriminator_names(args):
    """One discriminator per adapted space (two in S6), one on I x Z with DADA fusion."""
    if args.dada_fusion:
        return ["fused"]
    return [k for k, on in (("surprisal", args.surprisal_adapt), ("depth", args.depth_adapt)) if on]


def datasets(args):
    """Source train (semantic + depth, --source-fraction of it) and target train (images)."""
    labels_a = ["semantic"] + (["depth"] if args.depth_block else [])
    resample = {"image_resample": args.image_resample}
    opts_a = {**data_options(args, "src"), "resize": args.src_resize or args.resize, **resample}
    opts_b = {**data_options(args, "tgt"), "resize": args.tgt_resize or args.resize, **resample}
    # No crops (official config): each domain trains at its own resized size when given.
    size_a, size_b = opts_a["resize"] or args.size, opts_b["resize"] or args.size
    data_a = build_dataset(args.src, "train", size_a, args.data_root, args.seed, args.proc_length,
                           labels=labels_a, role="--src", train=True, **opts_a)
    if args.source_fraction < 1:
        n = max(1, int(len(data_a) * args.source_fraction))
        data_a = build_dataset(args.src, "train", size_a, args.data_root, args.seed, n,
                               labels=labels_a, role="--src", train=True, **opts_a)
    data_b = build_dataset(args.tgt, "train", size_b, args.data_root, args.seed + 1, args.proc_length,
                           labels=[], role="--tgt", train=True, **opts_b)
    return data_a, data_b


def val_loader(name, role, args):
    """The official protocol: logits upsampled to the labels' own resolution (2048x1024 for
    Cityscapes), so the image alone is resized (and Vistas, whose sizes vary, one at a time)."""
    resize = (args.src_resize if role == "src" else args.tgt_resize) or args.resize
    return scoring_loader(name, ["semantic"], args, f"--{role}", max(args.batch_size, 4),
                         **{**data_options(args, role), "resize": resize, "native_labels": True,
                            "image_resample": args.image_resample})


def score(model, loader, nc, args, amp):
    """mIoU on a validation split; with 16 classes also mIoU* over 13 (no wall, fence, pole)."""
    m = evaluate_model(model, loader, args.device, ["semantic"], nc, amp=amp)
    if nc == 16:
        kept = [v for i, v in enumerate(m["per_class"]) if i not in (3, 4, 5) and v is not None]
        m["mIoU13"] = sum(kept) / len(kept) if kept else None
    return m


def main(args):
    apply_preset(args, PRESETS, [args.src, args.tgt])
    resolve_setup(args)
    args.classes = resolve_classes([(args.src, "--src"), (args.tgt, "--tgt")], args.classes)
    require_labels(args.src, ["semantic"] + (["depth"] if args.depth_block else []), "--src")
    logger = engine.setup_run(args, SCRIPT)
    data_a, data_b = datasets(args)
    nc = getattr(data_a, "classes", None) or args.classes or get_entry(args.src).num_classes
    spec, net, discs, optims = build(args, nc)
    model = engine.prepare_model(RawOutputs(net), args)
    net = engine.unwrap(model).net                 # SyncBN conversion may have replaced modules
    discs = {k: engine.prepare_model(d, args, ddp=False) for k, d in discs.items()}
    loaders = {"a": engine.InfiniteLoader(data_a, args.batch_size, args, domain=0),
               "b": engine.InfiniteLoader(data_b, args.batch_size, args, domain=1)}
    scheds = {k: engine.poly_scheduler(o, args.iters, args.poly_power) for k, o in optims.items()}
    amp = engine.Amp(args.amp, args.device)
    state = dict(models={"model": net, **{f"d_{k}": d for k, d in discs.items()}}, optimizers=optims,
                 schedulers=scheds, amp=amp, loaders=loaders)
    start, best_path = 0, os.path.join(args.output_dir, "best_model.pth")
    if path := engine.resume_path(args):
        start = engine.restore(engine.load_checkpoint(path, SCRIPT), **state)
    best = (torch.load(best_path, map_location="cpu", weights_only=True) if start and os.path.isfile(best_path)
            else {"score": None, "iteration": None, "state": None})
    val_tgt = val_loader(args.tgt, "tgt", args) if args.select_on_target_val else None
    ckpt_path = os.path.join(args.output_dir, "checkpoint.pth")
    logger.start(start)
    model.train()
    for it in range(start, engine.stop_iteration(args)):
        src = engine.to_device(next(loaders["a"]), args.device, args.channels_last)
        tgt = engine.to_device(next(loaders["b"]), args.device, args.channels_last)
        values = train_step(model, discs, src, tgt, optims, amp, args, it)
        engine.step_schedulers(scheds.values())   # after the optimizers (engine: its warning)
        logger.step(it + 1, values, lr=scheds["model"].get_last_lr()[0])
        if val_tgt is not None and args.eval_every and (it + 1) % args.eval_every == 0:
            best = select(net, val_tgt, nc, args, amp, it + 1, best, logger, best_path)
        if engine.should_save(it + 1, args):
            engine.save_checkpoint(ckpt_path, script=SCRIPT, iteration=it + 1, args=args,
                                   model_specs={"model": spec},
                                   extra={"inference_model": "model"}, **state)
    if engine.stop_iteration(args) < args.iters:
        engine.cleanup_distributed()
        return None  # --stop-at: continue with --resume auto
    return finish(net, spec, nc, args, amp, best, logger, discs)


def select(net, loader, nc, args, amp, iteration, best, logger, path):
    """--select-on-target-val: the official snapshot scan, on target labels (recorded); the
    best snapshot goes to its own file, weights only, as AT/DT's best G does."""
    m = score(net, loader, nc, args, amp)
    net.train()
    logger.write({"iter": iteration, "target_val": m})
    if best["score"] is None or m["mIoU"] > best["score"]:
        state = {k: v.detach().to("cpu", copy=True) for k, v in net.state_dict().items()}
        best = {"score": m["mIoU"], "iteration": iteration, "state": state}
        if engine.is_main():
            engine.atomic_save(best, path)
    return best


DIAG_BATCHES = 25      # ours: the diagnostic reads at most 25 val batches per domain (not a score)


def discriminator_counts(logits, label):
    """(patches on the right side of 0, patches, summed BCE) of one discriminator output
    against a domain label (0 source, 1 target): its accuracy at telling the domains apart."""
    right = (logits > 0) if label else (logits <= 0)
    return float(right.sum()), right.numel(), float(losses.bce_adv(logits, label)) * right.numel()


@torch.no_grad()
def diagnose(net, discs, args, amp):
    """The mechanism at work (ours, the benchmark's diagnostic): Z's fit on source val (abs
    rel against the inverse-depth target of eq. 2's berHu loss, eq. 3, and the two means), and each
    discriminator's patch accuracy and BCE on source (0) and target (1) val maps: 50% and
    ln 2 = 0.693 are chance. At the training size (each domain's --*-resize, else --size), at most
    DIAG_BATCHES batches each, on rank 0 alone (the other ranks return {})."""
    if not engine.is_main():
        return {}
    net.eval()
    model, sums = RawOutputs(net), {}

    def add(key, value):
        sums[key] = sums.get(key, 0.0) + value
    for role, name, label in (("src", args.src, 0), ("tgt", args.tgt, 1)):
        resize = (args.src_resize if role == "src" else args.tgt_resize) or args.resize or args.size
        opts = {**data_options(args, role), "resize": resize, "image_resample": args.image_resample}
        labels = ["depth"] if role == "src" and args.depth_block else []
        data = build_dataset(name, "val", resize, args.data_root, length=args.proc_length,
                             labels=labels, role=f"--{role}", **opts)
        for batch in engine.first_batches(data, max(args.batch_size, 4), args, args.eval_batches or DIAG_BATCHES):
            batch = engine.to_device(batch, args.device)
            with amp.autocast():
                logits, z = forward(model, batch["image"])
            if labels:
                target, mask = inverse_depth_target(batch["depth"], args.depth_target_scale)
                add("z_err", float(((z - target).abs() / target)[mask].sum()))
                add("z_sum", float(z[mask].sum()))
                add("t_sum", float(target[mask].sum()))
                add("z_n", float(mask.sum()))
            maps = discriminator_inputs(logits, z, args)
            for k, d in discs.items():
                right, n, bce = discriminator_counts(d(maps[k]).float(), label)
                add(f"{k}_{role}_right", right)
                add(f"{k}_{role}_bce", bce)
                add(f"{k}_{role}_n", n)
    out = {}
    if sums.get("z_n"):
        out["depth_source"] = {"abs_rel": sums["z_err"] / sums["z_n"], "z_mean": sums["z_sum"] / sums["z_n"],
                               "target_mean": sums["t_sum"] / sums["z_n"]}
    for k in discs:
        per = {role: {"acc": 100 * sums[f"{k}_{role}_right"] / sums[f"{k}_{role}_n"],
                      "bce": sums[f"{k}_{role}_bce"] / sums[f"{k}_{role}_n"]} for role in ("src", "tgt")}
        out[f"d_{k}"] = {**per, "acc": (per["src"]["acc"] + per["tgt"]["acc"]) / 2, "chance_acc": 50.0,
                         "chance_bce": 0.6931}
    net.train()
    return out


def finish(net, spec, nc, args, amp, best, logger, discs=None):
    """The reported model (last, or best on target val when asked), saved, then scored on the
    source and target validation splits."""
    selection, discs = "last", discs or {}
    if args.select_on_target_val and best["state"] is not None:
        net.load_state_dict(best["state"])
        selection = f"best on {args.tgt} val (iteration {best['iteration']}; target labels used)"
    val = {"source": val_loader(args.src, "src", args), "target": val_loader(args.tgt, "tgt", args)}
    if engine.is_main():   # after the loaders: its args record how they score (evaluate.py)
        engine.save_checkpoint(os.path.join(args.output_dir, "model.pth"), script=SCRIPT,
                               iteration=args.iters, args=args, models={"model": net},
                               model_specs={"model": spec},
                               extra={"inference_model": "model", "selection": selection})
    metrics = {"selection": selection, "setup": args.setup, "iteration": args.iters,
               **{dom: score(net, loader, nc, args, amp) for dom, loader in val.items()},
               "diagnostics": diagnose(net, discs, args, amp)}
    logger.write({"iter": args.iters, **metrics})
    if engine.is_main():
        engine.write_json(metrics, os.path.join(args.output_dir, "metrics.json"))
        names = CLASS_NAMES.get(nc)
        for dom in ("source", "target"):
            m = metrics[dom]
            print(f"{dom} ({args.src if dom == 'source' else args.tgt} val): mIoU={m['mIoU']:.2f} "
                  f"acc={m['acc']:.2f}" + (f" mIoU13={m['mIoU13']:.2f}" if m.get("mIoU13") is not None else ""))
            print("  " + per_class_line(m["per_class"], names))
        diag = metrics["diagnostics"]
        if "depth_source" in diag:
            z = diag["depth_source"]
            print(f"diagnostic: Z on source val abs rel {z['abs_rel']:.3f} (mean {z['z_mean']:.2f}, "
                  f"target {z['target_mean']:.2f})")
        for k in discs:
            d = diag[f"d_{k}"]
            print(f"diagnostic: D_{k} accuracy {d['acc']:.1f}% (source {d['src']['acc']:.1f}, target "
                  f"{d['tgt']['acc']:.1f}; 50 = chance), BCE {d['src']['bce']:.3f} / {d['tgt']['bce']:.3f} (0.693)")
    engine.cleanup_distributed()
    return metrics


if __name__ == "__main__":
    engine.cli(main, parse(get_args_parser()))
