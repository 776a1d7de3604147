#!/usr/bin/env bash
# DADA's setups on the procedural benchmark (proc-a: semantics + depth, proc-b: images only),
# CPU preset at 600 steps (the no-argument run takes 300): S1 (source only), S1 with the target
# through BatchNorm only (the control), S1 with feature fusion (depth supervision, no
# adaptation: the control for S7's depth), S2 (AdvEnt), S3 (AdvEnt + feature fusion), S4 (depth
# adaptation), S7 (DADA). Two lanes, one thread each.
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
                  [s4]="--setup s4" [s7]="--setup s7" [s3]="--setup s3" [s1ff]="--setup s1 --feat-fusion")
STEPS="--iters 600 --save-every 600"   # the tables' length; the cpu preset's no-argument run is 300

lane() {  # lane ROW...: every seed of these rows, in order
  for seed in $SEEDS; do
    for row in "$@"; do
      local out=$RUNS/${row}_seed$seed
      [ -f "$out/metrics.json" ] || python train_dada.py ${FLAGS[$row]} $STEPS --seed "$seed" \
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
  python - "$RUNS" "$SEEDS" <<'PY'
import glob, json, os, statistics, sys
runs, seeds = sys.argv[1], sys.argv[2].split()
names = {"s1": "S1 source only", "s1bn": "S1 + target through BN (control)",
         "s1ff": "S1 + feature fusion (depth supervision, control)", "s2": "S2 AdvEnt",
         "s3": "S3 AdvEnt + feature fusion", "s4": "S4 depth adaptation", "s7": "S7 DADA"}
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
print("\nPer seed, target mIoU:\n\n| setup | " + " | ".join(f"seed {s}" for s in seeds) + " |\n|---|"
      + "---:|" * len(seeds))
for row, label in names.items():
    print(f"| {label} | " + " | ".join(f"{json.load(open(p))['target']['mIoU']:.2f}" if os.path.exists(p)
                                       else "-" for p in (f"{runs}/{row}_seed{s}/metrics.json" for s in seeds)) + " |")
print("\nDiagnostics (train_dada.py's metrics.json): Z on source val, and each discriminator's patch "
      "accuracy (%) and BCE on source / target val; 50 % and 0.693 are chance.\n\n"
      "| run | Z abs rel | Z mean / target mean | discriminator | accuracy src / tgt | BCE src / tgt |\n"
      "|---|---:|---:|---|---:|---:|")
for row in ("s1ff", "s2", "s3", "s4", "s7"):
    for s in seeds:
        p = f"{runs}/{row}_seed{s}/metrics.json"
        if not os.path.exists(p):
            continue
        diag = json.load(open(p))["diagnostics"]
        z = diag.get("depth_source")
        zcells = f"{z['abs_rel']:.3f} | {z['z_mean']:.2f} / {z['target_mean']:.2f}" if z else "- | -"
        if not any(k.startswith("d_") for k in diag):
            print(f"| {names[row]}, seed {s} | {zcells} | - | - | - |")
        for k, d in diag.items():
            if k.startswith("d_"):
                print(f"| {names[row]}, seed {s} | {zcells} | D_{k[2:]} | {d['src']['acc']:.1f} / "
                      f"{d['tgt']['acc']:.1f} | {d['src']['bce']:.3f} / {d['tgt']['bce']:.3f} |")
PY
}

if [ "${1:-}" = table ]; then ntr; table; exit; fi
mkdir -p "$RUNS"
lane s1 s2 s7 s3 > "$RUNS/lane1.log" 2>&1 &
lane s1bn s4 s1ff > "$RUNS/lane2.log" 2>&1 &
wait
ntr
table
