"""NYU Depth v2, labelled subset (1449 frames, official 795 train / 654 test split).

Used by UM-Adapt (indoor target, PBRS -> NYUv2: depth, semantic, normals) and HeadFreeze
(SUNCG -> NYUv2: normals with a semantic anchor). Labels: depth in metres, 13 or 40
classes, surface normals estimated from depth.

The official file is one MATLAB v7.3 .mat; tools/prepare_nyuv2.py exports it once to LAYOUT:
- image/{NNNNN}.png: RGB, 640x480; NNNNN is the 1-based frame index in the .mat.
- depth/{NNNNN}.png: the .mat's `depths` (the in-painted, dense maps) as a 16-bit PNG in
  millimetres; metres = value / 1000, 0 = invalid.
- label40/{NNNNN}.png: 8-bit NYU-40 class (1..40, 0 = unlabelled) from the 894 raw classes
  through classMapping40.mat. --classes 40 gives index class - 1; --classes 13 goes through
  NYU40_TO_13 first; 0 is ignored (255).
- normals/{NNNNN}.png (optional): 8-bit RGB, n = v / 127.5 - 1 in camera coordinates (x right,
  y down, z forward, pointing towards the camera, as the procedural benchmark); (0, 0, 0) marks
  an invalid pixel. Any estimate in this encoding can be dropped in (HeadFreeze used Ladicky
  et al.'s normals). Without the folder, normals are estimated from depth on the fly with
  normals_from_depth() and the NYU intrinsics, as the prepare tool does.
Splits: `val` is `test`: the official split has no validation part and the papers report on test.
"""
import os

import numpy as np
import torch
import torch.nn.functional as F

from lib.data import register
from lib.data.base import (
    IGNORE,
    DataError,
    FileDataset,
    list_files,
    read_png16,
    read_rgb,
)

LAYOUT = """\
nyuv2/                                  written by tools/prepare_nyuv2.py from nyu_depth_v2_labeled.mat
  {split}/image/{NNNNN}.png             splits train (795), test (654); val = test
  {split}/depth/{NNNNN}.png             16-bit, millimetres, 0 = invalid
  {split}/label40/{NNNNN}.png           8-bit NYU-40 class 1..40, 0 = unlabelled
  {split}/normals/{NNNNN}.png           optional: 8-bit RGB, n = v / 127.5 - 1, (0,0,0) = invalid"""

# Kinect colour camera of the NYU toolbox (camera_params.m), pixels at 640x480.
FX, FY, CX, CY = 518.857901, 519.469611, 325.582449, 253.736166

CLASSES_40 = (
    "wall", "floor", "cabinet", "bed", "chair", "sofa", "table", "door", "window", "bookshelf",
    "picture", "counter", "blinds", "desk", "shelves", "curtain", "dresser", "pillow", "mirror",
    "floor mat", "clothes", "ceiling", "books", "refridgerator", "television", "paper", "towel",
    "shower curtain", "box", "whiteboard", "person", "night stand", "toilet", "sink", "lamp",
    "bathtub", "bag", "otherstructure", "otherfurniture", "otherprop",
)
CLASSES_13 = ("bed", "books", "ceiling", "chair", "floor", "furniture", "objects", "picture",
              "sofa", "table", "tv", "wall", "window")
# NYU-40 class (1..40) -> 13-class id (1..13) of Couprie et al. (ICLR 2013), as distributed in
# class13Mapping.mat of github.com/ankurhanda/nyuv2-meta-data; entry 0 is 'unlabelled'.
NYU40_TO_13 = (0, 12, 5, 6, 1, 4, 9, 10, 12, 13, 6, 8, 6, 13, 10, 6, 13, 6, 7, 7, 5, 7, 3, 2, 6,
               11, 7, 7, 7, 7, 7, 7, 6, 7, 7, 7, 7, 7, 7, 6, 7)
_KINDS = (("semantic", "label40"), ("depth", "depth"))   # label -> sub-folder


def nyu_lut(classes):
    """256-entry LUT stored NYU-40 id -> class index of the 13- or 40-class set (0 -> 255)."""
    lut = np.full(256, IGNORE, dtype=np.int64)
    ids = np.arange(1, 41)
    lut[ids] = ids - 1 if classes == 40 else np.asarray(NYU40_TO_13)[ids] - 1
    return lut


def encode_normals(normals):
    """HxWx3 unit normals (0 = invalid) -> uint8 RGB round((n + 1) * 127.5), invalid -> (0, 0, 0)."""
    n = np.asarray(normals, dtype=np.float64)
    out = np.round((np.clip(n, -1, 1) + 1) * 127.5).astype(np.uint8)
    out[~np.any(n != 0, axis=-1)] = 0
    return out


