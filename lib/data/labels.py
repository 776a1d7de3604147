"""Cityscapes label table and the class maps used by the five papers.

Every map is a 256-entry int64 lookup table (LUT): ``lut[source_id]`` is the class index,
255 means ignore. Apply one with ``apply_map(lut, ids)`` on torch tensors or numpy arrays.

    CITYSCAPES_TO[k]   Cityscapes labelId -> k-class index, k in 19, 16, 13, 7, 11
    SYNTHIA_TO[k]      SYNTHIA-RAND-CITYSCAPES id -> k-class index, k in 16, 7
    TRAIN19_TO[k]      19-class trainId -> k-class index, k in 16, 13, 7, 11
                       (score a 19-class model on a smaller class set)
    remap_16_to_13     16-class index -> 13-class index
    TRAINID_TO_LABELID_19   19-class trainId -> Cityscapes labelId (for writing predictions)
    CLASS_NAMES[k]     the k class names, in index order

Class sets (docs/reference.md, "Class maps"):
- 19: the standard Cityscapes trainIds.
- 16: the SYNTHIA benchmark classes (19 without terrain, truck, train), in the order of DADA's
  official SYNTHIA table. SYNTHIA_TO[16] is that table (dada/dataset/synthia.py); the Cityscapes
  table is ours, built from the 16 names (the official code reads it from
  dada/dataset/cityscapes_list/info16class.json, which we have not read).
- 13: the 16 without wall, fence, pole (DADA's mIoU*).
- 7: DADA's categories (Table 2; Sec. 4.1: the 7 common to SYNTHIA, Cityscapes and Vistas,
  following SPIGAN). SYNTHIA_TO[7] is the official table (dada/dataset/synthia.py); the
  Cityscapes table is ours: the official code has no 7-class Cityscapes configuration (its
  Cityscapes configs run 16 classes), so each class goes to its Cityscapes category, caravan
  and trailer included. Vistas' table is lib/data/mapillary.py's (the official one).
- 11: AT/DT's shared classes. Two choices the paper leaves open are fixed here:
  'vehicle' is car + motorcycle, as in the official code's cityscapes2carla table (the paper
  text also names bicycle, which the official code ignores: we follow the code so that
  scores compare with the published ones), and 'person' is person only (rider is
  ignored, as in the official code).
"""
from collections import namedtuple

import numpy as np
import torch

IGNORE_INDEX = 255
LUT_SIZE = 256

# Same fields and values as cityscapesScripts/helpers/labels.py.
Label = namedtuple(
    "Label",
    ["name", "id", "trainId", "category", "catId", "hasInstances", "ignoreInEval", "color"],
)

