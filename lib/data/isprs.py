"""ISPRS Potsdam and Vaihingen (2D semantic labelling contest), as used by SemiMTL (Sec. 4, Table 2).

docs/reference.md ("ISPRS Potsdam and Vaihingen"): IRRG tiles, 6-class colour-coded labels, nDSM
heights normalised to [0, 1]; SemiMTL resizes Potsdam to Vaihingen's 9 cm GSD and cuts 512x512
patches with a 50% overlapping sliding window. Decoding a 6000x6000 Potsdam tile for every sample
would dominate training time, so the loaders read patches that tools/prepare_isprs.py cuts once
from the official tiles (the tile readers below are shared by both):

    python tools/prepare_isprs.py isprs_potsdam --data-root DATA      # IRRG, x5/9, 512 / 256
    python tools/prepare_isprs.py isprs_vaihingen --data-root DATA

Labels:
- semantic: colour-coded RGB, as in the official label tiles (COLOURS); a colour outside the
  table decodes to id 6 and is ignored (255), so tools/check_dataset.py counts it.
- depth: NOT metres. It is the nDSM height above ground, min-max normalised per tile to [0, 1]
  (SemiMTL, Sec. 4.1), stored as a 16-bit PNG v = 1 + round(h * 65534) and decoded v / 65535.
  The offset keeps ground (h = 0) a valid label under the sample contract's "0 = invalid"
  (v = 0 is never written). Ground decodes to 1/65535, below the scorers' --min-depth (1e-3):
  that floor leaves it out of the ratio metrics, which are undefined at zero height, while
  train_semimtl.py scores RMSE over every labelled pixel, ground included (docs/semimtl.md).
  evaluate.py --checkpoint takes the run's RMSE floor (rmse_min_depth) and counts it too;
  evaluate.py --pred-dir, which has no run, scores RMSE above --min-depth.
  What is assumed of the official nDSM files (read_height): any grey image PIL reads (8- or
  16-bit, float TIFF, or grey saved as RGB: the first channel), one height per pixel, the
  value linear in the height above ground, no no-data code (every pixel is a label), and the
  ground at the tile's minimum; the per-tile min-max makes the file's offset and unit
  irrelevant. Only pixels exactly at that minimum become ground (1/65535). An 8-bit tile of
  range R grey levels quantises heights to steps of 1/R >= 1/255 (0.0039 > --min-depth), so
  a ground pixel the file stores k levels above the minimum (lossy compression: the Potsdam
  nDSMs are JPEGs; or the DSM - DTM residual of flat ground) decodes to the small height
  k / R, and Potsdam's bilinear 5/9 resampling (tools/prepare_isprs.py) leaves intermediate
  heights along roof edges. Nothing snaps those to ground (no official tile was read here,
  so no noise level is assumed): RMSE counts them at their value, as it counts every
  labelled pixel; the ratio metrics count them as tiny heights, which inflate AbR; a larger
  --min-depth (above k / R) leaves them out of the ratio metrics only (docs/semimtl.md,
  "ISPRS ground"; tests/test_data_others.py, test_8bit_ndsm_ground_noise_is_a_small_height_not_ground).
- edges: from the edge cache or computed from the image (lib/data/base.py).

Splits: the contest's train / test tiles (TILES, from the contest pages and the label packages:
the "for participants" labels cover exactly the train tiles). `val` is `test`: the benchmark has
no validation split and SemiMTL reports on the test tiles.
"""
import os

import numpy as np
from PIL import Image

from lib.data import register
from lib.data.base import (
    IGNORE,
    DataError,
    FileDataset,
    list_files,
    read_png16,
    read_rgb,
)

CLASSES = ("impervious surfaces", "building", "low vegetation", "tree", "car", "clutter")
# Official colour code of the label tiles, in CLASSES order.
COLOURS = ((255, 255, 255), (0, 0, 255), (0, 255, 255), (0, 255, 0), (255, 255, 0), (255, 0, 0))
UNKNOWN_COLOUR = len(COLOURS)   # id of any other colour (ignored)

