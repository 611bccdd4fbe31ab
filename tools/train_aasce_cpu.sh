#!/usr/bin/env bash
# Reproduce pretrained/aasce_cpu.pth: the four training stages of README "Training"; history in docs/experiments.md, then the export
# (preprocessing the AASCE data first if needed, as test.sh does).
#   bash tools/train_aasce_cpu.sh [train.py options for every stage, e.g. --threads 2]
# Each stage is resumable: run the script again after an interruption and it continues where it stopped
# (a finished stage returns at once). Runs go to save/aasce_cpu, save/aasce_cpu_clicks1, save/aasce_cpu_clicks2,
# save/aasce_cpu_clicks3.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source tools/ensure_env.sh
source tools/ensure_aasce_data.sh

source tools/train_stage.sh

# 1. localisation from scratch: the first 21 epochs of the 34-epoch cosine schedule
stage aasce_cpu config/aasce_cpu.yaml --stop-after-epoch 21 "$@"
# 2. and 3. the click pathway, each from the previous stage's best checkpoint
stage aasce_cpu_clicks1 config/aasce_cpu_clicks1.yaml --init-weights save/aasce_cpu/best.pth "$@"
stage aasce_cpu_clicks2 config/aasce_cpu_clicks2.yaml --init-weights save/aasce_cpu_clicks1/best.pth "$@"
# 4. the same click training on, with the lr decayed to 0
stage aasce_cpu_clicks3 config/aasce_cpu_clicks3.yaml --init-weights save/aasce_cpu_clicks2/best.pth "$@"
"$PY" tools/export_pretrained.py save/aasce_cpu_clicks3/best.pth pretrained/aasce_cpu.pth
