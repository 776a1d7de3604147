"""tools/make_edges.py, tools/check_dataset.py and tools/show_dataset.py on tiny trees written here.

The dataset is test-local (`Tree`, registered for the test with monkeypatch.setitem), so
these tests depend on neither the other dataset modules nor any download. The tools run
in-process through their main(argv); expected values are computed here from the arrays
that were written.
"""
import json
import os
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from lib.data import DATASETS, register
from lib.data.base import (
    DataError,
    FileDataset,
    list_files,
    read_edges,
    read_gray,
    read_png16,
)
from lib import engine
from lib.edges import detect_edges
from tests import trees

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tools"))
import check_dataset
import make_edges
import show_dataset

H, W = 8, 12
LUT = np.array([255, 0, 1, 2], dtype=np.int64)     # raw id 0 = void, 1..3 -> classes 0..2


class Tree(FileDataset):
    """Test layout: images/{split}/{city}/{stem}_img.png, labels/.../{stem}_ids.png (8-bit raw
    ids 0..3), depth/.../{stem}_mm.png (16-bit millimetres); names key/split/city/stem."""

    key = "tools-tree"
    folder = "tree"
    splits = ("train", "val")
    labels = ("semantic", "depth", "edges")
    class_sets = (3,)
    layout = ("tree/images/{split}/{city}/*_img.png\n"
              "tree/labels/{split}/{city}/*_ids.png\n"
              "tree/depth/{split}/{city}/*_mm.png")
    known_ids = range(4)
    private_depth = ()     # splits whose depth is withheld by design (like Cityscapes' test labels)

    def index(self, split):
        if "depth" in self.want and split in self.private_depth:
            raise DataError(f"split {split!r} has no public depth")
        folder = os.path.join(self.root, "images", split)
        records = []
        for rel in list_files(folder, "_img.png", "images", self.layout):
            stem = rel[:-len("_img.png")]
            rec = {"name": f"{self.key}/{split}/{stem}", "image": os.path.join(folder, rel),
                   "semantic": os.path.join(self.root, "labels", split, stem + "_ids.png"),
                   "depth": os.path.join(self.root, "depth", split, stem + "_mm.png")}
            if not os.path.isfile(rec["semantic"]):
                raise DataError(f"{rec['image']} has no label {rec['semantic']}")
            if "depth" in self.want and not os.path.isfile(rec["depth"]):
                raise DataError(f"{rec['image']} has no depth {rec['depth']}")
            records.append(rec)
        return records

    def label_ids(self, rec):
        return read_gray(rec["semantic"])

    def label_lut(self):
        return LUT

    def load_depth(self, rec):
        return read_png16(rec["depth"]).astype(np.float32) / 1000.0


SAMPLES = {"train": ["aachen/a1", "aachen/a2", "bonn/b1"], "val": ["cologne/c1"]}


def _write(root, split, stem, seed):
    rng = np.random.default_rng(seed)
    arrays = {"image": rng.integers(0, 256, (H, W, 3), dtype=np.uint8),
              "ids": rng.integers(0, 4, (H, W)).astype(np.uint8),
              "depth_mm": rng.integers(1, 60000, (H, W)).astype(np.uint16)}
    arrays["depth_mm"][0, 0] = 0                      # one invalid pixel per image
    files = (("images", "_img", "image"), ("labels", "_ids", "ids"), ("depth", "_mm", "depth_mm"))
    for sub, suffix, key in files:
        trees.save(os.path.join(root, sub, split, stem + suffix + ".png"), arrays[key])
    return arrays


@pytest.fixture
def tree(tmp_path, monkeypatch):
    """(DATA_ROOT, dataset root, {(split, stem): arrays}) with Tree registered for this test."""
    monkeypatch.setitem(DATASETS, Tree.key, None)     # undo removes the registration again
    register(Tree, "tools test tree")
    root = str(tmp_path / "data" / "tree")
    written = {(split, stem): _write(root, split, stem, i)
               for i, (split, stem) in enumerate((s, t) for s, stems in SAMPLES.items() for t in stems)}
    return str(tmp_path / "data"), root, written


def image_path(root, split, stem):
    return os.path.join(root, "images", split, stem + "_img.png")


def detect(arr):
    return detect_edges(torch.tensor(arr.transpose(2, 0, 1), dtype=torch.float32) / 255.0).numpy()


def load_json(path):
    with open(path) as f:
        return json.load(f)


