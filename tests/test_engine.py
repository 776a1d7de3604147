"""The engine: resumable data streams, exact resume, DDP equivalence, AMP, errors."""
import argparse
import json
import os

import pytest
import torch
import torch.multiprocessing as mp

from lib import engine


class RandomDict(torch.utils.data.Dataset):
    """Samples drawn from the *global* RNG, like a random augmentation would be."""

    def __init__(self, n=12, shape=(3, 8, 8)):
        self.n, self.shape = n, shape

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return {"image": torch.rand(self.shape), "target": torch.full((), float(i)),
                "name": f"s{i:03d}"}


def _args(**kw):
    base = dict(seed=0, rank=0, world_size=1, workers=0, device=torch.device("cpu"))
    base.update(kw)
    return argparse.Namespace(**base)


# ----------------------------------------------------------------------------- data streams
def test_sampler_shards_cover_the_global_batch():
    full = list(engine.ResumableBatchSampler(12, 4, seed=3))
    r0 = list(engine.ResumableBatchSampler(12, 2, seed=3, rank=0, world_size=2))
    r1 = list(engine.ResumableBatchSampler(12, 2, seed=3, rank=1, world_size=2))
    assert len(full) == len(r0) == len(r1) == 3
    for b, a, c in zip(full, r0, r1):
        assert sorted(b) == sorted(a + c)  # same (index, seed) pairs, split over two ranks


def test_sampler_epochs_differ_and_cover_everything():
    s = engine.ResumableBatchSampler(8, 4, seed=0)
    e0 = [i for b in s for i, _ in b]
    s.epoch = 1
    e1 = [i for b in s for i, _ in b]
    assert sorted(e0) == sorted(e1) == list(range(8))
    assert e0 != e1


def test_sample_is_the_same_for_any_worker_count():
    data = RandomDict()
    a = engine.InfiniteLoader(data, 3, _args(workers=0))
    b = engine.InfiniteLoader(data, 3, _args(workers=2))
    for _ in range(6):  # crosses an epoch boundary (4 batches per epoch)
        x, y = next(a), next(b)
        assert x["name"] == y["name"]
        assert torch.equal(x["image"], y["image"])


def test_loader_does_not_disturb_the_global_rng():
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    next(engine.InfiniteLoader(RandomDict(), 3, _args()))
    assert torch.equal(torch.rand(3), expected)


def test_loader_resumes_the_exact_stream():
    data = RandomDict()
    ref = engine.InfiniteLoader(data, 5, _args(seed=1))
    ref_batches = [next(ref) for _ in range(7)]
    first = engine.InfiniteLoader(data, 5, _args(seed=1))
    for _ in range(3):
        next(first)
    second = engine.InfiniteLoader(data, 5, _args(seed=1))
    second.load_state_dict(first.state_dict())
    for want in ref_batches[3:]:
        got = next(second)
        assert got["name"] == want["name"] and torch.equal(got["image"], want["image"])


def test_batch_larger_than_dataset_is_a_clear_error():
    with pytest.raises(engine.UserError, match="lower --batch-size"):
        engine.ResumableBatchSampler(3, 4, seed=0)


# ----------------------------------------------------------------------------- schedules, AMP
def test_poly_schedule_matches_formula():
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=0.5)
    sched = engine.poly_scheduler(opt, iters=10, power=0.9)
    for _ in range(4):
        opt.step()
        sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.5 * (1 - 4 / 10) ** 0.9)


def test_bf16_autocast_on_cpu():
    amp = engine.Amp("bf16", torch.device("cpu"))
    lin = torch.nn.Linear(4, 4)
    with amp.autocast():
        y = lin(torch.randn(2, 4))
    assert y.dtype == torch.bfloat16
    loss = y.float().pow(2).mean()
    amp.backward(loss)
    opt = torch.optim.SGD(lin.parameters(), lr=0.1)
    before = lin.weight.detach().clone()
    amp.step([opt])  # scaler disabled: a plain step
    assert not torch.equal(before, lin.weight)


