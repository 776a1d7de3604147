"""Crash-and-resume trials and bad-input probes: the figures of the README's "Reliability".

Each trial starts a small training run of one script, kills it with SIGKILL at a random moment
(often in the middle of a checkpoint write: the runs save every step), checks that what is on
disk is loadable and that no temporary file is left after the next write, resumes it with
`--resume auto`, and compares the final weights (checkpoint.pth and model.pth) with an
uninterrupted run, bit for bit. Every script is covered:

- train_tasks.py, tools/train_supervised.py, train_dada.py (s7: discriminator and depth
  block), train_semimtl.py (--method semimtl): one command each;
- train_transfer.py: on a small stage-1 run the probe makes first (shared by all its trials);
- train_umadapt.py: the chain transfer -> base -> ccr -> adapt (variant adv), one command per
  stage into one run folder as experiments/umadapt.sh runs it; trial i kills in one stage (in
  turn, adapt first); the resume reruns the chain with --resume auto, skipping the stages that
  hold metrics.json, and every stage's weights are compared;
- train_headfreeze.py: headfreeze+da with the switch (--freeze-at) at half the run; the trials
  kill after the switch and before it in turn.

The kill moment: once the run's log.jsonl shows iteration k (random in the trial's window), a
random delay of up to one step (as timed in the uninterrupted run) more, so the kill lands in
the checkpoint write of k or in the step after it. The probes run the scripts with bad flags
and files and check that each stops with exit code 2 and one `error:` line, before any run
folder is written.

    python tools/reliability_probe.py --trials 5 --out runs/reliability
    python tools/reliability_probe.py --trials 1 --only probes      # the bad inputs only
    python tools/reliability_probe.py --scripts train_umadapt.py --trials 5 --out runs/rel_um

--launch fork (tests/test_reliability.py) starts each command as a fork of a server that has
imported torch and lib/ once, not as a new interpreter: each start then costs milliseconds,
not the seconds of importing torch, and a forked command is still its own process, killed
with SIGKILL the same way.
"""
import argparse
import concurrent.futures
import json
import multiprocessing
import os
import random
import shutil
import signal
import subprocess
import sys
import time

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from lib import engine  # noqa: E402

TINY = ["--size", "32", "64", "--batch-size", "2", "--proc-length", "8", "--workers", "0",
        "--eval-batches", "1", "--device", "cpu", "--log-every", "1"]
UM_STAGES = ("transfer", "base", "ccr", "adapt")
SCRIPT_NAMES = ("train_tasks.py", "train_supervised.py", "train_transfer.py", "train_dada.py",
                "train_semimtl.py", "train_umadapt.py", "train_headfreeze.py")
PRELOAD = ("numpy", "PIL.Image", "torch", "torchvision", "lib.engine", "lib.args", "lib.data",
           "lib.models", "lib.losses", "lib.metrics", "lib.evaluation")


