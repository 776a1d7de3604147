"""SemiMTL (Wang et al.): semi-supervised multi-task learning of semantics and depth across
partially labelled datasets, with its STL, JTL, SemiSD and single-task DA baselines.

    python train_semimtl.py                               # SemiMTL (M2) on proc-a (seg) + proc-b (depth)
    python train_semimtl.py --method stl                  # the single-task networks (delta-M reference)
    python train_semimtl.py --method jtl                  # jtl | semisd | semimtl --mode m1|m2|m3 | da-seg | da-depth
    python train_semimtl.py --src cityscapes --tgt cityscapes --tgt-split train_extra --data-root DATA
    python train_semimtl.py --datasets proc-a:semantic proc-b:depth proc-b@test:none   # K = 3
    torchrun --nproc_per_node=4 train_semimtl.py --src isprs_potsdam --tgt isprs_vaihingen --data-root DATA

K datasets, each labelled for some tasks (`--src/--tasks-a`, `--tgt/--tasks-b`, or
`--datasets NAME[@SPLIT]:TASKS`): a dataset's batches carry only its own labels, so a task it
is not labelled for never gets a supervised loss. Both tasks are scored on every dataset whose
val split has the labels; `--stl-run DIR` adds delta-M (eq. 10) against an STL run.
On real data the defaults are the paper's (PRESETS below, `--preset`); on the procedural
benchmark a small CPU run.
No arguments: 2.3 minutes (one thread beside another run on the
2-core CPU machine, 2026-12-04; an idle machine is faster).
"""
import json
import os
import random
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from lib import engine, losses
from lib.args import add_common_args, apply_preset, new_parser, parse, set_presets
from lib.data import build_dataset, get_entry, require_labels, resolve_classes
from lib.data import transforms as T
from lib.evaluation import evaluate_model, scoring_loader
from lib.metrics import delta_m
from lib.models import build_model, model_spec, RawOutputs
from lib.models.semimtl import CITYSCAPES_BASELINE_FOCAL, PAD_DEPTH, DomainDiscriminator, depth_target

SCRIPT = "train_semimtl.py"
TASKS = ("semantic", "depth")
METHODS = ("stl", "jtl", "semisd", "semimtl", "da-seg", "da-depth")
ADVERSARIAL = ("semisd", "semimtl", "da-seg", "da-depth")


def _isprs(args):
    return any(n.startswith("isprs") for n in dataset_names(args))


# flag: (paper value, its source, cpu value). The paper gives no batch size, schedule length or
# crop for the cross-domain setting: those paper values are ours (docs/semimtl.md). Every "ours"
# below is a choice the paper leaves open.
PRESETS = {
    "backbone": ("resnet101", "Sec. 3.4: ResNet-101 encoder", "resnet18"),
    "pretrained": ("imagenet", "Sec. 4.1: ImageNet initialisation", "none"),
    "output_stride": (8, "ours: PSPNet's dilated stride 8 (Sec. 3.4 builds on PSPNet)", 16),
    "decoder_width": (512, "ours: PSPNet's 512-wide head; the depth decoder starts at half", 64),
    "classes": (lambda a: 6 if _isprs(a) else 19, "ours: ISPRS 6 classes, clutter included; "
                "Cityscapes / Synscapes the 19 train classes (the paper lists neither)", None),
    "resize": (lambda a: None if _isprs(a) else (512, 1024), "Sec. 4.1: street images resized "
               "to 512x1024 (ours: scored there too, against nearest-downsampled labels); ISPRS "
               "patches (512x512, 50% overlap) as cut (ours: overlapping test patches all scored)",
               None),
    "size": (lambda a: (384, 384) if _isprs(a) else (256, 256), "Sec. 4.2: 256x256 crops across "
             "cities (also across domains: ours), 384x384 across ISPRS datasets", (64, 128)),
    "scale_range": ((0.5, 2.0), "Sec. 4.1 'following [65]': EncNet's random scale 0.5-2 before "
                    "the crop (ours: depth divided by the scale, heights kept; cpu: off, as the "
                    "procedural table ran)", None),
    "rotate": (10.0, "Sec. 4.1 'following [65]': EncNet Sec. 4.1 rotates by -10..10 degrees "
               "(its released Cityscapes loader too; its Gaussian blur is not done here: ours; cpu: off)", 0.0),
    "flip": (True, "Sec. 4.1 'following [65]': EncNet's random flips", False),
    "batch_size": (8, "ours: not in the paper (per dataset and process)", 4),
    "iters": (40000, "ours: not in the paper", 150),
    "lr": (0.01, "Sec. 4.1: SGD 0.01, momentum 0.9, weight decay 1e-4, poly 0.9", 0.01),
    "w_depth": (0.01, "Sec. 4.1: w_depth = 0.01 (cpu: ours, measured in docs/semimtl.md)", 0.1),
    "lambda_intra": (1e-3, "Sec. 4.1: lambda_intra = 1e-3 (cpu: x10, chosen by the rule in "
                     "docs/semimtl.md on diagnostics and labelled pairs)", 1e-2),
    "lambda_inter": (1e-4, "Sec. 4.1: lambda_inter = 1e-4 (cpu: x10, as lambda_intra)", 1e-3),
    "depth_target": (lambda a: "height" if _isprs(a) else "inverse", "Sec. 4.1: inverse depth "
                     "(sky = 0) on street scenes; the nDSM height in [0, 1] on ISPRS (ours: "
                     "min-max normalised per tile)", "inverse"),
    "max_depth": (80.0, "ours: the scoring cap in metres, not in the paper; RMSE per image, "
                  "averaged over images (ours)", 80.0),
    "d_width": (64, "Sec. 3.4: 64-128-256-512 channels", 32),
    "save_every": (5000, "ours: one resumable checkpoint every 5000 steps", 150),
    "eval_batches": (None, "the whole val split", 50),
}


