"""Cut the official ISPRS Potsdam / Vaihingen tiles into the patches the loaders read.

SemiMTL (Sec. 4.1): Potsdam is resized from its 5 cm to Vaihingen's 9 cm GSD (factor 5/9),
IRRG bands, nDSM normalised to [0, 1], 512x512 patches from a sliding window with 50% overlap
(stride 256). Per tile: the image is resized bilinearly, the colour labels with nearest
neighbour (no mixed colours), the nDSM bilinearly after its per-tile normalisation; windows
start every --stride pixels and one more window is aligned to the right / bottom border, so
every pixel is covered. The encodings are those of lib/data/isprs.py (colour labels as in the
official tiles; 16-bit nDSM v = 1 + round(h * 65534)).

Usage:
    python tools/prepare_isprs.py isprs_potsdam --data-root DATA                 # IRRG, x5/9
    python tools/prepare_isprs.py isprs_potsdam --data-root DATA --bands RGB
    python tools/prepare_isprs.py isprs_vaihingen --data-root DATA --splits train
Reads DATA/<dataset>/ (official tiles) and writes DATA/<dataset>/patches/{train,test}/.
"""
import argparse
import json
import os
import sys

import numpy as np
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from lib.data import isprs
from lib.data.base import DataError, read_rgb
from lib.engine import cli

DEFAULT_SCALE = {"isprs_potsdam": 5 / 9, "isprs_vaihingen": 1.0}


def get_args_parser(add_help=True):
    parser = argparse.ArgumentParser(description=__doc__, add_help=add_help,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset", choices=sorted(isprs.TILES))
    parser.add_argument("--data-root", required=True,
                        help="folder holding <dataset>/ with the official tiles")
    parser.add_argument("--splits", nargs="+", default=["train", "test"], choices=["train", "test"],
                        help="contest tile lists to prepare (test needs the complete labels)")
    parser.add_argument("--bands", default="IRRG", choices=["IRRG", "RGB"],
                        help="Potsdam orthophoto bands (SemiMTL: IRRG, like Vaihingen)")
    parser.add_argument("--scale", type=float, default=None,
                        help="resize factor (default: 5/9 for Potsdam's 5 cm -> 9 cm, 1 for Vaihingen)")
    parser.add_argument("--patch", type=int, default=512, help="patch side in pixels (SemiMTL: 512)")
    parser.add_argument("--stride", type=int, default=256, help="window step (SemiMTL: 256, 50%% overlap)")
    parser.add_argument("--tiles", nargs="+", default=None,
                        help="only these contest tile ids (e.g. 2_10 or 1; default: every tile of the split)")
    return parser


def window_starts(length, patch, stride):
    """Window offsets along one axis: every `stride`, plus one flush with the far border."""
    if length < patch:
        raise DataError(f"tile side {length} is smaller than --patch {patch}")
    starts = list(range(0, length - patch + 1, stride))
    if starts[-1] != length - patch:
        starts.append(length - patch)
    return starts


def _resized(array, scale, resample):
    """Resize an HxW(x3) array by `scale` with PIL (float heights in mode F)."""
    if scale == 1.0:
        return array
    h, w = array.shape[:2]
    img = Image.fromarray(array.astype(np.float32) if array.ndim == 2 else array)
    return np.asarray(img.resize((round(w * scale), round(h * scale)), resample))


def load_tile(key, root, tile, bands, scale):
    """(image, colour label, normalised height) of one tile at the target GSD."""
    paths = isprs.tile_paths(key, root, tile, bands)
    image, label = read_rgb(paths[0]), read_rgb(paths[1])
    height = isprs.normalise_height(isprs.read_height(paths[2]))
    for arr, path in ((label, paths[1]), (height, paths[2])):
        if arr.shape[:2] != image.shape[:2]:
            raise DataError(f"{path} is {arr.shape[0]}x{arr.shape[1]} but its image {paths[0]} is "
                            f"{image.shape[0]}x{image.shape[1]}")
    return (_resized(image, scale, Image.BILINEAR), _resized(label, scale, Image.NEAREST),
            _resized(height, scale, Image.BILINEAR))


def write_patches(out, prefix, arrays, patch, stride):
    """Save every window of (image, label, height) under out/{image,label,ndsm}/; returns the count."""
    image, label, height = arrays
    ys, xs = (window_starts(n, patch, stride) for n in image.shape[:2])
    for kind in ("image", "label", "ndsm"):
        os.makedirs(os.path.join(out, kind), exist_ok=True)
    for y in ys:
        for x in xs:
            win = (slice(y, y + patch), slice(x, x + patch))
            stem = f"{prefix}_{y:05d}_{x:05d}.png"
            Image.fromarray(image[win]).save(os.path.join(out, "image", stem))
            Image.fromarray(label[win]).save(os.path.join(out, "label", stem))
            Image.fromarray(isprs.encode_height(height[win])).save(os.path.join(out, "ndsm", stem))
    return len(ys) * len(xs)


def split_tiles(dataset, split, only):
    """The contest tiles of `split`, restricted to --tiles when given."""
    tiles = isprs.TILES[dataset][split]
    if only is None:
        return tiles
    unknown = sorted(set(only) - {t for ts in isprs.TILES[dataset].values() for t in ts})
    if unknown:
        raise DataError(f"--tiles: {unknown} are not {dataset} contest tiles")
    return tuple(t for t in tiles if t in only)


def main(args):
    root = os.path.join(args.data_root, args.dataset)
    if not os.path.isdir(root):
        raise DataError(f"folder {root} not found; expected layout:\n{isprs.isprs_layout(args.dataset)}")
    scale = DEFAULT_SCALE[args.dataset] if args.scale is None else args.scale
    if min(args.patch, args.stride) <= 0 or not scale > 0:
        raise DataError(f"--patch, --stride and --scale must be positive, got {args.patch}, {args.stride}, "
                        f"{scale}")
    info = {"dataset": args.dataset, "bands": args.bands if args.dataset == "isprs_potsdam" else "IRRG",
            "scale": scale, "patch": args.patch, "stride": args.stride, "tiles": {}}
    for split in args.splits:
        out = os.path.join(root, "patches", split)
        tiles = split_tiles(args.dataset, split, args.tiles)
        total = 0
        for tile in tiles:
            arrays = load_tile(args.dataset, root, tile, args.bands, scale)
            total += write_patches(out, isprs.tile_name(args.dataset, tile), arrays, args.patch, args.stride)
        info["tiles"][split] = list(tiles)
        print(f"{args.dataset} {split}: {total} patches from {len(tiles)} tiles in {out}")
    os.makedirs(os.path.join(root, "patches"), exist_ok=True)
    with open(os.path.join(root, "patches", "info.json"), "w") as f:
        json.dump(info, f, indent=1)


if __name__ == "__main__":
    cli(main, get_args_parser().parse_args())
