"""Evaluate semantic segmentation, depth or surface normals: a trained checkpoint of any
script of this repository, or predictions saved as files.

Usage:
    python evaluate.py --checkpoint runs/train_supervised/checkpoint.pth --dataset proc-b
    python evaluate.py --checkpoint CKPT --dataset cityscapes --data-root DATA --classes 19
    python evaluate.py --pred-dir preds/ --dataset proc-b --task semantic --pred-format trainid
    torchrun --nproc_per_node=4 evaluate.py --checkpoint CKPT --dataset cityscapes ...

Prediction files (--pred-dir DIR; also what --save-preds writes): one file per sample, named
by the sample's `name`, under DIR/<task>/ (or directly under DIR with a single --task):
    semantic  <name>.png  8-bit class ids (--pred-format trainid: the --classes indices;
                          labelid: Cityscapes labelIds, mapped with --classes)
    depth     <name>.png  16-bit, metres * 256 (KITTI convention), or <name>.npy (float metres)
    normals   <name>.npy  3xHxW or HxWx3 float unit vectors in camera coordinates
metrics.json keys: mIoU acc mean_acc per_class | abs_rel sq_rel rmse rmse_log log10 a1 a2 a3 |
mean median rmse_deg pct_11_25 pct_22_5 pct_30 (percentages as 0-100).
"""
import os

import numpy as np
import torch
from PIL import Image

from lib import engine, vis
from lib.args import add_data_args, new_parser
from lib.data import build_dataset, get_entry
from lib.data.labels import CITYSCAPES_TO, TRAIN19_TO, apply_map
from lib.data.transforms import denormalize
from lib.evaluation import TASKS, Scorer, evaluate_model
from lib.models import build_model


def get_args_parser(add_help=True):
    parser = new_parser(__doc__, add_help)
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoint", help="checkpoint.pth written by any training script")
    src.add_argument("--pred-dir", help="folder of saved predictions (layout above)")
    add_data_args(parser)
    parser.add_argument("--dataset", default=None,
                        help="dataset to score on (default: the checkpoint's --tgt, else proc-b)")
    parser.add_argument("--split", default="val", help="split to score (default: %(default)s)")
    parser.add_argument("--task", nargs="+", choices=TASKS, default=None,
                        help="tasks to score (default: every task both model and dataset have)")
    parser.add_argument("--pred-format", choices=["trainid", "labelid"], default="trainid",
                        help="encoding of semantic PNGs in --pred-dir")
    parser.add_argument("--model", default=None, help="which model of the checkpoint (default: "
                        "the one the script marked for inference)")
    parser.add_argument("--min-depth", type=float, default=1e-3, help="depth cap (metres)")
    parser.add_argument("--max-depth", type=float, default=80.0, help="depth cap (metres)")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--device", default=None)
    parser.add_argument("--amp", default="off", choices=["off", "bf16", "fp16"])
    parser.add_argument("--max-batches", type=int, default=None, help="score only N batches")
    parser.add_argument("--save-vis", type=int, default=0, metavar="N",
                        help="write side-by-side panels of the first N samples")
    parser.add_argument("--save-preds", action="store_true",
                        help="with --checkpoint: also write predictions in the --pred-dir layout")
    parser.add_argument("--output-dir", default=None,
                        help="where metrics.json goes (default: next to the checkpoint / pred-dir)")
    # Score at the checkpoint's training resolution unless --size says otherwise.
    parser.set_defaults(size=None)
    return parser


# ----------------------------------------------------------------------------- checkpoints
def load_inference_model(path, name=None, flag="--checkpoint"):
    """Rebuild the checkpoint's inference model from its stored spec and weights (strict)."""
    ckpt = engine.load_checkpoint(path, flag=flag)
    specs = ckpt.get("model_specs") or {}
    name = name or ckpt.get("extra", {}).get("inference_model") or (
        next(iter(specs)) if len(specs) == 1 else None)
    if name not in specs:
        raise engine.UserError(f"{path} (from {ckpt['script']}) has no inference model "
                               f"{name!r}; models with a spec: {sorted(specs)} (pick with --model)")
    spec = specs[name]
    if "pretrained" in spec.get("kwargs", {}):
        # The checkpoint holds the trained weights: never re-download initial ones.
        spec = {**spec, "kwargs": {**spec["kwargs"], "pretrained": "none"}}
    model = build_model(spec)
    model.load_state_dict(ckpt["models"][name], strict=True)
    kwargs = spec.get("kwargs", {})
    if "depth_focal" not in kwargs.get("n2", kwargs) and ckpt["args"].get("focal_ref"):
        # Written before models stored their depth convention: it was the run's --focal-ref.
        model.depth_focal = float(ckpt["args"]["focal_ref"])
    return model.eval(), ckpt  # eval before any forward: a train-mode pass would move BN statistics


def model_classes(model, image):
    """Number of semantic channels the model outputs (None if it has no semantic head)."""
    with torch.no_grad():
        out = model(image[None])
    return out["semantic"].shape[1] if "semantic" in out else None, tuple(out)


