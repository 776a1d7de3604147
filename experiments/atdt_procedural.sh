#!/usr/bin/env bash
# The README's AT/DT table on the procedural benchmark (proc-a -> proc-b), 3 seeds, CPU-sized:
# for Dep->Sem and Sem->Dep, base AT/DT, +aux, +NDA, +aux+NDA (stage 1 + stage 2 each), the
# Transfer Oracle (G trained on proc-b, on the +aux+NDA stage 1) and the baseline (N2 on B).
#
#   bash experiments/atdt_procedural.sh            # all seeds (about 100 CPU-minutes on 2 cores)
#   SEEDS="0" bash experiments/atdt_procedural.sh  # one seed
#   python tools/summarize.py runs/atdt_proc --keys mIoU acc abs_rel rmse a1
#
# Every run uses the scripts' defaults (the main job's settings) but for the flags shown.
set -euo pipefail
RUNS=${RUNS:-runs/atdt_proc}
SEEDS=${SEEDS:-0 1 2}
declare -A VARIANT=([base]="--aux none --e1-align none" [aux]="--aux edge --e1-align none"
                    [nda]="--aux none --e1-align nda" [full]="--aux edge --e1-align nda")
for seed in $SEEDS; do
  for dir in depsem semdep; do
    if [ $dir = depsem ]; then tasks="--task1 depth --task2 semantic"; else tasks="--task1 semantic --task2 depth"; fi
    for v in base aux nda full; do
      s1=$RUNS/$dir/${v}_s1_seed$seed
      [ -f "$s1/metrics.json" ] || python train_tasks.py $tasks ${VARIANT[$v]} --seed "$seed" \
          --output-dir "$s1" --resume auto
      [ -f "$RUNS/$dir/${v}_seed$seed/metrics.json" ] || python train_transfer.py --stage1 "$s1" \
          --seed "$seed" --output-dir "$RUNS/$dir/${v}_seed$seed" --resume auto
    done
    [ -f "$RUNS/$dir/oracle_seed$seed/metrics.json" ] || python train_transfer.py --oracle \
        --stage1 "$RUNS/$dir/full_s1_seed$seed" --seed "$seed" --output-dir "$RUNS/$dir/oracle_seed$seed" \
        --resume auto
  done
done
