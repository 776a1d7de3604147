"""KITTI depth: the official annotated depth maps with RGB frames from KITTI raw.

Used by UM-Adapt (outdoor target, depth scored on the Eigen test split, Table 4).

Files (LAYOUT):
- depth: data_depth_annotated, {train,val}/{drive}/proj_depth/groundtruth/image_0{2,3}/{frame}.png,
  uint16, metres = value / 256, 0 = no measurement (KITTI depth devkit readme).
- image: KITTI raw, raw/{date}/{drive}/image_0{2,3}/data/{frame}.png, with {date} the first 10
  characters of the drive name; the raw download unpacks to exactly this tree, so it is placed
  (or linked) as kitti_depth/raw/.
- focal: P_rect_0{2,3}[0] of raw/{date}/calib_cam_to_cam.txt; 721.5377 px (P_rect_02 of the
  2011_09_26 recordings) when the calibration file is absent.

Splits: `train` is eigen_train_files.txt when that list exists, else the official train/ folder;
`val` is the official val/ folder; `test` is eigen_test_files.txt (required). A list line is
    2011_09_26/2011_09_26_drive_0002_sync/image_02/data/0000000069.png [anything else]
(the first token is the RGB path relative to raw/; later tokens, as in the monodepth / BTS lists,
are ignored). Its depth map is looked for in train/ then val/. Listed frames without an annotated
depth map (45 of the 697 Eigen test frames) are left out with a warning, which gives the usual
652-frame "Eigen split, annotated ground truth" evaluation.

Size: raw frames vary (1224x370 .. 1242x376), so every image and depth map is cut to KITTI's
benchmark crop (KB crop: bottom 352 rows, centred 1216 columns), which gives equal batch shapes
at evaluation and drops the top rows the LiDAR never reaches. The crop keeps the focal length.
"""
import functools
import os
import re
import warnings

from PIL import Image

from lib.data import register
from lib.data.base import (
    DataError,
    FileDataset,
    list_files,
    read_list,
    read_png16,
    read_rgb,
)

LAYOUT = """\
kitti_depth/
  train/{drive}/proj_depth/groundtruth/image_02/{frame}.png   data_depth_annotated (16-bit, m = v / 256)
  val/{drive}/proj_depth/groundtruth/image_02/{frame}.png
  raw/{date}/{drive}/image_02/data/{frame}.png                KITTI raw RGB ({date} = drive[:10])
  raw/{date}/calib_cam_to_cam.txt                             focal = P_rect_02[0] (optional)
  eigen_train_files.txt, eigen_test_files.txt                 optional lists, one frame per line:
      2011_09_26/2011_09_26_drive_0002_sync/image_02/data/0000000069.png ..."""

KB_CROP = (352, 1216)         # (H, W), bottom-centred
DEFAULT_FOCAL = 721.5377      # P_rect_02[0] of the 2011_09_26 calibration
LISTS = {"train": "eigen_train_files.txt", "test": "eigen_test_files.txt"}
_LINE = re.compile(r"^(\d{4}_\d\d_\d\d)/(\1_drive_\d{4}_sync)/(image_0[23])/data/(\d+)\.png$")


def kb_crop(array, path):
    """KITTI benchmark crop of an HxW(xC) array: bottom 352 rows, centred 1216 columns."""
    h, w = array.shape[:2]
    ch, cw = KB_CROP
    if h < ch or w < cw:
        raise DataError(f"{path} is {h}x{w}, smaller than KITTI's {ch}x{cw} benchmark crop")
    left = (w - cw) // 2
    return array[h - ch:, left:left + cw]


@functools.lru_cache(maxsize=64)   # one file per recording date, read once
def read_focal(calib, camera):
    """P_rect_0X[0] (fx, pixels) of a calib_cam_to_cam.txt; errors name the file."""
    key = f"P_rect_{camera[-2:]}:"
    try:
        with open(calib) as f:
            for line in f:
                if line.startswith(key):
                    return float(line.split()[1])
    except (OSError, ValueError, IndexError) as exc:
        raise DataError(f"cannot read {calib}: {exc}") from None
    raise DataError(f"{calib}: no {key} line")


