"""Every named command of every experiments/*.sh, end to end, on tiny trees in the real layouts.

SMOKE=1 adds --smoke to each run (lib/args.py: ResNet-18, sizes / 16, 2 iterations, one
evaluation batch) and changes nothing else of the paper preset: class maps, per-domain
resizes, scoring at the labels' own resolution, two targets, selection and seeds go through
as on real data. Each command must train, score and write metrics.json; then the contract:
`evaluate.py --checkpoint` of each run's model, on each dataset the run scored, gives the
run's own numbers (same resolution, class map and samples).

The commands run through tests/forkserver.py: torch is imported once, each command is a fork.
"""
import json
import os
import subprocess
import sys

import pytest
import torch

from tests import trees
from tests.forkserver import ForkServer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAPERS = ("atdt", "dada", "semimtl", "umadapt", "headfreeze")


def commands(paper):
    """The named commands of experiments/PAPER.sh, as its `list` prints them (but summary)."""
    out = subprocess.run(["bash", f"experiments/{paper}.sh", "list"], cwd=ROOT, capture_output=True,
                         text=True, check=True).stdout
    return [line.split(":")[0] for line in out.splitlines() if line and not line.startswith("summary:")]


@pytest.fixture(scope="module")
def sweep(module_tmp):
    """Every command of every script run once (SEED=0, then table1 of DADA again at SEED=1)."""
    base = module_tmp("sweep")
    roots = trees.write_all(str(base / "data"))
    edges = write_dexined_like(roots["data"], str(base / "dexined"))
    server = ForkServer(str(base / "fork")).start()
    env = server.env({**os.environ, "DATA": roots["data"], "SMOKE": "1", "OMP_NUM_THREADS": "1",
                      "PBRS": roots["pbrs"], "GTA5D": roots["gta5d"], "INDOOR_SRC": roots["indoor_src"],
                      "SFSYN": roots["sfsyn"], "SFSYN_FRONT": roots["sfsyn_front"],
                      "FACEWH": roots["facewh"], "K": str(trees.FACE_KEYPOINTS), "EDGES": edges})
    results = {}
    try:
        for paper in PAPERS:
            runs = str(base / "runs" / paper)
            for cmd in commands(paper) + ["summary"]:
                p = subprocess.run(["bash", f"experiments/{paper}.sh", cmd], cwd=ROOT, capture_output=True,
                                   text=True, env={**env, "RUNS": runs})
                results[paper, cmd] = p
        p = subprocess.run(["bash", "experiments/dada.sh", "table1"], cwd=ROOT, capture_output=True, text=True,
                           env={**env, "RUNS": str(base / "runs" / "dada"), "SEED": "1"})
        results["dada", "table1 SEED=1"] = p
        yield {"base": base, "roots": roots, "results": results, "env": env}
    finally:
        server.stop()


def write_dexined_like(data, out):
    """External edge maps as DexiNed writes them (dark edges on white, named by the record) for
    `atdt.sh edges`: EDGES/<dataset>/<split>/<relative stem>.png."""
    from PIL import Image
    from lib.data import build_dataset, get_entry
    for name in ("carla", "cityscapes"):
        for split in get_entry(name).splits:
            for rec in build_dataset(name, split, (16, 16), data, labels=()).records:
                path = os.path.join(out, name, *rec["name"].split("/")[1:]) + ".png"
                os.makedirs(os.path.dirname(path), exist_ok=True)
                w, h = Image.open(rec["image"]).size
                Image.new("L", (w, h), 200).save(path)
    return out


@pytest.mark.parametrize("paper", PAPERS)
def test_every_command_runs_to_its_scores(sweep, paper):
    cmds = commands(paper)
    assert cmds, paper
    for cmd in cmds + ["summary"]:
        p = sweep["results"][paper, cmd]
        assert p.returncode == 0, f"{paper}.sh {cmd}:\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}"
    runs = runs_of(sweep["base"] / "runs" / paper)
    assert runs, f"{paper}.sh wrote no finished run"
    seeds = {"dada": ("_seed0", "_seed1")}.get(paper, ("_seed0",))   # dada: + table1 at SEED=1
    for folder in runs:                               # the seed is in every run folder's name
        assert any(part.endswith(seeds) for part in folder.parts), folder