LABELS = (
    # name                   id  trainId  category      catId  inst   ignore  color
    Label("unlabeled",             0, 255, "void",         0, False, True,  (0, 0, 0)),
    Label("ego vehicle",           1, 255, "void",         0, False, True,  (0, 0, 0)),
    Label("rectification border",  2, 255, "void",         0, False, True,  (0, 0, 0)),
    Label("out of roi",            3, 255, "void",         0, False, True,  (0, 0, 0)),
    Label("static",                4, 255, "void",         0, False, True,  (0, 0, 0)),
    Label("dynamic",               5, 255, "void",         0, False, True,  (111, 74, 0)),
    Label("ground",                6, 255, "void",         0, False, True,  (81, 0, 81)),
    Label("road",                  7,   0, "flat",         1, False, False, (128, 64, 128)),
    Label("sidewalk",              8,   1, "flat",         1, False, False, (244, 35, 232)),
    Label("parking",               9, 255, "flat",         1, False, True,  (250, 170, 160)),
    Label("rail track",           10, 255, "flat",         1, False, True,  (230, 150, 140)),
    Label("building",             11,   2, "construction", 2, False, False, (70, 70, 70)),
    Label("wall",                 12,   3, "construction", 2, False, False, (102, 102, 156)),
    Label("fence",                13,   4, "construction", 2, False, False, (190, 153, 153)),
    Label("guard rail",           14, 255, "construction", 2, False, True,  (180, 165, 180)),
    Label("bridge",               15, 255, "construction", 2, False, True,  (150, 100, 100)),
    Label("tunnel",               16, 255, "construction", 2, False, True,  (150, 120, 90)),
    Label("pole",                 17,   5, "object",       3, False, False, (153, 153, 153)),
    Label("polegroup",            18, 255, "object",       3, False, True,  (153, 153, 153)),
    Label("traffic light",        19,   6, "object",       3, False, False, (250, 170, 30)),
    Label("traffic sign",         20,   7, "object",       3, False, False, (220, 220, 0)),
    Label("vegetation",           21,   8, "nature",       4, False, False, (107, 142, 35)),
    Label("terrain",              22,   9, "nature",       4, False, False, (152, 251, 152)),
    Label("sky",                  23,  10, "sky",          5, False, False, (70, 130, 180)),
    Label("person",               24,  11, "human",        6, True,  False, (220, 20, 60)),
    Label("rider",                25,  12, "human",        6, True,  False, (255, 0, 0)),
    Label("car",                  26,  13, "vehicle",      7, True,  False, (0, 0, 142)),
    Label("truck",                27,  14, "vehicle",      7, True,  False, (0, 0, 70)),
    Label("bus",                  28,  15, "vehicle",      7, True,  False, (0, 60, 100)),
    Label("caravan",              29, 255, "vehicle",      7, True,  True,  (0, 0, 90)),
    Label("trailer",              30, 255, "vehicle",      7, True,  True,  (0, 0, 110)),
    Label("train",                31,  16, "vehicle",      7, True,  False, (0, 80, 100)),
    Label("motorcycle",           32,  17, "vehicle",      7, True,  False, (0, 0, 230)),
    Label("bicycle",              33,  18, "vehicle",      7, True,  False, (119, 11, 32)),
    Label("license plate",        -1,  -1, "vehicle",      7, False, True,  (0, 0, 142)),
)

NAME_TO_LABEL = {label.name: label for label in LABELS}
ID_TO_LABEL = {label.id: label for label in LABELS}

# Each class of a set is a tuple of Cityscapes label names; the class name comes first.
_CLASSES_19 = tuple(
    (label.name,) for label in sorted(LABELS, key=lambda lab: lab.trainId)
    if 0 <= label.trainId < 19
)
_CLASSES_16 = tuple(c for c in _CLASSES_19 if c[0] not in ("terrain", "truck", "train"))
_CLASSES_13 = tuple(c for c in _CLASSES_16 if c[0] not in ("wall", "fence", "pole"))
_CLASSES_7 = (
    ("flat", "road", "sidewalk"),
    ("construction", "building", "wall", "fence"),
    ("object", "pole", "traffic light", "traffic sign"),
    ("nature", "vegetation", "terrain"),
    ("sky", "sky"),
    ("human", "person", "rider"),
    # Ours: the DADA paper names the 7 categories only, and the official code has no 7-class
    # Cityscapes configuration to copy (configs_s2c run 16 classes). Each class is its
    # Cityscapes category; vehicle takes labelIds 26..33, so caravan and trailer count here
    # although the 19-class benchmark ignores them.
    ("vehicle", "car", "truck", "bus", "caravan", "trailer", "train", "motorcycle", "bicycle"),
)
_CLASSES_11 = (
    ("road",),
    ("sidewalk",),
    ("wall",),
    ("fence",),
    ("person",),  # rider ignored (official AT/DT code)
    ("pole",),
    ("vegetation",),
    ("vehicle", "car", "motorcycle"),  # not bicycle: the official code ignores it (docstring)
    ("traffic sign", "traffic sign", "traffic light"),
    ("building",),
    ("sky",),
)
_CLASS_SETS = {19: _CLASSES_19, 16: _CLASSES_16, 13: _CLASSES_13, 7: _CLASSES_7, 11: _CLASSES_11}

CLASS_NAMES = {k: tuple(c[0] for c in classes) for k, classes in _CLASS_SETS.items()}


def _members(cls):
    """Cityscapes label names of one class: a single-name class is its own member."""
    return cls[1:] if len(cls) > 1 else cls


def _freeze(lut):
    """Return an int64 LUT as a read-only numpy array, so no caller edits a shared table."""
    lut = np.asarray(lut, dtype=np.int64)
    lut.setflags(write=False)
    return lut


