"""Every training script under 2-process gloo DDP on the CPU, and a resume of it.

DADA (s7: a discriminator and the depth block), SemiMTL (semimtl m2: two domain-aware
discriminators, dropout in the PSP head), HeadFreeze+DA across its switch, each UM-Adapt stage
(transfer, base, ccr, adapt adv and s) and AT/DT stage 2 each run as 2 processes:
  * 3 steps, and the same run stopped with --stop-at 2 and continued with --resume auto: the
    final checkpoints are equal bit for bit, and so are the metrics;
  * both ranks hold the same weights and buffers after training and scoring: DDP keeps the
    wrapped network in step, engine.average_grads the modules kept out of DDP
    (discriminators, energy networks, res5 of UM-Adapt's Mt), engine.broadcast_modules
    their start;
  * evaluation scores each sample once: the ranks score disjoint samples whose union is what
    one process scores, and the metrics equal a 1-process evaluation of the same weights (a
    1-process --resume auto of the finished run: no step is left, it only scores).

All runs share one pair of forked processes, job after job, each job on its own MASTER_PORT
since each main() destroys its process group; then the same two processes score each finished
run as 1 process (half each). AT/DT stage 1 under DDP is tests/test_atdt.py's.
"""
import hashlib
import json
import os
import shutil
import socket

import pytest
import torch
import torch.multiprocessing as mp

import train_dada
import train_headfreeze
import train_semimtl
import train_tasks
import train_transfer
import train_umadapt
from lib import engine, evaluation

SCRIPTS = {"dada": train_dada, "semimtl": train_semimtl, "headfreeze": train_headfreeze,
           "umadapt": train_umadapt, "transfer": train_transfer}
ITERS, STOP = 3, 2
COMMON = ["--backbone", "resnet-tiny", "--workers", "0", "--eval-batches", "1", "--device", "cpu", "--save-every", "0",
          "--iters", str(ITERS)]
TINY = ["--size", "32", "64", "--batch-size", "2", "--proc-length", "8"] + COMMON
UMADAPT = TINY + ["--decoder-width", "16", "--transfer-width", "8", "--class-weight-images", "4"]
# name: (script, flags, the run's sub-folder holding checkpoint.pth)
CASES = {
    "dada": ("dada", TINY + ["--setup", "s7"], ""),
    "semimtl": ("semimtl", TINY + ["--method", "semimtl", "--mode", "m2", "--decoder-width", "32",
                                   "--d-width", "8"], ""),
    # the switch after step 1, so the cut at step 2 resumes a frozen head (DDP rebuilt without it)
    "headfreeze": ("headfreeze", TINY + ["--variant", "headfreeze+da", "--freeze-at", "1",
                                         "--fpn-width", "16"], ""),
    # G selected on A's val at steps 2 and 3: the resume reloads best_g.pth
    "transfer": ("transfer", COMMON + ["--eval-every", "2"], ""),
    "umadapt-transfer": ("umadapt", UMADAPT + ["--stage", "transfer"], "transfer"),
    "umadapt-base": ("umadapt", UMADAPT + ["--stage", "base"], "base"),
    "umadapt-ccr": ("umadapt", UMADAPT + ["--stage", "ccr"], "ccr"),
    "umadapt-adapt-adv": ("umadapt", UMADAPT + ["--stage", "adapt", "--variant", "adv"], "adapt-adv"),
    "umadapt-adapt-s": ("umadapt", UMADAPT + ["--stage", "adapt", "--variant", "s"], "adapt-s"),
}


def dirs(root, name):
    """The uninterrupted run's folder and the cut-and-resumed one's. UM-Adapt's stages share
    one run folder per kind, so each stage starts from the earlier stages of its own kind
    (equal to the other kind's when every resume is exact)."""
    run = "umadapt" if name.startswith("umadapt") else name
    return root / run / "full", root / run / "cut"


def flags(root, name, out):
    script, argv, _ = CASES[name]
    return argv + (["--stage1", str(root / "stage1")] if script == "transfer" else []) + ["--output-dir", str(out)]


# ----------------------------------------------------------------------------- the 2 processes
def _fingerprint(models):
    """A digest of every tensor of every model: bitwise equal tensors, equal digests."""
    return {net: {k: hashlib.sha1(v.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy()).hexdigest()
                  + str(v.dtype) + str(tuple(v.shape))
                  for k, v in engine.unwrap(m).state_dict().items()} for net, m in models.items()}


def _spy_scorer(log):
    """Record, for every evaluation (one Scorer), the names of the samples it scored."""
    real_update, real_compute = evaluation.Scorer.update, evaluation.Scorer.compute

    def update(self, preds, batch):
        self.seen = getattr(self, "seen", []) + list(batch["name"])
        return real_update(self, preds, batch)

    def compute(self):
        log.append(sorted(getattr(self, "seen", [])))
        return real_compute(self)
    return {"update": update, "compute": compute}


