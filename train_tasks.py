"""AT/DT stage 1 (Sections 3.2-3.5, eq. 3-4): train N1 = D1(E1) for T1 on domains A and B
and N2 = D2(E2) for T2 on A only, with a shared auxiliary decoder and the NDA loss.

    python train_tasks.py                                   # Dep->Sem on the procedural benchmark
    python train_tasks.py --task1 semantic --task2 depth    # Sem->Dep
    python train_tasks.py --aux none --e1-align none        # base AT/DT (Table 3, first row)
    python train_tasks.py --task1 edges --aux none --e1-align none   # Table 5: edges as T1
    python train_tasks.py --src carla --tgt cityscapes --data-root DATA   # the paper's run
    torchrun --nproc_per_node=4 train_tasks.py --src carla --tgt cityscapes --data-root DATA

On real data the defaults are the paper's and the official code's (PRESETS below, `--preset`);
on the procedural benchmark they are a small CPU run. Then `python train_transfer.py` (stage 2)
reads this run folder. --src is domain A (T1 and T2 labels), --tgt is domain B (T1 labels
only; its T2 labels, if any, are never read here).
No arguments: 2.9 minutes, then train_transfer.py 1.5 more, in a fresh clone on the idle 2-core
CPU machine (2026-12-04); 4.8 + 2.5 at one thread beside another run.
"""
import argparse
import os

import torch
import torch.nn as nn

from lib import engine, losses
from lib.args import add_common_args, apply_preset, new_parser, parse, set_presets
from lib.data import build_dataset, data_options, get_entry, require_labels, resolve_classes
from lib.data.transforms import denormalize
from lib.evaluation import evaluate_model, scoring_loader
from lib.models import build_model, model_spec
from lib.models.decoders import build_decoder
from lib.models.discriminators import FeatureCritic, OutputDiscriminator

SCRIPT = "train_tasks.py"
TASKS = ("semantic", "depth")
# T1 may also be an auxiliary task (Table 5, Sec. 6.3): edge detection or image reconstruction.
SOURCE_TASKS = TASKS + ("edges", "autoencoder")
HEADS = {"autoencoder": "image"}          # task -> the EncDecNet head that solves it
LABELS = {"autoencoder": None}            # task -> the sample label it learns from (None: the image)
ICCV = "official ICCV code"
# The critics of the adversarial alignments and the network whose steps (and schedule) they follow.
CRITIC_OWNER = {"critic": "n1", "critic_e2": "n2", "disc_d2": "n2"}


def _n2_steps(args):
    """scripts/all.sh trains N1 (the source task, on the mixed A + B list) 150k steps and N2 (the
    target task, on A) 25k, whatever the tasks; a --iters given on the command line sets both."""
    return 25000 if "iters" not in args.explicit else None


# flag: (paper value, its source, cpu value). The cpu run is sized for 2 CPU cores
# (docs/atdt.md): at its 250 steps from scratch Adam needs 1e-3 to move the networks.
PRESETS = {
    "backbone": ("resnet50", "Sec. 4: dilated ResNet-50", "resnet18"),
    "pretrained": ("none", f"{ICCV} trains from scratch (train_task.py)", "none"),
    "output_stride": (16, "Sec. 4: 1/16", 16),
    "classes": (11, "Sec. 4 / Table 1: 11 classes", None),
    "size": ((512, 512), f"{ICCV}, scripts/all.sh: 512x512 crops", (64, 128)),
    "batch_size": (8, "scripts/all.sh: --batch_size 8; here per domain, so E1 sees 8 A + 8 B a step "
                      "(ours: NDA pairs them; the official N1 takes 8 from one mixed list)", 4),
    "lr": (1e-4, "train_task.py: Adam 1e-4, poly 0.9", 1e-3),
    "iters": (150000, "scripts/all.sh: N1 (the source task) 150k steps", 250),
    "n2_iters": (_n2_steps, "scripts/all.sh: N2 (the target task) 25k steps, a separate run there; "
                 "ours: N2's share of the journal's simultaneous scheme", None),
    "decoder_width": (128, "core/models.py: first decoder width 128 (then 64, 32)", 64),
    "save_every": (5000, "train_task.py keeps a checkpoint every 5000 steps", 250),
    "focal_at_eval": (True, "eval_task.py: metric depth, x f_B / f_A with --dataset_source; "
                      "ours: applied to a depth net trained on A alone", False),
    "edges": ("cache", "Sec. 4: DexiNed edge maps, via tools/make_edges.py --from-dir", "compute"),
}


