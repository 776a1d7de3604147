"""The engine every training script shares (docs/design.md, "The engine").

One pattern each for: distributed set-up (torchrun / SLURM, NCCL on CUDA, gloo on CPU),
AMP (one GradScaler shared by several optimizers), seeding, resumable data streams,
checkpoints (one schema, written atomically, resumed exactly), logging and the
non-finite-loss stop. Scripts wire these together; they do not re-implement them.
"""
import contextlib
import datetime
import json
import math
import os
import pickle
import random
import sys
import time
import warnings

import numpy as np
import torch
import torch.distributed as dist

CHECKPOINT_VERSION = 1


class UserError(RuntimeError):
    """A mistake in flags, files or data that the user can fix; printed as one line."""


def cli(main, args):
    """Run a script's main(args); user errors become one line on stderr and exit code 2."""
    try:
        return main(args)
    except (UserError, FileNotFoundError) as err:
        print(f"error: {one_line(err)}", file=sys.stderr)
        raise SystemExit(2) from None


def one_line(err):
    """The message of an error, without the worker traceback a DataLoader wraps it in."""
    text = str(err).strip()
    qual = f"{type(err).__module__}.{type(err).__qualname__}: "
    if "Original Traceback" in text and qual in text:   # raised in a DataLoader worker
        text = text[text.rfind(qual) + len(qual):]
    return text


# ----------------------------------------------------------------------------- distributed
def _env_int(*names):
    """The first of several environment variables that is set, as int (None if none is)."""
    for name in names:
        if os.environ.get(name) not in (None, ""):
            return int(os.environ[name])
    return None


def init_distributed(args):
    """Read torchrun or SLURM variables, pick the device and start the process group.

    Sets args.rank, args.world_size, args.local_rank, args.distributed and args.device.
    SLURM (srun without torchrun) needs MASTER_ADDR / MASTER_PORT exported by the batch script;
    single-node defaults are 127.0.0.1:29500.
    """
    rank = _env_int("RANK", "SLURM_PROCID")
    world = _env_int("WORLD_SIZE", "SLURM_NTASKS")
    local = _env_int("LOCAL_RANK", "SLURM_LOCALID")
    args.rank, args.world_size = rank or 0, world or 1
    args.local_rank = local if local is not None else args.rank
    args.distributed = args.world_size > 1
    args.device = pick_device(getattr(args, "device", None), args.local_rank)
    if getattr(args, "sync_bn", False) and args.device.type != "cuda":
        raise UserError("--sync-bn needs CUDA (torch's SyncBatchNorm runs on GPUs only); drop it "
                        "on the CPU, where each process normalises with its own batch")
    if args.distributed and not dist.is_initialized():
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ.setdefault("MASTER_PORT", "29500")
        backend = "nccl" if args.device.type == "cuda" else "gloo"
        if args.device.type == "cuda":
            torch.cuda.set_device(args.device)
        dist.init_process_group(backend, rank=args.rank, world_size=args.world_size)
    return args


def pick_device(name, local_rank):
    """cuda:<local rank> when CUDA is there (or asked for), else cpu."""
    if name in (None, "", "auto"):
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError("--device cuda was asked for but CUDA is not available; use --device cpu")
        if device.index is None:
            device = torch.device("cuda", local_rank % torch.cuda.device_count())
    return device


def is_main():
    """True on rank 0 (and when not distributed)."""
    return not dist.is_initialized() or dist.get_rank() == 0


def cleanup_distributed():
    """Destroy the process group if one was started."""
    if dist.is_initialized():
        dist.barrier()  # no rank tears down while another still talks to it
        dist.destroy_process_group()


def all_reduce_mean(values):
    """Average a dict of floats over processes (for logging only)."""
    if not dist.is_initialized() or not values:
        return values
    keys = sorted(values)
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64)
    if dist.get_backend() == "nccl":
        t = t.cuda()
    dist.all_reduce(t)
    return {k: v / dist.get_world_size() for k, v in zip(keys, t.tolist())}


def average_grads(modules):
    """Average the gradients of modules kept out of DDP over processes (a no-op on one).
    Discriminators and energy networks stay unwrapped because their requires_grad flips within
    a step, which DDP's reducer does not allow."""
    if not torch.distributed.is_initialized():
        return
    world = torch.distributed.get_world_size()
    for m in modules:
        for p in m.parameters():
            if p.grad is not None:
                torch.distributed.all_reduce(p.grad)
                p.grad /= world


