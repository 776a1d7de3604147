"""End to end on tiny procedural data: exact resume, bf16, evaluate.py both ways, CLI errors."""
import argparse
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

import evaluate
from lib import engine
from lib.data import DATASETS, DatasetEntry, build_dataset

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

sys.path.insert(0, os.path.join(ROOT, "tools"))
import train_supervised  # noqa: E402

TINY = ["--size", "32", "64", "--batch-size", "2", "--proc-length", "8", "--workers", "0",
        "--eval-batches", "1", "--log-every", "1", "--device", "cpu", "--backbone", "resnet-tiny"]


def run_train(out_dir, *extra):
    args = train_supervised.get_args_parser().parse_args(
        TINY + ["--iters", "4", "--output-dir", str(out_dir), "--save-every", "0", *extra])
    return train_supervised.main(args)


def weights(out_dir):
    return torch.load(os.path.join(out_dir, "checkpoint.pth"), weights_only=True)["models"]["model"]


def test_resume_continues_exactly(tmp_path):
    run_train(tmp_path / "full", "--tasks", "semantic", "depth")
    assert run_train(tmp_path / "cut", "--tasks", "semantic", "depth", "--stop-at", "2") is None
    assert torch.load(tmp_path / "cut" / "checkpoint.pth", weights_only=True)["iteration"] == 2
    run_train(tmp_path / "cut", "--tasks", "semantic", "depth", "--resume", "auto")
    full, cut = weights(tmp_path / "full"), weights(tmp_path / "cut")
    for k in full:
        assert torch.equal(full[k], cut[k]), k
    log = [json.loads(line) for line in open(tmp_path / "cut" / "log.jsonl")]
    assert [r["iter"] for r in log if "loss" in r] == [1, 2, 3, 4]
    metrics = json.load(open(tmp_path / "full" / "metrics.json"))
    assert {"mIoU", "acc", "abs_rel", "a1"} <= set(metrics["target"])


def test_bf16_training_on_cpu(tmp_path):
    metrics = run_train(tmp_path, "--amp", "bf16")
    assert np.isfinite(metrics["source"]["mIoU"])


@pytest.fixture(scope="module")
def trained(module_tmp):
    out = module_tmp("run")
    run_train(out, "--tasks", "semantic", "depth", "normals")
    return out


def run_eval(*argv):
    return evaluate.main(evaluate.get_args_parser().parse_args(list(argv)))


def test_evaluate_checkpoint_and_saved_predictions_agree(trained, tmp_path):
    ckpt = str(trained / "checkpoint.pth")
    common = ["--dataset", "proc-b", "--proc-length", "4", "--device", "cpu"]
    m = run_eval("--checkpoint", ckpt, *common, "--save-preds", "--save-vis", "2",
                 "--output-dir", str(tmp_path / "ev"))
    assert os.path.isfile(tmp_path / "ev" / "metrics.json")
    assert len(os.listdir(tmp_path / "ev" / "vis")) == 2
    preds = str(tmp_path / "ev" / "preds")
    for task, key in (("semantic", "mIoU"), ("normals", "median")):
        m2 = run_eval("--pred-dir", preds, *common, "--task", task, "--size", "32", "64",
                      "--output-dir", str(tmp_path / task))
        assert m2[key] == pytest.approx(m[key], abs=0.02)
    # depth PNGs hold metres * 256: agreement within that quantisation
    m3 = run_eval("--pred-dir", preds, *common, "--task", "depth", "--size", "32", "64",
                  "--output-dir", str(tmp_path / "depth"))
    assert m3["abs_rel"] == pytest.approx(m["abs_rel"], rel=0.02, abs=1e-3)


def test_prediction_of_wrong_size_is_refused(tmp_path):
    sample = build_dataset("proc-b", "val", (32, 64), length=1, labels=["semantic"])[0]
    path = tmp_path / "p" / (sample["name"] + ".png")
    path.parent.mkdir(parents=True)
    Image.fromarray(np.zeros((16, 32), np.uint8)).save(path)
    with pytest.raises(engine.UserError, match=r"is \(16, 32\), the label is \(32, 64\)"):
        run_eval("--pred-dir", str(tmp_path / "p"), "--dataset", "proc-b", "--task", "semantic",
                 "--size", "32", "64", "--proc-length", "1")