def get_args_parser(add_help=True):
    parser = new_parser(__doc__, add_help)
    add_common_args(parser)
    g = parser.add_argument_group("AT/DT stage 1")
    g.add_argument("--task1", default="depth", choices=SOURCE_TASKS,
                   help="T1, labelled on A and B; edges or autoencoder (an auxiliary task as T1, "
                        "L2 loss): Table 5")
    g.add_argument("--task2", default="semantic", choices=TASKS, help="T2, labelled on A only")
    g.add_argument("--aux", default="edge", choices=["edge", "autoencoder", "none"],
                   help="auxiliary task of the shared D_aux (Sec. 3.4; autoencoder: Table 4)")
    g.add_argument("--e1-align", default="nda", choices=["nda", "none", "adv", "largernorm"],
                   help="alignment of E1 features across domains (Sec. 3.3, Table 7)")
    g.add_argument("--scheme", default="simultaneous",
                   choices=["simultaneous", "separate", "separate-two-aux"],
                   help="Table 6: N1, N2, D_aux together, or N1(+aux) then N2 (+ its own aux)")
    g.add_argument("--lambda-t1", type=float, default=1.0, help="eq. 4 (Sec. 4)")
    g.add_argument("--lambda-t2", type=float, default=1.0, help="eq. 4 (Sec. 4)")
    g.add_argument("--lambda-aux", type=float, default=0.5, help="eq. 4 (Sec. 4)")
    g.add_argument("--lambda-nda", type=float, default=0.001, help="eq. 3-4 (Sec. 4)")
    g.add_argument("--lambda-adv", type=float, default=0.001, help="E1 adversarial weight (Table 7)")
    g.add_argument("--lambda-largernorm", type=float, default=0.05,
                   help="LargerNorm weight (Table 7; Xu et al.'s default)")
    g.add_argument("--largernorm-radius", type=float, default=25.0,
                   help="LargerNorm target norm R (Table 7 rows: 1, 25, 500)")
    g.add_argument("--e2-align", default="none", choices=["none", "adv", "nda"],
                   help="Table 8 (Sec. 6.6): align E2's features of A and B as E1's (--e1-align "
                        "adv / nda, same weights); E2 then sees B, for this term only")
    g.add_argument("--d2-align", default="none", choices=["none", "adv"],
                   help="Table 9 (Sec. 6.6): N2 trained with an output-space discriminator on "
                        "D2(E2(x)) of A and B, following Tsai et al. [29]")
    g.add_argument("--lambda-adv-d2", type=float, default=0.001,
                   help="weight of --d2-align adv (Tsai et al.'s single-level 0.001; the paper gives none)")
    g.add_argument("--critic-lr", type=float, default=1e-4,
                   help="Adam lr of every critic (E1, E2, D2 output)")
    g.add_argument("--output-stride", type=int, default=16, choices=[8, 16, 32])
    g.add_argument("--decoder", default="upsample", choices=["upsample", "official"],
                   help="decoders (D1, D2, D_aux): upsample = bilinear x2 + one conv-BN-ReLU per "
                        "scale (Sec. 4's text; ours); official = the ICCV code's (core/models.py: "
                        "nearest x2, two convs per scale, BN, ELU)")
    g.add_argument("--decoder-width", type=int, default=256)
    g.add_argument("--depth-norm", type=float, default=100.0,
                   help="depth is regressed as depth / N with an L1 loss, depths above N masked "
                        "(official code)")
    g.add_argument("--min-depth", type=float, default=1e-3, help="evaluation clip (m)")
    g.add_argument("--max-depth", type=float, default=100.0, help="evaluation clip (m)")
    g.add_argument("--n1-iters", type=int, default=None,
                   help="steps that train N1 (default: --iters); see --scheme")
    g.add_argument("--n2-iters", type=int, default=None,
                   help="steps that train N2 (default: --iters); in the simultaneous scheme the "
                        "shorter network stops early and the run lasts the longer one")
    g.add_argument("--focal-at-eval", action=argparse.BooleanOptionalAction, default=False,
                   help="learn metric depth; N2 (trained on A alone) is scored x f_eval / f_A, N1 "
                        "(trained on A and B) as metres (eval_task.py's ratio; which net gets it is ours); "
                        "--focal-ref rescales the labels instead")
    parser.set_defaults(photometric=True, output_dir=None)   # official core/input.py, p = 0.5
    return set_presets(parser, PRESETS)


