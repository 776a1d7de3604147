"""tools/method_picture.py: the method pages' pictures. Each row is image | ground truth |
baseline | method, every tile recomputed here from the sample and from each model's own
forward pass; depth's three tiles share the ground truth's scale."""
import os
import sys

import numpy as np
import pytest
import torch

from evaluate import load_inference_model
from lib import engine, vis
from lib.data import build_dataset
from lib.data.transforms import denormalize

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tools"))
import method_picture  # noqa: E402
import train_supervised  # noqa: E402

TINY = ["--size", "32", "64", "--batch-size", "2", "--proc-length", "2", "--workers", "0",
        "--eval-batches", "1", "--device", "cpu", "--iters", "1", "--backbone", "resnet-tiny",
        "--output-stride", "32", "--tasks", "semantic", "depth"]


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    for seed in (0, 1):
        args = train_supervised.get_args_parser().parse_args(
            TINY + ["--seed", str(seed), "--output-dir", str(root / f"seed{seed}")])
        train_supervised.main(args)
    return [str(root / f"seed{s}" / "checkpoint.pth") for s in (0, 1)]


def _picture(monkeypatch, two_runs, out, *flags):
    made = []
    real = vis.make_panel
    monkeypatch.setattr(vis, "make_panel", lambda rows, **k: (made.append((rows, k["titles"])), real(rows, **k))[1])
    method_picture.main(method_picture.get_args_parser().parse_args(
        ["--baseline", two_runs[0], "--method", two_runs[1], "--out", str(out), *flags]))
    return made[0]


@pytest.mark.parametrize("task", ["semantic", "depth"])
def test_rows_are_image_truth_baseline_method(task, two_runs, tmp_path, monkeypatch):
    out = tmp_path / "pic" / f"{task}.png"
    rows, titles = _picture(monkeypatch, two_runs, out, "--task", task, "--num", "2", "--names", "S1", "S7")
    assert out.exists() and len(rows) == 2
    assert titles[0] == ["image", f"{task}: ground truth", "S1", "S7"]
    data = build_dataset("proc-b", "val", [32, 64], None, length=2, labels=[task])
    models = [load_inference_model(p)[0] for p in two_runs]
    for i, row in enumerate(rows):
        sample = data[i]
        with torch.no_grad():
            outs = [m(sample["image"][None])[task][0] for m in models]
        factor = 4   # 64 px wide tiles -> enlarged to 256
        image = vis.upscale(vis.to_rgb_uint8(denormalize(sample["image"])), factor, smooth=True)
        assert np.array_equal(row[0], image)
        if task == "semantic":
            want = [vis.colorize_semantic(x, 11) for x in (sample["semantic"], outs[0].argmax(0), outs[1].argmax(0))]
        else:
            near, far = vis.depth_bounds(sample["depth"])
            want = [vis.colorize_depth(x, max_depth=far, min_depth=near) for x in (sample["depth"], *outs)]
        for got, w in zip(row[1:], want):
            assert np.array_equal(got, vis.upscale(w, factor))


class Constant(torch.nn.Module):
    """A model predicting one class everywhere (11 classes), and depth `metres` everywhere."""

    def __init__(self, cls, metres):
        super().__init__()
        self.cls, self.metres = cls, metres

    def forward(self, x):
        logits = torch.zeros(x.shape[0], 11, *x.shape[-2:])
        logits[:, self.cls] = 1.0
        return {"semantic": logits, "depth": torch.full((x.shape[0], *x.shape[-2:]), self.metres)}


def test_baseline_left_method_right(two_runs, tmp_path, monkeypatch):
    """Columns in the order of the flags: --baseline's model third, --method's fourth."""
    real = method_picture.load_inference_model
    fake = {two_runs[0]: Constant(1, 5.0), two_runs[1]: Constant(8, 40.0)}
    monkeypatch.setattr(method_picture, "load_inference_model",
                        lambda path, flag: (fake[path], real(path, flag=flag)[1]))
    for task in ("semantic", "depth"):
        rows, _ = _picture(monkeypatch, two_runs, tmp_path / f"{task}.png", "--task", task, "--num", "1")
        if task == "semantic":
            want = [vis.colorize_semantic(torch.full((32, 64), c), 11) for c in (1, 8)]
        else:
            near, far = vis.depth_bounds(build_dataset("proc-b", "val", [32, 64], None, length=1,
                                                       labels=["depth"])[0]["depth"])
            want = [vis.colorize_depth(torch.full((32, 64), m), max_depth=far, min_depth=near) for m in (5.0, 40.0)]
            assert not np.array_equal(want[0], want[1])
        assert np.array_equal(rows[0][2], vis.upscale(want[0], 4))
        assert np.array_equal(rows[0][3], vis.upscale(want[1], 4))


def test_bad_input_is_a_one_line_error(two_runs, tmp_path):
    parser = method_picture.get_args_parser()
    with pytest.raises(engine.UserError, match="--num must be >= 1"):
        method_picture.main(parser.parse_args(["--baseline", two_runs[0], "--method", two_runs[1],
                                               "--out", str(tmp_path / "x.png"), "--num", "0"]))
    with pytest.raises(engine.UserError, match="not normals"):
        method_picture.main(parser.parse_args(["--baseline", two_runs[0], "--method", two_runs[1],
                                               "--out", str(tmp_path / "x.png"), "--task", "normals"]))
    assert not (tmp_path / "x.png").exists()
