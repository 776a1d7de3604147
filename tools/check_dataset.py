"""Check a downloaded dataset: layout, readable files, label encodings and value ranges.

The first thing to run after downloading a dataset. Every split is built through the
dataset registry exactly as training builds it (the official layouts and encodings of
docs/reference.md), every sample is decoded at its native size,
and the tool reports per split:

  samples          how many the split has, and how many were checked (--max-samples)
  errors           missing or unreadable files and image/label size mismatches (the first
                   few named, all counted)
  unknown ids      label ids outside the ids the format defines (dataset.known_ids):
                   pixels, images and the values; training maps them to ignore (255)
  classes          pixel frequency of each class of the active class map (--classes)
  depth            min / median / max of valid depth in metres and the % of valid pixels
  normals          % unit vectors, % invalid (0) and the count of other (broken) vectors
  image sizes      every HxW seen, with counts
  cached edges     how many samples have edges written by tools/make_edges.py (the others
                   get them computed on the fly)

Labels and splits that are not on disk at all are reported as "not present", not as
problems: a semantic-only Cityscapes (leftImg8bit + gtFine, no disparity/ or camera/) and a
download without train_extra are normal downloads. A label counts as not present when its
own folder is missing (nothing of it was downloaded); a label folder that exists but lacks
some files is a problem. Name what you need with --labels / --splits, and its absence
becomes a problem too.

Procedural datasets (proc-a, proc-b) have no files: their samples are rendered at --size
and the same counts and ranges are reported. KITTI is checked under --kitti-protocol
annotated (default) or eigen (the velodyne scans and calibration files, depth in the Garg crop).

Usage:
    python tools/check_dataset.py cityscapes --data-root DATA
    python tools/check_dataset.py cityscapes --data-root DATA --splits train val --classes 16
    python tools/check_dataset.py cityscapes --data-root DATA --labels semantic depth
    python tools/check_dataset.py synthia --data-root DATA --max-samples 500 --json synthia.json
    python tools/check_dataset.py proc-a --max-samples 20

Exit status: 0 clean (everything present is readable and well-formed); 1 problems found
(listed at the end: missing or unreadable files, unknown ids, or a split / label named by
--splits / --labels that is not on disk); 2 nothing could be checked (unknown dataset, bad
flag, missing dataset folder: the expected layout is printed).
"""
import argparse
import math
import os
import re
import sys
from collections import Counter

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from lib.data import get_entry
from lib.data.base import IGNORE, DataError, FileDataset, apply_lut
from lib.data.labels import CITYSCAPES_TO, CLASS_NAMES, SYNTHIA_TO
from lib.data.procedural import CLASSES as PROCEDURAL_CLASSES
from lib.data.procedural import SPLITS as PROCEDURAL_SPLITS
from lib.engine import UserError, write_json

FIRST = 5              # errors named per split (all are counted)
MEDIAN_PIXELS = 4096   # valid depth pixels per image (evenly strided) that enter the median
UNIT_TOL = 0.05        # |norm - 1| of a unit normal; 8-bit PNG normals are within ~0.01
LIST_VALUES = 20       # unknown label values listed


