"""Metrics against hand-worked examples (arithmetic in comments) and independent numpy loops."""
import datetime
import math
import socket

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from lib import metrics
from lib.metrics import ConfusionMatrix, DepthMeter, NormalMeter


# -------------------------------------------------------------------- confusion matrix

def test_confusion_matrix_two_class_by_hand():
    cm = ConfusionMatrix(num_classes=3)
    # gt 0: predicted 0 once, 1 once ; gt 1: predicted 1 twice ; the ignored pixel predicts 2
    # and must not count. Class 2 is in neither gt nor (counted) prediction.
    cm.update(torch.tensor([[0, 1, 1, 1, 2]]), torch.tensor([[0, 0, 1, 1, 255]]))
    out = cm.compute()
    # IoU0 = 1 / (2 + 1 - 1) = 1/2 ; IoU1 = 2 / (2 + 3 - 2) = 2/3 ; mIoU = (50 + 66.67) / 2
    assert out["mIoU"] == pytest.approx((50.0 + 200.0 / 3) / 2)
    assert out["per_class"][0] == pytest.approx(50.0)
    assert out["per_class"][1] == pytest.approx(200.0 / 3)
    assert out["per_class"][2] is None
    # acc = 3 correct / 4 counted ; mean_acc = (1/2 + 2/2) / 2
    assert out["acc"] == pytest.approx(75.0)
    assert out["mean_acc"] == pytest.approx(75.0)


def test_confusion_matrix_acc_differs_from_mean_acc_and_accumulates():
    cm = ConfusionMatrix(num_classes=2)
    # two updates = one matrix: gt (0,0,0,1), pred (0,1,1,1)
    cm.update(torch.tensor([0, 1]), torch.tensor([0, 0]))
    cm.update(torch.tensor([1, 1]), torch.tensor([0, 1]))
    out = cm.compute()
    # acc = 2/4 = 50 ; recall0 = 1/3, recall1 = 1 -> mean_acc = 66.67
    # IoU0 = 1 / (3 + 1 - 1) = 1/3 ; IoU1 = 1 / (1 + 3 - 1) = 1/3 -> mIoU 33.33
    assert out["acc"] == pytest.approx(50.0)
    assert out["mean_acc"] == pytest.approx(200.0 / 3)
    assert out["mIoU"] == pytest.approx(100.0 / 3)
    cm.reset()
    assert math.isnan(cm.compute()["mIoU"]) and cm.mat.sum() == 0


def test_confusion_matrix_class_only_predicted_counts_as_zero():
    cm = ConfusionMatrix(num_classes=2)
    cm.update(torch.tensor([0, 1]), torch.tensor([0, 0]))
    # IoU0 = 1 / (2 + 1 - 1) = 1/2 ; class 1 predicted but never in gt: IoU 0 -> mIoU 25
    out = cm.compute()
    assert out["per_class"] == [50.0, 0.0]
    assert out["mIoU"] == pytest.approx(25.0)


def test_confusion_matrix_rejects_bad_labels():
    cm = ConfusionMatrix(num_classes=2)
    with pytest.raises(ValueError):
        cm.update(torch.tensor([0, 1]), torch.tensor([0, 2]))  # 2 is neither a class nor ignore
    with pytest.raises(ValueError):
        cm.update(torch.tensor([0, 1]), torch.tensor([0, -1]))
    with pytest.raises(ValueError):
        cm.update(torch.tensor([0, 1, 0]), torch.tensor([0, 1]))  # shape mismatch
    assert cm.mat.sum() == 0  # nothing was counted by the failed updates


def _numpy_confusion(pred, target, num_classes, ignore_index=255):
    """Independent reference: a plain per-pixel loop."""
    mat = np.zeros((num_classes, num_classes), dtype=np.int64)
    for p, t in zip(pred.ravel().tolist(), target.ravel().tolist()):
        if t != ignore_index:
            mat[t, p] += 1
    return mat