def test_fp16_on_cpu_autocasts_and_steps_through_the_scaler():
    """fp16 runs on the CPU (slowly, for tests): fp16 autocast and an enabled CPU GradScaler, so
    the gradients are scaled and the step unscales them, as on a GPU."""
    amp = engine.Amp("fp16", torch.device("cpu"))
    assert amp.scaler.is_enabled() and amp.scaler.get_scale() == 2.0 ** 16
    lin = torch.nn.Linear(4, 1, bias=False)
    x = torch.randn(8, 4)
    with amp.autocast():
        y = lin(x)
    assert y.dtype == torch.float16
    amp.backward(y.float().mean())
    grad = x.mean(0, keepdim=True)                 # d mean(x w) / d w
    torch.testing.assert_close(lin.weight.grad, grad * 2.0 ** 16, rtol=1e-2, atol=0)
    before = lin.weight.detach().clone()
    amp.step([torch.optim.SGD(lin.parameters(), lr=0.1)])
    torch.testing.assert_close(lin.weight.detach(), before - 0.1 * grad, rtol=1e-2, atol=1e-3)
    state = amp.state_dict()
    assert state["scale"] == 2.0 ** 16 and state["_growth_tracker"] == 1   # one clean step


# Small inputs and losses: the fp16 gradients, scaled by 2^16, stay below fp16's 65504 (a bias's
# gradient is the scale times d loss / d output: at 1, 2^16 would already be inf).
X = torch.full((2, 3), 0.25)


def _two_optimizers(mode):
    """A used and an unused Linear, each with its own optimizer whose step() is counted."""
    used, unused = torch.nn.Linear(3, 1), torch.nn.Linear(3, 1)
    opts = [torch.optim.Adam(m.parameters(), lr=0.1) for m in (used, unused)]
    calls = []
    for name, opt in zip(("used", "unused"), opts):
        real = opt.step
        opt.step = lambda *a, _real=real, _name=name, **k: (calls.append(_name), _real(*a, **k))[1]
    amp = engine.Amp(mode, torch.device("cpu"))
    return amp, used, unused, opts, calls


@pytest.mark.parametrize("mode", ["off", "bf16", "fp16"])
def test_step_skips_an_optimizer_without_gradients_on_every_path(mode):
    """HeadFreeze+DA before its switch: the discriminators' optimizers have no gradient. The
    scaler refused them ("No inf checks were recorded for this optimizer"); now every --amp
    path leaves them out, steps the others and updates the scale once."""
    amp, used, unused, opts, calls = _two_optimizers(mode)
    before = unused.weight.detach().clone()
    with amp.autocast():
        loss = used(X).float().mean() / 4
    amp.backward(loss)
    amp.step(opts)
    assert calls == ["used"] and torch.equal(unused.weight, before)
    assert all(p.grad is None for p in unused.parameters())
    if mode == "fp16":
        assert amp.state_dict()["_growth_tracker"] == 1   # update() ran once, after the used one


@pytest.mark.parametrize("mode", ["off", "fp16"])
def test_step_without_any_gradient_steps_nothing_and_keeps_the_scale(mode):
    """No optimizer has a gradient: nothing steps, and the scale is not updated (update() has
    no inf check to judge and would raise)."""
    amp, _, _, opts, calls = _two_optimizers(mode)
    state = amp.state_dict()
    amp.step(opts)
    assert calls == [] and amp.state_dict() == state


def test_fp16_overflow_skips_that_step_and_halves_the_scale():
    """One scale for all optimizers: an inf gradient skips its optimizer's step and halves the
    scale for the next iteration."""
    amp, used, unused, opts, calls = _two_optimizers("fp16")
    with amp.autocast():
        amp.backward((used(X).float().mean() + unused(X).float().mean()) / 4)
    unused.weight.grad[0, 0] = float("inf")
    before = unused.weight.detach().clone()
    amp.step(opts)
    assert calls == ["used"] and torch.equal(unused.weight, before)
    assert amp.scaler.get_scale() == 2.0 ** 15