def get_args_parser(add_help=True):
    parser = new_parser(__doc__, add_help)
    add_common_args(parser)
    g = parser.add_argument_group("SemiMTL")
    g.add_argument("--method", default="semimtl", choices=METHODS,
                   help="stl: one network per task on its labelled datasets; jtl: joint training "
                        "(UberNet); semisd: 2-way GT-vs-prediction discriminators (Hung / Tsai); "
                        "semimtl: domain-aware K+1-way discriminators; da-seg / da-depth: Tsai's "
                        "output-space adaptation of one STL network (Table 2)")
    g.add_argument("--mode", default="m2", choices=["m1", "m2", "m3"],
                   help="L_inter of semimtl: m1 eq. 4, m2 eq. 5 (the paper's default), m3 eq. 6")
    g.add_argument("--tasks-a", nargs="+", default=["semantic"], choices=TASKS + ("none",),
                   help="tasks --src is labelled for (default: %(default)s)")
    g.add_argument("--tasks-b", nargs="+", default=["depth"], choices=TASKS + ("none",),
                   help="tasks --tgt is labelled for (default: %(default)s)")
    g.add_argument("--src-split", default="train", help="training split of --src")
    g.add_argument("--tgt-split", default="train", help="training split of --tgt (train_extra: "
                   "the cross-city setting's Cityscapes-depth)")
    g.add_argument("--datasets", nargs="+", default=None, metavar="NAME[@SPLIT]:TASKS",
                   help="K datasets instead of --src/--tgt, tasks joined by '+' or 'none', e.g. "
                        "cityscapes:semantic cityscapes@train_extra:depth")
    g.add_argument("--w-seg", type=float, default=1.0, help="w_seg of eq. 1 (Sec. 4.1)")
    g.add_argument("--w-depth", type=float, default=0.01, help="w_depth of eq. 1 (Sec. 4.1)")
    g.add_argument("--lambda-intra", type=float, default=1e-3, help="lambda_intra of eq. 7 (Sec. 4.1)")
    g.add_argument("--lambda-inter", type=float, default=1e-4, help="lambda_inter of eq. 7 (Sec. 4.1)")
    g.add_argument("--momentum", type=float, default=0.9, help="SGD momentum (Sec. 4.1)")
    g.add_argument("--weight-decay", type=float, default=1e-4, help="SGD weight decay (Sec. 4.1)")
    g.add_argument("--d-lr", type=float, default=1e-4, help="discriminator Adam lr, betas 0.9 0.99 (Sec. 4.1)")
    g.add_argument("--d-width", type=int, default=64, help="discriminator width: the first conv's "
                   "channels, doubled by each of the next three")
    g.add_argument("--output-stride", type=int, default=8, choices=[8, 16], help="encoder output stride")
    g.add_argument("--decoder-width", type=int, default=64, help="PSP head width (depth decoder: half)")
    g.add_argument("--depth-target", default="inverse", choices=["inverse", "height"],
                   help="inverse: --inv-depth-scale / depth, 0 on the sky (Sec. 4.1); height: the "
                        "label itself (ISPRS nDSM)")
    g.add_argument("--inv-depth-scale", type=float, default=CITYSCAPES_BASELINE_FOCAL,
                   help="baseline x focal (m px) of the inverse depth: the default gives "
                        "Cityscapes' disparity in pixels (default: %(default).1f)")
    g.add_argument("--g-update", default=None, choices=["per-dataset", "per-iteration"],
                   help="when the network steps: after each dataset's batch (Algorithm 1; default "
                        "of the adversarial methods) or once per iteration over all datasets "
                        "(synchronous joint training, Sec. 3.3; default of stl and jtl)")
    g.add_argument("--all-through-bn", action="store_true",
                   help="control for stl: every dataset's images also pass through the other "
                        "tasks' networks in train mode with no loss (BatchNorm statistics only)")
    g.add_argument("--stl-run", default=None, metavar="DIR",
                   help="an STL run (--method stl) of the same datasets: delta-M (eq. 10) over "
                        "mIoU and RMSE against it, per dataset, in metrics.json")
    g.add_argument("--max-depth", type=float, default=80.0, help="depth evaluation cap (metres)")
    g.add_argument("--min-depth", type=float, default=1e-3,
                   help="scoring floor of the ratio metrics (abs rel, deltas); ISPRS heights score "
                        "RMSE over every labelled pixel, ground included (docs/semimtl.md)")
    g.add_argument("--scale-range", type=float, nargs=2, default=None, metavar=("LOW", "HIGH"),
                   help="EncNet's random scaling at training, before the crop (Sec. 4.1)")
    g.add_argument("--rotate", type=float, default=0.0, metavar="DEG",
                   help="EncNet's random rotation at training, uniform in [-DEG, DEG] (Sec. 4.1)")
    g.add_argument("--depth-holes", default="zero", choices=["zero", "mask"],
                   help="depth 0 (sky, Cityscapes' disparity holes): zero = inverse depth 0, a "
                        "target (Sec. 4.1: the sky at 0); mask = left out of berHu. Cityscapes "
                        "stores both as 0, so mask drops its sky too (docs/semimtl.md)")
    parser.set_defaults(poly_power=0.9, output_dir=None)
    return set_presets(parser, PRESETS)