def test_confusion_matrix_matches_numpy_loop():
    g = torch.Generator().manual_seed(0)
    pred = torch.randint(0, 5, (2, 7, 9), generator=g)
    target = torch.randint(0, 5, (2, 7, 9), generator=g)
    target[target == 4] = 255  # class 4 only predicted, plus ignored pixels
    cm = ConfusionMatrix(num_classes=5).update(pred, target)
    ref = _numpy_confusion(pred.numpy(), target.numpy(), 5)
    assert np.array_equal(cm.mat.numpy(), ref)
    tp = np.diag(ref).astype(float)
    iou = tp / (ref.sum(0) + ref.sum(1) - tp)
    assert cm.compute()["mIoU"] == pytest.approx(np.nanmean(iou) * 100)


# ------------------------------------------------------------------------------- depth

def test_depth_errors_two_pixels_by_hand():
    # valid: gt 2 (pred 2.8) and gt 4 (pred 4) ; gt 0 (invalid) and gt 100 (> max 80) dropped.
    pred = torch.tensor([[2.8, 4.0, 5.0, 5.0]])
    gt = torch.tensor([[2.0, 4.0, 0.0, 100.0]])
    e = metrics.depth_errors(pred, gt, max_depth=80.0)
    # abs_rel = (0.8/2 + 0) / 2 = 0.2 ; sq_rel = (0.64/2 + 0) / 2 = 0.16 ; rmse = sqrt(0.64/2)
    # rmse_log = sqrt(ln(1.4)^2 / 2) ; log10 = log10(1.4) / 2
    # ratio 1.4: not < 1.25 but < 1.5625 and < 1.953 -> a1 = 50, a2 = a3 = 100
    assert e["abs_rel"] == pytest.approx(0.2)
    assert e["sq_rel"] == pytest.approx(0.16)
    assert e["rmse"] == pytest.approx(math.sqrt(0.32))
    assert e["rmse_log"] == pytest.approx(math.log(1.4) / math.sqrt(2))
    assert e["log10"] == pytest.approx(math.log10(1.4) / 2)
    assert (e["a1"], e["a2"], e["a3"]) == pytest.approx((50.0, 100.0, 100.0))


def test_depth_errors_clamp_and_strict_range():
    # pred 200 -> clamped to 80 vs gt 40: |80-40|/40 = 1 ; pred 0 -> clamped 0.001 vs gt 1: 0.999
    # gt == max_depth (80) is excluded (strict <). abs_rel = (1 + 0.999) / 2.
    e = metrics.depth_errors(torch.tensor([200.0, 0.0, 3.0]), torch.tensor([40.0, 1.0, 80.0]))
    assert e["abs_rel"] == pytest.approx(0.9995)
    nan = metrics.depth_errors(torch.ones(3), torch.zeros(3))
    assert all(math.isnan(v) for v in nan.values()) and set(nan) == set(metrics.DEPTH_KEYS)


def _numpy_depth_errors(pred, gt, min_depth, max_depth):
    """Independent reference in the style of monodepth2's compute_errors."""
    mask = (gt > min_depth) & (gt < max_depth)
    p = np.clip(pred[mask], min_depth, max_depth)
    g = gt[mask]
    thresh = np.maximum(g / p, p / g)
    return {
        "abs_rel": np.mean(np.abs(g - p) / g), "sq_rel": np.mean((g - p) ** 2 / g),
        "rmse": np.sqrt(np.mean((g - p) ** 2)), "rmse_log": np.sqrt(np.mean((np.log(g) - np.log(p)) ** 2)),
        "log10": np.mean(np.abs(np.log10(g) - np.log10(p))),
        "a1": (thresh < 1.25).mean() * 100, "a2": (thresh < 1.25 ** 2).mean() * 100,
        "a3": (thresh < 1.25 ** 3).mean() * 100,
    }


