"""Driving datasets (cityscapes, synthia, carla, gta5, synscapes) read from tiny official trees.

Each test writes a tree into pytest's tmp_path with tests/trees.py (the official names, bit
depths and encodings of docs/reference.md, "Datasets"), with hand-made label arrays in it, and
checks the decoded values against numbers worked out by hand: class indices through every
class map, depth in metres, 16-bit channels, split membership and the errors on bad input.
"""
import json
import os

import numpy as np
import pytest

from lib.data import build_dataset
from lib.data.base import DataError
from lib.data.carla import Carla
from lib.data.cityscapes import Cityscapes
from lib.data.gta5 import GTA5
from lib.data.synscapes import Synscapes
from lib.data.synthia import Synthia
from lib.engine import UserError
from tests import trees

H, W = 8, 12
X = 255      # ignore


def build(name, root, split="train", labels=("semantic",), **options):
    return build_dataset(name, split, size=(H, W), data_root=str(root), labels=labels, **options)


# ----------------------------------------------------------------------------- hand-made labels
# The trees come from tests/trees.py at H x W, with the label arrays below written into them.
# Cityscapes labelIds written in row 0 of every Cityscapes-encoded label below (W = 12 values),
# and the class index each gets, per class map, worked out from the published id lists:
#         road sidew wall light terr sky rider car truck carav moto bicyc
CS_IDS = [7, 8, 12, 19, 22, 23, 25, 26, 27, 29, 32, 33]
CS_EXPECTED = {
    19: [0, 1, 3, 6, 9, 10, 12, 13, 14, X, 17, 18],
    16: [0, 1, 3, 6, X, 9, 11, 12, X, X, 14, 15],
    13: [0, 1, X, 3, X, 6, 8, 9, X, X, 11, 12],
    7: [0, 0, 1, 2, 3, 4, 5, 6, 6, 6, 6, 6],
    11: [0, 1, 2, 8, X, 10, X, 7, X, X, 7, X],
}
UNKNOWN_ID = 200     # not a labelId: must become 255 under every map


def cs_label():
    ids = np.zeros((H, W), np.uint8)
    ids[0] = CS_IDS
    ids[1, 0] = UNKNOWN_ID
    return ids


def cityscapes_tree(root, split="train", frames=("aachen/aachen_000000_000019",), disparity=None):
    """Camera b = 0.25 m, fx = 2000 px; disparity p = 257 (d = 1 px: 500 m) unless given."""
    return trees.cityscapes(root, frames, (H, W), (split,), labels=cs_label(), camera=(0.25, 2000.0),
                            disparity=np.full((H, W), 257) if disparity is None else disparity)


# SYNTHIA ids (first channel) and their 16- and 7-class indices (the SYNTHIA lists of DADA's official code).
# 264 = 256 + 8 and 1027 = 4 * 256 + 3 are not SYNTHIA ids: kept 16-bit they are ignored,
# while either 8-bit truncation (low or high byte) would turn them into classes.
SYN_IDS = [[3, 4, 2, 21, 5, 7, 15, 9, 6, 1, 10, 17],
           [8, 19, 12, 11, 22, 264, 1027, 0, 0, 0, 0, 0]]
SYN_EXPECTED = {16: [[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11], [12, 13, 14, 15, X, X, X, X, X, X, X, X]],
                7: [[0, 0, 1, X, 1, 2, 2, 2, 3, 4, 5, X], [6, X, X, 6, 0, X, X, X, X, X, X, X]]}


def synthia_label():
    lab = np.zeros((H, W, 3), np.int64)
    lab[:2, :, 0] = SYN_IDS
    lab[..., 1] = 777            # instance ids: must not leak into the class
    lab[..., 2] = 65535
    return lab


def synthia_tree(root, n=1, depth_channels=3, depth_cm=None):
    """Depth 1234 cm unless given; 3 channels: [cm, 42, 7], so only the first may be read."""
    cm = np.full((H, W), 1234) if depth_cm is None else np.asarray(depth_cm)
    depth = np.stack([cm, np.full_like(cm, 42), np.full_like(cm, 7)], -1) if depth_channels == 3 else cm
    return trees.synthia(root, n, (H, W), labels=synthia_label(), depth=depth, depth_channels=depth_channels)