@dataclass
class Source:
    """One training dataset of Algorithm 1: its name, split, labelled tasks and folder."""
    name: str
    split: str
    tasks: tuple
    root: str = None
    flag: str = "--datasets"


def _tasks(words, flag):
    words = [w for w in words if w != "none"]
    if len(set(words)) != len(words) or any(w not in TASKS for w in words):
        raise engine.UserError(f"{flag}: tasks are {', '.join(TASKS)} or none, each once; got {words}")
    return tuple(words)


def parse_spec(spec):
    """'NAME[@SPLIT]:TASK[+TASK]' -> Source."""
    head, sep, tasks = spec.partition(":")
    name, _, split = head.partition("@")
    if not sep or not name:
        raise engine.UserError(f"--datasets {spec!r}: expected NAME[@SPLIT]:TASKS, e.g. proc-a:semantic")
    return Source(name, split or "train", _tasks(tasks.split("+"), f"--datasets {spec}"))


def dataset_names(args):
    if args.datasets:
        return [spec.partition(":")[0].partition("@")[0] for spec in args.datasets]
    return [args.src, args.tgt]


def dataset_plan(args):
    """The K datasets of the run, in Algorithm 1's order (k = 1..K)."""
    if args.datasets:
        return [parse_spec(s) for s in args.datasets]
    return [Source(args.src, args.src_split, _tasks(args.tasks_a, "--tasks-a"), args.src_root, "--src"),
            Source(args.tgt, args.tgt_split, _tasks(args.tasks_b, "--tasks-b"), args.tgt_root, "--tgt")]


def model_tasks(args, plan):
    """The tasks the network learns (every task some dataset labels; DA: its one task), checked."""
    labelled = [t for t in TASKS if any(t in s.tasks for s in plan)]
    if args.all_through_bn and args.method != "stl":
        raise engine.UserError("--all-through-bn is the BatchNorm control of --method stl")
    if args.scale_range is not None and not 0 < args.scale_range[0] <= args.scale_range[1]:
        raise engine.UserError(f"--scale-range LOW HIGH needs 0 < LOW <= HIGH, got {args.scale_range}")
    if not 0 <= args.rotate < 180:
        raise engine.UserError(f"--rotate must lie in [0, 180) degrees, got {args.rotate}")
    if args.batch_size < 2:
        raise engine.UserError("--batch-size must be at least 2: the PSP head's 1x1 bin normalises "
                               "over the batch")
    if args.method in ("da-seg", "da-depth"):
        task = "semantic" if args.method == "da-seg" else "depth"
        if task not in labelled or all(task in s.tasks for s in plan):
            raise engine.UserError(f"--method {args.method} adapts {task} from the datasets labelled "
                                   f"for it to one that is not: label it on some datasets only")
        return (task,)
    if not labelled:
        raise engine.UserError("no dataset is labelled for any task: give --tasks-a / --tasks-b or --datasets")
    return tuple(labelled)


