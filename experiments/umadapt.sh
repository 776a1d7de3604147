#!/usr/bin/env bash
# UM-Adapt (ICCV 2019) on PBRS -> NYUv2 (Tables 1-3) and GTA5 -> Cityscapes + KITTI (Tables
# 4-5): each table as a named command. One run folder per setting; the stages (transfer,
# base, ccr) run once and every variant adapts from the same base model.
#
#   DATA=/path/to/data PBRS=/path/to/pbrs_folder RUNS=runs/umadapt bash experiments/umadapt.sh table1
#   DATA=/path/to/data GTA5D=/path/to/gta5_with_depth bash experiments/umadapt.sh table5
#   bash experiments/umadapt.sh list
#
# Every setting is train_umadapt.py's paper preset (real data selects it; `python
# train_umadapt.py --help` shows each value and its source): ResNet-50, FCRN up-projection
# decoders, the supplementary's task-transfer networks (Table 2) and UM-Adapt-B critic (Table 1,
# WGAN-GP), alpha = 10, one Adam per task. Values the paper does not give (the ImageNet start,
# learning rates, iterations, batch, lambda, the EBGAN margin) are ours (docs/umadapt.md).
#
# Dataset caveats:
# - PBRS (Zhang et al. 2017) is not in the dataset registry: lay its renders out as the
#   `folder` dataset (docs/umadapt.md), PBRS=ROOT with {train,val}/images, semantic (NYU-40
#   ids 0..39, 255 ignore), depth (16-bit, dataset.json depth_scale), normals (8-bit RGB),
#   dataset.json {"classes": [the 40 NYU-40 names]}. The paper samples 100,000 renders.
# - NYUv2: DATA/nyuv2 from tools/prepare_nyuv2.py (795 train / 654 test, 40 classes).
#   Normals: exported ones when present, else estimated from depth (lib/data/nyuv2.py): the
#   paper's Table 2 uses the standard normals of Eigen / Ladicky, export those for comparable numbers.
# - GTA5 depth is not part of the official GTA5 release (images + labels only). The paper's
#   depth comes from the game; a user needs per-frame depth captured with the frames (e.g. a
#   game-capture tool reading the depth buffer) and lays GTA5 out as `folder`: GTA5D=ROOT with
#   {train,val}/images, semantic (19 Cityscapes train ids), depth (metres via depth_scale).
#   Without depth, `--tasks semantic --transfer` runs segmentation alone (no distillation).
# - KITTI: DATA/kitti_depth with the Eigen lists (lib/data/kitti.py); Cityscapes: DATA/cityscapes.
#   The two targets alternate batch by batch (--tgt cityscapes,kitti_depth); S reads KITTI
#   depth and Cityscapes semantics only (the supplementary), labelled and unlabelled in turn.
#   Table 4 reads KITTI's Eigen test numbers (evaluate.py on the test list), Table 5
#   Cityscapes val mIoU.
#   Training scores every target on its val split for the tasks it has labels of.
# RUNS, SEED, AMP, SMOKE, PYTHON: experiments/common.sh (a setting's folder: RUNS/NAME_seedSEED).
source "$(dirname "$0")/common.sh"
[ "${1:-list}" = list ] || need_data "nyuv2/, cityscapes/, kitti_depth/"

