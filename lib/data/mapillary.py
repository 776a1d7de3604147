"""Mapillary Vistas v1.2, read from the official layout (docs/reference.md, "Mapillary Vistas v1.2").

Used by DADA as a target domain (SYNTHIA -> Vistas, 7 classes, Table 2).

Labels:
- semantic: labels/*.png, an 8-bit palette (or grey) PNG whose pixel value is the Vistas v1.2
  class index 0..65 (the order of the official config.json, VISTAS_CLASSES below). The index
  goes through DADA's 7 categories (VISTAS_TO_7), classes outside them are ignored (255).
- edges: from the edge cache or computed from the image (lib/data/base.py).

Vistas images vary in size (most are 4:3, from phones): training crops or --resize give equal
batch shapes; evaluation at native size needs --resize or a batch size of 1.
The v2.0 package keeps the v1.2 labels under {split}/v1.2/labels/: both layouts are read.
"""
import os

import numpy as np

from lib.data import register
from lib.data.base import IGNORE, DataError, FileDataset, list_files

LAYOUT = """\
mapillary/
  training/images/{id}.jpg          split train
  training/labels/{id}.png          8-bit class index 0..65 (Vistas v1.2 config.json order)
  validation/images/{id}.jpg        split val
  validation/labels/{id}.png
  (v2.0 package: training/v1.2/labels/{id}.png is read too)"""

SPLIT_FOLDERS = {"train": "training", "val": "validation"}

# The 66 class names of the Vistas v1.2 config.json, in index order.
VISTAS_CLASSES = (
    "animal--bird", "animal--ground-animal", "construction--barrier--curb",
    "construction--barrier--fence", "construction--barrier--guard-rail",
    "construction--barrier--other-barrier", "construction--barrier--wall",
    "construction--flat--bike-lane", "construction--flat--crosswalk-plain",
    "construction--flat--curb-cut", "construction--flat--parking",
    "construction--flat--pedestrian-area", "construction--flat--rail-track",
    "construction--flat--road", "construction--flat--service-lane", "construction--flat--sidewalk",
    "construction--structure--bridge", "construction--structure--building",
    "construction--structure--tunnel", "human--person", "human--rider--bicyclist",
    "human--rider--motorcyclist", "human--rider--other-rider", "marking--crosswalk-zebra",
    "marking--general", "nature--mountain", "nature--sand", "nature--sky", "nature--snow",
    "nature--terrain", "nature--vegetation", "nature--water", "object--banner", "object--bench",
    "object--bike-rack", "object--billboard", "object--catch-basin", "object--cctv-camera",
    "object--fire-hydrant", "object--junction-box", "object--mailbox", "object--manhole",
    "object--phone-booth", "object--pothole", "object--street-light", "object--support--pole",
    "object--support--traffic-sign-frame", "object--support--utility-pole", "object--traffic-light",
    "object--traffic-sign--back", "object--traffic-sign--front", "object--trash-can",
    "object--vehicle--bicycle", "object--vehicle--boat", "object--vehicle--bus", "object--vehicle--car",
    "object--vehicle--caravan", "object--vehicle--motorcycle", "object--vehicle--on-rails",
    "object--vehicle--other-vehicle", "object--vehicle--trailer", "object--vehicle--truck",
    "object--vehicle--wheeled-slow", "void--car-mount", "void--ego-vehicle", "void--unlabeled",
)

CLASSES_7 = ("flat", "construction", "object", "nature", "sky", "human", "vehicle")

# DADA's 7 categories (DADA Table 2) from the Vistas names. The table is the one of
# DADA's official dada/dataset/mapillary.py (MAPILLARY_2_CITYSCAPES, written there with the
# config's readable names), so scores compare with the published 67.6 / 55.8 mIoU. Two of its
# entries differ from the Cityscapes 7-class map: terrain is 'flat' (Cityscapes: nature) and the
# curb is 'construction'. Classes not listed (animals, mountain, sand, snow, water, the small
# street objects such as bench or mailbox, void) are ignored.
VISTAS_TO_7 = {
    "flat": ("construction--flat--bike-lane", "construction--flat--crosswalk-plain",
             "construction--flat--curb-cut", "construction--flat--parking",
             "construction--flat--pedestrian-area", "construction--flat--rail-track",
             "construction--flat--road", "construction--flat--service-lane",
             "construction--flat--sidewalk", "marking--crosswalk-zebra", "marking--general",
             "nature--terrain"),
    "construction": ("construction--barrier--curb", "construction--barrier--fence",
                     "construction--barrier--guard-rail", "construction--barrier--other-barrier",
                     "construction--barrier--wall", "construction--structure--bridge",
                     "construction--structure--building", "construction--structure--tunnel"),
    "object": ("object--pothole", "object--street-light", "object--support--pole",
               "object--support--traffic-sign-frame", "object--support--utility-pole",
               "object--traffic-light", "object--traffic-sign--back", "object--traffic-sign--front"),
    "nature": ("nature--vegetation",),
    "sky": ("nature--sky",),
    "human": ("human--person", "human--rider--bicyclist", "human--rider--motorcyclist",
              "human--rider--other-rider"),
    "vehicle": ("object--vehicle--bicycle", "object--vehicle--boat", "object--vehicle--bus",
                "object--vehicle--car", "object--vehicle--caravan", "object--vehicle--motorcycle",
                "object--vehicle--on-rails", "object--vehicle--other-vehicle",
                "object--vehicle--trailer", "object--vehicle--truck", "object--vehicle--wheeled-slow"),
}


def vistas_lut(table=VISTAS_TO_7, classes=CLASSES_7):
    """256-entry LUT Vistas index -> class index of `classes` (255 for unlisted classes)."""
    lut = np.full(256, IGNORE, dtype=np.int64)
    for index, cls in enumerate(classes):
        for name in table[cls]:
            lut[VISTAS_CLASSES.index(name)] = index
    return lut


class Mapillary(FileDataset):
    """Mapillary Vistas v1.2 images and 66-class labels, in DADA's 7 categories (module docstring)."""

    key = folder = "mapillary"
    splits = ("train", "val")
    labels = ("semantic", "edges")
    class_sets = (7,)
    layout = LAYOUT
    known_ids = range(len(VISTAS_CLASSES))

    def index(self, split):
        base = os.path.join(self.root, SPLIT_FOLDERS[split])
        images = list_files(os.path.join(base, "images"), ".jpg", "images", LAYOUT)
        labels = self._label_dir(base) if "semantic" in self.want else None
        return [self._record(split, base, rel[:-4], labels) for rel in images]

    def _label_dir(self, base):
        """labels/ of the v1.2 package, or v1.2/labels/ of the v2.0 package."""
        for folder in (os.path.join(base, "labels"), os.path.join(base, "v1.2", "labels")):
            if os.path.isdir(folder):
                return folder
        raise DataError(f"missing folder {os.path.join(base, 'labels')} (semantic labels); "
                        f"expected layout:\n{LAYOUT}")

    def _record(self, split, base, stem, labels):
        image = os.path.join(base, "images", stem + ".jpg")
        rec = {"name": f"{self.key}/{split}/{stem}", "image": image}
        if labels is not None:
            rec["semantic"] = os.path.join(labels, stem + ".png")
            if not os.path.isfile(rec["semantic"]):
                raise DataError(f"{image}: its label file {rec['semantic']} is missing; "
                                f"expected layout:\n{LAYOUT}")
        return rec


    def label_lut(self):
        return vistas_lut()

    def class_names(self):
        return CLASSES_7


register(Mapillary, "Mapillary Vistas v1.2 images + labels in DADA's 7 categories (official layout)")