def labelled_by(plan, task):
    """The 1-based indices k of the datasets labelled for task."""
    return [k for k, s in enumerate(plan, 1) if task in s.tasks]


def pred_class(args, plan, task, k):
    """The discriminator class of a prediction of dataset k (eq. 2): k for SemiMTL (0 is the
    ground truth); 1 for SemiSD; for Tsai's DA 0 / 1 = a labelled / unlabelled dataset's."""
    if args.method == "semimtl":
        return k
    if args.method == "semisd":
        return 1
    return 0 if k in labelled_by(plan, task) else 1


def fool_classes(args, plan, task, k):
    """The classes the network pushes dataset k's prediction of `task` towards, as
    -log sum_{c in classes} D(y)^c, with its weight; None when there is no such term.
    Labelled: L_intra (eq. 3), class 0. Unlabelled: M1 (eq. 4) the labelled datasets'
    prediction classes, M2 (eq. 5) class 0, M3 (eq. 6) -log(1 - D^k) = every class but k."""
    labelled = k in labelled_by(plan, task)
    if args.method in ("da-seg", "da-depth"):
        return None if labelled else ([0], args.lambda_inter)
    if labelled:
        return [0], args.lambda_intra
    if args.method == "semisd" or args.mode == "m2":
        return [0], args.lambda_inter
    if args.mode == "m1":
        return labelled_by(plan, task), args.lambda_inter
    return [c for c in range(len(plan) + 1) if c != k], args.lambda_inter


def adv_loss(logits, classes):
    """-mean over pixels of log sum_{c in classes} softmax(logits)^c: eq. 2 (one class), eq. 3-5,
    and eq. 6 (all classes but k). A mean, where the paper writes a sum over h, w (docs/semimtl.md)."""
    logp = F.log_softmax(logits.float(), dim=1)
    return -torch.logsumexp(logp[:, list(classes)], dim=1).mean()


def d_input(task, raw):
    """What a discriminator sees (Sec. 3.4): softmax probabilities, or the depth map."""
    return F.softmax(raw, dim=1) if task == "semantic" else raw.unsqueeze(1)


def gt_input(task, batch, nc, args):
    """The ground truth as a discriminator input: one-hot (ignored pixels all 0), or the depth target."""
    if task == "semantic":
        y = batch["semantic"]
        return F.one_hot(torch.where(y == 255, nc, y), nc + 1)[..., :nc].permute(0, 3, 1, 2).float()
    return depth_target(batch["depth"], args.depth_target, args.inv_depth_scale)[0].unsqueeze(1)


def supervised(task, raw, batch, args):
    """w_t L_gt^t (eq. 1): CE for semantics; berHu on the depth target (Sec. 3.4)."""
    if task == "semantic":
        return args.w_seg * losses.cross_entropy(raw, batch["semantic"])
    target, mask = depth_target(batch["depth"], args.depth_target, args.inv_depth_scale, args.depth_holes)
    return args.w_depth * losses.berhu(raw, target, mask)


def forwarded(args, plan, tasks, k):
    """The tasks dataset k's images go through: its labelled ones (stl, jtl), the adapted
    task (DA), every task (semisd, semimtl)."""
    if args.method in ("stl", "jtl"):
        return [t for t in tasks if t in plan[k - 1].tasks]
    return list(tasks)