def test_scheduler_order_warning_of_a_skipped_first_step_is_silenced_and_nothing_else():
    """fp16 skipping iteration 0's step (overflow) leaves the optimizer un-stepped when the
    schedulers step: PyTorch warns; engine.step_schedulers steps the same schedule without
    that warning, and lets any other warning through."""
    import warnings
    net = torch.nn.Linear(3, 1)
    opt = torch.optim.Adam(net.parameters(), lr=0.1)
    scheds = [engine.poly_scheduler(opt, iters=10)]
    plain = engine.poly_scheduler(torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.5), iters=10)
    amp = engine.Amp("fp16", torch.device("cpu"))
    with amp.autocast():
        amp.backward(net(X).float().mean())
    net.weight.grad[0, 0] = float("inf")
    before = net.weight.detach().clone()
    amp.step([opt])
    assert torch.equal(net.weight, before) and amp.scaler.get_scale() == 2.0 ** 15   # skipped
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        plain.step()                                     # PyTorch's warning, as a script would get it
        engine.step_schedulers(scheds)
        warnings.warn("another warning", UserWarning)
    assert ["Detected call of `lr_scheduler.step()`" in str(w.message) for w in seen] == [True, False]
    assert scheds[0].last_epoch == 1                     # the schedule still counts iterations


def test_check_finite_names_step_terms_and_batch():
    ok = engine.check_finite({"a": torch.tensor(1.5), "b": 2.0}, 3, ["x"])
    assert ok == {"a": 1.5, "b": 2.0}
    with pytest.raises(engine.NonFiniteLoss) as err:
        engine.check_finite({"seg": torch.tensor(0.5), "dep": torch.tensor(float("nan"))}, 17,
                            ["proc-a/train/000003"])
    msg = str(err.value)
    assert "iteration 17" in msg and "dep=nan" in msg and "seg=0.5" in msg
    assert "proc-a/train/000003" in msg


# ----------------------------------------------------------------------------- checkpoints
def test_rng_state_round_trip_through_weights_only(tmp_path):
    import random

    import numpy as np
    engine.seed_everything(4)
    state = engine.rng_state()
    path = tmp_path / "rng.pth"
    engine.atomic_save({"rng": state}, path)
    want = (random.random(), np.random.rand(), torch.rand(1).item())
    engine.set_rng_state(torch.load(path, weights_only=True)["rng"])
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == want


def test_checkpoint_from_another_script_is_refused(tmp_path):
    model = torch.nn.Linear(2, 2)
    path = str(tmp_path / "checkpoint.pth")
    engine.save_checkpoint(path, script="train_dada.py", iteration=1, args=_args(),
                           models={"model": model})
    assert not [f for f in os.listdir(tmp_path) if ".tmp" in f]  # atomic: no leftovers
    with pytest.raises(engine.UserError, match="written by train_dada.py, not train_tasks.py"):
        engine.load_checkpoint(path, "train_tasks.py")
    torch.save({"weights": 1}, tmp_path / "foreign.pth")
    with pytest.raises(engine.UserError, match="not a checkpoint of this repository"):
        engine.load_checkpoint(str(tmp_path / "foreign.pth"))
    with pytest.raises(engine.UserError, match="not found"):
        engine.load_checkpoint(str(tmp_path / "missing.pth"))
    # A pickle with objects a safe load refuses: one line, without torch's weights_only advice.
    torch.save({"script": "x", "models": {}, "obj": argparse.Namespace()}, tmp_path / "obj.pth")
    with pytest.raises(engine.UserError) as err:
        engine.load_checkpoint(str(tmp_path / "obj.pth"))
    assert "not a checkpoint of this repository" in str(err.value)
    assert "weights_only" not in str(err.value) and "\n" not in str(err.value)
    ckpt = torch.load(path, weights_only=True)
    del ckpt["rng"]
    torch.save(ckpt, tmp_path / "norng.pth")
    with pytest.raises(engine.UserError, match="no 'script'/'models'/'args'/'rng' keys"):
        engine.load_checkpoint(str(tmp_path / "norng.pth"))


