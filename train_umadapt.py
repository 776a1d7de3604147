"""UM-Adapt (Kundu et al., ICCV 2019): unsupervised multi-task adaptation with cross-task
distillation, contour-based content regularisation (CCR) and energy-based adaptation.

    python train_umadapt.py                                   # every stage, Adv, procedural benchmark
    python train_umadapt.py --stage adapt --variant noadv     # one more variant from the same run
    python train_umadapt.py --src folder --src-root PBRS --tgt nyuv2 --data-root DATA   # Tables 1-3
    python train_umadapt.py --src folder --src-root GTA5D --tgt cityscapes,kitti_depth \
        --data-root DATA                                      # Tables 4-5 (two target datasets)
    torchrun --nproc_per_node=4 train_umadapt.py --stage base ...

Stages share one run folder (--output-dir RUN), each in its own sub-folder:
  transfer  N(->t) on source ground-truth maps (Sec. 3.1.1, Supp. Table 2)   RUN/transfer
  base      Ms + task decoders, Algorithm 1 (alpha, one Adam per task)      RUN/base (base-bn)
  ccr       the contour decoder on the frozen Ms's res5 (Sec. 3.2)          RUN/ccr
  adapt     Mt = Ms with only res5 training, --variant (Sec. 3.3)           RUN/adapt-VARIANT
  all       the four in order (finished ones skipped with --resume auto)
Variants: b (UM-Adapt-B, a WGAN-GP critic, Supp. Table 1), noadv (Algorithm 2, N frozen), noadv1
(N(->semantic) alone), adv (Algorithm 2, N trained on L_D), s (semi-supervised, from adapt-adv),
stats (the control: no loss, only res5's BatchNorm statistics follow the target).
No arguments (every stage, Adv): 7.7 minutes, transfer 1.9 + base 3.2 + ccr 0.7 + adapt 1.9
(one thread beside another run on the 2-core CPU machine, 2026-12-04; an idle machine is faster).
"""
import os

import torch

from lib import engine, losses
from lib.args import add_common_args, apply_preset, new_parser, parse, set_presets
from lib.data import build_dataset, get_entry, require_labels, resolve_classes
from lib.models import RawOutputs, build_model
from lib.models.umadapt import (TASK_ORDER, ContourDecoder, FeatureReconstructor, JointDiscriminator,
                                batch_stats_res5, target_forward, target_model, trunk)
from lib.umadapt import (adam, base_net, detached, energy, energy_floor, finish_stage, finished, freeze,
                         labels_at, load_models, margin_d_loss, named, net_spec, options, parse_pairs,
                         predicted_maps, score_contour, s_labels, score_energies, score_model,
                         score_transfer, scored_tasks, source_class_weights, stage_args, task_loss,
                         transfer_nets, true_maps, update)

SCRIPT = "train_umadapt.py"
STAGES = ("transfer", "base", "ccr", "adapt")
VARIANTS = ("b", "noadv", "noadv1", "adv", "s", "stats")
WGAN_BETAS = (0.0, 0.9)     # Gulrajani et al.'s Adam for the critic


def _pick(a, b):
    """The paper's value a indoors (a target is nyuv2: Tables 1-3), else b (Tables 4-5)."""
    return lambda args: a if "nyuv2" in str(args.tgt).split(",") else b


