"""Evaluate semantic segmentation, depth or surface normals: a trained checkpoint of any
script of this repository, or predictions saved as files; or run a checkpoint over photos.

Usage:
    python evaluate.py --checkpoint runs/train_supervised/checkpoint.pth --dataset proc-b
    python evaluate.py --checkpoint CKPT --dataset cityscapes --data-root DATA --classes 19
    python evaluate.py --pred-dir preds/ --dataset proc-b --task semantic --pred-format trainid
    python evaluate.py --checkpoint CKPT --images photos/ --save-color
    torchrun --nproc_per_node=4 evaluate.py --checkpoint CKPT --dataset cityscapes ...

The run's own settings apply unless given: --min-depth/--max-depth always; and when scoring a
dataset the run scored, the protocol it scored it with (--size, --resize, --classes,
--focal-ref, --native-labels, --kitti-protocol, its folder, and --proc-length on procedural
data), so that re-scoring a checkpoint gives the run's own numbers.

Prediction files (--pred-dir DIR; DIR/<task>/ when that folder exists, else DIR itself with a
single --task; sub-folders are searched). A sample's file is, in this order:
    <name>.png|npy          its full sample name (what --save-preds writes), e.g.
                            cityscapes/val/frankfurt/frankfurt_000000_000294.png
    <id>.*  <id>_*.*        anywhere below: <id> is the name's last part, or the stem of the
                            sample's image file (frankfurt_000000_000294_leftImg8bit.png,
                            as mmsegmentation's format_only writes; cityscapesScripts'
                            {city}_{seq}_{frame}*.png). Two matching files are an error.
Encodings:
    semantic  8-bit one-channel PNG (L, or P read as palette indices, never as colours):
              --pred-format trainid: indices of --classes; labelid: Cityscapes labelIds,
              mapped with --classes. 255, or a void labelId (0-6, 9, 10, 14-16, 18, 29, 30
              for 19 classes), on a labelled pixel is a false negative of the true class.
    depth     16-bit PNG of metres * 256 (KITTI convention), or .npy (float metres)
    normals   .npy, 3xHxW or HxWx3 float unit vectors in camera coordinates
--save-preds writes this layout under OUTPUT/preds/ (semantic in --pred-format),
--save-color colour PNGs under OUTPUT/preds/color/<task>/.
metrics.json: dataset split source selection samples tasks classes class_names, with depth
depth_protocol (e.g. KITTI's eigen or annotated protocol, the label resolution, the depth range),
and mIoU acc mean_acc per_class | abs_rel sq_rel rmse rmse_log log10 a1 a2 a3 |
mean median rmse_deg pct_11_25 pct_22_5 pct_30 (percentages as 0-100; null = nothing measured).
"""
import argparse
import os

import numpy as np
import torch
from PIL import Image

from lib import engine, vis
from lib.args import add_data_args, new_parser
from lib.data import build_dataset, get_entry
from lib.data import transforms as T
from lib.data.base import DataError, inside, read_rgb
from lib.data.labels import CITYSCAPES_TO, CLASS_NAMES, NAME_TO_LABEL, TRAIN19_TO, apply_map
from lib.evaluation import (TASKS, Progress, Scorer, depth_protocol, evaluate_model, resize_prediction,
                            scoring_at)
from lib.metrics import negative_transfer_rate, per_image_miou
from lib.models import build_model
from lib.models.dada import official_checkpoint

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".tif", ".tiff", ".webp")
PRED_EXTENSIONS = (".png", ".npy")


