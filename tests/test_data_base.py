"""Shared real-data machinery: lib/data/transforms.py, lib/data/base.py and the registry.

Everything runs on a test-local FileDataset (`Tiny`) over PNG / npy files written here into
pytest's tmp_path, so expected values are known exactly: images, raw label ids, depth in
millimetres (16-bit PNG) and unit normals. Expected results are computed independently
(index formulas, numpy re-implementations), never by calling the code under test twice.
"""
import argparse
import os
import random
import re

import numpy as np
import pytest
import torch
from PIL import Image

from lib.args import add_data_args
from lib.data import DATASETS, build_dataset, data_options, register
from lib.data import transforms as T
from lib.data.base import (
    DataError,
    FileDataset,
    apply_lut,
    list_files,
    read_edges,
    read_gray,
    read_list,
    read_npy,
    read_png16,
    read_rgb,
)
from lib.data.procedural import camera
from lib.edges import detect_edges
from lib.engine import UserError
from lib.evaluation import Scorer
from tests import trees

H, W = 8, 12
FOCAL = 100.0                                  # Tiny's native focal length (pixels)
LUT = np.array([255, 0, 1, 2], dtype=np.int64)  # raw id 0 = void, 1..3 -> classes 0..2


class Tiny(FileDataset):
    """Test layout: per split an image folder and one folder per label, matched by stem.

    Encodings (chosen to exercise the readers): labels are 8-bit raw ids mapped by LUT, depth
    is a 16-bit PNG in millimetres, normals an HxWx3 float npy, focal length FOCAL pixels.
    """

    key = "tiny-base"
    folder = "tiny"
    splits = ("train", "val")
    labels = ("semantic", "depth", "normals", "edges")
    class_sets = (3,)
    layout = ("tiny/image/{split}/*.png         RGB\n"
              "tiny/semantic/{split}/*.png      8-bit raw ids\n"
              "tiny/depth/{split}/*.png         16-bit millimetres\n"
              "tiny/normals/{split}/*.npy       HxWx3 float")
    known_ids = range(4)

    def index(self, split):
        folder = os.path.join(self.root, "image", split)
        records = []
        for rel in list_files(folder, ".png", "images", self.layout):
            stem = rel[:-len(".png")]
            rec = {"name": f"{self.key}/{split}/{stem}", "image": os.path.join(folder, rel)}
            for lab, ext in (("semantic", ".png"), ("depth", ".png"), ("normals", ".npy")):
                rec[lab] = os.path.join(self.root, lab, split, stem + ext)
            records.append(rec)
        return records

    def label_ids(self, rec):
        return read_gray(rec["semantic"])

    def label_lut(self):
        return LUT

    def load_depth(self, rec):
        return read_png16(rec["depth"]).astype(np.float32) / 1000.0

    def load_normals(self, rec):
        return read_npy(rec["normals"]).astype(np.float32)

    def focal(self, rec):
        return FOCAL


def write_sample(root, split, stem, seed=0, h=H, w=W):
    """Write one Tiny sample; returns the arrays as written."""
    rng = np.random.default_rng(seed)
    arrays = {"image": rng.integers(0, 256, (h, w, 3), dtype=np.uint8),
              "ids": rng.integers(0, 4, (h, w)).astype(np.uint8),
              "depth_mm": rng.integers(0, 60000, (h, w)).astype(np.uint16)}
    n = rng.normal(size=(h, w, 3))
    arrays["normals"] = (n / np.linalg.norm(n, axis=-1, keepdims=True)).astype(np.float32)
    trees.save(os.path.join(root, "image", split, stem + ".png"), arrays["image"])
    trees.save(os.path.join(root, "semantic", split, stem + ".png"), arrays["ids"])
    trees.save(os.path.join(root, "depth", split, stem + ".png"), arrays["depth_mm"])
    os.makedirs(os.path.join(root, "normals", split), exist_ok=True)
    np.save(os.path.join(root, "normals", split, stem + ".npy"), arrays["normals"])
    return arrays


@pytest.fixture
def tiny(tmp_path):
    """DATA_ROOT with tiny/ holding two train samples and one val sample."""
    root = str(tmp_path / "tiny")
    written = {"b": write_sample(root, "train", "b", 1), "a": write_sample(root, "train", "a", 2),
               "v": write_sample(root, "val", "v", 3)}
    return root, written