# Contest tile ids (ISPRS 2D semantic labelling contest; train = tiles with labels for participants).
TILES = {
    "isprs_potsdam": {
        "train": ("2_10", "2_11", "2_12", "3_10", "3_11", "3_12", "4_10", "4_11", "4_12", "5_10",
                  "5_11", "5_12", "6_7", "6_8", "6_9", "6_10", "6_11", "6_12", "7_7", "7_8", "7_9",
                  "7_10", "7_11", "7_12"),
        "test": ("2_13", "2_14", "3_13", "3_14", "4_13", "4_14", "4_15", "5_13", "5_14", "5_15",
                 "6_13", "6_14", "6_15", "7_13"),
    },
    "isprs_vaihingen": {
        "train": tuple(str(n) for n in (1, 3, 5, 7, 11, 13, 15, 17, 21, 23, 26, 28, 30, 32, 34, 37)),
        "test": tuple(str(n) for n in (2, 4, 6, 8, 10, 12, 14, 16, 20, 22, 24, 27, 29, 31, 33, 35, 38)),
    },
}

PATCH_LAYOUT = """\
  patches/{{split}}/image/{{tile}}_{{y}}_{{x}}.png    splits train, test (val = test); written by
  patches/{{split}}/label/{{tile}}_{{y}}_{{x}}.png    python tools/prepare_isprs.py {key} --data-root DATA
  patches/{{split}}/ndsm/{{tile}}_{{y}}_{{x}}.png     (colour labels; 16-bit nDSM, see lib/data/isprs.py)"""
TILE_LAYOUTS = {
    "isprs_potsdam": """\
isprs_potsdam/                         official tiles ({a}_{b} as in 2_10):
  3_Ortho_IRRG/top_potsdam_{a}_{b}_IRRG.tif                       (--bands IRRG, SemiMTL)
  2_Ortho_RGB/top_potsdam_{a}_{b}_RGB.tif                         (--bands RGB)
  5_Labels_all/top_potsdam_{a}_{b}_label.tif                      (or 5_Labels_for_participants/: train only)
  1_DSM_normalisation/dsm_potsdam_{aa}_{bb}_normalized_lastools.jpg   ({aa}_{bb} zero-padded: 02_10)
""",
    "isprs_vaihingen": """\
isprs_vaihingen/                       official tiles ({n} as in 1):
  top/top_mosaic_09cm_area{n}.tif                                 (IRRG)
  gts_complete/top_mosaic_09cm_area{n}.tif                        (complete ground truth package;
  gts_for_participants/top_mosaic_09cm_area{n}.tif                 or the participants' labels: train only)
  ndsm/ndsm_09cm_matching_area{n}.bmp                             (nDSM of Gerke, 2015)
""",
}


def isprs_layout(key):
    """The patch layout and the official tiles it is prepared from, for error messages."""
    return TILE_LAYOUTS[key] + PATCH_LAYOUT.format(key=key)


def tile_name(key, tile):
    """Prefix of the patches cut from a tile: 'top_potsdam_2_10' or 'area1'."""
    return f"top_potsdam_{tile}" if key == "isprs_potsdam" else f"area{tile}"


def _first_existing(paths, what, key):
    for path in paths:
        if os.path.isfile(path):
            return path
    raise DataError(f"missing {what} file {paths[0]}" + (f" (or {', '.join(paths[1:])})" if paths[1:] else "")
                    + f"; expected layout:\n{isprs_layout(key)}")


def tile_paths(key, root, tile, bands="IRRG"):
    """(image, label, nDSM) paths of one official tile; a missing file is an error naming it."""
    if key == "isprs_potsdam":
        if bands not in ("IRRG", "RGB"):
            raise DataError(f"isprs_potsdam: --bands must be IRRG or RGB, not {bands!r}")
        ortho = "3_Ortho_IRRG" if bands == "IRRG" else "2_Ortho_RGB"
        image = [os.path.join(root, ortho, f"top_potsdam_{tile}_{bands}.tif")]
        labels = [os.path.join(root, d, f"top_potsdam_{tile}_label.tif")
                  for d in ("5_Labels_all", "5_Labels_for_participants")]
        a, b = tile.split("_")
        ndsm = [os.path.join(root, "1_DSM_normalisation",
                             f"dsm_potsdam_{int(a):02d}_{int(b):02d}_normalized_lastools.jpg")]
    else:
        name = f"top_mosaic_09cm_area{tile}.tif"
        image = [os.path.join(root, "top", name)]
        labels = [os.path.join(root, d, name) for d in ("gts_complete", "gts_for_participants")]
        ndsm = [os.path.join(root, "ndsm", f"ndsm_09cm_matching_area{tile}.bmp")]
    return (_first_existing(image, "image", key), _first_existing(labels, "label", key),
            _first_existing(ndsm, "nDSM", key))