def test_depth_errors_match_numpy_reference():
    rng = np.random.default_rng(1)
    gt = rng.uniform(0, 100, size=(3, 8, 8))
    pred = gt * rng.uniform(0.5, 1.6, size=gt.shape)
    pred[0, 0, :3] = (0.0, 1000.0, -1.0)  # exercise the clamp
    ref = _numpy_depth_errors(pred, gt, 1e-3, 80.0)
    got = metrics.depth_errors(torch.from_numpy(pred).float(), torch.from_numpy(gt).float())
    for k in metrics.DEPTH_KEYS:
        assert got[k] == pytest.approx(ref[k], rel=1e-5, abs=1e-6), k


def test_depth_meter_averages_per_image_and_skips_empty():
    # image A: one valid pixel, gt 1, pred 2 -> abs_rel 1, sq_rel 1, rmse 1, ratio 2 -> a1 = 0
    # image B: four valid pixels, perfect -> 0 errors, a1 = 100 ; image C: no valid pixel, skipped
    gt = torch.tensor([[[1.0, 0.0], [0.0, 0.0]], [[3.0, 3.0], [3.0, 3.0]], [[0.0, 0.0], [0.0, 0.0]]])
    pred = torch.tensor([[[2.0, 9.0], [9.0, 9.0]], [[3.0, 3.0], [3.0, 3.0]], [[5.0, 5.0], [5.0, 5.0]]])
    meter = DepthMeter(1e-3, 80.0).update(pred.unsqueeze(1), gt)  # Bx1xHxW next to BxHxW
    out = meter.compute()
    # mean over the 2 images: abs_rel (1 + 0)/2 = 0.5 ; a1 (0 + 100)/2 = 50
    assert meter.count == 2
    assert out["abs_rel"] == pytest.approx(0.5) and out["rmse"] == pytest.approx(0.5)
    assert out["a1"] == pytest.approx(50.0)
    # pooled over the 5 valid pixels instead: abs_rel = 1/5 -> the meter is not pooling
    assert metrics.depth_errors(pred, gt)["abs_rel"] == pytest.approx(0.2)
    meter.reset()
    assert meter.count == 0 and math.isnan(meter.compute()["abs_rel"])


# ----------------------------------------------------------------------------- normals

def _normals_at_angles(degrees, scale=2.0):
    """Bx3x1xN predictions at the given angles from gt (0, 0, 1); pred scaled (not unit)."""
    rad = torch.deg2rad(torch.tensor(degrees, dtype=torch.float64))
    pred = torch.stack([torch.sin(rad), torch.zeros_like(rad), torch.cos(rad)]) * scale
    gt = torch.zeros_like(pred)
    gt[2] = 1.0
    return pred.view(1, 3, 1, -1), gt.view(1, 3, 1, -1)


def test_normal_errors_by_hand():
    pred, gt = _normals_at_angles([0.0, 20.0, 25.0, 90.0, 45.0])
    gt[0, :, 0, 4] = 0.0  # last pixel invalid (gt norm 0)
    e = metrics.normal_errors(pred, gt)
    # angles 0, 20, 25, 90: mean 135/4 = 33.75 ; median (20 + 25)/2 = 22.5
    # rmse sqrt((0 + 400 + 625 + 8100) / 4) = sqrt(2281.25) ; < 11.25: 1/4 ; < 22.5: 2/4 ; < 30: 3/4
    assert e["mean"] == pytest.approx(33.75)
    assert e["median"] == pytest.approx(22.5)
    assert e["rmse_deg"] == pytest.approx(math.sqrt(2281.25))
    assert (e["pct_11_25"], e["pct_22_5"], e["pct_30"]) == pytest.approx((25.0, 50.0, 75.0))


def _numpy_angles(pred, gt):
    """Independent reference: per-pixel loop with numpy."""
    out = []
    p = pred.reshape(3, -1).T
    g = gt.reshape(3, -1).T
    for a, b in zip(p, g):
        if np.linalg.norm(b) > 0:
            c = np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b))
            out.append(np.degrees(np.arccos(np.clip(c, -1, 1))))
    return np.array(out)


