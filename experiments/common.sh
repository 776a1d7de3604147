# What every experiments/<paper>.sh shares; sourced by them, not run. The variables:
#   DATA     the folder holding one sub-folder per dataset (docs/reference.md, "Datasets")
#   RUNS     where run folders go (default: runs/<paper>)
#   SEED     the seed (default 0). A run of NAME goes to RUNS/NAME_seedSEED, so SEED=0, 1 and 2
#            give three runs of every row and `summary` reports their mean ± std
#   AMP      off | bf16 | fp16 (default off: the papers trained in fp32)
#   SELECT=1 where a script offers it, the paper's model selection on target labels
#   SMOKE=1  every run with --smoke: a check that each command runs end to end (tiny model and
#            sizes, 2 iterations), not an experiment; its scores mean nothing
#   PYTHON   the interpreter (default: python)
set -euo pipefail
RUNS=${RUNS:-runs/$(basename "$0" .sh)}
SEED=${SEED:-0}
AMP=${AMP:-off}
PYTHON=${PYTHON:-python}
SHARED=(--seed "$SEED" --amp "$AMP")
if [ "${SMOKE:-0}" = 1 ]; then SHARED+=(--smoke); fi

need_data() { # need_data WHAT: stop unless DATA is set (every command but list needs it)
  : "${DATA:?set DATA to the folder holding $1}"
}
folder() { # folder NAME: the run folder of NAME at this SEED
  echo "$RUNS/${1}_seed$SEED"
}
train() { # train SCRIPT NAME FLAGS...: one run into $(folder NAME), skipped when finished, resumed when stopped
  local script=$1 out; out=$(folder "$2"); shift 2
  [ -f "$out/metrics.json" ] || "$PYTHON" "$script" "${SHARED[@]}" "$@" --output-dir "$out" --resume auto
}
summarize() { # summarize KEY...: mean ± std over seeds of every finished run in RUNS
  "$PYTHON" tools/summarize.py "$RUNS" --keys "$@"
}
list() {  # this list
  awk '/^[a-z0-9_]+\(\) \{  #/ { name = $1; sub(/\(\).*/, "", name); sub(/^[^#]*# /, ""); print name ": " $0 }' "$0"
}
commands() { # the named commands of the script (what `list` shows, but list and summary)
  list | cut -d: -f1 | grep -vx 'list\|summary'
}