def generator_step(model, discs, batch, k, plan, tasks, nc, amp, args):
    """Dataset k's L_G terms (Algorithm 1, eq. 8), built with the discriminators frozen and in
    eval mode (no spectral-norm power step), so their backward never reaches D; returns them and
    the discriminators' inputs (detached predictions with their class, ground truth with 0)."""
    for d in discs.values():
        d.requires_grad_(False).eval()
    run = forwarded(args, plan, tasks, k)
    terms, maps = {}, []
    if run:
        with amp.autocast():
            out = model(batch["image"], run)
        for t in run:
            out_t = out[t].float()
            if t in plan[k - 1].tasks:       # only a dataset's own labels are ever read
                terms[f"{t[:3]}_{k}"] = supervised(t, out_t, batch, args)
                if t in discs and args.method in ("semisd", "semimtl"):
                    maps.append((t, gt_input(t, batch, nc, args), 0))
            if t in discs:
                z = d_input(t, out_t)
                fool = fool_classes(args, plan, t, k)
                if fool is not None and fool[1]:
                    kind = "intra" if t in plan[k - 1].tasks else "inter"
                    terms[f"{kind}_{t[:3]}_{k}"] = fool[1] * adv_loss(discs[t](z), fool[0])
                maps.append((t, z.detach(), pred_class(args, plan, t, k)))
    if args.all_through_bn:
        with torch.no_grad(), amp.autocast():
            model(batch["image"], [t for t in tasks if t not in run])   # BatchNorm statistics only
    for d in discs.values():
        d.requires_grad_(True).train()
    return terms, maps


def discriminator_step(discs, maps, amp):
    """Eq. 9: sum over the K datasets of L_D^{t,k} (Algorithm 1): L_D(y_t, 0) + L_D(y^_t, k) for
    a labelled task, L_D(y^_t, k) otherwise, on detached maps; backward only."""
    terms = {}
    for t, z, c in maps:
        with amp.autocast():
            logits = discs[t](z)
        loss = adv_loss(logits, [c])
        amp.backward(loss)
        terms[f"d_{t[:3]}"] = terms.get(f"d_{t[:3]}", 0.0) + loss.detach()
    return terms


def train_step(model, discs, batches, optims, amp, args, plan, tasks, nc, it):
    """One iteration of Algorithm 1: for each dataset k, the network's loss (with D frozen)
    and, per-dataset, its step; then D's gradients on every dataset's detached maps (Algorithm
    1 computes them inside the loop: the same values, as D does not change within an
    iteration, and one AMP scale for all) and one discriminator step (eq. 9)."""
    for opt in optims.values():
        opt.zero_grad(set_to_none=True)
    d_optims = [o for name, o in optims.items() if name != "model"]
    values, d_maps = {}, []
    for k, batch in enumerate(batches, 1):
        terms, maps = generator_step(model, discs, batch, k, plan, tasks, nc, amp, args)
        d_maps += maps
        if terms:
            values.update(engine.check_finite(terms, it + 1, batch["name"]))
            amp.backward(sum(terms.values()))
            if args.g_update == "per-dataset":
                amp.step([optims["model"]])
                optims["model"].zero_grad(set_to_none=True)
    if args.g_update == "per-iteration":
        amp.step([optims["model"]])
    if d_optims:
        values.update(discriminator_step(discs, d_maps, amp))
        engine.average_grads(discs.values())
        amp.step(d_optims)
    names = [n for b in batches for n in b["name"]]
    return engine.check_finite(values, it + 1, names)


def build(args, plan, tasks, nc):
    """The network (shared encoder, or one per task for stl / DA), its SGD, one discriminator
    per adversarial task (K + 1 classes for semimtl, 2 otherwise) with Adam."""
    spec = model_spec("semimtl", backbone=args.backbone, num_classes=nc or 2, tasks=list(tasks),
                      output_stride=args.output_stride, pretrained=args.pretrained,
                      decoder_width=args.decoder_width, shared_encoder=args.method not in
                      ("stl", "da-seg", "da-depth"), depth_target=args.depth_target,
                      inv_depth_scale=args.inv_depth_scale)
    net = build_model(spec)
    optims = {"model": torch.optim.SGD(net.parameters(), lr=args.lr, momentum=args.momentum,
                                       weight_decay=args.weight_decay)}
    discs = {}
    if args.method in ADVERSARIAL:
        classes = len(plan) + 1 if args.method == "semimtl" else 2
        for t in tasks:
            discs[t] = DomainDiscriminator(nc if t == "semantic" else 1, classes, args.d_width)
            optims[f"d_{t}"] = torch.optim.Adam(discs[t].parameters(), lr=args.d_lr, betas=(0.9, 0.99))
    return spec, net, discs, optims


def _options(args, source, train):
    return {"root": source.root, "classes": args.classes, "resize": args.resize, "train": train,
            "flip": args.flip and train, "photometric": args.photometric and train,
            "focal_ref": None, "edges": args.edges}


