"""KITTI depth, under one of two scoring protocols (`--kitti-protocol`, docs/reference.md "KITTI"):

- `annotated` (default): the official annotated depth maps (data_depth_annotated) with RGB frames
  from KITTI raw, every frame cut to KITTI's benchmark crop (KB crop). The Eigen test list keeps
  the 652 of its 697 frames that have an annotated map.
- `eigen`: Eigen et al.'s protocol, the one of the prior work UM-Adapt's Table 4 compares with
  (Eigen, Godard, Zhou): the raw velodyne scan of each frame projected to the image, scored at
  its own resolution inside the Garg crop (the 80 m cap is --max-depth, 80 by default). All 697
  frames of the Eigen test list are kept.

Used by UM-Adapt (outdoor target, depth scored on the Eigen test split, Table 4).

Files (LAYOUT):
- depth, annotated: data_depth_annotated, {train,val}/{drive}/proj_depth/groundtruth/image_0{2,3}/
  {frame}.png, uint16, metres = value / 256, 0 = no measurement (KITTI depth devkit readme).
- depth, eigen: KITTI raw, raw/{date}/{drive}/velodyne_points/data/{frame}.bin, float32 rows of
  (x forward, y left, z up, reflectance) in the scanner's frame, projected with raw/{date}/
  calib_velo_to_cam.txt (R, T) and calib_cam_to_cam.txt (R_rect_00, P_rect_0{2,3}):
  project_velodyne() below.
- image: KITTI raw, raw/{date}/{drive}/image_0{2,3}/data/{frame}.png, with {date} the first 10
  characters of the drive name; the raw download unpacks to exactly this tree, so it is placed
  (or linked) as kitti_depth/raw/.
- focal: P_rect_0{2,3}[0] of raw/{date}/calib_cam_to_cam.txt; 721.5377 px (P_rect_02 of the
  2011_09_26 recordings) when the calibration file is absent (annotated protocol only: eigen
  needs it for the projection).

Splits: `train` is eigen_train_files.txt when that list exists, else the frames of the official
train/ folder; `val` is the frames of the official val/ folder; `test` is eigen_test_files.txt
(required). A list line is
    2011_09_26/2011_09_26_drive_0002_sync/image_02/data/0000000069.png [anything else]
(the first token is the RGB path relative to raw/; later tokens, as in the monodepth / BTS lists,
are ignored). Annotated: its depth map is looked for in train/ then val/, and listed frames
without one (45 of the 697 Eigen test frames) are left out with a warning, which gives the usual
652-frame "Eigen split, annotated ground truth" evaluation. Eigen: every listed frame is kept;
its velodyne scan and its date's two calibration files must exist.

Size: raw frames vary (1224x370 .. 1242x376). Annotated: every image and depth map is cut to
the KB crop (bottom 352 rows, centred 1216 columns), which gives equal batch shapes at evaluation
and drops the top rows the LiDAR never reaches; the crop keeps the focal length. Eigen: frames
keep their size; at evaluation the labels stay at it (native labels: only the image follows
--resize, predictions are upsampled to the label, one image at a time), and the depth outside
the Garg crop is set invalid. At training (UM-Adapt-S's labelled batches) the whole projected
scan is a label, resized with the image (nearest).
"""
import functools
import os
import re
import warnings

