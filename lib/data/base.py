"""Shared machinery of the file-based (real) datasets.

A dataset module subclasses FileDataset and says only what is particular to it:

    class Cityscapes(FileDataset):
        key = "cityscapes"                  # the --src / --tgt name
        folder = "cityscapes"               # sub-folder of --data-root
        splits = ("train", "val", "test", "train_extra")
        labels = ("semantic", "depth", "edges")
        class_sets = (19, 16, 13, 7, 11)    # --classes values; the first is the default
        layout = '''cityscapes/leftImg8bit/{split}/{city}/*_leftImg8bit.png ...'''

        known_ids = range(-1, 34)          # raw ids the format defines (others: check_dataset)
        def index(self, split):             # -> list of records (dicts of paths + "name")
        def label_ids(self, rec):           # -> int HxW raw ids as stored in the file
        def label_lut(self):                # -> LUT raw id -> class index of self.classes
        def load_depth(self, rec):          # -> float32 HxW metres, 0 = invalid
        def focal(self, rec):               # -> native focal length in pixels, or None

and registers itself with `register(Cityscapes)` in lib/data/__init__.py.

FileDataset does the rest, identically for every dataset: reading the image, checking that
every label has the image's size (the error names both files), the paired transforms of
lib.data.transforms (resize, random crop, flip, photometric), edges from the cache written
by tools/make_edges.py or computed on the fly with lib.edges, focal-length rescaling of depth
(AT/DT), normalisation, and the sample dict (docs/design.md, "The sample contract").

Randomness: the engine calls __getitem__ under a per-sample seed (lib.engine._SeededDataset),
so transforms draw from Python's `random` and stay reproducible across workers and resumes.
"""
import os
import warnings

import numpy as np
import torch
from PIL import Image

from lib.data import transforms as T
from lib.edges import detect_edges
from lib.engine import UserError

IGNORE = 255


class DataError(UserError):
    """A bad file or layout: the message names the file and what was expected."""


# ----------------------------------------------------------------------------- file readers
def _open(path):
    if not os.path.isfile(path):
        raise DataError(f"missing file: {path}")
    try:
        img = Image.open(path)
        img.load()
        return img
    except Exception as exc:  # PIL raises many types on a truncated or foreign file
        raise DataError(f"cannot read {path}: {exc.__class__.__name__}: {exc}") from None


def read_rgb(path):
    """uint8 HxWx3 (greyscale and RGBA are converted)."""
    return np.asarray(_open(path).convert("RGB"))


def read_gray(path):
    """The single channel of an 8- or 16-bit PNG as an integer array (no rescaling)."""
    img = _open(path)
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "L", "P", "1"):
        return np.asarray(img).astype(np.int64)
    if img.mode in ("RGB", "RGBA"):
        return np.asarray(img)[..., 0].astype(np.int64)
    raise DataError(f"{path}: expected a one-channel PNG, got mode {img.mode}")


def read_png16(path):
    """An 8/16-bit PNG with all its bits kept: HxW or HxWxC uint16 (int32 container).

    PIL truncates 16-bit RGB PNGs (SYNTHIA labels) to 8 bits, so they are decoded with
    torchvision.io.decode_png(..., ImageReadMode.UNCHANGED) (docs/reference.md, "SYNTHIA-RAND-CITYSCAPES").
    """
    from torchvision.io import ImageReadMode, decode_png, read_file
    if not os.path.isfile(path):
        raise DataError(f"missing file: {path}")
    try:
        with warnings.catch_warnings():
            # torchvision 0.29 deprecates its decoders in favour of torchcodec (not a dependency
            # here); they still work, and pillow has no 16-bit RGB mode.
            warnings.simplefilter("ignore", DeprecationWarning)
            t = decode_png(read_file(path), ImageReadMode.UNCHANGED)
    except Exception as exc:
        raise DataError(f"cannot read {path}: {exc}") from None
    arr = t.to(torch.int32).numpy()          # CxHxW
    return arr[0] if arr.shape[0] == 1 else np.ascontiguousarray(arr.transpose(1, 2, 0))


def read_edges(path):
    """A cached or external edge map (8- or 16-bit grey PNG) as float32 in [0, 1]."""
    img = _open(path)
    scale = 65535.0 if img.mode.startswith("I") else 255.0
    grey = img.convert("L") if img.mode in ("RGB", "RGBA", "P") else img
    return np.asarray(grey).astype(np.float32) / scale


def read_npy(path):
    if not os.path.isfile(path):
        raise DataError(f"missing file: {path}")
    try:
        return np.load(path, allow_pickle=False)
    except Exception as exc:
        raise DataError(f"cannot read {path}: {exc}") from None


