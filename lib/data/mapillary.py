"""Mapillary Vistas v1.2, read from the official layout (docs/reference.md, "Mapillary Vistas v1.2").

Used by DADA as a target domain (SYNTHIA -> Vistas, 7 classes, Table 2).

Labels:
- semantic: labels/*.png, an 8-bit palette (or grey) PNG whose pixel value is the Vistas v1.2
  class index 0..65 (the order of the official config.json, VISTAS_CLASSES below). The index
  goes through DADA's 7 categories (VISTAS_TO_7), classes outside them are ignored (255).
- edges: from the edge cache or computed from the image (lib/data/base.py).

Vistas images vary in size and shape (most are 4:3, from phones). --resize H W is the official
protocol (DADA's dada/dataset/mapillary.py, configs_s2m: 1024x768): `resize_mode="pad"`, the
default, fits each image inside HxW keeping its aspect (the side that binds set to H or W, the
other int() of the scaled length) and pads it bottom / right with black. Labels:
- training: resized (nearest) and padded the same way with 255 (ignored; the official code
  pads with id 7 too but never reads target training labels: ours, for the oracle);
- evaluation at their own resolution (native_labels, DADA's protocol): not resized, padded
  bottom / right to HxW's aspect (the official pad_with_fixed_AS), so the logits of the padded
  input upsample onto them. The official fill is raw id 7 (len(class list) - 1, meant as
  'other' but applied before the class map), i.e. bike lane, so the padding scores as 'flat':
  `pad_label="official"` (default) keeps that, "ignore" fills 255.
`resize_mode="stretch"` squashes every image to HxW instead (not the official protocol).
evaluate.py rebuilds the dataset with the defaults, so it re-scores only those.
The v2.0 package keeps the v1.2 labels under {split}/v1.2/labels/: both layouts are read.
"""
import os

import numpy as np

from lib.data import register
from lib.data import transforms as T
from lib.data.base import IGNORE, DataError, FileDataset, list_files

LAYOUT = """\
mapillary/
  training/images/{id}.jpg          split train
  training/labels/{id}.png          8-bit class index 0..65 (Vistas v1.2 config.json order)
  validation/images/{id}.jpg        split val
  validation/labels/{id}.png
  (v2.0 package: training/v1.2/labels/{id}.png is read too)"""

SPLIT_FOLDERS = {"train": "training", "val": "validation"}

# The 66 class names of the Vistas v1.2 config.json, in index order. DADA's official loader takes
# the order from dada/dataset/mapillary_list/info.json (`labels`, their `readable` names: the
# layout of config.json); we have not read that file, and use the v1.2 config.json order.
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


# The official padding id of Vistas labels (dada/dataset/mapillary.py: len(class_names) - 1 of
# its 8-entry class list, applied to raw ids, so Vistas index 7, construction--flat--bike-lane).
OFFICIAL_PAD_ID = 7
RESIZE_MODES, PAD_LABELS = ("pad", "stretch"), ("official", "ignore")


def fit_size(h, w, size):
    """(h', w') of an h x w image fitted inside size = (H, W) with its aspect kept, computed as
    the official resize_with_pad does (the binding side set exactly, the other int() of it)."""
    th, tw = size
    if w / h > tw / th:
        return max(1, int(h * (tw / w))), tw
    return th, max(1, int(w * (th / h)))


def aspect_pad_size(h, w, size):
    """(h', w') >= (h, w) with the aspect W / H of size, as the official pad_with_fixed_AS pads
    an evaluation label (the longer side kept, int() of the other)."""
    ratio = size[1] / size[0]
    if ratio > w / h:
        return h, int(ratio * h)
    if ratio < w / h:
        return int(w / ratio), w
    return h, w


def pad_to(sample, size, label_fill=IGNORE):
    """Every map of `sample` placed top-left in an HxW canvas, as the official resize_with_pad /
    pad_with_fixed_AS place it: the image padded with 0 (black before normalisation, the
    official 0 before mean subtraction), semantic with `label_fill`."""
    out = T.crop(sample, 0, 0, size)             # pads with lib.data.transforms' fill values
    if "semantic" in sample and label_fill != IGNORE:
        h, w = sample["semantic"].shape[-2:]
        sem = out["semantic"]
        sem[h:, :] = label_fill
        sem[:, w:] = label_fill
    return out


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

    def __init__(self, root, split, size, resize_mode="pad", pad_label="official", **options):
        if resize_mode not in RESIZE_MODES:
            raise DataError(f"mapillary resize_mode must be {' or '.join(RESIZE_MODES)}, got {resize_mode!r}")
        if pad_label not in PAD_LABELS:
            raise DataError(f"mapillary pad_label must be {' or '.join(PAD_LABELS)}, got {pad_label!r}")
        self.resize_mode, self.pad_label = resize_mode, pad_label
        super().__init__(root, split, size, **options)

    def resize_sample(self, sample):
        """--resize as DADA's dada/dataset/mapillary.py (module docstring): fit inside, pad bottom / right."""
        if self.resize_mode == "stretch":
            return super().resize_sample(sample)
        h, w = sample["image"].shape[-2:]
        fit = fit_size(h, w, self.resize)
        # The official fill only at the official 4:3 (1024x768): at 2:1 (Table 2's 320x640 rows,
        # ours) it would score a third of each 4:3 label as flat, so the padding is ignored there.
        official = self.pad_label == "official" and not self.train and self.resize[0] * 4 == self.resize[1] * 3
        fill = int(self.label_lut()[OFFICIAL_PAD_ID]) if official else IGNORE
        if not self.native_labels:
            return pad_to(T.resize_sample(sample, fit, self.image_resample), self.resize, fill)
        image = pad_to(T.resize_sample({"image": sample["image"]}, fit, self.image_resample), self.resize)["image"]
        labels = {k: v for k, v in sample.items() if k != "image"}
        return {**pad_to(labels, aspect_pad_size(h, w, self.resize), fill), "image": image}

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