# CARLA tags in the red channel (row 0: tags 0..11, row 1: tag 12, an unknown tag 20, and a
# far-plane pixel tagged road) and their 11-class indices (AT/DT; road 0 sidewalk 1 wall 2
# fence 3 person 4 pole 5 vegetation 6 vehicle 7 traffic sign 8 building 9 sky 10).
CARLA_TAGS = [[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11], [12, 20, 7]]
CARLA_EXPECTED = [[X, 9, 3, X, 4, 5, 0, 0, 1, 6, 7, 2], [8, X, 10]]
# 24-bit depth (R, G, B) of row 0, and the far plane at row 1, column 2.
CARLA_RGB = [(0, 0, 0), (1, 0, 0), (0, 1, 0), (0, 0, 1), (12, 34, 56), (255, 255, 254)]


def carla_semantic():
    sem = np.random.default_rng(1).integers(0, 256, (H, W, 3)).astype(np.uint8)   # noise in G, B
    sem[..., 0] = 0
    sem[0, :12, 0] = CARLA_TAGS[0]
    sem[1, :3, 0] = CARLA_TAGS[1]
    return sem


def carla_depth():
    depth = np.zeros((H, W, 3), np.uint8)
    depth[..., 0] = 100
    depth[0, :6] = CARLA_RGB
    depth[1, 2] = (255, 255, 255)
    return depth


def carla_tree(root, split="train", n=1):
    return trees.carla(root, n, (H, W), (split,), semantic=carla_semantic(), depth=carla_depth())


def gta5_tree(root, n=1):
    return trees.gta5(root, n, (H, W), ("train",), labels=cs_label())


def synscapes_tree(root, n=1):
    """Depth i metres everywhere in i.npy (ids from 1)."""
    return trees.synscapes(root, n, (H, W), ("train",), depth_format="npy", labels=cs_label(),
                           depth=[np.full((H, W), float(i + 1), np.float32) for i in range(n)])


TREES = {"cityscapes": cityscapes_tree, "gta5": gta5_tree, "synscapes": synscapes_tree,
         "synthia": synthia_tree, "carla": carla_tree}
CLASSES = {"cityscapes": Cityscapes, "gta5": GTA5, "synscapes": Synscapes, "synthia": Synthia,
           "carla": Carla}


def first_files(tree):
    """(image, semantic label) paths of a tree's first frame."""
    return tree.frames[0].paths["image"], tree.frames[0].paths["semantic"]


# ----------------------------------------------------------------------------- class maps
@pytest.mark.parametrize("name", ["cityscapes", "gta5", "synscapes"])
@pytest.mark.parametrize("classes", [19, 16, 13, 7, 11])
def test_cityscapes_label_ids_through_every_map(tmp_path, name, classes):
    TREES[name](tmp_path)
    s = build(name, tmp_path, classes=classes)[0]
    assert s["semantic"][0].tolist() == CS_EXPECTED[classes]
    assert s["semantic"][1, 0] == 255                # UNKNOWN_ID
    assert (s["semantic"][2:] == 255).all()          # labelId 0, unlabeled


def test_default_class_map_is_the_first(tmp_path):
    cityscapes_tree(tmp_path)
    assert build("cityscapes", tmp_path).classes == 19
    with pytest.raises(DataError, match="no 12-class map"):
        build("cityscapes", tmp_path, classes=12)


@pytest.mark.parametrize("classes", [16, 7])
def test_synthia_16bit_first_channel(tmp_path, classes):
    synthia_tree(tmp_path)
    ds = build("synthia", tmp_path, classes=classes)
    ids = ds.label_ids(ds.records[0])
    assert ids[1, 5] == 264 and ids[1, 6] == 1027    # not truncated to 8 bits
    s = ds[0]
    assert s["semantic"][:2].tolist() == SYN_EXPECTED[classes]
    assert (s["semantic"][2:] == 255).all()          # id 0, void


