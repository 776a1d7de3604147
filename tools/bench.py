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
    python tools/bench.py --only finite --finite-stage atdt2           # cost of check_finite's sync
    python tools/bench.py --only ckpt2 --backbone resnet50             # stage-2 checkpoint size, time
    python tools/bench.py --only dada --backbone resnet101 --size 760 1280 --tgt-size 512 1024 \\
        --batch-size 1 --steps 1 --warmup 0                            # DADA at the paper's sizes
    python tools/bench.py --only semimtl --backbone resnet101 --output-stride 8 --size 256 256 \\
        --batch-size 2 --steps 1 --warmup 0                            # SemiMTL M2 (one iteration)
    python tools/bench.py --only umadapt_base umadapt_adapt --backbone resnet50 --size 228 304 \\
        --batch-size 2 --steps 1                                       # UM-Adapt base / Adv steps
    python tools/bench.py --only headfreeze --backbone resnet50 --size 240 320 --batch-size 2
    python tools/bench.py --only augment --size 512 1024 --crop 256 256 --threads 1   # SemiMTL's EncNet aug.
    python tools/bench.py --device cuda --only atdt1 --backbone resnet50 --size 512 512 \\
        --batch-size 8 --decoder-width 128 --amp bf16 --channels-last --compile  # paper sizes

The method steps (atdt1, atdt2) report step_ms = forward + backward + optimizer, split where
the step calls amp.backward and amp.step; data_ms (drawing and moving the batch) is
measured in the same loop but not counted in step_ms. images_per_s counts one domain's batch.
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

PARTS = ("generator", "loader", "step", "atdt1", "atdt2", "dada", "semimtl", "umadapt_base",
         "umadapt_adapt", "headfreeze", "finite", "ckpt2", "augment")
PHASES = ("data", "forward", "backward", "optimizer")


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
    parser.add_argument("--compile", action="store_true",
                        help="torch.compile the models of the measured steps (step, atdt1, atdt2, finite)")
    parser.add_argument("--tgt-size", type=int, nargs=2, default=None, metavar=("H", "W"),
                        help="dada: target image size (default: --size; the paper's is 512 1024)")
    parser.add_argument("--decoder-width", type=int, default=None,
                        help="atdt1 decoder width (default: train_tasks.py's; the paper's is 128)")
    parser.add_argument("--finite-stage", default="atdt2", choices=["atdt1", "atdt2"],
                        help="the method step whose time is measured with and without check_finite")
    parser.add_argument("--finite-steps", type=int, default=None,
                        help="steps per timing of the finite part (default: --steps)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--crop", type=int, nargs=2, default=[256, 256], metavar=("H", "W"),
                        help="augment: the training crop after scaling and rotation (SemiMTL: 256 256 "
                             "across cities, 384 384 on ISPRS); --size is the resized image")
    parser.add_argument("--scale-range", type=float, nargs=2, default=[0.5, 2.0], metavar=("LOW", "HIGH"),
                        help="augment: train_semimtl.py's --scale-range (paper preset 0.5 2)")
    parser.add_argument("--rotate", type=float, default=10.0, metavar="DEG",
                        help="augment: train_semimtl.py's --rotate (paper preset 10)")
    parser.add_argument("--only", nargs="+", default=["generator", "loader", "step"], choices=PARTS)
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


def _prepare(model, args):
    """On the device, in --channels-last, under --compile: as engine.prepare_model does it."""
    model = model.to(args.device)
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return torch.compile(model) if args.compile else model


def bench_step(dataset, args):
    """Mean time per phase of a training step and the peak memory."""
    spec = model_spec("encdec", backbone=args.backbone, output_stride=args.output_stride,
                      tasks={t: {"semantic": 11, "depth": 1, "normals": 3}[t] for t in args.tasks})
    model = _prepare(build_model(spec).train(), args)
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


