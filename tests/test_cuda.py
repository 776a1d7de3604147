"""What only a GPU can show: bf16 and fp16 training (one GradScaler, two optimizers), a
one-process NCCL group with DDP and SyncBN, and both AT/DT stages end to end on CUDA.
Marked `cuda` and skipped without CUDA; tools/gpu_check.sh runs them with `pytest -m cuda`."""
import argparse
import math

import pytest
import torch
import torch.distributed as dist
import torch.nn as nn

import train_tasks
import train_transfer
from lib import engine, losses
from lib.models import EncDecNet

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]

CUDA = torch.device("cuda", 0)


def _params(model):
    return [p.detach().clone() for p in model.parameters()]


def _changed(model, before):
    """True when an optimizer step moved the weights of `model` away from `before`."""
    return any(not torch.equal(p, b) for p, b in zip(model.parameters(), before))


def _unchanged(model, before):
    return all(torch.equal(p, b) for p, b in zip(model.parameters(), before))


def test_bf16_encdec_trains_on_cuda():
    torch.manual_seed(0)
    net = EncDecNet("resnet18", tasks={"semantic": 11}, decoder_width=16).to(CUDA).train()
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    amp = engine.Amp("bf16", CUDA)
    assert not amp.scaler.is_enabled()                  # bf16 needs no loss scaling
    x = torch.randn(2, 3, 64, 64, device=CUDA)
    y = torch.randint(0, 11, (2, 64, 64), device=CUDA)
    before, values = _params(net.decoders), []
    for it in range(3):
        opt.zero_grad(set_to_none=True)
        with amp.autocast():
            assert net.forward_features(x).dtype == torch.bfloat16
            loss = losses.cross_entropy(net(x)["semantic"].float(), y)
        values.append(engine.check_finite({"loss": loss}, it)["loss"])
        amp.backward(loss)
        amp.step([opt])
    assert all(math.isfinite(v) for v in values)
    assert min(values[1:]) < values[0]                  # one batch, three Adam steps: it fits
    assert _changed(net.decoders, before)
    assert all(p.dtype == torch.float32 for p in net.parameters())   # master weights stay fp32


def _small():
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 4, 1)).to(CUDA)


def test_fp16_one_scaler_steps_two_optimizers():
    torch.manual_seed(0)
    m1, m2 = _small(), _small()
    o1, o2 = (torch.optim.SGD(m.parameters(), lr=0.1) for m in (m1, m2))
    amp = engine.Amp("fp16", CUDA)
    assert amp.scaler.is_enabled()
    x = torch.randn(4, 3, 8, 8, device=CUDA)

    def step(factor=1.0):
        for opt in (o1, o2):
            opt.zero_grad(set_to_none=True)
        with amp.autocast():
            out1, out2 = m1(x), m2(x)
            assert out1.dtype == out2.dtype == torch.float16
            # small terms: scaled by 2**16 the gradients stay inside fp16's range
            loss = 1e-3 * factor * (out1.float().square().mean() + out2.float().square().mean())
        amp.backward(loss)
        amp.step([o1, o2])

    scale0 = amp.scaler.get_scale()
    b1, b2 = _params(m1), _params(m2)
    step()
    assert _changed(m1, b1) and _changed(m2, b2)       # both optimizers stepped
    assert amp.scaler.get_scale() == scale0
    assert amp.state_dict()["_growth_tracker"] == 1
    b1, b2 = _params(m1), _params(m2)
    step(float("inf"))                                  # an overflow: both skip, one backoff
    assert _unchanged(m1, b1) and _unchanged(m2, b2)
    state = amp.state_dict()
    assert state["scale"] == scale0 / 2 and state["_growth_tracker"] == 0
    for p in [*m1.parameters(), *m2.parameters()]:
        assert p.dtype == torch.float32 and torch.isfinite(p).all()


TINY = ["--size", "32", "64", "--batch-size", "2", "--proc-length", "8", "--workers", "0",
        "--eval-batches", "1", "--log-every", "1", "--device", "cuda", "--save-every", "0"]


def test_atdt_both_stages_on_cuda(tmp_path):
    s1 = train_tasks.main(train_tasks.get_args_parser().parse_args(
        TINY + ["--iters", "2", "--decoder-width", "16", "--output-dir", str(tmp_path / "s1"),
                "--amp", "fp16", "--channels-last"]))
    ckpt = torch.load(tmp_path / "s1" / "checkpoint.pth", map_location="cpu", weights_only=True)
    assert ckpt["iteration"] == 2 and ckpt["args"]["device"].startswith("cuda")
    assert ckpt["scaler"]["scale"] > 0                  # fp16: the shared GradScaler is saved
    assert math.isfinite(s1["n2"]["source"]["mIoU"]) and math.isfinite(s1["n1"]["target"]["abs_rel"])
    s2 = train_transfer.main(train_transfer.get_args_parser().parse_args(
        ["--stage1", str(tmp_path / "s1"), "--iters", "2", "--output-dir", str(tmp_path / "s2"),
         "--workers", "0", "--eval-batches", "1", "--log-every", "1", "--device", "cuda",
         "--eval-every", "2", "--save-every", "0", "--amp", "bf16"]))
    assert {"mIoU", "acc"} <= set(s2["target"]["atdt"])
    assert math.isfinite(s2["target"]["atdt"]["mIoU"])


# Last in this file: should NCCL hang, gpu_check.sh's timeout costs only the tests after it.
def test_nccl_one_process_group_with_ddp_and_sync_bn(free_port, monkeypatch):
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", str(free_port))
    torch.cuda.set_device(CUDA)
    dist.init_process_group("nccl", rank=0, world_size=1)
    try:
        assert dist.get_backend() == "nccl"
        t = torch.arange(4.0, device=CUDA)
        dist.all_reduce(t)
        assert t.tolist() == [0.0, 1.0, 2.0, 3.0]
        assert engine.all_reduce_mean({"a": 1.5, "b": -2.0}) == {"a": 1.5, "b": -2.0}
        args = argparse.Namespace(device=CUDA, distributed=True, channels_last=True, sync_bn=True,
                                  compile=False)
        net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 2, 1))
        model = engine.prepare_model(net, args)
        assert isinstance(model, nn.parallel.DistributedDataParallel)
        assert any(isinstance(m, nn.SyncBatchNorm) for m in model.modules())
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        before = _params(engine.unwrap(model))
        x = torch.randn(2, 3, 16, 16, device=CUDA).contiguous(memory_format=torch.channels_last)
        model(x).square().mean().backward()
        opt.step()
        assert _changed(engine.unwrap(model), before)
        engine.cleanup_distributed()
        assert not dist.is_initialized()
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