stages() { # stages RUN FLAGS...: transfer, base, ccr once, then every variant in VARIANTS
  local run=$1; shift
  for st in transfer base ccr; do
    [ -f "$run/$st/metrics.json" ] || "$PYTHON" train_umadapt.py "${SHARED[@]}" "$@" --stage $st \
        --output-dir "$run" --resume auto
  done
  for v in $VARIANTS; do
    local content=ccr folder=$v
    case $v in b-fcf) v=b; content=fcf;; esac
    [ -f "$run/adapt-$folder/metrics.json" ] || "$PYTHON" train_umadapt.py "${SHARED[@]}" "$@" --stage adapt \
        --variant $v --content $content --output-dir "$run" --resume auto
  done
}
show() { # show RUN DATASET KEY...: one markdown row per finished row folder
  "$PYTHON" - "$@" <<'PY'
import json, os, sys
run, dataset, keys = sys.argv[1], sys.argv[2], sys.argv[3:]
rows = [("base", "Multi-task baseline"), ("adapt-b-fcf", "UM-Adapt-B(FCF)"), ("adapt-b", "UM-Adapt-B(CCR)"),
        ("adapt-noadv1", "UM-Adapt-(noAdv.)-1"), ("adapt-noadv", "UM-Adapt-(noAdv.)"),
        ("adapt-adv", "UM-Adapt-(Adv.)"), ("adapt-s", "UM-Adapt-S")]
print("| method | " + " | ".join(keys) + " |\n|---|" + "---:|" * len(keys))
for folder, label in rows:
    flat = dataset.endswith("_test")          # evaluate.py's metrics of the test split
    path = os.path.join(run, dataset if flat else "", folder, "metrics.json")
    if os.path.isfile(path):
        m = json.load(open(path)) if flat else json.load(open(path))["target"][dataset]
        print(f"| {label} | " + " | ".join(f"{m[k]:.3f}" for k in keys) + " |")
PY
}
INDOOR=(--src folder --src-root "${PBRS:-PBRS}" --tgt nyuv2 --data-root "${DATA:-}")
OUTDOOR=(--src folder --src-root "${GTA5D:-GTA5D}" --tgt cityscapes,kitti_depth --data-root "${DATA:-}")

indoor() {  # PBRS -> NYUv2, the runs of Tables 1-3 (S: the 795 labelled NYUv2 train images)
  VARIANTS="b-fcf b noadv1 noadv adv s" stages "$(folder pbrs_nyuv2)" "${INDOOR[@]}"
}
outdoor() {  # GTA5 -> Cityscapes + KITTI, the runs of Tables 4-5 (S: 500 labelled images of each:
  # Table 5 gives 500 for Cityscapes; Table 4 says only "few-shot" for KITTI, 500 there is ours)
  VARIANTS="noadv adv" stages "$(folder gta5_cs_kitti)" "${OUTDOOR[@]}"
  VARIANTS="s" stages "$(folder gta5_cs_kitti)" "${OUTDOOR[@]}" --target-labelled 500
}
table1() {  # NYUv2 depth: rel, log10, rms, delta < 1.25^k
  indoor; show "$(folder pbrs_nyuv2)" nyuv2 abs_rel log10 rmse a1 a2 a3
}
table2() {  # NYUv2 surface normals: mean, median, % within 11.25 / 22.5 / 30 degrees
  indoor; show "$(folder pbrs_nyuv2)" nyuv2 mean median pct_11_25 pct_22_5 pct_30
}
table3() {  # NYUv2 segmentation, 40 classes: mIoU, mean accuracy, pixel accuracy (in %)
  indoor; show "$(folder pbrs_nyuv2)" nyuv2 mIoU mean_acc acc
}
table4() {  # KITTI Eigen test split depth (evaluate.py --split test): rel, sq rel, rms, rms log
  outdoor
  local run; run=$(folder gta5_cs_kitti)
  for folder in base adapt-noadv adapt-adv adapt-s; do
    [ -f "$run/kitti_test/$folder/metrics.json" ] || "$PYTHON" evaluate.py --checkpoint "$run/$folder/model.pth" \
        --dataset kitti_depth --split test --task depth --data-root "$DATA" --max-depth 80 \
        --output-dir "$run/kitti_test/$folder" > /dev/null
  done
  # Table 4 heads its last column "rms(log10)", but its prior-work rows (Eigen et al. 0.282,
  # Godard et al. 0.247) are those papers' RMSE of natural-log depth: rmse_log is that metric
  show "$run" kitti_test abs_rel sq_rel rmse rmse_log
}
table5() {  # Cityscapes val segmentation, 19 classes: mIoU
  outdoor; show "$(folder gta5_cs_kitti)" cityscapes mIoU
}
summary() {  # mean ± std over seeds of every finished stage and variant
  summarize mIoU abs_rel rmse a1 mean median pct_11_25
}

"${@:-list}"
