#!/usr/bin/env bash
# One GPU check, for whenever a GPU is lent: the CUDA-marked tests (bf16, fp16 with one
# GradScaler and two optimizers, a one-process NCCL group, both AT/DT stages on CUDA) and
# tools/bench.py for every training stage at the paper's sizes in fp32, bf16, bf16 +
# channels-last (+ --compile where it works), plus the cost of check_finite's per-step sync.
# Writes OUTDIR/env.txt, pytest_cuda.txt, <part>.json and .log, parts.tsv and summary.md.
# Sized for under 10 minutes on one H200: each part has a timeout, and all of them share
# GPU_CHECK_BUDGET seconds (default 540); --compile runs last, as it may be slow or fail.
#
#   bash tools/gpu_check.sh OUTDIR                    # on a machine with CUDA
#   GPU_CHECK_DRY=1 bash tools/gpu_check.sh OUTDIR    # every part on the CPU at tiny sizes
#
# A method that adds a training stage to tools/bench.py adds its bench_part lines below.
set -euo pipefail

if [[ $# -ne 1 ]]; then
    echo "usage: tools/gpu_check.sh OUTDIR  (GPU_CHECK_DRY=1 for a tiny CPU run)" >&2
    exit 2
fi
mkdir -p "$1"
if [[ -n $(ls -A "$1") ]]; then
    echo "error: $1 is not empty; give a new folder so no earlier result enters summary.md" >&2
    exit 2
fi
OUT=$(cd "$1" && pwd)
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
DRY=${GPU_CHECK_DRY:-0}
BUDGET=${GPU_CHECK_BUDGET:-540}
START=$SECONDS
FAILED=0
: >"$OUT/parts.tsv"

if [[ $DRY == 1 ]]; then
    # Paper shapes shrunk to seconds on a CPU; compile is skipped (minutes on a CPU). One
    # thread: on a busy CPU, OpenMP threads waiting on each other make tiny steps 50x slower.
    COMMON=(--device cpu --backbone resnet-tiny --size 64 64 --warmup 0 --steps 1 --workers 0 --threads 1)
    S1=(--batch-size 1 --decoder-width 16)
    S2=(--batch-size 1)
    DADA=(--tgt-size 64 64 --batch-size 1)
    SEMIMTL=(--batch-size 2)
    UMADAPT=(--batch-size 2 --decoder-width 16)
    HEADFREEZE=(--batch-size 2)
    F1=1 F2=1
else
    # AT/DT (Sec. 4): dilated ResNet-50, output stride 16, 512x512 crops; stage 1 batch 8 per
    # domain with decoder width 128; stage 2 batch 1, G = 6 x (conv3x3 2048->2048 + BN).
    COMMON=(--device cuda --backbone resnet50 --output-stride 16 --size 512 512 --warmup 2
            --steps 5 --workers 6)
    S1=(--batch-size 8 --decoder-width 128)
    S2=(--batch-size 1)
    # DADA (Sec. 4.1): DeepLab-v2 ResNet-101, SYNTHIA 1280x760 + Cityscapes 1024x512, batch 1 + 1.
    DADA=(--backbone resnet101 --size 760 1280 --tgt-size 512 1024 --batch-size 1)
    # The paper presets of the other scripts (their docs/*.md): SemiMTL ResNet-101 at output
    # stride 8, 256x256 crops, 8 per dataset; UM-Adapt ResNet-50, 228x304, 16, FCRN decoders
    # 1024 wide; HeadFreeze ResNet-50 + FPN, 240x320, 8 + 8.
    SEMIMTL=(--backbone resnet101 --output-stride 8 --size 256 256 --batch-size 8)
    UMADAPT=(--size 228 304 --batch-size 16 --decoder-width 1024)
    HEADFREEZE=(--size 240 320 --batch-size 8)
    F1=10 F2=30  # steps per check_finite timing: stage 2's step is short, so more of them
fi

record_failure() {
    # $1 part, $2 why, $3 its log or "": a one-line error JSON in place of the part's result
    "$PY" - "$OUT/$1.json" "$1" "$2" "$3" <<'EOF'
import json, sys
path, part, why, log = sys.argv[1:]
lines = [l.strip() for l in open(log, errors="replace") if l.strip()] if log else []
json.dump({"part": part, "error": f"{why}: {lines[-1]}" if lines else why}, open(path, "w"))
EOF
}

run_part() {
    # $1 name, $2 time limit (s), $3 optional (1: a failure is recorded but not fatal), then the command
    local name=$1 limit=$2 optional=$3 left rc=0 status=ok t0=$SECONDS
    shift 3
    left=$((BUDGET - (SECONDS - START)))
    if ((left < 20)); then
        status=skipped
        echo "skipped: budget of ${BUDGET}s spent" >"$OUT/$name.log"
        [[ $name == pytest_cuda ]] || record_failure "$name" "skipped: budget spent" ""
    else
        ((limit < left)) || limit=$left
        timeout -k 10 "$limit" "$@" >"$OUT/$name.log" 2>&1 || rc=$?
        if ((rc != 0)); then
            status="failed($rc)"
            local why="exit $rc"
            ((rc != 124 && rc != 137)) || why="timed out after ${limit}s"
            [[ $name == pytest_cuda ]] || record_failure "$name" "$why" "$OUT/$name.log"
        fi
    fi
    [[ $status == ok ]] || ((optional)) || FAILED=1
    printf '%s\t%s\t%d\n' "$name" "$status" $((SECONDS - t0)) >>"$OUT/parts.tsv"
    echo "[gpu_check] $name: $status in $((SECONDS - t0))s (total $((SECONDS - START))s)"
}

bench_part() {
    # $1 name, $2 time limit, $3 optional, then bench.py flags
    local name=$1 limit=$2 optional=$3
    shift 3
    run_part "$name" "$limit" "$optional" "$PY" tools/bench.py "${COMMON[@]}" "$@" --json "$OUT/$name.json"
}

{
    echo "date: $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
    echo "host: $(hostname)"
    if commit=$(git rev-parse --short HEAD 2>/dev/null); then
        git diff --quiet HEAD || commit+=" (+ uncommitted changes)"
        echo "commit: $commit"
    else
        echo "commit: unknown (no git repository)"
    fi
    echo "dry: $DRY"
    "$PY" -c 'import torch; c = torch.cuda.is_available()
print("torch:", torch.__version__, "| cuda:", torch.version.cuda, "| cudnn:", torch.backends.cudnn.version())
print("gpu:", torch.cuda.get_device_name(0) if c else "none", "| count:", torch.cuda.device_count())'
    nvidia-smi 2>&1 || echo "nvidia-smi: not available"
} >"$OUT/env.txt" 2>&1
echo "[gpu_check] environment in $OUT/env.txt"

run_part pytest_cuda 150 0 "$PY" -m pytest -q -m cuda
mv "$OUT/pytest_cuda.log" "$OUT/pytest_cuda.txt"

# Stage 1 and 2 in each precision; the bf16 + channels-last runs also measure check_finite.
bench_part atdt1_fp32 90 0 --only atdt1 "${S1[@]}" --amp off
bench_part atdt2_fp32 60 0 --only atdt2 "${S2[@]}" --amp off
bench_part atdt1_bf16 90 0 --only atdt1 "${S1[@]}" --amp bf16
bench_part atdt2_bf16 60 0 --only atdt2 "${S2[@]}" --amp bf16
bench_part atdt1_bf16_cl 120 0 --only atdt1 finite --finite-stage atdt1 --finite-steps "${F1}" \
    "${S1[@]}" --amp bf16 --channels-last
bench_part atdt2_bf16_cl 90 0 --only atdt2 finite --finite-stage atdt2 --finite-steps "${F2}" \
    "${S2[@]}" --amp bf16 --channels-last
bench_part dada_fp32 90 0 --only dada "${DADA[@]}" --amp off
bench_part dada_bf16 90 0 --only dada "${DADA[@]}" --amp bf16
bench_part semimtl_bf16 60 0 --only semimtl "${SEMIMTL[@]}" --amp bf16
bench_part umadapt_bf16 90 0 --only umadapt_base umadapt_adapt "${UMADAPT[@]}" --amp bf16
bench_part headfreeze_bf16 60 0 --only headfreeze "${HEADFREEZE[@]}" --amp bf16
if [[ $DRY != 1 ]]; then
    # Stage 2's graph (E1, E2 frozen; G) compiles faster than stage 1's, so it goes first.
    bench_part atdt2_bf16_cl_compile 120 1 --only atdt2 "${S2[@]}" --amp bf16 --channels-last --compile
    bench_part atdt1_bf16_cl_compile 240 1 --only atdt1 "${S1[@]}" --amp bf16 --channels-last --compile
fi

"$PY" - "$OUT" <<'EOF'
"""All OUTDIR/*.json of bench.py as one Markdown table, then the parts' status and time."""
import glob, json, os, sys

out = sys.argv[1]
paths = sorted(glob.glob(os.path.join(out, "*.json")))
results = {os.path.basename(p)[:-5]: json.load(open(p)) for p in paths}
rows = ["| part | stage | precision / options | step ms | split (ms) | images/s | peak memory GB |",
        "|---|---|---|---|---|---|---|"]
for part, r in results.items():
    if "error" in r:
        rows.append(f"| {part} | - | - | {r['error'].replace('|', '/')} | | | |")
        continue
    flags = [k for k in ("channels_last", "compile") if r.get(k)]
    opts = " + ".join([{"off": "fp32"}.get(r["amp"], r["amp"])] + flags)
    for stage in ("step", "atdt1", "atdt2", "dada", "semimtl", "umadapt_base", "umadapt_adapt", "headfreeze"):
        if stage in r:
            s = r[stage]
            split = " / ".join(f"{k} {s[k + '_ms']:.1f}"
                               for k in ("data", "forward", "backward", "optimizer"))
            rows.append(f"| {part} | {stage} | {opts} | {s['step_ms']:.1f} | {split} | "
                        f"{s['images_per_s']:.2f} | {s['peak_mem_mb'] / 1024:.2f} |")
    if "finite" in r:
        f = r["finite"]
        rows.append(f"| {part} | {f['stage']} check_finite | {opts} | {f['with_check_ms']:.1f} with, "
                    f"{f['without_check_ms']:.1f} without | overhead {f['overhead_pct']:+.1f}% | | |")
device = next((r.get("gpu") or r["device"] for r in results.values() if "device" in r), "no result")
lines = [f"# GPU check ({device})", "", *rows, "",
         "Step ms excludes data (drawing and moving the batch); images/s counts one domain's batch. "
         "Peak memory: torch's peak allocation on CUDA, the process's peak RSS on the CPU.", "",
         "| part | status | seconds |", "|---|---|---|"]
lines += [f"| {' | '.join(l.split())} |" for l in open(os.path.join(out, "parts.tsv")) if l.strip()]
open(os.path.join(out, "summary.md"), "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
EOF
echo "[gpu_check] done in $((SECONDS - START))s: $OUT/summary.md"
exit "$FAILED"