class PhaseAmp(engine.Amp):
    """engine.Amp that notes when a step first calls backward and the optimizer step, so a
    method's own train_step splits into forward / backward / optimizer without a copy of it."""

    def __init__(self, mode, device):
        super().__init__(mode, device)
        self.device, self.marks = device, {}

    def _mark(self, name):
        _sync(self.device)
        self.marks.setdefault(name, time.perf_counter())

    def backward(self, loss, retain_graph=False):
        self._mark("backward")
        super().backward(loss, retain_graph)

    def step(self, optimizers):
        self._mark("optimizer")
        super().step(optimizers)


def _timed(step_fn, fetch, amp, args):
    """Mean time per phase of step_fn(i, fetch()) after --warmup untimed calls, and the peak
    memory; step_ms is the step alone (forward + backward + optimizer), not the data."""
    if args.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(args.device)
    sums = dict.fromkeys(PHASES, 0.0)
    for i in range(args.warmup + args.steps):
        _sync(args.device)
        t0 = time.perf_counter()
        batch = fetch()
        _sync(args.device)
        t1 = time.perf_counter()
        amp.marks = {}
        step_fn(i, batch)
        _sync(args.device)
        t2 = time.perf_counter()
        tb, to = amp.marks.get("backward", t2), amp.marks.get("optimizer", t2)
        if i >= args.warmup:
            for k, dt in zip(PHASES, (t1 - t0, tb - t1, to - tb, t2 - to)):
                sums[k] += dt / args.steps
    out = {f"{k}_ms": 1000 * v for k, v in sums.items()}
    out["step_ms"] = out["forward_ms"] + out["backward_ms"] + out["optimizer_ms"]
    out["images_per_s"] = args.batch_size / (out["step_ms"] / 1000)
    out["peak_mem_mb"] = _peak_memory_mb(args.device)
    return out


def _method_args(parser, args, extra=()):
    """The method script's own defaults, with the bench's model, size, batch and engine flags."""
    ns = parser.parse_args(["--backbone", args.backbone, "--size", *map(str, args.size),
                            "--batch-size", str(args.batch_size), "--amp", args.amp, *extra])
    ns.device, ns.rank, ns.world_size, ns.distributed = args.device, 0, 1, False
    ns.channels_last, ns.workers = args.channels_last, args.workers
    return ns


def _fetcher(dataset, args):
    """A function returning the next batch of the engine's stream, on the device."""
    loader = _loader(dataset, args)
    return lambda: engine.to_device(next(loader), args.device, args.channels_last)


def atdt1_stage(datasets, args, amp):
    """train_tasks.train_step (Dep->Sem, aux edges, NDA) as (step(i, batch), fetch)."""
    import train_tasks
    extra = ["--output-stride", str(args.output_stride)]
    extra += ["--decoder-width", str(args.decoder_width)] if args.decoder_width else []
    ns = _method_args(train_tasks.get_args_parser(), args, extra)
    _, net, critic, optims = train_tasks.build(ns, 11)
    net = _prepare(net.train(), args)
    fetch_a, fetch_b = _fetcher(datasets["a"], args), _fetcher(datasets["b"], args)

    def step(i, ab):
        return train_tasks.train_step(net, critic, ab[0], ab[1], optims, amp, ns, i)
    return step, lambda: (fetch_a(), fetch_b())


def atdt2_stage(datasets, args, amp):
    """train_transfer.train_step (frozen E1, E2; G forward, backward, update) as (step, fetch)."""
    import train_transfer
    from lib.models import AtdtNet, EncDecNet
    ns = _method_args(train_transfer.get_args_parser(), args)
    n2 = EncDecNet(args.backbone, args.output_stride, tasks={"semantic": 11})
    ch = n2.backbone.channels["layer4"]
    kw = {"backbone": args.backbone, "output_stride": args.output_stride}
    atdt = AtdtNet({**kw, "tasks": {"depth": 1}}, {**kw, "tasks": {"semantic": 11}},
                   {"in_channels": ch, "out_channels": ch, "width": ns.transfer_width,
                    "layers": ns.transfer_layers, "final_relu": ns.transfer_final_relu})
    n2.to(args.device).requires_grad_(False).eval()
    atdt.to(args.device).encoder.requires_grad_(False)
    train_transfer.set_train_mode(atdt)
    opt = torch.optim.Adam(atdt.transfer.parameters(), lr=ns.lr)
    atdt.encoder, n2.backbone = _prepare(atdt.encoder, args), _prepare(n2.backbone, args)
    g = _prepare(atdt.transfer, args)

    def step(i, batch):
        return train_transfer.train_step(atdt, g, n2, batch, opt, amp, i)
    return step, _fetcher(datasets["a"], args)