def check(data_root, capsys, *extra, tmp_json=None):
    """Run check_dataset in-process; returns (status, report dict, printed text)."""
    argv = [Tree.key, "--data-root", data_root, *extra]
    if tmp_json:
        argv += ["--json", tmp_json]
    status = check_dataset.main(argv)
    out = capsys.readouterr()
    report = load_json(tmp_json) if tmp_json and os.path.isfile(tmp_json) else None
    return status, report, out.out + out.err


# ----------------------------------------------------------------------------- make_edges
def test_make_edges_writes_cache_files(tree, capsys):
    data_root, root, written = tree
    assert make_edges.main([Tree.key, "--data-root", data_root]) == 0
    assert "4 written, 0 already there" in capsys.readouterr().out
    for (split, stem), arrays in written.items():
        path = os.path.join(root, "edges", split, stem + ".png")      # <folder>/edges/<split>/<stem>
        with Image.open(path) as img:
            assert img.mode == "L" and img.size == (W, H)
        assert np.abs(read_edges(path) - detect(arrays["image"])).max() <= 1 / 255 + 1e-6
    mtime = os.path.getmtime(path)
    assert make_edges.main([Tree.key, "--data-root", data_root, "--splits", "val"]) == 0
    assert "0 written, 1 already there" in capsys.readouterr().out
    assert os.path.getmtime(path) == mtime
    ds = Tree(root, "train", (H, W), labels=("edges",))
    rec = ds.records[0]
    assert ds.edge_cache_path(rec) == os.path.join(root, "edges", "train", "aachen", "a1.png")
    assert np.allclose(ds[0]["edges"].numpy(), read_edges(ds.edge_cache_path(rec)))


def test_make_edges_resize_workers_and_out_dir(tree, tmp_path, capsys):
    data_root, root, written = tree
    out = str(tmp_path / "scratch")
    argv = [Tree.key, "--data-root", data_root, "--resize", "4", "6", "--workers", "2", "--out-dir", out]
    assert make_edges.main(argv) == 0
    assert not os.path.exists(os.path.join(root, "edges"))
    edges = read_edges(os.path.join(out, "train", "bonn", "b1.png"))
    assert edges.shape == (H, W)                      # stored at native size whatever --resize
    assert not np.allclose(edges, detect(written[("train", "bonn/b1")]["image"]), atol=2 / 255)
    assert "4 written" in capsys.readouterr().out


def test_make_edges_imports_external_maps(tree, tmp_path, capsys):
    data_root, root, _ = tree
    ext = tmp_path / "dexined"
    (ext / "train" / "aachen").mkdir(parents=True)
    grad16 = (np.arange(H * W, dtype=np.uint16).reshape(H, W) * 600)
    Image.fromarray(grad16).save(ext / "train" / "aachen" / "a1.png")        # by relative path, 16 bits
    Image.fromarray(np.full((2 * H, 2 * W), 51, np.uint8)).save(ext / "a2_img.png")   # by image stem
    Image.fromarray(np.full((H, W), 255, np.uint8)).save(ext / "c1.jpg")      # by record stem
    argv = [Tree.key, "--data-root", data_root, "--from-dir", str(ext)]
    assert make_edges.main(argv) == 1                 # bonn/b1 has no map
    text = capsys.readouterr().out
    assert "3 written" in text and "1 without an external map" in text
    assert image_path(root, "train", "bonn/b1") in text
    a1 = os.path.join(root, "edges", "train", "aachen", "a1.png")
    with Image.open(a1) as img:
        assert img.mode.startswith("I")
    assert np.allclose(read_edges(a1), grad16 / 65535.0)
    assert np.allclose(read_edges(os.path.join(root, "edges", "train", "aachen", "a2.png")), 0.2)
    assert np.allclose(read_edges(os.path.join(root, "edges", "val", "cologne", "c1.png")), 1.0)
    assert make_edges.main(argv + ["--overwrite", "--invert", "--splits", "val"]) == 0
    assert np.allclose(read_edges(os.path.join(root, "edges", "val", "cologne", "c1.png")), 0.0)


def test_make_edges_refusals(tree, tmp_path, capsys):
    data_root, _, _ = tree
    assert make_edges.main(["proc-a"]) == 2
    assert "procedural" in capsys.readouterr().err
    assert make_edges.main([Tree.key, "--data-root", str(tmp_path / "none")]) == 2
    assert "tree/labels/{split}" in capsys.readouterr().err
    assert make_edges.main([Tree.key, "--data-root", data_root, "--splits", "test"]) == 2


