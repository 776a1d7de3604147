"""AT/DT stage 2 and inference (Sec. 3.2, eq. 1-2): learn G(1->2) from E1 to E2 features on
domain A with E1, E2, D2 frozen, then solve T2 on domain B as D2(G(E1(x_B))).

    python train_transfer.py                                  # continues runs/train_tasks
    python train_transfer.py --stage1 runs/depsem --output-dir runs/depsem_transfer
    python train_transfer.py --stage1 runs/depsem --oracle-checkpoint runs/oracle/checkpoint.pth \
        --transfer-oracle-checkpoint runs/toracle_transfer/model.pth   # all rows of Tables 1-2
    python train_transfer.py --stage1 runs/depsem_base --g-align adv   # a row of Table 10

The Transfer Oracle of Tables 1-2 is this framework run with A = B = the target dataset
(`train_tasks.py --src B --tgt B`, then this script); --transfer-oracle-checkpoint adds its
row to this table. Model selection uses domain A's validation split only (Sec. 4, protocol);
domain B is scored once, at the end: the AT/DT model, the baseline (N2 on B) and the rows
given by checkpoint, in one table written to metrics.json.
No arguments: 1.5 minutes after train_tasks.py's 2.9, in a fresh clone on the idle 2-core CPU
machine (2026-12-04); 2.5 after 4.8 at one thread beside another run.
"""
import argparse
import copy
import os

import torch

from lib import engine, losses
from lib.args import add_common_args, apply_preset, new_parser, parse, set_presets
from lib.data import build_dataset, data_options, get_entry, require_labels, resolve_classes
from lib.data.labels import CLASS_NAMES
from lib.evaluation import evaluate_model, per_class_line, scoring_loader
from lib.models import build_model, model_spec
from lib.models.discriminators import FeatureCritic, OutputDiscriminator
from lib.models.encdec import decode
from train_tasks import output_map, task_loss, total_iters

SCRIPT = "train_transfer.py"
STAGE1 = "train_tasks.py"
ICCV = "official ICCV code"
# flag: (paper value, its source, cpu value). Data, model and task flags come from stage 1.
# The cpu run is sized for 2 CPU cores: at 600 steps G only fits E2's features at lr 1e-3.
PRESETS = {
    "lr": (1e-5, f"{ICCV}, scripts/all.sh: Adam 1e-5, poly 0.9", 1e-3),
    "batch_size": (1, "scripts/all.sh: --batch_size 1", 1),
    "iters": (100000, "scripts/all.sh: --steps 100000", 600),
    "eval_every": (5000, "ours, at the official snapshot cadence; selection on A's val (Sec. 4)", 300),
    "save_every": (5000, "train_transfer.py keeps G every 5000 steps", 600),
    "photometric": (True, "core/input.py, as train_transfer.py loads it: augmentation p = 0.5", False),
}
SEMANTIC_KEYS = ("mIoU", "acc")
DEPTH_KEYS = ("abs_rel", "sq_rel", "rmse", "rmse_log", "a1", "a2", "a3")   # Table 2