class Stage1Net(nn.Module):
    """N1 = D1(E1), N2 = D2(E2) (Sec. 3.1) and D_aux (Sec. 3.4) in one module, so DDP sees one
    forward; AT/DT's architecture (Sec. 4): dilated ResNet encoders, upsampling decoders."""

    def __init__(self, spec1, spec2, aux_out, scheme, width, decoder="upsample", e2_sees_b=False,
                 d2_sees_b=False):
        super().__init__()
        self.n1, self.n2 = build_model(spec1), build_model(spec2)
        ch1, ch2 = self.n1.backbone.channels["layer4"], self.n2.backbone.channels["layer4"]
        num_up = self.n1.decoders[next(iter(self.n1.decoders))].num_up
        # D_aux "shares the same architecture as the decoders used in N1 and N2" (Sec. 4).
        self.aux = build_decoder(decoder, ch1, aux_out, num_up, width) if aux_out else None
        # Table 6 row 3: a second D_aux for N2; otherwise N2 shares the one of N1 (Sec. 3.4).
        self.aux2 = (build_decoder(decoder, ch2, aux_out, num_up, width)
                     if aux_out and scheme == "separate-two-aux" else self.aux)
        self.use_aux2 = aux_out and scheme != "separate"   # row 2: no aux while training N2
        self.e2_sees_b = e2_sees_b   # Tables 8-9 only: E2 also runs on B
        self.d2_sees_b = d2_sees_b   # Table 9 only: D2 also decodes E2(B)

    def forward(self, xa, xb, phase):
        """phase 'both' | 'n1' | 'n2'. E2 sees only xa (domain A, Sec. 3.4), but for the E2 / D2
        alignments of Tables 8-9, whose terms alone use E2(xb): a forward of its own, so the
        BatchNorm batch of the supervised A term stays A's (the running statistics see both)."""
        out, size = {}, xa.shape[-2:]
        if phase in ("both", "n1"):
            f1 = self.n1.forward_features(torch.cat([xa, xb]))
            out["f1"], out["p1"] = f1, self.n1.decode(f1, size)
            if self.aux is not None:
                out["aux1"] = self.aux(f1, size).sigmoid()
        if phase in ("both", "n2"):
            f2 = self.n2.forward_features(xa)
            out["f2"], out["p2"] = f2, self.n2.decode(f2, size)
            if self.e2_sees_b:
                out["f2b"] = self.n2.forward_features(xb)
                if self.d2_sees_b:
                    out["p2b"] = self.n2.decode(out["f2b"], size)
            if self.use_aux2:
                out["aux2"] = self.aux2(f2, size).sigmoid()
        return out


def task_loss(task, pred, batch, args):
    """Sec. 4: cross-entropy for semantics; L1 for depth, on depth / 100 with > 100 m masked;
    Table 5's auxiliary tasks as T1: L2 against the proxy edges or the input image (as L_aux)."""
    if task == "semantic":
        return losses.cross_entropy(pred, batch["semantic"])
    if task == "edges":
        return losses.masked_l2(pred, batch["edges"])
    if task == "autoencoder":
        return losses.masked_l2(pred, denormalize(batch["image"]))
    gt = batch["depth"]
    mask = (gt > 0) & (gt <= args.depth_norm)
    return losses.masked_l1(pred / args.depth_norm, gt / args.depth_norm, mask)


