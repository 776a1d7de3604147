"""Every training script under --amp off, bf16 and fp16 (lib/engine.py `Amp`; docs/design.md,
"The engine": Precision): two steps of each variant that has optimizers of its own, on tiny
procedural data, in process. fp16 runs on the CPU through the GradScaler path it takes on a GPU.

Each run must finish (trained, checkpointed, scored), log finite losses for every step, save
the scaler's state (a positive, finite scale under fp16; nothing when the scaler is off), and
really update the weights: every optimizer given gradients moves its parameters, and those
the variant trains hold optimizer state in the checkpoint.

The scale starts at 2^3 here instead of torch's 2^16: from scratch on 32x32 crops a few
gradients reach ~3e3 (BatchNorm over 2-16 values per channel), so at 2^16 the scaler would skip
its first ~12 steps while it backs off (test_engine.py covers the back-off) and two steps would
update nothing. Sizes are the smallest the models take (32x32: the discriminators' four
stride-2 convolutions); fp16 and bf16 convolutions take torch's slow reference path on a CPU
without AVX512-FP16/BF16, which is what most of this file's time is.
"""
import json
import math
import os
import sys

import pytest
import torch

import train_dada
import train_headfreeze as hf
import train_semimtl as sm
import train_tasks
import train_transfer
import train_umadapt as um
from lib import engine

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tools"))
import train_supervised  # noqa: E402

MODES = ["off", "bf16", "fp16"]
INIT_SCALE = 2.0 ** 3
ITERS = 2
TINY = ["--size", "32", "32", "--batch-size", "2", "--proc-length", "2", "--workers", "0",
        "--eval-batches", "1", "--log-every", "1", "--save-every", "0", "--device", "cpu",
        "--iters", str(ITERS), "--backbone", "resnet-tiny"]


class SpyAmp(engine.Amp):
    """engine.Amp that keeps, for each optimizer, its parameters as they were at the first
    amp.step that found gradients in it; fp16 starts at INIT_SCALE (module docstring)."""

    made = []

    def __init__(self, mode, device):
        super().__init__(mode, device)
        if self.scaler.is_enabled():   # through the public state, the rest of the scaler as built
            state = self.scaler.state_dict()
            self.scaler.load_state_dict({**state, "scale": INIT_SCALE})
        self.first = {}
        SpyAmp.made.append(self)

    def step(self, optimizers):
        for opt in optimizers:
            params = [p for group in opt.param_groups for p in group["params"]]
            if id(opt) not in self.first and any(p.grad is not None for p in params):
                self.first[id(opt)] = (opt, [p.detach().clone() for p in params])
        super().step(optimizers)


@pytest.fixture
def spy(monkeypatch):
    """The SpyAmp instances the scripts build (they call engine.Amp at run time)."""
    SpyAmp.made = []
    monkeypatch.setattr(engine, "Amp", SpyAmp)
    return SpyAmp.made


def run(module, out_dir, mode, *flags):
    args = module.get_args_parser().parse_args(
        TINY + ["--amp", mode, "--output-dir", str(out_dir), *flags])
    return module.main(args)


def check_run(run_dir, amps, mode):
    """The checks of the module docstring on one run folder and the Amp its run built."""
    ckpt = torch.load(run_dir / "checkpoint.pth", weights_only=True)
    assert ckpt["iteration"] == ITERS and ckpt["args"]["amp"] == mode
    if mode == "fp16":
        scale = ckpt["scaler"]["scale"]
        assert math.isfinite(scale) and 0 < scale <= INIT_SCALE
    else:
        assert ckpt["scaler"] == {}          # a disabled GradScaler has no state
    records = [json.loads(line) for line in open(run_dir / "log.jsonl")]
    steps = [r for r in records if "it_per_s" in r]
    assert [r["iter"] for r in steps] == list(range(1, ITERS + 1))
    for r in steps:                          # NaN / inf would be logged as null
        losses = {k: v for k, v in r.items() if k not in ("run", "time", "iter")}
        assert losses and all(isinstance(v, (int, float)) and math.isfinite(v)
                              for v in losses.values()), r
    (amp,) = amps
    assert amp.mode == mode and amp.first
    for opt, before in amp.first.values():   # the scaler let at least one step through
        after = [p.detach() for group in opt.param_groups for p in group["params"]]
        assert any(not torch.equal(a, b) for a, b in zip(after, before)), \
            f"{type(opt).__name__} never stepped: every step overflowed or was skipped"
    # Adam and momentum SGD keep state from their first real step: every optimizer stepped.
    idle = [name for name, state in ckpt["optimizers"].items() if not state["state"]]
    assert not idle, idle
    return ckpt


# ----------------------------------------------------------------------------- AT/DT
@pytest.fixture(scope="module", params=MODES)
def atdt_stage1(request, module_tmp):
    """Stage 1 with the shared D_aux (edges, Sec. 3.4) and Table 7's adversarial E1 critic:
    three optimizers (N1 + D_aux, N2, critic); stage 2 runs on it."""
    mode, out = request.param, module_tmp(f"atdt-{request.param}") / "s1"
    with pytest.MonkeyPatch.context() as mp:
        SpyAmp.made = []
        mp.setattr(engine, "Amp", SpyAmp)
        metrics = run(train_tasks, out, mode, "--aux", "edge", "--e1-align", "adv",
                      "--decoder-width", "8", "--output-stride", "32")
        return mode, out, metrics, list(SpyAmp.made)


def test_atdt_stage1(atdt_stage1):
    mode, out, metrics, amps = atdt_stage1
    ckpt = check_run(out, amps, mode)
    assert {"n1", "n2", "aux", "critic"} <= set(ckpt["models"]) and "mIoU" in metrics["n2"]["source"]