def test_carla_tags_sky_and_depth(tmp_path):
    carla_tree(tmp_path)
    s = build("carla", tmp_path, labels=("semantic", "depth"))[0]
    assert s["semantic"][0].tolist() == CARLA_EXPECTED[0]
    assert s["semantic"][1, :3].tolist() == CARLA_EXPECTED[1]
    assert (s["semantic"][2:] == 255).all()          # tag 0, None
    for col, (r, g, b) in enumerate(CARLA_RGB):
        assert s["depth"][0, col].item() == pytest.approx((r + 256 * g + 65536 * b) / (2 ** 24 - 1) * 1000)
    assert s["depth"][0, 3].item() == pytest.approx(1000 * 65536 / 16777215)      # 3.90625... m
    assert s["depth"][1, 2] == 0                     # sky: invalid depth
    assert s["depth"][2, 0].item() == pytest.approx(100 / 16777215 * 1000)


def test_carla_semantic_needs_the_depth_file(tmp_path):
    carla_tree(tmp_path)
    depth = os.path.join(str(tmp_path), "carla", "train", "depth", "000000.png")
    os.remove(depth)
    with pytest.raises(DataError, match="depth file") as err:
        build("carla", tmp_path)
    assert depth in str(err.value)


# ----------------------------------------------------------------------------- depth
def test_cityscapes_disparity_to_metres(tmp_path):
    p = np.zeros((H, W), np.int64)
    p[0, :7] = [0, 1, 257, 513, 2049, 25601, 65535]
    cityscapes_tree(tmp_path, disparity=p)          # baseline 0.25 m, fx 2000 px
    ds = build("cityscapes", tmp_path, labels=("depth",))
    d = ds[0]["depth"]
    # d = (p - 1) / 256; depth = 0.25 * 2000 / d = 500 / d: p = 257 -> d = 1 -> 500 m, ...
    assert d[0, :6].tolist() == [0, 0, 500.0, 250.0, 62.5, 5.0]
    assert d[0, 6].item() == pytest.approx(500 * 256 / 65534)
    assert (d[1:] == 0).all()
    assert ds.focal(ds.records[0]) == 2000.0
    scaled = build("cityscapes", tmp_path, labels=("depth",), focal_ref=1000.0)[0]
    assert scaled["depth"][0, 2].item() == pytest.approx(250.0)          # 500 m * 1000 / 2000
    assert scaled["depth_scale"] == pytest.approx(2.0)


def test_cityscapes_camera_json_errors(tmp_path):
    cityscapes_tree(tmp_path)
    cam = os.path.join(str(tmp_path), "cityscapes", "camera", "train", "aachen",
                       "aachen_000000_000019_camera.json")
    with open(cam, "w") as f:
        json.dump({"intrinsic": {"fx": 2000.0}}, f)
    with pytest.raises(DataError, match="extrinsic") as err:
        build("cityscapes", tmp_path, labels=("depth",))[0]
    assert cam in str(err.value)
    trees.write_garbage(cam)
    with pytest.raises(DataError, match="cannot read") as err:
        build("cityscapes", tmp_path, labels=("depth",))[0]
    assert cam in str(err.value)


@pytest.mark.parametrize("channels", [3, 1])
def test_synthia_depth_centimetres(tmp_path, channels):
    cm = np.full((H, W), 500)
    cm[0, :5] = [0, 1, 100, 1234, 65535]
    synthia_tree(tmp_path, depth_channels=channels, depth_cm=cm)
    ds = build("synthia", tmp_path, labels=("depth",))
    d = ds[0]["depth"]
    assert d[0, :5].tolist() == pytest.approx([0, 0.01, 1.0, 12.34, 655.35])
    assert (d[1:] == 5.0).all()
    assert ds.focal(ds.records[0]) == 847.630