def class_adapter(model_nc, classes):
    """Wrap predictions of a 19-class model to score them on 16/13/7/11 classes."""
    if model_nc is None or model_nc == classes:
        return None
    if model_nc == 19 and classes in TRAIN19_TO:
        lut = torch.tensor(TRAIN19_TO[classes])  # a copy: the shared table is read-only
        # Choose among the classes that exist in the smaller set: a pixel of a dropped class
        # (e.g. terrain for 16 classes) cannot be scored, so the model's next choice counts.
        dropped = lut[:19] == 255

        def adapt(logits):
            logits = logits.masked_fill(dropped.to(logits.device)[None, :, None, None], float("-inf"))
            return apply_map(lut, logits.argmax(1))
        return adapt
    raise engine.UserError(f"the model predicts {model_nc} classes and cannot be scored on "
                           f"--classes {classes}; use --classes {model_nc}")


class _Adapted(torch.nn.Module):
    """A model whose semantic output is mapped to another class set."""

    def __init__(self, model, adapt):
        super().__init__()
        self.model, self.adapt = model, adapt
        self.depth_focal = getattr(model, "depth_focal", None)   # the model's depth convention

    def forward(self, x):
        out = self.model(x)
        if self.adapt is not None and "semantic" in out:
            out["semantic"] = self.adapt(out["semantic"])
        return out


# ----------------------------------------------------------------------------- prediction files
def _task_dir(pred_dir, task, tasks):
    """DIR/<task>/ when present, else DIR itself for a single-task folder."""
    sub = os.path.join(pred_dir, task)
    if os.path.isdir(sub):
        return sub
    if len(tasks) == 1:
        return pred_dir
    raise engine.UserError(f"--pred-dir {pred_dir} has no {task}/ folder; with several tasks the "
                           "layout is DIR/<task>/<name>.(png|npy)")


def read_prediction(path_base, task, args):
    """Read one prediction file of `task` as a tensor (semantic HxW, depth HxW, normals 3xHxW)."""
    for ext in (".png", ".npy"):
        if os.path.isfile(path_base + ext):
            path = path_base + ext
            break
    else:
        raise engine.UserError(f"missing prediction {path_base}.png|.npy; --pred-dir must hold one "
                               "file per sample of the split, named by sample name")
    if path.endswith(".npy"):
        arr = np.load(path)
        if task == "normals" and arr.ndim == 3 and arr.shape[-1] == 3 and arr.shape[0] != 3:
            arr = arr.transpose(2, 0, 1)
        return torch.from_numpy(np.ascontiguousarray(arr)).float()
    arr = np.array(Image.open(path))
    if task == "depth":
        return torch.from_numpy(arr.astype(np.float32) / 256.0)
    ids = torch.from_numpy(arr.astype(np.int64))
    if args.pred_format == "labelid":
        ids = apply_map(CITYSCAPES_TO[args.classes], ids)
    return ids


def score_pred_dir(dataset, tasks, args):
    """Score the files of --pred-dir against the dataset split."""
    if not os.path.isdir(args.pred_dir) or not any(os.scandir(args.pred_dir)):
        raise engine.UserError(f"--pred-dir {args.pred_dir} is empty or missing")
    dirs = {t: _task_dir(args.pred_dir, t, tasks) for t in tasks}
    scorer = Scorer(tasks, args.classes, args.min_depth, args.max_depth)
    n = len(dataset) if args.max_batches is None else min(len(dataset), args.max_batches * args.batch_size)
    for i in range(args.rank, n, args.world_size):  # under torchrun each file is read once
        sample = dataset[i]
        preds, batch = {}, {}
        for t in tasks:
            pred = read_prediction(os.path.join(dirs[t], sample["name"]), t, args)
            if pred.shape[-2:] != sample[t].shape[-2:]:
                raise engine.UserError(
                    f"prediction for {sample['name']} ({t}) is {tuple(pred.shape[-2:])}, the label is "
                    f"{tuple(sample[t].shape[-2:])}: save predictions at label resolution (or set --size)")
            preds[t], batch[t] = pred[None], sample[t][None]
        scorer.update(preds, batch)
    return scorer.compute()


def save_predictions(out_dir, batch, preds):
    """Write a batch of predictions in the --pred-dir layout (see the module docstring)."""
    for i, name in enumerate(batch["name"]):
        for task, pred in preds.items():
            if task not in TASKS:
                continue
            base = os.path.join(out_dir, task, name)
            os.makedirs(os.path.dirname(base), exist_ok=True)
            p = pred[i].float().cpu()
            if task == "semantic":
                ids = p.argmax(0) if p.dim() == 3 else p
                Image.fromarray(ids.numpy().astype(np.uint8)).save(base + ".png")
            elif task == "depth":
                depth = (p.clamp(0, 255) * 256).round().numpy().astype(np.uint16)
                Image.fromarray(depth).save(base + ".png")
            else:
                np.save(base + ".npy", p.numpy().astype(np.float32))