def get_args_parser(add_help=True):
    parser = new_parser(__doc__, add_help)
    add_common_args(parser)
    g = parser.add_argument_group("AT/DT stage 2")
    g.add_argument("--stage1", default=os.path.join("runs", "train_tasks"),
                   help="run folder (or checkpoint.pth) of train_tasks.py (default: %(default)s)")
    g.add_argument("--supervised-g", action="store_true",
                   help="not the paper's Transfer Oracle: G trained on domain B with B's T2 labels "
                        "through stage 1's frozen E1 and D2 (how far G alone can go on B)")
    g.add_argument("--oracle-checkpoint", default=None,
                   help="checkpoint of N2 trained on B (e.g. tools/train_supervised.py --src B): "
                        "adds the Oracle row")
    g.add_argument("--transfer-oracle-checkpoint", default=None,
                   help="model.pth of this script on a stage 1 run with A = B = --tgt: adds the "
                        "Transfer Oracle row (Tables 1-2)")
    g.add_argument("--transfer-layers", type=int, default=6, help="conv+BN pairs of G (Sec. 4)")
    g.add_argument("--transfer-final-relu", action=argparse.BooleanOptionalAction, default=True,
                   help="a ReLU after G's last conv+BN pair too, as E2's layer4 features are "
                        "post-ReLU (the paper names no activations; README)")
    g.add_argument("--transfer-width", type=int, default=None,
                   help="hidden channels of G (default: E2's feature channels)")
    g.add_argument("--g-align", default="none", choices=["none", "nda", "adv", "nda+adv", "adv-d2"],
                   help="Table 10 (Sec. 6.7): align G's output across domains while G trains, on "
                        "images of B too: NDA (eq. 3) between G(E1(x_A)) and G(E1(x_B)), a critic "
                        "on G's output, both, or a discriminator on D2's output (D2 frozen)")
    g.add_argument("--lambda-g-nda", type=float, default=0.001,
                   help="weight of --g-align nda (stage 1's lambda_NDA; the paper gives none for G)")
    g.add_argument("--lambda-g-adv", type=float, default=0.001,
                   help="weight of --g-align adv / adv-d2 (as stage 1's adversarial terms; the paper gives none)")
    g.add_argument("--critic-lr", type=float, default=1e-4, help="Adam lr of --g-align's critic")
    # Data and model flags default to the stage-1 run's values (None here).
    parser.set_defaults(src=None, tgt=None, size=None, backbone=None)
    return set_presets(parser, PRESETS)


def load_stage1(args):
    """The stage-1 checkpoint; unset data flags are taken from its run."""
    path = args.stage1
    if os.path.isdir(path):
        path = os.path.join(path, "checkpoint.pth")
    if not os.path.isfile(path):
        raise engine.UserError(f"no stage-1 checkpoint at {path}: run `python train_tasks.py` first "
                               "or point --stage1 at its run folder")
    ckpt = engine.load_checkpoint(path, STAGE1, flag="--stage1")
    s1 = ckpt["args"]
    if ckpt["iteration"] < total_iters(argparse.Namespace(**{"n1_iters": None, "n2_iters": None, **s1})):
        raise engine.UserError(f"{path} stopped at iteration {ckpt['iteration']} (--stop-at): finish "
                               "stage 1 with `train_tasks.py --resume auto` first")
    for key in ("src", "tgt", "size", "classes", "data_root", "resize", "focal_ref", "proc_length",
                "carla_focal"):
        if getattr(args, key, None) is None:
            setattr(args, key, s1.get(key))
    for key in ("task1", "task2", "min_depth", "max_depth", "depth_norm"):
        setattr(args, key, s1[key])
    args.backbone = s1["backbone"]
    args.stage1_path = path
    return ckpt


def frozen(ckpt, name, device):
    """A stage-1 network in eval mode (BN statistics frozen) with no trainable parameters."""
    spec = copy.deepcopy(ckpt["model_specs"][name])
    spec["kwargs"] = spec_kwargs(ckpt, name)
    net = build_model(spec)
    net.load_state_dict(ckpt["models"][name], strict=True)
    return net.requires_grad_(False).eval().to(device), spec


def build_atdt(ckpt, n1, n2, args):
    """The inference model D2(G(E1(.))) with E1 and D2 copied from stage 1; only G trains."""
    c1, c2 = n1.backbone.channels["layer4"], n2.backbone.channels["layer4"]
    spec = model_spec("atdt", n1=spec_kwargs(ckpt, "n1"), n2=spec_kwargs(ckpt, "n2"),
                      transfer={"in_channels": c1, "out_channels": c2,
                                "width": args.transfer_width, "layers": args.transfer_layers,
                                "final_relu": args.transfer_final_relu})
    atdt = build_model(spec)
    atdt.encoder.load_state_dict(n1.backbone.state_dict())
    atdt.decoders.load_state_dict(n2.decoders.state_dict())
    atdt.encoder.requires_grad_(False)
    atdt.decoders.requires_grad_(False)
    return atdt.to(args.device), spec