def test_synscapes_depth_npy_and_exr(tmp_path):
    synscapes_tree(tmp_path, n=2)
    depth = np.linspace(0.5, 60.0, 20 * W, dtype=np.float32).reshape(20, W)   # 2 ZIP chunks: 16 + 4 lines
    depth[0, :4] = [np.inf, np.nan, -1.0, 2000.0]                            # all invalid
    img = os.path.join(str(tmp_path), "synscapes", "img")
    trees.save(os.path.join(img, "rgb", "2.png"), trees.rgb((20, W)))
    trees.save(os.path.join(img, "class", "2.png"), np.zeros((20, W), np.uint8))
    os.remove(os.path.join(img, "depth", "2.npy"))
    trees.write_exr(os.path.join(img, "depth", "2.exr"),
              {"Z": depth, "R": np.full((20, W), 7.0, np.float32), "A": np.ones((20, W), np.float32)})
    ds = build("synscapes", tmp_path, labels=("depth",))
    assert ds[0]["depth"].eq(1.0).all()              # 1.npy holds 1.0 m everywhere
    d = ds[1]["depth"].numpy()
    assert d[0, :4].tolist() == [0, 0, 0, 0]
    np.testing.assert_array_equal(d.ravel()[4:], depth.ravel()[4:])
    assert ds.focal(ds.records[0]) == pytest.approx(1590.83437)


def test_synscapes_corrupt_exr_is_named(tmp_path):
    synscapes_tree(tmp_path)
    img = os.path.join(str(tmp_path), "synscapes", "img")
    os.remove(os.path.join(img, "depth", "1.npy"))
    trees.write_garbage(os.path.join(img, "depth", "1.exr"))
    with pytest.raises(DataError, match="1.exr"):
        build("synscapes", tmp_path, labels=("depth",))[0]


# ----------------------------------------------------------------------------- splits
def test_cityscapes_splits(tmp_path):
    cityscapes_tree(tmp_path, "train", frames=("bochum/bochum_000000_000313", "aachen/aachen_000001_000019",
                                               "aachen/aachen_000000_000019"))
    cityscapes_tree(tmp_path, "val", frames=("frankfurt/frankfurt_000000_000294",))
    cityscapes_tree(tmp_path, "test", frames=("berlin/berlin_000000_000019",))
    cityscapes_tree(tmp_path, "train_extra", frames=("augsburg/augsburg_000000_000000",))
    train = build("cityscapes", tmp_path, labels=("semantic", "depth"))
    assert [r["name"] for r in train.records] == [
        "cityscapes/train/aachen/aachen_000000_000019", "cityscapes/train/aachen/aachen_000001_000019",
        "cityscapes/train/bochum/bochum_000000_000313"]
    assert [r["name"] for r in build("cityscapes", tmp_path, "val").records] == [
        "cityscapes/val/frankfurt/frankfurt_000000_000294"]
    extra = build("cityscapes", tmp_path, "train_extra", labels=("depth",))
    assert len(extra) == 1 and extra[0]["depth"].eq(500.0).all()   # p = 257 everywhere
    assert len(build("cityscapes", tmp_path, "test", labels=("depth",))) == 1
    with pytest.raises(DataError, match="coarse"):
        build("cityscapes", tmp_path, "train_extra")
    with pytest.raises(DataError, match="not public"):
        build("cityscapes", tmp_path, "test")


def test_cityscapes_reads_only_the_requested_labels(tmp_path):
    cityscapes_tree(tmp_path)
    base = os.path.join(str(tmp_path), "cityscapes")
    os.rename(os.path.join(base, "disparity"), os.path.join(base, "disparity_moved"))
    assert len(build("cityscapes", tmp_path, labels=("semantic", "edges"))) == 1
    with pytest.raises(DataError, match="disparity") as err:
        build("cityscapes", tmp_path, labels=("depth",))
    assert Cityscapes.layout in str(err.value)
    os.rename(os.path.join(base, "disparity_moved"), os.path.join(base, "disparity"))
    os.rename(os.path.join(base, "gtFine"), os.path.join(base, "gtFine_moved"))
    assert len(build("cityscapes", tmp_path, labels=("depth",))) == 1


