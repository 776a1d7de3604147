"""tests/trees.py: every tree write_all writes opens through the registry for each split and label
it provides, tools/check_dataset.py finds no problem in it, frames have the documented 1/16
sizes (Mapillary's differing from frame to frame), and the files decode to what the writer
says it wrote, by the formulas of docs/reference.md ("Datasets") written out here."""
import json
import os
import sys

import numpy as np
import pytest
import torch

from lib.data import build_dataset
from tests import trees

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tools"))
import check_dataset  # noqa: E402

SDE = ["semantic", "depth", "edges"]
# name -> {split: labels it provides}, from the loaders' docstrings: Cityscapes has no fine
# labels on test (private) or train_extra (coarse only); val is test for ISPRS and NYUv2.
PROVIDES = {
    "cityscapes": {"train": SDE, "val": SDE, "test": ["depth", "edges"], "train_extra": ["depth", "edges"]},
    "synthia": {"train": SDE, "val": SDE},
    "carla": {"train": SDE, "val": SDE, "test": SDE},
    "gta5": {s: ["semantic", "edges"] for s in ("train", "val", "test")},
    "synscapes": {s: SDE for s in ("train", "val", "test")},
    "mapillary": {s: ["semantic", "edges"] for s in ("train", "val")},
    "isprs_potsdam": {s: SDE for s in ("train", "val", "test")},
    "isprs_vaihingen": {s: SDE for s in ("train", "val", "test")},
    "nyuv2": {s: ["semantic", "depth", "normals", "edges"] for s in ("train", "val", "test")},
    "kitti_depth": {s: ["depth", "edges"] for s in ("train", "val", "test")},
    "folder": {s: ["semantic", "depth", "normals", "edges"] for s in ("train", "val", "test")},
    "pbrs": {s: ["semantic", "depth", "normals", "edges"] for s in ("train", "val")},
    "indoor_src": {s: ["semantic", "normals", "edges"] for s in ("train", "val")},
    "gta5d": {s: ["semantic", "depth", "edges"] for s in ("train", "val")},
    **{face: {s: ["normals", "edges"] for s in ("train", "val", "test")}
       for face in ("sfsyn", "sfsyn_front", "facewh")},
}
# Native frame size (H, W): 1/16 of the real one; KITTI's fixed 352x1216 benchmark crop.
SIZE = {"cityscapes": (64, 128), "synthia": (48, 80), "carla": (64, 128), "gta5": (66, 120),
        "synscapes": (45, 90), "isprs_potsdam": (32, 32), "isprs_vaihingen": (32, 32), "nyuv2": (30, 40),
        "kitti_depth": (352, 1216), "folder": (32, 64), "pbrs": (30, 40), "indoor_src": (30, 40),
        "gta5d": (66, 120), "sfsyn": (32, 32), "sfsyn_front": (32, 32), "facewh": (32, 32)}
FACES = ("sfsyn", "sfsyn_front", "facewh", "folder")       # trees with the keypoint extension
# Depth formats without an invalid value here: ISPRS heights are >= 1 / 65535 by design and
# SYNTHIA keeps the saturated sky (655.35 m).
ALL_VALID = ("isprs_potsdam", "isprs_vaihingen", "synthia")
EXTRA_ROOTS = ("pbrs", "indoor_src", "gta5d", "sfsyn", "sfsyn_front", "facewh")   # --src-root trees


@pytest.fixture(scope="module")
def data(module_tmp):
    """(DATA_ROOT, {name: path}) of write_all."""
    root = module_tmp("data")
    return str(root), trees.write_all(root)


def _open(data, name, split, labels, **options):
    """A registered dataset from DATA_ROOT, an extra root as `folder` with its own root."""
    data_root, paths = data
    if name in EXTRA_ROOTS:
        return build_dataset("folder", split, (16, 16), root=paths[name], labels=labels, **options)
    return build_dataset(name, split, (16, 16), data_root=data_root, labels=labels, **options)


def test_write_all_names_every_registered_dataset_and_the_extra_roots(data):
    data_root, paths = data
    assert set(paths) == {"data", *PROVIDES} and paths.pop("data") == data_root
    for name, path in paths.items():            # registry folders and extra roots side by side
        assert path == os.path.join(data_root, name) and os.path.isdir(path)