def get_args_parser(add_help=True):
    parser = new_parser(__doc__, add_help)
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoint", help="checkpoint.pth or model.pth written by any training script")
    src.add_argument("--pred-dir", help="folder of saved predictions (layout above)")
    add_data_args(parser)
    parser.add_argument("--dataset", default=None,
                        help="dataset to score on (default: the checkpoint's --tgt, else proc-b)")
    parser.add_argument("--split", default="val", help="split to score (default: %(default)s)")
    parser.add_argument("--images", default=None, metavar="DIR_OR_FILE",
                        help="with --checkpoint: predict for these photos (a folder, searched "
                             "recursively, or one file; no labels, no metrics) instead of a dataset. "
                             "Each is resized to --resize H W (default: the run's --resize, else its "
                             "--size) for the model and its predictions resized back to the photo's "
                             "size, named after its path below DIR without extension. Implies "
                             "--save-preds")
    parser.add_argument("--task", nargs="+", choices=TASKS, default=None,
                        help="tasks to score (default: every task the model predicts, or the "
                             "--pred-dir holds, that the dataset has label files for; a task "
                             "asked for here must be there)")
    parser.add_argument("--pred-format", choices=["trainid", "labelid"], default="trainid",
                        help="encoding of semantic PNGs read from --pred-dir and written by "
                             "--save-preds: class indices of --classes, or Cityscapes labelIds. "
                             "A void labelId (or 255) on a labelled pixel counts as a false "
                             "negative of the true class, as cityscapesScripts counts it")
    parser.add_argument("--model", default=None, help="which model of the checkpoint (default: "
                        "the one the script marked for inference)")
    parser.add_argument("--min-depth", type=float, default=None,
                        help="depth cap in metres (default: the run's --min-depth, else 0.001)")
    parser.add_argument("--max-depth", type=float, default=None,
                        help="depth cap in metres (default: the run's --max-depth, else 80)")
    parser.add_argument("--batch-size", type=int, default=4,
                        help="images per batch (default: %(default)s; 1 with --native-labels)")
    parser.add_argument("--native-labels", action=argparse.BooleanOptionalAction, default=None,
                        help="score at the labels' own resolution, only the image resized to "
                             "--resize and the predictions upsampled (DADA's protocol) (default: "
                             "as the run scored this dataset, else off)")
    parser.add_argument("--device", default=None)
    parser.add_argument("--amp", default="off", choices=["off", "bf16", "fp16"])
    parser.add_argument("--max-batches", type=int, default=None, help="score only N batches")
    parser.add_argument("--reference", default=None, metavar="CKPT",
                        help="with --checkpoint: also report the negative transfer rate (DADA "
                             "Sec. 4.2), the share of images whose mIoU is below this (source-only) "
                             "model's")
    parser.add_argument("--print-every", type=int, default=None, metavar="N",
                        help="progress line every N batches (default: about ten lines per run)")
    parser.add_argument("--save-vis", type=int, default=0, metavar="N",
                        help="with --checkpoint: panels of the first N samples, one row per task: "
                             "image | ground truth | prediction | error (depth of a row on one "
                             "scale), enlarged to >= 256 px per tile, in OUTPUT/vis/")
    parser.add_argument("--save-preds", action="store_true",
                        help="with --checkpoint: write predictions in the --pred-dir layout to "
                             "OUTPUT/preds/ (semantic as --pred-format)")
    parser.add_argument("--save-color", action="store_true",
                        help="with --checkpoint: write colour PNGs of the predictions to "
                             "OUTPUT/preds/color/<task>/ (Cityscapes palette, magma depth, normals)")
    parser.add_argument("--output-dir", default=None,
                        help="where metrics.json goes (default: RUN/eval-<checkpoint stem>-<dataset>-"
                             "<split>/, RUN/eval-<checkpoint stem>-images/, or <pred-dir>-eval/)")
    # Score at the checkpoint's training resolution unless --size says otherwise.
    parser.set_defaults(size=None)
    return parser


def check_flags(args):
    """Refuse flag combinations that cannot work, before any heavy work."""
    if args.pred_dir and (args.images or args.save_preds or args.save_color or args.save_vis):
        flag = next(f for f, v in (("--images", args.images), ("--save-preds", args.save_preds),
                                   ("--save-color", args.save_color), ("--save-vis", args.save_vis)) if v)
        raise engine.UserError(f"{flag} needs --checkpoint (a model to run), not --pred-dir")
    if args.images:
        args.save_preds = True
    if args.reference and (not args.checkpoint or args.images):
        raise engine.UserError("--reference compares two models on a labelled split: give "
                               "--checkpoint and a --dataset, not --pred-dir or --images")
    if args.reference and not os.path.isfile(args.reference):
        raise engine.UserError(f"checkpoint not found: {args.reference} (check --reference)")


# ----------------------------------------------------------------------------- checkpoints
def read_checkpoint(path, flag):
    """A checkpoint of this repository, or an official DADA / AdvEnt .pth converted in memory
    (lib.models.dada.official_checkpoint, as tools/import_checkpoint.py writes it)."""
    try:
        return engine.load_checkpoint(path, flag=flag)
    except engine.UserError:
        ckpt = official_checkpoint(path)
        if ckpt is None:
            raise
        return ckpt