def aux_target(batch, args):
    """Grey-scale proxy edges (L2, Sec. 4) or the input image itself (autoencoder, Table 4)."""
    if args.aux == "edge":
        return batch["edges"].unsqueeze(1)
    return denormalize(batch["image"])


def output_map(task, pred, args):
    """D2's output as --d2-align's discriminator sees it: class probabilities (Tsai et al.'s
    softmax) or depth / --depth-norm, (B, C, H, W)."""
    return pred.softmax(1) if task == "semantic" else (pred / args.depth_norm).unsqueeze(1)


def stage1_losses(out, a, b, args, critics):
    """The terms of eq. 4 present in this phase (each already weighted), and the generator
    terms of the adversarial alignments (Tables 7-9: B's features or outputs labelled A, 1)."""
    n, t1, t2, terms = a["image"].shape[0], args.task1, args.task2, {}
    critics = {k: engine.unwrap(c) for k, c in (critics or {}).items()}
    if "p1" in out:
        p1 = out["p1"][HEADS.get(t1, t1)]
        terms["t1_a"] = args.lambda_t1 * task_loss(t1, p1[:n].float(), a, args)
        terms["t1_b"] = args.lambda_t1 * task_loss(t1, p1[n:].float(), b, args)
        f1a, f1b = out["f1"].float().split([n, out["f1"].shape[0] - n])
        if "aux1" in out:
            aux = out["aux1"].float()
            terms["aux1_a"] = args.lambda_aux * losses.masked_l2(aux[:n], aux_target(a, args))
            terms["aux1_b"] = args.lambda_aux * losses.masked_l2(aux[n:], aux_target(b, args))
        if args.e1_align == "nda":
            terms["nda"] = args.lambda_nda * losses.nda_loss(f1a, f1b)
        elif args.e1_align == "largernorm":
            r = args.largernorm_radius
            terms["largernorm"] = args.lambda_largernorm * (
                losses.larger_norm_loss(f1a, r) + losses.larger_norm_loss(f1b, r))
        elif args.e1_align == "adv":
            # E1 fools the critic: domain-B features labelled as domain A (1).
            terms["adv"] = args.lambda_adv * losses.bce_adv(critics["critic"](f1b), 1.0)
    if "p2" in out:
        terms["t2_a"] = args.lambda_t2 * task_loss(t2, out["p2"][t2].float(), a, args)
        if "aux2" in out:
            terms["aux2_a"] = args.lambda_aux * losses.masked_l2(out["aux2"].float(), aux_target(a, args))
        if args.e2_align == "nda":      # Table 8: eq. 3 on E2's features
            terms["nda_e2"] = args.lambda_nda * losses.nda_loss(out["f2"].float(), out["f2b"].float())
        elif args.e2_align == "adv":    # Table 8: as E1's adversarial alignment
            terms["adv_e2"] = args.lambda_adv * losses.bce_adv(critics["critic_e2"](out["f2b"].float()), 1.0)
        if args.d2_align == "adv":      # Table 9: output space, Tsai et al. [29]
            pb = output_map(t2, out["p2b"][t2].float(), args)
            terms["adv_d2"] = args.lambda_adv_d2 * losses.bce_adv(critics["disc_d2"](pb), 1.0)
    return terms


def critic_inputs(out, args, n):
    """What each critic trains on this step: {name: (A input, B input)}, detached."""
    pairs = {}
    if "f1" in out:
        f1 = out["f1"].detach().float()
        pairs["critic"] = (f1[:n], f1[n:])
    if "f2b" in out:
        pairs["critic_e2"] = (out["f2"].detach().float(), out["f2b"].detach().float())
    if "p2b" in out:
        t2 = args.task2
        pairs["disc_d2"] = tuple(output_map(t2, out[k][t2].detach().float(), args) for k in ("p2", "p2b"))
    return pairs