def broadcast_modules(modules, params=True):
    """Rank 0's parameters (unless params=False) and buffers to every process (a no-op on one),
    as DDP's constructor does for the modules it wraps. Each rank builds its modules under its
    own seed (seed + rank), so a module kept out of DDP would otherwise start, and stay,
    different per rank: average_grads keeps equal gradients, not equal weights."""
    if not torch.distributed.is_initialized():
        return
    with torch.no_grad():
        for m in modules:
            for t in [*(m.parameters() if params else ()), *m.buffers()]:
                torch.distributed.broadcast(t, src=0)


def prepare_model(model, args, ddp=True, find_unused=False):
    """Move to the device, apply --channels-last / --sync-bn, wrap in DDP and --compile; a
    module not wrapped in DDP gets rank 0's weights (broadcast_modules).

    SyncBN conversion drops forward hooks: call lib.models.freeze_bn after this, not before.
    """
    model = model.to(args.device)
    trainable = any(p.requires_grad for p in model.parameters())
    wrap = getattr(args, "distributed", False) and ddp and trainable
    if getattr(args, "distributed", False) and not wrap:
        broadcast_modules([model])   # before channels_last: collectives want contiguous tensors
    if getattr(args, "channels_last", False):
        model = model.to(memory_format=torch.channels_last)
    if wrap:
        if getattr(args, "sync_bn", False):
            model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        ids = [args.device.index] if args.device.type == "cuda" else None
        model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=ids, find_unused_parameters=find_unused)
    if getattr(args, "compile", False):
        model = torch.compile(model)
    return model


def unwrap(model):
    """The plain module under DDP and torch.compile wrappers."""
    model = getattr(model, "_orig_mod", model)
    return getattr(model, "module", model)


# ----------------------------------------------------------------------------- seeding
def seed_everything(seed, deterministic=False):
    """Seed python, numpy and torch; optionally force deterministic kernels."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        # cuBLAS needs this workspace setting to be deterministic (CUDA docs).
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
    elif torch.cuda.is_available():
        torch.backends.cudnn.benchmark = True


def sample_seed(seed, epoch, index):
    """A 32-bit seed for one sample of one epoch, independent of workers and ranks."""
    return int(np.random.SeedSequence([seed, epoch, index]).generate_state(1)[0])


def rng_state():
    """All global RNG states, as types torch.load(weights_only=True) accepts."""
    np_state = np.random.get_state()
    state = {"python": random.getstate(), "torch": torch.get_rng_state(),
             "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)),
                       int(np_state[2]), int(np_state[3]), float(np_state[4])]}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state):
    """Inverse of rng_state()."""
    random.setstate(_as_tuple(state["python"]))
    torch.set_rng_state(state["torch"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _as_tuple(x):
    """Lists back to tuples, recursively (random.setstate insists on tuples)."""
    return tuple(_as_tuple(v) for v in x) if isinstance(x, (list, tuple)) else x


# ----------------------------------------------------------------------------- AMP
class Amp:
    """--amp off|bf16|fp16: one autocast context and one GradScaler for all optimizers
    (docs/design.md, "The engine": Precision). fp16 runs on CUDA and, slowly, on the CPU (for
    tests); the scaler is enabled for fp16 only.

    Usage: with amp.autocast(): loss = ...; amp.backward(loss); amp.step([opt_g, opt_d]).
    """

    def __init__(self, mode, device):
        if mode not in ("off", "bf16", "fp16"):
            raise UserError(f"--amp must be off, bf16 or fp16, got {mode!r}")
        # fp16 also runs on the CPU (CPU autocast, a CPU GradScaler): slow, but it runs the
        # scaler path of every script in the CPU tests exactly as it runs on a GPU.
        self.mode, self.device_type = mode, device.type
        self.dtype = {"off": None, "bf16": torch.bfloat16, "fp16": torch.float16}[mode]
        self.scaler = torch.amp.GradScaler(device.type, enabled=mode == "fp16")

    def autocast(self):
        """The autocast context (a no-op when --amp off)."""
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype)

    def backward(self, loss, retain_graph=False):
        """loss.backward(), scaled for fp16."""
        self.scaler.scale(loss).backward(retain_graph=retain_graph)

    def step(self, optimizers):
        """Step several optimizers with one scaler, then update the scale once.

        An optimizer none of whose parameters has a gradient this step (HeadFreeze+DA's
        discriminators before the switch) is skipped, on every --amp path: GradScaler.step
        refuses it ("No inf checks were recorded for this optimizer": unscale_ had nothing to
        check), and a plain step of it would change nothing. The scale is updated only when
        some optimizer stepped: update() needs the inf checks of at least one, and the steps
        it judges are exactly those that were unscaled."""
        stepped = [opt for opt in optimizers if _has_grads(opt)]
        for opt in stepped:
            self.scaler.step(opt)
        if stepped:
            self.scaler.update()

    def state_dict(self):
        return self.scaler.state_dict()

    def load_state_dict(self, state):
        if state:
            self.scaler.load_state_dict(state)


def _has_grads(optimizer):
    """Whether any parameter of the optimizer holds a gradient (set_to_none leaves None)."""
    return any(p.grad is not None for group in optimizer.param_groups for p in group["params"])


def poly_scheduler(optimizer, iters, power=0.9):
    """Poly decay lr = base * (1 - it / iters) ** power, stepped once per iteration."""
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda it: max(0.0, 1.0 - it / iters) ** power)


# PyTorch's warning on a scheduler's first step() when its optimizer has not stepped yet. It
# guards against calling scheduler.step() BEFORE optimizer.step() within an iteration, which
# shifts the schedule by one. The scripts never do that (Amp.step, then the schedulers); they
# reach the warning only when an optimizer legitimately did not step in iteration 0: fp16's
# GradScaler skipped it (gradients overflowed at the initial scale 2^16), or Amp.step skipped an
# optimizer with no gradients yet (HeadFreeze+DA's discriminators before the switch, whose
# schedules stay flat until then: train_headfreeze.schedulers). The schedule still counts
# iterations, as intended, so the warning is harmless there and step_schedulers silences it.
_SCHEDULER_ORDER_WARNING = r"Detected call of `lr_scheduler\.step\(\)` before `optimizer\.step\(\)`"


def step_schedulers(schedulers):
    """Step every scheduler once (one iteration), without PyTorch's scheduler-order warning,
    which is harmless here (see _SCHEDULER_ORDER_WARNING above)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_SCHEDULER_ORDER_WARNING, category=UserWarning)
        for s in schedulers:
            s.step()