class ScaleAugmented(torch.utils.data.Dataset):
    """EncNet's augmentation, which Sec. 4.1 follows ("following [65]"; EncNet Sec. 4.1): on the
    whole (resized) image a random scale in `scale_range`, a random rotation in [-rotate,
    rotate] degrees, then the random crop (zero / invalid padding where the image got smaller),
    flip and photometric jitter of lib.data.transforms.paired_transform. Depth is divided by the
    scale for the inverse-depth target, heights are kept (ours: docs/semimtl.md)."""

    def __init__(self, data, size, scale_range, rotate, flip, photometric, divide_depth):
        self.data, self.size, self.scale_range, self.rotate = data, tuple(size), tuple(scale_range), rotate
        self.flip, self.photometric, self.divide_depth = flip, photometric, divide_depth
        self.classes = getattr(data, "classes", None)

    def __len__(self):
        return len(self.data)

    def __getitem__(self, index):
        sample = dict(self.data[index])
        sample["image"] = T.denormalize(sample["image"])
        if "depth" in sample:   # which pixels padding and rotation make up: no depth, not sky (0)
            sample["valid"] = torch.ones(sample["depth"].shape, dtype=torch.uint8)
        sample = T.scale_sample(sample, random.uniform(*self.scale_range), self.divide_depth)
        if self.rotate:
            sample = T.rotate_sample(sample, random.uniform(-self.rotate, self.rotate))
        sample = T.paired_transform(sample, self.size, train=True, flip=self.flip, photometric=self.photometric)
        sample["image"] = T.normalize(sample["image"])
        valid = sample.pop("valid", None)
        if valid is not None:
            sample["depth"] = torch.where(valid > 0, sample["depth"], torch.full_like(sample["depth"], PAD_DEPTH))
        return sample


def train_datasets(args, plan):
    """Each dataset's training split with its own labels only (never another task's); with
    --scale-range, the whole (resized) images under EncNet's augmentation (ScaleAugmented)."""
    out, scaled = [], args.scale_range is not None or bool(args.rotate)
    for k, s in enumerate(plan, 1):
        data = build_dataset(s.name, s.split, args.size, args.data_root, args.seed + k - 1, args.proc_length,
                             labels=list(s.tasks), role=s.flag, **_options(args, s, not scaled))
        if scaled:
            data = ScaleAugmented(data, args.size, args.scale_range or (1.0, 1.0), args.rotate, args.flip,
                                  args.photometric, divide_depth=args.depth_target == "inverse")
        out.append(data)
    return out


def val_sets(args, plan, tasks):
    """{name: (loader, tasks scored)}: every distinct dataset's val split, with each learnt
    task whose labels it has, whether or not it was trained with them."""
    out = {}
    for s in plan:
        scored = [t for t in tasks if t in get_entry(s.name).labels]
        if s.name in out or not scored:
            continue
        out[s.name] = (scoring_loader(s.name, scored, args, s.flag, max(args.batch_size, 4),
                                      **_options(args, s, False)), scored)
    return out


def rmse_floor(args):
    """RMSE's own floor (lib.metrics.DepthMeter absolute_min_depth): 0 for heights, whose ground
    (1/65535, lib/data/isprs.py) lies under --min-depth; None (--min-depth) for depths."""
    return 0.0 if args.depth_target == "height" else None


def depth_scoring(args):
    """How depth was scored (metrics.json): the pixels of RMSE and of the ratio metrics."""
    rmse = "every labelled pixel, ground included" if rmse_floor(args) is not None else \
        f"labels in ({args.min_depth:g}, {args.max_depth:g})"
    return {"rmse": rmse, "ratios": f"labels in ({args.min_depth:g}, {args.max_depth:g})",
            "per": "image, then averaged over images"}


def score(net, loader, scored, nc, args, amp):
    """Every task of `scored` on one val split. Heights (ISPRS, --depth-target height): ground is
    stored as 1/65535 (lib/data/isprs.py), below --min-depth, so RMSE gets its own floor of 0 and
    counts it; the ratio metrics, undefined at height 0, keep --min-depth (docs/semimtl.md)."""
    return evaluate_model(net, loader, args.device, scored, nc, min_depth=args.min_depth,
                          max_depth=args.max_depth, amp=amp, absolute_min_depth=rmse_floor(args))


def stl_delta_m(scores, stl_scores):
    """Delta-M (eq. 10) per dataset over mIoU and RMSE against an STL run's scores; None where
    either run lacks one of the two."""
    out = {}
    for name, m in scores.items():
        b = stl_scores.get(name, {})
        keys = [k for k in ("mIoU", "rmse") if m.get(k) is not None and b.get(k) is not None]
        out[name] = delta_m({k: m[k] for k in keys}, {k: b[k] for k in keys}, {"rmse"}) \
            if len(keys) == 2 else None
    return out