def _worker(rank, ports, jobs, evals):
    """The DDP jobs in both processes, then the 1-process scorings, half in each process."""
    os.environ.update(RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1")
    torch.set_num_threads(1)
    os.fsync = lambda fd: None     # durability of tmp folders is moot; ~200 fsyncs cost seconds
    saved, scored = {}, []
    real_save = engine.save_checkpoint

    def save(path, **kw):          # which models each rank checkpoints, to compare the ranks
        saved[os.fspath(path)] = kw["models"]
        return real_save(path, **kw)
    engine.save_checkpoint = save
    for k, f in _spy_scorer(scored).items():
        setattr(evaluation.Scorer, k, f)
    for port, (script, argv) in zip(ports, jobs):
        os.environ["MASTER_PORT"] = str(port)
        saved.clear()
        scored.clear()
        module = SCRIPTS[script]
        module.main(module.get_args_parser().parse_args(argv))
        # After main(): the weights each rank trained and scored with, and what it scored.
        path = next(p for p in saved if os.path.basename(p) == "checkpoint.pth")
        torch.save({"models": _fingerprint(saved[path]), "scored": list(scored)},
                   os.path.join(os.path.dirname(path), f"rank{rank}.pth"))
    # 1 process: a --resume auto of each finished run has no step left and only scores. It
    # rewrites the run's metrics.json (and model.pth): the 2-process one is kept aside first.
    os.environ.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0")
    for script, argv, out in evals[rank::2]:
        shutil.copy(os.path.join(out, "metrics.json"), os.path.join(out, "metrics_ddp.json"))
        scored.clear()
        module = SCRIPTS[script]
        metrics = module.main(module.get_args_parser().parse_args(argv + ["--resume", "auto"]))
        torch.save({"metrics": json.loads(json.dumps(engine.strict_json(metrics))), "scored": list(scored)},
                   os.path.join(out, "one_process.pth"))


def _ports(n):
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


@pytest.fixture(scope="module")
def root(module_tmp):
    """Every case's uninterrupted run, then its cut (--stop-at 2) and resumed (--resume auto)
    runs, in 2 processes; then a 1-process scoring of each uninterrupted run. A failing job
    fails the fixture, and every test with it."""
    root = module_tmp("ddp")
    with pytest.MonkeyPatch.context() as mp_:
        mp_.setattr(os, "fsync", lambda fd: None)
        train_tasks.main(train_tasks.get_args_parser().parse_args(   # what AT/DT stage 2 reads
            TINY[:-2] + ["--iters", "1", "--aux", "none", "--decoder-width", "16",
                         "--output-dir", str(root / "stage1")]))
    jobs, evals = [], []
    for name, (script, _, sub) in CASES.items():
        full, cut = dirs(root, name)
        jobs += [(script, flags(root, name, full)),
                 (script, flags(root, name, cut) + ["--stop-at", str(STOP)]),
                 (script, flags(root, name, cut) + ["--resume", "auto"])]
        evals.append((script, flags(root, name, full), str(full / sub)))
    # fork, not spawn: the children start with torch and the scripts imported (seconds per
    # child on 2 cores); torch resets its thread pool in a forked child, as DataLoader relies on
    mp.start_processes(_worker, args=(_ports(len(jobs)), jobs, evals), nprocs=2, join=True,
                       start_method="fork")
    return root


# ----------------------------------------------------------------------------- the checks
def _load(path):
    return torch.load(path, weights_only=True, mmap=True)   # mmap: a third of the time


def assert_same_models(a, b, what):
    assert set(a) == set(b), what
    for net in a:
        assert set(a[net]) == set(b[net]), (what, net)
        differ = [k for k in a[net] if not (a[net][k] == b[net][k] if isinstance(a[net][k], str)
                                            else torch.equal(a[net][k], b[net][k]))]
        assert not differ, (what, net, differ[:5])


def metrics_equal(a, b, path=()):
    """Equal metric dicts, floats to 1e-5: sums over 2 shards may differ in their last bits."""
    if isinstance(a, dict):
        assert set(a) == set(b), path
        for k in a:
            metrics_equal(a[k], b[k], path + (k,))
    elif isinstance(a, list):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            metrics_equal(x, y, path + (i,))
    elif isinstance(a, float) and isinstance(b, float):
        assert b == pytest.approx(a, rel=1e-5, abs=1e-6), path
    else:
        assert a == b, path


@pytest.mark.parametrize("name", list(CASES))
def test_two_processes_resume_bit_identical_ranks_in_step_samples_scored_once(root, name):
    run_full, run_cut = dirs(root, name)
    full, cut = run_full / CASES[name][2], run_cut / CASES[name][2]
    f, c = _load(full / "checkpoint.pth"), _load(cut / "checkpoint.pth")
    assert f["iteration"] == c["iteration"] == ITERS
    assert "rng_ranks" in f and len(f["rng_ranks"]) == 2           # each rank's own streams
    assert_same_models(f["models"], c["models"], "resumed vs uninterrupted")
    for run in (full, cut):
        r0, r1 = _load(run / "rank0.pth"), _load(run / "rank1.pth")
        assert_same_models(r0["models"], r1["models"], f"rank 0 vs rank 1, {run.parent.name}")
    metrics = json.load(open(full / "metrics_ddp.json"))
    assert json.load(open(cut / "metrics.json")) == metrics
    one = _load(full / "one_process.pth")
    log = one["scored"]
    metrics_equal(metrics, one["metrics"])
    r0, r1 = (_load(full / f"rank{r}.pth")["scored"] for r in (0, 1))
    assert len(r0) == len(r1) == len(log) + (2 if name == "transfer" else 0)   # + G's selections
    assert bool(log) == (name != "umadapt-ccr")                   # CCR scores an MSE, no Scorer
    for a, b in zip(r0, r1):
        assert a and b and not set(a) & set(b), "a sample scored by both ranks"
    assert [sorted(a + b) for a, b in zip(r0, r1)][len(r0) - len(log):] == log
    if name == "headfreeze":
        assert metrics["head_frozen"] and "d_output" in f["models"]
    if name == "transfer":
        assert _load(full / "best_g.pth")["iteration"] == _load(cut / "best_g.pth")["iteration"]