# ----------------------------------------------------------------------------- data
class _SeededDataset(torch.utils.data.Dataset):
    """Calls dataset[index] under a per-sample seed, so random augmentation is the same
    whatever the worker, the rank or a resume; stamps the `domain` key when given."""

    def __init__(self, dataset, domain=None):
        self.dataset, self.domain = dataset, domain

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, item):
        index, seed = item
        with isolated_rng(seed):
            sample = self.dataset[index]
        if self.domain is not None:
            sample["domain"] = self.domain
        return sample


@contextlib.contextmanager
def isolated_rng(seed):
    """Seed python/numpy/torch for one sample (or one measurement, as train_headfreeze.py's
    first batches) without disturbing the caller's streams: they are restored on exit."""
    py, npy = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)
        try:
            yield
        finally:
            random.setstate(py)
            np.random.set_state(npy)


class ResumableBatchSampler:
    """Batches of (index, seed) for this rank: a fresh permutation per epoch from (seed, epoch),
    sharded rank::world, starting `position` batches into the epoch (for exact resume)."""

    def __init__(self, size, batch_size, seed, rank=0, world_size=1, shuffle=True):
        self.size, self.batch_size, self.seed = size, batch_size, seed
        self.rank, self.world_size, self.shuffle = rank, world_size, shuffle
        self.epoch, self.position = 0, 0
        if len(self) == 0:
            raise UserError(f"dataset of {size} samples is smaller than one global batch "
                            f"({batch_size} x {world_size} processes): lower --batch-size")

    def __len__(self):
        return (self.size // self.world_size) // self.batch_size

    def __iter__(self):
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 100003 + self.epoch)
            order = torch.randperm(self.size, generator=g).tolist()
        else:
            order = list(range(self.size))
        mine = order[self.rank::self.world_size]
        for b in range(self.position, len(self)):
            batch = mine[b * self.batch_size:(b + 1) * self.batch_size]
            yield [(i, sample_seed(self.seed, self.epoch, i)) for i in batch]