def test_synthia_val_is_the_last_images(tmp_path, monkeypatch):
    synthia_tree(tmp_path, n=5)
    monkeypatch.setattr(Synthia, "VAL_SIZE", 2)
    train = build("synthia", tmp_path, "train")
    val = build("synthia", tmp_path, "val")
    assert [r["name"] for r in train.records] == [f"synthia/train/{i:07d}" for i in range(5)]
    assert [r["name"] for r in val.records] == ["synthia/val/0000003", "synthia/val/0000004"]


def test_synscapes_numeric_splits(tmp_path, monkeypatch):
    synscapes_tree(tmp_path, n=12)
    monkeypatch.setattr(Synscapes, "SPLIT_SIZES", (("train", 6), ("val", 2), ("test", 4)))
    ids = {split: [int(r["name"].split("/")[-1]) for r in build("synscapes", tmp_path, split).records]
           for split in ("train", "val", "test")}
    assert ids == {"train": [1, 2, 3, 4, 5, 6], "val": [7, 8], "test": [9, 10, 11, 12]}
    monkeypatch.undo()     # the official sizes: SemiMTL's 20k / 1k / 4k in id order
    assert [Synscapes.id_range(s) for s in ("train", "val", "test")] == [
        (1, 20000), (20001, 21000), (21001, 25000)]


def test_gta5_splits_from_lists(tmp_path):
    gta5_tree(tmp_path, n=3)
    assert [r["name"] for r in build("gta5", tmp_path).records] == [f"gta5/train/{i:05d}" for i in (1, 2, 3)]
    with pytest.raises(DataError, match="val.txt") as err:
        build("gta5", tmp_path, "val")
    assert GTA5.layout in str(err.value)
    base = os.path.join(str(tmp_path), "gta5")
    with open(os.path.join(base, "train.txt"), "w") as f:
        f.write("00003.png\n1\n")                    # a file name and a split.mat id
    with open(os.path.join(base, "val.txt"), "w") as f:
        f.write("# held out\n2\n")
    assert [r["name"] for r in build("gta5", tmp_path).records] == ["gta5/train/00001", "gta5/train/00003"]
    assert [r["name"] for r in build("gta5", tmp_path, "val").records] == ["gta5/val/00002"]
    with open(os.path.join(base, "val.txt"), "w") as f:
        f.write("7\n")
    with pytest.raises(DataError, match="00007.png"):
        build("gta5", tmp_path, "val")
    # A list line that climbs out of images/ is refused before any file is read.
    (tmp_path / "gta5" / "val.txt").write_text("00001.png\n../../../../../ESC/x.png\n")
    with pytest.raises(DataError, match=r"val.txt, entry 2: '../../../../../ESC/x.png' leads outside"):
        build("gta5", tmp_path, "val")