def _lut_from_pairs(pairs, fill=IGNORE_INDEX):
    """Build a 256-entry LUT from (source id, class index) pairs."""
    lut = np.full(LUT_SIZE, fill, dtype=np.int64)
    for source, target in pairs:
        lut[source] = target
    return _freeze(lut)


def _cityscapes_lut(classes):
    """LUT from Cityscapes labelIds to the index of the class that lists the label."""
    return _lut_from_pairs(
        (NAME_TO_LABEL[name].id, index)
        for index, cls in enumerate(classes)
        for name in _members(cls)
    )


CITYSCAPES_TO = {k: _cityscapes_lut(classes) for k, classes in _CLASS_SETS.items()}

# SYNTHIA-RAND-CITYSCAPES ids, DADA's official tables (dada/dataset/synthia.py, id_to_trainid).
_SYNTHIA_16 = {
    3: 0, 4: 1, 2: 2, 21: 3, 5: 4, 7: 5, 15: 6, 9: 7,
    6: 8, 1: 9, 10: 10, 17: 11, 8: 12, 19: 13, 12: 14, 11: 15,
}
# 7 classes, as DADA's 7-class dict: every id it does not list is ignored, among them wall (21),
# rider (17), bus (19), motorcycle (12) and terrain (16), whose Cityscapes counterparts count.
_SYNTHIA_7 = {
    3: 0, 4: 0, 22: 0,  # flat
    2: 1, 5: 1,  # construction
    7: 2, 9: 2, 15: 2,  # object
    6: 3,  # nature
    1: 4,  # sky
    10: 5,  # human
    8: 6, 11: 6,  # vehicle
}
SYNTHIA_TO = {16: _lut_from_pairs(_SYNTHIA_16.items()), 7: _lut_from_pairs(_SYNTHIA_7.items())}

# trainId -> labelId; values that are not a class become 0 ('unlabeled'), because
# cityscapesScripts' evaluator rejects ids it does not know, such as 255.
TRAINID_TO_LABELID_19 = _lut_from_pairs(
    ((label.trainId, label.id) for label in LABELS if 0 <= label.trainId < 19), fill=0
)

# Maps from the 19 trainIds: go back to the labelId, then through the smaller set's map.
TRAIN19_TO = {
    k: _freeze(np.where(
        np.arange(LUT_SIZE) < 19, CITYSCAPES_TO[k][TRAINID_TO_LABELID_19], IGNORE_INDEX
    ))
    for k in (16, 13, 7, 11)
}

remap_16_to_13 = _lut_from_pairs(
    (CLASS_NAMES[16].index(name), index) for index, name in enumerate(CLASS_NAMES[13])
)


def _apply_map_torch(lut, ids):
    """apply_map() for a torch tensor: the table moves to the ids' device."""
    if ids.is_floating_point() or ids.is_complex():
        raise TypeError(f"apply_map expects integer ids, got a {ids.dtype} tensor")
    # torch.tensor copies, so a read-only numpy table is fine here.
    table = lut if isinstance(lut, torch.Tensor) else torch.tensor(lut)
    table = table.to(ids.device, torch.int64)
    index = ids.to(torch.int64)
    valid = (index >= 0) & (index < table.numel())
    mapped = table[index.clamp(0, table.numel() - 1)]
    return torch.where(valid, mapped, torch.full_like(mapped, IGNORE_INDEX))


def _apply_map_numpy(lut, ids):
    """apply_map() for a numpy array (or anything np.asarray accepts)."""
    ids = np.asarray(ids)
    if not np.issubdtype(ids.dtype, np.integer):
        raise TypeError(f"apply_map expects integer ids, got a {ids.dtype} array")
    table = lut.cpu().numpy() if isinstance(lut, torch.Tensor) else np.asarray(lut)
    table = table.astype(np.int64)
    index = ids.astype(np.int64)
    valid = (index >= 0) & (index < table.size)
    mapped = table[np.clip(index, 0, table.size - 1)]
    return np.where(valid, mapped, IGNORE_INDEX)


def apply_map(lut, ids):
    """Map integer ids through a LUT; ids outside the table (or negative) become 255.

    ``ids`` is a torch integer tensor (the result stays on its device) or a numpy integer
    array, of any shape; the result is int64 of the same kind.
    """
    if isinstance(ids, torch.Tensor):
        return _apply_map_torch(lut, ids)
    return _apply_map_numpy(lut, ids)
