#!/usr/bin/env bash
# Train: bash train.sh [train.py options]          (see python train.py --help)
# With no --config it trains the paper's configuration, config/spineweb_ours.yaml (HRNet-W32 + OCR at
# 512x256, early stopping), on data/dataset16_512 (preprocessing the AASCE data first if needed, as
# test.sh does). That configuration is made for a GPU; on a CPU use a CPU recipe (README "Training").
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
source tools/ensure_env.sh
case " $* " in
  *" --config "*|*" --config="*|*" --resume "*|*" --print-config "*|*" --help "*|*" -h "*) ;;
  *)
    source tools/ensure_aasce_data.sh
    echo "bash train.sh: the paper's configuration, config/spineweb_ours.yaml (HRNet-W32 + OCR, 512x256, batch 4,"
    echo "early stopping on the validation error; pass --config FILE for another)."
    if ! "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
      echo "No CUDA GPU here: it runs on the CPU, about 23 min an epoch on 2 CPU cores (python bench/bench_epoch.py"
      echo "--config config/spineweb_ours.yaml --threads 2), and early stopping waits 50 epochs without improvement:"
      echo "days. The paper trained it on a GPU. On a CPU, train the 2-hour recipe instead (about 70 min on 2 CPU"
      echo "cores): CONFIG=config/aasce_cpu_2h.yaml RUN=aasce_cpu_2h bash tools/train_aasce_cpu_fast.sh --threads 2"
      echo "Starting anyway in 10 s (Ctrl-C to stop; resume later with: bash train.sh --name spineweb_ours --resume)."
      sleep "${TRAIN_SH_WAIT:-10}"
    fi
    ;;
esac
exec "$PY" train.py "$@"