def image_tensor(arr):
    """uint8 HxWx3 -> float 3xHxW in [0, 1], written out independently of to_tensors."""
    return torch.tensor(arr.transpose(2, 0, 1), dtype=torch.float32) / 255.0


# ----------------------------------------------------------------------------- transforms
def test_resize_labels_nearest_and_image_bilinear():
    w_in = 16
    ramp = torch.arange(w_in, dtype=torch.float32).repeat(3, 4, 1)       # 3x4x16, value = column
    labels = torch.tensor([3, 3, 7, 7, 1, 1, 1, 9] * 2).repeat(4, 1)      # 4x16, int64
    depth = torch.arange(w_in, dtype=torch.float32).repeat(4, 1) * 1.5
    out = T.resize_sample({"image": ramp, "semantic": labels, "depth": depth}, (2, 8))
    assert out["semantic"].dtype == torch.int64 and out["semantic"].shape == (2, 8)
    # nearest-exact at a 2x reduction picks source column floor((j + 0.5) * 2) = 2j + 1.
    cols = [2 * j + 1 for j in range(8)]
    assert torch.equal(out["semantic"][0], labels[0, cols])
    assert set(out["semantic"].unique().tolist()) <= {1, 3, 7, 9}
    assert torch.equal(out["depth"][0], depth[0, cols])
    # Bilinear (antialiased, symmetric kernel) keeps a linear ramp linear away from the border:
    # output column j samples source coordinate (j + 0.5) * 2 - 0.5.
    expect = torch.tensor([(j + 0.5) * 2 - 0.5 for j in range(2, 6)])
    assert torch.allclose(out["image"][0, 0, 2:6], expect, atol=1e-5)


def test_crop_inside_and_padding():
    img = torch.rand(3, 4, 6)
    sem = torch.randint(0, 5, (4, 6))
    normals = torch.rand(3, 4, 6)
    inside = T.crop({"image": img, "semantic": sem}, 1, 2, (2, 3))
    assert torch.equal(inside["image"], img[:, 1:3, 2:5]) and torch.equal(inside["semantic"], sem[1:3, 2:5])
    big = T.crop({"image": img, "semantic": sem, "depth": sem.float() + 1, "normals": normals,
                  "edges": torch.ones(4, 6)}, -1, -2, (6, 10))
    assert torch.equal(big["semantic"][1:5, 2:8], sem) and torch.equal(big["image"][:, 1:5, 2:8], img)
    pad = torch.ones(6, 10, dtype=torch.bool)
    pad[1:5, 2:8] = False
    assert (big["semantic"][pad] == 255).all()
    for key in ("depth", "edges"):
        assert (big[key][pad] == 0).all()
    assert (big["image"][:, pad] == 0).all() and (big["normals"][:, pad] == 0).all()


def test_paired_transform_centres_padding_when_crop_is_larger():
    sem = torch.randint(0, 5, (4, 6))
    out = T.paired_transform({"image": torch.rand(3, 4, 6), "semantic": sem}, (8, 10), train=True)
    # -((h - H) // 2): 2 rows above, 2 columns left.
    assert torch.equal(out["semantic"][2:6, 2:8], sem) and (out["semantic"][:2] == 255).all()


def test_hflip_mirrors_labels_and_negates_normal_x():
    n = torch.randn(3, 4, 5)
    sample = {"image": torch.rand(3, 4, 5), "semantic": torch.randint(0, 3, (4, 5)), "normals": n.clone(),
              "name": "x"}
    out = T.hflip(sample)
    cols = list(range(4, -1, -1))
    assert torch.equal(out["semantic"], sample["semantic"][:, cols])
    assert torch.equal(out["image"], sample["image"][:, :, cols])
    assert torch.equal(out["normals"][0], -n[0][:, cols])
    assert torch.equal(out["normals"][1:], n[1:][:, :, cols])
    assert torch.equal(sample["normals"], n) and out["name"] == "x"     # input untouched


def _jitter_reference(img, p=0.5):
    """AT/DT's jitter re-derived in numpy: one draw against p, gamma, brightness, 3 gains, clip."""
    if random.random() >= p:
        return img.numpy()
    x = img.numpy().astype(np.float64) ** random.uniform(0.8, 1.2)
    x = x * random.uniform(0.5, 2.0)
    gains = np.array([random.uniform(0.8, 1.2) for _ in range(3)])
    return np.clip(x * gains[:, None, None], 0, 1)