def test_restore_is_strict(tmp_path):
    path = str(tmp_path / "c.pth")
    engine.save_checkpoint(path, script="s", iteration=2, args=_args(),
                           models={"model": torch.nn.Linear(2, 2)})
    ckpt = engine.load_checkpoint(path, "s")
    with pytest.raises(engine.UserError, match="does not fit this model .*size mismatch.*--backbone") as err:
        engine.restore(ckpt, models={"model": torch.nn.Linear(3, 2)})
    assert "\n" not in str(err.value)
    with pytest.raises(engine.UserError, match="no model 'disc'"):
        engine.restore(ckpt, models={"disc": torch.nn.Linear(2, 2)})


# ----------------------------------------------------------------------------- DDP equivalence
class NoBNNet(torch.nn.Module):
    """A tiny regressor without batch-norm statistics, so DDP must match one process exactly."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)
        self.head = torch.nn.Linear(4, 1)

    def forward(self, x):
        return self.head(torch.relu(self.conv(x)).mean((2, 3)))[:, 0]


class BNNet(NoBNNet):
    """NoBNNet with a BatchNorm after the conv: every real model here has one."""

    def __init__(self):
        super().__init__()
        self.bn = torch.nn.BatchNorm2d(4)

    def forward(self, x):
        return self.head(torch.relu(self.bn(self.conv(x))).mean((2, 3)))[:, 0]


def _train_tiny(args, iters, batch_size, net=NoBNNet, bn_eval=False):
    """The engine's loop, as a method script writes it, on RandomDict."""
    engine.seed_everything(0)  # same init on every rank
    model = engine.prepare_model(net(), args)
    if bn_eval:
        model.eval()           # BN normalises with its running statistics, not the batch's
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    sched = engine.poly_scheduler(opt, iters)
    amp = engine.Amp("off", args.device)
    loader = engine.InfiniteLoader(RandomDict(n=16), batch_size, args)
    for _ in range(iters):
        batch = next(loader)
        loss = (model(batch["image"]) - batch["target"] / 16).pow(2).mean()
        opt.zero_grad()
        amp.backward(loss)
        amp.step([opt])
        sched.step()
    return {k: v.detach().clone() for k, v in engine.unwrap(model).state_dict().items()}