def spec_kwargs(ckpt, name):
    """EncDecNet kwargs of stage-1 network `name`, with the weights to come from the checkpoint."""
    kwargs = dict(ckpt["model_specs"][name]["kwargs"])
    kwargs["pretrained"] = "none"
    # Stage-1 runs from before models stored their depth convention: it was their --focal-ref.
    kwargs.setdefault("depth_focal", ckpt["args"].get("focal_ref"))
    return kwargs


def set_train_mode(atdt):
    """Only G in train mode: E1 and D2 keep their stage-1 BN statistics (Sec. 3.2)."""
    model = engine.unwrap(atdt)
    model.eval()
    model.transfer.train()


def val_loader(name, role, args, capped=True):
    """Validation split of `name`; --eval-batches caps the selection runs, never the final table."""
    return scoring_loader(name, [args.task2], args, role, max(args.batch_size, 4), capped=capped,
                          **data_options(args, role.strip("-")))


def score(model, loader, args, amp):
    nc = engine.unwrap(model).decoders["semantic"].out_channels if args.task2 == "semantic" else None
    return evaluate_model(model, loader, args.device, [args.task2], nc, args.min_depth,
                          args.max_depth, amp)


def better(new, best, task):
    """Selection on domain A's validation split: mIoU for semantics, abs rel for depth."""
    if best is None:
        return True
    return new["mIoU"] > best["mIoU"] if task == "semantic" else new["abs_rel"] < best["abs_rel"]


def train_step(atdt, g, n2, batch, optimizer, amp, it):
    """Eq. 1: L_Tr = || G(E1(x)) - E2(x) ||_2, as the mean squared error over all elements.

    `g` is G as prepared by the engine (DDP-wrapped under torchrun), E1 and E2 run frozen."""
    x = batch["image"]
    with torch.no_grad(), amp.autocast():
        f1, f2 = atdt.encoder(x)["layer4"], n2.forward_features(x)
    with amp.autocast():
        loss = torch.nn.functional.mse_loss(g(f1).float(), f2.float())
    values = engine.check_finite({"transfer": loss}, it + 1, batch["name"])
    optimizer.zero_grad(set_to_none=True)
    amp.backward(loss)
    amp.step([optimizer])
    return values


def g_critic(args, c2, nc):
    """--g-align's critic: on G's output features (adv, nda+adv) or on D2's output (adv-d2)."""
    if "adv" not in args.g_align:
        return None
    if args.g_align == "adv-d2":
        return OutputDiscriminator(nc if args.task2 == "semantic" else 1)
    return FeatureCritic(c2)


def aligned_step(atdt, g, n2, critic, a, b, optims, amp, it, args):
    """Table 10 (Sec. 6.7): eq. 1 on A plus the alignment of G's output across domains: NDA
    (eq. 3) and / or a critic that G fools on B (B labelled A, 1), then the critic's own step
    (A = 1, B = 0) on detached inputs; E1, E2 and D2 stay frozen. A and B pass through G as
    one batch, as through E1 in stage 1."""
    xa, xb, n = a["image"], b["image"], a["image"].shape[0]
    with torch.no_grad(), amp.autocast():
        f1, f2 = atdt.encoder(torch.cat([xa, xb]))["layer4"], n2.forward_features(xa)
    if critic is not None:
        engine.unwrap(critic).requires_grad_(False)
    with amp.autocast():
        t = g(f1)
        ta, tb = t[:n].float(), t[n:].float()
        terms = {"transfer": torch.nn.functional.mse_loss(ta, f2.float())}
        if "nda" in args.g_align:
            terms["nda_g"] = args.lambda_g_nda * losses.nda_loss(ta, tb)
        if critic is not None:
            if args.g_align == "adv-d2":   # D2's output space, as Tsai et al. [29]
                ta, tb = (output_map(args.task2, decode(atdt.decoders, x, xa.shape[-2:],
                                                        atdt.depth_scale)[args.task2].float(), args)
                          for x in (ta, tb))
            terms["adv_g"] = args.lambda_g_adv * losses.bce_adv(engine.unwrap(critic)(tb), 1.0)
    total = sum(terms.values())
    values = engine.check_finite({"loss": total, **terms}, it + 1, list(a["name"]) + list(b["name"]))
    for opt in optims.values():
        opt.zero_grad(set_to_none=True)
    amp.backward(total)
    if critic is not None:
        engine.unwrap(critic).requires_grad_(True)
        with amp.autocast():
            loss_c = (losses.bce_adv(critic(ta.detach()), 1.0) + losses.bce_adv(critic(tb.detach()), 0.0)) / 2
        amp.backward(loss_c)
        values["critic"] = float(loss_c.detach())
    amp.step(list(optims.values()))
    return values


