#!/usr/bin/env bash
# The paper's ablation at the fast recipe's budget: each variant is trained from scratch with
# tools/train_aasce_cpu_fast.sh (same seed, same epochs), evaluated on the test split, and the rows are
# printed side by side by tools/compare_runs.py, with each variant's per-image difference to the first one.
#   bash tools/ablation.sh [--seed N] [--only VARIANT[,VARIANT...]] [train.py options, e.g. --threads 2]
# Variants (each switch off = the paper's method, validated at config load):
#   full        the method
#   no_morph    --set Morph.use=false              without the morphology-aware loss
#   no_gating   --set Model.use_gating=false       without the interaction-guided gating block
#   no_prev     --set Model.prev_heatmap=none      without the previous-heatmap input
# Runs: save/ablation_s<seed>_<variant> and save/ablation_s<seed>_<variant>.pth; evaluations:
# results/ablation/s<seed>_<variant>/; the small text files of both (training log, metrics, config, results)
# are copied to experiments/ablation/s<seed>_<variant>/ to be committed, and the README's figure
# docs/ablation_differences.png is redrawn from them (tools/plot_ablation.py). Each variant takes as long as
# the fast recipe; run it again after an interruption and it resumes (finished trainings and evaluations
# are skipped).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source tools/ensure_env.sh
source tools/ensure_aasce_data.sh

declare -A OVERRIDES=(
  [full]=""
  [no_morph]="Morph.use=false"
  [no_gating]="Model.use_gating=false"
  [no_prev]="Model.prev_heatmap=none"
)
ORDER=(full no_morph no_gating no_prev)
seed=0
only=""
passthrough=()
while [ $# -gt 0 ]; do
  case "$1" in
    --seed) seed="${2:?--seed needs a number}"; shift 2 ;;
    --only) only="${2:?--only needs variant names}"; shift 2 ;;
    *) passthrough+=("$1"); shift ;;
  esac
done
if ! [[ "$seed" =~ ^[0-9]+$ ]]; then echo "error: --seed must be a non-negative integer, got '$seed'" >&2; exit 2; fi
variants=("${ORDER[@]}")
if [ -n "$only" ]; then
  IFS=, read -r -a variants <<< "$only"
  for variant in "${variants[@]}"; do
    if [ -z "${OVERRIDES[$variant]+set}" ]; then
      echo "error: --only: unknown variant '$variant' (known: ${ORDER[*]})" >&2; exit 2
    fi
  done
fi

evaluated=()
for variant in "${variants[@]}"; do
  run="ablation_s${seed}_${variant}"
  out="results/ablation/s${seed}_${variant}"
  sets=(--set "Train.seed=$seed")
  if [ -n "${OVERRIDES[$variant]}" ]; then sets+=(--set "${OVERRIDES[$variant]}"); fi
  echo "== $variant (seed $seed): save/$run"
  # the 40-epoch fast recipe whatever CONFIG the caller's shell holds: every run of the ablation has the same budget
  CONFIG=config/aasce_cpu_fast.yaml RUN="$run" \
    bash tools/train_aasce_cpu_fast.sh "${sets[@]}" ${passthrough[@]+"${passthrough[@]}"}
  if [ ! -f "$out/results.json" ] || [ ! -f "$out/per_image.csv" ]; then
    "$PY" test.py --checkpoint "save/$run.pth" --data "$AASCE_DATA" --split test --out "$out" --no-progress
  fi
  logs="experiments/ablation/s${seed}_${variant}"
  mkdir -p "$logs"
  cp "save/$run/log.txt" "save/$run/metrics.jsonl" "save/$run/config.yaml" "$out/results.json" "$out/results.md" "$out/per_image.csv" "$logs/"
  evaluated+=("$variant=$out")
done
paired=()
if [ "${#evaluated[@]}" -gt 1 ]; then paired=(--paired-to "${evaluated[0]%%=*}"); fi
"$PY" tools/compare_runs.py "${evaluated[@]}" ${paired[@]+"${paired[@]}"}
"$PY" tools/plot_ablation.py