@pytest.mark.parametrize("name", sorted(PROVIDES))
def test_every_split_and_label_builds_at_its_size(data, name):
    for split, labels in PROVIDES[name].items():
        extra = {"keypoints": True, "keypoint_depth": True} if name in FACES else {}
        ds = _open(data, name, split, labels, **extra)
        assert len(ds) == 2, (name, split)                     # write_all's frames per split
        s = ds[0]
        assert set(labels) <= set(s), (name, split)
        if name != "mapillary":
            assert tuple(s["image"].shape[-2:]) == SIZE[name], (name, split)
        if name in FACES:                                      # K = 5 by default
            assert s["keypoints"].shape == (5, *s["image"].shape[-2:]) and s["keypoint_depth"].shape == (5,)
        if "normals" in labels:                                # unit vectors or 0 (invalid)
            norm = s["normals"].norm(dim=0)
            assert torch.all(((norm - 1).abs() < 1e-4) | (norm == 0)) and (norm > 0).any()


@pytest.mark.parametrize("name", sorted(PROVIDES))
def test_check_dataset_finds_no_problem(data, name, tmp_path, capsys):
    data_root, paths = data
    argv = ["folder", "--root", paths[name]] if name in EXTRA_ROOTS else [name, "--data-root", data_root]
    report_path = str(tmp_path / "r.json")
    status = check_dataset.main([*argv, "--json", report_path])
    capsys.readouterr()
    with open(report_path) as f:
        report = json.load(f)
    assert status == 0 and report["problems"] == []
    for split, labels in PROVIDES[name].items():
        s = report["splits"][split]
        assert s["labels"] == labels and s["checked"] == 2 and s["errors"] == 0, (name, split)
        assert s.get("unknown_id_pixels", 0) == 0
        if "depth" in labels:       # valid pixels, and invalid ones (sky, holes) where the format has them
            assert 0 < s["depth"]["valid"] <= s["depth"]["pixels"]
            assert (s["depth"]["valid"] == s["depth"]["pixels"]) == (name in ALL_VALID), (name, split)
        if name == "mapillary":                 # Vistas frames differ in size, label = its image's
            assert len(s["image_sizes"]) == 2, s["image_sizes"]
        else:
            assert s["image_sizes"] == {"%dx%d" % SIZE[name]: 2}


def test_kitti_tree_under_the_eigen_protocol(data, tmp_path, capsys):
    """write_all's KITTI tree has a velodyne scan and the calibration files for every frame:
    each split opens under --kitti-protocol eigen at the raw frame size (no KB crop), with
    valid depth in the Garg crop only, and check_dataset.py finds no problem in it."""
    for split in ("train", "val", "test"):
        ds = _open(data, "kitti_depth", split, ["depth"], kitti_protocol="eigen")
        s = ds[0]
        assert len(ds) == 2 and tuple(s["image"].shape[-2:]) == tuple(s["depth"].shape) == (375, 1242)
        valid = s["depth"] > 0
        rows, cols = valid.any(1).nonzero().squeeze(1), valid.any(0).nonzero().squeeze(1)
        # Garg crop of 375x1242: rows 153..370, columns 44..1196 (0.408 / 0.992 x 375, 0.036 / 0.964 x 1242)
        assert rows.min() >= 153 and rows.max() <= 370 and cols.min() >= 44 and cols.max() <= 1196
    data_root, _ = data
    report_path = str(tmp_path / "r.json")
    status = check_dataset.main(["kitti_depth", "--data-root", data_root, "--kitti-protocol", "eigen",
                                 "--labels", "depth", "--json", report_path])
    capsys.readouterr()
    with open(report_path) as f:
        report = json.load(f)
    assert status == 0 and report["problems"] == []
    assert report["splits"]["test"]["image_sizes"] == {"375x1242": 2} and report["splits"]["test"]["errors"] == 0


