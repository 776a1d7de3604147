"""CARLA as rendered for AT/DT (docs/reference.md, "CARLA"; AT/DT Sec. 4).

AT/DT never released its CARLA renders, so users render their own with CARLA 0.8 (or a later
version with the same encodings) and save, per frame, three PNGs:
- the RGB image;
- the semantic segmentation with CARLA's tag in the RED channel (CARLA's raw output):
  0 None, 1 Buildings, 2 Fences, 3 Other, 4 Pedestrians, 5 Poles, 6 RoadLines, 7 Roads,
  8 Sidewalks, 9 Vegetation, 10 Vehicles, 11 Walls, 12 TrafficSigns;
- the depth as CARLA's 24-bit encoding, (R + 256 G + 65536 B) / (2^24 - 1) * 1000 metres
  (AT/DT's decode_depth_3_channels).

Mapped to AT/DT's 11 classes (labels.CLASS_NAMES[11]): RoadLines and Roads -> road, Sidewalks ->
sidewalk, Walls -> wall, Fences -> fence, Pedestrians -> person, Poles -> pole, Vegetation ->
vegetation, Vehicles -> vehicle, TrafficSigns -> traffic sign, Buildings -> building; None and
Other are ignored. Sky: AT/DT defines it in CARLA as the points at infinite depth, so pixels at
the far plane (the maximum encoding, 1000 m) get class sky whatever their tag and an invalid
depth (0). label_ids() reports those pixels as tag 13, CARLA's own Sky tag from 0.9.10 on, so
newer renders that store the Sky tag map to sky as well. Reading `semantic` therefore needs the
depth PNG too.

Two layouts, per split (train, val, test):
- folders: carla/{split}/rgb/NAME.png, carla/{split}/semantic/NAME.png, carla/{split}/depth/NAME.png;
- AT/DT's list files: carla/{split}.txt, one sample per line `left;right;semantic;depth` with
  paths relative to carla/ (or absolute, inside carla/); the right image is not used. When the list file of
  a split exists it is used, otherwise the folders.

Focal length: 859.238 px by default (AT/DT's official code, eval_task.py's dict_focals), which is
2048 / (2 tan 50 deg), the focal of 2048-px-wide renders with a 100-degree horizontal field of view
(the paper renders CARLA "mimicking the camera settings of the real scenes", Cityscapes' 2048x1024;
the official code states neither the width nor the field of view: this is our reading of the
number). Renders of another width W or field of view V have W / (2 tan(V / 2)): give it with
--carla-focal (the dataset option carla_focal, pixels at the native width). It converts depth
across cameras (--focal-ref, --focal-at-eval).
"""
import os

import numpy as np

from lib.data import register
from lib.data.base import DataError, FileDataset, inside, list_files, read_list, read_rgb
from lib.data.labels import CLASS_NAMES, IGNORE_INDEX, LUT_SIZE

LAYOUT = """\
carla/
  {split}/rgb/NAME.png         RGB images                                splits: train val test
  {split}/semantic/NAME.png    CARLA 0.8 tag in the red channel
  {split}/depth/NAME.png       24-bit depth: (R + 256 G + 65536 B) / (2^24 - 1) * 1000 m
or AT/DT list files (used when present):
  {split}.txt                  lines `left;right;semantic;depth`, paths inside carla/ (relative or absolute)"""

SKY_TAG = 13                   # CARLA >= 0.9.10's Sky tag; given to far-plane pixels
FAR_CODE = 2 ** 24 - 1         # the far plane (1000 m) in the 24-bit depth encoding
FAR_PLANE = 1000.0             # metres
# AT/DT class name -> CARLA tags.
_TAGS = {"road": (6, 7), "sidewalk": (8,), "wall": (11,), "fence": (2,), "person": (4,),
         "pole": (5,), "vegetation": (9,), "vehicle": (10,), "traffic sign": (12,),
         "building": (1,), "sky": (SKY_TAG,)}
_LIST_FIELDS = ("image", "right", "semantic", "depth")


def depth_code(path):
    """The 24-bit integer R + 256 G + 65536 B of a CARLA depth PNG (HxW int64)."""
    rgb = read_rgb(path).astype(np.int64)
    return rgb[..., 0] + 256 * rgb[..., 1] + 65536 * rgb[..., 2]


def carla_lut():
    """CARLA tag -> index of AT/DT's 11 classes (255 ignore)."""
    lut = np.full(LUT_SIZE, IGNORE_INDEX, dtype=np.int64)
    for name, tags in _TAGS.items():
        lut[list(tags)] = CLASS_NAMES[11].index(name)
    return lut