# ----------------------------------------------------------------------------- check_dataset
def test_check_clean_tree(tree, tmp_path, capsys):
    data_root, _, written = tree
    status, report, text = check(data_root, capsys, tmp_json=str(tmp_path / "r.json"))
    assert status == 0 and report["status"] == 0 and report["problems"] == []
    assert "no problems found" in text
    train = report["splits"]["train"]
    assert (train["samples"], train["checked"], report["splits"]["val"]["samples"]) == (3, 3, 1)
    assert train["image_sizes"] == {f"{H}x{W}": 3}
    classes = np.bincount(np.concatenate([LUT[a["ids"]].ravel() for (s, _), a in written.items()
                                          if s == "train"]), minlength=256)
    assert list(train["class_pixels"].values()) == classes[:3].tolist()
    assert train["ignore_pixels"] == classes[255] and train["unknown_id_pixels"] == 0
    depth = np.concatenate([a["depth_mm"].ravel() / 1000.0 for (s, _), a in written.items() if s == "train"])
    valid = depth[depth > 0]
    assert train["depth"]["min"] == pytest.approx(valid.min())
    assert train["depth"]["max"] == pytest.approx(valid.max())
    assert train["depth"]["median"] == pytest.approx(np.median(valid), rel=1e-6)
    assert train["depth"]["valid"] == depth.size - 3 and train["edges_cached"] == 0


def test_check_counts_cached_edges_and_max_samples(tree, capsys):
    data_root, _, _ = tree
    make_edges.main([Tree.key, "--data-root", data_root, "--splits", "train"])
    capsys.readouterr()
    status, _, text = check(data_root, capsys, "--splits", "train", "--max-samples", "2")
    assert status == 0 and "[train] 3 samples, 2 checked" in text and "cached edges    2/2" in text