def test_a_second_seed_makes_second_runs(sweep):
    p = sweep["results"]["dada", "table1 SEED=1"]
    assert p.returncode == 0, p.stderr[-3000:]
    seed1 = [f.name for f in runs_of(sweep["base"] / "runs" / "dada") if f.name.endswith("_seed1")]
    assert sorted(seed1) == ["t1_advent_seed1", "t1_dada_seed1", "t1_s1_seed1"]
    out = subprocess.run([sys.executable, "tools/summarize.py", str(sweep["base"] / "runs" / "dada"),
                          "--keys", "target.mIoU"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    row = next(line for line in out.splitlines() if "t1_dada" in line)
    assert "_seed" not in row and "±" in row, row      # seeds 0 and 1 pooled into one row


def runs_of(folder):
    """Training run folders (metrics.json and a model) below `folder`; evaluate.py's skipped."""
    found = []
    for dirpath, _, files in os.walk(folder):
        if "metrics.json" in files and ({"model.pth", "checkpoint.pth"} & set(files)):
            found.append(type(folder)(dirpath))
    return sorted(found)


# ----------------------------------------------------------------------------- the contract
def scored(run):
    """[(model file, --model, record, the run's own scores)] of every dataset the run scored with
    an inference model, read from its metrics.json as each script writes it."""
    metrics = json.load(open(run / "metrics.json"))
    model = run / "model.pth" if (run / "model.pth").is_file() else run / "checkpoint.pth"
    ckpt = torch.load(model, map_location="cpu", weights_only=True)
    records = ckpt["args"].get("scoring") or []
    script, out = ckpt["script"], []

    def add(which, rec, scores):
        if scores:
            out.append((model, which, rec, scores))
    for rec in records:
        role, name = rec["role"], rec["dataset"]
        dom = "source" if role == "--src" else "target"
        if script == "train_tasks.py":
            add("n1", rec, metrics["n1"].get(dom))
            if dom == "source":
                add("n2", rec, metrics["n2"]["source"])
        elif script == "train_transfer.py":
            if dom == "target" and metrics["target"]:
                add(None, rec, metrics["target"].get("atdt") or metrics["target"].get("supervised_g"))
        elif script == "train_semimtl.py":
            add(None, rec, metrics["scores"].get(name))
        elif script == "train_umadapt.py":
            if ckpt.get("model_specs"):
                add(None, rec, metrics.get("source") if dom == "source"
                    else (metrics.get("target") or {}).get(name))
        else:   # train_dada.py, train_headfreeze.py, train_supervised.py
            add(None, rec, metrics.get(dom))
    return out


def test_evaluate_reproduces_every_runs_scores(sweep):
    server_env = sweep["env"]
    checked = 0
    for paper in PAPERS:
        for run in runs_of(sweep["base"] / "runs" / paper):
            for model, which, rec, theirs in scored(run):
                out = run / f"eval-check-{rec['dataset']}-{rec['role'].strip('-')}"
                argv = ["evaluate.py", "--checkpoint", str(model), "--dataset", rec["dataset"],
                        "--data-root", sweep["roots"]["data"], "--split", rec["split"], "--device", "cpu",
                        "--batch-size", str(rec["batch_size"]), "--output-dir", str(out)]
                argv += ["--model", which] if which else []
                argv += ["--src-root", rec["root"]] if rec["root"] else []
                argv += ["--max-batches", str(rec["max_batches"])] if rec["max_batches"] else []
                p = subprocess.run([server_env["PYTHON"], *argv], cwd=ROOT, env=server_env,
                                   capture_output=True, text=True)
                assert p.returncode == 0, f"{run}: {' '.join(argv)}\n{p.stderr[-2000:]}"
                ours = json.load(open(out / "metrics.json"))
                keys = [k for k, v in theirs.items() if isinstance(v, float) and k in ours]
                assert keys, (run, rec, theirs, ours)
                for k in keys:
                    assert ours[k] == pytest.approx(theirs[k], rel=1e-6, abs=1e-9), (run, rec["dataset"], k)
                checked += 1
    assert checked >= 50, checked
