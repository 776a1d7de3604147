"""Supervised training on one domain, scored on both: the source-only baseline / oracle,
and the measurement of the procedural benchmark's domain gap.

It is also the smallest complete use of the engine (DDP, AMP, exact resume, logging),
the shape every method script follows.

Usage:
    python tools/train_supervised.py --src proc-a --tgt proc-b      # train on A, score A and B
    python tools/train_supervised.py --src proc-b --tgt proc-b      # the in-domain reference
    torchrun --nproc_per_node=2 tools/train_supervised.py --src proc-a
"""
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from lib import engine, losses  # noqa: E402
from lib.args import add_common_args, apply_smoke, new_parser, parse  # noqa: E402
from lib.data import build_dataset, data_options, get_entry, resolve_classes  # noqa: E402
from lib.evaluation import evaluate_model, scoring_loader  # noqa: E402
from lib.models import build_model, model_spec  # noqa: E402

SCRIPT = "train_supervised.py"


def get_args_parser(add_help=True):
    parser = new_parser(__doc__, add_help)
    add_common_args(parser)
    parser.add_argument("--tasks", nargs="+", default=["semantic"],
                        choices=["semantic", "depth", "normals"], help="tasks trained on --src")
    parser.add_argument("--output-stride", type=int, default=16, choices=[8, 16, 32])
    parser.add_argument("--weight-decay", type=float, default=1e-4)
    # A from-scratch ResNet-18 on the CPU learns in minutes at 1e-3 (Adam); not a paper setting.
    parser.set_defaults(lr=1e-3, iters=300, batch_size=8, save_every=100)
    return parser


def train_step(model, batch, optimizer, amp, args, iteration):
    """One optimisation step; returns the loss terms as floats."""
    with amp.autocast():
        preds = model(batch["image"])
    terms = {t: losses.supervised_loss(t, preds[t].float(), batch[t]) for t in args.tasks}
    total = sum(terms.values())
    values = engine.check_finite({"loss": total, **terms}, iteration + 1, batch["name"])
    optimizer.zero_grad(set_to_none=True)
    amp.backward(total)
    amp.step([optimizer])
    return values


def build_model_and_optim(args, num_classes):
    """EncDecNet with one decoder per task, Adam and a poly schedule."""
    channels = {"semantic": num_classes, "depth": 1, "normals": 3}
    spec = model_spec("encdec", backbone=args.backbone, output_stride=args.output_stride,
                      pretrained=args.pretrained, tasks={t: channels[t] for t in args.tasks})
    model = build_model(spec)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    return model, spec, optimizer


def val_loader(name, args):
    """Validation loader of dataset `name` and its class count, built once per run."""
    entry = get_entry(name)
    role = "src" if name == args.src else "tgt"
    loader = scoring_loader(name, [t for t in args.tasks if t in entry.labels], args, f"--{role}",
                            args.batch_size, **data_options(args, role))
    return loader, args.classes or entry.num_classes


def score(model, val, args, amp):
    """Metrics of the model on one validation loader from val_loader()."""
    loader, num_classes = val
    return evaluate_model(model, loader, args.device, args.tasks, num_classes, amp=amp)


def main(args):
    apply_smoke(args)
    args.classes = resolve_classes([(args.src, "--src"), (args.tgt, "--tgt")], args.classes)
    logger = engine.setup_run(args, SCRIPT)
    train_set = build_dataset(args.src, "train", args.size, args.data_root, args.seed,
                              args.proc_length, labels=args.tasks, role="--src", train=True,
                              **data_options(args, "src"))
    loader = engine.InfiniteLoader(train_set, args.batch_size, args, domain=0)
    # A folder dataset's class list is in its dataset.json, not in the registry.
    args.classes = args.classes or getattr(train_set, "classes", None) or get_entry(args.src).num_classes
    model, spec, optimizer = build_model_and_optim(args, args.classes)
    model = engine.prepare_model(model, args)
    scheduler = engine.poly_scheduler(optimizer, args.iters, args.poly_power)
    amp = engine.Amp(args.amp, args.device)
    state = dict(models={"model": model}, optimizers={"optimizer": optimizer},
                 schedulers={"scheduler": scheduler}, amp=amp, loaders={"train": loader})
    start = 0
    if path := engine.resume_path(args):
        start = engine.restore(engine.load_checkpoint(path, SCRIPT), **state)
    val = {"source": val_loader(args.src, args)}
    val["target"] = val["source"] if args.tgt == args.src else val_loader(args.tgt, args)
    ckpt_path = os.path.join(args.output_dir, "checkpoint.pth")
    logger.start(start)
    model.train()
    for it in range(start, engine.stop_iteration(args)):
        batch = engine.to_device(next(loader), args.device, args.channels_last)
        values = train_step(model, batch, optimizer, amp, args, it)
        scheduler.step()
        logger.step(it + 1, values, lr=scheduler.get_last_lr()[0])
        if engine.should_save(it + 1, args):
            engine.save_checkpoint(ckpt_path, script=SCRIPT, iteration=it + 1, args=args,
                                   model_specs={"model": spec}, **state)
        if args.eval_every and (it + 1) % args.eval_every == 0 and it + 1 != args.iters:
            logger.write({"iter": it + 1, "source_val": score(model, val["source"], args, amp)})
    if engine.stop_iteration(args) < args.iters:
        engine.cleanup_distributed()
        return None  # stopped early on purpose (--stop-at): resume with --resume auto
    # The reported model is the last one (docs/design.md, "Model selection"): no target labels used.
    metrics = {"selection": "last", "iteration": args.iters, "source": score(model, val["source"], args, amp)}
    # --tgt equal to --src (the in-domain reference): the same split, scored once.
    same = val["target"] is val["source"]
    metrics["target"] = metrics["source"] if same else score(model, val["target"], args, amp)
    logger.write({"iter": args.iters, **metrics})
    if engine.is_main():
        engine.write_json(metrics, os.path.join(args.output_dir, "metrics.json"))
        for dom in ("source", "target"):
            m = metrics[dom]
            print(f"{dom} ({args.src if dom == 'source' else args.tgt} val): "
                  + " ".join(f"{k}={v:.2f}" for k, v in m.items() if isinstance(v, float)))
    engine.cleanup_distributed()
    return metrics


if __name__ == "__main__":
    engine.cli(main, parse(get_args_parser()))
