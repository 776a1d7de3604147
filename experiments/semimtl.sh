#!/usr/bin/env bash
# SemiMTL (Wang et al.) on real data: each table as a named command.
#
#   DATA=/path/to/data RUNS=runs/semimtl bash experiments/semimtl.sh table1
#   bash experiments/semimtl.sh list
#
# Needs DATA/cityscapes (with disparity/ and camera/, and train_extra for Table 1),
# DATA/isprs_potsdam and DATA/isprs_vaihingen (patches from tools/prepare_isprs.py) for
# Table 2, DATA/synscapes for Table 3. Every setting is train_semimtl.py's paper preset (real
# data selects it; `python train_semimtl.py --help` shows each value and its source):
# ResNet-101 from ImageNet, PSP and depth decoders, SGD 0.01 (momentum 0.9, wd 1e-4, poly 0.9),
# discriminators Adam 1e-4 (0.9, 0.99), w_seg 1, w_depth 0.01, lambda_intra 1e-3, lambda_inter
# 1e-4; street images resized to 512x1024 with 256x256 crops, ISPRS 384x384 crops; inverse depth
# on street scenes, the nDSM height on ISPRS. Only what differs is written here. Each table
# trains its STL run first: the others report delta-M (eq. 10) against it (--stl-run).
# RUNS, SEED, AMP, SMOKE, PYTHON: experiments/common.sh.
source "$(dirname "$0")/common.sh"
[ "${1:-list}" = list ] || need_data "cityscapes/, synscapes/, isprs_*/"

run() { # run NAME FLAGS...: one train_semimtl.py run (common.sh: train)
  train train_semimtl.py "$1" --data-root "$DATA" "${@:2}"
}
CITY=(--src cityscapes --tasks-a semantic --tgt cityscapes --tgt-split train_extra --tasks-b depth)
ISPRS=(--src isprs_potsdam --tasks-a semantic --tgt isprs_vaihingen --tasks-b depth)
SYN=(--src cityscapes --tasks-a semantic --tgt synscapes --tasks-b depth)

table1() {  # across cities: Cityscapes train (seg) + train_extra (depth), scored on Cityscapes val
  run t1_stl "${CITY[@]}" --method stl
  run t1_jtl "${CITY[@]}" --method jtl --stl-run "$(folder t1_stl)"
  run t1_semimtl "${CITY[@]}" --method semimtl --mode m2 --stl-run "$(folder t1_stl)"
}
table2() {  # across datasets: Potsdam (seg) + Vaihingen (nDSM height), scored on both
  run t2_stl "${ISPRS[@]}" --method stl
  run t2_da_depth "${ISPRS[@]}" --method da-depth
  run t2_da_seg "${ISPRS[@]}" --method da-seg
  run t2_jtl "${ISPRS[@]}" --method jtl --stl-run "$(folder t2_stl)"
  run t2_semisd "${ISPRS[@]}" --method semisd --stl-run "$(folder t2_stl)"
  run t2_semimtl "${ISPRS[@]}" --method semimtl --mode m2 --stl-run "$(folder t2_stl)"
}
table3() {  # across domains: Cityscapes (seg) + Synscapes (depth), scored on both; the ablation
  run t3_stl "${SYN[@]}" --method stl
  run t3_jtl "${SYN[@]}" --method jtl --stl-run "$(folder t3_stl)"
  run t3_semisd "${SYN[@]}" --method semisd --stl-run "$(folder t3_stl)"
  for mode in m1 m3 m2; do
    run t3_semimtl_$mode "${SYN[@]}" --method semimtl --mode $mode --stl-run "$(folder t3_stl)"
  done
}
summary() {  # mean ± std over seeds of every finished run's scores and delta-M
  summarize mIoU acc abs_rel rmse a1 a2 a3 delta_m
}

"${@:-list}"