def save_panels(out_dir, batch, preds, classes, budget):
    """Side-by-side panels (image | label | prediction per task) for the first samples."""
    for i, name in enumerate(batch["name"]):
        if budget[0] <= 0:
            return
        budget[0] -= 1
        row_gt, row_pred = [vis.to_rgb_uint8(denormalize(batch["image"][i].cpu()))], []
        for task in ("semantic", "depth", "normals"):
            if task not in preds or task not in batch:
                continue
            gt, p = batch[task][i].cpu(), preds[task][i].float().cpu()
            if task == "semantic":
                p = p.argmax(0) if p.dim() == 3 else p
                row_gt.append(vis.colorize_semantic(gt, classes))
                row_pred.append(vis.colorize_semantic(p, classes))
            elif task == "depth":
                row_gt.append(vis.colorize_depth(gt))
                row_pred.append(vis.colorize_depth(p))
            else:
                row_gt.append(vis.colorize_normals(gt))
                row_pred.append(vis.colorize_normals(p))
        panel = vis.make_panel([row_gt, [row_gt[0]] + row_pred])
        vis.save_png(panel, os.path.join(out_dir, "vis", name.replace("/", "_") + ".png"))


# ----------------------------------------------------------------------------- main
def print_table(metrics, title):
    """A two-column table of the scalar metrics (and per-class IoU when present)."""
    print(title)
    for k, v in metrics.items():
        if isinstance(v, float):
            print(f"  {k:<10} {v:8.3f}" if abs(v) < 1e4 else f"  {k:<10} {v:.4g}")
    if metrics.get("per_class"):
        print("  per-class IoU: " + " ".join("-" if v is None else f"{v:.1f}" for v in metrics["per_class"]))


def main(args):
    engine.init_distributed(args)
    model, ckpt = None, None
    if args.checkpoint:
        model, ckpt = load_inference_model(args.checkpoint, args.model)
    name = args.dataset or (ckpt["args"].get("tgt") if ckpt else None) or "proc-b"
    entry = get_entry(name, "--dataset")
    size = args.size or (ckpt["args"].get("size") if ckpt else None) or [128, 256]
    if ckpt and args.dataset in (None, ckpt["args"].get("tgt")):
        # Same dataset as the run: the same class map and depth frame unless told otherwise.
        args.classes = args.classes or ckpt["args"].get("classes")
        args.focal_ref = args.focal_ref or ckpt["args"].get("focal_ref")
        args.resize = args.resize or ckpt["args"].get("resize")   # the resolution it was scored at
    wanted = [t for t in (args.task or TASKS) if t in entry.labels]
    dataset = build_dataset(name, args.split, size, args.data_root, length=args.proc_length,
                            labels=wanted, role="--dataset", root=args.src_root or args.tgt_root,
                            classes=args.classes, resize=args.resize, focal_ref=args.focal_ref)
    # A folder dataset knows its class count from its dataset.json, not from the registry.
    args.classes = args.classes or getattr(dataset, "classes", None) or entry.num_classes
    default_out = (os.path.join(os.path.dirname(os.path.abspath(args.checkpoint)), f"eval-{name}-{args.split}")
                   if args.checkpoint else args.pred_dir.rstrip("/") + "-eval")
    out_dir = args.output_dir or default_out
    if model is None:
        tasks = args.task or [t for t in wanted if os.path.isdir(os.path.join(args.pred_dir, t))] or wanted[:1]
        metrics = score_pred_dir(dataset, tasks, args)
    else:
        metrics = score_checkpoint(model, dataset, wanted, out_dir, args)
    metrics = {"dataset": name, "split": args.split, "source": args.checkpoint or args.pred_dir,
               "selection": ckpt["extra"].get("selection", "last") if ckpt else None,
               **metrics}
    if engine.is_main():
        print_table(metrics, f"{name} {args.split}")
        engine.write_json(metrics, os.path.join(out_dir, "metrics.json"))
        print(f"wrote {os.path.join(out_dir, 'metrics.json')}")
    engine.cleanup_distributed()
    return metrics


def score_checkpoint(model, dataset, wanted, out_dir, args):
    """Run the checkpoint's model over the split; optional prediction files and panels."""
    nc, outputs = model_classes(model, dataset[0]["image"])
    tasks = [t for t in wanted if t in outputs]
    if not tasks:
        raise engine.UserError(f"the model predicts {list(outputs)}, the dataset labels {wanted}: "
                               "nothing to score (check --task / --dataset)")
    adapted = _Adapted(model, class_adapter(nc, args.classes)).to(args.device)
    loader = engine.eval_loader(dataset, args.batch_size, args, args.max_batches)
    budget = [args.save_vis]

    def on_batch(batch, preds):
        if args.save_preds:
            save_predictions(os.path.join(out_dir, "preds"), batch, preds)
        if budget[0] > 0:
            save_panels(out_dir, batch, preds, args.classes, budget)

    amp = engine.Amp(args.amp, args.device)
    return evaluate_model(adapted, loader, args.device, tasks, args.classes, args.min_depth,
                          args.max_depth, amp=amp, on_batch=on_batch)


if __name__ == "__main__":
    engine.cli(main, get_args_parser().parse_args())
