"""Dataset registry: `--src NAME` / `--tgt NAME` resolve here (docs/design.md, "Datasets").

DATASETS maps a name to a DatasetEntry: a builder called as
builder(split=..., size=..., root=..., seed=..., length=..., labels=..., **options), the labels
the dataset can provide, and whether it needs files under --data-root. Real datasets are
FileDataset subclasses (lib/data/base.py), one module each, registered with register().

options (all datasets): classes (class-map size), train (random crop / flip / photometric
active), resize (H, W), flip, photometric, focal_ref (rescale depth to this focal length),
edges (compute | cache: where edge labels come from), native_labels (evaluation at the labels'
own resolution), image_resample (bilinear | bicubic: how resize resamples the image; bicubic is
the official DADA code's PIL resize, train_dada.py's paper preset). Options of one dataset family (DATASET_OPTIONS: kitti_protocol, annotated |
eigen for kitti_depth; carla_focal, the focal length in pixels of the CARLA renders) reach the classes that name them in `own_options` and are dropped for
the others, so a script passes them whatever its datasets are.
"""
import importlib
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
    class_sets: tuple = ()
    layout: str = ""            # the expected folder tree, shown when it is missing
    cls: type = None            # the FileDataset subclass of a real dataset


def _procedural(domain):
    """Builder for one domain of the embedded procedural benchmark."""
    def build(split, size, root=None, seed=0, length=None, labels=ALL_LABELS, classes=None,
              resize=None, focal_ref=None, edges="compute", native_labels=False, kitti_protocol=None,
              carla_focal=None, image_resample=None, **augment):
        # `edges`, `native_labels`, `kitti_protocol`, `carla_focal` and `image_resample` are
        # ignored: the benchmark renders images and labels at its size, with its own cameras.
        from lib.data.procedural import ProceduralScenes
        if classes not in (None, 11):
            raise UserError(f"proc-{domain} has the 11 AT/DT classes only, not --classes {classes}")
        size = tuple(resize or size)   # rendered at the training size: nothing to crop
        data = ProceduralScenes(domain=domain, split=split, size=size, seed=seed,
                                length=length, labels=tuple(labels))
        if focal_ref or (augment.get("train") and (augment.get("flip") or augment.get("photometric"))):
            from lib.data.procedural import camera
            focal = camera(domain, size).focal
            return _Augmented(data, focal_ref / focal if focal_ref else None, **augment)
        return data
    return build


class _Augmented:
    """Flip / photometric augmentation and focal rescaling on top of the procedural scenes."""

    def __init__(self, data, depth_factor, train=False, flip=False, photometric=False):
        self.data, self.depth_factor = data, depth_factor
        self.train, self.flip, self.photometric = train, flip, photometric

    def __len__(self):
        return len(self.data)

    def __getitem__(self, index):
        from lib.data import transforms as T
        sample = dict(self.data[index])
        if self.train and (self.flip or self.photometric):
            sample["image"] = T.denormalize(sample["image"])
            sample = T.paired_transform(sample, sample["image"].shape[-2:], train=True,
                                        flip=self.flip, photometric=self.photometric)
            sample["image"] = T.normalize(sample["image"])
        if self.depth_factor and "depth" in sample:
            sample["depth"] = sample["depth"] * self.depth_factor
            sample["depth_scale"] = 1.0 / self.depth_factor
        return sample


DATASETS = {
    "proc-a": DatasetEntry(_procedural("a"), ALL_LABELS, num_classes=11, class_sets=(11,),
                           description="procedural streets, synthetic-looking domain (no files)"),
    "proc-b": DatasetEntry(_procedural("b"), ALL_LABELS, num_classes=11, class_sets=(11,),
                           description="procedural streets, real-looking domain (no files)"),
}


# Options of one dataset family: given to the classes that list them in `own_options`, dropped
# for the others (data_options passes them for every dataset of a run).
DATASET_OPTIONS = ("kitti_protocol", "carla_focal")


def register(cls, description):
    """Add a FileDataset subclass to DATASETS under cls.key."""
    foreign = [k for k in DATASET_OPTIONS if k not in getattr(cls, "own_options", ())]

    def build(split, size, root=None, seed=0, length=None, labels=(), **options):
        for key in foreign:
            options.pop(key, None)
        return cls(root, split, size, labels=labels, length=length, seed=seed, **options)
    DATASETS[cls.key] = DatasetEntry(
        build, tuple(cls.labels), folder=cls.folder, splits=tuple(cls.splits),
        num_classes=cls.class_sets[0] if cls.class_sets else None, description=description,
        class_sets=tuple(cls.class_sets), layout=cls.layout or "", cls=cls)
    return cls


