"""Dataset registry: `--src NAME` / `--tgt NAME` resolve here (DESIGN.md, "Datasets").

DATASETS maps a name to a DatasetEntry: a builder called as
builder(split=..., size=..., root=..., seed=..., length=..., labels=...), the labels the
dataset can provide, and whether it needs files under --data-root. Real datasets
register themselves next to the procedural ones.
"""
import os
from dataclasses import dataclass

from lib.engine import UserError

ALL_LABELS = ("semantic", "depth", "normals", "edges")


@dataclass(frozen=True)
class DatasetEntry:
    builder: callable
    labels: tuple
    folder: str = None          # sub-folder of --data-root; None: needs no files
    splits: tuple = ("train", "val", "test")
    num_classes: int = None
    description: str = ""


def _procedural(domain):
    """Builder for one domain of the embedded procedural benchmark."""
    def build(split, size, root=None, seed=0, length=None, labels=ALL_LABELS):
        from lib.data.procedural import ProceduralScenes
        return ProceduralScenes(domain=domain, split=split, size=tuple(size), seed=seed,
                                length=length, labels=tuple(labels))
    return build


DATASETS = {
    "proc-a": DatasetEntry(_procedural("a"), ALL_LABELS, num_classes=11,
                           description="procedural streets, synthetic-looking domain (no files)"),
    "proc-b": DatasetEntry(_procedural("b"), ALL_LABELS, num_classes=11,
                           description="procedural streets, real-looking domain (no files)"),
}


def get_entry(name, flag="--src/--tgt"):
    """The registry entry of a dataset name, or a one-line error listing the known names."""
    if name not in DATASETS:
        known = ", ".join(sorted(DATASETS))
        raise UserError(f"unknown dataset {name!r} for {flag}; known datasets: {known}")
    return DATASETS[name]


def dataset_root(name, data_root, flag="--data-root"):
    """DATA_ROOT/<folder> of a file-based dataset, checked to exist."""
    entry = get_entry(name)
    if entry.folder is None:
        return None
    if data_root is None:
        raise UserError(f"dataset {name!r} reads files: pass {flag} DIR, the folder holding "
                        f"{entry.folder}/")
    root = os.path.join(data_root, entry.folder)
    if not os.path.isdir(root):
        raise UserError(f"dataset {name!r} expects its files under {root} ({flag} {data_root}); "
                        "see the README's data section for the layout")
    return root


def require_labels(name, needed, role="--src"):
    """Stop at once when a dataset cannot provide a label a script needs from it."""
    entry = get_entry(name, role)
    missing = [lab for lab in needed if lab not in entry.labels]
    if missing:
        raise UserError(f"dataset {name!r} ({role}) has no {', '.join(missing)} labels, which "
                        f"this script needs from {role}; choose another {role}")


def build_dataset(name, split, size=(128, 256), data_root=None, seed=0, length=None,
                  labels=ALL_LABELS, role="--src/--tgt"):
    """Build split `split` of dataset `name` yielding the sample dict of DESIGN.md."""
    entry = get_entry(name, role)
    if split not in entry.splits:
        raise UserError(f"dataset {name!r} has no split {split!r}; it has {', '.join(entry.splits)}")
    require_labels(name, labels, role)
    root = dataset_root(name, data_root)
    return entry.builder(split=split, size=size, root=root, seed=seed, length=length,
                         labels=tuple(labels))
