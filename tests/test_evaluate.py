"""evaluate.py in everyday use: other tools' prediction files, void labelIds, exports, photos
without labels, the run's own settings, semantic-only downloads, progress and panels.

Expected numbers come from formulas written out here (cityscapesScripts' per-class
TP / (TP + FP + FN), Eigen's abs rel), never from the code under test. Models are tiny fixed
networks saved as real checkpoints, so every run takes well under a second.
"""
import argparse
import json
import math
import os

import numpy as np
import pytest
import torch
from PIL import Image

import evaluate
from lib import engine, vis
from lib.data import build_dataset
from lib.data.labels import CITYSCAPES_TO, CLASS_NAMES, TRAINID_TO_LABELID_19
from lib.evaluation import evaluate_model, scoring_loader
from lib.models import MODELS, model_spec
from tests import trees

H, W = 8, 12
FRAMES = ("frankfurt/frankfurt_000000_000294", "munster/munster_000001_000019")
# labelId -> 19-class trainId for the ids used below, from the Cityscapes label table by hand;
# every other id is void (ignored in the ground truth, a miss when predicted).
TRAIN_ID = {7: 0, 8: 1, 11: 2, 21: 8, 23: 10, 24: 11, 26: 13}
GT_IDS = [7, 8, 11, 21, 23, 26, 0, 4]                 # classes and void (0 unlabeled, 4 static)
PRED_IDS = [7, 8, 11, 21, 23, 24, 26, 0, 4, 9, 10]    # also person (absent from gt), parking...


def run_eval(*argv):
    return evaluate.main(evaluate.get_args_parser().parse_args([str(a) for a in argv]))


def strict_load(path):
    """metrics.json parsed as strict JSON (NaN / Infinity refused)."""
    def refuse(token):
        raise ValueError(f"not strict JSON: {token}")
    with open(path) as f:
        return json.load(f, parse_constant=refuse)


# ----------------------------------------------------------------------------- Cityscapes helpers
def cs_val(root, seed=0, gt=None, **options):
    """A Cityscapes val tree of FRAMES with random labelIds of GT_IDS (or `gt` everywhere);
    returns {stem: gt labelIds}. options: of trees.cityscapes (depth=False, disparity=...)."""
    rng = np.random.default_rng(seed)
    out = {stem: rng.choice(GT_IDS, size=(H, W)) if gt is None else gt for stem in FRAMES}
    trees.cityscapes(root, FRAMES, (H, W), ("val",), labels=[out[stem] for stem in FRAMES], **options)
    return out


def random_preds(seed=1):
    rng = np.random.default_rng(seed)
    return {stem: rng.choice(PRED_IDS, size=(H, W)) for stem in FRAMES}


def cityscapes_scripts_iou(gts, preds):
    """Per-class IoU (percent, None = undefined) the way cityscapesScripts counts labelIds:
    TP / (TP + FP + FN) over the whole set, void predictions only ever a false negative."""
    g = np.concatenate([gts[s].ravel() for s in FRAMES])
    p = np.concatenate([preds[s].ravel() for s in FRAMES])
    gt_c = np.array([TRAIN_ID.get(int(v), 255) for v in g])
    pr_c = np.array([TRAIN_ID.get(int(v), 255) for v in p])
    labelled = gt_c != 255
    ious = []
    for c in range(19):
        tp = np.sum(labelled & (gt_c == c) & (pr_c == c))
        fn = np.sum((gt_c == c) & (pr_c != c))
        fp = np.sum(labelled & (gt_c != c) & (pr_c == c))
        ious.append(None if tp + fp + fn == 0 else 100.0 * tp / (tp + fp + fn))
    return ious


def write_ids(path, ids, palette=False):
    """A prediction PNG of 8-bit ids: grey, or a palette image whose index is the id."""
    ids = np.asarray(ids, dtype=np.uint8)
    (trees.save_palette if palette else trees.save)(path, ids)


