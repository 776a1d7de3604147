"""Cityscapes, read from the official layout (docs/reference.md, "Cityscapes").

Used by AT/DT (target domain, 11 classes), DADA (target, 16 / 13 / 7 classes), SemiMTL
(train_extra as "Cityscapes-depth") and UM-Adapt (target, GTA5 -> Cityscapes).

Labels:
- semantic: gtFine/*_gtFine_labelIds.png (8-bit labelIds) through labels.CITYSCAPES_TO[k].
  The official release holds gtFine/test files, but they are placeholders (the test labels are
  not public), so asking for `semantic` on `test` is an error rather than a meaningless score;
  `train_extra` has only coarse labels (gtCoarse), which are not offered as `semantic`.
- depth: disparity PNG p (uint16), d = (p - 1) / 256 for p > 0, invalid for p = 0 (and d <= 0);
  depth = baseline * fx / d in metres with the frame's camera/*_camera.json. This is the released
  disparity; AT/DT's depth labels are its own (SGM with a left-right check, AT/DT Sec. 4), which
  its official code reads as CARLA-encoded depth PNGs (core/input.py) and never released: here
  AT/DT trains and scores Cityscapes depth on the released disparity (ours, README).
- edges: from the edge cache or computed from the image (lib/data/base.py).

Only the files of the requested labels are looked for: gtFine for semantic, disparity + camera
for depth, so an images-and-disparity download is enough for depth-only work.
"""
import json
import os

import numpy as np

from lib.data import register
from lib.data.base import DataError, FileDataset, list_files, read_gray
from lib.data.labels import CITYSCAPES_TO

IMAGE_SUFFIX = "_leftImg8bit.png"
LAYOUT = """\
cityscapes/                          splits: train val test train_extra
  leftImg8bit/{split}/{city}/{city}_{seq}_{frame}_leftImg8bit.png   images
  gtFine/{split}/{city}/{city}_{seq}_{frame}_gtFine_labelIds.png    semantic (train, val)
  disparity/{split}/{city}/{city}_{seq}_{frame}_disparity.png       depth: 16-bit disparity
  camera/{split}/{city}/{city}_{seq}_{frame}_camera.json            depth: extrinsic.baseline, intrinsic.fx"""

# Splits without usable fine labels, and why (the error message).
_NO_SEMANTIC = {
    "test": "the Cityscapes test labels are not public (the gtFine/test files of the official release "
            "are placeholders): evaluate on 'val', or submit test predictions to the benchmark server",
    "train_extra": "train_extra has coarse labels only (gtCoarse), which are not offered as 'semantic': "
                   "use it for images and depth",
}


def _require_dir(folder, what):
    if not os.path.isdir(folder):
        raise DataError(f"missing folder {folder} ({what}); expected layout:\n{LAYOUT}")


def _partner(image, path, what):
    """The label file `path` of `image`; a missing one is an error naming both."""
    if not os.path.isfile(path):
        raise DataError(f"{image}: its {what} file {path} is missing; expected layout:\n{LAYOUT}")
    return path


def read_camera(path):
    """(baseline m, fx px) of a Cityscapes camera json; errors name the file."""
    if not os.path.isfile(path):
        raise DataError(f"missing file: {path}")
    try:
        with open(path) as f:
            cam = json.load(f)
        return float(cam["extrinsic"]["baseline"]), float(cam["intrinsic"]["fx"])
    except (ValueError, TypeError) as exc:
        raise DataError(f"cannot read {path}: {exc}") from None
    except KeyError as exc:
        raise DataError(f"{path}: no {exc} entry (expected extrinsic.baseline and intrinsic.fx)") from None


def disparity_to_depth(p, baseline, fx):
    """Official disparity encoding (cityscapesScripts' README, "Disparity"): d = (p - 1) / 256 for p > 0; depth = b fx / d.

    p = 0 marks an invalid pixel; p = 1 gives d = 0 (infinitely far), also invalid (0)."""
    d = (np.asarray(p, dtype=np.float64) - 1.0) / 256.0
    depth = np.zeros(d.shape, dtype=np.float64)
    ok = d > 0
    depth[ok] = baseline * fx / d[ok]
    return depth.astype(np.float32)


class Cityscapes(FileDataset):
    """Cityscapes leftImg8bit + gtFine labelIds + disparity/camera (module docstring)."""

    key = folder = "cityscapes"
    splits = ("train", "val", "test", "train_extra")
    labels = ("semantic", "depth", "edges")
    class_sets = (19, 16, 13, 7, 11)
    layout = LAYOUT
    # labelIds the format defines; license plate (-1) is never stored, PNGs hold 0..33.
    known_ids = range(-1, 34)

    def index(self, split):
        if "semantic" in self.want and split in _NO_SEMANTIC:
            raise DataError(f"dataset 'cityscapes', split {split!r}: {_NO_SEMANTIC[split]}")
        images = list_files(self._dir("leftImg8bit", split), IMAGE_SUFFIX, "images", LAYOUT)
        if "semantic" in self.want:
            _require_dir(self._dir("gtFine", split), "semantic labels")
        if "depth" in self.want:
            _require_dir(self._dir("disparity", split), "depth: disparity")
            _require_dir(self._dir("camera", split), "depth: camera calibration")
        return [self._record(split, rel[:-len(IMAGE_SUFFIX)]) for rel in images]

    def _dir(self, kind, split):
        return os.path.join(self.root, kind, split)

    def _record(self, split, stem):
        """stem: '{city}/{city}_{seq}_{frame}', relative to the split folder."""
        image = os.path.join(self._dir("leftImg8bit", split), stem + IMAGE_SUFFIX)
        rec = {"name": f"{self.key}/{split}/{stem}", "image": image}
        if "semantic" in self.want:
            rec["semantic"] = _partner(image, os.path.join(self._dir("gtFine", split),
                                                           stem + "_gtFine_labelIds.png"), "semantic")
        if "depth" in self.want:
            rec["depth"] = _partner(image, os.path.join(self._dir("disparity", split),
                                                        stem + "_disparity.png"), "disparity")
            rec["camera"] = _partner(image, os.path.join(self._dir("camera", split),
                                                         stem + "_camera.json"), "camera")
        return rec


    def label_lut(self):
        return CITYSCAPES_TO[self.classes]

    def load_depth(self, rec):
        baseline, fx = read_camera(rec["camera"])
        return disparity_to_depth(read_gray(rec["depth"]), baseline, fx)

    def focal(self, rec):
        """The frame's own fx (about 2262.52 px for every official frame)."""
        return read_camera(rec["camera"])[1]


register(Cityscapes, "Cityscapes leftImg8bit + gtFine labelIds + disparity depth (official layout)")