# flag: (paper value, its source, cpu value). Paper values that differ indoors / outdoors are
# functions of --tgt. The cpu column is this repository's small run from scratch at 64x128.
PRESETS = {
    "backbone": ("resnet50", "Sec. 3.1.2: ResNet-50 encoder", "resnet18"),
    "pretrained": ("imagenet", "ours: the paper does not say how Ms starts; Laina et al.'s FCRN (Sec. 4.1) "
                   "starts from ImageNet, but Table 8 compares the trunk with self-supervised methods", "none"),
    "tasks": (_pick(["semantic", "depth", "normals"], ["semantic", "depth"]),
              "Sec. 4: three tasks indoors, two outdoors", ["semantic", "depth", "normals"]),
    "transfer": (_pick(["semantic=depth,normals", "depth=semantic"], ["semantic=depth", "depth=semantic"]),
                 "Sec. 4.1 'Training details'", ["semantic=depth,normals", "depth=semantic"]),
    "target_labels": (s_labels, "Sec. 4.1; Supp.: KITTI depth only, Cityscapes semantics only", None),
    "classes": (_pick(40, 19), "Supp. Table 2: NYUv2 40 classes (its 40-way output); Cityscapes 19 "
                "(ours: the benchmark's, as Table 5's prior rows)", None),
    "resize": (_pick((240, 320), (256, 512)), "Laina et al.: NYU at 240x320; outdoor 256x512 "
               "(ours: Sec. 4.1 gives the input size only)", None),
    "size": (_pick((228, 304), (256, 512)), "Sec. 4.1: inputs 228x304 / 256x512", (64, 128)),
    "flip": (True, "Sec. 4.1: flips (and scales, not done here) following Eigen et al.", False),
    "max_depth": (_pick(10.0, 80.0), "ours, the usual caps: NYUv2 10 m; KITTI 80 m, "
                  "as Table 4's prior rows (Godard et al.)", 80.0),
    "kitti_protocol": ("eigen", "Table 4: the Eigen split as its prior-work rows score it (raw LiDAR, "
                       "Garg crop, 80 m)", "annotated"),
    "decoder_width": (1024, "Laina et al.: 1024 channels after res5", 128),
    "transfer_width": (64, "Supp. Table 2: 64 ... 1024 at the bottleneck", 32),
    "d_width": (64, "Supp. Table 1: 64 ... 1024", 32),
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
    add = g.add_argument
    add("--stage", default="all", choices=STAGES + ("all",), help="what to train (module docstring)")
    add("--variant", default="adv", choices=VARIANTS, help="adaptation (Sec. 3.3; stats: Mt's BN control)")
    add("--tasks", nargs="+", choices=TASK_ORDER, help="tasks of the multi-task model (any subset)")
    add("--transfer", nargs="*", metavar="T=A,B", help="networks N(->T)(A, B) (Sec. 3.1.1); the flag alone: none")
    add("--target-labels", nargs="*", metavar="NAME=T,T", help="variant s: each target's labels (default: all it has)")
    add("--alpha", type=float, default=10.0, help="distillation weight (Algorithm 1, Sec. 4.1)")
    add("--lambda-ccr", type=float, default=1.0, help="content weight lambda (Algorithm 2; not given)")
    add("--content", default="ccr", choices=["ccr", "fcf", "none"], help="UM-Adapt-B's content term (Sec. 3.2)")
    add("--margin", type=float, default=2.0, help="adv: L_D's EBGAN margin m = MARGIN x E_src (ours); 0: as printed")
    add("--g-steps", type=int, default=1, help="m: res5 steps per energy step (Algorithm 2)")
    add("--gp-lambda", type=float, default=10.0, help="b: WGAN-GP's penalty weight (Gulrajani et al.)")
    add("--pseudo-softmax", type=float, default=0.5, help="share of true seg maps as pseudo-softmax (Supp.)")
    add("--grad-mask", type=float, default=0.5, help="share of a batch behind the gradient mask (Supp.)")
    add("--class-weighting", default="median", choices=["median", "none"], help="CE class weights (Sec. 4.1)")
    add("--class-weight-images", type=int, default=200, help="source images counted for them")
    add("--decoder-width", type=int, default=1024, help="FCRN width after res5")
    add("--transfer-width", type=int, default=64, help="C1 width of N(->t), Supp. Table 2 scaled with it")
    add("--d-width", type=int, default=64, help="C1 width of UM-Adapt-B's critic, Supp. Table 1 scaled with it")
    add("--max-depth", type=float, default=80.0, help="depth evaluation cap (metres)")
    for stage in STAGES:
        add(f"--{stage}-iters", type=int, default=100, help=f"iterations of the {stage} stage (--iters overrides)")
    add("--transfer-lr", type=float, default=1e-3, help="Adam lr of N(->t) and the contour decoder")
    add("--adapt-lr", type=float, default=1e-4, help="Adam lr of res5 in the adaptation")
    add("--d-lr", type=float, default=1e-4, help="Adam lr of N (adv) / the critic (b)")
    add("--target-through-bn", action="store_true", help="base control: the target passes in train mode (RUN/base-bn)")
    add("--target-bn-stats", action="store_true", help="adapt: frozen layers use target batch statistics")
    add("--target-labelled", type=int, default=None, help="variant s: the first N target train images (default all)")
    parser.set_defaults(output_dir=None)
    return set_presets(parser, PRESETS)


# ----------------------------------------------------------------------------- set-up
def check_args(args):
    """Bad combinations as one-line errors, before anything trains; parses --tgt, --transfer, --target-labels."""
    args.targets = [t for t in str(args.tgt).split(",") if t]
    if not args.targets or (len(args.targets) > 1 and args.tgt_root):
        raise engine.UserError("--tgt needs a dataset name, or two comma-separated ones under --data-root "
                               "(--tgt-root names one folder)")
    args.tasks = [t for t in TASK_ORDER if t in args.tasks]
    inputs = {k: [t for t in args.tasks if t != k] for k in args.tasks}
    args.transfer_nets = parse_pairs(args.transfer, inputs, "--transfer",
                                     f"T=A[,B] with T, A, B among --tasks ({' '.join(args.tasks)}), T not an input")
    have = {n: [t for t in args.tasks if t in get_entry(n).labels] for n in args.targets}
    args.label_sets = {**have, **parse_pairs(args.target_labels, have, "--target-labels",
                                             f"NAME=T[,T] with NAME a --tgt, T among its labels in --tasks ({have})",
                                             empty=True)}
    if args.stage in ("adapt", "all") and args.variant not in ("b", "stats") and not needed_energies(args):
        raise engine.UserError(f"--variant {args.variant} needs task-transfer networks"
                               + (" with N(->semantic)" if args.variant == "noadv1" else "")
                               + f"; --transfer gives {args.transfer or 'none'}")
    if args.variant != "b" and args.content != "ccr":
        raise engine.UserError("--content fcf / none is UM-Adapt-B's ablation (--variant b)")
    if args.variant == "s" and args.stage in ("adapt", "all") and not all(args.label_sets.values()):
        raise engine.UserError("--variant s needs target labels of at least one task in every --tgt "
                               f"(--target-labels gives {args.label_sets})")
    if args.variant == "b" and args.target_bn_stats and args.stage in ("adapt", "all"):
        raise engine.UserError("--target-bn-stats with --variant b: Mt's frozen layers would normalise with batch "
                               "statistics and Ms's with running ones, a cue for the critic; drop one")
    if args.target_through_bn and args.stage != "base":
        raise engine.UserError("--target-through-bn is the BatchNorm control of --stage base (RUN/base-bn)")
    if args.g_steps < 1 or min(args.margin, args.alpha, args.lambda_ccr, args.gp_lambda) < 0 \
            or not (0 <= args.pseudo_softmax <= 1 and 0 <= args.grad_mask <= 1):
        raise engine.UserError("--g-steps must be positive, --margin, --alpha, --lambda-ccr and --gp-lambda "
                               "not negative, --pseudo-softmax and --grad-mask shares in [0, 1]")
    return args


def needed_energies(args):
    """The N(->t) of Algorithm 2: all of them, or N(->semantic) alone for noAdv-1 (Tables 1-3)."""
    return {t: v for t, v in args.transfer_nets.items() if args.variant != "noadv1" or t == "semantic"}


def stage_dir(args, stage):
    """The stage's sub-folder of RUN: base-bn for the BN control, adapt-VARIANT[-fcf|-none]."""
    if stage == "adapt":
        return f"adapt-{args.variant}" + ("" if args.content == "ccr" else f"-{args.content}")
    return "base-bn" if stage == "base" and args.target_through_bn else stage


# ----------------------------------------------------------------------------- steps
def transfer_step(nets, optims, src, amp, args):
    """Sec. 3.1.1: each N(->t) maps the other tasks' ground truth (semantics half one-hot, half
    pseudo-softmax, Supp.) to task t's ground truth."""
    y, terms = labels_at(src, args.tasks), {}
    for t, net in nets.items():
        with amp.autocast():
            terms[f"n_{t}"] = energy(nets, t, true_maps(y, args.num_classes, args.pseudo_softmax), y[t], args.cw)
        update(amp, optims[t], terms[f"n_{t}"], [net])
    return detached(terms)


def dist_step(forward, nets, optims, batch, amp, args, modules=(), after=None):
    """L_dist^t of Algorithm 1 for each task the batch has labels of, in turn: L_t(pred, gt) +
    alpha L_t(N(->t)(other preds), gt), one step of that task's Adam (optims[t]) per task; N
    frozen, the predictions reach it through the gradient mask (Supp.). `forward`: image ->
    predictions; `after`: called after each step."""
    y, terms = labels_at(batch, args.tasks), {}
    for t in (t for t in args.tasks if t in y):
        with amp.autocast():
            preds = forward(batch["image"])
            loss = terms[t] = task_loss(t, preds[t], y[t], args.cw)
            if t in nets and args.alpha:
                terms[f"dist_{t}"] = energy(nets, t, predicted_maps(preds, args.grad_mask), y[t], args.cw)
                loss = loss + args.alpha * terms[f"dist_{t}"]
        update(amp, optims[t], loss, modules)
        if after:
            after()
    return detached(terms)


def base_step(model, nets, optims, src, tgt, amp, args):
    """Algorithm 1 (dist_step) over all base parameters. The BN control (--target-through-bn)
    passes the target batch after each task's step, with no loss: as many target passes as
    source ones, each after its source pass, so only BatchNorm statistics differ."""
    def through_bn():
        with torch.no_grad(), amp.autocast():
            model(tgt["image"])
    return dist_step(lambda x: {k: v.float() for k, v in model(x).items()}, nets, optims, src, amp, args,
                     after=through_bn if args.target_through_bn else None)


def ccr_step(ms, contour, fcf, optim, src, amp):
    """Sec. 3.2: C_contour on the frozen Ms's res5 vs the input's contour map (MSE); FCF's
    reconstructor R learns res5 -> res4f on the same frozen features."""
    with torch.no_grad(), amp.autocast():
        feats = ms(src["image"])
    f4, z = feats["layer3"].float(), feats["layer4"].float()
    with amp.autocast():
        terms = {"ccr": losses.masked_l2(contour(z).float(), labels_at(src, ())["edges"]),
                 "fcf": losses.masked_l2(fcf(z, f4.shape[-2:]).float(), f4)}
    update(amp, optim, terms["ccr"] + terms["fcf"], [contour, fcf])
    return detached(terms)


def content_loss(kind, z, f4, tgt, aux):
    """The lambda-weighted term of Algorithm 2: L_CCR (frozen contour decoder, Sec. 3.2) or FCF's L2."""
    if kind == "ccr":
        return losses.masked_l2(aux["contour"](z), labels_at(tgt, ())["edges"])
    if kind == "fcf":
        return losses.masked_l2(aux["fcf"](z, f4.shape[-2:]), f4)
    return z.new_zeros(())


def energy_g_step(net, nets, aux, optims, tgt, amp, args, energies):
    """Algorithm 2's inner loop: for each task, res5 minimises L_G^t + lambda L_CCR with L_G^t
    = L_t(N(->t)(O_t predicted), Y_t predicted), the target tuple's energy (that task's Adam)."""
    terms = {}
    for t in energies:
        with amp.autocast():
            f4, z, preds = target_forward(net, tgt["image"])
            terms[f"g_{t}"] = energy(nets, t, predicted_maps(preds, args.grad_mask), preds[t])
            terms["ccr"] = content_loss("ccr", z, f4, tgt, aux)
        update(amp, optims[f"res5_{t}"], terms[f"g_{t}"] + args.lambda_ccr * terms["ccr"], [net.encoder.layer4])
    return detached(terms)


def energy_d_step(net, nets, optims, src, tgt, amp, args, energies):
    """Algorithm 2's outer step (Adv): each N(->t), with its own Adam, lowers the energy of the
    source ground-truth tuple and raises the target predicted tuple's (margin_d_loss)."""
    with torch.no_grad(), amp.autocast():
        preds = target_forward(net, tgt["image"])[2]
    y, terms = labels_at(src, args.tasks), {}
    for t in energies:
        with amp.autocast():
            terms[f"e_src_{t}"] = energy(nets, t, true_maps(y, args.num_classes, args.pseudo_softmax), y[t], args.cw)
            terms[f"e_tgt_{t}"] = energy(nets, t, predicted_maps(preds), preds[t])
            terms[f"floor_{t}"] = energy_floor(t, preds[t])
            terms[f"d_{t}"] = margin_d_loss(terms[f"e_src_{t}"], terms[f"e_tgt_{t}"], args.margin, terms[f"floor_{t}"])
        update(amp, optims[f"n_{t}"], terms[f"d_{t}"], [nets[t]])
    return detached(terms)


def b_step(ms, net, aux, optims, src, tgt, amp, args):
    """UM-Adapt-B (Sec. 3.3.1; Supp.: Table 1's critic "following the improved techniques of
    Wasserstein GAN"): res5 (and FCF's R) minimise -D(Mt(x_t), predicted maps) + lambda content
    with D frozen; then D minimises D(fake) - D(real) + Gulrajani et al.'s gradient penalty, real
    = (Ms(x_s), ground truth with pseudo-softmax semantics), fake = the detached target pair.
    ms: x -> Ms(x), its res5 with batch statistics like Mt's (batch_stats_res5)."""
    d = aux["d"]
    with torch.no_grad(), amp.autocast():
        y = true_maps(labels_at(src, args.tasks), args.num_classes, args.pseudo_softmax)
        real = [ms(src["image"]).float(), *[y[t] for t in args.tasks]]
    d.requires_grad_(False)
    with amp.autocast():
        f4, z_t, preds = target_forward(net, tgt["image"])
        maps = predicted_maps(preds, args.grad_mask)
        terms = {"adv": losses.wgan_generator_loss(d(z_t, *[maps[t] for t in args.tasks])),
                 "content": content_loss(args.content, z_t, f4, tgt, aux)}
    update(amp, [optims[k] for k in ("res5", "fcf") if k in optims], terms["adv"] + args.lambda_ccr * terms["content"],
           [net.encoder.layer4] + ([aux["fcf"]] if "fcf" in optims else []))
    d.requires_grad_(True)
    fake = [z_t.detach().float(), *[maps[t].detach() for t in args.tasks]]
    with amp.autocast():
        terms["d"] = losses.wgan_critic_loss(d(*real), d(*fake))
    terms["gp"] = losses.gradient_penalty(d, real, fake, args.gp_lambda)
    update(amp, optims["d"], terms["d"] + terms["gp"], [d])
    return detached(terms)


def s_step(net, nets, optims, lab, amp, args):
    """UM-Adapt-S (Sec. 4.1), a labelled target batch: L_dist (dist_step) over res5 alone, for
    the tasks this target has labels of (--target-labels). Unlabelled batches take Algorithm
    2's res5 step (schedule decides which)."""
    return dist_step(lambda x: target_forward(net, x)[2], nets, {t: optims[f"res5_{t}"] for t in args.tasks},
                     lab, amp, args, [net.encoder.layer4])


# ----------------------------------------------------------------------------- stages
def setup_transfer(args, amp):
    nets = {t: n.to(args.device) for t, n in transfer_nets(args).items()}
    optims = {t: adam(n.parameters(), args.transfer_lr) for t, n in nets.items()}
    return dict(models=named(nets), optimizers=optims,
                step=lambda b, it: transfer_step(nets, optims, b["src"], amp, args),
                evaluate=lambda: {"source": score_transfer(nets, args, amp)})


def setup_base(args, amp):
    net = build_model(net_spec(args))
    nets = {t: freeze(n).to(args.device) for t, n in transfer_nets(args, "transfer", "base stage").items()}
    model = engine.prepare_model(RawOutputs(net), args, find_unused=True)
    net = engine.unwrap(model).net
    optims = {t: adam(net.parameters(), args.lr) for t in args.tasks}     # one Adam per task
    return dict(models={"model": net, **named(nets)}, optimizers=optims, spec=net_spec(args),
                step=lambda b, it: base_step(model, nets, optims, b["src"], b["tgt"], amp, args),
                evaluate=lambda: score_model(net, args, amp, source=True))


def setup_ccr(args, amp):
    enc = freeze(base_net(args, "ccr stage").encoder).to(args.device)
    c4, c5 = enc.channels["layer3"], enc.channels["layer4"]
    contour, fcf = ContourDecoder(c5).to(args.device), FeatureReconstructor(c5, c4).to(args.device)
    optim = adam(list(contour.parameters()) + list(fcf.parameters()), args.transfer_lr)
    return dict(models={"contour": contour, "fcf": fcf}, optimizers={"ccr": optim},
                step=lambda b, it: ccr_step(enc, contour, fcf, optim, b["src"], amp),
                evaluate=lambda: score_contour(enc, contour, args))


def setup_adapt(args, amp):
    """Mt from the base model (or from adapt-adv for s), frozen decoders, N and C_contour; b's critic."""
    base, dev = base_net(args, "adaptation"), args.device
    nets, dims = transfer_nets(args, "transfer", "adaptation"), base.encoder.channels
    aux = {"contour": ContourDecoder(dims["layer4"]), "fcf": FeatureReconstructor(dims["layer4"], dims["layer3"])}
    load_models(args.run_dir, "ccr", dict(aux), "adaptation")
    net = target_model(base, args.target_bn_stats)
    real_res5 = batch_stats_res5(base.encoder).to(dev)       # b: the critic's real latent (no BN cue)
    if args.variant == "s":                                   # UM-Adapt-S starts from UM-Adapt-(Adv.)
        load_models(args.run_dir, "adapt-adv", {"model": net, **named(nets)}, "variant s")
    energies, train_n, fcf = needed_energies(args), args.variant == "adv", args.content == "fcf"
    # frozen for good (eval mode: N's BatchNorm keeps the statistics of its own training)
    for m in [aux["contour"], *([] if fcf else [aux["fcf"]]), *([] if train_n else nets.values())]:
        freeze(m)
    net, ms, nets, aux = net.to(dev), freeze(base).to(dev), {t: n.to(dev) for t, n in nets.items()}, \
        {k: m.to(dev) for k, m in aux.items()}
    res5 = net.encoder.layer4.parameters
    if args.variant == "b":
        aux["d"] = JointDiscriminator(dims["layer4"], args.tasks, args.num_classes, args.d_width).to(dev)
        optims = {"res5": adam(res5(), args.adapt_lr), "d": adam(aux["d"].parameters(), args.d_lr, WGAN_BETAS),
                  **({"fcf": adam(aux["fcf"].parameters(), args.adapt_lr)} if fcf else {})}
    else:
        optims = {f"res5_{t}": adam(res5(), args.adapt_lr) for t in args.tasks}
        optims.update({f"n_{t}": adam(nets[t].parameters(), args.d_lr) for t in energies if train_n})

    def step(b, it):
        if args.variant == "stats":                 # the control: no loss, no update
            with torch.no_grad():
                f4, z, _ = target_forward(net, b["tgt"]["image"])
                return {"ccr": content_loss("ccr", z, f4, b["tgt"], aux)}
        if args.variant == "b":
            return b_step(lambda x: real_res5(trunk(ms.encoder, x)), net, aux, optims, b["src"], b["tgt"], amp, args)
        if args.variant == "s" and schedule(it, len(args.targets), True)[1]:
            return s_step(net, nets, optims, b["tgt"], amp, args)
        for _ in range(args.g_steps):
            terms = energy_g_step(net, nets, aux, optims, b["tgt"], amp, args, energies)
        if train_n:
            terms.update(energy_d_step(net, nets, optims, b["src"], b["tgt"], amp, args, energies))
        return terms

    kept = [k for k in aux if k != "fcf" or "fcf" in optims]      # C_contour is kept to show it frozen
    def evaluate():   # with the diagnostics of N(->t): on source val ground truth, and the energies
        out = score_model(net, args, amp, source=False)
        if not energies:
            return out
        used = {t: nets[t] for t in energies}
        return {**out, "transfer_source": score_transfer(nets, args, amp),
                "energies": score_energies(net, used, args, amp)}
    return dict(models={"model": net, **named(nets), **{k: aux[k] for k in kept}}, optimizers=optims,
                step=step, spec=net_spec(args), evaluate=evaluate)


SETUPS = {"transfer": setup_transfer, "base": setup_base, "ccr": setup_ccr, "adapt": setup_adapt}


# ----------------------------------------------------------------------------- data and scores
def schedule(it, n_targets, semi):
    """(target index, labelled) of iteration it. Targets alternate; variant s alternates labelled and
    unlabelled batches (Sec. 4.1) and, within each, "alternate KITTI and Cityscapes minibatches":
    it % 2 picks labelled, (it // 2) % n the target, so each target gets both in 2n iterations."""
    return ((it // 2) % n_targets, it % 2 == 0) if semi else (it % n_targets, False)


def draw(loaders, it, args, semi):
    """The iteration's batches: the source's and the scheduled target's (labelled or not)."""
    k, labelled = schedule(it, len(args.targets), semi)
    return {"src": next(loaders["src"]), "tgt": next(loaders[f"{'lab' if labelled else 'tgt'}{k}"])}


def train_loaders(args, stage):
    """Source: every task's labels + contour maps; targets: images (+ contour maps when
    adapting); variant s also reads each target's --target-labels (--target-labelled images)."""
    def make(name, role, labels, length, seed):
        data = build_dataset(name, "train", args.size, args.data_root, seed, length, labels=labels,
                             role=f"--{role}", train=True, **options(args, name, role))
        return engine.InfiniteLoader(data, args.batch_size, args, domain=int(role == "tgt"))
    loaders = {"src": make(args.src, "src", args.tasks + ["edges"], args.proc_length, args.seed)}
    for i, name in enumerate(args.targets):
        loaders[f"tgt{i}"] = make(name, "tgt", ["edges"] if stage in ("adapt", "ccr") else [], args.proc_length,
                                  args.seed + 1)
        if stage == "adapt" and args.variant == "s":
            loaders[f"lab{i}"] = make(name, "tgt", args.label_sets[name], args.target_labelled or args.proc_length,
                                      args.seed + 2)
    return loaders


# ----------------------------------------------------------------------------- main
def run_stage(stage, args):
    """One stage in RUN/<stage folder>: set-up, the loop, checkpoints, model.pth and metrics.json."""
    a = stage_args(args, stage, stage_dir(args, stage))
    if args.stage == "all" and a.resume and (done := finished(a)):
        return done
    logger, amp = engine.setup_run(a, SCRIPT), engine.Amp(a.amp, a.device)
    # The set-up first: it loads the earlier stages' models, so a stage run before them stops
    # before class_weights.json is written (no run folder from a bad input).
    s = SETUPS[stage](a, amp)
    # N(->t), C_contour, R and D are built per rank (seed + rank) and kept out of DDP: every
    # rank starts from rank 0's weights, which average_grads then keeps in step.
    engine.broadcast_modules(s["models"].values())
    a.cw, loaders = source_class_weights(a), train_loaders(a, stage)
    state = dict(models=s["models"], optimizers=s["optimizers"], amp=amp, loaders=loaders)
    path = engine.resume_path(a)
    start = engine.restore(engine.load_checkpoint(path, SCRIPT), **state) if path else 0
    logger.start(start)
    for m in s["models"].values():
        m.train()
    ckpt, semi = os.path.join(a.output_dir, "checkpoint.pth"), stage == "adapt" and a.variant == "s"
    for it in range(start, engine.stop_iteration(a)):
        batch = {k: engine.to_device(b, a.device, a.channels_last) for k, b in draw(loaders, it, a, semi).items()}
        names = list(batch["src"]["name"]) + list(batch["tgt"]["name"])
        logger.step(it + 1, engine.check_finite(s["step"](batch, it), it + 1, names))
        if engine.should_save(it + 1, a):
            engine.save_checkpoint(ckpt, script=SCRIPT, iteration=it + 1, args=a, **state)
    if engine.stop_iteration(a) < a.iters:
        return None                                       # --stop-at: continue with --resume auto
    return finish_stage(a, s, logger, SCRIPT)


def main(args):
    apply_preset(args, PRESETS, [args.src, *str(args.tgt).split(",")])
    check_args(args)
    args.num_classes = resolve_classes([(args.src, "--src")] + [(n, "--tgt") for n in args.targets], args.classes)
    require_labels(args.src, args.tasks + ["edges"], "--src")
    if "semantic" in args.tasks:
        args.num_classes = args.num_classes or get_entry(args.src).num_classes
        if not args.num_classes:
            raise engine.UserError(f"--src {args.src}: give --classes (its class list fixes it)")
    args.classes = args.num_classes
    args.run_dir = args.output_dir or os.path.join("runs", SCRIPT.removesuffix(".py"))
    args.scored = {n: scored_tasks(n, args) for n in args.targets}
    stages = (STAGES if args.transfer_nets else STAGES[1:]) if args.stage == "all" else (args.stage,)
    metrics = None
    for stage in stages:
        if (metrics := run_stage(stage, args)) is None:
            break
    engine.cleanup_distributed()
    return metrics


if __name__ == "__main__":
    engine.cli(main, parse(get_args_parser()))