def read_stl(path):
    """The scores of an STL run's metrics.json (--stl-run)."""
    file = os.path.join(path, "metrics.json")
    if not os.path.isfile(file):
        raise engine.UserError(f"--stl-run {path}: no metrics.json (a finished --method stl run)")
    try:
        with open(file) as f:
            metrics = json.load(f)
    except (OSError, ValueError) as err:
        raise engine.UserError(f"--stl-run {path}: cannot read metrics.json ({err})") from None
    if not isinstance(metrics, dict) or metrics.get("method") != "stl" or "scores" not in metrics:
        what = metrics.get("method") if isinstance(metrics, dict) else None
        raise engine.UserError(f"--stl-run {path} is a --method {what} run, not stl (or has no scores)")
    return metrics["scores"]


def main(args):
    apply_preset(args, PRESETS, dataset_names(args))
    plan = dataset_plan(args)
    tasks = model_tasks(args, plan)
    args.g_update = args.g_update or ("per-iteration" if args.method in ("stl", "jtl") else "per-dataset")
    for s in plan:
        require_labels(s.name, s.tasks, s.flag)
    if "semantic" in tasks:
        args.classes = resolve_classes([(s.name, s.flag) for s in plan], args.classes)
    stl_scores = read_stl(args.stl_run) if args.stl_run else None
    args.rmse_min_depth = rmse_floor(args)   # in args.json and the checkpoints, with min/max_depth
    logger = engine.setup_run(args, SCRIPT)
    data = train_datasets(args, plan)
    nc = next((d.classes for d in data if getattr(d, "classes", None)), None) or args.classes
    if "semantic" in tasks and nc is None:
        nc = next(get_entry(s.name).num_classes for s in plan if "semantic" in s.tasks)
    spec, net, discs, optims = build(args, plan, tasks, nc)
    model = engine.prepare_model(RawOutputs(net), args, find_unused=args.method in ("stl", "jtl"))
    net = engine.unwrap(model).net
    discs = {t: engine.prepare_model(d, args, ddp=False) for t, d in discs.items()}
    loaders = {f"k{k}": engine.InfiniteLoader(d, args.batch_size, args, domain=k - 1)
               for k, d in enumerate(data, 1)}
    scheds = {k: engine.poly_scheduler(o, args.iters, args.poly_power) for k, o in optims.items()}
    amp = engine.Amp(args.amp, args.device)
    state = dict(models={"model": net, **{f"d_{t}": d for t, d in discs.items()}}, optimizers=optims,
                 schedulers=scheds, amp=amp, loaders=loaders)
    start = 0
    if path := engine.resume_path(args):
        start = engine.restore(engine.load_checkpoint(path, SCRIPT), **state)
    logger.start(start)
    model.train()
    for it in range(start, engine.stop_iteration(args)):
        batches = [engine.to_device(next(ld), args.device, args.channels_last) for ld in loaders.values()]
        values = train_step(model, discs, batches, optims, amp, args, plan, tasks, nc, it)
        engine.step_schedulers(scheds.values())   # after the optimizers (engine: its warning)
        logger.step(it + 1, values, lr=scheds["model"].get_last_lr()[0])
        if engine.should_save(it + 1, args):
            engine.save_checkpoint(os.path.join(args.output_dir, "checkpoint.pth"), script=SCRIPT,
                                   iteration=it + 1, args=args, model_specs={"model": spec},
                                   extra={"inference_model": "model"}, **state)
    if engine.stop_iteration(args) < args.iters:
        engine.cleanup_distributed()
        return None  # --stop-at: continue with --resume auto
    return finish(net, spec, plan, tasks, nc, args, amp, logger, stl_scores, discs)


DIAG_BATCHES = 10      # ours: the diagnostic reads at most 10 val batches per dataset (not a score)


