#!/usr/bin/env bash
# SemiMTL and its baselines on the procedural benchmark: A = proc-a labelled for semantics
# only, B = proc-b labelled for depth only (train_semimtl.py's defaults), cpu preset. Rows:
# STL (one network per task, each on the dataset with its labels), STL with every dataset's
# images through both networks' BatchNorm (the control), JTL, SemiSD, SemiMTL M1 / M2 / M3.
# One lane, one thread; each run skipped when finished, resumed when stopped. ROWS=jtlpd adds
# JTL with a network step per dataset, as Algorithm 1 steps (the update-count control).
#
#   bash experiments/semimtl_procedural.sh            # seeds 0 1 2
#   ROWS=jtlpd bash experiments/semimtl_procedural.sh # the JTL control row
#   SEEDS="0" bash experiments/semimtl_procedural.sh  # one seed
#   bash experiments/semimtl_procedural.sh table      # the README table from finished runs
# Delta-M (eq. 10, mIoU and RMSE) of every row is against the STL run of the same seed.
set -euo pipefail
RUNS=${RUNS:-runs/semimtl_proc}
SEEDS=${SEEDS:-0 1 2}
ROWS=${ROWS:-stl stlbn jtl semisd m1 m2 m3}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
declare -A FLAGS=([stl]="--method stl" [stlbn]="--method stl --all-through-bn" [jtl]="--method jtl"
                  [jtlpd]="--method jtl --g-update per-dataset" [semisd]="--method semisd"
                  [m1]="--method semimtl --mode m1" [m2]="--method semimtl --mode m2"
                  [m3]="--method semimtl --mode m3")

lane() {  # every row of every seed, seed by seed
  for seed in $SEEDS; do
    for row in $ROWS; do
      local out=$RUNS/${row}_seed$seed
      [ -f "$out/metrics.json" ] || python train_semimtl.py ${FLAGS[$row]} --seed "$seed" \
          --output-dir "$out" --resume auto --log-every 50
    done
  done
}
table() {  # mean ± sample std over seeds; delta-M against the same seed's STL run
  python - "$RUNS" <<'PY'
import glob, json, os, re, statistics, sys
sys.path.insert(0, os.getcwd())
from train_semimtl import stl_delta_m
runs = sys.argv[1]
names = {"stl": "STL (seg on A, depth on B)", "stlbn": "STL + both datasets through BN (control)",
         "jtl": "JTL", "jtlpd": "JTL, a step per dataset", "semisd": "SemiSD",
         "m1": "SemiMTL M1", "m2": "SemiMTL M2 (default)", "m3": "SemiMTL M3"}
def load(path):
    return json.load(open(path))["scores"]
def cell(values, digits=2):
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    sd = f"{statistics.stdev(values):.{digits}f}" if len(values) > 1 else "-"
    return f"{statistics.mean(values):.{digits}f} ± {sd}"
stl = {re.search(r"seed(\d+)", p).group(1): load(p) for p in glob.glob(f"{runs}/stl_seed*/metrics.json")}
print("| method | seeds | mIoU A (labelled) | mIoU B | RMSE A (m) | RMSE B (m, labelled) "
      "| delta-M A (%) | delta-M B (%) |\n|---|---:|---:|---:|---:|---:|---:|---:|")
for row, label in names.items():
    paths = sorted(glob.glob(f"{runs}/{row}_seed*/metrics.json"))
    if not paths:
        continue
    s = [load(p) for p in paths]
    dm = [stl_delta_m(m, stl[seed]) if seed in stl else {}
          for m, seed in zip(s, (re.search(r"seed(\d+)", p).group(1) for p in paths))]
    print(f"| {label} | {len(s)} | {cell([m['proc-a']['mIoU'] for m in s])} | "
          f"{cell([m['proc-b']['mIoU'] for m in s])} | {cell([m['proc-a']['rmse'] for m in s], 3)} | "
          f"{cell([m['proc-b']['rmse'] for m in s], 3)} | {cell([d.get('proc-a') for d in dm])} | "
          f"{cell([d.get('proc-b') for d in dm])} |")
PY
}

if [ "${1:-}" = table ]; then table; exit; fi
mkdir -p "$RUNS"
lane > "$RUNS/lane.log" 2>&1
table