LAYOUTS = {
    # mmsegmentation format_only: <image basename>.png, flat, 'P' with a palette, labelIds
    "mmseg": lambda stem: os.path.basename(stem) + "_leftImg8bit.png",
    # cityscapesScripts: anything named {city}_{seq}_{frame}*.png below the folder
    "cityscapes_scripts": lambda stem: stem + "_pred_labelIds.png",
    # this repository's own layout: <task>/<sample name>.png
    "own": lambda stem: "semantic/cityscapes/val/" + stem + ".png",
}


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_labelid_predictions_with_void_ids_match_cityscapes_scripts(tmp_path, layout):
    gts = cs_val(tmp_path)
    preds = random_preds()
    for stem, ids in preds.items():
        write_ids(tmp_path / "preds" / LAYOUTS[layout](stem), ids, palette=layout == "mmseg")
    m = run_eval("--pred-dir", tmp_path / "preds", "--dataset", "cityscapes", "--data-root", tmp_path,
                 "--classes", "19", "--task", "semantic", "--pred-format", "labelid")
    expected = cityscapes_scripts_iou(gts, preds)
    defined = [v for v in expected if v is not None]
    assert m["mIoU"] == pytest.approx(sum(defined) / len(defined), abs=0.01)
    assert m["per_class"] == pytest.approx(expected)
    assert expected[11] == 0.0                 # person: predicted, never in gt, counts as 0
    assert m["samples"] == 2 and m["class_names"][:2] == ["road", "sidewalk"]
    assert strict_load(tmp_path / "preds-eval" / "metrics.json")["mIoU"] == pytest.approx(m["mIoU"])


def test_void_predictions_are_false_negatives_only(tmp_path):
    """One frame by hand: road gt everywhere but 4 pixels predicted void (parking, labelId 9)."""
    cs_val(tmp_path, gt=np.full((H, W), 7))
    pred = np.full((H, W), 7)
    pred[0, :4] = 9
    for stem in FRAMES:
        write_ids(tmp_path / "p" / (os.path.basename(stem) + "_leftImg8bit.png"), pred)
    m = run_eval("--pred-dir", tmp_path / "p", "--dataset", "cityscapes", "--data-root", tmp_path,
                 "--task", "semantic", "--pred-format", "labelid")
    assert m["per_class"][0] == pytest.approx(100 * (H * W - 4) / (H * W))   # 4 misses, no FP
    assert m["mIoU"] == pytest.approx(m["per_class"][0])                     # no other class counts
    assert m["acc"] == pytest.approx(100 * (H * W - 4) / (H * W))


def test_trainid_png_in_palette_mode_is_read_as_indices(tmp_path):
    gts = cs_val(tmp_path)
    for stem, ids in gts.items():   # the ground truth itself, as trainIds, in a 'P' PNG
        train = np.vectorize(lambda v: TRAIN_ID.get(int(v), 255))(ids)
        write_ids(tmp_path / "p" / (os.path.basename(stem) + ".png"), train, palette=True)
    m = run_eval("--pred-dir", tmp_path / "p", "--dataset", "cityscapes", "--data-root", tmp_path,
                 "--task", "semantic")
    assert m["mIoU"] == pytest.approx(100.0) and m["acc"] == pytest.approx(100.0)


def test_ambiguous_or_missing_prediction_files_are_one_line_errors(tmp_path):
    cs_val(tmp_path)
    ids = np.full((H, W), 7)
    for stem in FRAMES:
        write_ids(tmp_path / "p" / (os.path.basename(stem) + "_leftImg8bit.png"), ids)
    write_ids(tmp_path / "p" / "frankfurt_000000_000294.png", ids)
    common = ["--dataset", "cityscapes", "--data-root", tmp_path, "--task", "semantic",
              "--pred-format", "labelid"]
    with pytest.raises(engine.UserError) as err:
        run_eval("--pred-dir", tmp_path / "p", *common)
    assert "2 prediction files match sample cityscapes/val/frankfurt/frankfurt_000000_000294" in str(err.value)
    assert "frankfurt_000000_000294.png" in str(err.value) and "_leftImg8bit.png" in str(err.value)
    os.remove(tmp_path / "p" / "frankfurt_000000_000294.png")
    os.remove(tmp_path / "p" / "munster_000001_000019_leftImg8bit.png")
    with pytest.raises(engine.UserError) as err:
        run_eval("--pred-dir", tmp_path / "p", *common)
    msg = str(err.value)
    assert "no prediction for sample cityscapes/val/munster/munster_000001_000019" in msg
    assert "**/munster_000001_000019_*.*" in msg and "**/munster_000001_000019_leftImg8bit.*" in msg
    assert "\n" not in msg


def test_metrics_without_labelled_pixels_are_null(tmp_path):
    cs_val(tmp_path, gt=np.zeros((H, W)))          # every pixel 'unlabeled'
    for stem in FRAMES:
        write_ids(tmp_path / "p" / (os.path.basename(stem) + "_leftImg8bit.png"), np.full((H, W), 7))
    m = run_eval("--pred-dir", tmp_path / "p", "--dataset", "cityscapes", "--data-root", tmp_path,
                 "--task", "semantic", "--pred-format", "labelid")
    assert m["mIoU"] is None and m["acc"] is None and m["per_class"] == [None] * 19
    saved = strict_load(tmp_path / "p-eval" / "metrics.json")
    assert saved["mIoU"] is None and saved["dataset"] == "cityscapes" and saved["split"] == "val"


