#!/usr/bin/env bash
# The fast CPU recipe (issue 14): two stages from scratch, about 2 h with --threads 2 on an otherwise idle
# 2-core machine (README "Results"), preprocessing the AASCE data first if needed, as test.sh does.
#   bash tools/train_aasce_cpu_fast.sh [train.py options for both stages, e.g. --threads 2]
#   RUN=fast_nomorph bash tools/train_aasce_cpu_fast.sh --threads 2 --set Morph.use=false   # an ablation
# Runs go to save/$RUN-1 (localisation) and save/$RUN-2 (clicks), RUN=aasce_cpu_fast by default; the
# second stage's best checkpoint is exported to save/$RUN.pth (weights and config, as pretrained/).
# Resumable: run it again after an interruption and it continues where it stopped.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source tools/ensure_env.sh
source tools/ensure_aasce_data.sh
RUN="${RUN:-aasce_cpu_fast}"

source tools/train_stage.sh

start=$SECONDS
stage "$RUN-1" config/aasce_cpu_fast1.yaml "$@"
stage "$RUN-2" config/aasce_cpu_fast2.yaml --init-weights "save/$RUN-1/best.pth" "$@"
"$PY" tools/export_pretrained.py "save/$RUN-2/best.pth" "save/$RUN.pth"
echo "trained in $(( (SECONDS - start) / 60 )) min (this invocation); evaluate with"
echo "  python test.py --checkpoint save/$RUN.pth --data data/dataset16_512 --split val"
