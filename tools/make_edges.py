"""Write the edge proxy labels of a real dataset once, so training reads them instead of
computing them on every sample.

AT/DT's auxiliary decoder regresses grey-scale edges from an off-the-shelf detector
(AT/DT Sec. 4). By default each sample's edges come from lib.edges.detect_edges, the
detector the procedural data and the on-the-fly fallback use, computed on the image at its
native size (or at --resize H W, the size training resizes to: the detector's scales are in
pixels), and stored at the image's native size as an 8-bit grey PNG at exactly

    DATA_ROOT/<folder>/edges/<split>/<relative stem>.png      (FileDataset.edge_cache_path)

Loaders use a cached map whenever the file exists (FileDataset.load_raw) and otherwise
compute it on the fly (--edges compute), so with the built-in detector this tool only saves
time. With --edges cache (AT/DT's paper preset: external maps) loaders require the cache.
Files are written atomically and existing ones are skipped unless --overwrite, so an
interrupted run can simply be started again.

External edges (DexiNed, HED, ...): write each map as an 8- or 16-bit grey PNG at the path
above (edge strength, 0 = no edge, at the image's size), or let this tool import a folder of
them with --from-dir DIR. A record's map is looked up in DIR as <split>/<relative stem>.*,
then <relative stem>.*, then by file name stem anywhere under DIR (the record's stem, then
its image file's stem, e.g. aachen_000000_000019_leftImg8bit for DexiNed's outputs named
after the input); .png / .jpg / .jpeg files, 8- or 16-bit or RGB (converted to grey).
Maps are resized (bilinear) to the image size when they differ, and keep 16 bits when they
have them. DexiNed saves dark edges on white: pass --invert. Samples without a map are
counted and listed.

Usage:
    python tools/make_edges.py cityscapes --data-root DATA
    python tools/make_edges.py cityscapes --data-root DATA --splits train val --workers 8
    python tools/make_edges.py synthia --data-root DATA --resize 760 1280 --overwrite
    python tools/make_edges.py cityscapes --data-root DATA --from-dir dexined/ --invert

--out-dir writes the same tree elsewhere (e.g. a scratch disk); loaders read only
DATA_ROOT/<folder>/edges, so move or link it there afterwards. KITTI under --kitti-protocol
eigen keeps whole frames (no KB crop): its edges go to DATA_ROOT/kitti_depth/edges_eigen. Procedural datasets have no
files: their edges are always rendered with the scene, and this tool refuses them.

Exit status: 0 every sample has its edges, 1 some failed or had no external map, 2 bad flags
or a missing dataset folder (the expected layout is printed).
"""
import argparse
import os
import sys

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from check_dataset import first_line, open_split, resolve_root

from lib.data import get_entry
from lib.data import transforms as T
from lib.data.base import DataError, read_edges
from lib.edges import detect_edges
from lib.engine import UserError, atomic_write

EXTENSIONS = (".png", ".jpg", ".jpeg")
FIRST = 5              # failures named (all are counted)