def test_missing_data_root_names_the_flag(monkeypatch):
    monkeypatch.setitem(DATASETS, "fakecity", DatasetEntry(lambda **kw: None, ("semantic",),
                                                           folder="fakecity"))
    with pytest.raises(engine.UserError, match="pass --data-root DIR, the folder holding fakecity/"):
        build_dataset("fakecity", "train", labels=["semantic"])
    with pytest.raises(engine.UserError, match="'fakecity' .--tgt. has no depth labels"):
        build_dataset("fakecity", "train", labels=["semantic", "depth"], role="--tgt")


def cli(*argv):
    return subprocess.run([sys.executable, *argv], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)


@pytest.mark.parametrize("argv, message", [
    (["tools/train_supervised.py", "--src", "nocity"], "unknown dataset 'nocity' for --src"),
    (["evaluate.py", "--pred-dir", "EMPTY"], "is empty or missing"),
    (["tools/train_supervised.py", "--resume", "CKPT", *TINY], "written by train_dada.py, not "
     "train_supervised.py"),
    (["evaluate.py", "--checkpoint", "CKPT"], "(from train_dada.py) has no inference model"),
])
def test_bad_input_is_one_line(tmp_path, argv, message):
    (tmp_path / "empty").mkdir()
    ckpt = str(tmp_path / "other.pth")
    engine.save_checkpoint(ckpt, script="train_dada.py", iteration=1, args=argparse.Namespace(),
                           models={"model": torch.nn.Linear(1, 1)})
    argv = [a.replace("EMPTY", str(tmp_path / "empty")).replace("CKPT", ckpt) for a in argv]
    res = cli(*argv)
    assert res.returncode == 2
    assert res.stderr.strip().count("\n") == 0 and message in res.stderr


def test_show_dataset_writes_one_row_per_sample(tmp_path):
    import show_dataset
    out = tmp_path / "pic.png"
    show_dataset.main(show_dataset.get_args_parser().parse_args(
        ["--size", "16", "32", "--num", "2", "--out", str(out)]))
    w, h = Image.open(out).size
    # 2 datasets x 2 samples = 4 rows of 5 tiles (image + 4 labels), 2-px padding around tiles
    assert (w, h) == (5 * 32 + 6 * 2, 4 * 16 + 5 * 2)


def test_19_class_model_scored_on_16_classes_picks_among_kept_classes():
    adapt = evaluate.class_adapter(19, 16)
    logits = torch.zeros(1, 19, 1, 2)
    logits[0, 9, 0, 0] = 5.0   # terrain (dropped in the 16-class set) wins ...
    logits[0, 8, 0, 0] = 4.0   # ... so vegetation (16-class index 8) is chosen
    logits[0, 18, 0, 1] = 1.0  # bicycle: 19-class 18 -> 16-class 15
    assert adapt(logits).tolist() == [[[8, 15]]]
    with pytest.raises(engine.UserError, match="--classes 11"):
        evaluate.class_adapter(11, 19)


def test_bench_reports_a_consistent_step_split(tmp_path):
    import bench
    out = tmp_path / "bench.json"
    res = bench.main(bench.get_args_parser().parse_args(
        ["--size", "32", "64", "--batch-size", "2", "--workers", "0", "--steps", "2",
         "--warmup", "1", "--samples", "4", "--device", "cpu", "--json", str(out)]))
    step = res["step"]
    parts = step["data_ms"] + step["forward_ms"] + step["backward_ms"] + step["optimizer_ms"]
    assert step["step_ms"] == pytest.approx(parts) and step["forward_ms"] > 0
    assert step["images_per_s"] == pytest.approx(2 / (step["step_ms"] / 1000))
    assert res["generator"]["samples_per_s"] > 0
    assert json.load(open(out))["backbone"] == "resnet18"


def test_loading_for_inference_leaves_batchnorm_statistics_alone(trained):
    model, ckpt = evaluate.load_inference_model(str(trained / "checkpoint.pth"))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    evaluate.model_classes(model, torch.randn(3, 32, 64))
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert not model.training