def load_inference_model(path, name=None, flag="--checkpoint"):
    """Rebuild the checkpoint's inference model from its stored spec and weights (strict)."""
    ckpt = read_checkpoint(path, flag)
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
    if model_nc is None or model_nc == classes or classes is None:   # None: no semantic labels
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


def inherit_run_settings(args, run, name):
    """Fill what the command line leaves open with the run's own settings, so re-scoring a
    checkpoint reproduces the numbers of its run (docs/evaluate.md, "Re-scoring reproduces the run"): the protocol the run
    scored `name` with (lib.evaluation.scoring_loader: size, resize, class map, labels at their
    own resolution, root), else, for checkpoints older than that record, its flags."""
    args.min_depth = next(v for v in (args.min_depth, run.get("min_depth"), 1e-3) if v is not None)
    args.max_depth = next(v for v in (args.max_depth, run.get("max_depth"), 80.0) if v is not None)
    args.rmse_min_depth = run.get("rmse_min_depth")   # SemiMTL's heights: RMSE counts the ground
    rec = None if args.images else run_protocol(run, name, args)
    # KITTI's protocol: as the run scored this dataset, else the run's flag (lib/data/kitti.py)
    args.kitti_protocol = args.kitti_protocol or (rec or {}).get("kitti_protocol") or run.get("kitti_protocol")
    args.carla_focal = args.carla_focal or (rec or {}).get("carla_focal") or run.get("carla_focal")
    # how the run's --resize resampled images (train_dada.py's paper preset: PIL bicubic)
    args.image_resample = (rec or {}).get("image_resample") or run.get("image_resample") or "bilinear"
    if rec is not None:
        semantic = "semantic" in get_entry(name, "--dataset").labels   # KITTI: no class map
        args.classes = args.classes or rec["classes"] or (run.get("classes") if semantic else None)
        args.focal_ref = args.focal_ref or rec["focal_ref"]
        args.resize = args.resize or rec["resize"]
        args.size = args.size or rec["size"]
        if args.native_labels is None:
            args.native_labels = rec["native_labels"]
        if not (args.src_root or args.tgt_root):
            args.src_root = rec["root"]
        if get_entry(name, "--dataset").folder is None:
            args.proc_length = args.proc_length or rec["proc_length"]  # procedural only
    elif run and (args.images or args.dataset in (None, *str(run.get("tgt")).split(","))):
        # Same data as the run: the same class map, depth frame and resolution.
        args.classes = args.classes or run.get("classes")
        args.focal_ref = args.focal_ref or run.get("focal_ref")
        args.resize = args.resize or run.get("tgt_resize") or run.get("resize")
        if not args.images and get_entry(name, "--dataset").folder is None:
            args.proc_length = args.proc_length or run.get("proc_length")  # procedural only
    # Photos have no labels, and the procedural benchmark renders its labels at its size.
    args.native_labels = bool(args.native_labels and not args.images
                              and get_entry(name, "--dataset").folder is not None)
    if args.native_labels:
        args.batch_size = 1   # label sizes may differ image to image (Vistas): one at a time


def run_protocol(run, name, args):
    """The run's scoring record of dataset `name` (None if it scored none): of the root given
    with --src-root / --tgt-root when it scored two folders of one kind, else its target's."""
    recs = [r for r in run.get("scoring") or [] if r.get("dataset") == name]
    given = args.src_root or args.tgt_root
    if given and len(recs) > 1:
        recs = [r for r in recs if r["root"] and os.path.abspath(r["root"]) == os.path.abspath(given)] or recs
    return next((r for r in reversed(recs) if r["role"] == "--tgt"), recs[-1] if recs else None)


# ----------------------------------------------------------------------------- data
def build_split(name, labels, size, args):
    """The --dataset split with `labels` (none: its images alone)."""
    return build_dataset(name, args.split, size, args.data_root, length=args.proc_length,
                         labels=labels, role="--dataset", root=args.src_root or args.tgt_root,
                         classes=args.classes, resize=args.resize, focal_ref=args.focal_ref,
                         native_labels=args.native_labels, kitti_protocol=args.kitti_protocol,
                         carla_focal=args.carla_focal,
                         image_resample=getattr(args, "image_resample", None) or "bilinear")