def test_photometric_jitter_matches_independent_computation():
    img = torch.rand(3, 4, 5)
    changed = unchanged = 0
    for seed in range(12):
        random.seed(seed)
        out = T.photometric_jitter(img)
        random.seed(seed)
        expect = _jitter_reference(img)
        assert np.allclose(out.numpy(), expect, atol=1e-5), seed
        same = torch.equal(out, img)
        changed, unchanged = changed + (not same), unchanged + same
    assert changed and unchanged        # both branches of the p = 0.5 draw were exercised


def test_evaluation_keeps_full_resolution_and_training_crops():
    sample = {"image": torch.rand(3, H, W), "semantic": torch.zeros(H, W, dtype=torch.long)}
    assert T.paired_transform(dict(sample), (4, 4))["image"].shape == (3, H, W)
    assert T.paired_transform(dict(sample), (4, 4), resize=(4, 6))["semantic"].shape == (4, 6)
    random.seed(0)
    assert T.paired_transform(dict(sample), (4, 4), train=True)["semantic"].shape == (4, 4)


# ----------------------------------------------------------------------------- FileDataset
def test_sample_decodes_what_was_written(tiny):
    root, written = tiny
    ds = Tiny(root, "train", (H, W), labels=("semantic", "depth", "normals"))
    assert [r["name"] for r in ds.records] == ["tiny-base/train/a", "tiny-base/train/b"]   # sorted
    s, arrays = ds[0], written["a"]
    assert s["name"] == "tiny-base/train/a"
    assert torch.allclose(T.denormalize(s["image"]), image_tensor(arrays["image"]), atol=1e-6)
    assert s["semantic"].dtype == torch.int64
    assert np.array_equal(s["semantic"].numpy(), LUT[arrays["ids"]])
    assert np.allclose(s["depth"].numpy(), arrays["depth_mm"] / 1000.0)
    assert np.allclose(s["normals"].numpy(), arrays["normals"].transpose(2, 0, 1))
    assert len(Tiny(root, "val", (H, W))) == 1


def test_ids_outside_the_lut_are_ignored(tiny):
    root, _ = tiny
    ids = np.ones((H, W), np.uint8)
    ids[0, 0], ids[0, 1], ids[0, 2] = 7, 200, 3          # 7, 200: not in the 4-entry LUT
    Image.fromarray(ids).save(os.path.join(root, "semantic", "train", "a.png"))
    sem = Tiny(root, "train", (H, W), labels=("semantic",))[0]["semantic"]
    assert sem[0, :3].tolist() == [255, 255, 2] and (sem[1:] == 0).all()
    assert apply_lut(LUT, np.array([-1, 0, 3, 4])).tolist() == [255, 255, 2, 255]


def test_size_mismatch_names_both_files(tiny):
    root, _ = tiny
    label = os.path.join(root, "semantic", "train", "a.png")
    Image.fromarray(np.ones((H, W - 2), np.uint8)).save(label)
    with pytest.raises(DataError) as err:
        Tiny(root, "train", (H, W), labels=("semantic",))[0]
    assert label in str(err.value) and os.path.join(root, "image", "train", "a.png") in str(err.value)


@pytest.mark.parametrize("target", ["image", "depth"])
def test_corrupt_files_are_named(tiny, target):
    root, _ = tiny
    path = os.path.join(root, target, "train", "a.png")
    with open(path, "rb") as f:
        head = f.read(40)                                # a truncated PNG
    with open(path, "wb") as f:
        f.write(head)
    with pytest.raises(DataError, match="cannot read") as err:
        Tiny(root, "train", (H, W), labels=("depth",))[0]
    assert path in str(err.value)
    with open(path, "wb") as f:
        f.write(b"not an image at all")
    with pytest.raises(DataError) as err:
        Tiny(root, "train", (H, W), labels=("depth",))[0]
    assert path in str(err.value)


def test_layout_errors(tiny, tmp_path):
    root, _ = tiny
    with pytest.raises(DataError, match=re.escape("tiny/depth/{split}")) as err:
        Tiny(str(tmp_path / "nowhere"), "train", (H, W))
    assert str(tmp_path / "nowhere") in str(err.value)
    os.rename(os.path.join(root, "image", "val"), os.path.join(root, "image", "val_moved"))
    with pytest.raises(DataError, match="expected layout") as err:
        Tiny(root, "val", (H, W))
    assert os.path.join(root, "image", "val") in str(err.value)
    with pytest.raises(DataError, match="train, val"):
        Tiny(root, "test", (H, W))
    with pytest.raises(DataError, match="--classes"):
        Tiny(root, "train", (H, W), classes=19)
    with pytest.raises(DataError, match="missing list file"):
        read_list(str(tmp_path / "list.txt"), Tiny.layout)
    (tmp_path / "list.txt").write_text("# comment\na\n\n  b \n")
    assert read_list(str(tmp_path / "list.txt"), Tiny.layout) == ["a", "b"]


