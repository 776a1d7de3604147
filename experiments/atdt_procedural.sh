#!/usr/bin/env bash
# The AT/DT table (docs/atdt.md) on the procedural benchmark (proc-a = A, proc-b = B), on a CPU:
# for Dep->Sem and Sem->Dep, base AT/DT, +aux, +NDA and +aux+NDA (stage 1 + stage 2 each),
# and the paper's Transfer Oracle: the whole framework run with A = B = proc-b (its N2 on B is
# the Oracle row); every stage-2 run also scores the baseline (its N2 applied to B). Seeds 0-2.
#
#   bash experiments/atdt_procedural.sh             # two lanes (Dep->Sem, Sem->Dep) in parallel
#   SEEDS="0" bash experiments/atdt_procedural.sh   # one seed
#   bash experiments/atdt_procedural.sh table       # the README tables from finished runs
#   VARIANTS="" bash experiments/atdt_procedural.sh # only the Transfer Oracle and Oracle rows
#   SUPERVISED_G=1 ...                              # also G trained on B's labels (ours, not the
#                                                   # paper's oracle), on the +aux +NDA stage 1
#   # the longer stage 1 of the README's second Dep->Sem table (base and +aux +NDA only):
#   RUNS=runs/atdt_proc1000 STAGE1_FLAGS="--iters 1000 --save-every 1000" VARIANTS="base full" \
#       ORACLES=0 LANES=depsem bash experiments/atdt_procedural.sh
#
# Every run uses the scripts' defaults (the cpu preset: the main job's settings) but for the
# flags shown. Finished runs (metrics.json present) are skipped, interrupted ones resume.
set -euo pipefail
RUNS=${RUNS:-runs/atdt_proc}
SEEDS=${SEEDS:-0 1 2}
VARIANTS=${VARIANTS-base aux nda full}   # the stage-1 variants to run (SUPERVISED_G builds on full)
STAGE1_FLAGS=${STAGE1_FLAGS:-}           # extra train_tasks.py flags for every stage-1 run
LANES=${LANES:-depsem semdep}            # directions to run, one lane each
ORACLES=${ORACLES:-1}                     # 1: the Transfer Oracle / Oracle runs (A = B = proc-b)
SUPERVISED_G=${SUPERVISED_G:-0}           # 1: G trained on B's labels (needs the full variant)
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}   # one thread per lane: two lanes fill 2 cores
declare -A VARIANT=([base]="--aux none --e1-align none" [aux]="--aux edge --e1-align none"
                    [nda]="--aux none --e1-align nda" [full]="--aux edge --e1-align nda")

lane() {  # lane depsem|semdep: every seed and variant of one direction, in order
  local dir=$1 tasks
  if [ "$dir" = depsem ]; then tasks="--task1 depth --task2 semantic"; else tasks="--task1 semantic --task2 depth"; fi
  for seed in $SEEDS; do
    for v in $VARIANTS; do
      local s1=$RUNS/$dir/stage1/${v}_seed$seed
      [ -f "$s1/metrics.json" ] || python train_tasks.py $tasks ${VARIANT[$v]} $STAGE1_FLAGS \
          --seed "$seed" --output-dir "$s1" --resume auto
      [ -f "$RUNS/$dir/${v}_seed$seed/metrics.json" ] || python train_transfer.py --stage1 "$s1" \
          --seed "$seed" --output-dir "$RUNS/$dir/${v}_seed$seed" --resume auto
    done
    if [ "$ORACLES" = 1 ]; then   # the framework with A = B = proc-b (Tables 1-2's oracles)
      local to=$RUNS/$dir/stage1/toracle_seed$seed
      [ -f "$to/metrics.json" ] || python train_tasks.py --src proc-b --tgt proc-b $tasks \
          $STAGE1_FLAGS --seed "$seed" --output-dir "$to" --resume auto
      [ -f "$RUNS/$dir/toracle_seed$seed/metrics.json" ] || python train_transfer.py --stage1 "$to" \
          --seed "$seed" --output-dir "$RUNS/$dir/toracle_seed$seed" --resume auto
    fi
    if [ "$SUPERVISED_G" = 1 ]; then
      [ -f "$RUNS/$dir/supervised_g_seed$seed/metrics.json" ] || python train_transfer.py \
          --supervised-g --stage1 "$RUNS/$dir/stage1/full_seed$seed" --seed "$seed" \
          --output-dir "$RUNS/$dir/supervised_g_seed$seed" --resume auto
    fi
  done
}
table() {  # mean and sample std over seeds, as Markdown: one table per direction
  python - "$RUNS" <<'PY'
import glob, json, statistics, sys
runs = sys.argv[1]
rows = [("baseline (N2 on B)", "base", "baseline"), ("base AT/DT", "base", "atdt"),
        ("+aux", "aux", "atdt"), ("+NDA", "nda", "atdt"), ("+aux +NDA", "full", "atdt"),
        ("Transfer Oracle (A = B)", "toracle", "atdt"), ("Oracle (N2 on B, A = B)", "toracle", "baseline"),
        ("G supervised on B (ours)", "supervised_g", "supervised_g")]
cols = {"depsem": ["mIoU", "acc"],
        "semdep": ["abs_rel", "sq_rel", "rmse", "rmse_log", "a1", "a2", "a3"]}
for d, keys in cols.items():
    if not glob.glob(f"{runs}/{d}/*_seed*/metrics.json"):
        continue  # a direction that was not run (LANES)
    print(f"\n{d}: " + " | ".join(keys) + " (mean +- std over seeds)\n")
    print("| method | seeds | " + " | ".join(keys) + " |")
    print("|---|---:|" + "---:|" * len(keys))
    for label, variant, row in rows:
        ms = [json.load(open(p))["target"][row]
              for p in sorted(glob.glob(f"{runs}/{d}/{variant}_seed*/metrics.json"))]
        if not ms:
            continue
        cells = []
        for k in keys:
            v = [m[k] for m in ms]
            sd = statistics.stdev(v) if len(v) > 1 else float("nan")
            cells.append(f"{statistics.mean(v):.2f} ± {sd:.2f}" if k in ("mIoU", "acc", "a1", "a2", "a3")
                         else f"{statistics.mean(v):.3f} ± {sd:.3f}")
        print(f"| {label} | {len(ms)} | " + " | ".join(cells) + " |")
PY
}

if [ "${1:-}" = table ]; then table; exit; fi
mkdir -p "$RUNS"
for dir in $LANES; do lane "$dir" > "$RUNS/$dir-seeds${SEEDS// /}.log" 2>&1 & done
wait
table