def test_atdt_stage2(atdt_stage1, tmp_path, spy):
    mode, s1, _, _ = atdt_stage1
    metrics = train_transfer.main(train_transfer.get_args_parser().parse_args(
        ["--stage1", str(s1), "--amp", mode, "--output-dir", str(tmp_path), "--iters", str(ITERS),
         "--batch-size", "2", "--proc-length", "2", "--workers", "0", "--eval-batches", "1",
         "--log-every", "1", "--save-every", "0", "--device", "cpu"]))
    check_run(tmp_path, spy, mode)
    assert "mIoU" in metrics["target"]["atdt"]


# ----------------------------------------------------------------------------- DADA
# s6: the surprisal (s2's) and the depth (s4's) discriminators together, with the depth block
# and feature fusion; s7: DADA's one discriminator on I x Z. One image per domain, as in the
# paper (Sec. 4.1): the dilated stride-8 trunk is the costliest network of this file.
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("setup", ["s6", "s7"])
def test_dada(setup, mode, tmp_path, spy):
    metrics = run(train_dada, tmp_path, mode, "--setup", setup, "--batch-size", "1")
    ckpt = check_run(tmp_path, spy, mode)
    assert {k for k in ckpt["optimizers"] if k.startswith("d_")} == (
        {"d_surprisal", "d_depth"} if setup == "s6" else {"d_fused"})
    assert metrics["target"]["mIoU"] is not None


# ----------------------------------------------------------------------------- SemiMTL
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("method", [["stl"], ["jtl"], ["semimtl", "--mode", "m1"],
                                    ["semimtl", "--mode", "m2"], ["semimtl", "--mode", "m3"]],
                         ids=["stl", "jtl", "semimtl-m1", "semimtl-m2", "semimtl-m3"])
def test_semimtl(method, mode, tmp_path, spy):
    """stl / jtl: the network's SGD alone; semimtl: a step per dataset (Algorithm 1) and the
    two K+1-way discriminators' Adam."""
    metrics = run(sm, tmp_path, mode, "--method", *method, "--decoder-width", "8", "--d-width", "4")
    ckpt = check_run(tmp_path, spy, mode)
    assert len(ckpt["optimizers"]) == (3 if method[0] == "semimtl" else 1)
    assert metrics["scores"]


# ----------------------------------------------------------------------------- UM-Adapt
UM_FLAGS = ["--tasks", "semantic", "depth", "--transfer", "semantic=depth", "depth=semantic",
            "--decoder-width", "16", "--transfer-width", "8", "--class-weight-images", "2"]
UM_STAGES = [("transfer", []), ("base", []), ("ccr", []),
             ("adapt-adv", ["--variant", "adv"]),       # before s, which starts from it
             ("adapt-noadv", ["--variant", "noadv"]), ("adapt-b", ["--variant", "b"]),
             ("adapt-s", ["--variant", "s"])]


@pytest.fixture(scope="module", params=MODES)
def umadapt_run(request, module_tmp):
    """One run folder per mode, every stage in order (each its own optimizers); a stage's
    error is kept for its test (the later stages then fail on its missing model)."""
    mode, out = request.param, module_tmp(f"umadapt-{request.param}")
    done = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(engine, "Amp", SpyAmp)
        for folder, flags in UM_STAGES:
            SpyAmp.made = []
            try:
                metrics = run(um, out, mode, "--stage", folder.split("-")[0], *UM_FLAGS, *flags)
                done[folder] = (metrics, list(SpyAmp.made), None)
            except Exception as err:   # noqa: BLE001 -- re-raised by the stage's test
                done[folder] = (None, [], err)
    return mode, out, done


@pytest.mark.parametrize("folder", [f for f, _ in UM_STAGES])
def test_umadapt(umadapt_run, folder):
    mode, out, done = umadapt_run
    metrics, amps, err = done[folder]
    if err is not None:
        raise err
    ckpt = check_run(out / folder, amps, mode)
    assert metrics["stage"] == folder.split("-")[0]
    assert len(ckpt["optimizers"]) == {"transfer": 2, "base": 2, "ccr": 1, "adapt-adv": 4,
                                       "adapt-noadv": 2, "adapt-b": 2, "adapt-s": 2}[folder]


# ----------------------------------------------------------------------------- HeadFreeze
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("variant", [["baseline+da"], ["headfreeze"], ["headfreeze+da", "--da", "feature"]],
                         ids=["baseline+da", "headfreeze", "headfreeze+da-feature"])
def test_headfreeze(variant, mode, tmp_path, spy):
    """The switch at step 1 of 2: before it HeadFreeze trains eq. 4 alone, so the +DA critics
    (Ganin's three, here) have no gradient at step 1 (amp.step skips them: fp16 raised "No inf
    checks were recorded for this optimizer") and train at step 2."""
    metrics = run(hf, tmp_path, mode, "--variant", *variant, "--freeze-at", "1", "--fpn-width", "8")
    ckpt = check_run(tmp_path, spy, mode)
    assert metrics["head_frozen"] == variant[0].startswith("headfreeze")
    assert len(ckpt["optimizers"]) == {"baseline+da": 2, "headfreeze": 1, "headfreeze+da": 4}[variant[0]]


# ----------------------------------------------------------------------------- supervised
@pytest.mark.parametrize("mode", MODES)
def test_train_supervised(mode, tmp_path, spy):
    """The three tasks' losses (CE, depth, normals) under each mode."""
    metrics = run(train_supervised, tmp_path, mode, "--tasks", "semantic", "depth", "normals",
                  "--output-stride", "32")
    check_run(tmp_path, spy, mode)
    assert {"mIoU", "abs_rel", "mean"} <= set(metrics["source"])