def supervised_g_step(atdt, g, batch, optimizer, amp, it, args):
    """--supervised-g (ours, not the paper's Transfer Oracle): G trained on B with T2's own loss
    on D2(G(E1(x_B))) against B's T2 labels, E1 and D2 frozen: how far G alone can go on B."""
    x = batch["image"]
    with torch.no_grad(), amp.autocast():
        f1 = atdt.encoder(x)["layer4"]
    with amp.autocast():
        pred = decode(atdt.decoders, g(f1), x.shape[-2:], atdt.depth_scale)[args.task2]
    loss = task_loss(args.task2, pred.float(), batch, args)
    values = engine.check_finite({"supervised_" + args.task2: loss}, it + 1, batch["name"])
    optimizer.zero_grad(set_to_none=True)
    amp.backward(loss)
    amp.step([optimizer])
    return values


def row_models(args):
    """The Oracle and Transfer Oracle models given by checkpoint, loaded before any training
    so a wrong path stops the run at once. Each keeps its own depth convention."""
    from evaluate import load_inference_model
    flags = {"oracle": args.oracle_checkpoint, "transfer_oracle": args.transfer_oracle_checkpoint}
    return {row: load_inference_model(path, flag=f"--{row.replace('_', '-')}-checkpoint")[0]
            for row, path in flags.items() if path}


def final_table(atdt, n2, val_b, args, amp, extra_rows):
    """Domain B, scored once: AT/DT (or --supervised-g), the baseline, the oracles given."""
    name = "supervised_g" if args.supervised_g else "atdt"
    rows = {name: score(atdt, val_b, args, amp), "baseline": score(n2, val_b, args, amp)}
    for row, model in extra_rows.items():
        rows[row] = score(model.to(args.device), val_b, args, amp)
    return rows


def print_table(rows, args):
    """Tables 1-2's columns: mIoU and Acc (Dep->Sem) or the seven depth metrics (Sem->Dep)."""
    keys = SEMANTIC_KEYS if args.task2 == "semantic" else DEPTH_KEYS
    print(f"{args.src} -> {args.tgt}, {args.task1} -> {args.task2}, {args.tgt} val:")
    print(f"  {'method':<16}" + "".join(f"{k:>10}" for k in keys))
    for row, m in rows.items():
        print(f"  {row:<16}" + "".join(f"{m[k]:>10.4f}" for k in keys))
    for row, m in rows.items():   # per-class IoU by name (Tables 1 and 3 list them)
        if m.get("per_class"):
            print(f"  {row:<16}" + per_class_line(m["per_class"], CLASS_NAMES.get(len(m["per_class"]))))


