#!/usr/bin/env bash
# HeadFreeze's rows of Tables 1-2 on the procedural benchmark: main task surface normals, anchor
# semantic segmentation, source proc-a (normals + semantics), target proc-b (semantics only; its
# normals are read by the oracle alone). CPU preset (ResNet-18 FPN from scratch, 64x128, batch
# 4 + 4, Adam 1e-3, 250 steps, HeadFreeze's switch at 125), plus the BatchNorm control: the
# baseline with the target images passed through the network in train mode and no loss. One
# lane, one thread; each domain scored on 200 val images (--eval-batches 50).
#
#   bash experiments/headfreeze_procedural.sh            # seeds 0 1 2
#   SEEDS="0" bash experiments/headfreeze_procedural.sh  # one seed
#   bash experiments/headfreeze_procedural.sh table      # the README table from finished runs
#   ROWS="baseline headfreeze" bash ...                   # some rows only
set -euo pipefail
RUNS=${RUNS:-runs/headfreeze_proc}
SEEDS=${SEEDS:-0 1 2}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
ROWS=${ROWS:-baseline bn baseline+da mtl-src-anchor mtl-tgt-anchor mtl-both-anchor headfreeze oracle}
flags() {  # flags ROW: the train_headfreeze.py flags of a row
  case $1 in
    bn) echo "--variant baseline --target-through-bn" ;;
    *) echo "--variant $1" ;;
  esac
}

lane() {  # every row of every seed, in order, skipping finished runs
  for seed in $SEEDS; do
    for row in $ROWS; do
      local out=$RUNS/${row}_seed$seed
      [ -f "$out/metrics.json" ] || python train_headfreeze.py $(flags "$row") --seed "$seed" \
          --eval-batches 50 --workers 0 --output-dir "$out" --resume auto
    done
  done
}
table() {  # mean and sample std over seeds of the target (proc-b val) metrics
  python - "$RUNS" "$ROWS" <<'PY'
import glob, json, statistics, sys
runs, rows = sys.argv[1], sys.argv[2].split()
names = {"baseline": "Baseline", "bn": "Baseline + target through BN (control)",
         "baseline+da": "Baseline+DA (Tsai, output space)", "mtl-src-anchor": "MTL (+src anchor), eq. 4",
         "mtl-tgt-anchor": "MTL (+tgt anchor), eq. 5", "mtl-both-anchor": "MTL (+both anchor), eq. 6",
         "headfreeze": "HeadFreeze", "oracle": "Oracle"}
keys = [("pct_11_25", "< 11.25°"), ("pct_30", "< 30°"), ("rmse_deg", "RMSE"), ("mean", "Mean"),
        ("median", "Median"), ("mIoU", "anchor mIoU")]
def cell(values):
    return f"{statistics.mean(values):.2f} ± " + (f"{statistics.stdev(values):.2f}" if len(values) > 1 else "-")
print("| variant | seeds | " + " | ".join(k[1] for k in keys) + " |")
print("|---|---:|" + "---:|" * len(keys))
per_seed = {}
for row in rows:
    paths = sorted(glob.glob(f"{runs}/{row}_seed*/metrics.json"))
    ms = [json.load(open(p))["target"] for p in paths]
    if not ms:
        continue
    per_seed[row] = {p.split("_seed")[-1].split("/")[0]: m["mean"] for p, m in zip(paths, ms)}
    print(f"| {names[row]} | {len(ms)} | " + " | ".join(cell([m[k] for m in ms]) for k, _ in keys) + " |")
seeds = sorted({s for v in per_seed.values() for s in v})
print("\nMean angular error (degrees) on proc-b val per seed:\n")
print("| variant | " + " | ".join(f"seed {s}" for s in seeds) + " |\n|---|" + "---:|" * len(seeds))
for row, v in per_seed.items():
    print(f"| {names[row]} | " + " | ".join(f"{v[s]:.2f}" if s in v else "-" for s in seeds) + " |")
PY
}

if [ "${1:-}" = table ]; then table; exit; fi
mkdir -p "$RUNS"
lane > "$RUNS/lane.log" 2>&1
table
