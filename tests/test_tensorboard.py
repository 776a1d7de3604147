"""`--tensorboard` (lib/engine.py RunLogger, tensorboard_writer_class, scalar_items): every
record log.jsonl holds is mirrored to OUTPUT_DIR/tensorboard, written and read back here with
tensorboard's own reader; without the package the flag is a one-line error before training."""
import builtins
import json
import math
import os
import shutil
import sys

import pytest

import train_dada
import train_headfreeze
import train_semimtl
import train_tasks
import train_transfer
import train_umadapt
from lib import engine

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tools"))
import train_supervised  # noqa: E402

TINY = ["--size", "32", "32", "--batch-size", "2", "--proc-length", "2", "--workers", "0",
        "--eval-batches", "1", "--log-every", "1", "--save-every", "1", "--device", "cpu",
        "--backbone", "resnet-tiny"]
SCRIPTS = [train_tasks, train_transfer, train_dada, train_semimtl, train_umadapt, train_headfreeze,
           train_supervised]


def read_events(folder):
    """{tag: [(step, value), ...]} of every scalar in a TensorBoard folder, by tensorboard's
    reader (a step written twice and not purged appears twice)."""
    event_accumulator = pytest.importorskip(
        "tensorboard.backend.event_processing.event_accumulator",
        reason="the tensorboard package is not installed (requirements-dev.txt has it)")
    acc = event_accumulator.EventAccumulator(folder, size_guidance={event_accumulator.SCALARS: 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def log_records(run_dir):
    with open(os.path.join(run_dir, "log.jsonl")) as f:
        return [json.loads(line) for line in f if line.strip()]


def test_scalar_items_flattens_nested_records_and_skips_what_is_not_a_number():
    record = {"seg": 0.5, "lr": 1e-3, "target": {"mIoU": 20.0, "per_class": [1.0, 2.0],
                                                 "mIoU13": None},
              "diagnostics": {"d_fused": {"src": {"acc": 84.9}}}, "selection": "last",
              "head_frozen": True, "bad": float("nan"), "iteration": 3}
    assert dict(engine.scalar_items(record)) == {
        "seg": 0.5, "lr": 1e-3, "target/mIoU": 20.0, "diagnostics/d_fused/src/acc": 84.9,
        "iteration": 3.0}


@pytest.mark.parametrize("module", SCRIPTS, ids=lambda m: m.__name__)
def test_every_training_script_takes_the_flag(module):
    assert module.get_args_parser().parse_args(["--tensorboard"]).tensorboard is True
    assert module.get_args_parser().parse_args([]).tensorboard is False


def check_mirrors_log(run_dir):
    """Every number of every log.jsonl record is in the events at the record's iteration, and
    each tag holds a step once; returns {tag: {step: value}}."""
    listed = read_events(os.path.join(run_dir, "tensorboard"))
    for tag, pairs in listed.items():
        steps = [step for step, _ in pairs]
        assert len(steps) == len(set(steps)), (tag, steps)
    events = {tag: dict(pairs) for tag, pairs in listed.items()}
    records = log_records(run_dir)
    assert records
    for record in records:
        step = record["iter"]
        for tag, value in engine.scalar_items({k: v for k, v in record.items() if k != "iter"}):
            assert tag in events, tag
            assert math.isclose(events[tag][step], value, rel_tol=1e-6, abs_tol=1e-6), (tag, step)
    return events


def test_supervised_run_writes_terms_lr_and_evaluations_and_reads_back(tmp_path):
    args = train_supervised.get_args_parser().parse_args(
        TINY + ["--iters", "3", "--tasks", "semantic", "depth", "--output-stride", "32",
                "--eval-every", "2", "--tensorboard", "--output-dir", str(tmp_path)])
    train_supervised.main(args)
    events = check_mirrors_log(str(tmp_path))
    assert set(events["lr"]) == {1, 2, 3}                    # every logged step
    assert {"source/mIoU", "target/abs_rel"} <= set(events)   # the evaluations, flattened
    assert any(tag.startswith("loss") or tag in ("semantic", "depth", "seg") for tag in events)


def test_resumed_run_keeps_each_step_once(tmp_path):
    """Stopped at step 2 (its checkpoint kept aside), continued to step 3, then resumed from the
    step-2 checkpoint to the end: step 3 is written twice, and the events hold it once
    (purge_step drops what the earlier segment wrote after the checkpoint, as log.jsonl does)."""
    flags = TINY + ["--iters", "4", "--tasks", "semantic", "--output-stride", "32", "--tensorboard",
                    "--output-dir", str(tmp_path)]
    parser = train_supervised.get_args_parser()
    train_supervised.main(parser.parse_args(flags + ["--stop-at", "2"]))
    shutil.copy(tmp_path / "checkpoint.pth", tmp_path / "step2.pth")
    train_supervised.main(parser.parse_args(flags + ["--resume", "auto", "--stop-at", "3"]))
    assert [r["iter"] for r in log_records(str(tmp_path)) if "lr" in r] == [1, 2, 3]
    train_supervised.main(parser.parse_args(flags + ["--resume", str(tmp_path / "step2.pth")]))
    events = check_mirrors_log(str(tmp_path))
    assert set(events["lr"]) == {1, 2, 3, 4}


def test_dada_writes_its_diagnostics(tmp_path):
    args = train_dada.get_args_parser().parse_args(
        TINY + ["--iters", "1", "--tensorboard", "--output-dir", str(tmp_path)])
    train_dada.main(args)
    events = check_mirrors_log(str(tmp_path))
    assert "diagnostics/depth_source/abs_rel" in events and "target/mIoU" in events


def test_without_the_package_it_is_a_one_line_error_before_training(tmp_path, monkeypatch, capsys):
    real_import = builtins.__import__

    def no_tensorboard(name, *a, **k):
        if name.startswith("torch.utils.tensorboard") or name.startswith("tensorboard"):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *a, **k)
    monkeypatch.setattr(builtins, "__import__", no_tensorboard)
    out = tmp_path / "run"
    args = train_supervised.get_args_parser().parse_args(
        TINY + ["--iters", "1", "--tensorboard", "--output-dir", str(out)])
    with pytest.raises(SystemExit) as exit_info:
        engine.cli(train_supervised.main, args)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --tensorboard needs the tensorboard package")
    assert not out.exists()
