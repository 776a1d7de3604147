#!/usr/bin/env bash
# UM-Adapt on the procedural benchmark (proc-a: semantics, depth, normals; proc-b: images
# only), CPU preset, one lane, one thread: per seed one run folder whose base model is
# trained once and shared by every adaptation variant. Rows: the multi-task baseline (base),
# the baseline with the target through BatchNorm only (base-bn, the control), UM-Adapt-B(CCR),
# noAdv-1, noAdv and Adv, all scored on proc-b val for the three tasks; and the adaptation's
# own BatchNorm control (stats: Mt's res5 sees the target in train mode, no loss), which
# separates what every variant gains from res5's running statistics alone.
#
#   bash experiments/umadapt_procedural.sh            # seeds 0 1 2 (~15 min a seed on one core)
#   SEEDS="0" bash experiments/umadapt_procedural.sh  # one seed
#   bash experiments/umadapt_procedural.sh table      # the README table from finished runs
#   bash experiments/umadapt_procedural.sh diag       # energies, N's accuracy, B's critic per seed
set -euo pipefail
RUNS=${RUNS:-runs/umadapt_proc}
SEEDS=${SEEDS:-0 1 2}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}

stage() {  # stage RUN_DIR FOLDER FLAGS...: one stage, skipped when its metrics.json exists
  local run=$1 folder=$2; shift 2
  [ -f "$run/$folder/metrics.json" ] || python train_umadapt.py "$@" --output-dir "$run" --resume auto
}
seed_runs() {
  local seed=$1 run=$RUNS/seed$1
  # The table's stage lengths, written out (today the cpu preset's own) so that a change to
  # the no-argument run's preset does not move the table.
  local common=(--seed "$seed" --transfer-iters 500 --base-iters 200 --ccr-iters 150 --adapt-iters 100)
  stage "$run" transfer --stage transfer "${common[@]}"
  stage "$run" base --stage base "${common[@]}"
  stage "$run" base-bn --stage base --target-through-bn "${common[@]}"
  stage "$run" ccr --stage ccr "${common[@]}"
  for v in stats b noadv1 noadv adv; do
    stage "$run" adapt-$v --stage adapt --variant $v "${common[@]}"
  done
}
table() {  # mean and sample std over seeds, proc-b val
  python - "$RUNS" <<'PY'
import glob, json, statistics, sys
runs = sys.argv[1]
rows = {"base": "Multi-task baseline", "base-bn": "baseline + target through BN (control)",
        "adapt-stats": "Mt res5 through BN only (control)", "adapt-b": "UM-Adapt-B(CCR)", "adapt-noadv1": "UM-Adapt-(noAdv.)-1",
        "adapt-noadv": "UM-Adapt-(noAdv.)", "adapt-adv": "UM-Adapt-(Adv.)"}
cols = [("mIoU", "mIoU"), ("mean_acc", "mean acc"), ("acc", "pix acc"), ("abs_rel", "rel"),
        ("rmse", "rms"), ("a1", "δ<1.25"), ("mean", "normal mean°"), ("median", "median°"),
        ("pct_11_25", "<11.25°"), ("pct_30", "<30°")]
def cell(values, key):
    digits = 3 if key == "abs_rel" else 2
    sd = f"{statistics.stdev(values):.{digits}f}" if len(values) > 1 else "-"
    return f"{statistics.mean(values):.{digits}f} ± {sd}"
print("| row | seeds | " + " | ".join(c for _, c in cols) + " |")
print("|---|---:|" + "---:|" * len(cols))
for folder, label in rows.items():
    ms = [json.load(open(p))["target"]["proc-b"] for p in sorted(glob.glob(f"{runs}/seed*/{folder}/metrics.json"))]
    if ms:
        print(f"| {label} | {len(ms)} | " + " | ".join(cell([m[k] for m in ms], k) for k, _ in cols) + " |")
PY
}

diag() {  # the mechanisms' diagnostics per seed: Adv's energies (first / last logged step), N on
  # source val before and after Adv, and UM-Adapt-B's critic (its Wasserstein estimate)
  python - "$RUNS" <<'PY'
import glob, json, os, statistics, sys
runs = sys.argv[1]
def logs(folder):
    return [json.loads(l) for l in open(os.path.join(folder, "log.jsonl")) if '"iter"' in l]
def mean(rows, key):
    v = [r[key] for r in rows if isinstance(r.get(key), (int, float))]
    return statistics.mean(v) if v else float("nan")
for seed in sorted(glob.glob(f"{runs}/seed*")):
    adv, b = os.path.join(seed, "adapt-adv"), os.path.join(seed, "adapt-b")
    if os.path.isfile(os.path.join(adv, "metrics.json")):
        steps = [r for r in logs(adv) if "e_src_semantic" in r]
        for part, rows in ((f"step {r['iter']}", [r]) for r in steps[:1] + steps[-1:]):
            print(f"{os.path.basename(seed)} adv {part}: " + " ".join(
                f"{k}={mean(rows, k):.3f}" for k in ("e_src_semantic", "e_tgt_semantic", "floor_semantic",
                                                     "e_src_depth", "e_tgt_depth", "g_semantic", "g_depth")))
        before = json.load(open(os.path.join(seed, "transfer", "metrics.json")))["source"]
        after = json.load(open(os.path.join(adv, "metrics.json"))).get("transfer_source", {})
        # after Adv N's weights and its BatchNorm running statistics (updated on target maps) have moved
        print(f"{os.path.basename(seed)} N on source val GT: N(->seg) mIoU {before['mIoU']:.2f} -> "
              f"{after.get('mIoU', float('nan')):.2f}, N(->depth) abs rel {before['abs_rel']:.3f} -> "
              f"{after.get('abs_rel', float('nan')):.3f}")
    if os.path.isfile(os.path.join(b, "metrics.json")):
        rows = [r for r in logs(b) if "d" in r]
        print(f"{os.path.basename(seed)} b critic loss E[D(fake)] - E[D(real)] at steps "
              + ", ".join(f"{r['iter']}: {r['d']:.3f}" for r in rows) + " (0: cannot tell real from fake)")
PY
}

if [ "${1:-}" = table ]; then table; exit; fi
if [ "${1:-}" = diag ]; then diag; exit; fi
mkdir -p "$RUNS"
for seed in $SEEDS; do
  seed_runs "$seed"
done >> "$RUNS/lane.log" 2>&1
table