# ----------------------------------------------------------------------------- checkpoints
class FixedNet(torch.nn.Module):
    """A model with a known answer: semantic class 1 where the photo's red is above the
    ImageNet mean and `cls` elsewhere, depth `depth` metres, normals facing the camera.
    Records the input sizes it is given."""

    seen = []

    def __init__(self, tasks=("semantic",), classes=19, cls=0, depth=5.0):
        super().__init__()
        self.tasks, self.classes, self.cls, self.depth = tuple(tasks), classes, cls, depth
        self.register_buffer("offset", torch.zeros(()))

    def forward(self, x):
        FixedNet.seen.append(tuple(x.shape[-2:]))
        b, _, h, w = x.shape
        out = {}
        if "semantic" in self.tasks:
            logits = torch.zeros(b, self.classes, h, w) + self.offset
            logits[:, self.cls] = 0.5
            logits[:, 1] = x[:, 0]        # normalised red: > 0 above the mean
            out["semantic"] = logits
        if "depth" in self.tasks:
            out["depth"] = torch.full((b, h, w), self.depth)
        if "normals" in self.tasks:
            out["normals"] = torch.tensor([0.0, 0.0, -1.0]).view(1, 3, 1, 1).expand(b, 3, h, w).clone()
        return out


@pytest.fixture
def fixed_ckpt(monkeypatch, tmp_path):
    """save(path, run_args, **model_kwargs) -> a checkpoint of FixedNet, as a script writes it."""
    monkeypatch.setitem(MODELS, "fixed", FixedNet)
    FixedNet.seen.clear()

    def save(path, run=None, **kwargs):
        run = {"tgt": "proc-b", "size": [32, 64], **(run or {})}
        spec = model_spec("fixed", **kwargs)
        return engine.save_checkpoint(str(path), script="train_supervised.py", iteration=1,
                                      args=argparse.Namespace(**run), models={"model": FixedNet(**kwargs)},
                                      model_specs={"model": spec})
    return save


def eigen_abs_rel(pred, depths, lo, hi):
    """Mean over images of mean |clip(pred) - gt| / gt over lo < gt < hi (Eigen's protocol)."""
    per_image = []
    for gt in depths:
        valid = (gt > lo) & (gt < hi)
        p = np.clip(pred, lo, hi)
        per_image.append(np.mean(np.abs(p - gt[valid]) / gt[valid]))
    return float(np.mean(per_image))


def test_rescoring_uses_the_runs_settings_and_one_folder_per_checkpoint(fixed_ckpt, tmp_path):
    run = tmp_path / "run"
    settings = {"min_depth": 0.5, "max_depth": 10.0, "proc_length": 3}
    for stem in ("checkpoint", "model"):
        fixed_ckpt(run / f"{stem}.pth", settings, tasks=["depth"], depth=5.0)
    depths = [s["depth"].numpy() for s in build_dataset("proc-b", "val", (32, 64), length=3, labels=["depth"])]
    assert max(d.max() for d in depths) > 10     # the cap matters on this split
    m = run_eval("--checkpoint", run / "checkpoint.pth", "--device", "cpu", "--save-vis", "1")
    m2 = run_eval("--checkpoint", run / "model.pth", "--device", "cpu", "--max-depth", "80")
    assert m["samples"] == 3 and m["dataset"] == "proc-b" and m["split"] == "val"
    assert m["abs_rel"] == pytest.approx(eigen_abs_rel(5.0, depths, 0.5, 10.0), rel=1e-5)
    assert m2["abs_rel"] == pytest.approx(eigen_abs_rel(5.0, depths, 0.5, 80.0), rel=1e-5)
    for stem in ("checkpoint", "model"):
        saved = strict_load(run / f"eval-{stem}-proc-b-val" / "metrics.json")
        assert saved["samples"] == 3 and saved["tasks"] == ["depth"]
    # the panel: one row (depth) of image | ground truth | prediction | error, 256-px tiles
    panel = Image.open(next((run / "eval-checkpoint-proc-b-val" / "vis").iterdir()))
    assert panel.size == (4 * 256 + 5 * 2, 128 + 2 * 2)


