"""`folder`: the generic layout for users' own data (any labels, any class list).

Layout (LAYOUT): ROOT/{split}/images/ holds the images (.png, .jpg, .jpeg; sub-folders allowed);
a label of image images/a/b.jpg is {label folder}/a/b.png (or .npy where allowed):
- semantic/*.png: 8-bit class ids 0..K-1, K = len(classes) of dataset.json; the value
  `ignore_index` and any id >= K become 255 (the second are counted by tools/check_dataset.py).
- depth/*.png: 16-bit, metres = value / depth_scale (dataset.json), 0 = invalid; or
  depth/*.npy: float metres, where 0, negative and non-finite values are invalid.
- normals/*.png: 8-bit RGB, n = v / 127.5 - 1, renormalised, (0,0,0) = invalid; or
  normals/*.npy: float HxWx3 or 3xHxW unit vectors, 0 = invalid. Camera coordinates, x right,
  y down, z forward, pointing towards the camera.
- edges/*.png: external edge maps (8/16-bit grey, scaled to [0, 1]); without the folder, edges
  come from the edge cache or are computed from the image like for every dataset.
- keypoints/*.npy (only when a script asks with keypoints=True, e.g. train_headfreeze.py
  --anchor keypoints): float KxHxW heatmaps at the image's size, resized, cropped and flipped
  with it; keypoint_depth/*.npy (keypoint_depth=True): float (K,) depths, left as stored.

ROOT/dataset.json (optional; every key optional):
    {"classes": ["road", "car"], "ignore_index": 255, "depth_scale": 256.0, "focal": null,
     "splits": ["train", "val"]}
`classes` fixes the number of classes: --classes must be omitted or equal len(classes).
`focal` (pixels) enables --focal-ref; `splits` restricts the splits (default: the split folders
that exist, among train / val / test). Asking for a label whose folder is absent is an error
naming the folder; unknown keys in dataset.json are errors too (they are usually typos).
"""
import json
import os

import numpy as np
import torch

from lib.data import register
from lib.data.base import (
    IGNORE,
    DataError,
    FileDataset,
    list_files,
    read_npy,
    read_png16,
    read_rgb,
)

LAYOUT = """\
folder/   (any name: --src-root / --tgt-root, or DATA_ROOT/folder)
  dataset.json                 {"classes": [...], "ignore_index": 255, "depth_scale": 256.0,
                                "focal": null, "splits": [...]}   (all optional)
  {split}/images/{name}.png|.jpg   splits: train, val, test
  {split}/semantic/{name}.png      8-bit class ids 0..K-1 (K = len(classes))
  {split}/depth/{name}.png|.npy    16-bit, m = v / depth_scale | float32 metres
  {split}/normals/{name}.png|.npy  8-bit RGB, n = v / 127.5 - 1 | float unit vectors
  {split}/edges/{name}.png         optional external edge maps
  {split}/keypoints/{name}.npy     float KxHxW heatmaps (train_headfreeze.py --anchor keypoints)
  {split}/keypoint_depth/{name}.npy  float (K,) keypoint depths (--keypoint-depth)"""

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
DEFAULTS = {"classes": None, "ignore_index": IGNORE, "depth_scale": 256.0, "focal": None, "splits": None}
# label -> (folder, accepted suffixes)
LABEL_FILES = (("semantic", ("semantic", (".png",))), ("depth", ("depth", (".png", ".npy"))),
               ("normals", ("normals", (".png", ".npy"))), ("edges", ("edges", (".png",))))


def read_config(root):
    """dataset.json merged over DEFAULTS; a malformed file or value is an error naming it."""
    path = os.path.join(root, "dataset.json")
    if not os.path.isfile(path):
        return dict(DEFAULTS)
    try:
        with open(path) as f:
            cfg = json.load(f)
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read {path}: {exc}") from None
    if not isinstance(cfg, dict):
        raise DataError(f"{path}: expected a JSON object, found {type(cfg).__name__}")
    unknown = sorted(set(cfg) - set(DEFAULTS))
    if unknown:
        raise DataError(f"{path}: unknown keys {unknown}; known: {sorted(DEFAULTS)}")
    cfg = {**DEFAULTS, **cfg}
    _check_config(cfg, path)
    return cfg


