"""Real-dataset loaders: Mapillary, ISPRS, NYUv2, KITTI depth and the generic `folder` layout.

Every test writes a tiny tree in the dataset's on-disk layout (exact names, bit depths and
encodings; tests/trees.py) and checks the decoded sample against values worked out by hand
from the arrays the test put in it.
"""
import json
import os
import re
import shutil
import sys
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from lib.data import build_dataset
from lib.data.base import IGNORE, DataError
from lib.data.folder import Folder
from lib.data.isprs import IsprsPotsdam, IsprsVaihingen
from lib.data.kitti import KittiDepth, garg_box, garg_crop, project_velodyne
from lib.data.mapillary import Mapillary
from lib.data.nyuv2 import NYUv2
from lib.engine import cli
from tests import trees

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tools"))
import check_dataset
import prepare_isprs
import prepare_nyuv2

H, W = 8, 12
CLASSES = {"mapillary": Mapillary, "isprs_potsdam": IsprsPotsdam, "isprs_vaihingen": IsprsVaihingen,
           "nyuv2": NYUv2, "kitti_depth": KittiDepth, "folder": Folder}


def _build(name, root, split="train", labels=(), **options):
    return build_dataset(name, split, size=(H, W), data_root=str(root), labels=labels, **options)


# ----------------------------------------------------------------------------- all datasets
@pytest.mark.parametrize("name", ["mapillary", "isprs_potsdam", "isprs_vaihingen", "nyuv2", "kitti_depth",
                                  "folder"])
def test_missing_root_shows_the_layout(tmp_path, name):
    cls = CLASSES[name]
    with pytest.raises(DataError, match="expected layout") as err:
        cls(str(tmp_path / "absent"), "train", (H, W))
    assert cls.layout.splitlines()[0] in str(err.value)


# ----------------------------------------------------------------------------- Mapillary
# Vistas v1.2 index -> DADA 7-class index, worked out by hand from the config.json names.
VISTAS_EXPECTED = {13: 0,   # construction--flat--road -> flat
                   29: 0,   # nature--terrain -> flat (DADA's table)
                   2: 1,    # construction--barrier--curb -> construction
                   17: 1,   # construction--structure--building
                   45: 2,   # object--support--pole -> object
                   30: 3,   # nature--vegetation -> nature
                   27: 4,   # nature--sky
                   21: 5,   # human--rider--motorcyclist -> human
                   55: 6,   # object--vehicle--car -> vehicle
                   0: IGNORE, 33: IGNORE, 65: IGNORE,   # bird, bench, unlabeled: not in the 7
                   70: IGNORE}                           # outside 0..65


def _mapillary(root, v2=False):
    """One frame per split (train aaa, val bbb) whose palette label holds VISTAS_EXPECTED's ids."""
    ids = np.array(list(VISTAS_EXPECTED) * 8)[:H * W].reshape(H, W).astype(np.uint8)
    trees.mapillary(root, {"train": ["aaa"], "val": ["bbb"]}, (H, W), v2=v2, labels=ids)
    return ids


@pytest.mark.parametrize("v2", [False, True])
def test_mapillary_seven_classes_and_splits(tmp_path, v2):
    from lib.data.mapillary import VISTAS_CLASSES
    assert len(VISTAS_CLASSES) == 66 and VISTAS_CLASSES[13] == "construction--flat--road"
    assert VISTAS_CLASSES[55] == "object--vehicle--car" and VISTAS_CLASSES[65] == "void--unlabeled"
    ids = _mapillary(tmp_path, v2)
    train = _build("mapillary", tmp_path, "train", ("semantic",))
    val = _build("mapillary", tmp_path, "val", ("semantic",))
    assert [r["name"] for r in train.records] == ["mapillary/train/aaa"]
    assert [r["name"] for r in val.records] == ["mapillary/val/bbb"]
    expected = np.vectorize(VISTAS_EXPECTED.get)(ids)
    assert torch.equal(val[0]["semantic"], torch.from_numpy(expected).long())
    assert np.array_equal(train.label_ids(train.records[0]), ids)   # raw ids kept for check_dataset
    assert 70 not in train.known_ids and 65 in train.known_ids


def test_mapillary_image_without_label_and_corrupt_label(tmp_path):
    _mapillary(tmp_path)
    lone = trees.save(str(tmp_path / "mapillary" / "training" / "images" / "zzz.jpg"), trees.rgb((H, W), 2))
    with pytest.raises(DataError, match="zzz.jpg.*labels/zzz.png"):
        _build("mapillary", tmp_path, "train", ("semantic",))
    os.remove(lone)
    label = str(tmp_path / "mapillary" / "validation" / "labels" / "bbb.png")
    trees.write_garbage(label)
    with pytest.raises(DataError, match="cannot read .*validation/labels/bbb.png"):
        _build("mapillary", tmp_path, "val", ("semantic",))[0]


def test_check_dataset_counts_unknown_ids(tmp_path, capsys):
    """Ids outside the map train as 255 and tools/check_dataset.py reports them (Mapillary: 70)."""
    ids = _mapillary(tmp_path)
    status = check_dataset.main(["mapillary", "--data-root", str(tmp_path), "--splits", "val",
                                 "--json", str(tmp_path / "report.json")])
    report = json.loads((tmp_path / "report.json").read_text())["splits"]["val"]
    assert status == 1 and report["unknown_ids"] == [70]
    assert report["unknown_id_pixels"] == int((ids == 70).sum())
    assert list(report["class_pixels"])[:2] == ["flat", "construction"]   # the dataset's names
    capsys.readouterr()


def test_mapillary_missing_split_folder_shows_layout(tmp_path):
    _mapillary(tmp_path)
    shutil.rmtree(tmp_path / "mapillary" / "validation")
    with pytest.raises(DataError, match="validation/images.*expected layout"):
        _build("mapillary", tmp_path, "val")


