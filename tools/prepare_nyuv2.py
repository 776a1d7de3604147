"""Export the NYU Depth v2 labelled subset (one MATLAB v7.3 .mat) to the folder layout of lib/data/nyuv2.py.

Inputs (official / standard files):
- nyu_depth_v2_labeled.mat (NYU Depth v2 page, "Labeled dataset"): an HDF5 file, read with h5py
  (optional dependency: pip install h5py). Used: images, depths (in-painted, metres), labels
  (894 raw classes, 0 = unlabelled). MATLAB stores arrays column-major, so h5py sees them
  transposed: images N x 3 x W x H, depths / labels N x W x H.
- classMapping40.mat (github.com/ankurhanda/nyuv2-meta-data): mapClass, raw class 1..894 ->
  NYU-40 class. Read with scipy.io (pip install scipy), or give a text file of the 894 values.
- splits.mat (NYU toolbox): trainNdxs / testNdxs, 1-based (795 / 654). Read with scipy.io, or
  give a text file of the 654 test indices (1-based, one per line): the other frames are train.
Normals are estimated from depth (lib.data.nyuv2.normals_from_depth: local plane fit, NYU
intrinsics) unless --no-normals; the loader then estimates them on the fly instead.

Usage:
    python tools/prepare_nyuv2.py --mat nyu_depth_v2_labeled.mat --mapping classMapping40.mat \\
        --splits splits.mat --out DATA/nyuv2
"""
import argparse
import os
import sys

import numpy as np
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from lib.data.base import DataError
from lib.data.nyuv2 import encode_normals, normals_from_depth
from lib.engine import cli

NUM_RAW_CLASSES = 894


def get_args_parser(add_help=True):
    parser = argparse.ArgumentParser(description=__doc__, add_help=add_help,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mat", required=True, help="nyu_depth_v2_labeled.mat (MATLAB v7.3)")
    parser.add_argument("--mapping", required=True, help="classMapping40.mat, or a text file of 894 ids")
    parser.add_argument("--splits", required=True, help="splits.mat, or a text file of the test indices")
    parser.add_argument("--out", required=True, help="output folder, e.g. DATA/nyuv2")
    parser.add_argument("--no-normals", action="store_true", help="skip the normal estimation")
    parser.add_argument("--radius", type=int, default=3, help="plane-fit window radius for normals")
    return parser


def _loadmat(path, what):
    try:
        from scipy.io import loadmat
    except ImportError:
        raise DataError(f"reading {path} ({what}) needs scipy: pip install scipy, or pass a text "
                        "file instead (see --help)") from None
    try:
        return loadmat(path)
    except (OSError, ValueError, NotImplementedError) as exc:
        raise DataError(f"cannot read {path}: {exc}") from None


def _text_ints(path):
    try:
        return np.loadtxt(path, dtype=np.int64, ndmin=1).ravel()
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read {path} as a list of integers: {exc}") from None


def read_mapping(path):
    """LUT raw class (0..894) -> NYU-40 class (0 = unlabelled stays 0)."""
    if path.endswith(".mat"):
        mat = _loadmat(path, "894 -> 40 class mapping")
        if "mapClass" not in mat:
            raise DataError(f"{path}: no 'mapClass' variable (expected classMapping40.mat)")
        values = np.asarray(mat["mapClass"]).ravel().astype(np.int64)
    else:
        values = _text_ints(path)
    if values.size != NUM_RAW_CLASSES or values.min() < 0 or values.max() > 40:
        raise DataError(f"{path}: expected {NUM_RAW_CLASSES} values in 0..40, got {values.size} "
                        f"in {values.min()}..{values.max()}")
    return np.concatenate([[0], values])


def read_splits(path, count):
    """{frame index (1-based): 'train' | 'test'} from splits.mat or a text list of test indices."""
    if path.endswith(".mat"):
        mat = _loadmat(path, "train / test split")
        if "testNdxs" not in mat:
            raise DataError(f"{path}: no 'testNdxs' variable (expected the NYU toolbox splits.mat)")
        test = np.asarray(mat["testNdxs"]).ravel()
    else:
        test = _text_ints(path)
    if test.size == 0 or test.min() < 1 or test.max() > count or len(set(test.tolist())) != test.size:
        raise DataError(f"{path}: test indices must be distinct and in 1..{count}")
    test = set(test.tolist())
    return {i: "test" if i in test else "train" for i in range(1, count + 1)}


def open_mat(path):
    """The images, depths and labels arrays of the official v7.3 .mat (through h5py)."""
    try:
        import h5py
    except ImportError:
        raise DataError(f"{path} is a MATLAB v7.3 (HDF5) file: tools/prepare_nyuv2.py reads it with "
                        "h5py, which is not installed: pip install h5py") from None
    if not os.path.isfile(path):
        raise DataError(f"missing file: {path}")
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise DataError(f"cannot read {path} as HDF5 (MATLAB v7.3): {exc}") from None
    missing = [k for k in ("images", "depths", "labels") if k not in f]
    if missing:
        raise DataError(f"{path}: no {', '.join(missing)} dataset (expected nyu_depth_v2_labeled.mat)")
    return f["images"], f["depths"], f["labels"]


def write_frame(out, split, index, image, depth, label40, radius, normals=True):
    """One frame in the loader's encodings: depth mm uint16, label40 uint8, normals uint8 RGB."""
    stem = f"{index:05d}.png"
    dirs = {k: os.path.join(out, split, k) for k in ("image", "depth", "label40", "normals")}
    for k, d in dirs.items():
        if k != "normals" or normals:
            os.makedirs(d, exist_ok=True)
    Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8)).save(os.path.join(dirs["image"], stem))
    mm = np.round(np.clip(np.nan_to_num(depth), 0, 65.535) * 1000).astype(np.uint16)
    Image.fromarray(mm).save(os.path.join(dirs["depth"], stem))
    Image.fromarray(label40.astype(np.uint8)).save(os.path.join(dirs["label40"], stem))
    if normals:
        n = normals_from_depth(mm.astype(np.float64) / 1000.0, radius=radius)
        Image.fromarray(encode_normals(n)).save(os.path.join(dirs["normals"], stem))


def export(images, depths, labels, mapping, splits, out, normals=True, radius=3):
    """Write every frame; arrays in the .mat's transposed order (N x 3 x W x H, N x W x H)."""
    count = len(images)
    for i in range(count):
        raw = np.asarray(labels[i]).T.astype(np.int64)
        if raw.max() > NUM_RAW_CLASSES or raw.min() < 0:
            raise DataError(f"frame {i + 1}: label values outside 0..{NUM_RAW_CLASSES}")
        write_frame(out, splits[i + 1], i + 1, np.asarray(images[i]).transpose(2, 1, 0),
                    np.asarray(depths[i], dtype=np.float64).T, mapping[raw], radius, normals)
        if (i + 1) % 100 == 0 or i + 1 == count:
            print(f"{i + 1}/{count} frames written to {out}")


def main(args):
    images, depths, labels = open_mat(args.mat)
    mapping = read_mapping(args.mapping)
    splits = read_splits(args.splits, len(images))
    export(images, depths, labels, mapping, splits, args.out, not args.no_normals, args.radius)


if __name__ == "__main__":
    cli(main, get_args_parser().parse_args())