class InfiniteLoader:
    """An endless, resumable stream of training batches: `next(loader)`.

    state_dict() records (epoch, position) so a resumed run sees exactly the batches the
    uninterrupted run would have seen.
    """

    def __init__(self, dataset, batch_size, args, domain=None, shuffle=True, seed=None):
        # seed: of the permutations and per-sample seeds (default --seed); two streams over
        # one dataset need two seeds, or they draw the same images at every step.
        seed = args.seed if seed is None else seed
        self.sampler = ResumableBatchSampler(len(dataset), batch_size, seed,
                                             args.rank, args.world_size, shuffle)
        workers = getattr(args, "workers", 0)
        self.loader = torch.utils.data.DataLoader(
            _SeededDataset(dataset, domain), batch_sampler=self.sampler, num_workers=workers,
            pin_memory=args.device.type == "cuda", persistent_workers=workers > 0,
            # DataLoader draws its base seed from this generator: a private one keeps the
            # global stream (dropout, init) independent of how many loaders a script builds.
            generator=torch.Generator().manual_seed(seed))
        self._iter = None

    def __iter__(self):
        return self

    def __next__(self):
        if self._iter is None:
            self._iter = iter(self.loader)
        try:
            batch = next(self._iter)
        except StopIteration:
            self.sampler.epoch, self.sampler.position = self.sampler.epoch + 1, 0
            self._iter = iter(self.loader)
            batch = next(self._iter)
        self.sampler.position += 1
        return batch

    def state_dict(self):
        return {"epoch": self.sampler.epoch, "position": self.sampler.position}

    def load_state_dict(self, state):
        self.sampler.epoch, self.sampler.position = state["epoch"], state["position"]
        self._iter = None


class _Shard(torch.utils.data.Sampler):
    """indices rank::world without padding, so DDP evaluation counts each sample once. The
    limit caps the split before it is sharded: the first `limit` samples are scored whatever the
    number of processes (capping each shard scored `limit` per process, other samples than one
    process scores, and metrics that changed with the process count)."""

    def __init__(self, size, rank, world_size, limit=None):
        self.indices = list(range(size))[:limit][rank::world_size]

    def __iter__(self):
        return iter(self.indices)

    def __len__(self):
        return len(self.indices)


def first_batches(dataset, batch_size, args, max_batches):
    """The first max_batches batches of a dataset, in order and unsharded: what a diagnostic
    reads on rank 0 alone (no collective, so no rank can wait on another)."""
    n = min(len(dataset), max_batches * batch_size)
    return torch.utils.data.DataLoader(torch.utils.data.Subset(dataset, range(n)), batch_size=batch_size,
                                       num_workers=getattr(args, "workers", 0))


def eval_loader(dataset, batch_size, args, max_batches=None):
    """An ordered, sharded DataLoader for evaluation (each sample seen by one process)."""
    limit = None if max_batches is None else max_batches * batch_size
    sampler = _Shard(len(dataset), getattr(args, "rank", 0), getattr(args, "world_size", 1), limit)
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size, sampler=sampler,
                                       num_workers=getattr(args, "workers", 0))


def to_device(batch, device, channels_last=False):
    """Move the tensors of a batch dict to the device (non-blocking)."""
    out = {}
    for k, v in batch.items():
        if torch.is_tensor(v):
            v = v.to(device, non_blocking=True)
            if channels_last and k == "image":
                v = v.contiguous(memory_format=torch.channels_last)
        out[k] = v
    return out


# ----------------------------------------------------------------------------- checkpoints
@contextlib.contextmanager
def atomic_write(path):
    """Yield a temporary path beside `path`, renamed onto it only if the block succeeds:
    a reader never sees a half-written file; the pid keeps concurrent writers apart."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    _remove_stale_temps(path)
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        yield tmp
        with open(tmp, "rb+") as f:   # on disk before the rename: a power cut cannot leave
            os.fsync(f.fileno())      # a renamed but empty file
        os.replace(tmp, path)
        _fsync_dir(folder)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _remove_stale_temps(path):
    """Temporary files of `path` left by writers that were killed (their process is gone)."""
    folder, base = os.path.split(os.path.abspath(path))
    for name in os.listdir(folder):
        pid = name[len(base) + 4:] if name.startswith(base + ".tmp") else ""
        if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            try:
                os.remove(os.path.join(folder, name))
            except FileNotFoundError:
                pass   # another process cleaned it first


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _fsync_dir(folder):
    """Make the rename itself durable (best effort: not every platform can open a folder)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_save(obj, path):
    """torch.save, atomically."""
    with atomic_write(path) as tmp:
        torch.save(obj, tmp)