def open_dataset(name, tasks, asked, size, args):
    """(dataset, labelled tasks): the split with the labels of `tasks` it has files for. A
    label missing from this download is dropped with a note unless --task asked for it."""
    def build(labels):
        return build_split(name, labels, size, args)
    try:
        return build(tasks), list(tasks)
    except DataError as err:
        missing = {}
        for t in tasks:
            try:
                build([t])
            except DataError as why:
                missing[t] = why
        if not missing:
            raise err                         # no label alone is the problem
        for t, why in missing.items():
            if asked and t in asked:
                raise why
            if engine.is_main():
                print(f"note: no {t} labels for {name} {args.split} here, {t} not scored: "
                      f"{str(why).splitlines()[0]}")
        have = [t for t in tasks if t not in missing]
        return build(have), have


class ImageFiles(torch.utils.data.Dataset):
    """Photos without labels (--images): a folder, searched recursively, or one file; each
    resized to the model's input size, its own size kept to resize predictions back."""

    def __init__(self, path, size, image_resample="bilinear"):
        self.image_resample = image_resample
        if os.path.isfile(path):
            files = [(path, os.path.splitext(os.path.basename(path))[0])]
        elif os.path.isdir(path):
            files = []
            for dirpath, dirnames, names in os.walk(path):
                dirnames.sort()
                for f in sorted(names):
                    if f.lower().endswith(IMAGE_EXTENSIONS):
                        rel = os.path.relpath(os.path.join(dirpath, f), path)
                        name = os.path.splitext(rel)[0].replace(os.sep, "/")
                        files.append((os.path.join(dirpath, f), name))
        else:
            raise engine.UserError(f"--images {path}: no such file or folder")
        if not files:
            raise engine.UserError(f"--images {path}: no image files ({' '.join(IMAGE_EXTENSIONS)}) in it")
        seen = {}
        for file, name in files:
            if name in seen:
                raise engine.UserError(f"--images: {seen[name]} and {file} would both be saved as "
                                       f"{name}; rename one")
            seen[name] = file
        self.files, self.size = files, tuple(size)

    def __len__(self):
        return len(self.files)

    def __getitem__(self, index):
        path, name = self.files[index]
        rgb = torch.from_numpy(read_rgb(path).copy()).permute(2, 0, 1).float() / 255.0
        image = T.resize_sample({"image": rgb}, self.size, self.image_resample)["image"]
        return {"image": T.normalize(image), "name": name,
                "image_size": torch.tensor(rgb.shape[-2:])}


def _own_names(dataset):
    """Class names a dataset defines itself (NYUv2, ISPRS, folder ...), else None."""
    names = getattr(dataset, "class_names", None)
    return list(names() if callable(names) else names) if names is not None else None


def class_names(dataset, classes):
    """Names of the scored class map: the dataset's own, else lib.data.labels' (None if unknown)."""
    names = _own_names(dataset) or CLASS_NAMES.get(classes)
    return list(names) if names is not None and len(names) == classes else None


def require_cityscapes_map(dataset, classes, why):
    """Stop unless the class map is a Cityscapes one, so labelIds mean something."""
    names = _own_names(dataset)
    if classes not in CITYSCAPES_TO or (names is not None and names != list(CLASS_NAMES[classes])):
        raise engine.UserError(f"{why}: --pred-format labelid needs a Cityscapes class map "
                               f"(--classes {', '.join(map(str, CITYSCAPES_TO))}), not this "
                               f"{classes}-class one; use --pred-format trainid")


def labelid_lut(classes):
    """Class index -> Cityscapes labelId: the label named like the class, else its smallest
    labelId (7 and 11 classes group labels), so CITYSCAPES_TO maps each back; 255 -> 0."""
    to = CITYSCAPES_TO[classes]
    lut = np.zeros(256, dtype=np.int64)
    for i, name in enumerate(CLASS_NAMES[classes]):
        own = NAME_TO_LABEL.get(name)
        lut[i] = own.id if own is not None and to[own.id] == i else np.flatnonzero(to == i).min()
    return lut


def scored_count(n, args):
    """Samples scored over all processes: --max-batches x --batch-size caps the split before it
    is sharded (lib.engine.eval_loader), so the count does not depend on the process count."""
    if args.max_batches is None:
        return n
    return min(n, args.max_batches * args.batch_size)


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