def decode_colours(rgb):
    """HxWx3 colour-coded label -> int64 HxW ids 0..5 (COLOURS order), UNKNOWN_COLOUR elsewhere."""
    rgb = np.asarray(rgb)
    ids = np.full(rgb.shape[:2], UNKNOWN_COLOUR, dtype=np.int64)
    for index, colour in enumerate(COLOURS):
        ids[np.all(rgb == np.asarray(colour, dtype=rgb.dtype), axis=-1)] = index
    return ids


def read_height(path):
    """An nDSM tile (8/16-bit grey, float TIFF or a grey image saved as RGB) as float64 HxW."""
    if not os.path.isfile(path):
        raise DataError(f"missing file: {path}")
    try:
        with Image.open(path) as img:
            img.load()
            arr = np.asarray(img, dtype=np.float64)
    except (OSError, ValueError, Image.DecompressionBombError) as exc:  # truncated, foreign, huge
        raise DataError(f"cannot read {path}: {exc.__class__.__name__}: {exc}") from None
    return arr[..., 0] if arr.ndim == 3 else arr


def normalise_height(height):
    """Min-max normalisation of one tile's nDSM to [0, 1] (SemiMTL Sec. 4.1); a flat tile gives 0."""
    height = np.asarray(height, dtype=np.float64)
    lo, hi = float(height.min()), float(height.max())
    return np.zeros_like(height) if hi <= lo else (height - lo) / (hi - lo)


def encode_height(h01):
    """[0, 1] heights -> uint16 1 + round(h * 65534): 0 stays free to mean 'no data'."""
    return (1 + np.round(np.clip(h01, 0.0, 1.0) * 65534)).astype(np.uint16)


def decode_height(v):
    """Inverse of encode_height up to rounding: v / 65535, 0 (no data) stays 0 = invalid."""
    return (np.asarray(v, dtype=np.float64) / 65535.0).astype(np.float32)


class _IsprsPatches(FileDataset):
    """Patches of an ISPRS dataset written by tools/prepare_isprs.py (module docstring)."""

    splits = ("train", "val", "test")
    labels = ("semantic", "depth", "edges")
    class_sets = (len(CLASSES),)
    known_ids = range(len(CLASSES))
    _kinds = (("semantic", "label"), ("depth", "ndsm"))   # label -> patch sub-folder

    def index(self, split):
        folder = "test" if split == "val" else split
        base = os.path.join(self.root, "patches", folder)
        if not os.path.isdir(base):
            raise DataError(f"missing folder {base}: cut the official tiles into patches first with "
                            f"`python tools/prepare_isprs.py {self.key} --data-root DATA`; expected "
                            f"layout:\n{self.layout}")
        images = list_files(os.path.join(base, "image"), ".png", "image patches", self.layout)
        return [self._record(folder, base, rel[:-4]) for rel in images]

    def _record(self, folder, base, stem):
        image = os.path.join(base, "image", stem + ".png")
        rec = {"name": f"{self.key}/{folder}/{stem}", "image": image}
        for label, kind in self._kinds:
            if label in self.want:
                rec[label] = os.path.join(base, kind, stem + ".png")
                if not os.path.isfile(rec[label]):
                    raise DataError(f"{image}: its {kind} patch {rec[label]} is missing; expected "
                                    f"layout:\n{self.layout}")
        return rec

    def label_ids(self, rec):
        return decode_colours(read_rgb(rec["semantic"]))

    def label_lut(self):
        lut = np.full(256, IGNORE, dtype=np.int64)
        lut[:len(CLASSES)] = np.arange(len(CLASSES))
        return lut

    def class_names(self):
        return CLASSES

    def load_depth(self, rec):
        """Normalised nDSM height in (0, 1] (not metres, module docstring); 0 = no data."""
        return decode_height(read_png16(rec["depth"]))


class IsprsPotsdam(_IsprsPatches):
    """Potsdam (5 cm GSD tiles, prepared at 9 cm by default), 6 classes + normalised nDSM."""

    key = folder = "isprs_potsdam"
    layout = isprs_layout("isprs_potsdam")


class IsprsVaihingen(_IsprsPatches):
    """Vaihingen (9 cm GSD IRRG tiles), 6 classes + normalised nDSM."""

    key = folder = "isprs_vaihingen"
    layout = isprs_layout("isprs_vaihingen")


register(IsprsPotsdam, "ISPRS Potsdam patches (tools/prepare_isprs.py): 6 classes + normalised nDSM")
register(IsprsVaihingen, "ISPRS Vaihingen patches (tools/prepare_isprs.py): 6 classes + normalised nDSM")