def main(args):
    ckpt = load_stage1(args)
    apply_preset(args, PRESETS, [args.src, args.tgt])
    args.classes = resolve_classes([(args.src, "--src"), (args.tgt, "--tgt")], args.classes)
    args.output_dir = args.output_dir or os.path.join("runs", "train_transfer")
    sup = args.supervised_g
    train_name, train_role = (args.tgt, "--tgt") if sup else (args.src, "--src")
    if sup:
        require_labels(args.tgt, [args.task2], "--tgt")  # trained and selected on B's labels
        if args.g_align != "none":
            raise engine.UserError("--g-align aligns G's output of A and B while G learns eq. 1 "
                                   "on A; --supervised-g trains G on B alone: give one of them")
    extra_rows = row_models(args)
    # B's T2 labels (when B has them) only score the result, once, at the end.
    scored_on_b = args.task2 in get_entry(args.tgt).labels
    logger = engine.setup_run(args, SCRIPT)
    n1, _ = frozen(ckpt, "n1", args.device)
    n2, _ = frozen(ckpt, "n2", args.device)
    atdt, spec = build_atdt(ckpt, n1, n2, args)
    del n1  # its encoder lives on inside atdt
    data = build_dataset(train_name, "train", args.size, args.data_root, args.seed, args.proc_length,
                         labels=[args.task2] if sup else [], role=train_role, train=True,
                         **data_options(args, train_role.strip("-")))
    loaders = {"train": engine.InfiniteLoader(data, args.batch_size, args, domain=int(sup))}
    if args.g_align != "none":   # Table 10: images of B (no labels) for the alignment term
        data_b = build_dataset(args.tgt, "train", args.size, args.data_root, args.seed + 1,
                               args.proc_length, labels=[], role="--tgt", train=True,
                               **data_options(args, "tgt"))
        loaders["b"] = engine.InfiniteLoader(data_b, args.batch_size, args, domain=1,
                                             seed=args.seed + 1 if args.tgt == args.src else None)
    g = engine.prepare_model(atdt.transfer, args)
    optims = {"g": torch.optim.Adam(atdt.transfer.parameters(), lr=args.lr)}
    nc = atdt.decoders["semantic"].out_channels if args.task2 == "semantic" else None
    critic = g_critic(args, n2.backbone.channels["layer4"], nc)
    if critic is not None:
        critic = engine.prepare_model(critic.to(args.device), args)
        optims["critic"] = torch.optim.Adam(critic.parameters(), lr=args.critic_lr, betas=(0.9, 0.99))
    scheds = {k: engine.poly_scheduler(o, args.iters, args.poly_power) for k, o in optims.items()}
    amp = engine.Amp(args.amp, args.device)
    models = {"atdt": atdt, **({"critic": critic} if critic is not None else {})}
    state = {"models": models, "optimizers": optims, "schedulers": scheds, "amp": amp,
             "loaders": loaders}
    start = 0
    if path := engine.resume_path(args):
        start = engine.restore(engine.load_checkpoint(path, SCRIPT), **state)
    best_path = os.path.join(args.output_dir, "best_g.pth")
    best = load_best(best_path) if start else {"metrics": None, "iteration": None, "g": None}
    # Selection split: A's validation set (B's for --supervised-g, which trains on B).
    val_sel = val_loader(train_name, train_role, args)
    ckpt_path = os.path.join(args.output_dir, "checkpoint.pth")
    logger.start(start)
    set_train_mode(atdt)
    for it in range(start, engine.stop_iteration(args)):
        batch = engine.to_device(next(loaders["train"]), args.device, args.channels_last)
        if "b" in loaders:
            batch_b = engine.to_device(next(loaders["b"]), args.device, args.channels_last)
            values = aligned_step(atdt, g, n2, critic, batch, batch_b, optims, amp, it, args)
        elif sup:
            values = supervised_g_step(atdt, g, batch, optims["g"], amp, it, args)
        else:
            values = train_step(atdt, g, n2, batch, optims["g"], amp, it)
        for sched in scheds.values():
            sched.step()
        logger.step(it + 1, values, lr=scheds["g"].get_last_lr()[0])
        if args.eval_every and ((it + 1) % args.eval_every == 0 or it + 1 == args.iters):
            m = score(atdt, val_sel, args, amp)
            set_train_mode(atdt)
            logger.write({"iter": it + 1, "selection_val": m})
            if better(m, best["metrics"], args.task2):
                best = save_best(best_path, it + 1, m, atdt.transfer)
        if engine.should_save(it + 1, args):
            engine.save_checkpoint(ckpt_path, script=SCRIPT, iteration=it + 1, args=args,
                                   model_specs={"atdt": spec}, extra={"inference_model": "atdt"},
                                   **state)
    if engine.stop_iteration(args) < args.iters:
        engine.cleanup_distributed()
        return None  # --stop-at: continue with --resume auto
    if best["g"] is not None:
        atdt.transfer.load_state_dict(best["g"])
    selection = (f"best on {train_name} val (iteration {best['iteration']})" if best["g"] is not None
                 else "last")
    atdt.eval()
    final_val = val_loader(args.tgt, "--tgt", args, capped=False) if scored_on_b else None
    if engine.is_main():
        # The selected model, loadable by evaluate.py (--checkpoint RUN/model.pth), saved before
        # scoring so that a failure in the final table cannot lose the trained G.
        engine.save_checkpoint(os.path.join(args.output_dir, "model.pth"), script=SCRIPT,
                               iteration=args.iters, args=args, models={"atdt": atdt},
                               model_specs={"atdt": spec},
                               extra={"inference_model": "atdt", "selection": selection})
    rows = final_table(atdt, n2, final_val, args, amp, extra_rows) if scored_on_b else {}
    metrics = {"selection": selection, "task1": args.task1, "task2": args.task2,
               "src": args.src, "tgt": args.tgt, "stage1": args.stage1_path, "target": rows}
    if best["metrics"] is not None:
        metrics["selection_val"] = best["metrics"]
    metrics["diagnostics"] = {"g_fit": g_fit(atdt, n2, args, amp)}
    logger.write({"iter": args.iters, **metrics})
    if engine.is_main():
        engine.write_json(metrics, os.path.join(args.output_dir, "metrics.json"))
        fit = metrics["diagnostics"]["g_fit"]
        print("diagnostic: G's fit (MSE to E2's features, relative) " + ", ".join(
            f"on {d} val {fit[f'feature_mse_{k}']:.4g} ({fit[f'relative_mse_{k}'] or 0:.3g})"
            for k, d in (("a", "A"), ("b", "B"))))
        if rows:
            print_table(rows, args)
        else:
            print(f"{args.tgt} has no {args.task2} labels: nothing to score on B; the model is "
                  f"{os.path.join(args.output_dir, 'model.pth')}")
    engine.cleanup_distributed()
    return metrics