def dada_stage(datasets, args, amp):
    """train_dada.train_step (S7: CE + berHu on the source, fooling and D on I x Z) as
    (step, fetch); the target at --tgt-size (the paper: 1280x760 source, 1024x512 target).
    The step has several backward calls: forward_ms ends at the first (the source's), so
    backward_ms also holds the target's forward; step_ms is exact."""
    import train_dada
    ns = _method_args(train_dada.get_args_parser(), args, ["--setup", "s7"])
    train_dada.resolve_setup(ns)
    _, net, discs, optims = train_dada.build(ns, 16)
    model = _prepare(train_dada.RawOutputs(net).train(), args)
    discs = {k: d.to(args.device) for k, d in discs.items()}
    fetch_a, fetch_b = _fetcher(datasets["a"], args), _fetcher(datasets["dada_b"], args)

    def step(i, ab):
        return train_dada.train_step(model, discs, ab[0], ab[1], optims, amp, ns, i)
    return step, lambda: (fetch_a(), fetch_b())


def umadapt_stage(datasets, args, amp, adapt=False):
    """train_umadapt.base_step (Algorithm 1: one full pass and Adam step per task, three tasks,
    N(->semantic), N(->depth) frozen) or, with adapt, UM-Adapt-(Adv.)'s iteration (res5 steps
    per energy with CCR, then each N's step), at --size with --decoder-width (default 1024).
    forward_ms ends at the first backward (the first task's pass); step_ms is exact."""
    import train_umadapt as um
    from lib.models.umadapt import ContourDecoder, UMAdaptNet, target_encoder
    ns = _method_args(um.get_args_parser(), args, ["--decoder-width", str(args.decoder_width or 1024),
                                                   "--variant", "adv"])
    um.check_args(ns)
    ns.num_classes, ns.cw, ns.target_through_bn = 11, None, False
    net = UMAdaptNet(args.backbone, tasks=ns.tasks, num_classes=11, decoder_width=ns.decoder_width)
    nets = {t: n.to(args.device) for t, n in um.transfer_nets(ns).items()}
    labels = ["semantic", "depth", "normals", "edges"]
    other = "proc-b" if args.dataset == "proc-a" else args.dataset
    fetch_a = _fetcher(build_dataset(args.dataset, "train", args.size, args.data_root, labels=labels), args)
    fetch_b = _fetcher(build_dataset(other, "train", args.size, args.data_root, labels=["edges"]), args)
    if not adapt:
        for n in nets.values():
            um.freeze(n)
        model = _prepare(um.RawOutputs(net).train(), args)
        optims = {t: um.adam(net.parameters(), ns.lr) for t in ns.tasks}

        def step(i, ab):
            return um.base_step(model, nets, optims, ab[0], ab[1], amp, ns)
        return step, lambda: (fetch_a(), fetch_b())
    net.encoder = target_encoder(net.encoder)
    um.freeze(net.decoders)
    net.to(args.device).train()
    aux = {"contour": um.freeze(ContourDecoder(net.encoder.channels["layer4"])).to(args.device)}
    optims = {f"res5_{t}": um.adam(net.encoder.layer4.parameters(), ns.adapt_lr) for t in nets}
    optims.update({f"n_{t}": um.adam(n.parameters(), ns.d_lr) for t, n in nets.items()})

    def step(i, ab):
        um.energy_g_step(net, nets, aux, optims, ab[1], amp, ns, nets)
        return um.energy_d_step(net, nets, optims, ab[0], ab[1], amp, ns, nets)
    return step, lambda: (fetch_a(), fetch_b())