class KittiDepth(FileDataset):
    """KITTI annotated depth + raw RGB, Eigen lists when present (module docstring)."""

    key = "kitti_depth"
    folder = "kitti_depth"
    splits = ("train", "val", "test")
    labels = ("depth", "edges")
    layout = LAYOUT

    def index(self, split):
        listed = os.path.join(self.root, LISTS.get(split, ""))
        if split in LISTS and os.path.isfile(listed):
            return self._from_list(split, listed)
        if split == "test":
            raise DataError(f"kitti_depth split 'test' is the Eigen test list: missing file {listed}; "
                            f"expected layout:\n{LAYOUT}")
        return self._from_folder(split)

    def _from_folder(self, split):
        """Every annotated depth map of train/ or val/; its raw image must exist."""
        folder = os.path.join(self.root, split)
        maps = list_files(folder, ".png", f"annotated depth, {split}", LAYOUT)
        recs = []
        for rel in maps:
            parts = rel.split(os.sep)
            if len(parts) != 5 or parts[1:3] != ["proj_depth", "groundtruth"]:
                continue   # not a ground-truth map (e.g. a stray file): only the devkit tree counts
            drive, camera, frame = parts[0], parts[3], parts[4][:-4]
            rec = self._record(split, drive, camera, frame, os.path.join(folder, rel))
            if not os.path.isfile(rec["image"]):
                raise DataError(f"{rec['depth']}: its RGB image {rec['image']} is missing; expected "
                                f"layout:\n{LAYOUT}")
            recs.append(rec)
        return recs

    def _from_list(self, split, path):
        """Frames of an Eigen list whose image exists; those without annotated depth are skipped."""
        recs, skipped = [], 0
        for n, line in enumerate(read_list(path, LAYOUT), 1):
            m = _LINE.match(line.split()[0])
            if m is None:
                raise DataError(f"{path}, line {n}: {line.split()[0]!r} is not "
                                "{date}/{drive}/image_0X/data/{frame}.png")
            _, drive, camera, frame = m.groups()
            gt = [os.path.join(self.root, s, drive, "proj_depth", "groundtruth", camera, frame + ".png")
                  for s in ("train", "val")]
            rec = self._record(split, drive, camera, frame, next((g for g in gt if os.path.isfile(g)), None))
            if not os.path.isfile(rec["image"]):
                raise DataError(f"{path}, line {n}: image {rec['image']} is missing; expected layout:\n"
                                f"{LAYOUT}")
            if rec["depth"] is None:
                skipped += 1
                continue
            recs.append(rec)
        if skipped:
            warnings.warn(f"kitti_depth {split}: {skipped} frames of {path} have no annotated depth map "
                          "in train/ or val/ and are left out", stacklevel=2)
        return sorted(recs, key=lambda r: r["name"])

    def _record(self, split, drive, camera, frame, depth):
        date = drive[:10]
        return {"name": f"{self.key}/{split}/{drive}/{camera}/{frame}", "drive": drive, "camera": camera,
                "image": os.path.join(self.root, "raw", date, drive, camera, "data", frame + ".png"),
                "depth": depth, "calib": os.path.join(self.root, "raw", date, "calib_cam_to_cam.txt")}

    def load_image(self, rec):
        return kb_crop(read_rgb(rec["image"]), rec["image"])

    def load_depth(self, rec):
        """metres = value / 256, 0 = invalid; checked against the raw image size before the crop."""
        raw = read_png16(rec["depth"])
        with Image.open(rec["image"]) as img:   # header only: the size before the crop
            w, h = img.size
        if raw.shape != (h, w):
            raise DataError(f"{rec['depth']}: depth is {raw.shape[0]}x{raw.shape[1]} but its image "
                            f"{rec['image']} is {h}x{w}")
        return kb_crop(raw, rec["depth"]).astype("float32") / 256.0

    def focal(self, rec):
        if os.path.isfile(rec["calib"]):
            return read_focal(rec["calib"], rec["camera"])
        return DEFAULT_FOCAL


register(KittiDepth, "KITTI annotated depth + raw RGB, Eigen lists if present, KB crop 352x1216")
