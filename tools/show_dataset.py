"""Save a picture of dataset samples and their labels: one row per sample,
image | semantic | depth | normals | edges (the labels the dataset has).

By default every label the dataset has on disk is shown; a label whose files were not
downloaded (a semantic-only Cityscapes has no disparity/) is left out with a note, as
tools/check_dataset.py reports it. --labels asks for labels: one that is not on disk is an
error naming the missing folder.

Usage:
    python tools/show_dataset.py --datasets proc-a proc-b --num 3 --out docs/procedural.png
    python tools/show_dataset.py --datasets cityscapes --data-root DATA --split val
    python tools/show_dataset.py --datasets cityscapes --data-root DATA --labels semantic depth
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from check_dataset import first_line, unavailable_reason  # noqa: E402

from lib import engine, vis  # noqa: E402
from lib.data import build_dataset, get_entry  # noqa: E402
from lib.data.base import DataError  # noqa: E402
from lib.data.transforms import denormalize  # noqa: E402
from lib.engine import UserError  # noqa: E402


def get_args_parser(add_help=True):
    """The command-line flags."""
    parser = argparse.ArgumentParser(description=__doc__, add_help=add_help,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", default=["proc-a", "proc-b"])
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--split", default="train")
    parser.add_argument("--labels", nargs="+", default=None, metavar="LABEL",
                        help="labels to show (default: every label the dataset has on disk); "
                        "one that is not on disk is an error")
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


def open_dataset(name, args):
    """The split with the asked labels, or by default with every label it has on disk.

    Labels the split lacks by design or that were never downloaded are left out with a note;
    a label folder that exists but misses files stops with the dataset's own error, since a
    picture without it would hide a broken download."""
    entry = get_entry(name, "--datasets")
    bad = [lab for lab in args.labels or () if lab not in entry.labels]
    if bad:
        raise UserError(f"dataset {name!r} has no {', '.join(bad)} labels (--labels); it has "
                        f"{', '.join(entry.labels)}")

    def build(labels):
        return build_dataset(name, args.split, args.size, args.data_root, seed=args.seed,
                             labels=tuple(labels), role="--datasets")
    if args.labels:
        return build(args.labels)     # asked for: a missing label is the dataset's error
    try:
        return build(entry.labels)
    except DataError:
        bare = build(())              # the split itself must open
    image = bare.records[0]["image"] if getattr(bare, "records", None) else None
    have = []
    for lab in entry.labels:
        try:
            build((lab,))
            have.append(lab)
        except DataError as exc:
            why = unavailable_reason(str(exc), bare.root, image)
            if why["missing_files"] and not why["absent"]:
                raise
            state = "not present" if why["absent"] else "not available"
            print(f"{name} {args.split}: {lab} {state} ({first_line(str(exc))})")
    return build(have)


def main(args):
    """Build each dataset, colour --num samples per dataset, write one panel to --out."""
    rows = []
    for name in args.datasets:
        data = open_dataset(name, args)
        classes = getattr(data, "classes", None) or get_entry(name).num_classes
        rows += [sample_row(data[i], classes) for i in range(min(args.num, len(data)))]
    vis.save_png(vis.make_panel(rows), args.out)
    print(f"wrote {args.out} ({len(rows)} rows)")


if __name__ == "__main__":
    engine.cli(main, get_args_parser().parse_args())
