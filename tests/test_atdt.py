"""AT/DT end to end on tiny procedural data: stage 1 -> stage 2 -> evaluate, the invariants of
the method (E2 never sees domain B, only G changes in stage 2, eq. 3's value), resume, errors."""
import copy
import json
import math
import os

import pytest
import torch

import evaluate
import train_tasks
import train_transfer
from lib.args import apply_preset
from lib import engine
from lib.data import DATASETS, DatasetEntry, build_dataset

TINY = ["--size", "32", "64", "--batch-size", "2", "--proc-length", "8", "--workers", "0",
        "--eval-batches", "1", "--log-every", "1", "--device", "cpu", "--decoder-width", "16",
        "--backbone", "resnet-tiny"]


def stage1(out_dir, *extra, iters=2):
    args = train_tasks.get_args_parser().parse_args(
        TINY + ["--iters", str(iters), "--output-dir", str(out_dir), "--save-every", "0", *extra])
    return train_tasks.main(args)


def stage2(stage1_dir, out_dir, *extra, iters=3):
    args = train_transfer.get_args_parser().parse_args(
        ["--stage1", str(stage1_dir), "--iters", str(iters), "--output-dir", str(out_dir),
         "--workers", "0", "--eval-batches", "1", "--log-every", "1", "--device", "cpu",
         "--eval-every", "2", "--save-every", "0", *extra])
    return train_transfer.main(args)


@pytest.fixture(scope="module")
def depsem(module_tmp):
    out = module_tmp("depsem")
    metrics = stage1(out / "s1")
    return out, metrics


def test_stage1_writes_checkpoint_and_metrics(depsem):
    out, metrics = depsem
    ckpt = torch.load(out / "s1" / "checkpoint.pth", weights_only=True)
    assert ckpt["script"] == "train_tasks.py" and ckpt["iteration"] == 2
    assert set(ckpt["models"]) == {"n1", "n2", "aux"}        # one D_aux shared by E1 and E2
    assert ckpt["model_specs"]["n1"]["kwargs"]["tasks"] == {"depth": 1}
    assert ckpt["model_specs"]["n2"]["kwargs"]["tasks"] == {"semantic": 11}
    assert {"abs_rel", "a1"} <= set(metrics["n1"]["target"]) and "mIoU" in metrics["n2"]["source"]
    assert json.load(open(out / "s1" / "metrics.json"))["selection"] == "last"


def test_stage2_trains_only_g_and_reports_the_table(depsem, tmp_path, monkeypatch):
    out, _ = depsem
    initial = {}
    build = train_transfer.build_atdt

    def spy(*a, **k):
        atdt, spec = build(*a, **k)
        initial.update(copy.deepcopy(atdt.state_dict()))
        return atdt, spec
    monkeypatch.setattr(train_transfer, "build_atdt", spy)
    metrics = stage2(out / "s1", tmp_path / "s2")
    s1 = torch.load(out / "s1" / "checkpoint.pth", weights_only=True)["models"]
    final = torch.load(tmp_path / "s2" / "checkpoint.pth", weights_only=True)["models"]["atdt"]
    changed = {k for k in final if not torch.equal(final[k], initial[k])}
    assert changed and all(k.startswith("transfer.") for k in changed)
    # E1 and D2 (weights and BN statistics) are stage 1's, bit for bit.
    for k, v in final.items():
        if k.startswith("encoder."):
            assert torch.equal(v, s1["n1"]["backbone." + k[len("encoder."):]]), k
        elif k.startswith("decoders."):
            assert torch.equal(v, s1["n2"][k]), k
    assert set(metrics["target"]) == {"atdt", "baseline"}
    assert {"mIoU", "acc"} <= set(metrics["target"]["atdt"])
    assert metrics["selection"].startswith("best on proc-a val")   # domain A only (Sec. 4)
    # The selected model is what evaluate.py scores on B: same number as the table.
    model, _ = evaluate.load_inference_model(str(tmp_path / "s2" / "model.pth"))
    args = evaluate.get_args_parser().parse_args(
        ["--checkpoint", str(tmp_path / "s2" / "model.pth"), "--proc-length", "8",
         "--batch-size", "4", "--device", "cpu",
         "--output-dir", str(tmp_path / "ev")])
    scored = evaluate.main(args)
    assert scored["mIoU"] == pytest.approx(metrics["target"]["atdt"]["mIoU"])


def test_supervised_g_trains_on_b(depsem, tmp_path, monkeypatch):
    out, _ = depsem
    seen = []
    real = engine.InfiniteLoader

    def spy(dataset, *a, **k):
        seen.append(getattr(dataset, "domain", None) or getattr(dataset.data, "domain", None))
        return real(dataset, *a, **k)
    monkeypatch.setattr(train_transfer.engine, "InfiniteLoader", spy)
    metrics = stage2(out / "s1", tmp_path / "supg", "--supervised-g", iters=2)
    assert seen == ["b"] and "supervised_g" in metrics["target"] and "atdt" not in metrics["target"]
    # G is supervised by B's semantic labels through D2, not by E2's features.
    logged = [json.loads(line) for line in open(tmp_path / "supg" / "log.jsonl")]
    assert "supervised_semantic" in logged[0] and "transfer" not in logged[0]


def test_e2_never_sees_domain_b(tmp_path, monkeypatch):
    """Sec. 3.4: images of B go through E1 only, also for the auxiliary loss, in every scheme."""
    seen = {"e1": [], "e2": [], "a": [], "b": []}
    orig_forward = train_tasks.Stage1Net.forward

    def record(name):
        return lambda module, inputs: seen[name].append(inputs[0].clone())

    def spy(self, xa, xb, phase):   # training forwards only (evaluation scores N2 on A val)
        seen["a"].append(xa.clone())
        seen["b"].append(xb.clone())
        hooks = [self.n1.backbone.register_forward_pre_hook(record("e1")),
                 self.n2.backbone.register_forward_pre_hook(record("e2"))]
        try:
            return orig_forward(self, xa, xb, phase)
        finally:
            for h in hooks:
                h.remove()
    monkeypatch.setattr(train_tasks.Stage1Net, "forward", spy)
    for scheme in ("simultaneous", "separate-two-aux"):
        stage1(tmp_path / scheme, "--scheme", scheme, iters=1)
    b_images = torch.cat(seen["b"])
    a_images = torch.cat(seen["a"])
    assert seen["e2"], "E2 was never called"
    for x in torch.cat(seen["e2"]):
        assert not any(torch.equal(x, b) for b in b_images)
        assert any(torch.equal(x, a) for a in a_images)
    # ... while E1 does see them (N1 is trained on A and B).
    assert any(torch.equal(x, b) for x in torch.cat(seen["e1"]) for b in b_images)


