#!/usr/bin/env bash
# Every procedural run the scoreboard reads (tools/scoreboard.py), then the scoreboard: the
# five methods' procedural scripts in turn, each at its cpu preset with seeds 0-2 (SEEDS), each
# skipping finished runs and resuming stopped ones, then the table. Runs go to runs/<method>_proc.
#
#   bash experiments/scoreboard.sh            # everything, then the scoreboard
#   bash experiments/scoreboard.sh table      # the scoreboard from finished runs only
#   bash experiments/scoreboard.sh keep       # copy every run's metrics.json and args.json
#                                             # to experiments/results/ (kept in git)
#   RUNS=experiments/results bash experiments/scoreboard.sh table   # the scoreboard of those
#   SEEDS="0" bash experiments/scoreboard.sh  # one seed of everything
#
# Cost on the repository's 2-core CPU machine, the sum of the procedural scripts' figures in
# the README (each measured alone, one thread per lane): AT/DT about 160 minutes (54 runs in 95
# plus the 12 oracle runs in 65), DADA about 140 (21 runs in two lanes, 2026-12-04), SemiMTL
# about 38, UM-Adapt about 59, HeadFreeze about 54: about 7.5 hours in all, one script after the other.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-runs}
if [ "${1:-}" = keep ]; then   # the small files the scoreboard and the tables read, not the weights
  (cd runs && find . -path './*_proc/*' \( -name metrics.json -o -name args.json \) -print) | sort |
  while read -r f; do
    mkdir -p "experiments/results/$(dirname "$f")" && cp "runs/$f" "experiments/results/$f"
  done
  exit
fi
if [ "${1:-}" != table ]; then
  for method in atdt dada semimtl umadapt headfreeze; do
    bash "experiments/${method}_procedural.sh"
  done
fi
python tools/scoreboard.py --runs "$RUNS"
