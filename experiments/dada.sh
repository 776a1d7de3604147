#!/usr/bin/env bash
# DADA (ICCV 2019) on SYNTHIA -> Cityscapes / Mapillary Vistas: each table as a named command.
#
#   DATA=/path/to/data RUNS=runs/dada bash experiments/dada.sh table1
#   DATA=/path/to/data SEED=1 bash experiments/dada.sh table1     # a second run of each row
#   bash experiments/dada.sh list
#
# Needs DATA/synthia (SYNTHIA-RAND-CITYSCAPES), DATA/cityscapes and, for Table 2 (b),
# DATA/mapillary. Every setting is train_dada.py's paper preset (real data selects it;
# `python train_dada.py --help` shows each value and its source): DeepLab-v2 ResNet-101 from
# ImageNet, SYNTHIA at 1280x760 and the target at 1024x512 without crops, batch 1 + 1, SGD
# 2.5e-4, 90k steps, lambda_dep = lambda_adv = 1e-3. Only what differs is written here. The
# official initialisation is `--pretrained DeepLab_resnet_pretrained_imagenet.pth` (the
# default is torchvision's ImageNet weights: README, "DADA"). The reported model is the last
# one; SELECT=1 adds --select-on-target-val (the official protocol, uses target labels).
# RUNS, SEED, AMP, SMOKE, PYTHON: experiments/common.sh.
source "$(dirname "$0")/common.sh"
[ "${1:-list}" = list ] || need_data "synthia/ and cityscapes/"
EXTRA=()
if [ "${SELECT:-0}" = 1 ]; then EXTRA+=(--select-on-target-val --eval-every 2000); fi

run() { # run NAME FLAGS...: one train_dada.py run (common.sh: train)
  train train_dada.py "$1" --data-root "$DATA" ${EXTRA[@]+"${EXTRA[@]}"} "${@:2}"
}
LOW=(--src-resize 320 640 --tgt-resize 320 640 --size 320 640)   # the 320x640 rows of Table 2

table1() {  # SYNTHIA -> Cityscapes, 16 classes (13-class mIoU* from the same scores)
  run t1_s1 --src synthia --tgt cityscapes --setup s1
  run t1_advent --src synthia --tgt cityscapes --setup s2
  run t1_dada --src synthia --tgt cityscapes --setup s7
}
table2() {  # 7 classes: (a) Cityscapes, (b) Vistas, full resolution and 320x640
  for tgt in cityscapes mapillary; do
    run t2_${tgt}_s1 --src synthia --tgt $tgt --classes 7 --setup s1
    run t2_${tgt}_advent --src synthia --tgt $tgt --classes 7 --setup s2
    run t2_${tgt}_dada --src synthia --tgt $tgt --classes 7 --setup s7
    run t2_${tgt}_s1_320 --src synthia --tgt $tgt --classes 7 --setup s1 "${LOW[@]}"
    run t2_${tgt}_advent_320 --src synthia --tgt $tgt --classes 7 --setup s2 "${LOW[@]}"
    run t2_${tgt}_dada_320 --src synthia --tgt $tgt --classes 7 --setup s7 "${LOW[@]}"
  done
}
table3() {  # the seven setups S1-S7, SYNTHIA -> Cityscapes, 16 classes
  for s in s1 s2 s3 s4 s5 s6 s7; do run t3_$s --src synthia --tgt cityscapes --setup $s; done
}
table4() {  # DADA on fractions of SYNTHIA (10, 30, 50, 70, 100%)
  for f in 0.1 0.3 0.5 0.7 1.0; do
    run t4_dada_$f --src synthia --tgt cityscapes --setup s7 --source-fraction $f
  done
}
summary() {  # mean ± std over seeds of every finished run
  summarize target.mIoU target.mIoU13 target.acc
}

"${@:-list}"
