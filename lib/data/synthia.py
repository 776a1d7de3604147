"""SYNTHIA-RAND-CITYSCAPES (docs/reference.md, "SYNTHIA-RAND-CITYSCAPES"): DADA's source domain.

Files, as unpacked from the official RAND_CITYSCAPES archive (put under DATA_ROOT/synthia):
- RGB/0000000.png: the image.
- GT/LABELS/0000000.png: 16-bit PNG, 3 channels, the class id in the FIRST channel (the second
  holds the instance id). PIL truncates 16-bit RGB PNGs to 8 bits, so labels are decoded with
  base.read_png16, which keeps all 16 bits. Ids go through labels.SYNTHIA_TO[16 or 7].
- Depth/Depth/0000000.png: 16-bit PNG, depth in centimetres in the first channel. The official
  files repeat it in 3 identical channels; 1-channel files (converted copies) are read too.
  0 is invalid; the saturated value 65535 (655.35 m, sky) is kept, as DADA's code keeps it.

Splits: SYNTHIA has no official split and DADA trains on all 9,400 images, so `train` is every
image. `val` is the last VAL_SIZE images in sorted file-name order, for monitoring only: it is
a subset of `train` (DADA selects and reports on the target domain, never on SYNTHIA).

Focal length 847.630 px (AT/DT's official code, eval_task.py), used by --focal-ref.
"""
import os

import numpy as np

from lib.data import register
from lib.data.base import DataError, FileDataset, list_files, read_png16
from lib.data.labels import SYNTHIA_TO

LAYOUT = """\
synthia/                          (SYNTHIA-RAND-CITYSCAPES)
  RGB/0000000.png ...             RGB images
  GT/LABELS/0000000.png ...       semantic: 16-bit, 3 channels, class id in the first channel
  Depth/Depth/0000000.png ...     depth: 16-bit, centimetres in the first channel (1 or 3 channels)"""

# Label folders, relative to the root, per label.
_FOLDERS = {"semantic": os.path.join("GT", "LABELS"), "depth": os.path.join("Depth", "Depth")}


def _first_channel(arr):
    """The first channel of an HxW or HxWxC array from read_png16."""
    return arr[..., 0] if arr.ndim == 3 else arr


class Synthia(FileDataset):
    """SYNTHIA-RAND-CITYSCAPES with 16-bit labels and centimetre depth (module docstring)."""

    key = folder = "synthia"
    splits = ("train", "val")
    labels = ("semantic", "depth", "edges")
    class_sets = (16, 7)
    layout = LAYOUT
    known_ids = range(23)    # the 23 classes of the dataset's README (0 void .. 22 lanemarking)
    VAL_SIZE = 100              # `val` = the last VAL_SIZE images by sorted name (module docstring)
    FOCAL = 847.630

    def index(self, split):
        names = list_files(os.path.join(self.root, "RGB"), ".png", "images", LAYOUT)
        if split == "val":
            names = names[-self.VAL_SIZE:]
        folders = {lab: os.path.join(self.root, _FOLDERS[lab]) for lab in self.want if lab in _FOLDERS}
        for lab, folder in folders.items():
            if not os.path.isdir(folder):
                raise DataError(f"missing folder {folder} ({lab} labels); expected layout:\n{LAYOUT}")
        return [self._record(split, rel, folders) for rel in names]

    def _record(self, split, rel, folders):
        image = os.path.join(self.root, "RGB", rel)
        rec = {"name": f"{self.key}/{split}/{os.path.splitext(rel)[0]}", "image": image}
        for lab, folder in folders.items():
            rec[lab] = os.path.join(folder, rel)
            if not os.path.isfile(rec[lab]):
                raise DataError(f"{image}: its {lab} file {rec[lab]} is missing; expected layout:\n{LAYOUT}")
        return rec

    def label_ids(self, rec):
        return _first_channel(read_png16(rec["semantic"])).astype(np.int64)

    def label_lut(self):
        return SYNTHIA_TO[self.classes]

    def load_depth(self, rec):
        return _first_channel(read_png16(rec["depth"])).astype(np.float32) / 100.0

    def focal(self, rec):
        return self.FOCAL


register(Synthia, "SYNTHIA-RAND-CITYSCAPES: 16-bit labels (16 / 7 classes) and depth (DADA's source)")