def test_nda_term_equals_hand_value():
    """eq. 3 weighted by lambda_NDA: features at 2 locations with norms (5, 1) vs (0, 1)."""
    args = train_tasks.get_args_parser().parse_args(["--aux", "none", "--lambda-nda", "0.5"])
    f1 = torch.zeros(2, 2, 1, 2)                 # batch: [A, B]
    f1[0, :, 0, 0] = torch.tensor([3.0, 4.0])    # A: norm 5 at (0, 0)
    f1[0, :, 0, 1] = torch.tensor([0.0, 1.0])    # A: norm 1 at (0, 1)
    f1[1, :, 0, 1] = torch.tensor([1.0, 0.0])    # B: norms 0 and 1
    a = {"image": torch.zeros(1, 3, 4, 4), "depth": torch.ones(1, 4, 4)}
    b = {"image": torch.zeros(1, 3, 4, 4), "depth": torch.ones(1, 4, 4)}
    out = {"f1": f1, "p1": {"depth": torch.ones(2, 4, 4)}}
    terms = train_tasks.stage1_losses(out, a, b, args, critics=None)
    assert terms["nda"].item() == pytest.approx(0.5 * (abs(5 - 0) + abs(1 - 1)) / 2)
    assert terms["t1_a"].item() == 0.0 and terms["t1_b"].item() == 0.0


def test_depth_loss_is_l1_on_depth_over_100_with_far_pixels_masked():
    args = train_tasks.get_args_parser().parse_args([])
    gt = torch.tensor([[[10.0, 50.0, 0.0, 150.0]]])       # 0 invalid, 150 m > 100 m masked
    pred = torch.tensor([[[20.0, 40.0, 7.0, 3.0]]])
    loss = train_tasks.task_loss("depth", pred, {"depth": gt}, args)
    assert loss.item() == pytest.approx((0.1 + 0.1) / 2)


@pytest.mark.parametrize("extra", [["--e1-align", "adv"], ["--e1-align", "largernorm"],
                                   ["--scheme", "separate"], ["--aux", "autoencoder"],
                                   ["--task1", "semantic", "--task2", "depth"]])
def test_variants_run(tmp_path, extra):
    metrics = stage1(tmp_path, *extra, iters=1)
    assert metrics["iteration"] == (2 if "separate" in extra else 1)
    ckpt = torch.load(tmp_path / "checkpoint.pth", weights_only=True)
    assert ("critic" in ckpt["models"]) == ("adv" in extra)


def test_separate_scheme_trains_n1_then_n2(tmp_path):
    """Table 6 row 2: the first --iters steps leave N2 untouched, the next ones N1."""
    stage1(tmp_path, "--scheme", "separate", "--stop-at", "1", iters=1)
    first = torch.load(tmp_path / "checkpoint.pth", weights_only=True)["models"]
    stage1(tmp_path, "--scheme", "separate", "--resume", "auto", iters=1)
    second = torch.load(tmp_path / "checkpoint.pth", weights_only=True)["models"]
    assert all(torch.equal(first["n1"][k], second["n1"][k]) for k in first["n1"])
    assert not all(torch.equal(first["n2"][k], second["n2"][k]) for k in first["n2"])


def test_stage1_resume_is_exact(tmp_path):
    stage1(tmp_path / "full", iters=2)
    assert stage1(tmp_path / "cut", "--stop-at", "1", iters=2) is None
    stage1(tmp_path / "cut", "--resume", "auto", iters=2)
    full = torch.load(tmp_path / "full" / "checkpoint.pth", weights_only=True)["models"]
    cut = torch.load(tmp_path / "cut" / "checkpoint.pth", weights_only=True)["models"]
    for net in full:
        for k in full[net]:
            assert torch.equal(full[net][k], cut[net][k]), (net, k)


def test_same_tasks_is_an_error(tmp_path):
    with pytest.raises(engine.UserError, match="--task1 and --task2"):
        stage1(tmp_path, "--task1", "depth", "--task2", "depth")


def test_stage2_without_stage1_is_an_error(tmp_path):
    with pytest.raises(engine.UserError, match="run `python train_tasks.py` first"):
        stage2(tmp_path / "nothing", tmp_path / "s2")


def test_target_without_t1_labels_is_an_error(tmp_path, monkeypatch):
    entry = DATASETS["proc-b"]
    monkeypatch.setitem(DATASETS, "no-depth", DatasetEntry(entry.builder, ("semantic", "edges"),
                                                           num_classes=11))
    with pytest.raises(engine.UserError, match="'no-depth' \\(--tgt\\) has no depth"):
        stage1(tmp_path, "--tgt", "no-depth")