DIAG_BATCHES = 10      # ours: the diagnostic reads at most 10 val batches per domain (not a score)


@torch.no_grad()
def g_fit(atdt, n2, args, amp):
    """The mechanism at work (ours, the benchmark's diagnostic): eq. 1's fit, the MSE between
    G(E1(x)) and E2(x), and that MSE over E2's mean squared feature, on A's val images (what G
    learns from) and on B's (E2 never sees B in training; no label is read). At --size, on rank 0
    alone (the other ranks return {})."""
    if not engine.is_main():
        return {}
    out = {}
    for key, name, role in (("a", args.src, "src"), ("b", args.tgt, "tgt")):
        data = build_dataset(name, "val", args.size, args.data_root, length=args.proc_length, labels=[],
                             role=f"--{role}", **{**data_options(args, role), "resize": tuple(args.size)})
        sums = {"se": 0.0, "sq": 0.0, "n": 0.0}
        for batch in engine.first_batches(data, max(args.batch_size, 4), args, args.eval_batches or DIAG_BATCHES):
            x = batch["image"].to(args.device)
            with amp.autocast():
                t = atdt.transfer(atdt.encoder(x)["layer4"]).float()
                f2 = n2.forward_features(x).float()
            sums["se"] += float((t - f2).square().sum())
            sums["sq"] += float(f2.square().sum())
            sums["n"] += f2.numel()
        out[f"feature_mse_{key}"] = sums["se"] / max(sums["n"], 1)
        out[f"relative_mse_{key}"] = sums["se"] / sums["sq"] if sums["sq"] else None
    return out


def save_best(path, iteration, metrics, g):
    """The best G so far, in its own file: weights only (no optimizer state, no E1 / D2), written
    when the selection score improves, so checkpoint.pth stays one G + Adam (docs/atdt.md)."""
    best = {"metrics": metrics, "iteration": iteration,
            "g": {k: v.detach().to("cpu", copy=True) for k, v in g.state_dict().items()}}
    if engine.is_main():
        engine.atomic_save(best, path)
    return best


def load_best(path):
    """best_g.pth of a resumed run. If a crash fell between it and checkpoint.pth, the resumed
    steps replay exactly (docs/design.md, "The engine") and reach the same G and score again."""
    if not os.path.isfile(path):
        return {"metrics": None, "iteration": None, "g": None}
    return torch.load(path, map_location="cpu", weights_only=True)


if __name__ == "__main__":
    engine.cli(main, parse(get_args_parser()))