def test_semantic_model_on_a_download_without_disparity(fixed_ckpt, tmp_path, capsys):
    gts = cs_val(tmp_path, depth=False)                 # leftImg8bit + gtFine only
    ckpt = fixed_ckpt(tmp_path / "run" / "checkpoint.pth", {"tgt": "cityscapes"},
                      tasks=["semantic", "depth"], classes=19, cls=0)
    m = run_eval("--checkpoint", ckpt, "--data-root", tmp_path, "--device", "cpu", "--print-every", "1",
                 "--batch-size", "1")
    out = capsys.readouterr().out
    assert "no depth labels for cityscapes val" in out
    assert "[eval 1/2]" in out and "[eval 2/2]" in out
    assert m["tasks"] == ["semantic"] and "abs_rel" not in m
    # Expected by hand: the model answers road (0) where red is below the mean, else sidewalk
    # (1), so it is a labelId prediction of 7 / 8; FixedNet sees the same photo as the dataset.
    preds = {}
    for stem in FRAMES:
        rgb = np.asarray(Image.open(tmp_path / "cityscapes" / "leftImg8bit" / "val" / (stem + "_leftImg8bit.png")))
        red = (rgb[..., 0] / 255.0 - 0.485) / 0.229
        preds[stem] = np.where(red > 0.5, 8, 7)
    expected = cityscapes_scripts_iou(gts, preds)
    assert m["per_class"] == pytest.approx(expected)
    assert "road" in out and "sidewalk" in out                     # per-class IoU with names
    with pytest.raises(engine.UserError, match="disparity"):
        run_eval("--checkpoint", ckpt, "--data-root", tmp_path, "--device", "cpu", "--task", "depth")


def test_export_labelids_and_colours_and_rescore_them(fixed_ckpt, tmp_path):
    ckpt = fixed_ckpt(tmp_path / "run" / "checkpoint.pth", {"proc_length": 2}, classes=11, cls=7)
    out = tmp_path / "ev"
    m = run_eval("--checkpoint", ckpt, "--device", "cpu", "--save-preds", "--save-color",
                 "--pred-format", "labelid", "--output-dir", out)
    files = sorted((out / "preds" / "semantic").rglob("*.png"))
    assert len(files) == 2
    seen = set()
    for f in files:   # FixedNet: vehicle (7) -> car (26); sidewalk (1, red pixels) -> 8
        seen |= set(np.unique(np.asarray(Image.open(f))).tolist())
    assert 26 in seen and seen <= {26, 8}
    rescored = run_eval("--pred-dir", out / "preds", "--device", "cpu", "--pred-format", "labelid",
                        "--task", "semantic", "--proc-length", "2", "--size", "32", "64")
    assert rescored["mIoU"] == pytest.approx(m["mIoU"], abs=1e-9)
    colours = sorted((out / "preds" / "color" / "semantic").rglob("*.png"))
    rgb = np.asarray(Image.open(colours[0]))
    assert len(colours) == 2 and rgb.shape == (32, 64, 3)
    assert {tuple(c) for c in rgb.reshape(-1, 3)} <= {(0, 0, 142), (244, 35, 232)}   # car, sidewalk


@pytest.mark.parametrize("k", [19, 16, 13, 7, 11])
def test_labelid_export_maps_back_to_each_class(k):
    lut = evaluate.labelid_lut(k)
    assert [int(CITYSCAPES_TO[k][lut[i]]) for i in range(k)] == list(range(k))
    if k == 19:
        assert lut[:19].tolist() == TRAINID_TO_LABELID_19[:19].tolist()
    if k == 11:
        assert lut[7] == 26 and lut[8] == 20          # vehicle -> car, traffic sign -> sign


def test_photos_without_labels(fixed_ckpt, tmp_path):
    photos = tmp_path / "photos"
    (photos / "sub").mkdir(parents=True)
    left_red = np.zeros((20, 30, 3), np.uint8)
    left_red[:, :15, 0] = 255
    Image.fromarray(left_red).save(photos / "street.png")
    Image.fromarray(np.zeros((24, 40, 3), np.uint8)).save(photos / "sub" / "dark.jpg")
    (photos / "notes.txt").write_text("not an image")
    ckpt = fixed_ckpt(tmp_path / "run" / "checkpoint.pth", {"tgt": "cityscapes", "classes": 19},
                      tasks=["semantic", "depth"], classes=19, cls=0, depth=5.0)
    m = run_eval("--checkpoint", ckpt, "--images", photos, "--device", "cpu", "--save-color",
                 "--save-vis", "1")
    out = tmp_path / "run" / "eval-checkpoint-images"
    assert set(FixedNet.seen) == {(32, 64)}         # resized to the run's --size
    sem = np.asarray(Image.open(out / "preds" / "semantic" / "street.png"))
    assert sem.shape == (20, 30)                        # back at the photo's own size
    assert (sem[:, :13] == 1).all() and (sem[:, 17:] == 0).all()
    assert np.asarray(Image.open(out / "preds" / "semantic" / "sub" / "dark.png")).shape == (24, 40)
    depth = np.asarray(Image.open(out / "preds" / "depth" / "street.png"))
    assert (depth == 5 * 256).all()
    assert (out / "preds" / "color" / "semantic" / "sub" / "dark.png").is_file()
    assert len(list((out / "vis").iterdir())) == 1
    saved = strict_load(out / "metrics.json")
    assert saved["dataset"] == "images" and saved["split"] is None and saved["samples"] == 2
    assert saved["class_names"] == list(CLASS_NAMES[19]) and "mIoU" not in saved and m["tasks"] == []
    one = run_eval("--checkpoint", ckpt, "--images", photos / "street.png", "--device", "cpu",
                   "--output-dir", tmp_path / "one")
    assert one["samples"] == 1 and (tmp_path / "one" / "preds" / "semantic" / "street.png").is_file()