class PredictionIndex:
    """The .png/.npy files below one folder, walked once, found by stem or stem prefix."""

    def __init__(self, folder):
        self.folder = folder
        self.by_key = {}   # a file's stem, and each of its '_'-separated prefixes -> paths
        for dirpath, dirnames, files in os.walk(folder):
            dirnames.sort()
            for f in sorted(files):
                stem, ext = os.path.splitext(f)
                if ext.lower() not in PRED_EXTENSIONS:
                    continue
                parts = stem.split("_")
                for i in range(1, len(parts) + 1):
                    self.by_key.setdefault("_".join(parts[:i]), []).append(os.path.join(dirpath, f))

    def find(self, name, ids):
        """The one prediction file of sample `name` (see the module docstring for the order)."""
        for ext in PRED_EXTENSIONS:
            if os.path.isfile(os.path.join(self.folder, name + ext)):
                return os.path.join(self.folder, name + ext)
        matches = sorted({p for i in ids for p in self.by_key.get(i, ())})
        if len(matches) > 1:
            raise engine.UserError(f"{len(matches)} prediction files match sample {name}: "
                                   f"{', '.join(matches)}; keep one per sample")
        if not matches:
            tried = [f"{name}.png|npy"] + [p for i in ids for p in (f"**/{i}.*", f"**/{i}_*.*")]
            raise engine.UserError(f"no prediction for sample {name} under {self.folder}: tried "
                                   f"{', '.join(tried)}; --pred-dir must hold one file per sample")
        return matches[0]


def sample_ids(dataset, index, name):
    """Stems a prediction of sample `index` may be named by: the last part of its name and
    the stem of its image file (the dataset's own record, when it keeps one)."""
    ids = [name.rsplit("/", 1)[-1]]
    records = getattr(dataset, "records", None)
    image = records[index].get("image") if records is not None else None
    if isinstance(image, str):
        stem = os.path.splitext(os.path.basename(image))[0]
        ids += [stem] if stem not in ids else []
    return ids


def read_prediction(path, task, args):
    """Read one prediction file of `task` as a tensor (semantic HxW, depth HxW, normals 3xHxW)."""
    try:
        if path.endswith(".npy"):
            arr = np.load(path, allow_pickle=False)
        else:
            img = Image.open(path)
            img.load()
    except Exception as exc:  # numpy and PIL raise many types on a truncated or foreign file
        first = (str(exc).strip().splitlines() or [""])[0]
        raise engine.UserError(f"cannot read prediction {path}: {exc.__class__.__name__}: {first}") from None
    if path.endswith(".npy"):
        return _checked_array(arr, path, task)
    if img.mode not in ("L", "P", "I", "I;16", "I;16B", "I;16L"):
        raise engine.UserError(f"{path}: a {img.mode} PNG; {task} predictions are one-channel "
                               "PNGs (8-bit ids, P-mode palette indices, or 16-bit depth)")
    arr = np.array(img)          # P mode: the palette indices, not the colours
    if task == "depth":
        return torch.from_numpy(arr.astype(np.float32) / 256.0)
    ids = torch.from_numpy(arr.astype(np.int64))
    if args.pred_format == "labelid":
        return apply_map(CITYSCAPES_TO[args.classes], ids)   # void labelIds -> 255
    bad = (ids != 255) & ((ids < 0) | (ids >= args.classes))
    if bool(bad.any()):
        raise engine.UserError(f"{path}: values {torch.unique(ids[bad]).tolist()[:10]} are not "
                               f"class indices of --classes {args.classes} (or 255 = none); "
                               "Cityscapes labelIds need --pred-format labelid")
    return ids


def _checked_array(arr, path, task):
    """A .npy prediction as a float tensor of the task's shape (depth HxW, normals 3xHxW),
    refusing other shapes and NaN / inf values, which would reach metrics.json."""
    if not np.issubdtype(arr.dtype, np.number):
        raise engine.UserError(f"{path}: a {arr.dtype} array; predictions are numeric arrays")
    if task == "depth" and arr.ndim == 3 and 1 in (arr.shape[0], arr.shape[-1]):
        arr = arr.reshape(arr.shape[1:] if arr.shape[0] == 1 else arr.shape[:2])
    if task == "normals" and arr.ndim == 3 and arr.shape[-1] == 3 and arr.shape[0] != 3:
        arr = arr.transpose(2, 0, 1)
    want = {"depth": "HxW", "normals": "3xHxW"}.get(task)
    if want and (arr.ndim != len(want.split("x")) or (task == "normals" and arr.shape[0] != 3)):
        raise engine.UserError(f"{path}: {task} predictions are {want} arrays, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise engine.UserError(f"{path}: {int(np.size(arr) - np.isfinite(arr).sum())} NaN or inf "
                               "values; predictions must be finite")
    return torch.from_numpy(np.ascontiguousarray(arr)).float()