def _check_config(cfg, path):
    classes, ignore = cfg["classes"], cfg["ignore_index"]
    if classes is not None and (not isinstance(classes, list) or not classes
                                or not all(isinstance(c, str) for c in classes) or len(classes) > 255):
        raise DataError(f"{path}: 'classes' must be a list of 1..255 class names, got {classes!r}")
    if isinstance(ignore, bool) or not isinstance(ignore, int) or not 0 <= ignore <= 255 \
            or (classes and ignore < len(classes)):
        raise DataError(f"{path}: 'ignore_index' must be an 8-bit value outside the class ids, "
                        f"got {ignore!r}")
    for key, nullable in (("depth_scale", False), ("focal", True)):
        value = cfg[key]
        if value is None and nullable:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            raise DataError(f"{path}: {key!r} must be a positive number, got {value!r}")
    splits = cfg["splits"]
    if splits is not None and (not isinstance(splits, list) or not set(splits) <= set(Folder.splits)):
        raise DataError(f"{path}: 'splits' must be a list among {list(Folder.splits)}, got {splits!r}")


class Folder(FileDataset):
    """A user's dataset in the documented generic layout (module docstring)."""

    key = folder = "folder"
    splits = ("train", "val", "test")
    labels = ("semantic", "depth", "normals", "edges")
    class_sets = ()          # set per instance from dataset.json
    layout = LAYOUT

    def __init__(self, root, split, size, labels=(), classes=None, keypoints=False,
                 keypoint_depth=False, **options):
        # Keypoint heatmaps (and their depths) are an opt-in extension: not in `labels`.
        self.keypoints, self.keypoint_depth = bool(keypoints), bool(keypoint_depth)
        # dataset.json must be read before FileDataset checks --classes against class_sets.
        self.config = read_config(root) if root is not None and os.path.isdir(root) else dict(DEFAULTS)
        names = self.config["classes"]
        self.class_sets = (len(names),) if names else ()
        # raw values the format defines: the class ids and the declared void value
        self.known_ids = (*range(len(names)), self.config["ignore_index"]) if names else None
        super().__init__(root, split, size, labels=labels, classes=classes, **options)

    def index(self, split):
        allowed = self.config["splits"]
        if allowed is not None and split not in allowed:
            raise DataError(f"dataset 'folder': split {split!r} is not in 'splits' of "
                            f"{os.path.join(self.root, 'dataset.json')}: {allowed}")
        if "semantic" in self.want and not self.config["classes"]:
            raise DataError(f"dataset 'folder': semantic labels need 'classes' in "
                            f"{os.path.join(self.root, 'dataset.json')}; expected layout:\n{LAYOUT}")
        base = os.path.join(self.root, split)
        images = list_files(os.path.join(base, "images"), IMAGE_SUFFIXES, f"images, split {split}", LAYOUT)
        files = {label: self._label_files(base, label) for label in self.want}
        records = [self._record(split, base, rel, files) for rel in images]
        return self._add_keypoint_files(base, records)

    def _add_keypoint_files(self, base, records):
        """keypoints/ (and keypoint_depth/) .npy paths of every record, when asked for."""
        for label, wanted in (("keypoints", self.keypoints), ("keypoint_depth", self.keypoint_depth)):
            if not wanted:
                continue
            for rec in records:
                stem = rec["name"].split("/", 2)[2]
                path = os.path.join(base, label, stem + ".npy")
                if not os.path.isfile(path):
                    raise DataError(f"{rec['image']}: its {label} file {path} is missing; "
                                    f"expected layout:\n{LAYOUT}")
                rec[label] = path
        return records

    def load_raw(self, rec):
        """The labels of `labels`, plus the KxHxW keypoint heatmaps when asked for."""
        out = super().load_raw(rec)
        if self.keypoints:
            heat = _float_array(read_npy(rec["keypoints"]), rec["keypoints"], 3)
            if heat.shape[1:] != out["image"].shape[:2]:
                raise DataError(f"{rec['keypoints']}: keypoint heatmaps are {heat.shape[1]}x"
                                f"{heat.shape[2]} but the image is {out['image'].shape[0]}x"
                                f"{out['image'].shape[1]}")
            out["keypoints"] = heat.astype(np.float32)
        return out

    def __getitem__(self, index):
        sample = super().__getitem__(index)
        if self.keypoint_depth:
            rec = self.records[index]
            depth = _float_array(read_npy(rec["keypoint_depth"]), rec["keypoint_depth"], 1)
            if self.keypoints and len(depth) != sample["keypoints"].shape[0]:
                raise DataError(f"{rec['keypoint_depth']}: {len(depth)} depths for "
                                f"{sample['keypoints'].shape[0]} keypoint heatmaps")
            sample["keypoint_depth"] = torch.from_numpy(depth.astype(np.float32))
        return sample

    def _label_files(self, base, label):
        """{relative stem: path} of one label folder; None for absent optional edges."""
        folder, suffixes = dict(LABEL_FILES)[label]
        path = os.path.join(base, folder)
        if not os.path.isdir(path):
            if label == "edges":
                return None
            raise DataError(f"dataset 'folder': {label} labels were requested but {path} does not "
                            f"exist; expected layout:\n{LAYOUT}")
        rels = list_files(path, suffixes, f"{label} labels", LAYOUT)
        return {os.path.splitext(rel)[0]: os.path.join(path, rel) for rel in rels}

    def _record(self, split, base, rel, files):
        stem = os.path.splitext(rel)[0]
        rec = {"name": f"{self.key}/{split}/{stem}", "image": os.path.join(base, "images", rel)}
        for label, found in files.items():
            if found is None:
                continue
            if stem not in found:
                folder, suffixes = dict(LABEL_FILES)[label]
                raise DataError(f"{rec['image']}: its {label} file {os.path.join(base, folder, stem)}"
                                f"{'|'.join(suffixes)} is missing; expected layout:\n{LAYOUT}")
            rec[label] = found[stem]
        return rec


    def label_lut(self):
        """Identity on 0..K-1; ignore_index and every other value -> 255."""
        lut = np.full(256, IGNORE, dtype=np.int64)
        lut[:self.classes] = np.arange(self.classes)
        return lut

    def class_names(self):
        return tuple(self.config["classes"] or ())

    def load_depth(self, rec):
        path = rec["depth"]
        if path.endswith(".npy"):
            depth = _float_array(read_npy(path), path, 2)
            return np.where(np.isfinite(depth) & (depth > 0), depth, 0).astype(np.float32)
        return read_png16(path).astype(np.float32) / float(self.config["depth_scale"])

    def load_normals(self, rec):
        path = rec["normals"]
        if not path.endswith(".npy"):
            v = read_rgb(path).astype(np.float64)
            n = v / 127.5 - 1.0
            n[np.all(v == 0, axis=-1)] = 0
        else:
            n = _float_array(read_npy(path), path, 3)
            n = n.transpose(1, 2, 0) if n.shape[0] == 3 and n.shape[-1] != 3 else n
            n = np.where(np.isfinite(n), n, 0)
        norm = np.linalg.norm(n, axis=-1, keepdims=True)
        return np.where(norm > 0, n / np.where(norm > 0, norm, 1), 0).astype(np.float32)

    def edge_cache_path(self, rec):
        """The split's own edges/ file when the tree has one, else the shared edge cache."""
        return rec.get("edges") or super().edge_cache_path(rec)

    def focal(self, rec):
        return self.config["focal"]


def _float_array(arr, path, ndim):
    """A numeric .npy with `ndim` dimensions as float64; anything else is an error naming the file."""
    if arr.ndim != ndim or not np.issubdtype(arr.dtype, np.number):
        raise DataError(f"{path}: expected a {ndim}-D numeric array, got {arr.ndim}-D {arr.dtype}")
    return arr.astype(np.float64)


register(Folder, "your own data: ROOT/{split}/images + semantic/depth/normals/edges, dataset.json")