def apply_lut(lut, ids, path=""):
    """Class map lookup; ids outside the table become IGNORE (counted by check_dataset)."""
    ids = np.asarray(ids, dtype=np.int64)
    out = np.full(ids.shape, IGNORE, dtype=np.int64)
    ok = (ids >= 0) & (ids < len(lut))
    out[ok] = np.asarray(lut)[ids[ok]]
    return out


def list_files(folder, suffix, what, layout):
    """Sorted relative paths of files ending in `suffix` under `folder` (recursive)."""
    if not os.path.isdir(folder):
        raise DataError(f"missing folder {folder} ({what}); expected layout:\n{layout}")
    out = []
    for dirpath, _, files in os.walk(folder):
        out += [os.path.relpath(os.path.join(dirpath, f), folder) for f in files if f.endswith(suffix)]
    if not out:
        raise DataError(f"no *{suffix} files under {folder} ({what}); expected layout:\n{layout}")
    return sorted(out)


def inside(root, rel, where):
    """root/rel for a path that comes from data (a list-file line), refused with a one-line
    error naming `where` when it leads outside root ('..' or an absolute path elsewhere), so
    no file is read, and no prediction or edge map written, outside the dataset's folders."""
    base = os.path.abspath(root)
    path = os.path.normpath(os.path.join(base, rel))
    if os.path.commonpath([path, base]) != base:
        raise DataError(f"{where}: {rel!r} leads outside {root}; a path that comes from data "
                        "must stay inside its folder")
    return path


def read_list(path, layout):
    """Non-empty, non-comment lines of a split/list file."""
    if not os.path.isfile(path):
        raise DataError(f"missing list file {path}; expected layout:\n{layout}")
    with open(path) as f:
        return [ln.strip() for ln in f if ln.strip() and not ln.lstrip().startswith("#")]


