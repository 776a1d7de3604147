"""Speed and memory of the pieces every script uses: the procedural generator, the
DataLoader, and one training step (data / forward / backward / optimizer) of an
encoder-decoder at a given backbone and resolution; and the training steps of the method
scripts themselves (their own train_step functions). Prints a table, writes JSON.

Usage:
    python tools/bench.py                                  # CPU, 128x256, resnet18
    python tools/bench.py --device cuda --backbone resnet50 --size 512 512 --batch-size 8 --amp bf16
    python tools/bench.py --only generator --threads 1     # generator samples/s per core
    python tools/bench.py --only atdt1 --size 512 512 --batch-size 8   # AT/DT stage 1 (per domain)
    python tools/bench.py --only atdt2 --size 512 512 --batch-size 1   # AT/DT stage 2
"""
import argparse
import os
import resource
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # lib/ and the scripts
from lib import engine, losses  # noqa: E402
from lib.data import build_dataset  # noqa: E402
from lib.models import build_model, model_spec  # noqa: E402


def get_args_parser(add_help=True):
    parser = argparse.ArgumentParser(description=__doc__, add_help=add_help,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="proc-a")
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--size", type=int, nargs=2, default=[128, 256], metavar=("H", "W"))
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--output-stride", type=int, default=16)
    parser.add_argument("--tasks", nargs="+", default=["semantic", "depth"])
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--steps", type=int, default=10, help="timed training steps")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    parser.add_argument("--samples", type=int, default=100, help="samples for the generator test")
    parser.add_argument("--device", default=None)
    parser.add_argument("--amp", default="off", choices=["off", "bf16", "fp16"])
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--only", nargs="+", default=["generator", "loader", "step"],
                        choices=["generator", "loader", "step", "atdt1", "atdt2"])
    parser.add_argument("--json", default=None, help="write results here (default: print only)")
    return parser


def bench_generator(dataset, n):
    """Samples per second of dataset[i] in this process (the generator's own speed)."""
    dataset[0]  # first-call costs (imports, caches) are not the steady state
    t = time.perf_counter()
    for i in range(n):
        dataset[i % len(dataset)]
    dt = time.perf_counter() - t
    return {"samples_per_s": n / dt, "ms_per_sample": 1000 * dt / n}


def _loader(dataset, args):
    """The engine's training stream, as a single process would build it."""
    ns = argparse.Namespace(seed=0, rank=0, world_size=1, workers=args.workers, device=args.device)
    return engine.InfiniteLoader(dataset, args.batch_size, ns)


def bench_loader(dataset, args, batches=20):
    """Samples per second through the engine's InfiniteLoader with --workers processes."""
    loader = _loader(dataset, args)
    next(loader)  # worker start-up is not throughput
    t = time.perf_counter()
    for _ in range(batches):
        next(loader)
    dt = time.perf_counter() - t
    return {"samples_per_s": batches * args.batch_size / dt, "workers": args.workers}


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench_step(dataset, args):
    """Mean time per phase of a training step and the peak memory."""
    spec = model_spec("encdec", backbone=args.backbone, output_stride=args.output_stride,
                      tasks={t: {"semantic": 11, "depth": 1, "normals": 3}[t] for t in args.tasks})
    model = build_model(spec).to(args.device).train()
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    amp = engine.Amp(args.amp, args.device)
    loader = _loader(dataset, args)
    times = {"data": 0.0, "forward": 0.0, "backward": 0.0, "optimizer": 0.0}
    if args.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(args.device)
    for step in range(args.warmup + args.steps):
        t0 = time.perf_counter()
        batch = engine.to_device(next(loader), args.device, args.channels_last)
        _sync(args.device)
        t1 = time.perf_counter()
        with amp.autocast():
            preds = model(batch["image"])
        loss = sum(losses.supervised_loss(t, preds[t].float(), batch[t]) for t in args.tasks)
        _sync(args.device)
        t2 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        amp.backward(loss)
        _sync(args.device)
        t3 = time.perf_counter()
        amp.step([opt])
        _sync(args.device)
        t4 = time.perf_counter()
        if step >= args.warmup:
            for k, a, b in (("data", t0, t1), ("forward", t1, t2), ("backward", t2, t3), ("optimizer", t3, t4)):
                times[k] += (b - a) / args.steps
    out = {f"{k}_ms": 1000 * v for k, v in times.items()}
    out["step_ms"] = sum(out.values())
    out["images_per_s"] = args.batch_size / (out["step_ms"] / 1000)
    out["peak_mem_mb"] = _peak_memory_mb(args.device)
    return out