def get_args_parser(add_help=True):
    parser = argparse.ArgumentParser(description=__doc__, add_help=add_help,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name", help="dataset name, as for --src / --tgt")
    parser.add_argument("--data-root", default=None, help="folder holding one sub-folder per dataset")
    parser.add_argument("--root", default=None,
                        help="the dataset's own folder (default: DATA_ROOT/<its folder>)")
    parser.add_argument("--splits", nargs="+", default=None, help="splits to process (default: all there)")
    parser.add_argument("--resize", type=int, nargs=2, default=None, metavar=("H", "W"),
                        help="detect edges at this size (the training --resize), store at native size")
    parser.add_argument("--out-dir", default=None, help="edges folder (default: DATASET_ROOT/edges)")
    parser.add_argument("--from-dir", default=None, help="import external edge maps from this folder")
    parser.add_argument("--invert", action="store_true", help="external maps are dark edges on white")
    parser.add_argument("--overwrite", action="store_true", help="replace existing edge files")
    parser.add_argument("--workers", type=int, default=0, help="DataLoader worker processes")
    parser.add_argument("--kitti-protocol", default=None, choices=["annotated", "eigen"],
                        help="kitti_depth: edges of the KB-cropped frames (annotated, default: DATASET_ROOT/"
                             "edges) or of the whole frames Eigen's protocol reads (eigen: DATASET_ROOT/edges_eigen)")
    return parser


# ----------------------------------------------------------------------------- edge maps
def compute_edges(image, resize=None):
    """detect_edges on a uint8 HxWx3 image (at `resize` if given), as float HxW at native size."""
    rgb = torch.tensor(image).permute(2, 0, 1).float() / 255.0      # a copy: PIL arrays are read-only
    if resize:
        rgb = T.resize_sample({"image": rgb}, resize)["image"]
    edges = detect_edges(rgb)
    if resize:   # back to the image's size: the cache must match it (load_raw checks)
        edges = T.resize_sample({"edges": edges}, image.shape[:2])["edges"]
    return edges.clamp(0, 1).numpy()


def import_edges(path, hw, invert=False):
    """An external map as (float HxW in [0, 1] at size hw, bit depth to store it with)."""
    edges = read_edges(path)
    if edges.ndim != 2:
        raise DataError(f"{path}: expected a grey edge map, got shape {edges.shape}")
    with Image.open(path) as img:
        bits = 16 if img.mode.startswith("I") else 8
    edges = 1.0 - edges if invert else edges
    if edges.shape != tuple(hw):
        edges = T.resize_sample({"edges": torch.from_numpy(edges)}, hw)["edges"].clamp(0, 1).numpy()
    return edges, bits


def write_edges(path, edges, bits=8):
    """Grey PNG of edges in [0, 1], written atomically (readers never see half a file)."""
    top = 65535 if bits == 16 else 255
    arr = np.clip(np.rint(edges * top), 0, top).astype(np.uint16 if bits == 16 else np.uint8)
    with atomic_write(path) as tmp:
        Image.fromarray(arr).save(tmp, format="PNG")


# ----------------------------------------------------------------------------- external maps
def index_external(folder):
    """Maps of `folder`: {relative path without extension: path} and {file stem: [paths]}."""
    if not os.path.isdir(folder):
        raise UserError(f"--from-dir {folder} is not a folder")
    by_rel, by_stem = {}, {}
    for dirpath, _, files in os.walk(folder):
        for f in sorted(files):
            stem, ext = os.path.splitext(f)
            if ext.lower() in EXTENSIONS:
                path = os.path.join(dirpath, f)
                by_rel[os.path.relpath(os.path.join(dirpath, stem), folder).replace(os.sep, "/")] = path
                by_stem.setdefault(stem, []).append(path)
    return by_rel, by_stem


def find_external(external, rec, split):
    """The external map of a record (see the module docstring for the order), or None."""
    by_rel, by_stem = external
    rel = rec["name"].split("/", 2)[2]
    for key in (f"{split}/{rel}", rel):
        if key in by_rel:
            return by_rel[key]
    image_stem = os.path.splitext(os.path.basename(rec["image"]))[0]
    for stem in (os.path.basename(rel), image_stem):
        paths = by_stem.get(stem, [])
        if len(paths) > 1:
            raise DataError(f"{rec['image']}: several external maps named {stem}: {', '.join(paths)}")
        if paths:
            return paths[0]
    return None


# ----------------------------------------------------------------------------- jobs
class EdgeJobs(torch.utils.data.Dataset):
    """One item per record: write (or import) its edge map; yields (status, message)."""

    def __init__(self, ds, args, external=None):
        self.ds, self.resize, self.overwrite = ds, args.resize, args.overwrite
        self.external, self.invert = external, args.invert

    def __len__(self):
        return len(self.ds.records)

    def __getitem__(self, index):
        rec = self.ds.records[index]
        path = self.ds.edge_cache_path(rec)
        if os.path.isfile(path) and not self.overwrite:
            return "skipped", path
        try:
            return self._make(rec, path)
        except (DataError, OSError, ValueError) as exc:
            return "failed", str(exc) if isinstance(exc, DataError) else f"{rec['image']}: {exc}"

    def _make(self, rec, path):
        image = self.ds.load_image(rec)
        if self.external is None:
            write_edges(path, compute_edges(image, self.resize))
            return "written", path
        src = find_external(self.external, rec, self.ds.split)
        if src is None:
            return "missing", f"{rec['image']}: no external edge map for {rec['name']}"
        write_edges(path, *import_edges(src, image.shape[:2], self.invert))
        return "written", path


def process_split(ds, args, external=None):
    """Run the jobs of one split with progress lines; returns {status: count} and failures."""
    jobs = EdgeJobs(ds, args, external)
    loader = torch.utils.data.DataLoader(jobs, batch_size=None, num_workers=args.workers)
    counts, failures = {"written": 0, "skipped": 0, "missing": 0, "failed": 0}, []
    every = max(1, len(jobs) // 10)
    for i, (status, message) in enumerate(loader, 1):
        counts[status] += 1
        if status in ("missing", "failed"):
            failures.append(message)
        if i % every == 0 or i == len(jobs):
            print(f"  {ds.split}: {i}/{len(jobs)} ({counts['written']} written, "
                  f"{counts['skipped']} skipped)", flush=True)
    return counts, failures


def open_splits(name, entry, root, args):
    """The FileDatasets to process; splits that are not there are skipped unless asked for."""
    out = []
    for split in args.splits or entry.splits:
        try:
            # No labels and no crop size: only records, images and edge_cache_path are used.
            out.append(open_split(entry, root, split, (1, 1), (), edges_dir=args.out_dir,
                                  kitti_protocol=getattr(args, "kitti_protocol", None)))
        except DataError as exc:
            if args.splits:
                raise
            print(f"  {split}: skipped, not there ({first_line(str(exc))})")
    if not out:
        raise UserError(f"dataset {name!r}: no split found under {root}")
    return out


def run(args):
    """Write the edges of every split; returns the exit status."""
    entry = get_entry(args.name, "NAME")
    if entry.folder is None:
        raise UserError(f"{args.name!r} is procedural: it has no files and renders its edges with "
                        "each scene; there is nothing to write")
    if "edges" not in entry.labels:
        raise UserError(f"dataset {args.name!r} does not provide edge labels")
    bad = [s for s in args.splits or () if s not in entry.splits]
    if bad:
        raise UserError(f"dataset {args.name!r} has no split {', '.join(bad)}; it has "
                        f"{', '.join(entry.splits)} (--splits)")
    root = resolve_root(args.name, entry, args.data_root, args.root)
    external = index_external(args.from_dir) if args.from_dir else None
    total, failures = {"written": 0, "skipped": 0, "missing": 0, "failed": 0}, []
    datasets = open_splits(args.name, entry, root, args)
    for ds in datasets:
        counts, fails = process_split(ds, args, external)
        total = {k: total[k] + counts[k] for k in total}
        failures += fails
    print(f"{args.name}: {total['written']} written, {total['skipped']} already there, "
          f"{total['missing']} without an external map, {total['failed']} failed; edges under "
          f"{datasets[0].edges_dir}")   # --out-dir, else the dataset's own (KITTI eigen: edges_eigen)
    for message in failures[:FIRST]:
        print(f"  {message}")
    return 1 if failures else 0


def main(argv=None):
    """Parse argv and run; returns the exit status (see the module docstring)."""
    args = get_args_parser().parse_args(argv)
    try:
        return run(args)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
