#!/usr/bin/env bash
# AT/DT (journal version) on CARLA -> Cityscapes: each table of the paper as a named command.
#
#   DATA=/path/to/data RUNS=runs/atdt bash experiments/atdt.sh table1
#   bash experiments/atdt.sh list
#
# Needs DATA/carla (rendered as in the README data section), DATA/cityscapes and their edge
# caches (`edges` below). Every setting is the scripts' paper preset (real data selects it;
# `python train_tasks.py --help` shows each value and its source): dilated ResNet-50 from
# scratch, 512x512 crops, batch 8 per domain, Adam 1e-4, 150k steps for the depth net and 25k
# for the semantic one (trained simultaneously: ours, README); G at lr 1e-5, batch 1, 100k
# steps; metric depth, N2's predictions scaled by the focal ratio at evaluation. Only what
# differs from it is written here. AMP=bf16 (ours, not the paper's)
# halves the time on recent GPUs. On several GPUs prefix a command with
# `torchrun --nproc_per_node=N` (the batch size is per process).
# RUNS, SEED, AMP, SMOKE, PYTHON: experiments/common.sh.
source "$(dirname "$0")/common.sh"
[ "${1:-list}" = list ] || need_data "carla/ and cityscapes/"

stage1() { # stage1 NAME FLAGS...: train N1, N2 (and D_aux) once on CARLA -> Cityscapes
  train train_tasks.py "$1" --src carla --tgt cityscapes --data-root "$DATA" "${@:2}"
}
stage2() { # stage2 STAGE1_NAME FLAGS...: G on the stage-1 run, into the folder of STAGE1_NAME_G
  train train_transfer.py "${1}_G" --stage1 "$(folder "$1")" "${@:2}"
}
stage2_as() { # stage2_as STAGE1_NAME NAME FLAGS...: another G on the stage-1 run, into the folder of NAME
  train train_transfer.py "$2" --stage1 "$(folder "$1")" "${@:3}"
}
oracles() { # oracles NAME FLAGS...: the framework with A = B = Cityscapes (Tables 1-2):
  # its G is the Transfer Oracle, its N2 (trained and tested on B) the Oracle
  train train_tasks.py "$1" --src cityscapes --tgt cityscapes --data-root "$DATA" "${@:2}"
  stage2 "$1"
}
rows() { # rows LABEL=RUN:ROW...: one table of rows read from the stage-2 runs' metrics.json
  "$PYTHON" - "$RUNS" "$SEED" "$@" <<'PY'
import json, os, sys
runs, seed, specs = sys.argv[1], sys.argv[2], sys.argv[3:]
rows, task = [], None
for spec in specs:
    label, where = spec.split("=", 1)
    run, row = where.rsplit(":", 1)
    path = os.path.join(runs, f"{run}_seed{seed}", "metrics.json")
    m = json.load(open(path)) if os.path.isfile(path) else {}
    task = task or m.get("task2")
    rows.append((label, (m.get("target") or {}).get(row)))
keys = ["mIoU", "acc"] if task == "semantic" else ["abs_rel", "sq_rel", "rmse", "rmse_log", "a1", "a2", "a3"]
print("| method | " + " | ".join(keys) + " |")
print("|---|" + "---:|" * len(keys))
for label, m in rows:
    print(f"| {label} | " + " | ".join("-" if not m else f"{m[k]:.4f}" for k in keys) + " |")
PY
}

