#!/usr/bin/env bash
# Evaluate: bash test.sh [--only-test-version NAME | --checkpoint PATH] [test.py options]
# With no arguments: the committed CPU model (pretrained/aasce_cpu.pth) on the AASCE test split
# (preprocessing the real data first if needed: AASCE_SOURCE, ./data/dataset16/boostnet_labeldata or
# ../shared/aasce/boostnet_labeldata), with automatic revision beside the paper's protocol when the committed
# error detector (pretrained/error_detector.pth) is there; without a committed model, the experiment 'quick'.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
source tools/ensure_env.sh
if [ "$#" -eq 0 ]; then
  if [ -f pretrained/aasce_cpu.pth ]; then
    source tools/ensure_aasce_data.sh
    set -- --checkpoint pretrained/aasce_cpu.pth --data "$AASCE_DATA/" --out results/aasce_cpu
    if [ -f pretrained/error_detector.pth ]; then
      set -- "$@" --auto-revision "${AUTO_ROUNDS:-1}" --detector pretrained/error_detector.pth
    fi
  else
    set -- --only-test-version quick
  fi
fi
exec "$PY" test.py "$@"