# ----------------------------------------------------------------------------- ISPRS
ISPRS_COLOURS = {(255, 255, 255): 0, (0, 0, 255): 1, (0, 255, 255): 2, (0, 255, 0): 3,
                 (255, 255, 0): 4, (255, 0, 0): 5, (10, 20, 30): IGNORE}   # the last: not a class


def _colour_label(h, w, seed):
    colours = np.array(list(ISPRS_COLOURS), dtype=np.uint8)
    pick = np.random.default_rng(seed).integers(0, len(colours), (h, w))
    return colours[pick]


def _vaihingen_tile(root, n, h=20, w=24, seed=0):
    image, label = trees.rgb((h, w), seed), _colour_label(h, w, seed)
    height = (np.arange(h * w).reshape(h, w) * 7 % 190 + 10).astype(np.uint8)   # 10..199, lossless BMP
    trees.isprs_tiles(root, "isprs_vaihingen", (str(n),), (h, w), participants=True, image=image,
                      label=label, height=height)
    return image, label, height


def _prepare(root, dataset, *extra):
    args = prepare_isprs.get_args_parser().parse_args(
        [dataset, "--data-root", str(root), "--patch", "8", "--stride", "4", *extra])
    prepare_isprs.main(args)


def test_vaihingen_patches_decode_to_the_tile(tmp_path):
    image, label, height = _vaihingen_tile(tmp_path, 1)
    _prepare(tmp_path, "isprs_vaihingen", "--splits", "train", "--tiles", "1")
    ds = _build("isprs_vaihingen", tmp_path, "train", ("semantic", "depth"))
    # 20x24 tile, 8x8 windows every 4 px: rows 0, 4, 8, 12 and columns 0, 4, ..., 16.
    assert len(ds) == 4 * 5
    names = [r["name"] for r in ds.records]
    assert names == sorted(names) and "isprs_vaihingen/train/area1_00004_00008" in names
    s = ds[names.index("isprs_vaihingen/train/area1_00004_00008")]
    win = (slice(4, 12), slice(8, 16))
    raw = ds.load_raw(ds.records[names.index("isprs_vaihingen/train/area1_00004_00008")])
    assert np.array_equal(raw["image"], image[win])
    expected = np.array([[ISPRS_COLOURS[tuple(c)] for c in row] for row in label[win]])
    assert torch.equal(s["semantic"], torch.from_numpy(expected).long())
    # nDSM: per-tile min-max to [0, 1] (min 10, max 199), ground stays valid (> 0).
    h01 = (height[win].astype(np.float64) - 10) / (199 - 10)
    assert np.allclose(s["depth"].numpy(), h01, atol=2e-5)
    full = np.concatenate([ds.load_depth(r).ravel() for r in ds.records])
    assert full.min() > 0 and full.min() < 1e-4 and abs(full.max() - 1) < 1e-6


def test_8bit_ndsm_ground_noise_is_a_small_height_not_ground(tmp_path):
    """What the loader assumes of an nDSM file (lib/data/isprs.py): grey value linear in height,
    ground = the tile's minimum. In an 8-bit tile of range R grey levels, a pixel k levels above
    the minimum (e.g. compression noise on the ground) decodes to k / R >= 1/255, above
    --min-depth 1e-3: RMSE counts it at its value, as it counts the true ground (1/65535), and
    the ratio metrics count it as a tiny height; a larger --min-depth leaves it out of them."""
    from lib.metrics import depth_errors
    h, w = 8, 8
    height = np.zeros((h, w), np.uint8)
    height[0, :4], height[1, :4], height[4:, 4:] = 1, 2, 255        # ground noise 1-2, a roof at 255
    trees.isprs_tiles(tmp_path, "isprs_vaihingen", ("1",), (h, w), participants=True, image=trees.rgb((h, w), 0),
                      label=_colour_label(h, w, 0), height=height)
    _prepare(tmp_path, "isprs_vaihingen", "--splits", "train", "--tiles", "1")
    gt = _build("isprs_vaihingen", tmp_path, "train", ("depth",))[0]["depth"]
    assert torch.allclose(gt[0, 0], torch.tensor(1 / 255), atol=2e-5) and gt[0, 0] > 1e-3     # k = 1
    assert torch.allclose(gt[1, 0], torch.tensor(2 / 255), atol=2e-5)                           # k = 2
    assert gt[2, 0] == pytest.approx(1 / 65535) and gt[2, 0] < 1e-3                             # ground
    pred = torch.zeros_like(gt)                                  # "all ground" everywhere
    m = depth_errors(pred, gt, min_depth=1e-3, max_depth=80.0, absolute_min_depth=0.0)
    assert m["rmse"] == pytest.approx(float(gt.double().square().mean().sqrt()), rel=1e-6)     # all 64 px
    noisy = gt[gt > 1e-3].double()                               # 8 noise + 16 roof pixels
    assert m["abs_rel"] == pytest.approx(float(((noisy - 1e-3).abs() / noisy).mean()), rel=1e-6)
    strict = depth_errors(pred, gt, min_depth=0.02, max_depth=80.0, absolute_min_depth=0.0)
    assert strict["rmse"] == pytest.approx(m["rmse"]) and strict["abs_rel"] == pytest.approx(1 - 0.02)


