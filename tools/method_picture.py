"""What a method changes, as one picture: a few validation images with their ground truth, a
baseline's prediction and the method's, side by side (the method pages' pictures).

    python tools/method_picture.py --baseline runs/dada_proc/s1_seed0/model.pth \
        --method runs/dada_proc/s7_seed0/model.pth --names "S1 source only" "S7 DADA" \
        --task semantic --num 3 --out docs/dada.png

One row per image: image | ground truth | baseline | method. Depth uses one colour scale per
row, from the ground truth, and normals the fixed colouring (as `evaluate.py --save-vis`), so
the two predictions can be compared by eye. Both checkpoints are any script's (their stored
specs rebuild the inference models, in eval mode); the images are the first --num of the
split, at the method run's --resize (else its --size).
"""
import argparse
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from evaluate import load_inference_model  # noqa: E402
from lib import engine, vis  # noqa: E402
from lib.data import build_dataset  # noqa: E402
from lib.data.transforms import denormalize  # noqa: E402
from lib.evaluation import depth_focal_of  # noqa: E402

TASKS = ("semantic", "depth", "normals")


def get_args_parser():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", required=True, help="checkpoint (model.pth) of the baseline run")
    parser.add_argument("--method", required=True, help="checkpoint (model.pth) of the method's run")
    parser.add_argument("--names", nargs=2, default=["baseline", "method"], metavar=("BASELINE", "METHOD"),
                        help="column titles (default: baseline method)")
    parser.add_argument("--task", choices=TASKS, default="semantic")
    parser.add_argument("--dataset", default="proc-b", help="dataset of the images (default: %(default)s)")
    parser.add_argument("--split", default="val")
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--num", type=int, default=3, help="images, the first of the split (default: 3)")
    parser.add_argument("--out", required=True, help="PNG to write")
    return parser


def predict(model, sample, task):
    """One sample's prediction of `task` in the label's units: class ids, metres, unit normals
    (and, for semantics, the number of classes the model predicts)."""
    with torch.no_grad():
        out = model(sample["image"][None])
    if task not in out:
        raise engine.UserError(f"the model predicts {', '.join(out)}, not {task} (choose --task)")
    p = out[task][0].float()
    if task == "semantic":
        return p.argmax(0), p.shape[0]
    if task == "depth" and depth_focal_of(model):   # a depth convention at a reference focal
        p = p * float(sample["focal"]) / depth_focal_of(model)
    return p, None


def tiles(task, gt, preds, num_classes):
    """Ground truth and predictions coloured on one scale (depth: the ground truth's range)."""
    if task == "semantic":
        return [vis.colorize_semantic(x, num_classes) for x in (gt, *preds)]
    if task == "depth":
        near, far = vis.depth_bounds(gt)
        return [vis.colorize_depth(x, max_depth=far, min_depth=near) for x in (gt, *preds)]
    return [vis.colorize_normals(x) for x in (gt, *preds)]


def main(args):
    if args.num < 1:
        raise engine.UserError(f"--num must be >= 1, got {args.num}")
    models = [load_inference_model(p, flag=f) for p, f in ((args.baseline, "--baseline"), (args.method, "--method"))]
    run = models[1][1]["args"]
    size = run.get("resize") or run.get("size") or [128, 256]
    data = build_dataset(args.dataset, args.split, size, args.data_root, length=args.num if
                         args.dataset.startswith("proc-") else None, labels=[args.task], role="--dataset")
    if len(data) < args.num:
        raise engine.UserError(f"{args.dataset} {args.split} has {len(data)} samples, fewer than --num {args.num}")
    rows, titles = [], []
    for i in range(args.num):
        sample = data[i]
        preds, classes = zip(*(predict(m, sample, args.task) for m, _ in models))
        num_classes = max(c or 0 for c in classes) or None
        image = vis.to_rgb_uint8(denormalize(sample["image"]))
        factor = max(1, -(-256 // image.shape[1]))
        row = [vis.upscale(image, factor, smooth=True)] + [vis.upscale(t, factor) for t in
                                                          tiles(args.task, sample[args.task], preds, num_classes)]
        rows.append(row)
        titles.append(["image", f"{args.task}: ground truth", *args.names])
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    vis.save_png(vis.make_panel(rows, titles=titles), args.out)
    print(f"wrote {args.out}: {args.num} {args.dataset} {args.split} images, {args.task}, "
          f"{args.names[0]} ({args.baseline}) | {args.names[1]} ({args.method})")


if __name__ == "__main__":
    engine.cli(main, get_args_parser().parse_args())