import numpy as np
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
  raw/{date}/{drive}/velodyne_points/data/{frame}.bin         KITTI raw LiDAR (--kitti-protocol eigen)
  raw/{date}/calib_cam_to_cam.txt                             focal = P_rect_02[0]; eigen: R_rect_00, P_rect_02
  raw/{date}/calib_velo_to_cam.txt                            eigen: R, T
  eigen_train_files.txt, eigen_test_files.txt                 optional lists, one frame per line:
      2011_09_26/2011_09_26_drive_0002_sync/image_02/data/0000000069.png ..."""

PROTOCOLS = {   # --kitti-protocol: the depth labels and where they are scored (module docstring)
    "annotated": "annotated depth maps, KB crop 352x1216",
    "eigen": "raw velodyne LiDAR projected to the image, Garg crop",
}
KB_CROP = (352, 1216)         # (H, W), bottom-centred
# Garg et al.'s crop, as fractions of the frame: rows top..bottom, columns left..right (the
# crop of Eigen-split evaluations since Garg et al. 2016: monodepth, monodepth2).
GARG_CROP = (0.40810811, 0.99189189, 0.03594771, 0.96405229)
DEFAULT_FOCAL = 721.5377      # P_rect_02[0] of the 2011_09_26 calibration
LISTS = {"train": "eigen_train_files.txt", "test": "eigen_test_files.txt"}
_LINE = re.compile(r"^(\d{4}_\d\d_\d\d)/(\1_drive_\d{4}_sync)/(image_0[23])/data/(\d+)\.png$")
_SCAN = ("--kitti-protocol eigen reads each frame's LiDAR scan raw/{date}/{drive}/velodyne_points/"
         "data/{frame}.bin (KITTI raw: float32 x, y, z, reflectance per point)")
_CALIB = ("--kitti-protocol eigen projects the scans with raw/{date}/calib_cam_to_cam.txt (R_rect_00, "
          "P_rect_02, P_rect_03) and raw/{date}/calib_velo_to_cam.txt (R, T), KITTI raw's calibration files")


def kb_crop(array, path):
    """KITTI benchmark crop of an HxW(xC) array: bottom 352 rows, centred 1216 columns."""
    h, w = array.shape[:2]
    ch, cw = KB_CROP
    if h < ch or w < cw:
        raise DataError(f"{path} is {h}x{w}, smaller than KITTI's {ch}x{cw} benchmark crop")
    left = (w - cw) // 2
    return array[h - ch:, left:left + cw]


def garg_box(h, w):
    """(top, bottom, left, right) of Garg et al.'s crop of an HxW frame: the fractions of
    GARG_CROP times H or W, truncated to integers as monodepth2's evaluation does (375x1242:
    rows 153..370, columns 44..1196)."""
    return (int(GARG_CROP[0] * h), int(GARG_CROP[1] * h), int(GARG_CROP[2] * w), int(GARG_CROP[3] * w))


def garg_crop(depth):
    """The depth map with every pixel outside Garg et al.'s crop set invalid (0)."""
    top, bottom, left, right = garg_box(*depth.shape[:2])
    out = np.zeros_like(depth)
    out[top:bottom, left:right] = depth[top:bottom, left:right]
    return out


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


def read_calib(path):
    """{key: float64 vector} of a KITTI calibration file (`key: v1 v2 ...` lines; lines that are
    not numbers, such as calib_time, are skipped). A missing file is a one-line error."""
    if not os.path.isfile(path):
        raise DataError(f"missing calibration file {path}; {_CALIB}")
    stat = os.stat(path)
    return _read_calib(path, stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=64)   # one file per recording date, read once (again if it changes)
def _read_calib(path, mtime, size):
    out = {}
    try:
        with open(path) as f:
            for line in f:
                key, sep, values = line.partition(":")
                try:
                    out[key.strip()] = np.array([float(v) for v in values.split()]) if sep else None
                except ValueError:
                    continue
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read {path}: {exc}") from None
    return out


def calib_matrix(path, key, shape):
    """Entry `key` of a calibration file reshaped to `shape`; a missing or short entry names both."""
    values = read_calib(path).get(key)
    if values is None or values.size != int(np.prod(shape)):
        raise DataError(f"{path}: no '{key}:' line of {int(np.prod(shape))} numbers; {_CALIB}")
    return values.reshape(shape)


def read_velodyne(path):
    """(N, 4) float32 points (x forward, y left, z up, reflectance) of a KITTI raw velodyne .bin."""
    if not os.path.isfile(path):
        raise DataError(f"missing velodyne scan {path}; {_SCAN}")
    try:
        data = np.fromfile(path, dtype="<f4")
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read {path}: {exc}") from None
    if data.size % 4:
        raise DataError(f"{path}: {data.size * 4} bytes are not whole 16-byte points; {_SCAN}")
    return data.reshape(-1, 4)