def test_normal_meter_histogram_median_matches_numpy():
    g = torch.Generator().manual_seed(3)
    batches = [(torch.randn(2, 3, 6, 7, generator=g), torch.randn(2, 3, 6, 7, generator=g)) for _ in range(2)]
    batches[1][1][0, :, 0, :] = 0.0  # some invalid pixels
    meter = NormalMeter(bin_deg=0.01)
    angles = []
    for pred, gt in batches:
        meter.update(pred, gt)
        angles.append(_numpy_angles(pred.permute(1, 0, 2, 3).numpy(), gt.permute(1, 0, 2, 3).numpy()))
    angles = np.concatenate(angles)
    out = meter.compute()
    assert meter.count == angles.size
    assert abs(out["median"] - np.median(angles)) <= 0.005 + 1e-9  # within half a bin
    assert out["mean"] == pytest.approx(angles.mean(), rel=1e-6)
    assert out["rmse_deg"] == pytest.approx(np.sqrt((angles ** 2).mean()), rel=1e-6)
    assert out["pct_30"] == pytest.approx((angles < 30).mean() * 100)
    assert out["pct_11_25"] == pytest.approx((angles < 11.25).mean() * 100)
    # the pooled pure function agrees with numpy's exact median
    pooled = metrics.normal_errors(torch.cat([b[0] for b in batches]), torch.cat([b[1] for b in batches]))
    assert pooled["median"] == pytest.approx(np.median(angles), rel=1e-6)


def test_normal_meter_extreme_angles():
    pred, gt = _normals_at_angles([0.0, 180.0])
    out = NormalMeter(bin_deg=0.01).update(pred, gt).compute()
    # 0 -> bin 0 (centre 0.005) ; 180 -> clamped into the last bin (centre 179.995) ; median = 90
    assert out["median"] == pytest.approx(90.0)
    assert out["mean"] == pytest.approx(90.0)


# ------------------------------------------------------------------------------ delta-M

def test_delta_m_sign_conventions():
    single = {"mIoU": 50.0, "rmse": 5.0}
    # better on both: mIoU +10% (higher better) ; rmse 4.5 is -10% and lower is better -> +10%
    # delta = (0.1 + 0.1) / 2 * 100 = +10
    assert metrics.delta_m({"mIoU": 55.0, "rmse": 4.5}, single, {"rmse"}) == pytest.approx(10.0)
    # worse on both -> -10 ; dict form of lower_is_better
    lower = {"mIoU": False, "rmse": True}
    assert metrics.delta_m({"mIoU": 45.0, "rmse": 5.5}, single, lower) == pytest.approx(-10.0)
    # mixed: mIoU +20% and rmse +10% (worse): (0.2 - 0.1) / 2 * 100 = +5
    assert metrics.delta_m({"mIoU": 60.0, "rmse": 5.5}, single, ["rmse"]) == pytest.approx(5.0)


def test_delta_m_validation():
    with pytest.raises(ValueError):
        metrics.delta_m({"mIoU": 1.0}, {"miou": 1.0}, set())
    with pytest.raises(ValueError):
        metrics.delta_m({"mIoU": 1.0}, {"mIoU": 1.0}, {"rmse"})
    with pytest.raises(ValueError):
        metrics.delta_m({"rmse": 1.0}, {"rmse": 0.0}, {"rmse"})


# ------------------------------------------------------------------ negative transfer

def test_per_image_miou_by_hand():
    pred = torch.tensor([[[0, 1], [1, 1]], [[2, 2], [0, 1]], [[0, 0], [0, 0]]])
    target = torch.tensor([[[0, 0], [1, 1]], [[2, 2], [255, 255]], [[255, 255], [255, 255]]])
    scores = metrics.per_image_miou(pred, target, num_classes=3)
    # image 0: IoU0 = 1/2, IoU1 = 2/3, class 2 absent -> (50 + 66.67)/2 ; image 1: IoU2 = 1 -> 100
    # image 2: no valid pixel -> NaN
    assert scores[0] == pytest.approx((50.0 + 200.0 / 3) / 2)
    assert scores[1] == pytest.approx(100.0)
    assert math.isnan(scores[2])
    assert metrics.per_image_miou(pred[1], target[1], 3) == [pytest.approx(100.0)]  # HxW input


