#!/usr/bin/env bash
# AT/DT (journal version) on CARLA -> Cityscapes: each table of the paper as a named command.
#
#   DATA=/path/to/data RUNS=runs/atdt bash experiments/atdt.sh table1
#   bash experiments/atdt.sh list
#
# Needs DATA/carla (rendered as in the README data section), DATA/cityscapes and their edge
# caches (`edges` below). Every setting is the scripts' paper preset (real data selects it;
# `python train_tasks.py --help` shows each value and its source): dilated ResNet-50 from
# scratch, 512x512 crops, batch 8, Adam 1e-4, 150k steps for the depth net and 25k for the
# semantic one; G at lr 1e-5, batch 1, 100k steps; metric depth with the focal ratio applied
# at evaluation. Only what differs from it is written here. AMP=bf16 (ours, not the paper's)
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
oracles() { # oracles NAME FLAGS...: the framework with A = B = Cityscapes (Tables 1-2):
  # its G is the Transfer Oracle, its N2 (trained and tested on B) the Oracle
  train train_tasks.py "$1" --src cityscapes --tgt cityscapes --data-root "$DATA" "${@:2}"
  stage2 "$1"
}
with_oracles() { # the flags that add the Oracle and Transfer Oracle rows to a stage-2 table
  echo --oracle-checkpoint "$(folder "$1")/checkpoint.pth" --transfer-oracle-checkpoint "$(folder "${1}_G")/model.pth"
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
table1() {  # Dep->Sem: baseline (N2 on B), AT/DT (aux + NDA), Transfer Oracle, Oracle
  oracles oracles_depsem --task1 depth --task2 semantic
  stage1 depsem_full --task1 depth --task2 semantic --aux edge --e1-align nda
  stage2 depsem_full $(with_oracles oracles_depsem)
}
table2() {  # Sem->Dep: the same rows, the seven depth metrics
  oracles oracles_semdep --task1 semantic --task2 depth
  stage1 semdep_full --task1 semantic --task2 depth --aux edge --e1-align nda
  stage2 semdep_full $(with_oracles oracles_semdep)
}
table3() {  # Dep->Sem ablation: base, +aux, +NDA, +aux+NDA
  stage1 depsem_base --aux none --e1-align none && stage2 depsem_base
  stage1 depsem_aux --aux edge --e1-align none && stage2 depsem_aux
  stage1 depsem_nda --aux none --e1-align nda && stage2 depsem_nda
  stage1 depsem_full --aux edge --e1-align nda && stage2 depsem_full
}
table4() {  # auxiliary task: none / autoencoder / edges (no NDA)
  stage1 depsem_base --aux none --e1-align none && stage2 depsem_base
  stage1 depsem_ae --aux autoencoder --e1-align none && stage2 depsem_ae
  stage1 depsem_aux --aux edge --e1-align none && stage2 depsem_aux
}
table6() {  # training schemes of N1, N2 and D_aux (edges, no NDA)
  stage1 depsem_base --aux none --e1-align none && stage2 depsem_base
  stage1 depsem_sep --aux edge --e1-align none --scheme separate && stage2 depsem_sep
  stage1 depsem_sep2 --aux edge --e1-align none --scheme separate-two-aux && stage2 depsem_sep2
  stage1 depsem_aux --aux edge --e1-align none --scheme simultaneous && stage2 depsem_aux
}
table7() {  # E1 alignment: none, adversarial, NDA, LargerNorm R = 1, 25, 500 (no aux)
  stage1 depsem_base --aux none --e1-align none && stage2 depsem_base
  stage1 depsem_adv --aux none --e1-align adv && stage2 depsem_adv
  stage1 depsem_nda --aux none --e1-align nda && stage2 depsem_nda
  for r in 1 25 500; do
    stage1 depsem_ln$r --aux none --e1-align largernorm --largernorm-radius $r && stage2 depsem_ln$r
  done
}
summary() {  # mean ± std over seeds of every finished run
  summarize mIoU acc abs_rel sq_rel rmse rmse_log a1 a2 a3
}

"${@:-list}"