def headfreeze_stage(datasets, args, amp):
    """train_headfreeze.train_step after the switch with Tsai's DA (headfreeze+da: normals and
    semantics on the source, semantics and D on the target, head frozen) as (step, fetch).
    forward_ms ends at the network's backward; backward_ms holds D's forward too."""
    import train_headfreeze as hf
    ns = _method_args(hf.get_args_parser(), args, ["--variant", "headfreeze+da", "--freeze-at", "1"])
    hf.resolve_variant(ns)
    # Every timed step after the switch (the CLI refuses --freeze-at 0: a run would freeze an
    # untrained head; the cost of a step does not depend on the head's weights).
    ns.freeze_at = 0
    _, net, discs, optims = hf.build(ns, 11)
    net.freeze_head()
    model = _prepare(hf.RawOutputs(net).train(), args)
    discs = {k: d.to(args.device) for k, d in discs.items()}
    other = "proc-b" if args.dataset == "proc-a" else args.dataset
    fetch_a = _fetcher(build_dataset(args.dataset, "train", args.size, args.data_root,
                                     labels=["normals", "semantic"]), args)
    fetch_b = _fetcher(build_dataset(other, "train", args.size, args.data_root, labels=["semantic"]), args)

    def step(i, ab):
        return hf.train_step(model, discs, ab[0], ab[1], optims, amp, ns, i)
    return step, lambda: (fetch_a(), fetch_b())


def semimtl_stage(datasets, args, amp):
    """train_semimtl.train_step (SemiMTL M2, Algorithm 1: proc-a semantics, then proc-b depth,
    a network step after each, then both discriminators) at --size with --output-stride and
    --decoder-width (default 512), discriminators 64 wide. images_per_s counts one dataset's
    batch; forward_ms ends at the first backward (dataset A's) and optimizer_ms starts at
    dataset A's network step, so it also holds dataset B's pass and the discriminators';
    step_ms is exact."""
    import train_semimtl as sm
    ns = _method_args(sm.get_args_parser(), args, ["--output-stride", str(args.output_stride), "--d-width", "64",
                                                   "--decoder-width", str(args.decoder_width or 512)])
    ns.g_update, plan = "per-dataset", sm.dataset_plan(ns)
    tasks = sm.model_tasks(ns, plan)
    _, net, discs, optims = sm.build(ns, plan, tasks, 11)
    model = _prepare(sm.RawOutputs(net).train(), args)
    discs = {t: d.to(args.device) for t, d in discs.items()}
    other = "proc-b" if args.dataset == "proc-a" else args.dataset
    fetch_a = _fetcher(build_dataset(args.dataset, "train", args.size, args.data_root, labels=["semantic"]), args)
    fetch_b = _fetcher(build_dataset(other, "train", args.size, args.data_root, labels=["depth"]), args)

    def step(i, ab):
        return sm.train_step(model, discs, list(ab), optims, amp, ns, plan, tasks, 11, i)
    return step, lambda: (fetch_a(), fetch_b())


STAGES = {"atdt1": atdt1_stage, "atdt2": atdt2_stage, "dada": dada_stage, "semimtl": semimtl_stage,
          "umadapt_base": umadapt_stage,
          "umadapt_adapt": lambda datasets, args, amp: umadapt_stage(datasets, args, amp, adapt=True),
          "headfreeze": headfreeze_stage}


def bench_stage(name, datasets, args):
    """A method's training step, split into phases, with images/s and peak memory."""
    amp = PhaseAmp(args.amp, args.device)
    step, fetch = STAGES[name](datasets, args, amp)
    return _timed(step, fetch, amp, args)