def _ddp_stage1(rank, port, out):
    os.environ.update(RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    # The critic and the separate scheme (parameters unused in a phase) under DDP.
    stage1(out, "--scheme", "separate", "--e1-align", "adv", iters=1)


def test_stage1_under_two_process_gloo_ddp(tmp_path, free_port):
    """Smoke test of the DDP path: both phases of the separate scheme and the critic step."""
    import torch.multiprocessing as mp
    mp.spawn(_ddp_stage1, args=(free_port, str(tmp_path)), nprocs=2, join=True)
    ckpt = torch.load(tmp_path / "checkpoint.pth", weights_only=True)
    assert ckpt["iteration"] == 2 and {"n1", "n2", "aux", "critic"} <= set(ckpt["models"])
    assert json.load(open(tmp_path / "metrics.json"))["iteration"] == 2


def test_target_without_t2_labels_trains_g_and_scores_nothing(tmp_path, monkeypatch, capsys):
    """B needs T1 labels only: without T2 labels stage 2 still trains G and saves the model."""
    entry = DATASETS["proc-b"]
    monkeypatch.setitem(DATASETS, "no-sem", DatasetEntry(entry.builder, ("depth", "edges"),
                                                         num_classes=11))
    stage1(tmp_path / "s1", "--tgt", "no-sem", "--aux", "none", iters=1)
    metrics = stage2(tmp_path / "s1", tmp_path / "s2", iters=1)
    assert metrics["target"] == {} and (tmp_path / "s2" / "model.pth").is_file()
    assert "no-sem has no semantic labels" in capsys.readouterr().out
    with pytest.raises(engine.UserError, match="'no-sem' \\(--tgt\\) has no semantic"):
        stage2(tmp_path / "s1", tmp_path / "s2o", "--supervised-g", iters=1)


def test_real_layouts_carla_to_cityscapes(tmp_path):
    """The experiments/atdt.sh path on tiny official-layout trees: CARLA -> Cityscapes, 11
    classes, depth at CARLA's focal length, then evaluate.py on the selected model."""
    import numpy as np
    from tests import trees
    H, W = 8, 12
    trees.carla(tmp_path, 2, (H, W), ("train", "val"))
    # disparity p = 6401: d = 25 px, depth = 0.25 m x 2000 px / 25 px = 20 m
    trees.cityscapes(tmp_path, 2, (H, W), ("train", "val"), disparity=np.full((H, W), 6401),
                     camera=(0.25, 2000.0))
    # 8x12 files resized to 32x48 (then cropped to 32x48) so E1's features are 2x3. Real data:
    # the paper preset, but for a small backbone and edges computed here (no external maps).
    data = ["--src", "carla", "--tgt", "cityscapes", "--data-root", str(tmp_path), "--classes", "11",
            "--focal-ref", "859.238", "--resize", "32", "48", "--size", "32", "48", "--batch-size", "2",
            "--backbone", "resnet18", "--edges", "compute"]
    args = train_tasks.get_args_parser().parse_args(
        data + ["--iters", "1", "--workers", "0", "--device", "cpu", "--decoder-width", "16",
                "--output-dir", str(tmp_path / "s1")])
    s1 = train_tasks.main(args)
    assert s1["n1"]["target"]["abs_rel"] > 0    # scored in metres against the 20 m labels
    # B's depth, at CARLA's focal (20 m x 859.238 / 2000 = 8.6 m < 100 m), supervises E1.
    step = [json.loads(line) for line in open(tmp_path / "s1" / "log.jsonl")][0]
    assert step["t1_b"] > 0 and step["nda"] > 0
    metrics = stage2(tmp_path / "s1", tmp_path / "s2", iters=1)
    assert metrics["src"] == "carla" and metrics["tgt"] == "cityscapes"
    assert set(metrics["target"]) == {"atdt", "baseline"}
    assert len(metrics["target"]["atdt"]["per_class"]) == 11
    ev = evaluate.main(evaluate.get_args_parser().parse_args(
        ["--checkpoint", str(tmp_path / "s2" / "model.pth"), "--data-root", str(tmp_path),
         "--device", "cpu", "--output-dir", str(tmp_path / "ev")]))
    assert ev["dataset"] == "cityscapes" and ev["mIoU"] == pytest.approx(metrics["target"]["atdt"]["mIoU"])


def test_carla_to_cityscapes_resolves_one_class_map_before_training(tmp_path):
    """Without --classes, CARLA (11 classes) and Cityscapes (19 by default) used to train to the
    end and fail in the final table; the run's one map (11, the only shared one) is fixed first,
    and a map one dataset lacks stops the run before any folder is written."""
    import numpy as np
    from tests import trees
    H, W = 8, 12
    trees.carla(tmp_path, 2, (H, W), ("train", "val"))
    trees.cityscapes(tmp_path, 1, (H, W), ("train", "val"), disparity=np.full((H, W), 6401),
                     camera=(0.25, 2000.0))
    argv = ["--src", "carla", "--tgt", "cityscapes", "--data-root", str(tmp_path), "--preset", "cpu",
            "--resize", "32", "48", "--size", "32", "48", "--batch-size", "1", "--workers", "0",
            "--device", "cpu", "--decoder-width", "16", "--iters", "1", "--task1", "semantic",
            "--task2", "depth"]
    metrics = train_tasks.main(train_tasks.get_args_parser().parse_args(
        argv + ["--output-dir", str(tmp_path / "s1")]))
    ckpt = torch.load(tmp_path / "s1" / "checkpoint.pth", weights_only=True)
    assert ckpt["model_specs"]["n1"]["kwargs"]["tasks"] == {"semantic": 11} and ckpt["args"]["classes"] == 11
    assert len(metrics["n1"]["target"]["per_class"]) == 11            # Cityscapes scored on 11
    with pytest.raises(engine.UserError, match="--classes 19: --src carla has the class maps 11"):
        train_tasks.main(train_tasks.get_args_parser().parse_args(
            argv + ["--classes", "19", "--output-dir", str(tmp_path / "bad")]))
    assert not (tmp_path / "bad").exists()


def test_bench_times_both_stages(tmp_path):
    """tools/bench.py --only atdt1 atdt2 runs the scripts' own train_step functions."""
    import sys
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tools"))
    import bench
    res = bench.main(bench.get_args_parser().parse_args(
        ["--only", "atdt1", "atdt2", "--size", "32", "64", "--batch-size", "2", "--workers", "0",
         "--steps", "1", "--warmup", "0", "--device", "cpu"]))
    for part in ("atdt1", "atdt2"):
        assert res[part]["step_ms"] > 0
        assert res[part]["images_per_s"] == pytest.approx(2 / (res[part]["step_ms"] / 1000))


class GroundTruthDepth(torch.nn.Module):
    """A perfect depth model on one procedural split: it returns each image's own label,
    in metres (depth_focal None) or as a camera of focal `depth_focal` px would see it."""

    def __init__(self, size, length, depth_focal=None):
        super().__init__()
        data = build_dataset("proc-b", "val", size, length=length, labels=["depth"])
        self.table = [(s["image"], s["depth"] * (depth_focal / s["focal"] if depth_focal else 1.0))
                      for s in (data[i] for i in range(len(data)))]
        self.depth_focal = depth_focal

    def forward(self, x):
        return {"depth": torch.stack([next(d for im, d in self.table if torch.equal(im, img))
                                      for img in x.cpu()]).to(x.device)}


def test_a_perfect_oracle_scores_zero_under_its_own_depth_convention(tmp_path, monkeypatch):
    """A metric-depth Oracle scored next to a stage 1 trained with --focal-ref (labels at
    500 px) must not inherit that rescaling: abs rel 0 in train_transfer.py's table and in
    evaluate.py, with or without --focal-ref; a model at 500 px is converted back (also 0)."""
    from lib.models import MODELS, model_spec
    monkeypatch.setitem(MODELS, "gt_depth", GroundTruthDepth)
    stage1(tmp_path / "s1", "--task1", "semantic", "--task2", "depth", "--focal-ref", "500", iters=1)
    paths = {}
    for name, focal in (("metric", None), ("at500", 500.0)):
        spec = model_spec("gt_depth", size=[32, 64], length=8, depth_focal=focal)
        paths[name] = engine.save_checkpoint(
            str(tmp_path / f"{name}.pth"), script="train_supervised.py", iteration=1,
            args=train_tasks.get_args_parser().parse_args(["--size", "32", "64"]),
            models={"model": GroundTruthDepth([32, 64], 8, focal)}, model_specs={"model": spec})
    metrics = stage2(tmp_path / "s1", tmp_path / "s2", "--oracle-checkpoint", paths["metric"],
                     "--transfer-oracle-checkpoint", paths["at500"], iters=1)
    for row in ("oracle", "transfer_oracle"):
        assert metrics["target"][row]["abs_rel"] == pytest.approx(0, abs=1e-6), row
        assert metrics["target"][row]["a1"] == pytest.approx(100)
    assert metrics["target"]["baseline"]["abs_rel"] > 0.01          # a real model is not perfect
    for path in paths.values():
        for extra in ([], ["--focal-ref", "500"]):
            ev = evaluate.main(evaluate.get_args_parser().parse_args(
                ["--checkpoint", path, "--dataset", "proc-b", "--size", "32", "64", "--proc-length",
                 "8", "--device", "cpu", "--output-dir", str(tmp_path / "ev"), *extra]))
            assert ev["abs_rel"] == pytest.approx(0, abs=1e-6), (path, extra)


def test_simultaneous_scheme_stops_the_shorter_network(tmp_path):
    """The official schedule (N2 shorter than N1) in the journal's simultaneous scheme: N2 and
    its poly schedule end at --n2-iters, N1 trains on to --iters."""
    stage1(tmp_path, "--n2-iters", "1", "--stop-at", "1", iters=2)
    first = torch.load(tmp_path / "checkpoint.pth", weights_only=True)
    metrics = stage1(tmp_path, "--n2-iters", "1", "--resume", "auto", iters=2)
    second = torch.load(tmp_path / "checkpoint.pth", weights_only=True)
    assert metrics["iteration"] == 2
    assert all(torch.equal(first["models"]["n2"][k], second["models"]["n2"][k]) for k in first["models"]["n2"])
    assert not all(torch.equal(first["models"]["n1"][k], second["models"]["n1"][k]) for k in first["models"]["n1"])
    assert second["schedulers"]["n2"]["last_epoch"] == 1 and second["schedulers"]["n1"]["last_epoch"] == 2
    logged = [json.loads(line) for line in open(tmp_path / "log.jsonl") if '"t1_a"' in line]
    assert "t2_a" in logged[0] and "t2_a" not in logged[1]


def test_stage2_keeps_the_best_g_in_its_own_file_and_resumes_exactly(depsem, tmp_path):
    """checkpoint.pth holds one G and its optimizer, best_g.pth the selected G alone; a run
    stopped and resumed selects and reports exactly what an uninterrupted one does."""
    out, _ = depsem
    full = stage2(out / "s1", tmp_path / "full", iters=4)
    assert stage2(out / "s1", tmp_path / "cut", "--stop-at", "3", iters=4) is None
    cut = stage2(out / "s1", tmp_path / "cut", "--resume", "auto", iters=4)
    assert cut == {**full, "stage1": cut["stage1"]}
    ckpt = torch.load(tmp_path / "full" / "checkpoint.pth", weights_only=True)
    assert set(ckpt["models"]) == {"atdt"} and set(ckpt["optimizers"]) == {"g"}
    best = torch.load(tmp_path / "full" / "best_g.pth", weights_only=True)
    assert set(best) == {"metrics", "iteration", "g"} and best["iteration"] in (2, 4)
    assert all(k.split(".")[0].isdigit() for k in best["g"])   # G's own layers: no E1, no D2
    model = torch.load(tmp_path / "full" / "model.pth", weights_only=True)["models"]["atdt"]
    assert all(torch.equal(model["transfer." + k], v) for k, v in best["g"].items())


def test_g_trained_at_batch_1_holds_in_eval_mode(tmp_path):
    """G has BatchNorm (journal, Sec. 4) and trains at batch 1 (official code): in train mode BN
    normalises each image with its own statistics, in eval mode with the running ones. On A's
    val split the eval-mode G must fit E2's features at least about as well as train mode does
    (measured on the full CPU run: MSE 0.594 against 0.558, mIoU 21.5 against 22.1; README)."""
    stage1(tmp_path / "s1", "--size", "64", "128", iters=2)          # 4x8 feature maps
    stage2(tmp_path / "s1", tmp_path / "s2", "--eval-every", "0", iters=30)
    atdt, _ = evaluate.load_inference_model(str(tmp_path / "s2" / "model.pth"))
    n2, _ = train_transfer.frozen(engine.load_checkpoint(str(tmp_path / "s1" / "checkpoint.pth")),
                                  "n2", torch.device("cpu"))
    per_image = copy.deepcopy(atdt.transfer).train()
    for m in per_image.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = 0.0                     # train-mode normalisation, running stats kept
    data = build_dataset("proc-a", "val", (64, 128), length=8, labels=[])
    mse = {"eval": 0.0, "train": 0.0}
    with torch.no_grad():
        for i in range(len(data)):
            x = data[i]["image"][None]
            f1, f2 = atdt.encoder(x)["layer4"], n2.forward_features(x)
            mse["eval"] += torch.nn.functional.mse_loss(atdt.transfer(f1), f2).item() / len(data)
            mse["train"] += torch.nn.functional.mse_loss(per_image(f1), f2).item() / len(data)
    assert mse["eval"] <= 1.15 * mse["train"], mse
    assert atdt.transfer[1].num_batches_tracked == 30     # the running statistics did follow G


def test_focal_at_eval_learns_metres_and_stores_the_focal_of_a(tmp_path, monkeypatch):
    """The official convention (eval_task.py): labels stay in metres during training, and N2
    (trained on A alone) carries f_A, so scoring it on B multiplies by f_B / f_A (see the Oracle
    test; N1, trained on A and B, stores none: the test below)."""
    from lib.data.procedural import camera
    seen = []
    real = train_tasks.task_loss

    def spy(task, pred, batch, args):
        seen.append("depth_scale" in batch)
        return real(task, pred, batch, args)
    monkeypatch.setattr(train_tasks, "task_loss", spy)
    stage1(tmp_path / "s1", "--task1", "semantic", "--task2", "depth", "--focal-at-eval", iters=1)
    assert seen and not any(seen)                              # no label was rescaled
    ckpt = torch.load(tmp_path / "s1" / "checkpoint.pth", weights_only=True)
    f_a = camera("a", (32, 64)).focal
    assert ckpt["model_specs"]["n2"]["kwargs"]["depth_focal"] == pytest.approx(f_a)
    stage2(tmp_path / "s1", tmp_path / "s2", iters=1)
    atdt, _ = evaluate.load_inference_model(str(tmp_path / "s2" / "model.pth"))
    assert atdt.depth_focal == pytest.approx(f_a) and f_a != camera("b", (32, 64)).focal
    with pytest.raises(engine.UserError, match="exclude each other"):
        stage1(tmp_path / "s3", "--focal-at-eval", "--focal-ref", "500", iters=1)


def test_a_non_finite_loss_names_the_step_as_the_log_counts_it(tmp_path, monkeypatch):
    real = train_tasks.task_loss
    monkeypatch.setattr(train_tasks, "task_loss", lambda *a: real(*a) * float("nan"))
    with pytest.raises(engine.NonFiniteLoss, match=r"non-finite loss at iteration 1: loss=nan"):
        stage1(tmp_path, iters=2)


def test_a_failure_after_training_keeps_the_trained_g(depsem, tmp_path, monkeypatch):
    out, _ = depsem

    def broken(*a, **k):
        raise engine.UserError("scoring failed")
    monkeypatch.setattr(train_transfer, "final_table", broken)
    with pytest.raises(engine.UserError, match="scoring failed"):
        stage2(out / "s1", tmp_path / "s2", iters=1)
    model, _ = evaluate.load_inference_model(str(tmp_path / "s2" / "model.pth"))
    assert model.transfer is not None


def test_a_missing_oracle_checkpoint_stops_before_training(depsem, tmp_path):
    out, _ = depsem
    with pytest.raises(engine.UserError, match="not found: .*typo.pth \\(check --oracle-checkpoint\\)"):
        stage2(out / "s1", tmp_path / "s2", "--oracle-checkpoint", str(tmp_path / "typo.pth"))
    assert not (tmp_path / "s2").exists()


# ----------------------------------------------------------------------------- issue 21 (A1-A5)
def test_focal_at_eval_n1_stores_no_focal_and_a_perfect_metric_n1_is_not_rescaled(tmp_path):
    """N1 trains on A and B in metres (Sec. 3.2): under --focal-at-eval it stores no focal, so a
    perfect metric N1 scored on B gets abs rel 0; only N2, trained on A alone, refers to f_A
    (the official eval_task.py rescales a network trained on the source only)."""
    from lib.data.procedural import camera
    from lib.evaluation import evaluate_model
    stage1(tmp_path / "s1", "--focal-at-eval", iters=1)            # Dep->Sem: N1 is the depth net
    specs = torch.load(tmp_path / "s1" / "checkpoint.pth", weights_only=True)["model_specs"]
    f_a, f_b = camera("a", (32, 64)).focal, camera("b", (32, 64)).focal
    assert f_a != f_b
    assert specs["n1"]["kwargs"]["depth_focal"] is None
    assert specs["n2"]["kwargs"]["depth_focal"] == pytest.approx(f_a)
    perfect = GroundTruthDepth([32, 64], 8)                        # metric, B's own labels
    perfect.depth_focal = specs["n1"]["kwargs"]["depth_focal"]     # N1's stored convention
    loader = engine.eval_loader(build_dataset("proc-b", "val", (32, 64), length=8, labels=["depth"]), 4,
                                argparse_ns(workers=0))
    scores = evaluate_model(perfect, loader, torch.device("cpu"), ["depth"], min_depth=1e-3, max_depth=100)
    assert scores["abs_rel"] == pytest.approx(0, abs=1e-6)
    # The same perfect N1 under the old convention (f_A stored) is off by f_B / f_A.
    perfect.depth_focal = f_a
    assert evaluate_model(perfect, loader, torch.device("cpu"), ["depth"], min_depth=1e-3,
                          max_depth=100)["abs_rel"] > 0.05


def argparse_ns(**kw):
    import argparse
    return argparse.Namespace(**kw)


def _cityscapes_tree(root, frames):
    import numpy as np
    from tests import trees
    H, W = 8, 12
    trees.cityscapes(root, frames, (H, W), ("train", "val"), disparity=np.full((H, W), 6401),
                     camera=(0.25, 2000.0))
    return ["--data-root", str(root), "--classes", "11", "--resize", "32", "48", "--size", "32", "48",
            "--batch-size", "2", "--backbone", "resnet-tiny", "--edges", "compute", "--workers", "0",
            "--device", "cpu", "--decoder-width", "16", "--eval-batches", "1"]


def test_transfer_oracle_draws_different_images_for_a_and_b(tmp_path, monkeypatch):
    """--src X --tgt X (the Transfer Oracle): the two streams have different permutations, so
    x_A != x_B (file datasets ignore the dataset seed: both streams used to draw the same
    images at every step, NDA was 0 and N1 saw half the images)."""
    data = _cityscapes_tree(tmp_path, 6)
    seen = []
    real = train_tasks.train_step

    def spy(net, critics, a, b, *rest):
        seen.append((list(a["name"]), list(b["name"])))
        return real(net, critics, a, b, *rest)
    monkeypatch.setattr(train_tasks, "train_step", spy)
    args = train_tasks.get_args_parser().parse_args(
        data + ["--src", "cityscapes", "--tgt", "cityscapes", "--iters", "3",
                "--output-dir", str(tmp_path / "s1")])
    train_tasks.main(args)
    assert len(seen) == 3
    assert all(names_a != names_b for names_a, names_b in seen), seen
    logged = [s for s in map(json.loads, open(tmp_path / "s1" / "log.jsonl")) if "nda" in s]
    assert logged and all(step["nda"] > 0 for step in logged)


def test_official_decoder_has_two_convs_per_scale_nearest_upsampling_and_elu():
    """--decoder official: core/models.py's build_decoder_dilated_resnet at output stride 16:
    4 x (nearest x2 + conv), a second conv per scale, widths 128-64-32 then out_channels, ELU."""
    from lib.models.decoders import OfficialDecoder
    dec = OfficialDecoder(2048, 11, num_up=4, width=128)
    convs = [m for m in dec.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [128, 128, 64, 64, 32, 32, 11, 11]
    assert all(c.kernel_size == (3, 3) for c in convs)
    ups = [m for m in dec.modules() if isinstance(m, torch.nn.Upsample)]
    assert len(ups) == 4 and all(u.mode == "nearest" for u in ups)
    assert not any(isinstance(m, torch.nn.ReLU) for m in dec.modules())
    assert sum(isinstance(m, torch.nn.ELU) for m in dec.modules()) == 7     # all but the head
    # BN as the official code: not on the width-32 upconv nor on the last scale's convs.
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in dec.modules()) == 5
    assert dec(torch.zeros(1, 2048, 2, 3), (32, 48)).shape == (1, 11, 32, 48)


def test_official_decoder_runs_both_stages(tmp_path):
    stage1(tmp_path / "s1", "--decoder", "official", iters=1)
    ckpt = torch.load(tmp_path / "s1" / "checkpoint.pth", weights_only=True)
    assert ckpt["model_specs"]["n2"]["kwargs"]["decoder"] == "official"
    assert any(k.startswith("blocks.3.1.0") for k in ckpt["models"]["aux"])   # D_aux: the same design
    metrics = stage2(tmp_path / "s1", tmp_path / "s2", iters=1)
    assert "mIoU" in metrics["target"]["atdt"]


def test_carla_focal_is_a_dataset_option(tmp_path):
    """The CARLA focal (859.238 px = 2048 / (2 tan 50 deg)) is --carla-focal / carla_focal,
    passed to CARLA only (every other dataset of a run ignores it)."""
    import math
    from tests import trees
    trees.carla(tmp_path, 1, (8, 12), ("train",))
    trees.cityscapes(tmp_path, 1, (8, 12), ("train",))
    default = build_dataset("carla", "train", (8, 12), str(tmp_path), labels=["depth"])
    assert default[0]["focal"] == pytest.approx(2048 / (2 * math.tan(math.radians(50))), abs=1e-3)
    ours = build_dataset("carla", "train", (8, 12), str(tmp_path), labels=["depth"], carla_focal=429.6)
    assert ours[0]["focal"] == pytest.approx(429.6)
    cs = build_dataset("cityscapes", "train", (8, 12), str(tmp_path), labels=["depth"], carla_focal=429.6)
    proc = build_dataset("proc-a", "train", (32, 64), length=1, labels=["depth"], carla_focal=429.6)
    assert cs[0]["focal"] != pytest.approx(429.6) and proc[0]["focal"] != pytest.approx(429.6)
    args = train_tasks.get_args_parser().parse_args(["--carla-focal", "429.6"])
    from lib.data import data_options
    assert data_options(args, "src")["carla_focal"] == 429.6
    with pytest.raises(engine.UserError, match="--carla-focal must be a positive"):
        build_dataset("carla", "train", (8, 12), str(tmp_path), labels=["depth"], carla_focal=-1.0)


@pytest.mark.parametrize("task1", ["edges", "autoencoder"])
def test_table5_auxiliary_task_as_t1(tmp_path, task1):
    """Table 5 (Sec. 6.3): base AT/DT with edges or image reconstruction as T1 (L2), then G."""
    seen = []
    real = train_tasks.task_loss

    def spy(task, pred, batch, args):
        seen.append((task, tuple(pred.shape)))
        return real(task, pred, batch, args)
    mp = pytest.MonkeyPatch()
    mp.setattr(train_tasks, "task_loss", spy)
    try:
        metrics = stage1(tmp_path / "s1", "--task1", task1, "--aux", "none", "--e1-align", "none", iters=1)
    finally:
        mp.undo()
    channels = {"edges": (2, 32, 64), "autoencoder": (2, 3, 32, 64)}[task1]
    assert (task1, channels) in seen
    assert metrics["n1"] == {} and "mIoU" in metrics["n2"]["source"]
    assert "mIoU" in stage2(tmp_path / "s1", tmp_path / "s2", iters=1)["target"]["atdt"]


def test_table8_e2_alignment_lets_e2_see_b_for_its_term_only(tmp_path):
    """Table 8: --e2-align nda / adv add eq. 3 or an adversarial term on E2(x_A), E2(x_B)."""
    stage1(tmp_path / "nda", "--aux", "none", "--e1-align", "none", "--e2-align", "nda", iters=1)
    step = [json.loads(line) for line in open(tmp_path / "nda" / "log.jsonl")][0]
    assert step["nda_e2"] > 0 and "nda" not in step
    stage1(tmp_path / "adv", "--aux", "none", "--e1-align", "none", "--e2-align", "adv", iters=1)
    step = [json.loads(line) for line in open(tmp_path / "adv" / "log.jsonl")][0]
    assert step["adv_e2"] > 0 and step["critic_e2"] > 0
    assert "critic_e2" in torch.load(tmp_path / "adv" / "checkpoint.pth", weights_only=True)["models"]


@pytest.mark.parametrize("flags,d2_on_b", [(["--e2-align", "nda"], False), (["--d2-align", "adv"], True)])
def test_e2_sees_b_in_a_forward_of_its_own_and_d2_only_for_table9(flags, d2_on_b):
    """Sec. 3.4 keeps B out of E2: under Tables 8-9 E2(x_B) is a forward of its own (the batch
    statistics of the supervised A term stay A's), and D2 decodes it only for Table 9."""
    args = train_tasks.get_args_parser().parse_args(TINY + ["--aux", "none", *flags])
    args = apply_preset(args, train_tasks.PRESETS, [args.src, args.tgt], log=None)
    _, net, _, _ = train_tasks.build(args, 11)
    seen = {"e2": [], "d2": []}
    net.n2.backbone.register_forward_hook(lambda m, i, o: seen["e2"].append(i[0].shape[0]))
    decode = net.n2.decode
    net.n2.decode = lambda f, size: seen["d2"].append(f.shape[0]) or decode(f, size)
    out = net(torch.randn(2, 3, 32, 64), torch.randn(2, 3, 32, 64), "both")
    assert seen["e2"] == [2, 2] and out["f2b"].shape[0] == 2
    assert seen["d2"] == ([2, 2] if d2_on_b else [2]) and ("p2b" in out) == d2_on_b


def test_tables_8_9_terms_by_hand():
    """The E2 / D2 alignment terms of stage1_losses on hand-made outputs. E2 features with norm
    3 on A and 1 on B (every location): eq. 3 = |3 - 1| = 2, times lambda_NDA. A critic that
    answers logit 0 everywhere: BCE against label 1 (B passed as A) = ln 2, times its weight;
    Table 7's critic reads B's E2 features, Table 9's discriminator D2's softmax on B."""
    args = train_tasks.get_args_parser().parse_args(TINY + ["--aux", "none", "--e1-align", "none"])
    args = apply_preset(args, train_tasks.PRESETS, [args.src, args.tgt], log=None)
    f2, f2b = torch.zeros(2, 4, 2, 3), torch.zeros(2, 4, 2, 3)
    f2[:, 0], f2b[:, 1] = 3.0, 1.0
    logits = torch.randn(2, 11, 8, 16)
    out = {"p2": {"semantic": torch.randn(2, 11, 8, 16)}, "f2": f2, "f2b": f2b, "p2b": {"semantic": logits}}
    batch = {"image": torch.zeros(2, 3, 8, 16), "semantic": torch.zeros(2, 8, 16, dtype=torch.long)}
    seen = {}

    def critic(name):
        return lambda x: (seen.__setitem__(name, x), torch.zeros(x.shape[0], 1, *x.shape[2:]))[1]
    critics = {"critic_e2": critic("critic_e2"), "disc_d2": critic("disc_d2")}
    for flags, key, value in [(dict(e2_align="nda"), "nda_e2", 2.0 * args.lambda_nda),
                              (dict(e2_align="adv"), "adv_e2", math.log(2) * args.lambda_adv),
                              (dict(d2_align="adv"), "adv_d2", math.log(2) * args.lambda_adv_d2)]:
        a = copy.copy(args)
        a.e2_align, a.d2_align = flags.get("e2_align", "none"), flags.get("d2_align", "none")
        terms = train_tasks.stage1_losses(out, batch, batch, a, critics)
        assert terms[key].item() == pytest.approx(value, rel=1e-5) and {"t2_a", key} == set(terms), key
    assert torch.equal(seen["critic_e2"], f2b) and torch.allclose(seen["disc_d2"], logits.softmax(1))


def test_table9_d2_output_alignment_trains_a_discriminator(tmp_path):
    stage1(tmp_path / "s1", "--aux", "none", "--e1-align", "none", "--d2-align", "adv", iters=2)
    ckpt = torch.load(tmp_path / "s1" / "checkpoint.pth", weights_only=True)
    assert "disc_d2" in ckpt["models"] and ckpt["schedulers"]["disc_d2"]["last_epoch"] == 2
    step = [json.loads(line) for line in open(tmp_path / "s1" / "log.jsonl")][0]
    assert step["adv_d2"] > 0 and step["disc_d2"] > 0


@pytest.mark.parametrize("align", ["nda", "adv", "nda+adv", "adv-d2"])
def test_table10_g_output_alignment(depsem, tmp_path, align):
    """Table 10 (Sec. 6.7): G also sees E1(x_B) and aligns its output across domains; only G
    (and the critic) train, and model.pth is the plain inference model."""
    out, _ = depsem
    metrics = stage2(out / "s1", tmp_path / "s2", "--g-align", align, iters=2)
    step = [json.loads(line) for line in open(tmp_path / "s2" / "log.jsonl") if '"transfer"' in line][0]
    assert ("nda_g" in step) == ("nda" in align) and ("adv_g" in step) == ("adv" in align)
    ckpt = torch.load(tmp_path / "s2" / "checkpoint.pth", weights_only=True)
    assert ("critic" in ckpt["models"]) == ("adv" in align)
    s1 = torch.load(out / "s1" / "checkpoint.pth", weights_only=True)["models"]
    for k, v in ckpt["models"]["atdt"].items():
        if k.startswith("decoders."):
            assert torch.equal(v, s1["n2"][k]), k                    # D2 frozen, also under adv-d2
    assert "mIoU" in metrics["target"]["atdt"]
    with pytest.raises(engine.UserError, match="--g-align"):
        stage2(out / "s1", tmp_path / "bad", "--g-align", align, "--supervised-g", iters=1)


STUB = """import json, os, sys
argv = sys.argv[1:]
script, out = argv[0], argv[argv.index("--output-dir") + 1]
os.makedirs(out, exist_ok=True)
with open(os.path.join(os.path.dirname(out), "calls.txt"), "a") as f:
    f.write(os.path.basename(out) + " " + script + "\\n")
row = lambda k: {"mIoU": float(k), "acc": float(k) + 0.5}
# values by run: 10 for depsem_base*, 20 for depsem_full*, 30 for oracles_depsem*, 40 otherwise;
# + 1 for the atdt row, + 2 for the baseline row: a row read from the wrong run shows
run = os.path.basename(out)
base = next((v for k, v in (("depsem_base", 10), ("depsem_full", 20), ("oracles_depsem", 30)) if run.startswith(k)), 40)
metrics = {"task2": "semantic", "target": {"atdt": row(base + 1), "baseline": row(base + 2)}}
if "--oracle-checkpoint" in argv:
    metrics["target"]["oracle"] = row(3)
json.dump(metrics, open(os.path.join(out, "metrics.json"), "w"))
"""


def test_atdt_sh_table1_has_its_rows_whatever_table_ran_first(tmp_path):
    """experiments/atdt.sh: table1's rows come from runs of their own (the plain N2 of the base
    run as the baseline, the A = B run for both oracles), so a table3 that ran first, and
    left depsem_full_G without oracle rows, cannot take them from table1."""
    import subprocess
    import sys
    stub = tmp_path / "stub.py"
    stub.write_text(STUB)
    fake = tmp_path / "python"
    fake.write_text(f'#!/bin/sh\nif [ "$1" = "-" ]; then exec {sys.executable} "$@"; fi\n'
                    f'exec {sys.executable} {stub} "$@"\n')
    fake.chmod(0o755)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "PYTHON": str(fake), "DATA": str(tmp_path), "RUNS": str(tmp_path / "runs")}
    for table in ("table3", "table1"):
        p = subprocess.run(["bash", "experiments/atdt.sh", table], cwd=root, env=env,
                           capture_output=True, text=True)
        assert p.returncode == 0, p.stderr
    lines = {line.split("|")[1].strip(): line for line in p.stdout.splitlines() if line.startswith("| ")}
    # (the stub's values name the run and row: base run's baseline 12, full run's atdt 21, A = B run's 31 / 32)
    assert "12.0000" in lines["baseline (N2 on B)"] and "21.0000" in lines["AT/DT"]
    assert "31.0000" in lines["Transfer Oracle"] and "32.0000" in lines["Oracle"]
    calls = (tmp_path / "runs" / "calls.txt").read_text().split("\n")
    assert "depsem_base_seed0 train_tasks.py" in calls and "oracles_depsem_G_seed0 train_transfer.py" in calls
    assert sum(c.startswith("depsem_full_G_seed0") for c in calls) == 1   # trained once, reused