def test_potsdam_resized_to_9cm_with_zero_padded_ndsm_name(tmp_path):
    base = tmp_path / "isprs_potsdam"
    n = 36
    ramp = np.tile(np.linspace(20, 220, n), (n, 1)).astype(np.uint8)
    tiles = trees.isprs_tiles(tmp_path, "isprs_potsdam", ("2_10", "2_13"), (n, n), height=ramp,   # train, test
                              label=[_colour_label(n, n, 0), _colour_label(n, n, 1)])
    assert tiles.frames[0].paths["height"] == str(base / "1_DSM_normalisation" /
                                                  "dsm_potsdam_02_10_normalized_lastools.jpg")   # zero-padded
    _prepare(tmp_path, "isprs_potsdam", "--tiles", "2_10", "2_13")
    info = json.loads((base / "patches" / "info.json").read_text())
    assert info["bands"] == "IRRG" and abs(info["scale"] - 5 / 9) < 1e-12
    train = _build("isprs_potsdam", tmp_path, "train", ("semantic", "depth"))
    val = _build("isprs_potsdam", tmp_path, "val", ("semantic", "depth"))
    # 36 px at 5 cm -> 20 px at 9 cm; 8x8 windows every 4 px: 4 x 4 patches per tile.
    assert len(train) == 16 and len(val) == 16
    assert all(r["name"].startswith("isprs_potsdam/train/top_potsdam_2_10_") for r in train.records)
    assert all(r["name"].startswith("isprs_potsdam/test/top_potsdam_2_13_") for r in val.records)
    raw = train.load_raw(train.records[-1])
    assert raw["image"].shape == (8, 8, 3)
    labels = Image.open(train.records[-1]["image"].replace("/image/", "/label/")).convert("RGB")
    assert {tuple(c) for c in np.asarray(labels).reshape(-1, 3)} <= set(ISPRS_COLOURS)   # nearest: no blends
    depth = np.concatenate([train.load_depth(r).ravel() for r in train.records])
    assert depth.min() > 0 and depth.max() <= 1 and depth.max() > 0.9


def test_isprs_bad_inputs(tmp_path):
    _vaihingen_tile(tmp_path, 1)
    with pytest.raises(DataError, match="prepare_isprs.py isprs_vaihingen.*expected layout"):
        _build("isprs_vaihingen", tmp_path, "train")
    os.remove(tmp_path / "isprs_vaihingen" / "ndsm" / "ndsm_09cm_matching_area1.bmp")
    with pytest.raises(DataError, match="ndsm_09cm_matching_area1.bmp"):
        _prepare(tmp_path, "isprs_vaihingen", "--splits", "train", "--tiles", "1")
    _vaihingen_tile(tmp_path, 1)
    _prepare(tmp_path, "isprs_vaihingen", "--splits", "train", "--tiles", "1")
    patch = tmp_path / "isprs_vaihingen" / "patches" / "train"
    os.remove(patch / "label" / "area1_00000_00000.png")
    with pytest.raises(DataError, match="area1_00000_00000.png.*label/area1_00000_00000.png"):
        _build("isprs_vaihingen", tmp_path, "train", ("semantic",))
    trees.save(str(patch / "label" / "area1_00000_00000.png"), _colour_label(6, 8, 0))   # wrong size
    with pytest.raises(DataError, match=r"label/area1_00000_00000.png: semantic is 6x8 but its image "
                                        r".*image/area1_00000_00000.png is 8x8"):
        _build("isprs_vaihingen", tmp_path, "train", ("semantic",))[0]
    trees.write_garbage(patch / "ndsm" / "area1_00000_00000.png")
    with pytest.raises(DataError, match="ndsm/area1_00000_00000.png"):
        _build("isprs_vaihingen", tmp_path, "train", ("depth",))[0]


# ----------------------------------------------------------------------------- NYUv2
# stored NYU-40 id -> (40-class index, 13-class index), by hand from the class names and
# Couprie et al.'s table: wall->wall, floor->floor, bed->bed, television->tv, otherprop->objects,
# books->books, door->wall, cabinet->furniture.
NYU_EXPECTED = {1: (0, 11), 2: (1, 4), 4: (3, 0), 25: (24, 10), 40: (39, 6), 23: (22, 1), 8: (7, 11),
                3: (2, 5), 0: (IGNORE, IGNORE), 41: (IGNORE, IGNORE), 200: (IGNORE, IGNORE)}


def _nyu(root, split="train", index=1, normals=False):
    """Frame `index` of `split` with NYU_EXPECTED's ids and millimetres up to 16 bits;
    normals: False (no normals/ folder) or encoded uint8 RGB."""
    ids = np.array(list(NYU_EXPECTED) * 9)[:H * W].reshape(H, W).astype(np.uint8)
    mm = (np.arange(H * W).reshape(H, W) * 601 % 65536).astype(np.uint16)   # up to 16 bits
    trees.nyuv2(root, [index], (H, W), (split,), normals=normals, depth=mm, label40=ids)
    return ids, mm


def test_nyuv2_classes_depth_and_splits(tmp_path):
    from lib.data.nyuv2 import CLASSES_13, CLASSES_40
    assert CLASSES_13[11] == "wall" and CLASSES_13[10] == "tv" and CLASSES_40[24] == "television"
    ids, mm = _nyu(tmp_path, "train", 1)
    _nyu(tmp_path, "test", 2)
    for classes, col in ((13, 1), (40, 0)):
        ds = _build("nyuv2", tmp_path, "train", ("semantic", "depth"), classes=classes)
        s = ds[0]
        expected = np.vectorize(lambda i, c=col: NYU_EXPECTED[i][c])(ids)
        assert torch.equal(s["semantic"], torch.from_numpy(expected).long())
    assert mm.max() > 255
    assert torch.allclose(s["depth"], torch.from_numpy(mm.astype(np.float64) / 1000).float())
    assert s["depth"][0, 0] == 0   # 0 mm = invalid
    assert [r["name"] for r in _build("nyuv2", tmp_path, "val").records] == ["nyuv2/test/00002"]
    assert [r["name"] for r in _build("nyuv2", tmp_path, "test").records] == ["nyuv2/test/00002"]
    assert ds.focal(ds.records[0]) == 518.857901
    with pytest.raises(DataError, match="no 19-class map"):
        _build("nyuv2", tmp_path, "train", ("semantic",), classes=19)