def test_readers_keep_bits(tmp_path):
    rgb16 = np.array([[[0, 1, 65535], [300, 40000, 256]]], dtype=np.uint16)     # 1x2x3
    trees.write_png16(str(tmp_path / "rgb16.png"), rgb16)     # PIL cannot write 16-bit RGB
    out = read_png16(str(tmp_path / "rgb16.png"))
    assert out.shape == (1, 2, 3) and np.array_equal(out, rgb16.astype(np.int64))
    grey16 = np.array([[0, 1000, 65535]], dtype=np.uint16)
    Image.fromarray(grey16).save(tmp_path / "g16.png")
    assert np.array_equal(read_gray(str(tmp_path / "g16.png")), grey16)
    assert np.array_equal(read_png16(str(tmp_path / "g16.png")), grey16)
    Image.fromarray(np.array([[0, 51, 255]], np.uint8)).save(tmp_path / "e8.png")
    assert np.allclose(read_edges(str(tmp_path / "e8.png")), [[0, 0.2, 1]])
    assert np.allclose(read_edges(str(tmp_path / "g16.png")), grey16 / 65535.0)
    assert read_rgb(str(tmp_path / "e8.png")).shape == (1, 3, 3)
    with pytest.raises(DataError, match="missing file"):
        read_npy(str(tmp_path / "none.npy"))


# ----------------------------------------------------------------------------- edges
def test_edges_from_cache_or_computed(tiny):
    root, written = tiny
    ds = Tiny(root, "train", (H, W), labels=("edges",))
    rec = ds.records[0]
    assert ds.edge_cache_path(rec) == os.path.join(root, "edges", "train", "a.png")
    computed = ds[0]["edges"]
    assert torch.allclose(computed, detect_edges(image_tensor(written["a"]["image"])), atol=1e-6)
    cached = np.random.default_rng(5).integers(0, 256, (H, W), dtype=np.uint8)
    os.makedirs(os.path.dirname(ds.edge_cache_path(rec)))
    Image.fromarray(cached).save(ds.edge_cache_path(rec))
    assert np.allclose(ds[0]["edges"].numpy(), cached / 255.0)
    cached16 = (cached.astype(np.uint16) * 250)
    Image.fromarray(cached16).save(ds.edge_cache_path(rec))
    assert np.allclose(ds[0]["edges"].numpy(), cached16 / 65535.0)
    Image.fromarray(cached[:, :-1]).save(ds.edge_cache_path(rec))
    with pytest.raises(DataError, match="edges is 8x11"):
        ds[0]


def test_edges_cache_mode_requires_the_cache(tiny):
    """--edges cache (the AT/DT paper preset: external edge maps) never falls back to lib.edges."""
    root, _ = tiny
    with pytest.raises(DataError, match="no edge cache at .*make_edges.py"):
        Tiny(root, "train", (H, W), labels=("edges",), edges="cache")
    ds = Tiny(root, "train", (H, W), labels=("edges",))
    path = ds.edge_cache_path(ds.records[0])
    os.makedirs(os.path.dirname(path))
    Image.fromarray(np.full((H, W), 255, np.uint8)).save(path)
    cached = Tiny(root, "train", (H, W), labels=("edges",), edges="cache")
    assert torch.equal(cached[0]["edges"], torch.ones(H, W))
    with pytest.raises(DataError, match=r"b\.png: cached edge map missing"):
        cached[1]