edges() {  # cache the paper's DexiNed edge maps: EDGES=DIR holding carla/ and cityscapes/ outputs
  : "${EDGES:?set EDGES to the folder of DexiNed outputs (dark edges on white)}"
  for d in carla cityscapes; do
    "$PYTHON" tools/make_edges.py "$d" --data-root "$DATA" --from-dir "$EDGES/$d" --invert --workers 8
  done
}
builtin_edges() {  # or cache the built-in detector's edges instead (a substitute, not the paper's)
  for d in carla cityscapes; do "$PYTHON" tools/make_edges.py "$d" --data-root "$DATA" --workers 8; done
}
# Tables 1-2 read their rows from four runs: the baseline is the plain N2 of the base run (no
# D_aux, trained on A alone), as in the procedural tables; the Oracle is the N2 of the A = B run
# (which shares D_aux with N1 there, as the framework does: not a plain N2 like the baseline).
# Each run is its own folder, so a table that ran first (e.g. table3's depsem_full) is reused.
table1() {  # Dep->Sem: baseline (plain N2 on B), AT/DT (aux + NDA), Transfer Oracle, Oracle
  oracles oracles_depsem --task1 depth --task2 semantic
  stage1 depsem_base --aux none --e1-align none; stage2 depsem_base
  stage1 depsem_full --aux edge --e1-align nda; stage2 depsem_full
  rows "baseline (N2 on B)=depsem_base_G:baseline" "AT/DT=depsem_full_G:atdt" \
       "Transfer Oracle=oracles_depsem_G:atdt" "Oracle=oracles_depsem_G:baseline"
}
table2() {  # Sem->Dep: the same rows, the seven depth metrics
  oracles oracles_semdep --task1 semantic --task2 depth
  stage1 semdep_base --task1 semantic --task2 depth --aux none --e1-align none; stage2 semdep_base
  stage1 semdep_full --task1 semantic --task2 depth --aux edge --e1-align nda; stage2 semdep_full
  rows "baseline (N2 on B)=semdep_base_G:baseline" "AT/DT=semdep_full_G:atdt" \
       "Transfer Oracle=oracles_semdep_G:atdt" "Oracle=oracles_semdep_G:baseline"
}
table3() {  # Dep->Sem ablation: base, +aux, +NDA, +aux+NDA
  stage1 depsem_base --aux none --e1-align none; stage2 depsem_base
  stage1 depsem_aux --aux edge --e1-align none; stage2 depsem_aux
  stage1 depsem_nda --aux none --e1-align nda; stage2 depsem_nda
  stage1 depsem_full --aux edge --e1-align nda; stage2 depsem_full
}
table4() {  # auxiliary task: none / autoencoder / edges (no NDA)
  stage1 depsem_base --aux none --e1-align none; stage2 depsem_base
  stage1 depsem_ae --aux autoencoder --e1-align none; stage2 depsem_ae
  stage1 depsem_aux --aux edge --e1-align none; stage2 depsem_aux
}
table5() {  # auxiliary tasks as T1 (base AT/DT, T2 semantics): autoencoder, edges, depth
  stage1 t1ae_sem --task1 autoencoder --aux none --e1-align none; stage2 t1ae_sem
  stage1 t1edges_sem --task1 edges --aux none --e1-align none; stage2 t1edges_sem
  stage1 depsem_base --aux none --e1-align none; stage2 depsem_base
}
table6() {  # training schemes of N1, N2 and D_aux (edges, no NDA)
  stage1 depsem_base --aux none --e1-align none; stage2 depsem_base
  stage1 depsem_sep --aux edge --e1-align none --scheme separate; stage2 depsem_sep
  stage1 depsem_sep2 --aux edge --e1-align none --scheme separate-two-aux; stage2 depsem_sep2
  stage1 depsem_aux --aux edge --e1-align none --scheme simultaneous; stage2 depsem_aux
}
table7() {  # E1 alignment: none, adversarial, NDA, LargerNorm R = 1, 25, 500 (no aux; not its Asymmetric Adv. row)
  stage1 depsem_base --aux none --e1-align none; stage2 depsem_base
  stage1 depsem_adv --aux none --e1-align adv; stage2 depsem_adv
  stage1 depsem_nda --aux none --e1-align nda; stage2 depsem_nda
  for r in 1 25 500; do
    stage1 depsem_ln$r --aux none --e1-align largernorm --largernorm-radius $r; stage2 depsem_ln$r
  done
}
table8() {  # E2 alignment (no aux, no E1 alignment): none, adversarial, NDA (not its Asymmetric Adv. row)
  stage1 depsem_base --aux none --e1-align none; stage2 depsem_base
  stage1 depsem_e2adv --aux none --e1-align none --e2-align adv; stage2 depsem_e2adv
  stage1 depsem_e2nda --aux none --e1-align none --e2-align nda; stage2 depsem_e2nda
}
table9() {  # D2 output-space alignment (Tsai et al.; no aux, no E1 alignment): none, adversarial
  stage1 depsem_base --aux none --e1-align none; stage2 depsem_base
  stage1 depsem_d2adv --aux none --e1-align none --d2-align adv; stage2 depsem_d2adv
}
table10() {  # G's input (stage-1 NDA) and / or output alignment (not its Asymmetric Adv. row)
  stage1 depsem_base --aux none --e1-align none
  stage2_as depsem_base depsem_base_Gnda --g-align nda
  stage2_as depsem_base depsem_base_Gadv --g-align adv
  stage2_as depsem_base depsem_base_Gnda_adv --g-align nda+adv
  stage2_as depsem_base depsem_base_Gadv_d2 --g-align adv-d2
  stage1 depsem_nda --aux none --e1-align nda
  stage2_as depsem_nda depsem_nda_Gadv --g-align adv
  stage2 depsem_nda
}
summary() {  # mean ± std over seeds of every finished run
  summarize mIoU acc abs_rel sq_rel rmse rmse_log a1 a2 a3
}

"${@:-list}"