def test_nyuv2_normals_read_or_estimated(tmp_path):
    from lib.data.nyuv2 import encode_normals, normals_from_depth
    n = np.random.default_rng(0).normal(size=(H, W, 3))
    n /= np.linalg.norm(n, axis=-1, keepdims=True)
    n[0, 0] = 0                                      # invalid pixel
    rgb = encode_normals(n)
    assert tuple(rgb[0, 0]) == (0, 0, 0)
    _nyu(tmp_path, "train", 1, normals=rgb)
    got = _build("nyuv2", tmp_path, "train", ("normals",))[0]["normals"].permute(1, 2, 0).numpy()
    assert np.all(got[0, 0] == 0)
    # 8-bit quantisation: each component is off by at most 1/255 before renormalisation.
    assert np.abs(got[1:] - n[1:]).max() < 0.01
    _, mm = _nyu(tmp_path, "test", 2)                # no normals/ folder: estimated from depth
    got = _build("nyuv2", tmp_path, "test", ("normals",))[0]["normals"].permute(1, 2, 0).numpy()
    assert np.array_equal(got, normals_from_depth(mm / 1000.0))


def test_nyuv2_missing_label_and_size_mismatch(tmp_path):
    _nyu(tmp_path, "train", 1)
    os.remove(tmp_path / "nyuv2" / "train" / "label40" / "00001.png")
    with pytest.raises(DataError, match="image/00001.png.*label40/00001.png"):
        _build("nyuv2", tmp_path, "train", ("semantic",))
    trees.save(str(tmp_path / "nyuv2" / "train" / "label40" / "00001.png"), np.zeros((H, W + 1), np.uint8))
    with pytest.raises(DataError, match=f"label40/00001.png: semantic is {H}x{W + 1} but its image .*"
                                        f"image/00001.png is {H}x{W}"):
        _build("nyuv2", tmp_path, "train", ("semantic",))[0]


def _plane_depth(normal, dist, h, w, fx, fy, cx, cy):
    """Depth of the plane n . P = -dist seen by a pinhole camera, from the ray through each pixel."""
    v, u = np.mgrid[0:h, 0:w].astype(np.float64)
    ray = np.stack([(u - cx) / fx, (v - cy) / fy, np.ones_like(u)], -1)
    return -dist / (ray @ normal)


def test_normal_estimator_recovers_a_tilted_plane():
    normal = np.array([0.2, -0.3, -0.9])
    normal /= np.linalg.norm(normal)                # faces the camera: n . P < 0 for P on the plane
    intr = {"fx": 30.0, "fy": 32.0, "cx": 15.5, "cy": 11.5}   # centred: mirroring is exact
    depth = _plane_depth(normal, 2.0, 24, 32, **intr)
    assert depth.min() > 0
    depth[0, 5] = 0                                  # a hole: invalid there
    est = prepare_nyuv2.normals_from_depth(depth, radius=2, **intr)
    assert np.all(est[0, 5] == 0)
    inner = est[4:-4, 4:-4].reshape(-1, 3)
    assert np.abs(inner - normal).max() < 1e-6
    assert np.allclose(np.linalg.norm(inner, axis=1), 1)
    # The mirrored image sees the mirrored plane, whose normal has -x.
    mirrored = prepare_nyuv2.normals_from_depth(depth[:, ::-1], radius=2, **intr)
    assert np.abs(mirrored[4:-4, 4:-4].reshape(-1, 3) - normal * [-1, 1, 1]).max() < 1e-6


