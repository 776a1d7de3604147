"""Crash-and-resume trials and bad-input probes: the figures of the README's "Reliability".

Each trial starts a small training run, kills it with SIGKILL at a random moment (often in
the middle of a checkpoint write: the runs save every step), checks that what is on disk is
a loadable checkpoint and that no temporary file is left after the next write, resumes it
with `--resume auto`, and compares the final weights with an uninterrupted run, bit for bit.
The probes run the scripts with bad flags and files and check that each stops with exit
code 2 and one `error:` line, before any run folder is written.

    python tools/reliability_probe.py --trials 5 --out runs/reliability
    python tools/reliability_probe.py --trials 1 --only probes      # the bad inputs only
"""
import argparse
import os
import random
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
SCRIPTS = {  # name: argv of a small run that checkpoints every step
    "train_tasks.py": ["train_tasks.py", *TINY, "--decoder-width", "16", "--iters", "12", "--save-every", "1"],
    "train_supervised.py": ["tools/train_supervised.py", *TINY, "--iters", "12", "--save-every", "1"],
}


def get_args_parser():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=5, help="kill-and-resume trials per script")
    parser.add_argument("--scripts", nargs="+", default=list(SCRIPTS), choices=list(SCRIPTS))
    parser.add_argument("--only", nargs="+", default=["crash", "probes"], choices=["crash", "probes"])
    parser.add_argument("--seed", type=int, default=0, help="seed of the kill times")
    parser.add_argument("--out", default=os.path.join("runs", "reliability"), help="results folder")
    return parser


def run(argv, out_dir, extra=(), timeout=600):
    """Run a script to its end in a fresh process; returns (exit code, stderr, seconds)."""
    t = time.perf_counter()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    p = subprocess.run([sys.executable, *argv, "--output-dir", out_dir, *extra], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=timeout)
    return p.returncode, p.stderr, time.perf_counter() - t


def weights(out_dir):
    return torch.load(os.path.join(out_dir, "checkpoint.pth"), map_location="cpu", weights_only=True)["models"]


def trial(argv, out_dir, kill_after, reference):
    """Kill one run after `kill_after` seconds, check the disk, resume it, compare."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    p = subprocess.Popen([sys.executable, *argv, "--output-dir", out_dir], cwd=ROOT, env=env,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(kill_after)
    finished = p.poll() is not None
    p.send_signal(signal.SIGKILL)
    p.wait()
    ckpt = os.path.join(out_dir, "checkpoint.pth")
    loadable, at = None, None
    if os.path.isfile(ckpt):
        loadable = True
        try:
            at = engine.load_checkpoint(ckpt)["iteration"]
        except engine.UserError:
            loadable = False
    temps_after_kill = sum(".tmp" in f for f in os.listdir(out_dir)) if os.path.isdir(out_dir) else 0
    code, err, _ = run(argv, out_dir, ["--resume", "auto"])
    temps_after_resume = sum(".tmp" in f for f in os.listdir(out_dir))
    final = weights(out_dir) if code == 0 else {}
    same = code == 0 and all(torch.equal(final[n][k], reference[n][k]) for n in reference for k in reference[n])
    return {"kill_after_s": round(kill_after, 2), "finished_before_kill": finished,
            "checkpoint_loadable": loadable, "checkpoint_iteration": at,
            "temp_files_after_kill": temps_after_kill, "temp_files_after_resume": temps_after_resume,
            "resume_exit": code, "bit_identical": same, "stderr_tail": err.strip().splitlines()[-1:]}


def crash_trials(args):
    rng = random.Random(args.seed)
    results = {}
    for name in args.scripts:
        argv = SCRIPTS[name]
        ref_dir = os.path.join(args.out, name, "reference")
        code, err, seconds = run(argv, ref_dir)
        if code != 0:
            raise SystemExit(f"error: the reference run of {name} failed: {err.strip()[-300:]}")
        reference = weights(ref_dir)
        trials = [trial(argv, os.path.join(args.out, name, f"trial{i}"), rng.uniform(0.3, 0.9) * seconds,
                        reference) for i in range(args.trials)]
        results[name] = {"reference_s": round(seconds, 1), "trials": trials}
    return results


def probes(out):
    """(what, argv, text the error line must hold): each must exit 2 with one `error:` line."""
    bad_file = os.path.join(out, "not_a_checkpoint.pth")
    with open(bad_file, "w") as f:
        f.write("hello")
    a_file = os.path.join(out, "a_file")
    open(a_file, "w").close()
    tasks = ["train_tasks.py", *TINY, "--iters", "1"]
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
        ("stage 2 without stage 1", ["train_transfer.py", "--stage1", os.path.join(out, "none"), "--device", "cpu"],
         "no stage-1 checkpoint"),
    ]


def run_probes(args):
    os.makedirs(args.out, exist_ok=True)
    rows = []
    for what, argv, expect in probes(args.out):
        folder = os.path.join(args.out, "probe_run")
        extra = [] if "--output-dir" in argv else ["--output-dir", folder]
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        p = subprocess.run([sys.executable, *argv, *extra], cwd=ROOT, env=env, capture_output=True,
                           text=True, timeout=300)
        lines = p.stderr.strip().splitlines()   # an expected layout may follow the error line
        ok = (p.returncode == 2 and bool(lines) and lines[0].startswith("error:")
              and expect in p.stderr and "Traceback" not in p.stderr and not os.path.exists(folder))
        rows.append({"input": what, "exit": p.returncode, "error": lines[0] if lines else "", "ok": ok})
    return rows


def markdown(result):
    out = []
    for name, r in result.get("crash", {}).items():
        t = r["trials"]
        out.append(f"- {name}: {sum(x['bit_identical'] for x in t)} of {len(t)} kill -9 trials resumed "
                   f"bit-identical; checkpoint loadable after every kill: "
                   f"{all(x['checkpoint_loadable'] is not False for x in t)}; temporary files left "
                   f"after the kill {sum(x['temp_files_after_kill'] for x in t)}, after the resumed "
                   f"run {sum(x['temp_files_after_resume'] for x in t)}.")
    if "probes" in result:
        rows = result["probes"]
        out.append(f"- bad inputs: {sum(r['ok'] for r in rows)} of {len(rows)} stop with exit code 2 and "
                   "an `error:` line (no traceback), before any run folder is written.")
        out += ["", "| input | exit | error line |", "|---|---|---|"]
        out += [f"| {r['input']} | {r['exit']} | {r['error'].replace('|', '/')[:140]} |" for r in rows]
    return "\n".join(out)


def main(args):
    os.makedirs(args.out, exist_ok=True)
    result = {}
    if "crash" in args.only:
        result["crash"] = crash_trials(args)
    if "probes" in args.only:
        result["probes"] = run_probes(args)
    engine.write_json(result, os.path.join(args.out, "reliability.json"))
    text = markdown(result)
    with open(os.path.join(args.out, "reliability.md"), "w") as f:
        f.write(text + "\n")
    print(text)
    return result


if __name__ == "__main__":
    main(get_args_parser().parse_args())