def net_iters(args):
    """Steps of N1 and N2: --n1-iters / --n2-iters, each --iters when not given."""
    return args.n1_iters or args.iters, args.n2_iters or args.iters


def total_iters(args):
    """Length of the run: the longer network (simultaneous) or both in turn (separate)."""
    n1, n2 = net_iters(args)
    return max(n1, n2) if args.scheme == "simultaneous" else n1 + n2


def phase_of(iteration, args):
    """Which networks train at this step ('both', 'n1' or 'n2'). Simultaneous (Table 6, the
    journal's scheme): both from step 0, the shorter one stopping at its count (the official
    schedule, 25k semantic steps against 150k depth steps, maps onto it this way); separate
    schemes: N1 for its steps, then N2 for its own."""
    n1, n2 = net_iters(args)
    if args.scheme == "simultaneous":
        return "both" if iteration < min(n1, n2) else ("n1" if n1 > n2 else "n2")
    return "n1" if iteration < n1 else "n2"


def check_args(args):
    if args.task1 == args.task2:
        raise engine.UserError(f"--task1 and --task2 are both {args.task1!r}: AT/DT transfers "
                               "between two different tasks (Dep->Sem or Sem->Dep)")
    if args.aux == "none" and args.scheme != "simultaneous":
        raise engine.UserError(f"--scheme {args.scheme} is about the auxiliary decoder: give --aux")
    if args.focal_ref and args.focal_at_eval and "focal_at_eval" not in args.explicit:
        args.focal_at_eval = False   # an explicit --focal-ref replaces the preset's convention
    if args.focal_ref and args.focal_at_eval:
        raise engine.UserError("--focal-ref (labels rescaled for training) and --focal-at-eval "
                               "(metric labels, predictions converted when scored) exclude each "
                               "other: give --no-focal-at-eval with --focal-ref")
    for flag in ("n1_iters", "n2_iters"):
        if getattr(args, flag) is not None and getattr(args, flag) <= 0:
            raise engine.UserError(f"--{flag.replace('_', '-')} must be positive")
    require_labels(args.src, task_labels([args.task1, args.task2]), "--src")
    require_labels(args.tgt, task_labels([args.task1]), "--tgt")
    if args.aux == "edge":
        require_labels(args.src, ["edges"], "--src")
        require_labels(args.tgt, ["edges"], "--tgt")


def task_labels(tasks):
    """The sample labels that training `tasks` reads (the autoencoder reads the image only)."""
    return [LABELS.get(t, t) for t in tasks if LABELS.get(t, t)]


def build(args, nc):
    """Specs, the stage-1 module, optimizers (one per network, poly each) and the critics."""
    channels = {"semantic": nc, "depth": 1, "edges": 1, "autoencoder": 3}
    # Depth conventions (stored with each network; lib/evaluation.py converts by them): with
    # --focal-at-eval N2, trained on A alone, refers to A's focal (args.depth_focal), scored
    # x f_B / f_A as the official eval_task.py does given --dataset_source (our reading: for a
    # network trained on the source); N1 is
    # trained on A and B in metres (Sec. 3.2) and is scored as metres. --focal-ref: both at F.
    focal = getattr(args, "depth_focal", None)
    focals = {"n1": args.focal_ref or None, "n2": focal}
    specs = {k: model_spec("encdec", backbone=args.backbone, output_stride=args.output_stride,
                           pretrained=args.pretrained, tasks={HEADS.get(t, t): channels[t]},
                           decoder_width=args.decoder_width, depth_scale=args.depth_norm,
                           depth_focal=focals[k], decoder=args.decoder)
             for k, t in (("n1", args.task1), ("n2", args.task2))}
    aux_out = {"edge": 1, "autoencoder": 3, "none": 0}[args.aux]
    e2_sees_b, d2_sees_b = args.e2_align != "none" or args.d2_align != "none", args.d2_align != "none"
    net = Stage1Net(specs["n1"], specs["n2"], aux_out, args.scheme, args.decoder_width,
                    args.decoder, e2_sees_b, d2_sees_b)
    p1 = list(net.n1.parameters()) + (list(net.aux.parameters()) if net.aux is not None else [])
    p2 = list(net.n2.parameters())
    if net.aux2 is not None and net.aux2 is not net.aux:
        p2 += list(net.aux2.parameters())
    optims = {"n1": torch.optim.Adam(p1, lr=args.lr), "n2": torch.optim.Adam(p2, lr=args.lr)}
    critics = {}
    if args.e1_align == "adv":
        critics["critic"] = FeatureCritic(net.n1.backbone.channels["layer4"])
    if args.e2_align == "adv":
        critics["critic_e2"] = FeatureCritic(net.n2.backbone.channels["layer4"])
    if args.d2_align == "adv":
        critics["disc_d2"] = OutputDiscriminator(nc if args.task2 == "semantic" else 1)
    for k, c in critics.items():
        optims[k] = torch.optim.Adam(c.parameters(), lr=args.critic_lr, betas=(0.9, 0.99))
    return specs, net, critics, optims