def test_diagnostics_nda_share_and_gs_fit(tmp_path):
    """Stage 1's metrics.json "diagnostics": eq. 4's terms on val pairs, their shares summing to
    1, NDA's gradient on E1 against the whole loss's (0 at lambda_NDA 0); stage 2's: G's feature
    MSE to E2 on A and B val, recomputed here on the same images."""
    m = stage1(tmp_path / "s1", "--aux", "edge", "--e1-align", "nda", iters=1)["diagnostics"]
    assert {"t1_a", "t1_b", "aux1_a", "nda", "t2_a"} <= set(m["terms"])
    assert sum(m["shares"].values()) == pytest.approx(1.0) and 0 < m["nda_grad_e1"]["ratio"]
    off = stage1(tmp_path / "off", "--aux", "none", "--e1-align", "nda", "--lambda-nda", "0", iters=1)["diagnostics"]
    assert off["terms"]["nda"] == 0 and off["nda_grad_e1"]["ratio"] == 0
    fit = stage2(tmp_path / "s1", tmp_path / "s2", iters=1)["diagnostics"]["g_fit"]
    atdt = torch.load(tmp_path / "s2" / "model.pth", weights_only=True)
    assert fit["feature_mse_a"] > 0 and fit["relative_mse_b"] > 0 and atdt["models"]["atdt"]
    args = train_transfer.get_args_parser().parse_args(["--stage1", str(tmp_path / "s1")])
    ckpt = train_transfer.load_stage1(args)
    apply_preset(args, train_transfer.PRESETS, [args.src, args.tgt])
    n1, _ = train_transfer.frozen(ckpt, "n1", "cpu")
    n2, _ = train_transfer.frozen(ckpt, "n2", "cpu")
    net, _ = train_transfer.build_atdt(ckpt, n1, n2, args)
    net.load_state_dict(atdt["models"]["atdt"])
    net.eval()
    data = build_dataset("proc-a", "val", (32, 64), None, length=8, labels=[])
    x = torch.stack([data[i]["image"] for i in range(4)])     # --eval-batches 1 of max(batch, 4)
    with torch.no_grad():
        t, f2 = net.transfer(net.encoder(x)["layer4"]), n2.forward_features(x)
    assert fit["feature_mse_a"] == pytest.approx(float((t - f2).square().mean()), rel=1e-4)