def test_negative_transfer_rate():
    # strictly lower: 50 < 55 yes ; 60 < 60 no (tie) ; 70 < 65 no ; 80 < 90 yes -> 2/4 = 50%
    assert metrics.negative_transfer_rate([50, 60, 70, 80], [55, 60, 65, 90]) == pytest.approx(50.0)
    # a NaN pair is left out: 1 of 3 -> 33.3%
    assert metrics.negative_transfer_rate([1, float("nan"), 3, 5], [2, 1, 3, 4]) == pytest.approx(100 / 3)
    with pytest.raises(ValueError):
        metrics.negative_transfer_rate([1, 2], [1])


# --------------------------------------------------------------------- DDP reduction

def _free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _make_shards():
    """Segmentation, depth and normal data for two ranks of unequal size."""
    g = torch.Generator().manual_seed(7)
    shards = []
    for n_images in (2, 3):
        target = torch.randint(0, 4, (n_images, 5, 6), generator=g)
        target[target == 3] = 255
        shards.append({
            "pred": torch.randint(0, 4, (n_images, 5, 6), generator=g),
            "target": target,
            "depth_gt": torch.rand(n_images, 5, 6, generator=g) * 90,
            "depth_pred": torch.rand(n_images, 5, 6, generator=g) * 90,
            "normal_pred": torch.randn(n_images, 3, 5, 6, generator=g),
            "normal_gt": torch.randn(n_images, 3, 5, 6, generator=g),
        })
    return shards


def _evaluate(shards):
    """Run the three meters over the given shards in this process."""
    cm, dm, nm = ConfusionMatrix(4), DepthMeter(1e-3, 80.0), NormalMeter()
    for s in shards:
        cm.update(s["pred"], s["target"])
        dm.update(s["depth_pred"], s["depth_gt"])
        nm.update(s["normal_pred"], s["normal_gt"])
    return cm, dm, nm


def _ddp_worker(rank, world_size, init_method, shards, out_path):
    dist.init_process_group("gloo", init_method=init_method, rank=rank, world_size=world_size,
                            timeout=datetime.timedelta(seconds=60))
    try:
        meters = _evaluate([shards[rank]])
        for m in meters:
            m.reduce_from_all_processes()
        if rank == 0:
            torch.save([m.compute() for m in meters], out_path)
    finally:
        dist.destroy_process_group()


def test_meters_reduce_across_two_gloo_processes(tmp_path):
    shards = _make_shards()
    out_path = str(tmp_path / "rank0.pt")
    mp.spawn(_ddp_worker, args=(2, f"tcp://127.0.0.1:{_free_port()}", shards, out_path), nprocs=2, join=True)
    reduced = torch.load(out_path, weights_only=True)
    single = [m.compute() for m in _evaluate(shards)]
    rank0_only = [m.compute() for m in _evaluate(shards[:1])]
    assert rank0_only[0]["mIoU"] != pytest.approx(single[0]["mIoU"])  # the check can fail
    for got, want in zip(reduced, single):
        assert got.keys() == want.keys()
        for k in want:
            assert got[k] == pytest.approx(want[k], rel=1e-9), k
    # without a process group the reduction is a no-op
    cm = ConfusionMatrix(4).update(shards[0]["pred"], shards[0]["target"])
    before = cm.mat.clone()
    assert torch.equal(cm.reduce_from_all_processes().mat, before)


def test_per_class_line_names_each_iou():
    from lib.evaluation import per_class_line
    assert per_class_line([93.14, None, 0.0], ["road", "sidewalk", "sky"]) == "road 93.1 sidewalk - sky 0.0"
    assert per_class_line([5.0, 6.0]) == "0 5.0 1 6.0"              # no names: indices