def _timed(step_fn, args):
    """Mean wall time of step_fn() after --warmup untimed calls, and the peak memory."""
    if args.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(args.device)
    total = 0.0
    for i in range(args.warmup + args.steps):
        _sync(args.device)
        t = time.perf_counter()
        step_fn(i)
        _sync(args.device)
        if i >= args.warmup:
            total += time.perf_counter() - t
    step_ms = 1000 * total / args.steps
    return {"step_ms": step_ms, "images_per_s": args.batch_size / (step_ms / 1000),
            "peak_mem_mb": _peak_memory_mb(args.device)}


def _method_args(parser, args, extra=()):
    """The method script's own defaults, with the bench's model, size, batch and engine flags."""
    ns = parser.parse_args(["--backbone", args.backbone, "--size", *map(str, args.size),
                            "--batch-size", str(args.batch_size), "--amp", args.amp, *extra])
    ns.device, ns.rank, ns.world_size, ns.distributed = args.device, 0, 1, False
    ns.channels_last, ns.workers = args.channels_last, args.workers
    return ns


def _batches(dataset, args):
    """A fixed set of batches on the device, so the timing is the step's, not the loader's."""
    loader = _loader(dataset, args)
    return [engine.to_device(next(loader), args.device, args.channels_last) for _ in range(2)]


def bench_atdt1(dataset_a, dataset_b, args):
    """train_tasks.train_step (Dep->Sem, aux edges, NDA): E1 on A+B, E2 on A, D_aux, one update."""
    import train_tasks
    ns = _method_args(train_tasks.get_args_parser(), args)
    specs, net, critic, optims = train_tasks.build(ns, 11)
    net = net.to(args.device).train()
    if args.channels_last:
        net = net.to(memory_format=torch.channels_last)
    amp = engine.Amp(args.amp, args.device)
    a, b = _batches(dataset_a, args), _batches(dataset_b, args)
    return _timed(lambda i: train_tasks.train_step(net, critic, a[i % 2], b[i % 2], optims, amp, ns, i), args)


def bench_atdt2(dataset_a, args):
    """train_transfer.train_step: frozen E1 and E2 forward, G forward/backward, one update."""
    import train_transfer
    from lib.models import AtdtNet, EncDecNet
    ns = _method_args(train_transfer.get_args_parser(), args)
    n2 = EncDecNet(args.backbone, tasks={"semantic": 11}).to(args.device).requires_grad_(False).eval()
    ch = n2.backbone.channels["layer4"]
    atdt = AtdtNet({"backbone": args.backbone, "tasks": {"depth": 1}},
                   {"backbone": args.backbone, "tasks": {"semantic": 11}},
                   {"in_channels": ch, "out_channels": ch}).to(args.device)
    train_transfer.set_train_mode(atdt)
    opt = torch.optim.Adam(atdt.transfer.parameters(), lr=ns.lr)
    amp = engine.Amp(args.amp, args.device)
    batches = _batches(dataset_a, args)
    return _timed(lambda i: train_transfer.train_step(atdt, atdt.transfer, n2, batches[i % 2], opt, amp, i),
                  args)


def _peak_memory_mb(device):
    """CUDA: peak allocated by torch; CPU: the process's peak resident set (includes Python)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main(args):
    if args.threads:
        torch.set_num_threads(args.threads)
    args.device = engine.pick_device(args.device, 0)
    labels = sorted(set(args.tasks) | {"semantic", "depth", "edges"})
    dataset = build_dataset(args.dataset, "train", args.size, args.data_root, labels=labels)
    result = {"device": str(args.device), "torch": torch.__version__, "threads": torch.get_num_threads(),
              "size": args.size, "backbone": args.backbone, "batch_size": args.batch_size, "amp": args.amp}
    if args.device.type == "cuda":
        result["gpu"] = torch.cuda.get_device_name(args.device)
    if "generator" in args.only:
        result["generator"] = bench_generator(dataset, args.samples)
    if "loader" in args.only:
        result["loader"] = bench_loader(dataset, args)
    if "step" in args.only:
        result["step"] = bench_step(dataset, args)
    if "atdt1" in args.only:
        other = "proc-b" if args.dataset == "proc-a" else args.dataset
        dataset_b = build_dataset(other, "train", args.size, args.data_root, labels=["depth", "edges"])
        result["atdt1"] = bench_atdt1(dataset, dataset_b, args)
    if "atdt2" in args.only:
        result["atdt2"] = bench_atdt2(dataset, args)
    print_table(result)
    if args.json:
        engine.write_json(result, args.json)
    return result


def print_table(result):
    """One line per measured quantity."""
    print(" | ".join(f"{k}={result[k]}" for k in ("device", "threads", "size", "backbone", "batch_size", "amp")))
    for part in ("generator", "loader", "step", "atdt1", "atdt2"):
        for k, v in result.get(part, {}).items():
            print(f"  {part:<9} {k:<15} {v:10.2f}")


if __name__ == "__main__":
    main(get_args_parser().parse_args())