class Carla(FileDataset):
    """CARLA renders in AT/DT's encodings, folder or list-file layout (module docstring)."""

    key = folder = "carla"
    splits = ("train", "val", "test")
    labels = ("semantic", "depth", "edges")
    class_sets = (11,)
    layout = LAYOUT
    known_ids = range(SKY_TAG + 1)
    FOCAL = 859.238                 # px, AT/DT's (module docstring)
    own_options = ("carla_focal",)  # lib.data.register passes it to this dataset only

    def __init__(self, root, split, size, carla_focal=None, **options):
        if carla_focal is not None and not carla_focal > 0:
            raise DataError(f"--carla-focal must be a positive focal length in pixels, got {carla_focal}")
        self.carla_focal = float(carla_focal) if carla_focal else self.FOCAL
        super().__init__(root, split, size, **options)

    def index(self, split):
        list_file = os.path.join(self.root, f"{split}.txt")
        if os.path.isfile(list_file):
            records = self._from_list(split, list_file)
        else:
            records = self._from_folders(split)
        return sorted(records, key=lambda rec: rec["name"])

    def _needed(self):
        """Label files to look for: semantic needs the depth PNG too (the sky rule)."""
        wanted = [lab for lab in ("semantic", "depth") if lab in self.want]
        return wanted + ["depth"] if wanted == ["semantic"] else wanted

    def _from_folders(self, split):
        base = os.path.join(self.root, split)
        names = list_files(os.path.join(base, "rgb"), ".png", "images", LAYOUT)
        for lab in self._needed():
            if not os.path.isdir(os.path.join(base, lab)):
                raise DataError(f"missing folder {os.path.join(base, lab)} ({lab} labels, no list file "
                                f"{split}.txt either); expected layout:\n{LAYOUT}")
        records = []
        for rel in names:
            rec = {"name": f"{self.key}/{split}/{os.path.splitext(rel)[0]}",
                   "image": os.path.join(base, "rgb", rel)}
            records.append(self._check(rec, {lab: os.path.join(base, lab, rel) for lab in self._needed()}))
        return records

    def _from_list(self, split, list_file):
        records = []
        for number, line in enumerate(read_list(list_file, LAYOUT), 1):
            fields = [f.strip() for f in line.split(";")]
            if len(fields) < len(_LIST_FIELDS):
                raise DataError(f"{list_file}, entry {number}: expected `left;right;semantic;depth`, "
                                f"got {line!r}")
            paths = {k: inside(self.root, p, f"{list_file}, entry {number}")
                     for k, p in zip(_LIST_FIELDS, fields)}
            if not os.path.isfile(paths["image"]):
                raise DataError(f"{list_file}, entry {number}: image {paths['image']} is missing")
            rec = {"name": f"{self.key}/{split}/{self._stem(paths['image'])}", "image": paths["image"]}
            records.append(self._check(rec, {lab: paths[lab] for lab in self._needed()}))
        return records

    def _stem(self, path):
        """Sample name from an image path inside the root (base.inside checked it)."""
        return os.path.splitext(os.path.relpath(path, self.root))[0].replace(os.sep, "/")

    @staticmethod
    def _check(rec, labels):
        for lab, path in labels.items():
            if not os.path.isfile(path):
                raise DataError(f"{rec['image']}: its {lab} file {path} is missing; expected layout:\n"
                                f"{LAYOUT}")
            rec[lab] = path
        return rec

    def label_ids(self, rec):
        """CARLA tags (red channel), with far-plane pixels set to SKY_TAG (module docstring)."""
        tags = read_rgb(rec["semantic"])[..., 0].astype(np.int64)
        far = depth_code(rec["depth"]) == FAR_CODE
        if far.shape != tags.shape:
            raise DataError(f"{rec['semantic']}: semantic is {tags.shape[0]}x{tags.shape[1]} but its depth "
                            f"{rec['depth']} is {far.shape[0]}x{far.shape[1]} (image {rec['image']})")
        tags[far] = SKY_TAG
        return tags

    def label_lut(self):
        return carla_lut()

    def load_depth(self, rec):
        code = depth_code(rec["depth"])
        depth = code.astype(np.float64) / FAR_CODE * FAR_PLANE
        depth[code == FAR_CODE] = 0.0      # sky: infinite depth, no valid target
        return depth.astype(np.float32)

    def focal(self, rec):
        return self.carla_focal


register(Carla, "CARLA renders in AT/DT's encodings (11 classes, 24-bit depth; folders or list files)")