def train_step(net, critics, a, b, optims, amp, args, it):
    """One step of eq. 4 (all terms, one backward), then, for the adversarial alignments
    (Tables 7-9), each critic's own step on detached inputs (A = 1, B = 0); every optimizer
    steps once at the end."""
    phase = phase_of(it, args)
    critics = critics or {}
    for opt in optims.values():
        opt.zero_grad(set_to_none=True)
    for c in critics.values():
        engine.unwrap(c).requires_grad_(False)   # the generator terms must not train the critics
    with amp.autocast():
        out = net(a["image"], b["image"], phase)
        terms = stage1_losses(out, a, b, args, critics)
    total = sum(terms.values())
    values = engine.check_finite({"loss": total, **terms}, it + 1, list(a["name"]) + list(b["name"]))
    amp.backward(total)
    stepped = [optims[k] for k in ("n1", "n2") if phase in ("both", k)]
    for k, (xa, xb) in critic_inputs(out, args, a["image"].shape[0]).items():
        if k not in critics:
            continue
        engine.unwrap(critics[k]).requires_grad_(True)
        with amp.autocast():
            loss_c = (losses.bce_adv(critics[k](xa), 1.0) + losses.bce_adv(critics[k](xb), 0.0)) / 2
        amp.backward(loss_c)
        values[k] = float(loss_c.detach())
        stepped.append(optims[k])
    amp.step(stepped)
    return values, phase


def stage1_val(args):
    """The stage-1 table's splits, built before training (a bad split stops the run at once,
    and every checkpoint records how they score): T1 on A and B, T2 on A."""
    def loader(name, task):
        role = "src" if name == args.src else "tgt"
        return scoring_loader(name, [task], args, f"--{role}", args.batch_size, **data_options(args, role))
    n1 = ({"source": loader(args.src, args.task1), "target": loader(args.tgt, args.task1)}
          if args.task1 in TASKS else {})   # Table 5's edges / autoencoder N1: no metric to report
    return {"n1": n1, "n2": {"source": loader(args.src, args.task2)}}


def evaluate_stage1(net, val, args, amp, nc):
    """N1 on A and B (T1), N2 on A (T2): validation splits, last model (docs/design.md, "Model selection")."""
    m = engine.unwrap(net)
    tasks = {"n1": args.task1, "n2": args.task2}
    return {k: {dom: evaluate_model(getattr(m, k), loader, args.device, [tasks[k]], nc, args.min_depth,
                                    args.max_depth, amp) for dom, loader in doms.items()}
            for k, doms in val.items()}


DIAG_BATCHES = 10      # ours: the diagnostic reads at most 10 val pairs (not a score)


