"""Save a picture of dataset samples and their labels: one row per sample,
image | semantic | depth | normals | edges (the labels the dataset has).

Usage:
    python tools/show_dataset.py --datasets proc-a proc-b --num 3 --out docs/procedural.png
    python tools/show_dataset.py --datasets cityscapes --data-root DATA --split val
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from lib import engine, vis  # noqa: E402
from lib.data import build_dataset, get_entry  # noqa: E402
from lib.data.transforms import denormalize  # noqa: E402


def get_args_parser(add_help=True):
    parser = argparse.ArgumentParser(description=__doc__, add_help=add_help,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", default=["proc-a", "proc-b"])
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--split", default="train")
    parser.add_argument("--size", type=int, nargs=2, default=[128, 256], metavar=("H", "W"))
    parser.add_argument("--num", type=int, default=3, help="samples per dataset")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="docs/procedural.png")
    return parser


def sample_row(sample, num_classes):
    """Colour tiles of one sample: image then each label it carries."""
    row = [vis.to_rgb_uint8(denormalize(sample["image"]))]
    if "semantic" in sample:
        row.append(vis.colorize_semantic(sample["semantic"], num_classes))
    if "depth" in sample:
        row.append(vis.colorize_depth(sample["depth"]))
    if "normals" in sample:
        row.append(vis.colorize_normals(sample["normals"]))
    if "edges" in sample:
        row.append(vis.colorize_gray(sample["edges"]))
    return row


def main(args):
    rows = []
    for name in args.datasets:
        entry = get_entry(name, "--datasets")
        data = build_dataset(name, args.split, args.size, args.data_root, seed=args.seed,
                             labels=entry.labels, role="--datasets")
        rows += [sample_row(data[i], entry.num_classes) for i in range(min(args.num, len(data)))]
    vis.save_png(vis.make_panel(rows), args.out)
    print(f"wrote {args.out} ({len(rows)} rows)")


if __name__ == "__main__":
    engine.cli(main, get_args_parser().parse_args())