def test_mapillary_frames_differ_in_size_and_each_label_has_its_image_size(tmp_path):
    tree = trees.mapillary(tmp_path, 3)
    ds = build_dataset("mapillary", "train", (16, 16), data_root=str(tmp_path), labels=["semantic"])
    shapes = [tuple(ds[i]["semantic"].shape) for i in range(3)]
    assert sorted(shapes) == sorted([(60, 80), (75, 100), (48, 90)])     # MAPILLARY_SIZES[:3]
    assert [r["name"] for r in ds.records] == sorted(f.name for f in tree.split("train"))


def test_files_decode_to_what_was_written(data):
    """The writer's raw arrays through the documented encodings equal the loaders' output."""
    data_root, paths = data
    tree = trees.cityscapes(os.path.join(data_root, "again"), 1, splits=("train",))
    f = tree.frames[0]
    b, fx = f.arrays["camera"]
    p = f.arrays["disparity"].astype(np.float64)
    d = np.where(p > 1, b * fx / np.maximum((p - 1) / 256, 1e-9), 0)         # d = (p - 1) / 256 px
    ds = build_dataset("cityscapes", "train", (64, 128), data_root=os.path.join(data_root, "again"),
                       labels=["depth"])
    assert np.allclose(ds[0]["depth"].numpy(), d, rtol=1e-5)
    assert fx == pytest.approx(2262.52 / 16)                                  # scaled to 128 px
    carla = trees.carla(os.path.join(data_root, "again"), 1, splits=("val",), layout="lists")
    rgb = carla.frames[0].arrays["depth"].astype(np.int64)
    code = rgb[..., 0] + 256 * rgb[..., 1] + 65536 * rgb[..., 2]
    ds = build_dataset("carla", "val", (64, 128), data_root=os.path.join(data_root, "again"),
                       labels=["semantic", "depth"])
    assert [r["name"] for r in ds.records] == ["carla/val/val_episode_0000/MyCamera_L/000000"]
    got = ds[0]
    far = code == 2 ** 24 - 1
    assert far.any() and torch.all(got["semantic"][torch.from_numpy(far)] == 10)   # sky
    assert np.allclose(got["depth"].numpy(), np.where(far, 0, code / (2 ** 24 - 1) * 1000), rtol=1e-5)
    nyu = trees.nyuv2(os.path.join(data_root, "again"), 1, splits=("train",))
    ds = build_dataset("nyuv2", "train", (30, 40), data_root=os.path.join(data_root, "again"), labels=["depth"])
    assert np.allclose(ds[0]["depth"].numpy(), nyu.frames[0].arrays["depth"] / 1000.0)
    kitti = trees.kitti(os.path.join(data_root, "again"), 1, splits=("train",), eigen=False)
    ds = build_dataset("kitti_depth", "train", (352, 1216), data_root=os.path.join(data_root, "again"),
                       labels=["depth"])
    v = kitti.frames[0].arrays["depth"]              # 375x1242: the bottom 352 rows, columns 13..1228
    assert np.allclose(ds[0]["depth"].numpy(), v[23:, 13:1229] / 256.0)
    assert ds.focal(ds.records[0]) == pytest.approx(721.5377, rel=1e-6)      # from the calibration file


def test_trees_are_deterministic(tmp_path):
    """The same call writes the same bytes: seeded content, no global random state."""
    for run in ("a", "b"):
        trees.cityscapes(tmp_path / run, 1, splits=("train",))
        trees.folder(tmp_path / run, "faces", 1, labels=("normals",), mask=True, keypoints=3, keypoint_depth=True)
    files = sorted(os.path.relpath(os.path.join(d, f), tmp_path / "a")
                   for d, _, fs in os.walk(tmp_path / "a") for f in fs)
    assert len(files) == 4 + 2 * 4      # image, gtFine, disparity, camera; 2 splits x 4 face files
    for rel in files:
        with open(tmp_path / "a" / rel, "rb") as fa, open(tmp_path / "b" / rel, "rb") as fb:
            assert fa.read() == fb.read(), rel
    other = trees.cityscapes(tmp_path / "c", 1, splits=("train",), seed=1)
    assert not np.array_equal(other.frames[0].arrays["image"],
                              trees.cityscapes(tmp_path / "d", 1, splits=("train",)).frames[0].arrays["image"])
