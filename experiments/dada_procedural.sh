#!/usr/bin/env bash
# DADA's setups on the procedural benchmark (proc-a: semantics + depth, proc-b: images only),
# CPU preset: S1 (source only), S1 with the target through BatchNorm only (the control), S2
# (AdvEnt), S4 (depth adaptation), S7 (DADA). Two lanes, one thread each.
#
#   bash experiments/dada_procedural.sh            # seeds 0 1 2
#   SEEDS="0" bash experiments/dada_procedural.sh  # one seed
#   bash experiments/dada_procedural.sh table      # the README table from finished runs
# The table adds the negative transfer rate of S2 and S7 against S1 (evaluate.py --reference).
set -euo pipefail
RUNS=${RUNS:-runs/dada_proc}
SEEDS=${SEEDS:-0 1 2}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
declare -A FLAGS=([s1]="--setup s1" [s1bn]="--setup s1 --target-through-bn" [s2]="--setup s2"
                  [s4]="--setup s4" [s7]="--setup s7")

lane() {  # lane ROW...: every seed of these rows, in order
  for seed in $SEEDS; do
    for row in "$@"; do
      local out=$RUNS/${row}_seed$seed
      [ -f "$out/metrics.json" ] || python train_dada.py ${FLAGS[$row]} --seed "$seed" \
          --output-dir "$out" --resume auto
    done
  done
}
ntr() {  # negative transfer rate of S2 and S7 against S1 of the same seed (evaluate.py --reference)
  for seed in $SEEDS; do
    for row in s2 s7; do
      local out=$RUNS/ntr_${row}_seed$seed
      [ -f "$out/metrics.json" ] || [ ! -f "$RUNS/${row}_seed$seed/model.pth" ] || python evaluate.py \
          --checkpoint "$RUNS/${row}_seed$seed/model.pth" --reference "$RUNS/s1_seed$seed/model.pth" \
          --dataset proc-b --output-dir "$out" > /dev/null
    done
  done
}
table() {  # mean and sample std over seeds of target (proc-b val) mIoU and accuracy
  python - "$RUNS" <<'PY'
import glob, json, statistics, sys
runs = sys.argv[1]
names = {"s1": "S1 source only", "s1bn": "S1 + target through BN (control)", "s2": "S2 AdvEnt",
         "s4": "S4 depth adaptation", "s7": "S7 DADA"}
def cell(values):
    return f"{statistics.mean(values):.2f} ± " + (f"{statistics.stdev(values):.2f}" if len(values) > 1 else "-")
print("| setup | seeds | mIoU | acc | negative transfer vs S1 (%) |\n|---|---:|---:|---:|---:|")
for row, label in names.items():
    ms = [json.load(open(p))["target"] for p in sorted(glob.glob(f"{runs}/{row}_seed*/metrics.json"))]
    if not ms:
        continue
    ntr = [json.load(open(p))["negative_transfer_rate"]
           for p in sorted(glob.glob(f"{runs}/ntr_{row}_seed*/metrics.json"))]
    print(f"| {label} | {len(ms)} | {cell([m['mIoU'] for m in ms])} | {cell([m['acc'] for m in ms])} | "
          f"{cell(ntr) if ntr else '-'} |")
PY
}

if [ "${1:-}" = table ]; then ntr; table; exit; fi
mkdir -p "$RUNS"
lane s1 s2 s7 > "$RUNS/lane1.log" 2>&1 &
lane s1bn s4 > "$RUNS/lane2.log" 2>&1 &
wait
ntr
table