def score_pred_dir(dataset, tasks, args):
    """Score the files of --pred-dir against the dataset split."""
    if not os.path.isdir(args.pred_dir) or not any(os.scandir(args.pred_dir)):
        raise engine.UserError(f"--pred-dir {args.pred_dir} is empty or missing")
    if "semantic" in tasks and args.pred_format == "labelid":
        require_cityscapes_map(dataset, args.classes, f"--pred-dir {args.pred_dir}")
    index = {t: PredictionIndex(_task_dir(args.pred_dir, t, tasks)) for t in tasks}
    scorer = Scorer(tasks, args.classes, args.min_depth, args.max_depth, void_pred=True)
    n = scored_count(len(dataset), args)
    mine = range(args.rank, n, args.world_size)    # under torchrun each file is read once
    progress = Progress(len(mine), args.print_every)
    for k, i in enumerate(mine):
        sample = dataset[i]
        preds, batch = {}, {}
        for t in tasks:
            path = index[t].find(sample["name"], sample_ids(dataset, i, sample["name"]))
            pred = read_prediction(path, t, args)
            if pred.shape[-2:] != sample[t].shape[-2:]:
                raise engine.UserError(
                    f"prediction for {sample['name']} ({t}) is {tuple(pred.shape[-2:])}, the label is "
                    f"{tuple(sample[t].shape[-2:])}: save predictions at label resolution (or set --size)")
            preds[t], batch[t] = pred[None], sample[t][None]
        scorer.update(preds, batch)
        progress(k + 1)
    return scorer.compute()


# ----------------------------------------------------------------------------- writing
def prediction_maps(batch, preds, i, native=True):
    """Sample i's predictions on the CPU (class map, depth HxW, normals 3xHxW), brought back to
    its photo's own size when the batch records one (--images) and `native`."""
    size = tuple(batch["image_size"][i].tolist()) if native and "image_size" in batch else None
    out = {}
    for task, p in preds.items():
        if task not in TASKS:
            continue
        p = p[i:i + 1]
        if task == "semantic" and p.dim() == 3:
            p = p.long()                 # already class ids (a model scored on fewer classes)
        if size is not None:
            p = resize_prediction(task, p, size)
        p = p[0].cpu()
        out[task] = p.argmax(0) if task == "semantic" and p.dim() == 3 else p
    return out


def write_prediction(out_dir, name, task, pred, args):
    """One file of the --pred-dir layout: ids PNG, 16-bit depth PNG, or normals .npy."""
    base = inside(os.path.join(out_dir, task), name, f"sample {name!r}")
    if task == "semantic":
        ids = pred.numpy().astype(np.int64)
        if args.pred_format == "labelid":
            ids = labelid_lut(args.classes)[np.clip(ids, 0, 255)]
        vis.save_png(ids.astype(np.uint8), base + ".png")
    elif task == "depth":
        vis.save_png((pred.clamp(0, 255) * 256).round().numpy().astype(np.uint16), base + ".png")
    else:
        os.makedirs(os.path.dirname(base), exist_ok=True)
        np.save(base + ".npy", pred.numpy().astype(np.float32))


def colorize(task, pred, classes):
    """Colour image of one prediction (Cityscapes palette, magma inverse depth, normals RGB)."""
    if task == "semantic":
        return vis.colorize_semantic(pred, classes)
    return vis.colorize_depth(pred) if task == "depth" else vis.colorize_normals(pred)


def save_panel(out_dir, batch, preds, i, classes):
    """image | ground truth | prediction | error panel of sample i (lib.vis.sample_panel)."""
    image = vis.to_rgb_uint8(T.denormalize(batch["image"][i].float().cpu()))
    maps = prediction_maps(batch, preds, i, native=False)
    gts = {t: batch[t][i].cpu() for t in maps if t in batch}
    panel = vis.sample_panel(image, maps, gts, classes)
    vis.save_png(panel, os.path.join(out_dir, "vis", batch["name"][i].replace("/", "_") + ".png"))


