"""tools/gpu_check.sh runs only when a GPU is lent, so its dry mode (every part on the CPU
at tiny sizes) is tested here end to end, with the bench options it relies on."""
import json
import os
import subprocess
import sys

import pytest
import torch

from lib import engine

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "tools", "gpu_check.sh")
sys.path.insert(0, os.path.join(ROOT, "tools"))
import bench  # noqa: E402

PARTS = ["atdt1_fp32", "atdt2_fp32", "atdt1_bf16", "atdt2_bf16", "atdt1_bf16_cl", "atdt2_bf16_cl"]


def run_check(out, **env):
    env = {**os.environ, "GPU_CHECK_DRY": "1", "PYTHON": sys.executable, **env}
    return subprocess.run(["bash", SCRIPT, str(out)], env=env, capture_output=True, text=True,
                          timeout=300)


@pytest.fixture(scope="module")
def dry(module_tmp):
    out = module_tmp("gpu_check")
    return out, run_check(out)


def test_dry_run_writes_every_part(dry):
    out, proc = dry
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "gpu: none" in (out / "env.txt").read_text() and "torch:" in (out / "env.txt").read_text()
    tests = (out / "pytest_cuda.txt").read_text()
    assert "skipped" in tests and "failed" not in tests and "error" not in tests
    for part in PARTS:
        r = json.loads((out / f"{part}.json").read_text())
        stage = part.split("_")[0]
        s = r[stage]
        assert r["backbone"] == "resnet-tiny" and r["size"] == [64, 64] and r["device"] == "cpu"
        assert r["amp"] == ("off" if "fp32" in part else "bf16")
        assert r["channels_last"] == part.endswith("_cl") and r["compile"] is False
        assert s["step_ms"] == pytest.approx(s["forward_ms"] + s["backward_ms"] + s["optimizer_ms"])
        assert min(s["data_ms"], s["forward_ms"], s["backward_ms"], s["optimizer_ms"]) > 0
        assert s["images_per_s"] == pytest.approx(1000 / s["step_ms"]) and s["peak_mem_mb"] > 0
        assert ("finite" in r) == part.endswith("_cl")
    for part, stages in (("semimtl_bf16", ["semimtl"]), ("umadapt_bf16", ["umadapt_base", "umadapt_adapt"]),
                         ("headfreeze_bf16", ["headfreeze"])):
        r = json.loads((out / f"{part}.json").read_text())
        assert r["amp"] == "bf16" and r["batch_size"] == 2
        for stage in stages:
            assert r[stage]["step_ms"] > 0 and r[stage]["peak_mem_mb"] > 0
    for stage in ("atdt1", "atdt2"):
        f = json.loads((out / f"{stage}_bf16_cl.json").read_text())["finite"]
        assert f["stage"] == stage and f["with_check_ms"] > 0 and f["without_check_ms"] > 0


def test_dry_run_summary_has_one_row_per_measurement(dry):
    out, _ = dry
    summary = (out / "summary.md").read_text()
    rows = [line for line in summary.splitlines() if line.startswith("| atdt")]
    # 6 stage rows + 2 check_finite rows in the measurements table, 6 in the parts table
    assert len(rows) == 6 + 2 + 6
    assert "| atdt1_bf16_cl | atdt1 | bf16 + channels_last |" in summary
    assert "| atdt2_bf16_cl | atdt2 check_finite | bf16 + channels_last |" in summary
    assert "| pytest_cuda | ok |" in summary and "failed" not in summary


def test_spent_budget_skips_parts_and_fails(tmp_path):
    proc = run_check(tmp_path, GPU_CHECK_BUDGET="0")
    assert proc.returncode == 1
    assert json.loads((tmp_path / "atdt1_fp32.json").read_text())["error"] == "skipped: budget spent"
    summary = (tmp_path / "summary.md").read_text()
    assert "| atdt2_bf16_cl | - | - | skipped: budget spent |" in summary
    assert "| pytest_cuda | skipped | 0 |" in summary


def test_bench_compiles_the_step_models_and_times_check_finite(tmp_path, monkeypatch):
    compiled, calls = [], []
    monkeypatch.setattr(torch, "compile", lambda m: compiled.append(type(m).__name__) or m)
    real = engine.check_finite

    def counting(*a, **k):
        calls.append(1)
        return real(*a, **k)
    monkeypatch.setattr(engine, "check_finite", counting)
    threads = torch.get_num_threads()
    try:  # one thread: tiny steps on a busy 2-core machine are many times faster
        res = bench.main(bench.get_args_parser().parse_args(
            ["--only", "finite", "--size", "32", "32", "--batch-size", "1", "--workers", "0",
             "--warmup", "1", "--steps", "1", "--finite-steps", "2", "--device", "cpu", "--compile",
             "--threads", "1", "--json", str(tmp_path / "b.json")]))
    finally:
        torch.set_num_threads(threads)
    # E1, E2's backbone and G of train_transfer's step
    assert sorted(compiled) == ["ResNetBackbone", "ResNetBackbone", "TransferNet"]
    f = res["finite"]
    assert f["stage"] == "atdt2" and f["steps"] == 2 and f["rounds"] == 2
    assert f["with_check_ms"] > 0 and f["without_check_ms"] > 0
    assert f["overhead_pct"] == pytest.approx(100 * (f["with_check_ms"] / f["without_check_ms"] - 1))
    assert len(calls) == 2 * (1 + 2)              # every step of the "with" runs, none of the others
    assert engine.check_finite is counting        # restored
    assert json.loads((tmp_path / "b.json").read_text())["compile"] is True


def test_bench_measures_the_stage2_checkpoint_files():
    """--only ckpt2: checkpoint.pth holds G, E1 and D2 plus Adam's two moments (about 3x G's
    weights + the frozen nets); best_g.pth holds G's weights alone."""
    res = bench.main(bench.get_args_parser().parse_args(["--only", "ckpt2", "--device", "cpu"]))
    c = res["ckpt2"]
    g_gib = c["g_params_m"] * 1e6 * 4 / 2**30               # fp32 weights of G (ResNet-18: 512 ch)
    assert c["g_params_m"] == pytest.approx(6 * 512 * 512 * 9 / 1e6, rel=0.01)   # + BN, 0.1%
    assert c["best_g_gib"] == pytest.approx(g_gib, rel=0.02)
    assert 3 * g_gib < c["checkpoint_gib"] < 3 * g_gib + 0.2 and c["checkpoint_s"] > 0