def decode_normals(rgb):
    """uint8 HxWx3 -> float32 HxWx3 unit normals, n = v / 127.5 - 1 renormalised; (0,0,0) -> 0."""
    v = np.asarray(rgb, dtype=np.float64)
    n = v / 127.5 - 1.0
    norm = np.linalg.norm(n, axis=-1, keepdims=True)
    valid = np.any(v != 0, axis=-1, keepdims=True) & (norm > 0)
    return np.where(valid, n / np.where(valid, norm, 1.0), 0.0).astype(np.float32)


def _box_sum(t, radius):
    """Sum over a (2r+1)^2 window of CxHxW (zero padding)."""
    k = 2 * radius + 1
    return F.avg_pool2d(t[None], k, stride=1, padding=radius, divisor_override=1)[0]


def normals_from_depth(depth, fx=FX, fy=FY, cx=CX, cy=CY, radius=3, min_fraction=0.5):
    """Surface normals from a depth map by a local plane fit (PCA over a (2r+1)^2 window).

    Each valid pixel (depth > 0) is back-projected, P = ((u - cx) Z / fx, (v - cy) Z / fy, Z)
    with (u, v) the pixel's column and row; the normal is the eigenvector of the smallest
    eigenvalue of the covariance of the valid points in the window (exact for planes), oriented
    towards the camera (n . P < 0). Pixels with an invalid depth, or with fewer than
    min_fraction of the window valid, get 0. Returns float32 HxWx3 in camera coordinates
    (x right, y down, z forward). float64 inside: the covariance subtracts nearly equal terms.
    """
    d = torch.from_numpy(np.array(depth, dtype=np.float64))   # a copy: any strides
    h, w = d.shape
    v, u = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64),
                          indexing="ij")
    valid = (d > 0).to(torch.float64)
    p = torch.stack([(u - cx) * d / fx, (v - cy) * d / fy, d]) * valid       # 3xHxW
    count = _box_sum(valid[None], radius)[0]
    mean = _box_sum(p, radius) / count.clamp(min=1)
    second = _box_sum((p[:, None] * p[None]).reshape(9, h, w), radius) / count.clamp(min=1)
    cov = second.reshape(3, 3, h, w) - mean[:, None] * mean[None]
    _, vecs = torch.linalg.eigh(cov.permute(2, 3, 0, 1))                       # HxWx3x3, ascending
    n = vecs[..., 0]                                                           # HxWx3
    facing = (n * p.permute(1, 2, 0)).sum(-1, keepdim=True)
    n = torch.where(facing > 0, -n, n)
    ok = (valid > 0) & (count >= min_fraction * (2 * radius + 1) ** 2)
    return torch.where(ok[..., None], n, torch.zeros_like(n)).to(torch.float32).numpy()


class NYUv2(FileDataset):
    """NYUv2 labelled subset exported by tools/prepare_nyuv2.py (module docstring)."""

    key = folder = "nyuv2"
    splits = ("train", "val", "test")
    labels = ("semantic", "depth", "normals", "edges")
    class_sets = (13, 40)
    layout = LAYOUT
    known_ids = range(41)

    def index(self, split):
        folder = "test" if split == "val" else split
        base = os.path.join(self.root, folder)
        images = list_files(os.path.join(base, "image"), ".png", f"images, split {folder}", LAYOUT)
        kinds = [kind for label, kind in _KINDS if label in self.want]
        if "normals" in self.want:
            has_normals = os.path.isdir(os.path.join(base, "normals"))
            kinds.append("normals" if has_normals else "depth")    # estimated from depth without it
        return [self._record(folder, base, rel[:-4], kinds) for rel in images]

    def _record(self, folder, base, stem, kinds):
        image = os.path.join(base, "image", stem + ".png")
        rec = {"name": f"{self.key}/{folder}/{stem}", "image": image}
        for kind in kinds:
            path = os.path.join(base, kind, stem + ".png")
            if not os.path.isfile(path):
                raise DataError(f"{image}: its {kind} file {path} is missing; expected layout:\n{LAYOUT}")
            rec["semantic" if kind == "label40" else kind] = path
        return rec


    def label_lut(self):
        return nyu_lut(self.classes)

    def class_names(self):
        return CLASSES_40 if self.classes == 40 else CLASSES_13

    def load_depth(self, rec):
        return (read_png16(rec["depth"]) / 1000.0).astype(np.float32)

    def load_normals(self, rec):
        if "normals" in rec:
            return decode_normals(read_rgb(rec["normals"]))
        return normals_from_depth(read_png16(rec["depth"]) / 1000.0)   # as tools/prepare_nyuv2.py

    def focal(self, rec):
        return FX


register(NYUv2, "NYUv2 labelled subset (tools/prepare_nyuv2.py export): 13/40 classes, depth, normals")