def _no_sync_check(losses, iteration, names=()):
    """check_finite without its device-to-host copy: the tensors, unchecked."""
    return dict(losses)


def _back_to_back_ms(step, batches, steps, args):
    """Mean ms per step with one sync after `steps` steps, as a training loop runs them."""
    for i in range(args.warmup):
        step(i, batches[i % 2])
    _sync(args.device)
    t = time.perf_counter()
    for i in range(steps):
        step(args.warmup + i, batches[i % 2])
    _sync(args.device)
    return 1000 * (time.perf_counter() - t) / steps


def bench_finite(datasets, args, rounds=2):
    """The step with and without engine.check_finite's per-step .tolist() (a host sync),
    alternated `rounds` times on fixed batches; the faster of each is kept."""
    step, fetch = STAGES[args.finite_stage](datasets, args, engine.Amp(args.amp, args.device))
    batches = [fetch(), fetch()]
    steps = args.finite_steps or args.steps
    real, times = engine.check_finite, {"with": [], "without": []}
    try:
        for _ in range(rounds):
            for variant in times:
                engine.check_finite = real if variant == "with" else _no_sync_check
                times[variant].append(_back_to_back_ms(step, batches, steps, args))
    finally:
        engine.check_finite = real
    w, wo = min(times["with"]), min(times["without"])
    return {"stage": args.finite_stage, "with_check_ms": w, "without_check_ms": wo,
            "overhead_pct": 100 * (w - wo) / wo, "steps": steps, "rounds": rounds}