def strict_json(obj):
    """obj with NaN / inf floats as None, so the JSON it becomes is strict (null, not NaN)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: strict_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [strict_json(v) for v in obj]
    return obj


def write_json(obj, path):
    """Write strict JSON, atomically."""
    with atomic_write(path) as tmp, open(tmp, "w") as f:
        json.dump(strict_json(obj), f, indent=2, default=str, allow_nan=False)


def json_args(args):
    """The args namespace as JSON-safe values (devices and paths as strings)."""
    safe = {}
    for k, v in vars(args).items():
        safe[k] = v if isinstance(v, (int, float, str, bool, type(None), list, dict)) else str(v)
    return safe


def save_checkpoint(path, *, script, iteration, args, models, optimizers=None, schedulers=None,
                    amp=None, loaders=None, model_specs=None, extra=None):
    """The one checkpoint schema (docs/design.md, "The engine"): everything `--resume` needs, written atomically.

    Under DDP, a checkpoint with `loaders` (a resume point) must be saved by every rank at once
    (it gathers each rank's RNG states); others (model.pth) may be saved by rank 0 alone."""
    state = {
        "format": CHECKPOINT_VERSION, "script": script, "iteration": iteration,
        "args": json_args(args),
        "models": {k: unwrap(m).state_dict() for k, m in models.items()},
        "model_specs": model_specs or {},
        "optimizers": {k: o.state_dict() for k, o in (optimizers or {}).items()},
        "schedulers": {k: s.state_dict() for k, s in (schedulers or {}).items()},
        "scaler": amp.state_dict() if amp is not None else {},
        "loaders": {k: ld.state_dict() for k, ld in (loaders or {}).items()},
        "rng": rng_state(), "extra": extra or {},
    }
    if loaders and dist.is_initialized() and dist.get_world_size() > 1:
        # A resume point (it has data streams), which every rank writes together: each rank
        # draws from its own RNG streams (seeded seed + rank: dropout, noise), so all of them
        # are kept; rank 0's alone would give every rank rank 0's streams after --resume.
        ranks = [None] * dist.get_world_size()
        dist.all_gather_object(ranks, state["rng"])
        state["rng_ranks"] = ranks
    if is_main():
        atomic_save(state, path)
    return path


def load_checkpoint(path, script=None, flag="--resume"):
    """Load a checkpoint of this project (weights_only=True); check which script wrote it."""
    if not os.path.isfile(path):
        raise UserError(f"checkpoint not found: {path} (check {flag})")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:   # objects a safe load refuses: not one of ours
        raise UserError(f"{path} is not a checkpoint of this repository (it holds Python objects "
                        f"a safe load refuses); pass a checkpoint.pth written by its scripts to {flag}") from None
    except Exception as err:  # a truncated or foreign file: say which, not a pickle trace
        first = (str(err).strip().splitlines() or [""])[0]
        raise UserError(f"cannot read checkpoint {path} ({flag}): not a file torch.save wrote "
                        f"({type(err).__name__}: {first})") from None
    if not isinstance(ckpt, dict) or any(k not in ckpt for k in ("script", "models", "args", "rng")):
        raise UserError(f"{path} is not a checkpoint of this repository (no 'script'/'models'/"
                        f"'args'/'rng' keys); pass a checkpoint.pth written by one of its scripts to {flag}")
    if script is not None and ckpt["script"] != script:
        raise UserError(f"{path} was written by {ckpt['script']}, not {script}; pass a checkpoint "
                        f"of {script} to {flag} (or a fresh --output-dir)")
    return ckpt


def restore(ckpt, *, models, optimizers=None, schedulers=None, amp=None, loaders=None):
    """Load every state of a checkpoint strictly; returns the iteration to continue from."""
    for name, model in models.items():
        if name not in ckpt["models"]:
            raise UserError(f"checkpoint has no model {name!r} (it has {sorted(ckpt['models'])})")
        try:
            unwrap(model).load_state_dict(ckpt["models"][name], strict=True)
        except RuntimeError as err:   # another architecture: torch lists every key, say it once
            lines = [ln.strip() for ln in str(err).strip().splitlines()]
            first = lines[1] if len(lines) > 1 else lines[0]   # the first mismatch torch names
            raise UserError(f"the checkpoint's {name!r} does not fit this model ({first[:160]}): "
                            "resume with the run's own --backbone and model flags "
                            "(its args.json), or start a new --output-dir") from None
    for group, objs in (("optimizers", optimizers), ("schedulers", schedulers), ("loaders", loaders)):
        for name, obj in (objs or {}).items():
            obj.load_state_dict(ckpt[group][name])
    if amp is not None:
        amp.load_state_dict(ckpt.get("scaler"))
    ranks = ckpt.get("rng_ranks")
    if ranks and dist.is_initialized() and len(ranks) == dist.get_world_size():
        set_rng_state(ranks[dist.get_rank()])        # this rank's own streams (save_checkpoint)
    else:
        set_rng_state(ckpt["rng"])
    return ckpt["iteration"]


def stop_iteration(args):
    """Where this run stops: --iters, or earlier with --stop-at (a checkpoint is written there)."""
    stop = getattr(args, "stop_at", None)
    return args.iters if stop is None else max(0, min(stop, args.iters))


def should_save(iteration, args):
    """Checkpoint every --save-every iterations and always at the last one of this run."""
    every = getattr(args, "save_every", 0)
    return bool(every and iteration % every == 0) or iteration == stop_iteration(args)


def resume_path(args):
    """The checkpoint to resume from: --resume PATH, or 'auto' = OUTPUT_DIR/checkpoint.pth if present."""
    if args.resume == "auto":
        path = os.path.join(args.output_dir, "checkpoint.pth")
        return path if os.path.isfile(path) else None
    return args.resume


# ----------------------------------------------------------------------------- logging
def setup_run(args, script):
    """Distributed set-up, seeding and the run folder's checks; returns a RunLogger, whose
    start() writes args.json once data and models are built (a failed start leaves nothing)."""
    init_distributed(args)
    if args.output_dir is None:
        args.output_dir = os.path.join("runs", script.removesuffix(".py"))
    check_run_folder(args)
    seed_everything(args.seed + args.rank, getattr(args, "deterministic", False))
    args.run_id = f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
    if getattr(args, "tensorboard", False):
        tensorboard_writer_class()   # a missing package is a one-line error before anything trains
    return RunLogger(args.output_dir, args.iters, getattr(args, "log_every", 20), args)


def tensorboard_writer_class():
    """torch.utils.tensorboard's SummaryWriter, or a UserError naming the missing package."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise UserError("--tensorboard needs the tensorboard package: pip install tensorboard "
                        "(or drop --tensorboard; log.jsonl holds the same records)") from None
    return SummaryWriter


def scalar_items(record, prefix=""):
    """(tag, value) for every finite number in a (nested) log record, tags joined by '/':
    {"target": {"mIoU": 20.1}} -> ("target/mIoU", 20.1); lists, strings and None are skipped."""
    for key, value in record.items():
        tag = f"{prefix}{key}"
        if isinstance(value, dict):
            yield from scalar_items(value, tag + "/")
        elif isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            yield tag, float(value)


def check_run_folder(args):
    """Refuse to start over a run already in --output-dir unless --resume or --overwrite says
    what to do with it; --overwrite starts a fresh log.jsonl and forgets the old metrics."""
    found = [f for f in ("metrics.json", "checkpoint.pth")
             if os.path.isfile(os.path.join(args.output_dir, f))]
    if not found or getattr(args, "resume", None):
        return
    if not getattr(args, "overwrite", False):
        state = "finished" if "metrics.json" in found else "started"
        raise UserError(f"{args.output_dir} holds a {state} run ({found[0]}): continue it with "
                        "--resume auto, replace it with --overwrite, or choose another --output-dir")
    if is_main():
        for name in ("metrics.json", "log.jsonl"):
            path = os.path.join(args.output_dir, name)
            if os.path.isfile(path):
                os.remove(path)


class RunLogger:
    """Console progress (rate, ETA, peak memory) and log.jsonl, on rank 0 only. Every record
    carries the run id and the time, so the segments of a resumed run can be told apart."""

    def __init__(self, output_dir, total_iters, log_every=20, args=None):
        self.path = os.path.join(output_dir, "log.jsonl")
        self.total, self.every = total_iters, max(1, log_every)
        self.t0, self.start_it = time.time(), 0
        self.args = args
        self.run_id = getattr(args, "run_id", None)
        self.tb = None   # TensorBoard writer (--tensorboard), opened by start()

    def start(self, iteration):
        """Call once before the loop (after a resume): writes the run folder and args.json, and
        makes the rate count only this run's steps."""
        if is_main() and self.args is not None:
            os.makedirs(self.args.output_dir, exist_ok=True)
            write_json(json_args(self.args), os.path.join(self.args.output_dir, "args.json"))
        if is_main() and iteration and os.path.isfile(self.path):
            self._drop_after(iteration)
        if is_main() and getattr(self.args, "tensorboard", False) and self.tb is None:
            # purge_step: a resumed run drops the old segment's events after its checkpoint,
            # as _drop_after does for log.jsonl.
            self.tb = tensorboard_writer_class()(os.path.join(self.args.output_dir, "tensorboard"),
                                                 purge_step=iteration + 1 if iteration else None)
        self.t0, self.start_it = time.time(), iteration

    def _drop_after(self, iteration):
        """A resumed run replays the steps after its checkpoint: drop their old records, so
        log.jsonl holds each iteration once."""
        with open(self.path) as f:
            lines = [ln for ln in f if ln.strip()]
        keep = [ln for ln in lines if json.loads(ln).get("iter", 0) <= iteration]
        if len(keep) != len(lines):
            with atomic_write(self.path) as tmp, open(tmp, "w") as f:
                f.writelines(keep)

    def step(self, iteration, scalars, lr=None):
        """Log iteration (1-based count of finished iterations): the first of this run, then
        every `log_every` steps and the last."""
        if iteration % self.every and iteration != self.total and iteration != self.start_it + 1:
            return
        scalars = all_reduce_mean(scalars)
        if not is_main():
            return
        rate = (iteration - self.start_it) / max(time.time() - self.t0, 1e-9)
        eta = datetime.timedelta(seconds=int((self.total - iteration) / max(rate, 1e-9)))
        terms = " ".join(f"{k}={v:.4g}" for k, v in scalars.items())
        mem = ""
        if torch.cuda.is_available():
            mem = f" | mem {torch.cuda.max_memory_allocated() / 2**30:.2f}G"
        lr_s = f" lr={lr:.3g}" if lr is not None else ""
        print(f"[{iteration}/{self.total}] {terms}{lr_s} | {rate:.2f} it/s | eta {eta}{mem}", flush=True)
        self.write({"iter": iteration, **scalars, **({"lr": lr} if lr is not None else {}),
                    "it_per_s": rate})

    def write(self, record):
        """Append one strict JSON object, stamped with the run id and time, to log.jsonl."""
        if is_main():
            os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
            stamp = {"run": self.run_id, "time": datetime.datetime.now().isoformat(timespec="seconds")}
            with open(self.path, "a") as f:
                f.write(json.dumps(strict_json({**record, **stamp}), allow_nan=False) + "\n")
            if self.tb is not None:
                step = record.get("iter", 0)
                for tag, value in scalar_items({k: v for k, v in record.items() if k != "iter"}):
                    self.tb.add_scalar(tag, value, step)
                self.tb.flush()


class NonFiniteLoss(UserError):
    """Raised when a loss term becomes NaN or inf."""


def check_finite(losses, iteration, names=()):
    """Stop with the step, every loss term and the batch's sample names if any term is not finite.

    iteration: the 1-based count of the step, as the console and log.jsonl number it."""
    # One device-to-host copy for all terms: a sync per term would stall the GPU.
    device = next((v.device for v in losses.values() if torch.is_tensor(v)), "cpu")
    stacked = torch.stack([torch.as_tensor(v, device=device).detach().float().reshape(())
                           for v in losses.values()])
    values = dict(zip(losses, stacked.tolist()))
    if all(np.isfinite(v) for v in values.values()):
        return values
    terms = ", ".join(f"{k}={v:.4g}" for k, v in values.items())
    shown = list(names)[:8]
    raise NonFiniteLoss(f"non-finite loss at iteration {iteration}: {terms}; batch {shown}. "
                        "Lower --lr, try --amp off, or check these samples.")