# ----------------------------------------------------------------------------- dataset
class FileDataset(torch.utils.data.Dataset):
    """A split of a real dataset, yielding the sample dict of docs/design.md (see the module docstring)."""

    key = folder = layout = None
    splits = ("train", "val")
    labels = ("semantic",)
    class_sets = ()
    max_depth = None      # metres; larger depths are set invalid (0) when given
    class_names = None    # names of the active class map (None: lib.data.labels.CLASS_NAMES)

    def __init__(self, root, split, size, labels=(), classes=None, train=False, resize=None,
                 flip=False, photometric=False, focal_ref=None, edges_dir=None, length=None,
                 seed=0, edges="compute", native_labels=False, image_resample="bilinear"):
        if split not in self.splits:
            raise DataError(f"dataset {self.key!r} has no split {split!r}; it has {', '.join(self.splits)}")
        if root is None or not os.path.isdir(root):
            raise DataError(f"dataset {self.key!r}: root folder {root} not found; expected layout:\n"
                            f"{self.layout}")
        if classes is not None and classes not in self.class_sets:
            raise DataError(f"dataset {self.key!r} has no {classes}-class map (--classes); "
                            f"it has {', '.join(map(str, self.class_sets)) or 'no semantic labels'}")
        self.root, self.split, self.size = root, split, tuple(size)
        self.want = tuple(labels)
        self.classes = classes or (self.class_sets[0] if self.class_sets else None)
        self.train, self.resize = train, tuple(resize) if resize else None
        # Evaluation at the labels' own resolution (DADA's protocol): only the image is resized,
        # and scoring upsamples the predictions to the label size.
        self.native_labels = bool(native_labels) and not train
        self.flip, self.photometric, self.focal_ref = flip, photometric, focal_ref
        # How --resize resamples the image: bilinear (antialiased; ours) or PIL's bicubic, as the
        # official DADA / ADVENT loaders (lib.data.transforms.pil_bicubic). Labels: nearest.
        if image_resample not in T.IMAGE_RESAMPLE:
            raise DataError(f"image_resample must be {' or '.join(T.IMAGE_RESAMPLE)}, got {image_resample!r}")
        self.image_resample = image_resample
        self.edges_dir = edges_dir or os.path.join(root, "edges")
        # "cache": edges must come from tools/make_edges.py (e.g. an external detector's maps,
        # as AT/DT's DexiNed); "compute": missing ones are computed here with lib.edges.
        if edges not in ("compute", "cache"):
            raise DataError(f"--edges must be compute or cache, got {edges!r}")
        self.edges_source = edges
        if edges == "cache" and "edges" in self.want and not os.path.isdir(self.edges_dir):
            raise DataError(f"dataset {self.key!r}: no edge cache at {self.edges_dir} (--edges cache); "
                            f"write it with `python tools/make_edges.py {self.key} --data-root DATA "
                            "--from-dir EDGE_MAPS` or use --edges compute (the built-in detector)")
        self.records = self.index(split)
        if length is not None:
            self.records = self.records[:length]
        if not self.records:
            raise DataError(f"dataset {self.key!r}: split {split!r} under {root} is empty; "
                            f"expected layout:\n{self.layout}")

    # -- what subclasses provide ------------------------------------------------
    def index(self, split):
        """Records of `split`: dicts of file paths per label plus a stable "name"."""
        raise NotImplementedError(f"{type(self).__name__} must define index(split)")

    def load_image(self, rec):
        return read_rgb(rec["image"])

    known_ids = None      # raw label ids the format defines; check_dataset counts the others

    def label_ids(self, rec):
        """Raw label ids as stored in the file (HxW integers): by default the one channel (or
        palette index) of the 8/16-bit PNG rec["semantic"]; formats that differ override it."""
        if "semantic" not in rec:
            raise DataError(f"dataset {self.key!r} has no semantic labels")
        return read_gray(rec["semantic"])

    def label_lut(self):
        """Lookup table raw id -> class index of self.classes (255 = ignore)."""
        raise NotImplementedError(f"{type(self).__name__} has semantic labels but no label_lut()")

    def load_semantic(self, rec):
        """Class indices of self.classes; ids outside the table are ignored (255)."""
        return apply_lut(self.label_lut(), self.label_ids(rec))

    def load_depth(self, rec):
        raise DataError(f"dataset {self.key!r} has no depth labels")

    def load_normals(self, rec):
        raise DataError(f"dataset {self.key!r} has no normal labels")

    def focal(self, rec):
        """Native focal length (pixels) for focal rescaling; None when unknown."""
        return None

    def resize_sample(self, sample):
        """--resize of the decoded sample: image and labels to self.resize, or the image alone
        with native_labels (Mapillary overrides it: the official fit-and-pad)."""
        if self.native_labels:
            image = T.resize_sample({"image": sample["image"]}, self.resize, self.image_resample)["image"]
            return {**sample, "image": image}
        return T.resize_sample(sample, self.resize, self.image_resample)

    # -- shared -----------------------------------------------------------------
    def __len__(self):
        return len(self.records)

    def edge_cache_path(self, rec):
        """Where tools/make_edges.py writes this sample's edges: EDGES_DIR/<name minus dataset>.png"""
        return os.path.join(self.edges_dir, *rec["name"].split("/")[1:]) + ".png"

    def load_raw(self, rec):
        """Decoded, untransformed arrays of one record (used by tools/check_dataset.py too)."""
        out = {"image": self.load_image(rec)}
        for lab in self.want:
            if lab == "edges":
                path = self.edge_cache_path(rec)
                if os.path.isfile(path):
                    out["edges"] = read_edges(path)
                continue
            out[lab] = getattr(self, f"load_{lab}")(rec)
        h, w = out["image"].shape[:2]
        for lab, arr in out.items():
            shape = arr.shape[:2] if lab != "normals" or arr.shape[-1] == 3 else arr.shape[1:]
            if tuple(shape) != (h, w):
                path = self.edge_cache_path(rec) if lab == "edges" else rec.get(lab, rec["name"])
                raise DataError(f"{path}: {lab} is {shape[0]}x{shape[1]} but its "
                                f"image {rec['image']} is {h}x{w}")
        return out

    def __getitem__(self, index):
        rec = self.records[index]
        raw = self.load_raw(rec)
        sample = T.to_tensors(raw)
        native_w = sample["image"].shape[-1]
        if self.resize:
            sample = self.resize_sample(sample)
        if "edges" in self.want and "edges" not in sample:
            if self.edges_source == "cache":
                raise DataError(f"{self.edge_cache_path(rec)}: cached edge map missing (--edges cache); "
                                f"rerun tools/make_edges.py {self.key} or use --edges compute")
            # No cache: the proxy label of the whole (resized) image before crop and jitter,
            # as tools/make_edges.py would have written it.
            sample["edges"] = detect_edges(sample["image"])
        sample = T.paired_transform(sample, size=self.size, train=self.train, flip=self.flip,
                                    photometric=self.photometric)
        if "depth" in sample and self.max_depth:
            sample["depth"][sample["depth"] > self.max_depth] = 0
        f = self.focal(rec) if "depth" in sample else None
        if f is not None:
            # A resize changes the focal in pixels; crops and flips do not.
            f = f * self.resize[1] / native_w if self.resize else f
            sample["focal"] = float(f)   # scoring converts a model's depth convention (lib/evaluation)
        if self.focal_ref and "depth" in sample:
            if f is None:
                raise DataError(f"dataset {self.key!r} has no known focal length: --focal-ref "
                                "cannot rescale its depth")
            scale = T.focal_scale(f, self.focal_ref)
            sample["depth"] = sample["depth"] * scale
            sample["depth_scale"] = 1.0 / scale   # evaluation multiplies the labels back to metres
        sample["image"] = T.normalize(sample["image"])
        sample["name"] = rec["name"]
        return sample

    def __repr__(self):
        return (f"{type(self).__name__}(root={self.root!r}, split={self.split!r}, n={len(self)}, "
                f"classes={self.classes}, labels={self.want})")