def _ddp_worker(rank, port, out):
    os.environ.update(RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    args = engine.init_distributed(argparse.Namespace(seed=0, workers=0, device="cpu"))
    assert args.distributed and torch.distributed.get_backend() == "gloo"
    weights = {"nobn": _train_tiny(args, iters=6, batch_size=2),
               "bn_eval": _train_tiny(args, iters=6, batch_size=2, net=BNNet, bn_eval=True),
               "bn_train": _train_tiny(args, iters=6, batch_size=2, net=BNNet)}
    if rank == 0:
        torch.save(weights, out)
    engine.cleanup_distributed()


def test_two_process_gloo_ddp_equals_single_process(tmp_path, free_port):
    """N processes of batch B equal one of batch N*B without BN or with BN in eval mode; with
    BN in train mode each process normalises with its own B samples, so they differ (docs/engine.md,
    "Distributed"; --sync-bn on CUDA shares the statistics)."""
    out = str(tmp_path / "ddp.pth")
    mp.spawn(_ddp_worker, args=(free_port, out), nprocs=2, join=True)
    runs = torch.load(out, weights_only=True)
    ddp = runs["nobn"]
    single = _train_tiny(_args(), iters=6, batch_size=4)  # same global batch: 2 x 2
    for k in single:
        torch.testing.assert_close(ddp[k], single[k], rtol=1e-5, atol=1e-6)
    frozen = _train_tiny(_args(), iters=6, batch_size=4, net=BNNet, bn_eval=True)
    for k in frozen:
        torch.testing.assert_close(runs["bn_eval"][k], frozen[k], rtol=1e-5, atol=1e-6)
    per_batch = _train_tiny(_args(), iters=6, batch_size=4, net=BNNet)
    diff = (runs["bn_train"]["conv.weight"] - per_batch["conv.weight"]).norm()
    assert diff / per_batch["conv.weight"].norm() > 1e-3
    # and the run really trained: the weights moved away from their initialisation
    engine.seed_everything(0)
    init = NoBNNet().state_dict()
    assert not torch.allclose(init["conv.weight"], single["conv.weight"])


def test_environment_detection_torchrun_and_slurm(monkeypatch):
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID"):
        monkeypatch.delenv(k, raising=False)
    args = engine.init_distributed(argparse.Namespace(device="cpu"))
    assert (args.rank, args.world_size, args.distributed) == (0, 1, False)
    monkeypatch.setenv("SLURM_PROCID", "3")
    monkeypatch.setenv("SLURM_NTASKS", "1")
    monkeypatch.setenv("SLURM_LOCALID", "1")
    args = engine.init_distributed(argparse.Namespace(device="cpu"))
    assert (args.rank, args.world_size, args.local_rank) == (3, 1, 1)


# ----------------------------------------------------------------------------- run folders
def _run_args(out, **kw):
    base = dict(output_dir=str(out), resume=None, overwrite=False, seed=0, iters=3, log_every=2,
                device="cpu")
    return argparse.Namespace(**{**base, **kw})


def test_a_finished_or_started_run_is_not_overwritten_silently(tmp_path):
    (tmp_path / "metrics.json").write_text("{}")
    with pytest.raises(engine.UserError, match=r"holds a finished run \(metrics.json\): continue it "
                                               r"with --resume auto, replace it with --overwrite"):
        engine.setup_run(_run_args(tmp_path), "x.py")
    (tmp_path / "metrics.json").unlink()
    (tmp_path / "checkpoint.pth").write_bytes(b"")
    with pytest.raises(engine.UserError, match="holds a started run"):
        engine.setup_run(_run_args(tmp_path), "x.py")
    args = _run_args(tmp_path)
    args.resume = "auto"
    engine.setup_run(args, "x.py")                                  # continuing is allowed


def test_overwrite_starts_a_fresh_log_and_forgets_old_metrics(tmp_path):
    (tmp_path / "metrics.json").write_text('{"mIoU": 1}')
    (tmp_path / "log.jsonl").write_text('{"iter": 9}\n')
    args = _run_args(tmp_path, overwrite=True)
    logger = engine.setup_run(args, "x.py")
    assert not (tmp_path / "metrics.json").exists() and not (tmp_path / "log.jsonl").exists()
    logger.start(0)
    logger.write({"iter": 1})
    assert len((tmp_path / "log.jsonl").read_text().splitlines()) == 1


def test_a_failed_start_leaves_no_run_folder(tmp_path):
    """args.json is written when the loop starts: a run stopped by bad data leaves nothing."""
    engine.setup_run(_run_args(tmp_path / "run"), "x.py")
    assert not (tmp_path / "run").exists()


def test_log_records_are_stamped_strict_and_start_at_the_first_step(tmp_path, capsys):
    args = _run_args(tmp_path / "run")
    logger = engine.setup_run(args, "x.py")
    logger.start(0)
    for it in (1, 2, 3):
        logger.step(it, {"loss": float("nan") if it == 3 else 1.0})
    printed = [line.split("]")[0] for line in capsys.readouterr().out.splitlines()]
    assert printed == ["[1/3", "[2/3", "[3/3"]                      # first, every 2nd, last
    records = [json.loads(line) for line in open(tmp_path / "run" / "log.jsonl")]
    assert [r["iter"] for r in records] == [1, 2, 3]
    assert all(r["run"] == args.run_id and "T" in r["time"] for r in records)
    assert records[2]["loss"] is None                              # strict JSON: null, not NaN
    saved = json.load(open(tmp_path / "run" / "args.json"))
    assert saved["run_id"] == args.run_id


def test_write_json_is_strict(tmp_path):
    engine.write_json({"a": float("nan"), "b": [1.0, float("inf")], "c": {"d": 2.5}}, tmp_path / "m.json")
    text = (tmp_path / "m.json").read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text) == {"a": None, "b": [1.0, None], "c": {"d": 2.5}}