# ----------------------------------------------------------------------------- main
def print_table(metrics, title, names=None):
    """A two-column table of the scalar metrics, and per-class IoU with class names."""
    print(title)
    for k, v in metrics.items():
        if k == "per_class":
            continue
        if v is None:
            print(f"  {k:<10} {'-':>8}")
        elif isinstance(v, float):
            print(f"  {k:<10} {v:8.3f}" if abs(v) < 1e4 else f"  {k:<10} {v:.4g}")
    if metrics.get("per_class"):
        print("  per-class IoU:")
        for i, v in enumerate(metrics["per_class"]):
            label = names[i] if names else str(i)
            print(f"    {label:<14} {'-' if v is None else f'{v:6.2f}':>6}")


def default_output_dir(args, name, dataset=None):
    """RUN/eval-<checkpoint stem>-<dataset>-<split> (one folder per checkpoint; -eigen appended
    under KITTI's eigen protocol, so the two protocols keep their own), or <pred-dir>-eval."""
    if not args.checkpoint:
        return args.pred_dir.rstrip("/") + "-eval"
    stem = os.path.splitext(os.path.basename(args.checkpoint))[0]
    what = "images" if args.images else f"{name}-{args.split}"
    what += "-eigen" if getattr(dataset, "kitti_protocol", None) == "eigen" else ""
    return os.path.join(os.path.dirname(os.path.abspath(args.checkpoint)), f"eval-{stem}-{what}")


def choose_tasks(entry, name, outputs, args):
    """Tasks to request labels for: --task (each must exist), else what the model predicts or
    the --pred-dir holds, among the labels the dataset defines."""
    if args.task:
        for t in args.task:
            if t not in entry.labels:
                raise engine.UserError(f"--task {t}: dataset {name!r} has no {t} labels "
                                       f"(it has {', '.join(entry.labels)})")
            if outputs is not None and t not in outputs:
                raise engine.UserError(f"--task {t}: the model predicts {', '.join(outputs)} only")
        return list(args.task)
    labelled = [t for t in TASKS if t in entry.labels]
    if outputs is not None:
        return [t for t in labelled if t in outputs]
    return [t for t in labelled if os.path.isdir(os.path.join(args.pred_dir, t))] or labelled[:1]


def main(args):
    engine.init_distributed(args)
    check_flags(args)
    model, ckpt = load_inference_model(args.checkpoint, args.model) if args.checkpoint else (None, None)
    run = ckpt["args"] if ckpt else {}
    name = "images" if args.images else args.dataset or run.get("tgt") or "proc-b"
    inherit_run_settings(args, run, name)
    size = args.size or run.get("size") or [128, 256]
    images = (ImageFiles(args.images, args.resize or size, getattr(args, "image_resample", None) or "bilinear")
              if args.images else None)
    nc, outputs = None, None
    if model is not None:   # what it predicts, asked on one real image of the split
        probe = images or build_split(name, [], size, args)
        nc, outputs = model_classes(model, probe[0]["image"])
    if args.images:
        dataset, tasks = images, []
        args.classes = args.classes or nc
    else:
        entry = get_entry(name, "--dataset")
        dataset, tasks = open_dataset(name, choose_tasks(entry, name, outputs, args), args.task, size, args)
        # A folder dataset knows its class count from its dataset.json, not from the registry.
        args.classes = args.classes or getattr(dataset, "classes", None) or entry.num_classes
        if getattr(dataset, "native_labels", False):
            args.batch_size = 1   # labels at their own size (KITTI eigen forces it): one at a time
    out_dir = args.output_dir or default_output_dir(args, name, None if args.images else dataset)
    if model is None:
        n, scores = scored_count(len(dataset), args), score_pred_dir(dataset, tasks, args)
    else:
        n, scores = scored_count(len(dataset), args), score_checkpoint(model, nc, outputs, dataset, tasks,
                                                                       out_dir, args)
    semantic = "semantic" in tasks or (outputs and "semantic" in outputs)
    names = class_names(dataset, args.classes) if semantic else None
    metrics = {"dataset": name, "split": None if args.images else args.split,
               "source": args.checkpoint or args.pred_dir,
               "selection": ckpt["extra"].get("selection", "last") if ckpt else None,
               "samples": n, "tasks": tasks, "classes": args.classes if semantic else None,
               "class_names": names, **engine.strict_json(scores)}
    protocol = depth_protocol(dataset, args.min_depth, args.max_depth) if "depth" in tasks else None
    if protocol:
        metrics["depth_protocol"] = protocol
    if args.images:
        metrics["images"] = args.images
    if args.reference:
        metrics.update(negative_transfer(model, nc, dataset, args))
        if engine.is_main():
            print(f"negative transfer rate against {args.reference}: "
                  f"{metrics['negative_transfer_rate']:.1f}% of {metrics['negative_transfer_images']} images")
    if engine.is_main():
        where = args.images if args.images else f"{name} {args.split}"
        print_table(engine.strict_json(scores), f"{where}: {n} samples"
                    + (f", depth protocol: {protocol}" if protocol else ""), names)
        engine.write_json(metrics, os.path.join(out_dir, "metrics.json"))
        print(f"wrote {os.path.join(out_dir, 'metrics.json')}")
    engine.cleanup_distributed()
    return metrics


