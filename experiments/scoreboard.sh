#!/usr/bin/env bash
# Every procedural run the scoreboard reads (tools/scoreboard.py), then the scoreboard: the
# five methods' procedural scripts in turn, each at its cpu preset with seeds 0-2 (SEEDS), each
# skipping finished runs and resuming stopped ones, then the table. Only the rows the scoreboard
# reads: AT/DT's base and +aux +NDA variants without the oracles, HeadFreeze's five compared
# rows (each method's page runs its whole table). Runs go to runs/<method>_proc.
#
#   bash experiments/scoreboard.sh            # everything, then the scoreboard
#   bash experiments/scoreboard.sh table      # the scoreboard from finished runs only
#   bash experiments/scoreboard.sh keep       # copy every run's metrics.json and args.json
#                                             # to experiments/results/ (kept in git)
#   RUNS=experiments/results bash experiments/scoreboard.sh table   # the scoreboard of those
#   SEEDS="0" bash experiments/scoreboard.sh  # one seed of everything
#
# Cost on the repository's 2-core CPU machine, from the runs of 2026-12-04 (one thread per
# lane): AT/DT 83 minutes in one lane (its two directions run as two lanes here: about 42,
# an estimate), DADA about 145 (21 runs in two lanes), SemiMTL 42, UM-Adapt 48, HeadFreeze 24
# (15 runs): about 5 hours in all, one script after the other (estimated from those figures).
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
  VARIANTS="base full" ORACLES=0 bash experiments/atdt_procedural.sh
  bash experiments/dada_procedural.sh
  bash experiments/semimtl_procedural.sh
  bash experiments/umadapt_procedural.sh
  ROWS="baseline bn mtl-tgt-anchor mtl-both-anchor headfreeze" bash experiments/headfreeze_procedural.sh
fi
python tools/scoreboard.py --runs "$RUNS"