def test_flags_that_cannot_work_are_refused(tmp_path):
    with pytest.raises(engine.UserError, match="--save-preds needs --checkpoint"):
        run_eval("--pred-dir", tmp_path, "--save-preds")
    with pytest.raises(engine.UserError, match="--images needs --checkpoint"):
        run_eval("--pred-dir", tmp_path, "--images", tmp_path)


# ----------------------------------------------------------------------------- panels
def _tiles(panel, n, tile_w, tile_h, pad=2, skip=16):
    """The n tiles of a one-row panel, below their title boxes."""
    return [panel[pad + skip:pad + tile_h, pad + c * (tile_w + pad) + 0:pad + c * (tile_w + pad) + tile_w]
            for c in range(n)]


def test_depth_panel_shares_one_scale_and_shows_the_error():
    gt = np.linspace(2.0, 40.0, H * W).reshape(H, W)
    image = np.zeros((H, W, 3), np.uint8)
    # Each depth coloured on its own scale: twice the depth looks exactly like the truth.
    assert np.array_equal(vis.colorize_depth(gt), vis.colorize_depth(2 * gt))
    right = vis.sample_panel(image, {"depth": gt}, {"depth": gt})
    wrong = vis.sample_panel(image, {"depth": 2 * gt}, {"depth": gt})
    factor = -(-256 // W)
    _, gt_tile, pred_ok, err_ok = _tiles(right, 4, W * factor, H * factor)
    _, _, pred_2x, err_2x = _tiles(wrong, 4, W * factor, H * factor)
    assert np.array_equal(gt_tile, pred_ok) and not np.array_equal(gt_tile, pred_2x)
    assert (err_ok == [0, 0, 4]).all()                  # abs rel 0: the bottom of magma
    assert (err_2x == [252, 253, 191]).all()            # abs rel 1 >= 0.5: the top
    assert right.shape[1] >= 4 * 256


def test_semantic_and_normal_error_maps():
    gt = np.array([[0, 1], [255, 2]])
    pred = np.array([[0, 2], [1, 2]])
    err = vis.semantic_error(pred, gt)
    assert err[0, 0].tolist() == [0, 0, 0] and err[0, 1].tolist() == [255, 255, 255]
    assert err[1, 0].tolist() == [64, 64, 64]           # unlabelled
    n_gt = np.zeros((3, 1, 2))
    n_gt[2] = -1.0
    n_pred = n_gt.copy()
    n_pred[:, 0, 1] = [1.0, 0.0, 0.0]                   # 90 degrees off
    err = vis.normal_error(n_pred, n_gt)
    assert err[0, 0].tolist() == [0, 0, 4] and err[0, 1].tolist() == [252, 253, 191]


def test_void_aware_confusion_by_hand():
    from lib.evaluation import VoidAwareConfusion
    m = VoidAwareConfusion(3)
    # class 0: one hit, one void miss -> 1 / 2; class 1: one hit; class 2 only on an ignored pixel
    m.update(torch.tensor([0, 255, 1, 2]), torch.tensor([0, 0, 1, 255]))
    out = m.compute()
    assert out["per_class"] == [50.0, 100.0, None] and out["mIoU"] == 75.0
    assert out["acc"] == pytest.approx(200 / 3)
    with pytest.raises(ValueError, match=r"prediction values \[3\]"):
        m.update(torch.tensor([3]), torch.tensor([0]))


def test_cityscapes_test_split_predictions_for_the_benchmark(fixed_ckpt, tmp_path, capsys):
    """No public test labels: nothing to score, but labelId PNGs can be written for submission."""
    trees.cityscapes(tmp_path, FRAMES, (H, W), ("test",))
    ckpt = fixed_ckpt(tmp_path / "run" / "checkpoint.pth", {"tgt": "cityscapes"}, classes=19, cls=13)
    common = ["--checkpoint", ckpt, "--data-root", tmp_path, "--split", "test", "--device", "cpu"]
    with pytest.raises(engine.UserError, match="nothing to score"):
        run_eval(*common)
    m = run_eval(*common, "--save-preds", "--pred-format", "labelid")
    assert "no semantic labels for cityscapes test" in capsys.readouterr().out
    assert m["tasks"] == [] and m["samples"] == 2 and "mIoU" not in m
    files = sorted((tmp_path / "run" / "eval-checkpoint-cityscapes-test" / "preds" / "semantic").rglob("*.png"))
    assert [f.name for f in files] == ["frankfurt_000000_000294.png", "munster_000001_000019.png"]
    assert set(np.unique(np.asarray(Image.open(files[0])))) <= {26, 8}   # car; sidewalk on red pixels


@pytest.mark.parametrize("task, write, message", [
    ("semantic", lambda p: open(p + ".png", "wb").write(b"\x89PNG broken"), "cannot read prediction"),
    ("semantic", lambda p: Image.fromarray(np.full((H, W), 40, np.uint8)).save(p + ".png"),
     "are not class indices of --classes 19"),
    ("depth", lambda p: np.save(p + ".npy", np.array([{"a": 1}], dtype=object)), "cannot read prediction"),
    ("depth", lambda p: np.save(p + ".npy", np.ones((2, H, W), np.float32)), "depth predictions are HxW"),
    ("depth", lambda p: np.save(p + ".npy", np.full((H, W), np.nan, np.float32)), "NaN or inf values"),
])
def test_bad_prediction_files_are_one_line_errors(tmp_path, task, write, message):
    """A corrupt PNG, ids out of range, an object .npy, a 3-D depth array or NaN depth: one
    line naming the file, and nothing lands in metrics.json."""
    cs_val(tmp_path, disparity=np.full((H, W), 6401))
    for stem in FRAMES:
        os.makedirs(tmp_path / "p", exist_ok=True)
        write(str(tmp_path / "p" / os.path.basename(stem)))
    with pytest.raises(engine.UserError) as err:
        run_eval("--pred-dir", tmp_path / "p", "--dataset", "cityscapes", "--data-root", tmp_path,
                 "--task", task)
    assert message in str(err.value) and "\n" not in str(err.value)
    assert str(tmp_path / "p") in str(err.value)
    assert not (tmp_path / "p-eval" / "metrics.json").exists()


def _miou_by_hand(pred, gt, classes):
    """Mean over classes present in gt or pred of TP / (TP + FP + FN), ignoring 255 in gt."""
    valid = gt != 255
    ious = []
    for c in range(classes):
        p, g = (pred == c) & valid, (gt == c) & valid
        if p.any() or g.any():
            ious.append((p & g).sum() / (p | g).sum())
    return 100 * float(np.mean(ious))


def test_negative_transfer_rate_against_a_reference(fixed_ckpt, tmp_path):
    """DADA Sec. 4.2: the share of images whose per-image mIoU falls below the reference's,
    here worked out by hand from the two models' known answers on proc-b val."""
    data = build_dataset("proc-b", "val", (32, 64), length=6, labels=["semantic"])
    a = fixed_ckpt(tmp_path / "a.pth", classes=11, cls=0)       # road unless red > 0.5: sidewalk
    b = fixed_ckpt(tmp_path / "b.pth", classes=11, cls=9)       # building unless red > 0.5
    worse = 0
    for i in range(len(data)):
        s = data[i]
        red = (s["image"][0] > 0.5).numpy()     # FixedNet: logit of class 1 = red, of cls = 0.5
        gt = s["semantic"].numpy()
        miou_a = _miou_by_hand(np.where(red, 1, 0), gt, 11)
        miou_b = _miou_by_hand(np.where(red, 1, 9), gt, 11)
        worse += miou_a < miou_b
    assert worse == 4                                           # both outcomes occur
    m = run_eval("--checkpoint", a, "--reference", b, "--dataset", "proc-b", "--proc-length", 6,
                 "--size", 32, 64, "--device", "cpu", "--output-dir", tmp_path / "ev")
    assert m["negative_transfer_images"] == 6
    assert m["negative_transfer_rate"] == pytest.approx(100 * worse / 6)
    same = run_eval("--checkpoint", a, "--reference", a, "--dataset", "proc-b", "--proc-length", 6,
                    "--size", 32, 64, "--device", "cpu", "--output-dir", tmp_path / "ev2")
    assert same["negative_transfer_rate"] == 0                # ties are not negative transfer
    with pytest.raises(engine.UserError, match="check --reference"):
        run_eval("--checkpoint", a, "--reference", tmp_path / "none.pth", "--dataset", "proc-b",
                 "--device", "cpu", "--output-dir", tmp_path / "ev3")


# ----------------------------------------------------------------------------- depth protocols
KITTI_VAL = trees.KITTI_DRIVES["val"]


def kitti_eigen_tree(root):
    """The val frame of trees.kitti (Eigen test list: its frame) plus a listed frame without an
    annotated map; returns the two frames' lidar maps in list order."""
    tree = trees.kitti(root, 1, splits=("val",))
    extra = trees.kitti_frame(root, "val", KITTI_VAL, "0000000009", gt=False, velodyne=True)
    with open(root / "kitti_depth" / "eigen_test_files.txt", "a") as fh:
        fh.write(f"{KITTI_VAL[:10]}/{KITTI_VAL}/image_02/data/0000000009.png\n")
    return [tree.frames[0].arrays["lidar"], extra.arrays["lidar"]]


def garg_by_hand(lidar):
    """The scan's depth inside Garg et al.'s crop, 0 elsewhere (fractions of the frame, truncated)."""
    h, w = lidar.shape
    out = np.zeros_like(lidar)
    rows, cols = slice(int(0.40810811 * h), int(0.99189189 * h)), slice(int(0.03594771 * w), int(0.96405229 * w))
    out[rows, cols] = lidar[rows, cols]
    return out


def test_kitti_eigen_protocol_scores_all_frames_in_the_garg_crop_to_80m(fixed_ckpt, tmp_path, capsys):
    lidars = kitti_eigen_tree(tmp_path)
    gts = [garg_by_hand(x) for x in lidars]
    assert all((x > 0).sum() > (g > 0).sum() for x, g in zip(lidars, gts))       # the crop drops points
    assert all((g >= 80).any() and ((g > 0) & (g < 80)).any() for g in gts)       # and the cap others
    ckpt = fixed_ckpt(tmp_path / "run" / "model.pth", tasks=["depth"], depth=5.0)
    m = run_eval("--checkpoint", ckpt, "--dataset", "kitti_depth", "--split", "test", "--data-root", tmp_path,
                 "--kitti-protocol", "eigen", "--resize", 24, 80, "--device", "cpu")
    out = capsys.readouterr().out
    assert m["samples"] == 2                                  # the frame without an annotated map too
    assert m["abs_rel"] == pytest.approx(eigen_abs_rel(5.0, gts, 1e-3, 80.0), rel=1e-5)
    protocol = ("eigen (raw velodyne LiDAR projected to the image, Garg crop), labels at their own "
                "resolution, 0.001 < depth < 80 m")
    assert m["depth_protocol"] == protocol and f"depth protocol: {protocol}" in out
    assert set(FixedNet.seen) == {(24, 80)}                    # the image resized, one at a time
    saved = strict_load(tmp_path / "run" / "eval-model-kitti_depth-test-eigen" / "metrics.json")
    assert saved["depth_protocol"] == protocol and saved["abs_rel"] == pytest.approx(m["abs_rel"])
    with pytest.warns(UserWarning, match="1 frames"):
        a = run_eval("--checkpoint", ckpt, "--dataset", "kitti_depth", "--split", "test", "--data-root",
                     tmp_path, "--resize", 24, 80, "--device", "cpu")
    assert a["samples"] == 1 and a["depth_protocol"] == ("annotated (annotated depth maps, KB crop 352x1216), "
                                                         "labels resized to 24x80, 0.001 < depth < 80 m")
    assert strict_load(tmp_path / "run" / "eval-model-kitti_depth-test" / "metrics.json")["samples"] == 1


def test_scripts_scoring_names_and_records_the_kitti_protocol(fixed_ckpt, tmp_path, capsys):
    """lib.evaluation as every training script scores: the protocol in its printed line and its
    result, recorded in args.scoring, and evaluate.py re-scores a checkpoint the same way."""
    gts = [garg_by_hand(x) for x in kitti_eigen_tree(tmp_path)]
    args = argparse.Namespace(size=[24, 80], data_root=str(tmp_path), proc_length=None, eval_batches=None,
                              workers=0)
    loader = scoring_loader("kitti_depth", ["depth"], args, "--tgt", 4, split="test", resize=(24, 80),
                            kitti_protocol="eigen")
    rec = args.scoring[-1]
    assert (rec["kitti_protocol"], rec["native_labels"], rec["batch_size"]) == ("eigen", True, 1)
    m = evaluate_model(FixedNet(tasks=["depth"]), loader, "cpu", ["depth"])
    assert m["depth_protocol"].startswith("eigen (raw velodyne LiDAR")
    assert m["depth_protocol"].endswith("labels at their own resolution, 0.001 < depth < 80 m")
    assert f"[eval] kitti_depth test depth protocol: {m['depth_protocol']}" in capsys.readouterr().out
    assert m["abs_rel"] == pytest.approx(eigen_abs_rel(5.0, gts, 1e-3, 80.0), rel=1e-5)
    ckpt = fixed_ckpt(tmp_path / "run" / "model.pth", {"tgt": "kitti_depth", "scoring": args.scoring},
                      tasks=["depth"], depth=5.0)
    again = run_eval("--checkpoint", ckpt, "--split", "test", "--data-root", tmp_path, "--device", "cpu")
    assert again["depth_protocol"] == m["depth_protocol"] and again["samples"] == 2   # no flag: the run's
    assert again["abs_rel"] == pytest.approx(m["abs_rel"], rel=1e-6)


def test_nyuv2_depth_on_resized_or_native_labels(fixed_ckpt, tmp_path):
    """UM-Adapt scores NYUv2 on labels resized with the image to 240x320 (its preset; the paper
    does not say); --native-labels scores the 480x640 maps. Here 30x40 frames resized to 15x20."""
    tree = trees.nyuv2(tmp_path, 2, splits=("test",))
    depths = [f.arrays["depth"] / 1000.0 for f in tree.frames]
    ckpt = fixed_ckpt(tmp_path / "run" / "model.pth", tasks=["depth"], depth=2.0)
    common = ("--checkpoint", ckpt, "--dataset", "nyuv2", "--split", "test", "--data-root", tmp_path,
              "--resize", 15, 20, "--max-depth", 10, "--device", "cpu")
    resized = run_eval(*common, "--output-dir", tmp_path / "r")
    native = run_eval(*common, "--native-labels", "--output-dir", tmp_path / "n")
    # nearest-exact halving keeps rows and columns 1, 3, 5, ...
    halved = [d[1::2, 1::2] for d in depths]
    assert resized["abs_rel"] == pytest.approx(eigen_abs_rel(2.0, halved, 1e-3, 10.0), rel=1e-5)
    assert native["abs_rel"] == pytest.approx(eigen_abs_rel(2.0, depths, 1e-3, 10.0), rel=1e-5)
    assert abs(native["abs_rel"] - resized["abs_rel"]) > 1e-3          # the resolution matters here
    assert resized["depth_protocol"] == "labels resized to 15x20, 0.001 < depth < 10 m"
    assert native["depth_protocol"] == "labels at their own resolution, 0.001 < depth < 10 m"


def test_rescoring_inherits_the_runs_carla_focal(tmp_path):
    """--carla-focal is part of a run's scoring record: re-scoring CARLA uses the run's focal
    unless the command line gives one (the focal converts depth between camera conventions)."""
    from tests import trees
    trees.carla(tmp_path, 1, (8, 12), ("val",))
    record = {"dataset": "carla", "role": "--src", "split": "val", "size": [32, 48], "batch_size": 1,
              "max_batches": None, "native_labels": False, "proc_length": None, "root": None,
              "classes": 11, "resize": None, "focal_ref": None, "kitti_protocol": None,
              "carla_focal": 1000.0}

    def settled(*flags):
        args = evaluate.get_args_parser().parse_args(["--checkpoint", "unused.pth", "--dataset", "carla",
                                                      "--data-root", str(tmp_path),
                                                      "--split", "val", *flags])
        evaluate.inherit_run_settings(args, {"scoring": [record]}, "carla")
        return args, evaluate.build_split("carla", ["depth"], args.size, args)[0]["focal"]
    args, focal = settled()
    given, focal_given = settled("--carla-focal", "500")
    assert args.carla_focal == 1000.0 and given.carla_focal == 500.0
    assert float(focal) == pytest.approx(2 * float(focal_given))     # focal scales with the flag


def test_rescoring_heights_counts_the_ground_as_the_run_did():
    """A SemiMTL height run records RMSE's floor (rmse_min_depth 0: ISPRS ground, 1/65535, lies
    under --min-depth); evaluate.py takes it from the run and scores through the same floor."""
    from lib.evaluation import evaluate_model

    class Heights(torch.nn.Module):
        def forward(self, x):
            return {"depth": torch.tensor([[[0.3, 0.5]]]).expand(x.shape[0], 1, 2)}
    batch = {"image": torch.zeros(1, 3, 1, 2), "depth": torch.tensor([[[1 / 65535, 0.5]]])}
    args = evaluate.get_args_parser().parse_args(["--checkpoint", "unused.pth", "--dataset", "proc-b"])
    evaluate.inherit_run_settings(args, {"rmse_min_depth": 0.0}, "proc-b")
    assert args.rmse_min_depth == 0.0
    out = evaluate_model(Heights(), [batch], "cpu", ["depth"], absolute_min_depth=args.rmse_min_depth,
                         progress=False)
    assert out["rmse"] == pytest.approx(math.sqrt((0.3 - 1 / 65535) ** 2 / 2)) and out["abs_rel"] == 0.0
    assert evaluate_model(Heights(), [batch], "cpu", ["depth"], progress=False)["rmse"] == 0.0