# ----------------------------------------------------------------------------- depth rescaling
def test_focal_ref_rescales_depth_and_scorer_converts_back(tiny):
    root, written = tiny
    depth_m = written["a"]["depth_mm"] / 1000.0
    ds = Tiny(root, "train", (H, W), labels=("depth",), focal_ref=2 * FOCAL)
    s = ds[0]
    assert np.allclose(s["depth"].numpy(), depth_m * 2.0) and s["depth_scale"] == pytest.approx(0.5)
    # A resize to half width halves the focal in pixels: factor f_ref / (f / 2) = 4.
    s_half = Tiny(root, "train", (H, W), labels=("depth",), resize=(4, 6), focal_ref=2 * FOCAL)[0]
    assert np.allclose(s_half["depth"].numpy(), depth_m[1::2, 1::2] * 4.0)
    assert s_half["depth_scale"] == pytest.approx(0.25)
    assert s["focal"] == FOCAL and s_half["focal"] == FOCAL / 2   # the native focal, after resize
    # Depth up to 60 m becomes up to 120 m at the reference focal: without the conversion back
    # the Scorer (max_depth 80) would drop pixels and the numbers would differ. The label comes
    # back with depth_scale, the prediction with the model's own convention (depth_focal).
    pred_m = torch.tensor(depth_m * 1.1 + 0.3, dtype=torch.float32)[None]
    metres = Scorer(["depth"])
    metres.update({"depth": pred_m}, {"depth": torch.tensor(depth_m, dtype=torch.float32)[None]})
    expect = metres.compute()
    batch = {"depth": s["depth"][None], "depth_scale": torch.tensor([s["depth_scale"]]),
             "focal": torch.tensor([s["focal"]])}
    scaled = Scorer(["depth"], depth_focal=2 * FOCAL)           # a model trained at the reference
    scaled.update({"depth": pred_m * 2.0}, batch)
    metric = Scorer(["depth"])                                   # a model trained in metres
    metric.update({"depth": pred_m}, batch)
    for got in (scaled.compute(), metric.compute()):
        assert expect.keys() == got.keys()
        for key in expect:
            assert got[key] == pytest.approx(expect[key], rel=1e-5, abs=1e-6), key


def test_focal_ref_without_known_focal_is_an_error(tiny, monkeypatch):
    root, _ = tiny
    monkeypatch.setattr(Tiny, "focal", lambda self, rec: None)
    with pytest.raises(DataError, match="focal"):
        Tiny(root, "train", (H, W), labels=("depth",), focal_ref=500.0)[0]


# ----------------------------------------------------------------------------- procedural wrapper
PROC = {"size": (16, 32), "length": 1, "labels": ("semantic", "depth", "normals")}


def test_procedural_augmentation_only_at_training():
    raw = build_dataset("proc-a", "train", **PROC)[0]
    quiet = build_dataset("proc-a", "train", train=False, flip=True, photometric=True, **PROC)
    aug = build_dataset("proc-a", "train", train=True, flip=True, **PROC)
    flipped = 0
    for seed in range(6):
        random.seed(seed)
        assert torch.equal(quiet[0]["image"], raw["image"])
        random.seed(seed)
        flip = random.random() < 0.5          # the only draw: no crop at the rendering size
        random.seed(seed)
        s = aug[0]
        cols = list(range(31, -1, -1)) if flip else list(range(32))
        assert torch.equal(s["semantic"], raw["semantic"][:, cols])
        assert torch.allclose(s["image"], raw["image"][:, :, cols], atol=1e-5)
        sign = torch.tensor([-1.0 if flip else 1.0, 1.0, 1.0]).view(3, 1, 1)
        assert torch.equal(s["normals"], raw["normals"][:, :, cols] * sign)
        flipped += flip
    assert 0 < flipped < 6
    random.seed(1)                             # random.random() = 0.134 < 0.5: jitter applied
    jittered = build_dataset("proc-a", "train", train=True, photometric=True, **PROC)[0]
    assert not torch.allclose(jittered["image"], raw["image"], atol=1e-3)


@pytest.mark.parametrize("domain", ["a", "b"])
def test_procedural_focal_ref(domain):
    raw = build_dataset(f"proc-{domain}", "val", **PROC)[0]
    s = build_dataset(f"proc-{domain}", "val", focal_ref=500.0, **PROC)[0]
    f = camera(domain, PROC["size"]).focal
    assert torch.allclose(s["depth"], raw["depth"] * 500.0 / f)
    assert s["depth_scale"] == pytest.approx(f / 500.0)
    assert torch.equal(s["semantic"], raw["semantic"])