def scripts(iters):
    """name: {"chain": [(stage, argv, sub-folder of the run folder)], "setup": argv of a run the
    chain reads ("{setup}" in its argv), "switch": HeadFreeze's switch iteration}. Every run is
    small and checkpoints every step."""
    n, save = str(iters), ["--save-every", "1"]
    um = ["train_umadapt.py", *TINY, "--decoder-width", "16", "--transfer-width", "8",
          "--class-weight-images", "4", "--variant", "adv", *save]
    for stage in UM_STAGES:
        um += [f"--{stage}-iters", n]
    freeze = iters // 2
    return {
        "train_tasks.py": {"chain": [("run", ["train_tasks.py", *TINY, "--decoder-width", "16",
                                              "--iters", n, *save], "")]},
        "train_supervised.py": {"chain": [("run", ["tools/train_supervised.py", *TINY, "--iters", n, *save], "")]},
        "train_transfer.py": {
            "setup": ["train_tasks.py", *TINY, "--decoder-width", "16", "--iters", "2", "--save-every", "0"],
            # --eval-every: the selection of G on A's val runs (and writes best_g.pth) mid-run
            "chain": [("run", ["train_transfer.py", "--stage1", "{setup}", *TINY, "--iters", n,
                               "--eval-every", str(max(1, iters // 3)), *save], "")]},
        "train_dada.py": {"chain": [("run", ["train_dada.py", *TINY, "--setup", "s7", "--iters", n, *save], "")]},
        "train_semimtl.py": {"chain": [("run", ["train_semimtl.py", *TINY, "--method", "semimtl",
                                                "--decoder-width", "32", "--d-width", "8", "--iters", n,
                                                *save], "")]},
        "train_umadapt.py": {"chain": [(st, um + ["--stage", st], st if st != "adapt" else "adapt-adv")
                                       for st in UM_STAGES]},
        "train_headfreeze.py": {"chain": [("run", ["train_headfreeze.py", *TINY, "--variant", "headfreeze+da",
                                                   "--fpn-width", "16", "--iters", n, "--freeze-at", str(freeze),
                                                   *save], "")],
                                "switch": freeze},
    }


def get_args_parser():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=5, help="kill-and-resume trials per script")
    parser.add_argument("--scripts", nargs="+", default=list(SCRIPT_NAMES), choices=list(SCRIPT_NAMES))
    parser.add_argument("--only", nargs="+", default=["crash", "probes"], choices=["crash", "probes"])
    parser.add_argument("--iters", type=int, default=12, help="iterations of each run (of each UM-Adapt stage)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the kill moments")
    parser.add_argument("--jobs", type=int, default=1, help="scripts (and probes) run at the same time")
    parser.add_argument("--launch", default="exec", choices=["exec", "fork"],
                        help="exec: each command a new `python` process; fork: a fork of a server "
                             "that has imported torch and lib/ (module docstring)")
    parser.add_argument("--out", default=os.path.join("runs", "reliability"), help="results folder")
    parser.add_argument("--keep-runs", action="store_true",
                        help="keep the run folders (GBs: every trial holds its checkpoints); by default "
                             "a trial's folder is removed once compared, its logs kept")
    return parser


# ----------------------------------------------------------------------------- launching
def _env():
    return {**os.environ, "OMP_NUM_THREADS": "1"}


class Launcher:
    """Starts `python ARGV...` in ROOT with stdout / stderr to files: a new interpreter (exec),
    or a fork of a multiprocessing fork server that preloaded PRELOAD (fork)."""

    def __init__(self, mode):
        self.mode, self.ctx = mode, None
        if mode == "fork":
            self.ctx = multiprocessing.get_context("forkserver")
            self.ctx.set_forkserver_preload(list(PRELOAD))
            saved = os.environ.get("OMP_NUM_THREADS")
            os.environ["OMP_NUM_THREADS"] = "1"      # the server imports torch with one thread
            try:
                from multiprocessing import forkserver
                forkserver.ensure_running()
            finally:
                if saved is None:
                    os.environ.pop("OMP_NUM_THREADS")
                else:
                    os.environ["OMP_NUM_THREADS"] = saved

    def start(self, argv, log_prefix):
        os.makedirs(os.path.dirname(log_prefix), exist_ok=True)
        out, err = log_prefix + ".stdout", log_prefix + ".stderr"
        if self.mode == "exec":
            with open(out, "w") as fo, open(err, "w") as fe:
                p = subprocess.Popen([sys.executable, *argv], cwd=ROOT, env=_env(), stdout=fo, stderr=fe,
                                     stdin=subprocess.DEVNULL)
            return _Popen(p, err)
        p = self.ctx.Process(target=_forked_command, args=(argv, ROOT, _env(), out, err), daemon=False)
        p.start()
        return _Forked(p, err)


class _Handle:
    def __init__(self, proc, err):
        self.proc, self.err = proc, err

    def stderr(self):
        with open(self.err) as f:
            return f.read()


class _Popen(_Handle):
    pid = property(lambda self: self.proc.pid)

    def poll(self):
        return self.proc.poll()

    def wait(self, timeout=None):
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return None

    def kill(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()


class _Forked(_Handle):
    pid = property(lambda self: self.proc.pid)

    def poll(self):
        return self.proc.exitcode

    def wait(self, timeout=None):
        self.proc.join(timeout)
        if self.proc.exitcode is None:
            self.kill()
            return None
        return self.proc.exitcode

    def kill(self):
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.join()


def _forked_command(argv, cwd, env, out, err):
    """In a fork of the server: become `python ARGV...` (its exit code is this process's)."""
    import runpy
    fo, fe = open(out, "w"), open(err, "w")
    os.dup2(fo.fileno(), 1)
    os.dup2(fe.fileno(), 2)
    sys.stdout, sys.stderr = open(1, "w", closefd=False), open(2, "w", closefd=False)
    os.chdir(cwd)
    os.environ.clear()
    os.environ.update(env)
    torch.set_num_threads(1)
    path = os.path.abspath(argv[0])
    sys.argv, sys.path[0] = [path, *argv[1:]], os.path.dirname(path)
    runpy.run_path(path, run_name="__main__")   # SystemExit and tracebacks as python gives them


def run_to_end(launcher, argv, log_prefix, timeout=1800):
    """Run a command to its end; returns (exit code, stderr, seconds)."""
    t = time.perf_counter()
    h = launcher.start(argv, log_prefix)
    code = h.wait(timeout)
    return code, h.stderr(), time.perf_counter() - t


def logged_iteration(folder):
    """The largest iteration in FOLDER/log.jsonl (0 when there is none yet)."""
    try:
        with open(os.path.join(folder, "log.jsonl")) as f:
            lines = f.read().splitlines()
    except FileNotFoundError:
        return 0
    best = 0
    for line in lines:
        try:
            best = max(best, int(json.loads(line).get("iter", 0)))
        except (ValueError, TypeError, AttributeError):
            pass                       # a line being written
    return best


def watch(handle, folder, kill_at=None, delay=0.0, timeout=1800):
    """Follow a running command's log.jsonl. Without kill_at: until it ends, returning when
    each iteration was first seen. With kill_at: SIGKILL `delay` seconds after iteration
    kill_at shows (returns the iteration last seen then), unless it ended first (None)."""
    t0, seen, last = time.perf_counter(), {}, 0
    while handle.poll() is None:
        it = logged_iteration(folder)
        if it > last:
            now = time.perf_counter() - t0
            for i in range(last + 1, it + 1):
                seen[i] = now
            last = it
        if kill_at is not None and last >= kill_at:
            time.sleep(delay)
            if handle.poll() is not None:
                return None
            handle.kill()
            return logged_iteration(folder)
        if time.perf_counter() - t0 > timeout:
            handle.kill()
            raise SystemExit(f"error: a command ran for more than {timeout} s: {handle.stderr()[-300:]}")
        time.sleep(0.01)
    return seen if kill_at is None else None


# ----------------------------------------------------------------------------- crash trials
def _argv(argv, out_dir, setup_dir):
    return [setup_dir if a == "{setup}" else a for a in argv] + ["--output-dir", out_dir]


def weights(path):
    return torch.load(path, map_location="cpu", weights_only=True)["models"]


def final_weights(run_dir, chain):
    """{sub-folder/file: models} of every stage's checkpoint.pth and model.pth."""
    out = {}
    for _, _, sub in chain:
        for name in ("checkpoint.pth", "model.pth"):
            path = os.path.join(run_dir, sub, name)
            if os.path.isfile(path):
                out[os.path.join(sub, name)] = weights(path)
    return out


def final_metrics(run_dir, chain):
    """{sub-folder/metrics.json: its content} of every stage (scores, selection, counters)."""
    out = {}
    for _, _, sub in chain:
        path = os.path.join(run_dir, sub, "metrics.json")
        if os.path.isfile(path):
            with open(path) as f:
                out[os.path.join(sub, "metrics.json")] = json.load(f)
    return out


def mismatches(final, reference):
    """The files, models and tensors that differ (empty when bit-identical)."""
    bad = [f"{f}: missing" for f in reference if f not in final]
    for f, models in reference.items():
        if f not in final:
            continue
        if set(final[f]) != set(models):
            bad.append(f"{f}: models {sorted(final[f])} vs {sorted(models)}")
            continue
        for n, state in models.items():
            keys = set(state) | set(final[f][n])
            bad += [f"{f}: {n}.{k}" for k in sorted(keys)
                    if k not in state or k not in final[f][n] or not torch.equal(final[f][n][k], state[k])]
    return bad


def temp_files(folder):
    return sorted(f for f in os.listdir(folder) if ".tmp" in f) if os.path.isdir(folder) else []


def disk_state(folder, switch):
    """What a resume finds in a stage folder: whether every .pth loads, the checkpoint's
    iteration, and (HeadFreeze) whether it was written after the switch."""
    loadable, at, frozen = None, None, None
    for name in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
        if not name.endswith(".pth"):
            continue
        try:
            ckpt = engine.load_checkpoint(os.path.join(folder, name)) if name in ("checkpoint.pth", "model.pth") \
                else torch.load(os.path.join(folder, name), map_location="cpu", weights_only=True)
            loadable = loadable is not False
        except Exception:          # engine.UserError, or torch's own for a best_*.pth
            loadable = False
            continue
        if name == "checkpoint.pth":
            at = ckpt["iteration"]
            if switch is not None:
                frozen = bool(ckpt["models"]["model"]["head_frozen"])
    return loadable, at, frozen


def reference_run(launcher, spec, run_dir, setup_dir, logs):
    """The uninterrupted run: each stage's seconds and its seconds per step."""
    stages = {}
    for stage, argv, sub in spec["chain"]:
        t = time.perf_counter()
        h = launcher.start(_argv(argv, run_dir, setup_dir), os.path.join(logs, f"reference.{stage}"))
        seen = watch(h, os.path.join(run_dir, sub))
        if h.wait() != 0:
            raise SystemExit(f"error: the reference run ({stage}) failed: {h.stderr().strip()[-300:]}")
        times = sorted(seen.values())
        step = (times[-1] - times[0]) / (len(times) - 1) if len(times) > 1 else 0.5
        stages[stage] = {"seconds": round(time.perf_counter() - t, 1), "step_s": round(step, 3)}
    return stages


def kill_plan(spec, i, iters, rng):
    """Trial i's stage and the iteration k after which it kills (k < iters: the kill lands in
    the write of k or in the steps after it, not after the run): UM-Adapt's stages in turn from
    the last; HeadFreeze after the switch (even i; trial 0 right at it: k = the switch, so the
    kill cuts the switch's checkpoint or the first frozen step) and before it (odd i)."""
    chain = spec["chain"]
    index = (len(chain) - 1 - i) % len(chain)
    switch = spec.get("switch")
    if switch is None:
        lo, hi, side = 1, iters - 1, None
    elif i == 0:
        lo, hi, side = switch, switch, "at"
    elif i % 2 == 0 or switch < 2:
        lo, hi, side = switch, iters - 1, "after"
    else:
        lo, hi, side = 1, switch - 1, "before"
    return index, rng.randint(lo, hi), side


def trial(launcher, spec, run_dir, setup_dir, logs, index, kill_at, delay, reference, ref_metrics):
    """One kill -9 in stage `index` of the chain, the disk checked, the chain resumed, compared."""
    chain, switch = spec["chain"], spec.get("switch")
    finished, seen = False, None
    for j, (stage, argv, sub) in enumerate(chain[:index + 1]):
        h = launcher.start(_argv(argv, run_dir, setup_dir), os.path.join(logs, f"first.{stage}"))
        if j < index:
            if h.wait() != 0:
                return {"stage": stage, "error": h.stderr().strip()[-300:], "bit_identical": False}
            continue
        seen = watch(h, os.path.join(run_dir, sub), kill_at, delay)
        finished = seen is None
    stage, _, sub = chain[index]
    folder = os.path.join(run_dir, sub)
    temps_after_kill = temp_files(folder)
    loadable, at, frozen = disk_state(folder, switch)
    cut = sorted({t.split(".tmp")[0] for t in temps_after_kill})
    code, err = 0, ""
    for stage_j, argv, sub_j in chain:        # the resume: the chain again, finished stages skipped
        if len(chain) > 1 and os.path.isfile(os.path.join(run_dir, sub_j, "metrics.json")):
            continue
        code, err, _ = run_to_end(launcher, _argv(argv, run_dir, setup_dir) + ["--resume", "auto"],
                                  os.path.join(logs, f"resume.{stage_j}"))
        if code != 0:
            break
    temps_after_resume = sum(len(temp_files(os.path.join(run_dir, s))) for _, _, s in chain)
    bad = mismatches(final_weights(run_dir, chain), reference) if code == 0 else ["resume failed"]
    out = {"stage": stage, "compared_files": sorted(reference), "kill_after_iteration": kill_at,
           "delay_s": round(delay, 3), "iteration_logged_at_kill": seen, "finished_before_kill": finished,
           "checkpoint_loadable": loadable, "checkpoint_iteration": at,
           "temp_files_after_kill": len(temps_after_kill), "cut_writes": cut,
           "temp_files_after_resume": temps_after_resume, "resume_exit": code,
           "bit_identical": not bad, "mismatches": bad[:8],
           "metrics_identical": code == 0 and final_metrics(run_dir, chain) == ref_metrics,
           "stderr_tail": err.strip().splitlines()[-1:]}
    if switch is not None:
        out.update(switch=switch, checkpoint_after_switch=frozen)
    return out


def crash_script(launcher, name, spec, args):
    """The reference and args.trials trials of one script, in ARGS.OUT/NAME (made afresh)."""
    rng = random.Random(f"{args.seed}:{name}")   # the same kills whatever --jobs does
    base = os.path.join(args.out, name)
    shutil.rmtree(base, ignore_errors=True)
    logs = os.path.join(base, "logs")
    setup_dir = os.path.join(base, "setup")
    if "setup" in spec:
        code, err, _ = run_to_end(launcher, spec["setup"] + ["--output-dir", setup_dir], os.path.join(logs, "setup"))
        if code != 0:
            raise SystemExit(f"error: the set-up run of {name} failed: {err.strip()[-300:]}")
    ref_dir = os.path.join(base, "reference")
    stages = reference_run(launcher, spec, ref_dir, setup_dir, logs)
    reference = final_weights(ref_dir, spec["chain"])
    ref_metrics = final_metrics(ref_dir, spec["chain"])
    trials = []
    for i in range(args.trials):
        index, kill_at, side = kill_plan(spec, i, args.iters, rng)
        stage = spec["chain"][index][0]
        delay = rng.uniform(0, stages[stage]["step_s"])
        t = trial(launcher, spec, os.path.join(base, f"trial{i}"), setup_dir, os.path.join(logs, f"trial{i}"),
                  index, kill_at, delay, reference, ref_metrics)
        if side:
            t["planned"] = side
        trials.append(t)
        if not args.keep_runs:
            shutil.rmtree(os.path.join(base, f"trial{i}"), ignore_errors=True)
    if not args.keep_runs:
        shutil.rmtree(ref_dir, ignore_errors=True)
        shutil.rmtree(setup_dir, ignore_errors=True)
    return {"stages": stages, "reference_s": round(sum(s["seconds"] for s in stages.values()), 1),
            "chain": [stage for stage, _, _ in spec["chain"]], "trials": trials}


# The longest chains first, so that --jobs N keeps every worker busy to the end.
COST_ORDER = ("train_umadapt.py", "train_tasks.py", "train_supervised.py", "train_transfer.py",
              "train_dada.py", "train_headfreeze.py", "train_semimtl.py")


def submit_crash_trials(pool, launcher, args):
    specs = scripts(args.iters)
    order = sorted(args.scripts, key=COST_ORDER.index)
    futures = {name: pool.submit(crash_script, launcher, name, specs[name], args) for name in order}
    return lambda: {name: futures[name].result() for name in args.scripts}


# ----------------------------------------------------------------------------- bad inputs
def probes(out):
    """(what, argv, text the error line must hold): each must exit 2 with one `error:` line."""
    bad_file = os.path.join(out, "not_a_checkpoint.pth")
    with open(bad_file, "w") as f:
        f.write("hello")
    a_file = os.path.join(out, "a_file")
    open(a_file, "w").close()
    empty = os.path.join(out, "an_empty_folder")
    os.makedirs(empty, exist_ok=True)
    tasks = ["train_tasks.py", *TINY, "--iters", "1"]
    sup = ["tools/train_supervised.py", *TINY, "--iters", "1"]
    dada = ["train_dada.py", *TINY, "--iters", "1"]
    semi = ["train_semimtl.py", *TINY, "--iters", "1"]
    um = ["train_umadapt.py", *TINY, "--iters", "1"]
    hf = ["train_headfreeze.py", *TINY, "--iters", "4"]
    return [
        ("--iters 0", tasks + ["--iters", "0"], "--iters must be positive"),
        ("--workers -1", tasks + ["--workers", "-1"], "--workers must be 0 or more"),
        ("--lr -1", tasks + ["--lr", "-1"], "--lr must be positive"),
        ("--proc-length 0", tasks + ["--proc-length", "0"], "--proc-length must be positive"),
        ("unknown dataset", tasks + ["--src", "nosuch"], "unknown dataset 'nosuch'"),
        ("real data without --data-root", tasks + ["--src", "carla", "--tgt", "cityscapes"], "pass --data-root"),
        ("missing --resume file", tasks + ["--resume", os.path.join(out, "none.pth")], "checkpoint not found"),
        ("--resume of a foreign file", tasks + ["--resume", bad_file], "cannot read checkpoint"),
        ("bad --pretrained file", tasks + ["--pretrained", bad_file], "cannot read it as a tensor checkpoint"),
        ("--sync-bn on the CPU", tasks + ["--sync-bn"], "--sync-bn needs CUDA"),
        ("--output-dir is a file", tasks + ["--output-dir", a_file], "is a file, not a folder"),
        ("supervised: --batch-size above the split", sup + ["--batch-size", "16"], "smaller than one global batch"),
        ("transfer: stage 2 without stage 1", ["train_transfer.py", "--stage1", os.path.join(out, "none"),
                                               "--device", "cpu"], "no stage-1 checkpoint"),
        ("transfer: --stage1 a foreign file", ["train_transfer.py", "--stage1", bad_file, "--device", "cpu"],
         "cannot read checkpoint"),
        ("dada: --dada-fusion without --depth-adapt", dada + ["--setup", "s7", "--no-depth-adapt"],
         "--dada-fusion fuses surprisal and depth"),
        ("dada: --source-fraction 0", dada + ["--source-fraction", "0"], "--source-fraction must lie in (0, 1]"),
        ("dada: --depth-target-scale 0", dada + ["--depth-target-scale", "0"], "--depth-target-scale must be positive"),
        ("semimtl: --batch-size 1", semi + ["--batch-size", "1"], "--batch-size must be at least 2"),
        ("semimtl: --datasets without tasks", semi + ["--datasets", "proc-a", "proc-b:depth"],
         "expected NAME[@SPLIT]:TASKS"),
        ("semimtl: --stl-run without metrics.json", semi + ["--stl-run", empty], "no metrics.json"),
        ("umadapt: --transfer T=T", um + ["--transfer", "semantic=semantic"], "expected T=A[,B]"),
        ("umadapt: --stage ccr before base", um + ["--stage", "ccr"], "run --stage base first"),
        ("umadapt: --g-steps 0", um + ["--g-steps", "0"], "--g-steps must be positive"),
        ("headfreeze: --freeze-at past --iters", hf + ["--freeze-at", "4"], "--freeze-at must lie in [1, --iters)"),
        ("headfreeze: --freeze-at 0", hf + ["--freeze-at", "0"], "--freeze-at 0 would freeze the head"),
        ("headfreeze: --joint-bn without a target batch", hf + ["--variant", "baseline", "--joint-bn"],
         "--joint-bn has no effect with --variant baseline"),
        ("headfreeze: --keypoint-depth without keypoints", hf + ["--keypoint-depth"],
         "--keypoint-depth needs --anchor keypoints"),
        ("headfreeze: --anchor keypoints on procedural data", hf + ["--anchor", "keypoints"],
         "reads keypoints/ of the folder layout"),
    ]


def probe(launcher, k, what, argv, expect, out):
    folder = os.path.join(out, f"probe_run{k}")
    shutil.rmtree(folder, ignore_errors=True)
    extra = [] if "--output-dir" in argv else ["--output-dir", folder]
    code, err, _ = run_to_end(launcher, argv + extra, os.path.join(out, "probe_logs", str(k)), timeout=600)
    lines = err.strip().splitlines()   # an expected layout may follow the error line
    ok = (code == 2 and bool(lines) and lines[0].startswith("error:") and expect in err
          and "Traceback" not in err and not os.path.exists(folder))
    return {"input": what, "exit": code, "error": lines[0] if lines else "", "ok": ok,
            "folder_written": os.path.exists(folder)}


def submit_probes(pool, launcher, args):
    futures = [pool.submit(probe, launcher, k, *p, args.out) for k, p in enumerate(probes(args.out))]
    return lambda: [f.result() for f in futures]


# ----------------------------------------------------------------------------- report
def _count(values):
    return ", ".join(f"{k} {v}" for k, v in values.items())


def markdown(result, iters=None):
    out = []
    for name, r in result.get("crash", {}).items():
        t = r["trials"]
        killed = [x for x in t if not x.get("finished_before_kill") and "error" not in x]
        cut = [x for x in killed if x["cut_writes"]]
        files = {}
        for x in cut:
            for f in x["cut_writes"]:
                files[f] = files.get(f, 0) + 1
        line = (f"- {name}: {sum(x['bit_identical'] for x in t)} of {len(t)} kill -9 trials resumed "
                f"bit-identical (metrics.json identical: {sum(bool(x.get('metrics_identical')) for x in t)}); "
                f"{len(killed)} killed mid-run, {len(cut)} of them mid-write "
                f"({_count(files) if files else 'no file'} cut short)")
        if len(r["chain"]) > 1:
            stages = {s: sum(x["stage"] == s for x in killed) for s in r["chain"]}
            line += f"; kills by stage: {_count(stages)}"
        if any("switch" in x for x in t):
            after = sum(bool(x.get("checkpoint_after_switch")) for x in killed)
            line += (f"; switch after iteration {t[0]['switch']}: the resumes started from the checkpoints "
                     f"of iterations {[x['checkpoint_iteration'] for x in killed]}, {after} written after "
                     f"the switch, {len(killed) - after} before it")
        finished = len(t) - len(killed)
        if finished:
            line += f"; {finished} ended before the kill"
        line += (f"; every checkpoint on disk loadable after the kills: "
                 f"{all(x.get('checkpoint_loadable') is not False for x in t)}; temporary files after "
                 f"the kills {sum(x.get('temp_files_after_kill', 0) for x in t)}, after the resumed runs "
                 f"{sum(x.get('temp_files_after_resume', 0) for x in t)}.")
        out.append(line)
    if "probes" in result:
        rows = result["probes"]
        out.append(f"- bad inputs: {sum(r['ok'] for r in rows)} of {len(rows)} stop with exit code 2 and "
                   "an `error:` line (no traceback), before any run folder is written.")
        out += ["", "| input | exit | error line |", "|---|---|---|"]
        out += [f"| {r['input']} | {r['exit']} | {r['error'].replace('|', '/')[:140]} |" for r in rows]
    return "\n".join(out)


def main(args):
    if args.iters < 2:
        raise SystemExit("error: --iters must be at least 2 (a kill lands after some iteration k < --iters)")
    os.makedirs(args.out, exist_ok=True)
    t = time.perf_counter()
    launcher = Launcher(args.launch)
    result = {"iters": args.iters, "launch": args.launch}
    with concurrent.futures.ThreadPoolExecutor(max(1, args.jobs)) as pool:   # one queue for both
        pending = {}
        if "crash" in args.only:
            pending["crash"] = submit_crash_trials(pool, launcher, args)
        if "probes" in args.only:
            pending["probes"] = submit_probes(pool, launcher, args)
        result.update({key: collect() for key, collect in pending.items()})
    result["seconds"] = round(time.perf_counter() - t, 1)
    engine.write_json(result, os.path.join(args.out, "reliability.json"))
    text = markdown(result)
    with open(os.path.join(args.out, "reliability.md"), "w") as f:
        f.write(text + "\n")
    print(text)
    return result


if __name__ == "__main__":
    main(get_args_parser().parse_args())
