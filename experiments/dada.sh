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
# ImageNet, SYNTHIA at 1280x760 and the target at 1024x512 (Vistas: fitted into 1024x768 and
# padded, as the official loader) without crops, batch 1 + 1, SGD 2.5e-4 with the official
# backbone group (--backbone-sgd official), 90k steps, lambda_dep = lambda_adv = 1e-3. Only
# what differs is written here. The
# official initialisation is `--pretrained DeepLab_resnet_pretrained_imagenet.pth` (the
# default is torchvision's ImageNet weights: docs/dada.md). The reported model is the last
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
oracle() {  # Table 2's Oracle (only-target) rows: source-only training on the target's own labels, 7 classes
  # The paper gives no recipe for it: DADA's preset with --src = --tgt (ours).
  run t2_cityscapes_oracle --src cityscapes --tgt cityscapes --classes 7 --setup s1 --src-resize 512 1024
  run t2_mapillary_oracle --src mapillary --tgt mapillary --classes 7 --setup s1 --src-resize 768 1024
}
ntr() { # ntr ADAPTED REFERENCE DATASET [FLAGS]: evaluate.py's negative transfer rate of one run
  local out; out=$(folder "$1")/eval-ntr-$3
  [ -f "$out/metrics.json" ] || "$PYTHON" evaluate.py --checkpoint "$(folder "$1")/model.pth" \
      --reference "$(folder "$2")/model.pth" --dataset "$3" --data-root "$DATA" --amp "$AMP" \
      --output-dir "$out" "${@:4}"
}
negtransfer() {  # Sec. 4.2: negative transfer rate vs source-only, 7 classes at 320x640 (trains the rows it needs)
  for tgt in cityscapes mapillary; do
    for m in s1 advent dada; do
      run t2_${tgt}_${m}_320 --src synthia --tgt $tgt --classes 7 --setup $(setup_of $m) "${LOW[@]}"
    done
    ntr t2_${tgt}_advent_320 t2_${tgt}_s1_320 $tgt   # paper: AdvEnt 11% (Cityscapes)
    ntr t2_${tgt}_dada_320 t2_${tgt}_s1_320 $tgt     # paper: DADA 5% (Cityscapes), 30% (Vistas)
  done
  # The SYNTHIA -> Vistas DADA scored on Cityscapes val (paper: 6%), at that run's 320x640 input
  ntr t2_mapillary_dada_320 t2_mapillary_s1_320 cityscapes --classes 7 --resize 320 640 --native-labels
  "$PYTHON" tools/summarize.py "$RUNS"/t2_*_320_seed*/eval-ntr-* --keys negative_transfer_rate
}
setup_of() { # setup_of ROW: the --setup of a row name (s1, advent, dada)
  case $1 in s1) echo s1 ;; advent) echo s2 ;; dada) echo s7 ;; esac
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