def test_carla_list_file_layout(tmp_path):
    base = os.path.join(str(tmp_path), "carla")
    carla_tree(tmp_path, "val")                      # a folder layout too: the list file wins
    lines = []
    for ep in ("episode_0002", "episode_0001"):
        trees.save(os.path.join(base, ep, "MyCamera_L", "000004.png"), trees.rgb((H, W)))
        trees.save(os.path.join(base, ep, "MyCamera_L", "Semantic", "000004.png"), carla_semantic())
        trees.save(os.path.join(base, ep, "MyCamera_L", "Depth", "000004.png"), carla_depth())
        lines.append(f"{ep}/MyCamera_L/000004.png;{ep}/MyCamera_R/000004.png;"
                     f"{ep}/MyCamera_L/Semantic/000004.png;{ep}/MyCamera_L/Depth/000004.png")
    ep = "episode_0003"                               # an absolute path inside carla/ is fine
    trees.save(os.path.join(base, ep, "rgb.png"), trees.rgb((H, W)))
    trees.save(os.path.join(base, ep, "sem.png"), carla_semantic())
    trees.save(os.path.join(base, ep, "dep.png"), carla_depth())
    lines.append(f"{base}/{ep}/rgb.png;unused;{base}/{ep}/sem.png;{base}/{ep}/dep.png")
    with open(os.path.join(base, "val.txt"), "w") as f:
        f.write("\n".join(lines) + "\n")
    ds = build("carla", tmp_path, "val", labels=("semantic", "depth"))
    names = [r["name"] for r in ds.records]
    assert names == ["carla/val/episode_0001/MyCamera_L/000004",
                     "carla/val/episode_0002/MyCamera_L/000004", "carla/val/episode_0003/rgb"]
    for i in range(3):
        assert ds[i]["semantic"][0].tolist() == CARLA_EXPECTED[0] and ds[i]["depth"][1, 2] == 0
    # A line leading outside carla/ (absolute or with '..') is refused, naming the entry.
    outside = os.path.join(str(tmp_path), "elsewhere")
    trees.save(os.path.join(outside, "rgb.png"), trees.rgb((H, W)))
    for bad in (f"{outside}/rgb.png", "../elsewhere/rgb.png"):
        with open(os.path.join(base, "val.txt"), "w") as f:
            f.write(lines[0] + f"\n{bad};x;{bad};{bad}\n")
        with pytest.raises(DataError, match=r"val.txt, entry 2: .* leads outside"):
            build("carla", tmp_path, "val")
    with open(os.path.join(base, "val.txt"), "w") as f:
        f.write(lines[0] + "\nonly;two\n")
    with pytest.raises(DataError, match="entry 2") as err:
        build("carla", tmp_path, "val")
    assert os.path.join(base, "val.txt") in str(err.value)


# ----------------------------------------------------------------------------- bad input
def test_missing_root_shows_the_layout(tmp_path):
    for name, cls in CLASSES.items():
        with pytest.raises(DataError) as err:
            cls(str(tmp_path / name), "train", (H, W))
        assert cls.layout in str(err.value)
        with pytest.raises(UserError, match=name):   # the registry names the missing folder
            build(name, tmp_path)


# A split whose files are absent: the error shows the layout (and names the folder or list).
MISSING_SPLIT = {"cityscapes": ("val", "leftImg8bit/val"), "carla": ("val", "carla/val/rgb"),
                 "gta5": ("test", "test.txt"), "synscapes": ("val", "empty"),
                 "synthia": ("train", "RGB")}


@pytest.mark.parametrize("name", sorted(TREES))
def test_missing_split_shows_the_layout(tmp_path, name):
    TREES[name](tmp_path)
    split, what = MISSING_SPLIT[name]
    if name == "synthia":
        os.rename(tmp_path / "synthia" / "RGB", tmp_path / "synthia" / "rgb_moved")
    with pytest.raises(DataError) as err:
        build(name, tmp_path, split)
    assert CLASSES[name].layout in str(err.value) and what in str(err.value)


@pytest.mark.parametrize("name", sorted(TREES))
def test_image_without_label(tmp_path, name):
    image, label = first_files(TREES[name](tmp_path))
    os.remove(label)
    with pytest.raises(DataError) as err:
        build(name, tmp_path)
    assert image in str(err.value) and label in str(err.value)


@pytest.mark.parametrize("name", sorted(TREES))
@pytest.mark.parametrize("which", [0, 1])
def test_corrupt_file_is_named(tmp_path, name, which):
    paths = first_files(TREES[name](tmp_path))
    trees.write_garbage(paths[which])
    ds = build(name, tmp_path)
    with pytest.raises(DataError, match="cannot read") as err:
        ds[0]
    assert paths[which] in str(err.value)


@pytest.mark.parametrize("name", sorted(TREES))
def test_size_mismatch_names_both_files(tmp_path, name):
    image, label = first_files(TREES[name](tmp_path))
    if name == "synthia":
        trees.write_png16(label, np.zeros((H, W + 1, 3)))
    elif name == "carla":
        trees.save(label, np.zeros((H, W + 1, 3), np.uint8))
    else:
        trees.save(label, np.zeros((H, W + 1), np.uint8))
    with pytest.raises(DataError) as err:
        build(name, tmp_path)[0]
    assert image in str(err.value) and label in str(err.value)
