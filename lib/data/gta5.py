"""GTA5 ("Playing for Data", Richter et al. 2016): UM-Adapt's outdoor source domain.

Layout as unpacked from the official archives: images/00001.png, ... and labels/00001.png, ...
Labels are Cityscapes labelIds; many official label PNGs are palette ("P")
images whose palette index is the labelId, so the index is read, never the colour
(base.read_gray). Ids go through labels.CITYSCAPES_TO[k].

Splits: the official split.mat (trainIds / valIds / testIds) is MATLAB, which this repository
does not read. A split is given by an optional text file gta5/{split}.txt, one image per line,
either a file name of images/ (00001.png) or a bare number (1 -> 00001.png), so the ids of
split.mat can be written out as they are. Without a list file, `train` is every image and
`val` / `test` are errors naming the missing list file.

A few official images differ from their label map by some pixels; such a pair is reported by
the shared size check (the error names both files) instead of being silently resized: drop
the pair from the split list, or resize the label with nearest-neighbour interpolation.
"""
import os

from lib.data import register
from lib.data.base import DataError, FileDataset, inside, list_files, read_list
from lib.data.labels import CITYSCAPES_TO

LAYOUT = """\
gta5/
  images/00001.png ...   RGB images
  labels/00001.png ...   Cityscapes labelIds (8-bit grey or palette PNG: the index is the id)
  {split}.txt            optional: one image per line (00001.png or 1); without it train = all images"""


def _file_name(entry):
    """A list-file entry as a file name of images/: '1' -> '00001.png' (split.mat ids)."""
    return f"{int(entry):05d}.png" if entry.isdigit() else entry


class GTA5(FileDataset):
    """GTA5 images + labelIds, optional split lists (module docstring)."""

    key = folder = "gta5"
    splits = ("train", "val", "test")
    labels = ("semantic", "edges")
    class_sets = (19, 16, 13, 7, 11)
    layout = LAYOUT
    known_ids = range(34)    # Cityscapes labelIds as stored (license plate, -1, never is)

    def index(self, split):
        images, labels = os.path.join(self.root, "images"), os.path.join(self.root, "labels")
        for folder, what in ((images, "images"), (labels, "semantic labels")):
            if (what == "images" or "semantic" in self.want) and not os.path.isdir(folder):
                raise DataError(f"missing folder {folder} ({what}); expected layout:\n{LAYOUT}")
        names = self._names(split, images)
        return [self._record(split, name, images, labels) for name in names]

    def _names(self, split, images):
        list_file = os.path.join(self.root, f"{split}.txt")
        if split == "train" and not os.path.isfile(list_file):
            return list_files(images, ".png", "images", LAYOUT)
        entries = enumerate(read_list(list_file, LAYOUT), 1)
        names = sorted({os.path.relpath(inside(images, _file_name(e), f"{list_file}, entry {n}"), images)
                        for n, e in entries})
        for name in names:
            if not os.path.isfile(os.path.join(images, name)):
                raise DataError(f"{list_file} lists {name}, but {os.path.join(images, name)} is missing")
        return names

    def _record(self, split, name, images, labels):
        rec = {"name": f"{self.key}/{split}/{os.path.splitext(name)[0]}", "image": os.path.join(images, name)}
        if "semantic" in self.want:
            rec["semantic"] = os.path.join(labels, name)
            if not os.path.isfile(rec["semantic"]):
                raise DataError(f"{rec['image']}: its semantic file {rec['semantic']} is missing; "
                                f"expected layout:\n{LAYOUT}")
        return rec


    def label_lut(self):
        return CITYSCAPES_TO[self.classes]


register(GTA5, "GTA5 (Playing for Data): Cityscapes labelIds, optional split lists")