def project_velodyne(points, velo_to_cam, r_rect, p_rect, shape):
    """HxW float32 depth (metres, 0 = no point) of a velodyne scan: Eigen et al.'s ground truth.

    points: (N, >= 3) x, y, z in the scanner's frame; velo_to_cam: 3x4 [R | T] of
    calib_velo_to_cam.txt; r_rect: 3x3 R_rect_00 and p_rect: 3x4 P_rect_0X of
    calib_cam_to_cam.txt. Each point goes through P_rect @ R_rect @ [R | T] to (u z, v z, z); its
    depth is z (the rectified camera's depth, plus P_rect[2, 3]). Points behind the scanner
    (x < 0, as the devkit drops them) or the camera (z <= 0) are dropped. The pixel is (round(v) - 1,
    round(u) - 1): the devkit's MATLAB code projects to 1-based pixels, and the Eigen-split
    evaluations built on it (Eigen, monodepth, monodepth2) shift by one the same way. Where
    several points land on one pixel the nearest one is kept."""
    h, w = shape
    rect, velo = np.eye(4), np.eye(4)
    rect[:3, :3] = np.reshape(r_rect, (3, 3))
    velo[:3, :] = np.reshape(velo_to_cam, (3, 4))
    proj = np.reshape(p_rect, (3, 4)) @ rect @ velo                     # (3, 4): scanner -> image
    pts = np.asarray(points, np.float64)[:, :3]
    pts = pts[np.isfinite(pts).all(1) & (pts[:, 0] >= 0)]
    uvz = pts @ proj[:, :3].T + proj[:, 3]                              # (N, 3): u z, v z, z
    uvz = uvz[uvz[:, 2] > 0]
    z = uvz[:, 2]
    u = np.round(uvz[:, 0] / z) - 1
    v = np.round(uvz[:, 1] / z) - 1
    inside = (u >= 0) & (v >= 0) & (u < w) & (v < h)                  # before any integer cast
    u, v, z = u[inside].astype(np.int64), v[inside].astype(np.int64), z[inside]
    order = np.argsort(z, kind="stable")                                # nearest first
    pixel = (v * w + u)[order]
    first = np.unique(pixel, return_index=True)[1]                      # each pixel's nearest point
    depth = np.zeros(h * w, np.float32)
    depth[pixel[first]] = z[order][first]
    return depth.reshape(h, w)