def diagnose(net, critics, args, amp, labels_a, labels_b):
    """The mechanism at work (ours, the benchmark's diagnostic): eq. 4's terms on val pairs (A,
    B) in eval mode, each term's share of their sum, and on the first pair the norm of the
    gradient the NDA term sends to E1 against the whole loss's. Reads B's T1 labels only. At
    --size (labels resized with the images), on rank 0 alone (the other ranks return {})."""
    if not engine.is_main():
        return {}
    m = engine.unwrap(net).eval()

    def loader(name, role, labels):
        data = build_dataset(name, "val", args.size, args.data_root, length=args.proc_length, labels=labels,
                             role=f"--{role}", **{**data_options(args, role), "resize": tuple(args.size)})
        return engine.first_batches(data, args.batch_size, args, args.eval_batches or DIAG_BATCHES)
    e1 = [p for p in m.n1.backbone.parameters() if p.requires_grad]
    sums, grad = {"pairs": 0.0}, {}
    pairs = zip(loader(args.src, "src", labels_a), loader(args.tgt, "tgt", labels_b))
    if args.src == args.tgt:   # the Transfer Oracle: pair each A batch with the next B batch, not itself
        pairs = list(pairs)
        pairs = [(a, b) for (a, _), (_, b) in zip(pairs, pairs[1:])]
    for i, (a, b) in enumerate(pairs):
        a, b = engine.to_device(a, args.device), engine.to_device(b, args.device)
        with torch.set_grad_enabled(i == 0), amp.autocast():    # a graph for the first pair's gradients only
            terms = stage1_losses(m(a["image"], b["image"], "both"), a, b, args, critics)
        for k, v in terms.items():
            sums[k] = sums.get(k, 0.0) + float(v.detach())
        sums["pairs"] += 1
        if i == 0 and "nda" in terms:
            def norm(loss):
                gs = torch.autograd.grad(loss, e1, retain_graph=True, allow_unused=True)
                return sum(float(g.float().square().sum()) for g in gs if g is not None) ** 0.5
            grad = {"nda": norm(terms["nda"]), "total": norm(sum(terms.values()))}
    means = {k: v / max(sums["pairs"], 1) for k, v in sums.items() if k != "pairs"}
    total = sum(means.values())
    out = {"terms": means, "shares": {k: v / total if total else None for k, v in means.items()}}
    if grad:
        out["nda_grad_e1"] = {**grad, "ratio": grad["nda"] / grad["total"] if grad["total"] else None}
    m.train()
    return out


def depth_convention(args, data_a):
    """The focal length N2's output refers to (stored with it; N1's: build): --focal-ref, or
    A's own focal with --focal-at-eval (official: f_B / f_A at evaluation), else metres."""
    if args.focal_ref:
        return args.focal_ref
    if args.focal_at_eval and "depth" in (args.task1, args.task2):   # Table 5's rows have no depth
        focal = data_a[0].get("focal")
        if focal is None:
            raise engine.UserError(f"--focal-at-eval needs the focal length of --src {args.src}, "
                                   "which it does not know; give --no-focal-at-eval")
        return float(focal)
    return None