def diagnose(net, discs, val, plan, tasks, nc, args, amp):
    """The mechanism at work (ours, the benchmark's diagnostic), on val batches: each
    discriminator's pixel accuracy at naming the class of what it sees (eq. 2: 0 = ground truth
    of a labelled dataset, its class for a prediction of dataset k), per dataset and labelled /
    unlabelled; and on one batch per dataset, the norm of the gradient that the adversarial
    terms (L_intra, L_inter) and the supervised ones send to the network (the norm over the
    datasets' first batches together), and their ratio. On rank 0 alone (the others return None);
    a dataset without val labels (no val split here) gets no entry."""
    if not engine.is_main():
        return None
    net.eval()
    for d in discs.values():
        d.eval()
    out, grads, raw = {}, {"adv": 0.0, "sup": 0.0}, RawOutputs(net)
    params = [p for p in net.parameters() if p.requires_grad]
    for k, s in enumerate(plan, 1):
        loader = val.get(s.name, (None,))[0]
        batches = [] if loader is None else engine.first_batches(loader.dataset, loader.batch_size, args,
                                                                 args.eval_batches or DIAG_BATCHES)
        for b, batch in enumerate(batches):
            batch = engine.to_device(batch, args.device)
            with torch.set_grad_enabled(b == 0):    # a graph for the first batch's gradients only
                terms, maps = generator_step(raw, discs, batch, k, plan, tasks, nc, amp, args)
            for d in discs.values():
                d.eval()                # no spectral-norm power step while diagnosing
            with torch.no_grad():
                seen = set()
                for t, z, c in maps:   # generator_step lists a task's ground truth before its prediction
                    gt = args.method in ("semisd", "semimtl") and t in s.tasks and t not in seen
                    seen.add(t)
                    side = "labelled" if t in s.tasks else "unlabelled"
                    key = f"d_{t[:3]}/{k}:{s.name}/{side}/{'gt' if gt else 'pred'}"
                    right = (discs[t](z).float().argmax(1) == c).float()
                    acc = out.setdefault(key, [0.0, 0])
                    acc[0], acc[1] = acc[0] + float(right.sum()), acc[1] + right.numel()
            if b == 0 and terms and params:
                for part in ("adv", "sup"):
                    adv = part == "adv"
                    loss = sum(v for n, v in terms.items() if (n.split("_")[0] in ("intra", "inter")) == adv)
                    if torch.is_tensor(loss) and loss.requires_grad:
                        g = torch.autograd.grad(loss, params, allow_unused=True, retain_graph=True)
                        grads[part] += sum(float(x.float().square().sum()) for x in g if x is not None)
    acc = {k: 100 * v[0] / max(v[1], 1) for k, v in sorted(out.items())}
    norms = {k: v ** 0.5 for k, v in grads.items()}
    net.train()
    ratio = norms["adv"] / norms["sup"] if norms["sup"] else None
    return {"d_accuracy": acc, "grad_norm": {**norms, "adv_over_sup": ratio}}


def finish(net, spec, plan, tasks, nc, args, amp, logger, stl_scores, discs=None):
    """Save the last model, score every task on every dataset's val split, delta-M vs --stl-run."""
    val = val_sets(args, plan, tasks)   # before the save: model.pth records how they score
    if engine.is_main():
        engine.save_checkpoint(os.path.join(args.output_dir, "model.pth"), script=SCRIPT,
                               iteration=args.iters, args=args, models={"model": net},
                               model_specs={"model": spec},
                               extra={"inference_model": "model", "selection": "last"})
    scores = {name: score(net, loader, scored, nc, args, amp) for name, (loader, scored) in val.items()}
    metrics = {"method": args.method, "mode": args.mode if args.method == "semimtl" else None,
               "selection": "last", "iteration": args.iters, "depth_scoring": depth_scoring(args),
               "datasets": [{"name": s.name, "split": s.split, "tasks": list(s.tasks)} for s in plan],
               "scores": scores}
    if discs and engine.is_main():
        metrics["diagnostics"] = diagnose(net, discs, val, plan, tasks, nc, args, amp)
    if stl_scores is not None:
        metrics["delta_m"] = stl_delta_m(scores, stl_scores)
        metrics["stl_run"] = args.stl_run
    logger.write({"iter": args.iters, **metrics})
    if engine.is_main():
        engine.write_json(metrics, os.path.join(args.output_dir, "metrics.json"))
        for name, m in scores.items():
            parts = [f"{k}={m[k]:.3f}" for k in ("mIoU", "acc", "abs_rel", "rmse", "a1") if k in m]
            dm = metrics.get("delta_m", {}).get(name)
            print(f"{name} val: " + " ".join(parts) + ("" if dm is None else f" delta-M={dm:+.2f}%"))
        if "diagnostics" in metrics:
            diag = metrics["diagnostics"]
            print("diagnostic: D accuracy (%) " + ", ".join(f"{k} {v:.1f}" for k, v in diag["d_accuracy"].items()))
            g = diag["grad_norm"]
            print(f"diagnostic: gradient norm adversarial {g['adv']:.3g}, supervised {g['sup']:.3g}"
                  + ("" if g["adv_over_sup"] is None else f" (ratio {g['adv_over_sup']:.3g})"))
    engine.cleanup_distributed()
    return metrics


if __name__ == "__main__":
    engine.cli(main, parse(get_args_parser()))