# ----------------------------------------------------------------------------- registry and flags
def test_data_options_from_parsed_flags():
    parser = argparse.ArgumentParser()
    add_data_args(parser)
    args = parser.parse_args(["--classes", "16", "--resize", "64", "128", "--flip", "--photometric",
                              "--focal-ref", "700", "--src-root", "/data/x", "--edges", "cache",
                              "--kitti-protocol", "eigen", "--carla-focal", "1000"])
    assert data_options(args, "src") == {"root": "/data/x", "classes": 16, "resize": [64, 128],
                                         "flip": True, "photometric": True, "focal_ref": 700.0,
                                         "edges": "cache", "kitti_protocol": "eigen", "carla_focal": 1000.0}
    assert data_options(args, "tgt")["root"] is None
    default = data_options(parser.parse_args([]), "tgt")
    assert default == {"root": None, "classes": None, "resize": None, "flip": False,
                       "photometric": False, "focal_ref": None, "edges": "compute", "kitti_protocol": None,
                       "carla_focal": None}


def test_register_and_build_dataset(tiny, monkeypatch):
    root, written = tiny
    monkeypatch.setitem(DATASETS, Tiny.key, None)       # undo removes the registration again
    register(Tiny, "tiny test dataset")
    entry = DATASETS[Tiny.key]
    assert entry.folder == "tiny" and entry.splits == ("train", "val") and entry.num_classes == 3
    data_root = os.path.dirname(root)
    ds = build_dataset(Tiny.key, "val", size=(4, 4), data_root=data_root, labels=("semantic",),
                       train=True, flip=False)
    random.seed(0)
    s = ds[0]
    assert set(s) == {"image", "semantic", "name"} and s["semantic"].shape == (4, 4)
    ds = build_dataset(Tiny.key, "val", size=(4, 4), root=root, labels=("depth",))
    assert np.allclose(ds[0]["depth"].numpy(), written["v"]["depth_mm"] / 1000.0)
    with pytest.raises(UserError, match="no split 'test'"):
        build_dataset(Tiny.key, "test", data_root=data_root)
    with pytest.raises(UserError, match="--data-root"):
        build_dataset(Tiny.key, "val")


# ----------------------------------------------------------------------------- one class map a run
@pytest.mark.parametrize("datasets, classes, expected", [
    ([("carla", "--src"), ("cityscapes", "--tgt")], None, 11),     # the only map both have
    ([("gta5", "--src"), ("cityscapes", "--tgt")], None, 19),      # the shared default
    ([("synthia", "--src"), ("mapillary", "--tgt")], None, 7),
    ([("cityscapes", "--src"), ("synthia", "--tgt")], 16, 16),
    ([("kitti_depth", "--src"), ("nyuv2", "--tgt")], None, 13),    # no semantic labels: no say
    ([("proc-a", "--src"), ("proc-b", "--tgt")], None, 11),
])
def test_resolve_classes_picks_one_map_for_the_run(datasets, classes, expected):
    from lib.data import resolve_classes
    assert resolve_classes(datasets, classes) == expected


@pytest.mark.parametrize("datasets, classes, message", [
    ([("cityscapes", "--src"), ("synthia", "--tgt")], None,
     r"--src cityscapes \(19, 16, 13, 7, 11\) and --tgt synthia \(16, 7\) share the class maps 16, 7: "
     r"choose one with --classes"),
    ([("carla", "--src"), ("cityscapes", "--tgt")], 19, "--classes 19: --src carla has the class maps 11"),
    ([("nyuv2", "--src"), ("carla", "--tgt")], None, "share no class map"),
])
def test_resolve_classes_errors_name_the_flag_and_candidates(datasets, classes, message):
    from lib.data import resolve_classes
    with pytest.raises(UserError, match=message):
        resolve_classes(datasets, classes)


def test_native_labels_resize_the_image_only_at_evaluation(tiny):
    """DADA's protocol: the model sees the resized image, scores are at the labels' own size."""
    root, written = tiny
    native = Tiny(root, "train", (H, W), labels=("semantic", "depth"))[0]
    s = Tiny(root, "train", (H, W), labels=("semantic", "depth"), resize=(4, 6), native_labels=True)[0]
    assert tuple(s["image"].shape[-2:]) == (4, 6)
    assert torch.equal(s["semantic"], native["semantic"]) and torch.equal(s["depth"], native["depth"])
    assert s["focal"] == FOCAL / 2                        # the focal of the image the model sees
    trained = Tiny(root, "train", (4, 6), labels=("semantic",), resize=(4, 6), native_labels=True, train=True)[0]
    assert tuple(trained["semantic"].shape) == (4, 6)     # training always resizes both