def main(args):
    apply_preset(args, PRESETS, [args.src, args.tgt])
    args.output_dir = args.output_dir or os.path.join("runs", "train_tasks")
    check_args(args)
    args.classes = resolve_classes([(args.src, "--src"), (args.tgt, "--tgt")], args.classes)
    logger = engine.setup_run(args, SCRIPT)
    need_aux = ["edges"] if args.aux == "edge" else []
    labels_a = list(dict.fromkeys(task_labels([args.task1, args.task2]) + need_aux))
    labels_b = list(dict.fromkeys(task_labels([args.task1]) + need_aux))
    data_a = build_dataset(args.src, "train", args.size, args.data_root, args.seed, args.proc_length,
                           labels=labels_a, role="--src", train=True, **data_options(args, "src"))
    data_b = build_dataset(args.tgt, "train", args.size, args.data_root, args.seed + 1, args.proc_length,
                           labels=labels_b, role="--tgt", train=True, **data_options(args, "tgt"))
    # One dataset as A and B (the Transfer Oracle, --src X --tgt X): a second stream seed, or
    # both streams would draw the same images at every step (file datasets ignore the dataset
    # seed), and NDA, E1's loss on B and D_aux's edge term on B would repeat A's.
    seed_b = args.seed + 1 if args.tgt == args.src else None
    loaders = {"a": engine.InfiniteLoader(data_a, args.batch_size, args, domain=0),
               "b": engine.InfiniteLoader(data_b, args.batch_size, args, domain=1, seed=seed_b)}
    # Class count of domain A's labels (a folder dataset reads it from its dataset.json).
    nc = getattr(data_a, "classes", None) or args.classes or get_entry(args.src).num_classes
    args.depth_focal = depth_convention(args, data_a)
    specs, net, critics, optims = build(args, nc)
    steps = dict(zip(("n1", "n2"), net_iters(args)))
    steps.update({k: steps[CRITIC_OWNER[k]] for k in critics})
    net = engine.prepare_model(net, args, find_unused=args.scheme != "simultaneous"
                               or steps["n1"] != steps["n2"])
    critics = {k: engine.prepare_model(c, args) for k, c in critics.items()}
    scheds = {k: engine.poly_scheduler(o, steps[k], args.poly_power) for k, o in optims.items()}
    amp = engine.Amp(args.amp, args.device)
    m = engine.unwrap(net)
    models = {"n1": m.n1, "n2": m.n2}
    models.update({"aux": m.aux} if m.aux is not None else {})
    models.update({"aux2": m.aux2} if m.aux2 is not None and m.aux2 is not m.aux else {})
    models.update(critics)
    state = dict(models=models, optimizers=optims, schedulers=scheds, amp=amp, loaders=loaders)
    total = total_iters(args)
    start = 0
    if path := engine.resume_path(args):
        start = engine.restore(engine.load_checkpoint(path, SCRIPT), **state)
    ckpt_path = os.path.join(args.output_dir, "checkpoint.pth")
    stop = total if args.stop_at is None else min(args.stop_at, total)
    logger.total = total
    val = stage1_val(args)
    logger.start(start)
    net.train()
    for it in range(start, stop):
        a = engine.to_device(next(loaders["a"]), args.device, args.channels_last)
        b = engine.to_device(next(loaders["b"]), args.device, args.channels_last)
        values, phase = train_step(net, critics, a, b, optims, amp, args, it)
        for k, s in scheds.items():
            if phase in ("both", CRITIC_OWNER.get(k, k)):
                s.step()
        logger.step(it + 1, values, lr=scheds["n1" if phase != "n2" else "n2"].get_last_lr()[0])
        if (args.save_every and (it + 1) % args.save_every == 0) or it + 1 == stop:
            engine.save_checkpoint(ckpt_path, script=SCRIPT, iteration=it + 1, args=args,
                                   model_specs=specs, extra={"inference_model": "n2"}, **state)
    if stop < total:
        engine.cleanup_distributed()
        return None  # --stop-at: continue with --resume auto
    metrics = {"selection": "last", "iteration": total, **evaluate_stage1(net, val, args, amp, nc),
               "diagnostics": diagnose(net, critics, args, amp, labels_a, labels_b)}
    logger.write({"iter": total, **metrics})
    if engine.is_main():
        engine.write_json(metrics, os.path.join(args.output_dir, "metrics.json"))
        for net_name, doms in metrics.items():
            if net_name == "diagnostics":
                continue
            for dom, m in doms.items() if isinstance(doms, dict) else ():
                print(f"{net_name} on {dom}: " + " ".join(f"{k}={v:.3f}" for k, v in m.items()
                                                          if isinstance(v, float)))
        diag = metrics["diagnostics"]
        print("diagnostic: eq. 4's shares on val " + " ".join(f"{k}={v:.3f}" for k, v in diag["shares"].items()
                                                             if v is not None)
              + (f"; NDA's gradient on E1 / the whole loss's: {diag['nda_grad_e1']['ratio']:.3g}"
                 if diag.get("nda_grad_e1", {}).get("ratio") is not None else ""))
    engine.cleanup_distributed()
    return metrics


if __name__ == "__main__":
    engine.cli(main, parse(get_args_parser()))