def test_check_reports_unknown_ids_corrupt_files_and_missing_labels(tree, tmp_path, capsys):
    data_root, root, written = tree
    ids = written[("train", "aachen/a2")]["ids"].copy()
    ids[0, :2] = 9                                                  # not a raw id of the format
    ids[1, 0] = 200
    Image.fromarray(ids).save(os.path.join(root, "labels", "train", "aachen", "a2_ids.png"))
    corrupt = image_path(root, "train", "bonn/b1")
    with open(corrupt, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n truncated")
    status, report, text = check(data_root, capsys, tmp_json=str(tmp_path / "r.json"))
    assert status == 1
    train = report["splits"]["train"]
    assert (train["unknown_id_pixels"], train["unknown_id_images"], train["unknown_ids"]) == (3, 1, [9, 200])
    assert train["errors"] == 1 and corrupt in train["first_errors"][0] and corrupt in text
    assert train["checked"] == 2 and train["samples"] == 3
    os.remove(os.path.join(root, "labels", "val", "cologne", "c1_ids.png"))
    status, report, text = check(data_root, capsys, tmp_json=str(tmp_path / "r.json"))
    assert status == 1 and "error" in report["splits"]["val"]
    assert image_path(root, "val", "cologne/c1") in text and "c1_ids.png" in text


def test_check_labels_a_split_lacks(tree, tmp_path, monkeypatch, capsys):
    data_root, root, _ = tree
    monkeypatch.setattr(Tree, "private_depth", ("val",))
    status, report, text = check(data_root, capsys, tmp_json=str(tmp_path / "r.json"))
    val = report["splits"]["val"]
    assert status == 0 and val["labels"] == ["semantic", "edges"] and "depth" not in val
    assert val["unavailable"]["depth"]["missing_files"] is False and "no public depth" in text
    assert report["splits"]["train"]["unavailable"] == {} and "depth" in report["splits"]["train"]
    monkeypatch.setattr(Tree, "private_depth", ())
    missing = os.path.join(root, "depth", "val", "cologne", "c1_mm.png")
    os.remove(missing)
    status, report, text = check(data_root, capsys, tmp_json=str(tmp_path / "r.json"))
    assert status == 1 and report["splits"]["val"]["unavailable"]["depth"]["missing_files"] is True
    assert missing in text and report["splits"]["val"]["checked"] == 1


def test_check_missing_split_and_missing_root(tree, tmp_path, capsys):
    data_root, root, _ = tree
    os.rename(os.path.join(root, "images", "val"), os.path.join(root, "images", "val_old"))
    status, report, text = check(data_root, capsys, tmp_json=str(tmp_path / "r.json"))
    # Not asked for: a split that is not on disk is reported, not a problem.
    assert status == 0 and report["splits"]["train"]["checked"] == 3
    assert os.path.join(root, "images", "val") in report["splits"]["val"]["error"]
    assert report["not_present"] == {"splits": ["val"], "labels": {}}
    assert "[val] not present: missing folder" in text
    assert check(data_root, capsys, "--splits", "train")[0] == 0
    status, report, text = check(data_root, capsys, "--splits", "train", "val",
                                 tmp_json=str(tmp_path / "r.json"))
    assert status == 1 and report["problems"][0].startswith("val: cannot be opened: missing folder")
    status, _, text = check(str(tmp_path / "elsewhere"), capsys)
    assert status == 2 and "tree/depth/{split}/{city}/*_mm.png" in text
    assert check(data_root, capsys, "--classes", "19")[0] == 2


def test_check_procedural(capsys, tmp_path):
    out = str(tmp_path / "p.json")
    assert check_dataset.main(["proc-b", "--max-samples", "2", "--size", "16", "32", "--json", out]) == 0
    report = load_json(out)
    val = report["splits"]["val"]
    assert val["samples"] == val["checked"] == 2 and val["image_sizes"] == {"16x32": 2}
    assert sum(val["class_pixels"].values()) == 2 * 16 * 32 and "road" in val["class_pixels"]
    assert val["normals"]["other"] == 0 and 0 < val["depth"]["valid"] < val["depth"]["pixels"]


# ----------------------------------------------------------------------------- a semantic-only Cityscapes
# leftImg8bit + gtFine, no disparity/ or camera/, no train_extra: the everyday download.
CS_H, CS_W = 4, 6
CS_FRAMES = {"train": ["aachen/aachen_000000_000019", "bonn/bonn_000000_000019"],
             "val": ["lindau/lindau_000000_000019"], "test": ["berlin/berlin_000000_000019"]}


def cs_ids():
    """labelIds: rows 0-1 road (7), row 2 car (26), row 3 unlabeled (0): 12 / 6 / 6 pixels."""
    ids = np.zeros((CS_H, CS_W), np.uint8)
    ids[:2], ids[2] = 7, 26
    return ids


@pytest.fixture
def cityscapes(tmp_path):
    """(DATA_ROOT, cityscapes root) of a semantic-only download (gtFine/test as placeholders)."""
    tree = trees.cityscapes(tmp_path / "data", CS_FRAMES, (CS_H, CS_W), tuple(CS_FRAMES), depth=False,
                            labels=cs_ids())
    return str(tmp_path / "data"), tree.root


def write_depth_files(root, split, stem):
    """The frame again, now with a disparity PNG (p = 257: d = 1 px) and a camera json
    (b = 0.5 m, fx = 1000 px): 500 m."""
    tree = trees.cityscapes(os.path.dirname(root), {split: [stem]}, (CS_H, CS_W), (split,), labels=cs_ids(),
                            disparity=np.full((CS_H, CS_W), 257), camera=(0.5, 1000.0))
    return tree.frames[0].paths["depth"]


def check_cs(data_root, capsys, tmp_path, *extra):
    """check_dataset on the Cityscapes tree: (status, report, text)."""
    out = str(tmp_path / "cs.json")
    status = check_dataset.main(["cityscapes", "--data-root", data_root, "--json", out, *extra])
    printed = capsys.readouterr()
    return status, load_json(out) if os.path.isfile(out) else None, printed.out + printed.err


def test_check_semantic_only_cityscapes_is_clean(cityscapes, tmp_path, capsys):
    data_root, root = cityscapes
    status, report, text = check_cs(data_root, capsys, tmp_path)
    assert status == 0 and report["problems"] == [] and "no problems found" in text
    assert report["not_present"] == {"splits": ["train_extra"],
                                     "labels": {"depth": ["train", "val", "test"]}}
    train = report["splits"]["train"]
    assert train["labels"] == ["semantic", "edges"] and train["checked"] == 2
    assert train["unavailable"]["depth"]["absent"] is True
    assert os.path.join(root, "disparity", "train") in train["unavailable"]["depth"]["reason"]
    pixels = train["class_pixels"]                                   # 19 classes, by name
    assert (pixels["road"], pixels["car"], pixels["sky"]) == (2 * 12, 2 * 6, 0)
    assert train["ignore_pixels"] == 2 * 6 and train["unknown_id_pixels"] == 0
    assert report["splits"]["test"]["labels"] == ["edges"]           # test labels are private
    assert "depth not present" in text
    assert "not present on disk (not checked; not a problem): depth labels (train, val, test); " \
           "split train_extra" in text


def test_check_labels_asked_for_must_be_present(cityscapes, tmp_path, capsys):
    data_root, root = cityscapes
    status, report, text = check_cs(data_root, capsys, tmp_path, "--labels", "depth", "--splits", "val")
    assert status == 1
    assert report["problems"] == [f"val: no depth labels: missing folder {root}/disparity/val "
                                  "(depth: disparity)"]
    assert report["not_present"] == {"splits": [], "labels": {}}
    status, report, _ = check_cs(data_root, capsys, tmp_path, "--labels", "semantic", "--splits", "val")
    assert status == 0 and report["splits"]["val"]["labels"] == ["semantic"]


def test_check_unknown_label_flag_is_a_one_line_error(cityscapes, capsys):
    data_root, _ = cityscapes
    assert check_dataset.main(["cityscapes", "--data-root", data_root, "--labels", "normals"]) == 2
    err = capsys.readouterr().err
    assert err == ("error: dataset 'cityscapes' has no normals labels (--labels); it has "
                   "semantic, depth, edges\n")


def test_check_partial_depth_download_is_a_problem(cityscapes, tmp_path, capsys):
    """disparity/ and camera/ exist but one train frame has none: a broken download."""
    data_root, root = cityscapes
    write_depth_files(root, "train", CS_FRAMES["train"][0])
    for split in ("val", "test"):
        for stem in CS_FRAMES[split]:
            write_depth_files(root, split, stem)
    status, report, text = check_cs(data_root, capsys, tmp_path, "--splits", "train", "val")
    missing = os.path.join(root, "disparity", "train", CS_FRAMES["train"][1] + "_disparity.png")
    assert status == 1 and len(report["problems"]) == 1
    assert report["problems"][0].startswith("train: no depth labels: ") and missing in report["problems"][0]
    assert report["splits"]["train"]["unavailable"]["depth"]["absent"] is False
    val = report["splits"]["val"]                                    # 0.5 x 1000 / 1 = 500 m
    assert val["depth"]["min"] == val["depth"]["max"] == pytest.approx(500.0)
    assert val["depth"]["valid"] == CS_H * CS_W


def test_check_split_asked_for_must_be_present(cityscapes, tmp_path, capsys):
    data_root, root = cityscapes
    status, report, _ = check_cs(data_root, capsys, tmp_path, "--splits", "train_extra")
    assert status == 1
    assert report["problems"] == [f"train_extra: cannot be opened: missing folder "
                                  f"{root}/leftImg8bit/train_extra (images)"]


def _show(argv):
    return show_dataset.main(show_dataset.get_args_parser().parse_args([str(a) for a in argv]))


def test_show_semantic_only_cityscapes(cityscapes, tmp_path, capsys):
    data_root, _ = cityscapes
    out = tmp_path / "cs.png"
    _show(["--datasets", "cityscapes", "--data-root", data_root, "--split", "val", "--num", "3",
           "--size", CS_H, CS_W, "--out", out])
    text = capsys.readouterr().out
    assert "cityscapes val: depth not present (missing folder" in text
    assert f"wrote {out} (1 rows)" in text
    with Image.open(out) as img:                    # image | semantic | edges, 2-px padding
        assert img.size == (3 * CS_W + 4 * 2, CS_H + 2 * 2)
        panel = np.asarray(img.convert("RGB"))
    tile = panel[2:2 + CS_H, 2 + CS_W + 2:2 + 2 * CS_W + 2]        # the semantic tile
    assert (tile[0] == tile[0, 0]).all() and not (tile[0, 0] == tile[2, 0]).all()


def test_show_labels_asked_for_must_be_present(cityscapes, tmp_path):
    data_root, root = cityscapes
    argv = ["--datasets", "cityscapes", "--data-root", data_root, "--labels", "semantic", "depth",
            "--size", CS_H, CS_W, "--out", tmp_path / "x.png"]
    with pytest.raises(DataError, match="missing folder .*disparity/train"):
        _show(argv)
    with pytest.raises(SystemExit) as exc:          # through the CLI wrapper: exit status 2
        engine.cli(show_dataset.main, show_dataset.get_args_parser().parse_args(
            [str(a) for a in argv]))
    assert exc.value.code == 2 and not (tmp_path / "x.png").exists()
    _show(argv[:4] + ["--labels", "semantic"] + argv[7:])
    assert (tmp_path / "x.png").exists()


def test_show_partial_depth_download_stops(cityscapes, tmp_path):
    data_root, root = cityscapes
    write_depth_files(root, "train", CS_FRAMES["train"][0])
    missing = os.path.join(root, "disparity", "train", CS_FRAMES["train"][1] + "_disparity.png")
    with pytest.raises(DataError, match=missing):
        _show(["--datasets", "cityscapes", "--data-root", data_root, "--size", CS_H, CS_W,
               "--out", tmp_path / "x.png"])