def get_args_parser(add_help=True):
    parser = argparse.ArgumentParser(description=__doc__, add_help=add_help,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name", help="dataset name, as for --src / --tgt")
    parser.add_argument("--data-root", default=None, help="folder holding one sub-folder per dataset")
    parser.add_argument("--root", default=None,
                        help="the dataset's own folder (default: DATA_ROOT/<its folder>)")
    parser.add_argument("--splits", nargs="+", default=None, help="splits to check (default: all)")
    parser.add_argument("--labels", nargs="+", default=None, metavar="LABEL",
                        help="labels to check (default: every label the dataset has on disk); a label "
                        "named here and not on disk is a problem")
    parser.add_argument("--classes", type=int, default=None, help="class map to count (default: the first)")
    parser.add_argument("--max-samples", type=int, default=None,
                        help="samples checked per split, evenly spaced over it (default: all)")
    parser.add_argument("--size", type=int, nargs=2, default=[128, 256], metavar=("H", "W"),
                        help="rendering size of procedural datasets (files are checked at native size)")
    parser.add_argument("--kitti-protocol", default=None, choices=["annotated", "eigen"],
                        help="kitti_depth: check the annotated depth maps (default) or, with eigen, "
                             "the raw velodyne scans and calibration files Eigen's protocol reads")
    parser.add_argument("--json", default=None, metavar="FILE", help="also write the report as JSON")
    return parser


# ----------------------------------------------------------------------------- building
def resolve_root(name, entry, data_root, root=None):
    """The folder of a file dataset (None for procedural ones).

    A missing folder raises the dataset class's own DataError, which shows its layout: the
    registry keeps the class inside the builder, so the builder is asked to open it."""
    if entry.folder is None:
        return None
    if root is None:
        if data_root is None:
            raise UserError(f"dataset {name!r} reads files: pass --data-root DIR, the folder holding "
                            f"{entry.folder}/")
        root = os.path.join(data_root, entry.folder)
    if not os.path.isdir(root):
        entry.builder(split=entry.splits[0], size=(1, 1), root=root, labels=())
        raise DataError(f"dataset {name!r}: folder {root} not found")   # a builder that did not check
    return root


def open_split(entry, root, split, size, labels, length=None, **options):
    """One split through the registry's builder (build_dataset minus its root check)."""
    return entry.builder(split=split, size=tuple(size), root=root, length=length,
                         labels=tuple(labels), **options)


# ----------------------------------------------------------------------------- statistics
class SplitStats:
    """Counts and ranges accumulated over the samples of one split."""

    def __init__(self, classes):
        self.samples = self.checked = self.n_errors = 0
        self.errors, self.sizes = [], Counter()
        self.classes = classes
        self.class_pixels = np.zeros(classes or 0, np.int64)
        self.ignore_pixels = self.out_of_map = self.semantic_pixels = 0
        self.unknown_pixels = self.unknown_images = 0
        self.unknown_values, self.ids_checked = set(), False
        self.depth = {"pixels": 0, "valid": 0, "bad": 0, "min": math.inf, "max": -math.inf}
        self.depth_sample = []
        self.normals = None
        self.edges_cached = None

    def add_error(self, message):
        self.n_errors += 1
        if len(self.errors) < FIRST:
            self.errors.append(message)

    def add_sample(self, hw, semantic=None, ids=None, known=None, depth=None, normals=None):
        """One decoded sample: numpy arrays as load_raw gives them (or the procedural tensors)."""
        self.checked += 1
        self.sizes[f"{hw[0]}x{hw[1]}"] += 1
        if semantic is not None and self.classes:
            self._semantic(np.asarray(semantic))
        if ids is not None:
            self._unknown(np.asarray(ids), known)
        if depth is not None:
            self._depth(np.asarray(depth, dtype=np.float64))
        if normals is not None:
            self._normals(np.asarray(normals, dtype=np.float64))

    def _semantic(self, sem):
        ignore = sem == IGNORE
        inside = (sem >= 0) & (sem < self.classes) & ~ignore
        self.semantic_pixels += sem.size
        self.ignore_pixels += int(ignore.sum())
        self.out_of_map += int(sem.size - ignore.sum() - inside.sum())   # a class map bug
        self.class_pixels += np.bincount(sem[inside].ravel(), minlength=self.classes)

    def _unknown(self, ids, known):
        self.ids_checked = True
        bad = ~np.isin(ids, known)
        n = int(bad.sum())
        if n:
            self.unknown_pixels += n
            self.unknown_images += 1
            self.unknown_values.update(np.unique(ids[bad]).tolist())

    def _depth(self, d):
        d = d.ravel()
        finite = np.isfinite(d)
        valid = finite & (d > 0)
        self.depth["pixels"] += d.size
        self.depth["bad"] += int((~finite | (d < 0)).sum())   # 0 is invalid, negative is broken
        v = d[valid]
        if v.size:
            self.depth["valid"] += v.size
            self.depth["min"] = min(self.depth["min"], float(v.min()))
            self.depth["max"] = max(self.depth["max"], float(v.max()))
            # An exact median over a whole split would hold every pixel in memory.
            self.depth_sample.append(v[::max(1, math.ceil(v.size / MEDIAN_PIXELS))])

    def _normals(self, n):
        vec = n.reshape(-1, 3) if n.ndim == 3 and n.shape[-1] == 3 else n.reshape(3, -1).T
        norm = np.linalg.norm(vec, axis=1)
        if self.normals is None:
            self.normals = {"pixels": 0, "unit": 0, "invalid": 0, "other": 0}
        zero = norm == 0
        unit = np.abs(norm - 1) <= UNIT_TOL
        self.normals["pixels"] += norm.size
        self.normals["unit"] += int(unit.sum())
        self.normals["invalid"] += int(zero.sum())
        self.normals["other"] += int(norm.size - unit.sum() - zero.sum())

    def summary(self, class_names=None):
        """JSON-ready dict of this split."""
        out = {"samples": self.samples, "checked": self.checked, "errors": self.n_errors,
               "first_errors": self.errors, "image_sizes": dict(self.sizes)}
        if self.semantic_pixels:
            names = class_names or [str(c) for c in range(self.classes)]
            out["class_pixels"] = {names[c]: int(n) for c, n in enumerate(self.class_pixels)}
            out["semantic_pixels"], out["ignore_pixels"] = self.semantic_pixels, self.ignore_pixels
            out["out_of_map_pixels"] = self.out_of_map
        if self.ids_checked:
            out["unknown_id_pixels"], out["unknown_id_images"] = self.unknown_pixels, self.unknown_images
            out["unknown_ids"] = sorted(self.unknown_values)
        if self.depth["pixels"]:
            d = dict(self.depth)
            d["median"] = float(np.median(np.concatenate(self.depth_sample))) if self.depth_sample else None
            if not d["valid"]:
                d["min"] = d["max"] = None
            out["depth"] = d
        if self.normals:
            out["normals"] = dict(self.normals)
        if self.edges_cached is not None:
            out["edges_cached"] = self.edges_cached
        return out


# ----------------------------------------------------------------------------- walking a split
def _known_ids(ds):
    return None if ds.known_ids is None else np.fromiter(ds.known_ids, dtype=np.int64)


def _decode(ds, rec, read_ids, own_lut):
    """load_raw's arrays plus the raw label ids; with own_lut the ids are read once and mapped
    here (load_semantic would read the label file a second time)."""
    raw = ds.load_raw(rec)
    ids = ds.label_ids(rec) if read_ids else None
    if own_lut:
        h, w = raw["image"].shape[:2]
        if tuple(ids.shape[:2]) != (h, w):
            raise DataError(f"{rec.get('semantic', rec['name'])}: semantic is {ids.shape[0]}x{ids.shape[1]} "
                            f"but its image {rec['image']} is {h}x{w}")
        raw["semantic"] = apply_lut(ds.label_lut(), ids)
    return raw, ids


def pick(records, n=None):
    """n records evenly spaced over the split (all when n is None): a sample of every city or
    sequence rather than the first folder only."""
    if n is None or n >= len(records):
        return records
    return [records[i] for i in np.unique(np.linspace(0, len(records) - 1, n).round().astype(int))]


def check_file_split(ds, stats, max_samples=None):
    """Decode every record (up to max_samples) of a FileDataset into `stats`."""
    known = _known_ids(ds)
    read_ids = "semantic" in ds.want and known is not None
    own_lut = read_ids and type(ds).load_semantic is FileDataset.load_semantic
    if own_lut:
        ds.want = tuple(lab for lab in ds.want if lab != "semantic")
    stats.samples = len(ds.records)
    if "edges" in ds.want:
        stats.edges_cached = 0
    for rec in pick(ds.records, max_samples):
        if stats.edges_cached is not None:
            stats.edges_cached += os.path.isfile(ds.edge_cache_path(rec))
        try:
            raw, ids = _decode(ds, rec, read_ids, own_lut)
        except DataError as exc:
            stats.add_error(str(exc))
            continue
        except (OSError, ValueError) as exc:   # a reader the dataset module did not wrap
            stats.add_error(f"{rec['image']} ({rec['name']}): {exc.__class__.__name__}: {exc}")
            continue
        stats.add_sample(raw["image"].shape[:2], raw.get("semantic"), ids, known, raw.get("depth"),
                         raw.get("normals"))


def check_procedural_split(ds, stats):
    """Render every sample of a procedural split (its length is --max-samples) into `stats`."""
    stats.samples = len(ds)
    for i in range(len(ds)):
        s = {k: v.numpy() if hasattr(v, "numpy") else v for k, v in ds[i].items()}
        stats.add_sample(s["image"].shape[-2:], s.get("semantic"), depth=s.get("depth"),
                         normals=s.get("normals"))


def class_names(ds, entry, classes):
    """Names of the active class map: the dataset's own `class_names` when it has one, the
    names of lib.data.labels when its LUT is one of those maps, else None (indices)."""
    names = getattr(ds, "class_names", None)
    names = names() if callable(names) else names
    if names is None and entry.folder is None:
        names = PROCEDURAL_CLASSES
    if names is None and classes in CLASS_NAMES:
        try:
            lut = np.asarray(ds.label_lut())
        except NotImplementedError:      # a dataset that decodes semantics without a LUT
            return None
        maps = [m[classes] for m in (CITYSCAPES_TO, SYNTHIA_TO) if classes in m]
        names = CLASS_NAMES[classes] if any(np.array_equal(lut, m) for m in maps) else None
    return list(names) if names is not None and len(names) == classes else None


def open_for_check(entry, root, split, args, labels):
    """(dataset with every requested label this split can give, {label: why not}).

    Not every split has every label (Cityscapes' test labels are private, a semantic-only
    download has no disparity): when the split does not open with all labels, each label is
    tried alone and the others are described by `unavailable_reason`. Raises DataError when
    the split does not open even without labels."""
    proc = entry.folder is None
    # Procedural splits are virtual: their length is what gets rendered (at most the split's own).
    length = min(args.max_samples, PROCEDURAL_SPLITS[split]) if proc and args.max_samples else None

    def build(labs):
        return open_split(entry, root, split, args.size, labs, length=length, classes=args.classes,
                          kitti_protocol=getattr(args, "kitti_protocol", None))
    try:
        return build(labels), {}
    except DataError:
        bare = build(())
    image = bare.records[0]["image"] if getattr(bare, "records", None) else None
    have, unavailable = [], {}
    for lab in labels:
        try:
            build((lab,))
            have.append(lab)
        except DataError as exc:
            unavailable[lab] = unavailable_reason(str(exc), root, image)
    return build(tuple(have)), unavailable


def missing_paths(message, root):
    """Paths under the dataset root that an error names and that do not exist."""
    found = (m.group(0) for m in re.finditer(re.escape(root) + r"[^\s:;,()'\"]*", message))
    return [path for path in found if not os.path.exists(path)]


def absent_on_disk(path, image):
    """Whether a missing label path has no folder of its own on disk: its nearest existing
    ancestor also holds the split's images (the dataset root, or a split folder holding images
    and labels side by side). Then nothing of that label was downloaded, which is a choice
    (a semantic-only Cityscapes has no disparity/), not damage; a label whose own folder
    exists but lacks files is a broken download."""
    if image is None:
        return False
    ancestor = os.path.dirname(os.path.abspath(path))
    while not os.path.isdir(ancestor):
        ancestor = os.path.dirname(ancestor)
    image_dir = os.path.dirname(os.path.abspath(image))
    return os.path.commonpath([ancestor, image_dir]) == ancestor


def unavailable_reason(message, root, image=None):
    """Why a label did not open: the message, whether it names missing files, and whether the
    label is absent on disk altogether ("not present": information unless it was asked for).
    A message naming no missing path is a label the split lacks by design (private labels)."""
    missing = missing_paths(message, root) if root else []
    return {"reason": message, "missing_files": bool(missing),
            "absent": bool(missing) and all(absent_on_disk(p, image) for p in missing)}


def check_split(entry, root, split, args):
    """Summary dict of one split, or {"error": message, "absent": bool} when it cannot be opened
    (absent: its images are not on disk at all, e.g. Cityscapes' train_extra not downloaded)."""
    proc = entry.folder is None
    wanted = tuple(args.labels or entry.labels)
    try:
        ds, unavailable = open_for_check(entry, root, split, args, wanted)
    except DataError as exc:
        return {"error": str(exc), "absent": bool(root) and bool(missing_paths(str(exc), root))}
    labels = list(wanted if proc else ds.want)
    classes = entry.num_classes if proc else ds.classes
    stats = SplitStats(classes if "semantic" in labels else None)
    if proc:
        check_procedural_split(ds, stats)
    else:
        check_file_split(ds, stats, args.max_samples)
    out = stats.summary(class_names(ds, entry, classes))
    out["classes"], out["labels"] = classes, labels
    out["unavailable"] = unavailable
    return out


# ----------------------------------------------------------------------------- report
def is_problem(u, label, asked):
    """Whether an unavailable label is a problem: files missing from a label that is on disk,
    or a label the command asked for (--labels) that is not on disk. A label absent on disk and
    not asked for is information, and so is one a split lacks by design."""
    return u["missing_files"] and (not u["absent"] or label in asked)


def problems_of(split, s, asked_labels=(), asked_split=False):
    """One line per problem found in a split summary; `asked_*`: named by --labels / --splits."""
    if "error" in s:
        if s["absent"] and not asked_split:
            return []
        return [f"{split}: cannot be opened: {first_line(s['error'])}"]
    out = [f"{split}: no {lab} labels: {first_line(u['reason'])}"
           for lab, u in s["unavailable"].items() if is_problem(u, lab, asked_labels)]
    if s["errors"]:
        out.append(f"{split}: {s['errors']} samples with missing or unreadable files")
    if s.get("unknown_id_pixels"):
        out.append(f"{split}: {s['unknown_id_pixels']} pixels in {s['unknown_id_images']} images have "
                   f"label ids outside the map ({_values(s['unknown_ids'])}), ignored (255) in training")
    if s.get("out_of_map_pixels"):
        out.append(f"{split}: {s['out_of_map_pixels']} pixels decode to a class index outside "
                   f"0..{s['classes'] - 1} (a class map bug)")
    depth = s.get("depth")
    if depth and depth["bad"]:
        out.append(f"{split}: {depth['bad']} depth pixels are negative or not finite")
    if depth and not depth["valid"] and s["checked"]:
        out.append(f"{split}: no valid depth pixel (all 0): check the depth encoding")
    if s.get("normals", {}).get("other"):
        out.append(f"{split}: {s['normals']['other']} normals are neither unit vectors nor 0")
    return out


def first_line(message):
    """An error's first line without the layout that follows it (printed once per split)."""
    return message.splitlines()[0].split("; expected layout")[0]


def _values(values):
    shown = ", ".join(map(str, values[:LIST_VALUES]))
    return shown + (f", ... ({len(values)} values)" if len(values) > LIST_VALUES else "")


def _pct(n, total):
    return f"{100.0 * n / total:.1f}%" if total else "-"


def format_split(split, s):
    """The human-readable block of one split."""
    if "error" in s:
        if s["absent"]:
            return [f"[{split}] not present: {first_line(s['error'])}"]
        return [f"[{split}] not checked: {s['error']}"]
    lines = [f"[{split}] {s['samples']} samples, {s['checked']} checked"]
    row = "  {:<15} {}".format
    lines.append(row("image sizes", ", ".join(f"{k} ({v})" for k, v in s["image_sizes"].items()) or "-"))
    lines.append(row("labels", ", ".join(s["labels"]) or "-"))
    lines += [row(f"{lab} not present" if u["absent"] else f"no {lab}", first_line(u["reason"]))
              for lab, u in s["unavailable"].items()]
    lines.append(row("errors", s["errors"]))
    lines += [f"    {msg}" for msg in s["first_errors"]]
    if "unknown_ids" in s:
        listed = f" ({_values(s['unknown_ids'])})" if s["unknown_ids"] else ""
        lines.append(row("unknown ids", f"{s['unknown_id_pixels']} pixels in {s['unknown_id_images']} "
                                        f"images{listed}"))
    if "class_pixels" in s:
        total = s["semantic_pixels"]
        freq = [f"{c} {_pct(n, total)}" for c, n in s["class_pixels"].items()]
        freq.append(f"ignore {_pct(s['ignore_pixels'], total)}")
        lines += [row("classes (% px)" if i == 0 else "", " | ".join(freq[i:i + 6]))
                  for i in range(0, len(freq), 6)]
    if "depth" in s:
        d = s["depth"]
        rng = (f"min {d['min']:.3g}  median {d['median']:.3g}  max {d['max']:.3g}, " if d["valid"] else "")
        lines.append(row("depth (m)", f"{rng}{_pct(d['valid'], d['pixels'])} valid"
                                      + (f", {d['bad']} bad" if d["bad"] else "")))
    if "normals" in s:
        n = s["normals"]
        lines.append(row("normals", f"{_pct(n['unit'], n['pixels'])} unit, {_pct(n['invalid'], n['pixels'])} "
                                    f"invalid (0), {n['other']} other"))
    if "edges_cached" in s:
        lines.append(row("cached edges", f"{s['edges_cached']}/{s['checked']} (the others are computed "
                                         "on the fly; tools/make_edges.py writes them)"))
    return lines


def run(args):
    """Check every requested split; returns (report dict, exit status)."""
    entry = get_entry(args.name, "NAME")
    if args.max_samples is not None and args.max_samples <= 0:
        raise UserError(f"--max-samples must be positive, got {args.max_samples}")
    splits = args.splits or list(entry.splits)
    unknown = [s for s in splits if s not in entry.splits]
    if unknown:
        raise UserError(f"dataset {args.name!r} has no split {', '.join(unknown)}; it has "
                        f"{', '.join(entry.splits)} (--splits)")
    bad = [lab for lab in args.labels or () if lab not in entry.labels]
    if bad:
        raise UserError(f"dataset {args.name!r} has no {', '.join(bad)} labels (--labels); it has "
                        f"{', '.join(entry.labels)}")
    if args.classes is not None and args.classes not in entry.class_sets:
        raise UserError(f"dataset {args.name!r} has no {args.classes}-class map (--classes); it has "
                        f"{', '.join(map(str, entry.class_sets)) or 'no semantic labels'}")
    root = resolve_root(args.name, entry, args.data_root, args.root)
    report = {"dataset": args.name, "root": root,
              "splits": {split: check_split(entry, root, split, args) for split in splits}}
    asked_labels, asked_splits = tuple(args.labels or ()), tuple(args.splits or ())
    report["problems"] = [p for split, s in report["splits"].items()
                          for p in problems_of(split, s, asked_labels, split in asked_splits)]
    report["not_present"] = not_present(report["splits"], asked_labels, asked_splits)
    return report, 1 if report["problems"] else 0


def not_present(splits, asked_labels=(), asked_splits=()):
    """What is absent on disk without being a problem: {"splits": [...], "labels": {label: [splits]}}."""
    out = {"splits": [], "labels": {}}
    for split, s in splits.items():
        if "error" in s:
            if s["absent"] and split not in asked_splits:
                out["splits"].append(split)
            continue
        for lab, u in s["unavailable"].items():
            if u["absent"] and lab not in asked_labels:
                out["labels"].setdefault(lab, []).append(split)
    return out


def print_report(report):
    """The per-split blocks, then the problems (or "no problems found") and what is not present."""
    where = report["root"] or "procedural, no files"
    print(f"== {report['dataset']} ({where}) ==")
    for split, s in report["splits"].items():
        print("\n".join(format_split(split, s)))
    if report["problems"]:
        print(f"{len(report['problems'])} problem(s):")
        print("\n".join(f"  - {p}" for p in report["problems"]))
    else:
        print("no problems found")
    absent = report["not_present"]
    parts = [f"{lab} labels ({', '.join(splits)})" for lab, splits in absent["labels"].items()]
    parts += [f"split {split}" for split in absent["splits"]]
    if parts:
        print(f"not present on disk (not checked; not a problem): {'; '.join(parts)}")


def main(argv=None):
    """Parse argv, check, print; returns the exit status (0 clean, 1 problems, 2 unusable)."""
    args = get_args_parser().parse_args(argv)
    try:
        report, status = run(args)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print_report(report)
    if args.json:
        write_json({**report, "status": status}, args.json)
        print(f"wrote {args.json}")
    return status


if __name__ == "__main__":
    sys.exit(main())