def _nyu_mat_arrays(n=3, h=H, w=W):
    """Arrays in the .mat's transposed (column-major) order, and the frames they hold."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, h, w, 3), dtype=np.uint8)
    depths = rng.uniform(0.5, 9.0, (n, h, w))
    raw = rng.integers(0, 895, (n, h, w))
    return (images.transpose(0, 3, 2, 1), depths.transpose(0, 2, 1), raw.transpose(0, 2, 1)), \
        (images, depths, raw)


def _mapping_and_splits(tmp_path):
    mapping = (np.arange(894) % 40 + 1)              # raw class c -> (c - 1) % 40 + 1
    np.savetxt(tmp_path / "map40.txt", mapping, fmt="%d")
    (tmp_path / "test.txt").write_text("2\n")
    return mapping


def _check_export(out, frames, mapping):
    images, depths, raw = frames
    data_root = os.path.dirname(out)
    test = _build("nyuv2", data_root, "test", ("semantic", "depth", "normals"), classes=40)
    train = _build("nyuv2", data_root, "train", ("semantic",), classes=40)
    assert [r["name"] for r in train.records] == ["nyuv2/train/00001", "nyuv2/train/00003"]
    assert [r["name"] for r in test.records] == ["nyuv2/test/00002"]
    raw_t = test.load_raw(test.records[0])
    assert np.array_equal(raw_t["image"], images[1])
    label40 = np.where(raw[1] > 0, mapping[np.maximum(raw[1], 1) - 1], 0)
    assert np.array_equal(test.label_ids(test.records[0]), label40)
    assert np.allclose(raw_t["depth"], depths[1], atol=5e-4)   # millimetre rounding
    assert os.path.isfile(os.path.join(out, "test", "normals", "00002.png"))


def test_prepare_nyuv2_export_without_h5py(tmp_path):
    mat, frames = _nyu_mat_arrays()
    mapping = _mapping_and_splits(tmp_path)
    out = str(tmp_path / "data" / "nyuv2")
    prepare_nyuv2.export(*mat, prepare_nyuv2.read_mapping(str(tmp_path / "map40.txt")),
                         prepare_nyuv2.read_splits(str(tmp_path / "test.txt"), 3), out)
    _check_export(out, frames, mapping)


def test_prepare_nyuv2_says_when_h5py_is_missing(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "h5py", None)   # import h5py now raises ImportError
    args = prepare_nyuv2.get_args_parser().parse_args(
        ["--mat", str(tmp_path / "x.mat"), "--mapping", "m.txt", "--splits", "s.txt", "--out", "o"])
    with pytest.raises(SystemExit) as exit_:
        cli(prepare_nyuv2.main, args)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "x.mat" in err and "h5py" in err and "pip install h5py" in err


def test_prepare_nyuv2_bad_mapping_and_splits(tmp_path):
    (tmp_path / "short.txt").write_text("1 2 3\n")
    with pytest.raises(DataError, match="short.txt: expected 894 values"):
        prepare_nyuv2.read_mapping(str(tmp_path / "short.txt"))
    (tmp_path / "split.txt").write_text("0\n")
    with pytest.raises(DataError, match="split.txt: test indices"):
        prepare_nyuv2.read_splits(str(tmp_path / "split.txt"), 3)


def test_prepare_nyuv2_end_to_end_with_h5py(tmp_path):
    h5py = pytest.importorskip("h5py")
    mat, frames = _nyu_mat_arrays()
    mapping = _mapping_and_splits(tmp_path)
    with h5py.File(tmp_path / "labeled.mat", "w") as f:
        for key, arr in zip(("images", "depths", "labels"), mat):
            f[key] = arr
    out = str(tmp_path / "data" / "nyuv2")
    args = prepare_nyuv2.get_args_parser().parse_args(
        ["--mat", str(tmp_path / "labeled.mat"), "--mapping", str(tmp_path / "map40.txt"),
         "--splits", str(tmp_path / "test.txt"), "--out", out])
    prepare_nyuv2.main(args)
    _check_export(out, frames, mapping)


# ----------------------------------------------------------------------------- KITTI
DRIVE = "2011_09_26_drive_0001_sync"
DRIVE2 = "2011_09_29_drive_0004_sync"


def _kitti_frame(root, split, drive, frame, h, w, camera="image_02", gt=True):
    image = np.zeros((h, w, 3), np.uint8)
    image[..., 0] = (np.arange(w) % 256)[None]       # column index: shows the crop offset
    image[..., 1] = (np.arange(h) % 256)[:, None]    # row index
    depth = (np.arange(h)[:, None] * 131 + np.arange(w)[None] * 3).astype(np.uint16)   # > 8 bits
    trees.kitti_frame(root, split, drive, frame, (h, w), camera, gt, image=image, depth=depth)
    return image, depth


def test_kitti_depth_decoding_crop_and_focal(tmp_path):
    _, d1 = _kitti_frame(tmp_path, "train", DRIVE, "0000000005", 375, 1242)
    _kitti_frame(tmp_path, "val", DRIVE2, "0000000007", 370, 1224)
    calib = tmp_path / "kitti_depth" / "raw" / "2011_09_26" / "calib_cam_to_cam.txt"
    calib.write_text("calib_time: x\nP_rect_02: 7.005e+02 0.0 6.0e+02 4.4e+01 0 7.0e+02 1.7e+02 0 0 0 1 0\n")
    train = _build("kitti_depth", tmp_path, "train", ("depth",))
    val = _build("kitti_depth", tmp_path, "val", ("depth",))
    assert [r["name"] for r in train.records] == [f"kitti_depth/train/{DRIVE}/image_02/0000000005"]
    assert [r["name"] for r in val.records] == [f"kitti_depth/val/{DRIVE2}/image_02/0000000007"]
    raw = train.load_raw(train.records[0])
    # KB crop: bottom 352 rows (375 - 352 = 23), centred 1216 columns ((1242 - 1216) // 2 = 13).
    assert raw["image"].shape == (352, 1216, 3)
    assert raw["image"][0, 0, 1] == 23 and raw["image"][0, 0, 0] == 13   # (row, column) of the first pixel
    assert np.allclose(raw["depth"], d1[23:, 13:13 + 1216] / 256.0)
    assert d1.max() > 255 and abs(raw["depth"].max() - d1[23:, 13:1229].max() / 256) < 1e-4
    assert val.load_raw(val.records[0])["image"][0, 0, 1] == 370 - 352
    assert train.focal(train.records[0]) == 700.5          # P_rect_02 of the recording's calibration
    assert val.focal(val.records[0]) == 721.5377           # no calibration file: documented constant
    assert tuple(train[0]["depth"].shape) == (352, 1216)   # equal shapes across drives


def test_kitti_eigen_lists(tmp_path):
    _kitti_frame(tmp_path, "train", DRIVE, "0000000005", 375, 1242)
    _kitti_frame(tmp_path, "val", DRIVE2, "0000000007", 370, 1224)
    _kitti_frame(tmp_path, "val", DRIVE, "0000000009", 375, 1242, gt=False)     # no annotated depth
    lst = tmp_path / "kitti_depth" / "eigen_test_files.txt"
    lst.write_text(f"2011_09_29/{DRIVE2}/image_02/data/0000000007.png 2011_09_29/{DRIVE2}/image_03/data/"
                   f"0000000007.png\n2011_09_26/{DRIVE}/image_02/data/0000000009.png\n"
                   f"2011_09_26/{DRIVE}/image_02/data/0000000005.png 721.5377\n")
    with pytest.warns(UserWarning, match="1 frames"):
        test = _build("kitti_depth", tmp_path, "test", ("depth",))
    assert [r["name"] for r in test.records] == [f"kitti_depth/test/{DRIVE}/image_02/0000000005",
                                                 f"kitti_depth/test/{DRIVE2}/image_02/0000000007"]
    assert test.records[1]["depth"].endswith(f"val/{DRIVE2}/proj_depth/groundtruth/image_02/0000000007.png")
    lst.write_text("2011_09_26/oops.png\n")
    with pytest.raises(DataError, match="eigen_test_files.txt, line 1"):
        _build("kitti_depth", tmp_path, "test", ("depth",))
    os.remove(lst)
    with pytest.raises(DataError, match="eigen_test_files.txt"):
        _build("kitti_depth", tmp_path, "test", ("depth",))


def test_kitti_missing_image_and_size_mismatch(tmp_path):
    _kitti_frame(tmp_path, "train", DRIVE, "0000000005", 375, 1242)
    image = tmp_path / "kitti_depth" / "raw" / "2011_09_26" / DRIVE / "image_02" / "data" / "0000000005.png"
    trees.save(str(image), np.zeros((376, 1241, 3), np.uint8))
    with pytest.raises(DataError, match=r"groundtruth/image_02/0000000005.png: depth is 375x1242 but its "
                                        r"image .*data/0000000005.png is 376x1241"):
        _build("kitti_depth", tmp_path, "train", ("depth",))[0]
    os.remove(image)
    with pytest.raises(DataError, match="image_02/0000000005.png: its RGB image .*data/0000000005.png"):
        _build("kitti_depth", tmp_path, "train", ("depth",))


# ----------------------------------------------------------------------------- KITTI, Eigen's protocol
def test_kitti_velodyne_projection_by_hand():
    # Identity rectification; the scanner's axes turned to the camera's (x right = -y_velo,
    # y down = -z_velo, z forward = x_velo); f = 100 px, principal point (20, 15); 30x40 image.
    turn = np.array([[0, -1, 0], [0, 0, -1], [1, 0, 0]], float)
    p_rect = np.array([[100, 0, 20, 0], [0, 100, 15, 0], [0, 0, 1, 0]], float)
    points = np.array([[10.0, -1.0, 0.5, 0.3],    # camera (1, -0.5, 10): u = 10 + 20 = 30, v = -5 + 15 = 10
                       [20.0, -2.0, 1.0, 0.9],    # the same ray at 20 m: same pixel, farther: loses
                       [-5.0, 0.0, 0.0, 0.1],     # behind the scanner: dropped
                       [4.0, 2.0, 0.0, 0.5],      # camera (-2, 0, 4): u = -50 + 20 = -30: left of the image
                       [8.0, 0.0, 0.0, 0.2]],     # camera (0, 0, 8): u = 20, v = 15
                      np.float32)
    depth = project_velodyne(points, np.hstack([turn, np.zeros((3, 1))]), np.eye(3), p_rect, (30, 40))
    expected = np.zeros((30, 40), np.float32)
    expected[10 - 1, 30 - 1] = 10.0            # pixel (round(v) - 1, round(u) - 1): the devkit's 1-based shift
    expected[15 - 1, 20 - 1] = 8.0
    assert np.array_equal(depth, expected)
    # T = (0.4, 0.16, 0) moves the camera off the scanner, so the two points of one ray part:
    # (1.4, -0.34, 10) -> u = 14 + 20 = 34, v = -3.4 + 15 = 11.6; (2.4, -0.84, 20) -> u = 12 + 20 = 32,
    # v = -4.2 + 15 = 10.8; (0.4, 0.16, 8) -> u = 5 + 20 = 25, v = 2 + 15 = 17; (-1.6, 0.16, 4) -> u = -20
    depth = project_velodyne(points, np.hstack([turn, [[0.4], [0.16], [0.0]]]), np.eye(3), p_rect, (30, 40))
    expected = np.zeros((30, 40), np.float32)
    expected[12 - 1, 34 - 1], expected[11 - 1, 32 - 1], expected[17 - 1, 25 - 1] = 10.0, 20.0, 8.0
    assert np.allclose(depth, expected, rtol=1e-6, atol=0) and np.count_nonzero(depth) == 3


@pytest.mark.parametrize("h, w, box", [
    (375, 1242, (153, 371, 44, 1197)),   # 0.40810811 x 375 = 153.04, 0.99189189 x 375 = 371.96, 44.65, 1197.35
    (370, 1224, (151, 366, 43, 1180)),   # 151.0000007, 366.9999993, 43.999997, 1180.000003: truncated
])
def test_kitti_garg_crop_fractions(h, w, box):
    assert garg_box(h, w) == box
    top, bottom, left, right = box
    inside = np.zeros((h, w), np.float32)
    inside[top:bottom, left:right] = 1
    assert np.array_equal(garg_crop(np.ones((h, w), np.float32)), inside)


DATE2 = DRIVE2[:10]


def _kitti_eigen(root):
    """Three listed frames with scans (one without an annotated map) on two dates, and their lidar
    depth maps as the tree wrote them: {stem: (record name, lidar HxW)}."""
    frames = [trees.kitti_frame(root, "train", DRIVE, "0000000005", (375, 1242), velodyne=True),
              trees.kitti_frame(root, "val", DRIVE2, "0000000007", (370, 1224), velodyne=True),
              trees.kitti_frame(root, "val", DRIVE, "0000000009", (375, 1242), gt=False, velodyne=True)]
    trees.kitti_calib(root, "2011_09_26", (375, 1242))
    trees.kitti_calib(root, DATE2, (370, 1224))
    (root / "kitti_depth" / "eigen_test_files.txt").write_text(
        f"{DATE2}/{DRIVE2}/image_02/data/0000000007.png\n2011_09_26/{DRIVE}/image_02/data/0000000009.png\n"
        f"2011_09_26/{DRIVE}/image_02/data/0000000005.png\n")
    return frames


def test_kitti_eigen_reads_the_raw_scans_and_keeps_frames_without_annotated_depth(tmp_path):
    frames = _kitti_eigen(tmp_path)
    with pytest.warns(UserWarning, match="1 frames"):
        annotated = _build("kitti_depth", tmp_path, "test", ("depth",))
    assert len(annotated) == 2 and annotated.depth_protocol.startswith("annotated")
    with warnings.catch_warnings():
        warnings.simplefilter("error")                       # no frame is left out
        eigen = _build("kitti_depth", tmp_path, "test", ("depth",), kitti_protocol="eigen", resize=(8, 24))
    as_test = [re.sub(r"/(train|val)/", "/test/", f.name) for f in frames]
    assert [r["name"] for r in eigen.records] == sorted(as_test)
    assert eigen.depth_protocol == "eigen (raw velodyne LiDAR projected to the image, Garg crop)"
    by_stem = {f.name.rsplit("/", 1)[-1]: f for f in frames}
    for i, rec in enumerate(eigen.records):
        lidar = by_stem[rec["name"].rsplit("/", 1)[-1]].arrays["lidar"]
        h, w = lidar.shape
        rows = slice(int(0.40810811 * h), int(0.99189189 * h))     # Garg et al.'s crop
        cols = slice(int(0.03594771 * w), int(0.96405229 * w))
        expected = np.zeros_like(lidar)
        expected[rows, cols] = lidar[rows, cols]
        assert (lidar > 0).sum() > (expected > 0).sum() > 100      # the crop drops points, keeps most
        sample = eigen[i]
        assert tuple(sample["image"].shape) == (3, 8, 24)          # only the image follows --resize
        assert np.allclose(sample["depth"].numpy(), expected, rtol=1e-5, atol=0)   # the scan's own size
        assert tuple(eigen.load_raw(rec)["image"].shape) == (h, w, 3)             # no KB crop
    # training (UM-Adapt-S's labelled batches): the whole scan, resized with the image
    train = _build("kitti_depth", tmp_path, "test", ("depth",), kitti_protocol="eigen", train=True)
    assert not train.native_labels
    lidar = by_stem["0000000005"].arrays["lidar"]
    assert np.allclose(train.load_raw(train.records[0])["depth"], lidar, rtol=1e-5, atol=0)


def test_kitti_eigen_missing_scan_or_calibration_is_one_error_line(tmp_path, capsys):
    frames = _kitti_eigen(tmp_path)
    raw = tmp_path / "kitti_depth" / "raw"

    def error():
        with pytest.raises(SystemExit):
            cli(lambda _: _build("kitti_depth", tmp_path, "test", ("depth",), kitti_protocol="eigen")[0], None)
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1, err
        return err
    scan = frames[0].paths["velodyne"]
    os.rename(scan, scan + ".x")
    err = error()
    assert f"missing velodyne scan {scan};" in err and "raw/{date}/{drive}/velodyne_points/data/{frame}.bin" in err
    os.rename(scan + ".x", scan)
    calib = raw / DATE2 / "calib_velo_to_cam.txt"
    os.rename(calib, str(calib) + ".x")
    err = error()
    assert f"missing calibration file {calib};" in err and "raw/{date}/calib_velo_to_cam.txt (R, T)" in err
    os.rename(str(calib) + ".x", calib)
    cam = raw / "2011_09_26" / "calib_cam_to_cam.txt"          # of the first record (sorted names)
    cam.write_text("calib_time: x\nP_rect_02: " + " ".join(["1"] * 12) + "\n")
    err = error()
    assert f"{cam}: no 'R_rect_00:' line of 9 numbers" in err and "calib_cam_to_cam.txt (R_rect_00" in err
    trees.kitti_calib(tmp_path, "2011_09_26", (375, 1242))
    with open(scan, "ab") as fh:
        fh.write(b"\0" * 4)                                    # one float too many
    err = error()
    assert f"{scan}: " in err and "not whole 16-byte points" in err and "float32 x, y, z, reflectance" in err
    with pytest.raises(DataError, match="--kitti-protocol must be annotated or eigen, got 'raw'"):
        _build("kitti_depth", tmp_path, "test", ("depth",), kitti_protocol="raw")


def test_kitti_protocol_option_reaches_kitti_only(tmp_path):
    trees.nyuv2(tmp_path, 1, splits=("train",))
    nyu = _build("nyuv2", tmp_path, "train", ("depth",), kitti_protocol="eigen")   # ignored, not an error
    assert len(nyu) == 1 and not hasattr(nyu, "kitti_protocol")
    proc = build_dataset("proc-a", "val", (H, W), length=1, labels=["depth"], kitti_protocol="eigen")
    assert len(proc) == 1


# ----------------------------------------------------------------------------- folder
def _folder(root):
    """train/x.png and val/z.png with the same semantic ids and 16-bit depth (3 classes, void
    250, depth_scale 100, focal 500), plus train/sub/y.jpg: a JPEG in a sub-folder whose depth
    is a float .npy with NaN, negative and infinite values."""
    base = root / "folder"
    ids = np.array([0, 1, 2, 250, 7] * 20)[:H * W].reshape(H, W).astype(np.uint8)
    depth = (np.arange(H * W).reshape(H, W) * 500).astype(np.uint16)
    trees.folder(root, frames={"train": ["x"], "val": ["z"]}, size=(H, W), labels=("semantic", "depth"),
                 classes=["a", "b", "c"], ignore_index=250, depth_scale=100.0, focal=500.0, semantic=ids,
                 depth=depth)
    trees.save(str(base / "train" / "images" / "sub" / "y.jpg"), trees.rgb((H, W), 1))
    trees.save(str(base / "train" / "semantic" / "sub" / "y.png"), ids)
    npy = np.full((H, W), 3.5, np.float32)
    npy[0, :3] = (np.nan, -1.0, np.inf)
    os.makedirs(base / "train" / "depth" / "sub")
    np.save(base / "train" / "depth" / "sub" / "y.npy", npy)
    return ids, depth, npy


def test_folder_labels_and_encodings(tmp_path):
    ids, depth, _ = _folder(tmp_path)
    ds = _build("folder", tmp_path, "train", ("semantic", "depth"))
    assert [r["name"] for r in ds.records] == ["folder/train/sub/y", "folder/train/x"]
    assert ds.classes == 3 and 7 not in ds.known_ids and 250 in ds.known_ids
    x = ds[1]
    expected = np.vectorize({0: 0, 1: 1, 2: 2, 250: IGNORE, 7: IGNORE}.get)(ids)
    assert torch.equal(x["semantic"], torch.from_numpy(expected).long())
    assert torch.allclose(x["depth"], torch.from_numpy(depth / 100.0).float())
    y = ds[0]["depth"]
    assert y[0, :3].tolist() == [0, 0, 0] and torch.all(y[1:] == 3.5)
    assert [r["name"] for r in _build("folder", tmp_path, "val").records] == ["folder/val/z"]
    rescaled = _build("folder", tmp_path, "train", ("depth",), focal_ref=1000.0)[1]
    assert torch.allclose(rescaled["depth"], x["depth"] * 2) and rescaled["depth_scale"] == 0.5
    with pytest.raises(DataError, match="no 19-class map"):
        _build("folder", tmp_path, "train", ("semantic",), classes=19)


def test_folder_normals_and_edges(tmp_path):
    _folder(tmp_path)
    base = tmp_path / "folder" / "train"
    v = np.full((H, W, 3), 128, np.uint8)
    v[..., 2] = 0                                    # (0.0039, 0.0039, -1) -> about (0, 0, -1)
    v[0, 0] = 0                                      # invalid
    trees.save(str(base / "normals" / "x.png"), v)
    chw = np.zeros((3, H, W), np.float32)
    chw[1] = -2.0                                    # not unit: renormalised to (0, -1, 0)
    os.makedirs(base / "normals" / "sub")
    np.save(base / "normals" / "sub" / "y.npy", chw)
    edges = (np.arange(H * W).reshape(H, W) % 256).astype(np.uint8)
    for stem in ("x", "sub/y"):
        trees.save(str(base / "edges" / f"{stem}.png"), edges)
    ds = _build("folder", tmp_path, "train", ("normals", "edges"))
    x, y = ds[1], ds[0]
    assert torch.all(x["normals"][:, 0, 0] == 0)
    assert torch.allclose(x["normals"][:, 1:, :], torch.tensor([0.0, 0.0, -1.0]).view(3, 1, 1), atol=1e-2)
    assert torch.allclose(y["normals"], torch.tensor([0.0, -1.0, 0.0]).view(3, 1, 1).expand(3, H, W))
    assert torch.allclose(x["edges"], torch.from_numpy(edges / 255.0).float())


def test_folder_bad_inputs(tmp_path):
    _folder(tmp_path)
    with pytest.raises(DataError, match="normals labels were requested but .*train/normals does not exist"):
        _build("folder", tmp_path, "train", ("normals",))
    os.remove(tmp_path / "folder" / "train" / "semantic" / "sub" / "y.png")
    with pytest.raises(DataError, match="images/sub/y.jpg: its semantic file .*semantic/sub/y.png"):
        _build("folder", tmp_path, "train", ("semantic",))
    trees.write_garbage(tmp_path / "folder" / "train" / "semantic" / "x.png")
    trees.save(str(tmp_path / "folder" / "train" / "semantic" / "sub" / "y.png"), np.zeros((H, W), np.uint8))
    with pytest.raises(DataError, match="cannot read .*semantic/x.png"):
        _build("folder", tmp_path, "train", ("semantic",))[1]
    cfg = tmp_path / "folder" / "dataset.json"
    bad_configs = (("{oops", "cannot read .*dataset.json"),
                   ('{"classes": ["a"], "depth_scle": 1}', r"dataset.json: unknown keys \['depth_scle'\]"),
                   ('{"classes": ["a", "b"], "ignore_index": 1}', "dataset.json: 'ignore_index'"),
                   ('{"depth_scale": 0}', "dataset.json: 'depth_scale' must be a positive"),
                   ('{"classes": ["a"], "splits": ["val"]}', "split 'train' is not in 'splits'"))
    for text, message in bad_configs:
        cfg.write_text(text)
        with pytest.raises(DataError, match=message):
            _build("folder", tmp_path, "train")
    cfg.write_text('{"depth_scale": 10}')
    with pytest.raises(DataError, match="semantic labels need 'classes' in .*dataset.json"):
        _build("folder", tmp_path, "train", ("semantic",))


def test_train_supervised_takes_the_folder_class_list(tmp_path):
    """tools/train_supervised.py builds a model with the classes of dataset.json (3 here), as
    train_tasks.py does, not the registry's unknown count."""
    import sys
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tools"))
    import train_supervised
    _folder(tmp_path)                                # val/z has the same labels as train/x
    root = str(tmp_path / "folder")
    args = train_supervised.get_args_parser().parse_args(
        ["--src", "folder", "--tgt", "folder", "--src-root", root, "--tgt-root", root, "--tasks",
         "semantic", "--size", str(H), str(W), "--batch-size", "2", "--iters", "1", "--workers", "0",
         "--device", "cpu", "--output-dir", str(tmp_path / "run")])
    metrics = train_supervised.main(args)
    ckpt = torch.load(tmp_path / "run" / "checkpoint.pth", weights_only=True)
    assert ckpt["model_specs"]["model"]["kwargs"]["tasks"] == {"semantic": 3}
    assert len(metrics["target"]["per_class"]) == 3