def get_entry(name, flag="--src/--tgt"):
    """The registry entry of a dataset name, or a one-line error listing the known names."""
    if name not in DATASETS:
        known = ", ".join(sorted(DATASETS))
        raise UserError(f"unknown dataset {name!r} for {flag}; known datasets: {known}")
    return DATASETS[name]


def dataset_root(name, data_root, flag="--data-root", root=None):
    """DATA_ROOT/<folder> (or an explicit per-dataset root) of a file-based dataset, checked."""
    entry = get_entry(name)
    if entry.folder is None:
        return None
    if root is not None:
        if not os.path.isdir(root):
            raise UserError(f"dataset {name!r}: folder {root} not found")
        return root
    layout = f"; expected layout:\n{entry.layout}" if entry.layout else ""
    if data_root is None:
        raise UserError(f"dataset {name!r} reads files: pass {flag} DIR, the folder holding "
                        f"{entry.folder}/{layout}")
    root = os.path.join(data_root, entry.folder)
    if not os.path.isdir(root):
        raise UserError(f"dataset {name!r} expects its files under {root} ({flag} {data_root})"
                        f"{layout or '; see docs/reference.md (Datasets)'}")
    return root


def require_labels(name, needed, role="--src"):
    """Stop at once when a dataset cannot provide a label a script needs from it."""
    entry = get_entry(name, role)
    missing = [lab for lab in needed if lab not in entry.labels]
    if missing:
        raise UserError(f"dataset {name!r} ({role}) has no {', '.join(missing)} labels, which "
                        f"this script needs from {role}; choose another {role}")


def resolve_classes(datasets, classes=None):
    """The one class map of a run, fixed before anything trains: --classes when every dataset
    with semantic labels has it, else their shared default, else the only map they share.

    datasets: (name, flag) pairs, e.g. [("carla", "--src"), ("cityscapes", "--tgt")]; those
    without semantic labels, or whose maps come from their files (folder), do not constrain."""
    sets = {}
    for name, flag in datasets:
        entry = get_entry(name, flag)
        if "semantic" in entry.labels and entry.class_sets:
            sets.setdefault(name, (flag, entry.class_sets))
    if classes is not None:
        for name, (flag, have) in sets.items():
            if classes not in have:
                raise UserError(f"--classes {classes}: {flag} {name} has the class maps "
                                f"{', '.join(map(str, have))}; choose one they all have")
        return classes
    if not sets:
        return None
    first = [have[0] for _, have in sets.values()]
    if len(set(first)) == 1:
        return first[0]
    maps = [have for _, have in sets.values()]
    common = [c for c in maps[0] if all(c in have for have in maps[1:])]
    names = " and ".join(f"{flag} {name} ({', '.join(map(str, have))})" for name, (flag, have) in sets.items())
    if len(common) == 1:
        return common[0]
    if not common:
        raise UserError(f"{names} share no class map: their semantic labels cannot be compared")
    raise UserError(f"{names} share the class maps {', '.join(map(str, common))}: choose one "
                    "with --classes")


def build_dataset(name, split, size=(128, 256), data_root=None, seed=0, length=None,
                  labels=ALL_LABELS, role="--src/--tgt", root=None, **options):
    """Build split `split` of dataset `name` yielding the sample dict (docs/design.md, "The sample contract").

    options: classes, train, resize, flip, photometric, focal_ref (module docstring)."""
    entry = get_entry(name, role)
    if split not in entry.splits:
        raise UserError(f"dataset {name!r} has no split {split!r}; it has {', '.join(entry.splits)}")
    require_labels(name, labels, role)
    root = dataset_root(name, data_root, root=root)
    return entry.builder(split=split, size=size, root=root, seed=seed, length=length,
                         labels=tuple(labels), **options)


def data_options(args, role):
    """The build_dataset options given by the shared data flags (lib/args.py) for --src/--tgt."""
    return {"root": getattr(args, f"{role}_root", None), "classes": args.classes,
            "resize": args.resize, "flip": args.flip, "photometric": args.photometric,
            "focal_ref": args.focal_ref, "edges": getattr(args, "edges", "compute"),
            "kitti_protocol": getattr(args, "kitti_protocol", None),
            "carla_focal": getattr(args, "carla_focal", None)}


# Real datasets, one module each; importing a module registers it.
_MODULES = ("cityscapes", "synthia", "carla", "gta5", "synscapes", "mapillary", "isprs",
            "nyuv2", "kitti", "folder")
for _m in _MODULES:
    importlib.import_module(f"lib.data.{_m}")
