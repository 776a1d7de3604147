#!/usr/bin/env bash
# AT/DT (journal version) on CARLA -> Cityscapes: each table of the paper as a named command.
#
#   DATA=/path/to/data RUNS=runs/atdt bash experiments/atdt.sh table1
#   bash experiments/atdt.sh list
#
# Needs DATA/carla (rendered as in the README data section) and DATA/cityscapes. Settings are
# the paper's and the official ICCV code's (REFERENCE.md): dilated ResNet-50 at output stride
# 16 from ImageNet, 512x512 crops, batch 8, Adam lr 1e-4 poly 0.9 for stage 1; G with Adam
# lr 1e-5, batch 1, 100k steps. Depth of both datasets is expressed at CARLA's focal length
# (--focal-ref 859.238) and scored in metres. On several GPUs prefix a command with
# `torchrun --nproc_per_node=N` (the batch size is per process).
set -euo pipefail
DATA=${DATA:?set DATA to the folder holding carla/ and cityscapes/}
RUNS=${RUNS:-runs/atdt}
SEED=${SEED:-0}
DATA_FLAGS=(--src carla --tgt cityscapes --data-root "$DATA" --classes 11 --focal-ref 859.238)
NET_FLAGS=(--backbone resnet50 --pretrained imagenet --output-stride 16 --size 512 512)
STAGE1=("${DATA_FLAGS[@]}" "${NET_FLAGS[@]}" --batch-size 8 --iters 150000 --lr 1e-4 --amp bf16
        --decoder-width 256 --seed "$SEED")
STAGE2=(--lr 1e-5 --batch-size 1 --iters 100000 --eval-every 5000 --amp bf16 --seed "$SEED")

stage1() {  # stage1 NAME FLAGS...: train N1, N2 (and D_aux) once; skipped when already done
  local name=$1; shift
  [ -f "$RUNS/$name/metrics.json" ] || python train_tasks.py "${STAGE1[@]}" "$@" \
      --output-dir "$RUNS/$name" --resume auto
}
stage2() {  # stage2 STAGE1_NAME OUT_NAME FLAGS...
  local s1=$1 out=$2; shift 2
  [ -f "$RUNS/$out/metrics.json" ] || python train_transfer.py --stage1 "$RUNS/$s1" "${STAGE2[@]}" \
      "$@" --output-dir "$RUNS/$out" --resume auto
}
oracle() {  # N2 trained and tested on Cityscapes (the "Oracle" rows): TASK
  [ -f "$RUNS/oracle_$1/metrics.json" ] || python tools/train_supervised.py --src cityscapes \
      --tgt cityscapes --data-root "$DATA" --classes 11 --tasks "$1" "${NET_FLAGS[@]}" --batch-size 8 \
      --iters 150000 --lr 1e-4 --amp bf16 --output-dir "$RUNS/oracle_$1" --resume auto
}

table1() {  # Dep->Sem: baseline (N2 on B), AT/DT (aux + NDA), Transfer Oracle, Oracle
  oracle semantic
  stage1 depsem_full --task1 depth --task2 semantic --aux edge --e1-align nda
  stage2 depsem_full depsem_full_G --oracle-checkpoint "$RUNS/oracle_semantic/checkpoint.pth"
  stage2 depsem_full depsem_full_Goracle --oracle
}
table2() {  # Sem->Dep: the same rows, the seven depth metrics
  oracle depth
  stage1 semdep_full --task1 semantic --task2 depth --aux edge --e1-align nda
  stage2 semdep_full semdep_full_G --oracle-checkpoint "$RUNS/oracle_depth/checkpoint.pth"
  stage2 semdep_full semdep_full_Goracle --oracle
}
table3() {  # Dep->Sem ablation: base, +aux, +NDA, +aux+NDA
  stage1 depsem_base --aux none --e1-align none && stage2 depsem_base depsem_base_G
  stage1 depsem_aux --aux edge --e1-align none && stage2 depsem_aux depsem_aux_G
  stage1 depsem_nda --aux none --e1-align nda && stage2 depsem_nda depsem_nda_G
  stage1 depsem_full --aux edge --e1-align nda && stage2 depsem_full depsem_full_G
}
table4() {  # auxiliary task: none / autoencoder / edges (no NDA)
  stage1 depsem_base --aux none --e1-align none && stage2 depsem_base depsem_base_G
  stage1 depsem_ae --aux autoencoder --e1-align none && stage2 depsem_ae depsem_ae_G
  stage1 depsem_aux --aux edge --e1-align none && stage2 depsem_aux depsem_aux_G
}
table6() {  # training schemes of N1, N2 and D_aux (edges, no NDA)
  stage1 depsem_base --aux none --e1-align none && stage2 depsem_base depsem_base_G
  stage1 depsem_sep --aux edge --e1-align none --scheme separate && stage2 depsem_sep depsem_sep_G
  stage1 depsem_sep2 --aux edge --e1-align none --scheme separate-two-aux && stage2 depsem_sep2 depsem_sep2_G
  stage1 depsem_aux --aux edge --e1-align none --scheme simultaneous && stage2 depsem_aux depsem_aux_G
}
table7() {  # E1 alignment: none, adversarial, NDA, LargerNorm R = 1, 25, 500 (no aux)
  stage1 depsem_base --aux none --e1-align none && stage2 depsem_base depsem_base_G
  stage1 depsem_adv --aux none --e1-align adv && stage2 depsem_adv depsem_adv_G
  stage1 depsem_nda --aux none --e1-align nda && stage2 depsem_nda depsem_nda_G
  for r in 1 25 500; do
    stage1 depsem_ln$r --aux none --e1-align largernorm --largernorm-radius $r
    stage2 depsem_ln$r depsem_ln${r}_G
  done
}
summary() {  # mean/std over seeds of every finished run (RUNS may hold _seedN folders)
  python tools/summarize.py "$RUNS" --keys mIoU acc abs_rel sq_rel rmse rmse_log a1 a2 a3
}
list() {  # this list
  awk '/^[a-z0-9]+\(\) \{  #/ { name = $1; sub(/\(\).*/, "", name); sub(/^[^#]*# /, ""); print name ": " $0 }' "$0"
}

"${@:-list}"