class KittiDepth(FileDataset):
    """KITTI depth + raw RGB under --kitti-protocol annotated | eigen (module docstring)."""

    key = "kitti_depth"
    folder = "kitti_depth"
    splits = ("train", "val", "test")
    labels = ("depth", "edges")
    layout = LAYOUT
    own_options = ("kitti_protocol",)   # lib.data.register passes it to this dataset only

    def __init__(self, root, split, size, kitti_protocol=None, **options):
        self.kitti_protocol = kitti_protocol or "annotated"
        if self.kitti_protocol not in PROTOCOLS:
            raise DataError(f"--kitti-protocol must be {' or '.join(PROTOCOLS)}, got {kitti_protocol!r}")
        if self.eigen:
            # Eigen's protocol scores the scan at its own resolution: only the image follows
            # --resize and predictions are upsampled to the label (lib.evaluation).
            options["native_labels"] = not options.get("train")
            if root is not None and not options.get("edges_dir"):
                # full frames, not KB crops: their edge maps cannot share the annotated cache
                options["edges_dir"] = os.path.join(root, "edges_eigen")
        super().__init__(root, split, size, **options)

    @property
    def eigen(self):
        return self.kitti_protocol == "eigen"

    @property
    def depth_protocol(self):
        """The protocol in words, for metrics.json and the console (lib.evaluation.depth_protocol)."""
        return f"{self.kitti_protocol} ({PROTOCOLS[self.kitti_protocol]})"

    def index(self, split):
        listed = os.path.join(self.root, LISTS.get(split, ""))
        if split in LISTS and os.path.isfile(listed):
            recs = self._from_list(split, listed)
        elif split == "test":
            raise DataError(f"kitti_depth split 'test' is the Eigen test list: missing file {listed}; "
                            f"expected layout:\n{LAYOUT}")
        else:
            recs = self._from_folder(split)
        if self.eigen and "depth" in self.want:
            self._check_scans(recs)
        return recs

    def _from_folder(self, split):
        """The frames of every annotated depth map of train/ or val/; its raw image must exist."""
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
                raise DataError(f"{rec['annotated']}: its RGB image {rec['image']} is missing; expected "
                                f"layout:\n{LAYOUT}")
            recs.append(rec)
        return recs

    def _from_list(self, split, path):
        """Frames of an Eigen list whose image exists. Annotated: those without an annotated
        depth map are skipped (with a warning); eigen: all are kept (their scans are checked)."""
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
                          "in train/ or val/ and are left out (--kitti-protocol eigen keeps them)",
                          stacklevel=2)
        return sorted(recs, key=lambda r: r["name"])

    def _check_scans(self, recs):
        """Eigen: every frame's velodyne scan and its date's calibration files, before any work."""
        for rec in recs:
            for path, why in ((rec["calib"], _CALIB), (rec["velo_calib"], _CALIB), (rec["velodyne"], _SCAN)):
                if not os.path.isfile(path):
                    what = "velodyne scan" if path == rec["velodyne"] else "calibration file"
                    raise DataError(f"{rec['name']}: missing {what} {path}; {why}")

    def _record(self, split, drive, camera, frame, annotated):
        date = drive[:10]
        raw = os.path.join(self.root, "raw", date)
        velodyne = os.path.join(raw, drive, "velodyne_points", "data", frame + ".bin")
        return {"name": f"{self.key}/{split}/{drive}/{camera}/{frame}", "drive": drive, "camera": camera,
                "image": os.path.join(raw, drive, camera, "data", frame + ".png"),
                "annotated": annotated, "velodyne": velodyne,
                "depth": velodyne if self.eigen else annotated,
                "calib": os.path.join(raw, "calib_cam_to_cam.txt"),
                "velo_calib": os.path.join(raw, "calib_velo_to_cam.txt")}

    def load_image(self, rec):
        image = read_rgb(rec["image"])
        return image if self.eigen else kb_crop(image, rec["image"])

    def load_depth(self, rec):
        """Metres, 0 = invalid. Annotated: value / 256, checked against the raw image size before
        the KB crop. Eigen: the projected scan (project_velodyne) at the image's size, outside
        Garg's crop invalid at evaluation."""
        with Image.open(rec["image"]) as img:   # header only: the size before any crop
            w, h = img.size
        if self.eigen:
            return self.lidar_depth(rec, (h, w))
        raw = read_png16(rec["depth"])
        if raw.shape != (h, w):
            raise DataError(f"{rec['depth']}: depth is {raw.shape[0]}x{raw.shape[1]} but its image "
                            f"{rec['image']} is {h}x{w}")
        return kb_crop(raw, rec["depth"]).astype("float32") / 256.0

    def lidar_depth(self, rec, shape):
        """The frame's velodyne scan projected to its camera; Garg-cropped unless training."""
        camera = rec["camera"][-2:]
        velo_to_cam = np.hstack([calib_matrix(rec["velo_calib"], "R", (3, 3)),
                                 calib_matrix(rec["velo_calib"], "T", (3, 1))])
        depth = project_velodyne(read_velodyne(rec["velodyne"]), velo_to_cam,
                                 calib_matrix(rec["calib"], "R_rect_00", (3, 3)),
                                 calib_matrix(rec["calib"], f"P_rect_{camera}", (3, 4)), shape)
        return depth if self.train else garg_crop(depth)

    def focal(self, rec):
        if os.path.isfile(rec["calib"]):
            return read_focal(rec["calib"], rec["camera"])
        return DEFAULT_FOCAL


register(KittiDepth, "KITTI depth + raw RGB, Eigen lists if present: --kitti-protocol annotated (annotated "
                     "maps, KB crop 352x1216) or eigen (raw LiDAR, Garg crop)")