def _peak_memory_mb(device):
    """CUDA: peak allocated by torch; CPU: the process's peak resident set (includes Python)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _datasets(args):
    """Domain A (--dataset) and, for AT/DT stage 1, domain B (its procedural partner)."""
    labels = sorted(set(args.tasks) | {"semantic", "depth", "edges"})
    out = {"a": build_dataset(args.dataset, "train", args.size, args.data_root, labels=labels)}
    if "atdt1" in args.only or ("finite" in args.only and args.finite_stage == "atdt1"):
        other = "proc-b" if args.dataset == "proc-a" else args.dataset
        out["b"] = build_dataset(other, "train", args.size, args.data_root, labels=["depth", "edges"])
    if "dada" in args.only:
        other = "proc-b" if args.dataset == "proc-a" else args.dataset
        out["dada_b"] = build_dataset(other, "train", args.tgt_size or args.size, args.data_root, labels=[])
    return out


class _OneSample(torch.utils.data.Dataset):
    """One decoded sample, returned afresh at every index: the augmentation is timed alone,
    without the cost of reading or rendering the image."""

    def __init__(self, sample):
        self.sample = sample

    def __len__(self):
        return 1

    def __getitem__(self, index):
        return {k: v.clone() if torch.is_tensor(v) else v for k, v in self.sample.items()}


def bench_augment(dataset, args):
    """ms per sample of train_semimtl.py's EncNet augmentation (ScaleAugmented: random scale in
    --scale-range, rotation in +-(--rotate), crop --crop, flip; depth divided by the scale) on
    one --size sample of --dataset (semantic, depth, edges), against the crop and flip alone
    (what the run does without --scale-range / --rotate), each over --samples draws under fixed
    seeds, in this process (a DataLoader worker's share)."""
    import train_semimtl as sm
    from lib.data import transforms as T
    base = {k: v for k, v in dataset[0].items() if k in ("image", "semantic", "depth", "edges")}
    one = _OneSample(base)
    aug = sm.ScaleAugmented(one, args.crop, args.scale_range, args.rotate, flip=True, photometric=False,
                            divide_depth=True)

    def crop_only(_):
        sample = one[0]
        sample["image"] = T.denormalize(sample["image"])
        return T.paired_transform(sample, args.crop, train=True, flip=True)
    out = {}
    for name, fn in (("augment", aug.__getitem__), ("crop_flip", crop_only)):
        fn(0)                                            # first-call costs are not the steady state
        t = time.perf_counter()
        for i in range(args.samples):
            with engine.isolated_rng(i):
                fn(0)
        out[f"{name}_ms"] = 1000 * (time.perf_counter() - t) / args.samples
    out["extra_ms"] = out["augment_ms"] - out["crop_flip_ms"]
    return out


def bench_ckpt2(args):
    """Size and write time of AT/DT stage 2's files (train_transfer.py): checkpoint.pth (G with
    the frozen E1 and D2, Adam after one step, schedule) and best_g.pth (the selected G alone)."""
    import tempfile
    import train_transfer
    from lib.models import AtdtNet
    from lib.models.backbones import ResNetBackbone
    ch = ResNetBackbone(args.backbone).channels["layer4"]
    atdt = AtdtNet({"backbone": args.backbone, "tasks": {"depth": 1}},
                   {"backbone": args.backbone, "tasks": {"semantic": 11}},
                   {"in_channels": ch, "out_channels": ch, "final_relu": True})
    g = atdt.transfer
    opt = torch.optim.Adam(g.parameters(), lr=1e-5)
    g(torch.randn(1, ch, 4, 4)).square().mean().backward()
    opt.step()                                             # Adam's two moments now exist
    sched = engine.poly_scheduler(opt, 100000)
    out = {"g_params_m": sum(p.numel() for p in g.parameters()) / 1e6}
    with tempfile.TemporaryDirectory() as tmp:
        writers = {"checkpoint": lambda p: engine.save_checkpoint(
                       p, script="train_transfer.py", iteration=1, args=argparse.Namespace(),
                       models={"atdt": atdt}, optimizers={"g": opt}, schedulers={"g": sched}),
                   "best_g": lambda p: train_transfer.save_best(p, 1, {}, g)}
        for name, write in writers.items():
            path = os.path.join(tmp, name + ".pth")
            t = time.perf_counter()
            write(path)
            out[f"{name}_s"] = time.perf_counter() - t
            out[f"{name}_gib"] = os.path.getsize(path) / 2**30
    return out


def main(args):
    if args.threads:
        torch.set_num_threads(args.threads)
    args.device = engine.pick_device(args.device, 0)
    if args.device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # as the training scripts run (engine.seed_everything)
    datasets = _datasets(args)
    result = {"device": str(args.device), "torch": torch.__version__, "threads": torch.get_num_threads(),
              "size": args.size, "backbone": args.backbone, "batch_size": args.batch_size, "amp": args.amp,
              "channels_last": args.channels_last, "compile": args.compile,
              "output_stride": args.output_stride, "decoder_width": args.decoder_width}
    if args.device.type == "cuda":
        result["gpu"] = torch.cuda.get_device_name(args.device)
    if "generator" in args.only:
        result["generator"] = bench_generator(datasets["a"], args.samples)
    if "loader" in args.only:
        result["loader"] = bench_loader(datasets["a"], args)
    if "step" in args.only:
        result["step"] = bench_step(datasets["a"], args)
    for name in STAGES:
        if name in args.only:
            result[name] = bench_stage(name, datasets, args)
    if "finite" in args.only:
        result["finite"] = bench_finite(datasets, args)
    if "ckpt2" in args.only:
        result["ckpt2"] = bench_ckpt2(args)
    if "augment" in args.only:
        result["augment"] = bench_augment(datasets["a"], args)
    print_table(result)
    if args.json:
        engine.write_json(result, args.json)
    return result


def print_table(result):
    """One line per measured quantity."""
    print(" | ".join(f"{k}={result[k]}" for k in ("device", "threads", "size", "backbone", "batch_size",
                                                   "amp", "channels_last", "compile")))
    for part in PARTS:
        for k, v in result.get(part, {}).items():
            print(f"  {part:<9} {k:<15} " + (f"{v:10.2f}" if isinstance(v, float) else f"{v:>10}"))


if __name__ == "__main__":
    main(get_args_parser().parse_args())