@torch.no_grad()
def negative_transfer(model, nc, dataset, args):
    """DADA Sec. 4.2: the share of images whose per-image mIoU is below the --reference
    (source-only) model's, both scored on the same images with the same class map."""
    reference, _ = load_inference_model(args.reference, flag="--reference")
    models = [_Adapted(m, class_adapter(c, args.classes)).to(args.device).eval()
              for m, c in ((model, nc), (reference, model_classes(reference, dataset[0]["image"])[0]))]
    scores = ([], [])
    for batch in engine.eval_loader(dataset, args.batch_size, args, args.max_batches):
        target = batch["semantic"].to(args.device)
        for model_scores, m in zip(scores, models):
            with scoring_at(target.shape[-2:]):   # as evaluate_model: DADA upsamples once
                pred = m(batch["image"].to(args.device))["semantic"]
            pred = resize_prediction("semantic", pred, target.shape[-2:])
            ids = pred.argmax(1) if pred.dim() == 4 else pred
            model_scores.extend(per_image_miou(ids, target, args.classes))
    return {"reference": args.reference, "negative_transfer_images": len(scores[0]),
            "negative_transfer_rate": negative_transfer_rate(*scores)}


def score_checkpoint(model, nc, outputs, dataset, labelled, out_dir, args):
    """Run the checkpoint's model over the split: scores, optional prediction files and panels."""
    tasks = [t for t in labelled if t in outputs]
    saving = args.save_preds or args.save_color or args.save_vis
    if not tasks and not saving:
        raise engine.UserError(f"the model predicts {list(outputs)}, the dataset labels {labelled}: "
                               "nothing to score (check --task / --dataset, or save predictions "
                               "with --save-preds)")
    if args.save_preds and args.pred_format == "labelid" and "semantic" in outputs:
        require_cityscapes_map(dataset, args.classes, "--save-preds")
    adapted = _Adapted(model, class_adapter(nc, args.classes)).to(args.device)
    if args.images and getattr(adapted, "depth_focal", None) and "depth" in outputs:
        print(f"note: the model's depth refers to a focal length of {adapted.depth_focal:g} px; "
              "photos have no known focal, so depth is saved as predicted")
    loader = engine.eval_loader(dataset, args.batch_size, args, args.max_batches)
    progress, done, budget = Progress(len(loader), args.print_every), [0], [args.save_vis]
    keep = set(args.task or outputs)

    def on_batch(batch, preds):
        preds = {t: p for t, p in preds.items() if t in keep}
        for i, name in enumerate(batch["name"]):
            if args.save_preds or args.save_color:
                for task, p in prediction_maps(batch, preds, i).items():
                    if args.save_preds:
                        write_prediction(os.path.join(out_dir, "preds"), name, task, p, args)
                    if args.save_color:
                        vis.save_png(colorize(task, p, args.classes),
                                     inside(os.path.join(out_dir, "preds", "color", task), name,
                                            f"sample {name!r}") + ".png")
            if budget[0] > 0:
                budget[0] -= 1
                save_panel(out_dir, batch, preds, i, args.classes)
        done[0] += 1
        progress(done[0])

    amp = engine.Amp(args.amp, args.device)
    return evaluate_model(adapted, loader, args.device, tasks, args.classes, args.min_depth,
                          args.max_depth, amp=amp, on_batch=on_batch, progress=False,
                          absolute_min_depth=getattr(args, "rmse_min_depth", None))


if __name__ == "__main__":
    engine.cli(main, get_args_parser().parse_args())