# ----------------------------------------------------------------------------- writes and errors
def test_stale_temp_files_of_killed_writers_are_removed(tmp_path):
    """A writer killed mid-write leaves TARGET.tmp<PID>; the next write of TARGET removes it
    (its process is gone) and keeps a live writer's temp file and other files alone."""
    dead = mp.get_context("spawn").Process(target=int)
    dead.start()
    dead.join()
    stale = tmp_path / f"checkpoint.pth.tmp{dead.pid}"
    stale.write_bytes(b"x" * 10)
    live = tmp_path / f"checkpoint.pth.tmp{os.getppid()}"
    live.write_bytes(b"y")
    other = tmp_path / f"model.pth.tmp{dead.pid}"
    other.write_bytes(b"z")
    engine.atomic_save({"a": 1}, tmp_path / "checkpoint.pth")
    assert not stale.exists() and live.exists() and other.exists()
    assert torch.load(tmp_path / "checkpoint.pth", weights_only=True) == {"a": 1}


def test_atomic_write_syncs_the_file_before_the_rename(tmp_path, monkeypatch):
    calls = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(engine.os, "fsync", lambda fd: (calls.append("fsync"), real_fsync(fd))[1])
    monkeypatch.setattr(engine.os, "replace", lambda a, b: (calls.append("replace"), real_replace(a, b))[1])
    engine.write_json({"a": 1}, tmp_path / "m.json")
    assert calls[:2] == ["fsync", "replace"]


def test_sync_bn_on_the_cpu_is_one_line():
    args = _args(sync_bn=True, device="cpu")
    with pytest.raises(engine.UserError, match="--sync-bn needs CUDA"):
        engine.init_distributed(args)


class _BadSample(torch.utils.data.Dataset):
    def __len__(self):
        return 4

    def __getitem__(self, i):
        from lib.data.base import DataError
        raise DataError(f"/data/x/{i}.png: corrupt PNG")


def test_an_error_in_a_dataloader_worker_is_one_line(capsys):
    """DataLoader wraps a worker's exception with its traceback; cli prints the original."""
    loader = engine.InfiniteLoader(_BadSample(), 2, _args(workers=1))

    def main(_):
        next(loader)
    with pytest.raises(SystemExit) as stop:
        engine.cli(main, None)
    err = capsys.readouterr().err
    assert stop.value.code == 2 and err.startswith("error: /data/x/") and err.endswith("corrupt PNG\n")
    assert err.count("\n") == 1


def test_a_resumed_log_holds_each_iteration_once(tmp_path):
    args = argparse.Namespace(output_dir=str(tmp_path), resume=None, overwrite=False, seed=0,
                              iters=6, log_every=1, device="cpu")
    logger = engine.setup_run(args, "x.py")
    logger.start(0)
    for it in range(1, 6):             # killed after logging 5, its last checkpoint at 3
        logger.step(it, {"loss": 1.0})
    args.resume = "auto"
    logger = engine.setup_run(args, "x.py")
    logger.start(3)
    for it in range(4, 7):
        logger.step(it, {"loss": 2.0})
    records = [json.loads(line) for line in open(tmp_path / "log.jsonl")]
    assert [r["iter"] for r in records] == [1, 2, 3, 4, 5, 6]
    assert [r["loss"] for r in records] == [1.0, 1.0, 1.0, 2.0, 2.0, 2.0]
