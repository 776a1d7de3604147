"""How well a train_dada.py model's depth block fits the source, and what its discriminator
input looks like on each domain: the check behind the cpu preset's lambda_dep (docs/dada.md).

    python tools/dada_depth_fit.py runs/dada_proc/s7_seed0/model.pth [more runs' model.pth]

For each checkpoint, on --batches batches of the source val split (its depth labels) and the
target val split (images only; no target label is read):
  z_mean / z_target_mean  the predicted inverse depth Z and its target, the official
                          65536 / (100 d + 1) times the run's --depth-target-scale (1 for runs
                          made before the flag), on the source's valid pixels,
  z_abs_rel               mean |Z - target| / target on those pixels (source only),
  i_mean, iz_mean         the surprisal I summed over classes, and I x Z averaged over
                          classes and pixels: the maps D(I) and D(I x Z) see (eq. 5-6).
The network runs in train mode, as train_dada.py's loop runs it (batch statistics).
"""
import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import train_dada  # noqa: E402
from lib import engine, losses  # noqa: E402
from lib.data import build_dataset, data_options  # noqa: E402
from lib.models import build_model  # noqa: E402


def get_args_parser():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoints", nargs="+", help="model.pth or checkpoint.pth of train_dada.py runs")
    parser.add_argument("--batches", type=int, default=4, help="batches of 4 images per domain")
    parser.add_argument("--data-root", default=None)
    return parser


def load(path):
    ckpt = engine.load_checkpoint(path, train_dada.SCRIPT, flag="checkpoint")
    net = build_model(ckpt["model_specs"]["model"])
    net.load_state_dict(ckpt["models"]["model"])
    if net.depth is None:
        raise engine.UserError(f"{path}: this model has no depth block (setups s1-s3)")
    return net.train(), ckpt["args"]


@torch.no_grad()
def fit(net, dataset, batches, with_depth, scale=1.0):
    """Means over `batches` batches of 4 (module docstring): Z against the target scaled by
    `scale` (the run's --depth-target-scale; DADA Sec. 3.1's inverse depth, eq. 2's target)
    where `with_depth`, and the maps I and I x Z the discriminators see (eq. 5-6)."""
    model, sums, count = train_dada.RawOutputs(net), {}, 0
    for b in range(batches):
        items = [dataset[i] for i in range(4 * b, min(4 * b + 4, len(dataset)))]
        if not items:
            break
        logits, z = train_dada.forward(model, torch.stack([s["image"] for s in items]))
        surprisal = losses.surprisal_map(logits)
        stats = {"z_mean": z.mean(), "i_mean": surprisal.sum(1).mean(),
                 "iz_mean": (surprisal * z.unsqueeze(1)).mean()}
        if with_depth:
            target, valid = train_dada.inverse_depth_target(torch.stack([s["depth"] for s in items]), scale)
            stats["z_target_mean"] = target[valid].mean()
            stats["z_abs_rel"] = ((z - target).abs() / target)[valid].mean()
        for k, v in stats.items():
            sums[k] = sums.get(k, 0.0) + float(v)
        count += 1
    if not count:
        raise engine.UserError(f"{getattr(dataset, 'name', 'the split')} has no images to score")
    return {k: v / count for k, v in sums.items()}


def main(args):
    for path in args.checkpoints:
        net, run = load(path)
        size, saved = run.get("size") or [64, 128], argparse.Namespace(**run)
        row = []
        for role, name, labels in (("src", run["src"], ["semantic", "depth"]), ("tgt", run["tgt"], [])):
            # the run's own data options (roots, classes, its --src/--tgt-resize), val split
            opts = {**data_options(saved, role), "flip": False, "photometric": False,
                    "resize": run.get(f"{role}_resize") or run.get("resize"),
                    "image_resample": run.get("image_resample") or "bilinear"}
            data = build_dataset(name, "val", size, args.data_root or run.get("data_root"),
                                 length=4 * args.batches, labels=labels, role=f"--{role}", **opts)
            m = fit(net, data, args.batches, bool(labels), target_scale(run, path))
            row.append(f"{'source' if role == 'src' else 'target'} " + " ".join(f"{k}={v:.3f}" for k, v in m.items()))
        print(f"{path}: lambda_dep={run.get('lambda_dep')} depth_target_scale={target_scale(run, path)} | "
              + " | ".join(row))


def target_scale(run, path):
    """The run's --depth-target-scale: 1 for a run made before the flag existed (it has no
    such key and no other); a run of the flag's first, shorter name is read under that name."""
    if "depth_target_scale" in run:
        return run["depth_target_scale"]
    if "depth_scale" in run:
        return run["depth_scale"]
    if "lambda_dep" not in run:
        raise engine.UserError(f"{path} was not made by train_dada.py (its args have no lambda_dep)")
    return 1.0


if __name__ == "__main__":
    engine.cli(main, get_args_parser().parse_args())
