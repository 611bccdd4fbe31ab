#!/usr/bin/env bash
# Evaluate: bash test.sh [--only_test_version NAME | --checkpoint PATH] [test.py options]
# With no arguments: the committed CPU model (pretrained/aasce_cpu.pth) on the AASCE test split
# (preprocessing the real data first if needed: AASCE_SOURCE, ./data/dataset16/boostnet_labeldata or
# ../shared/aasce/boostnet_labeldata), or, without a committed model, the experiment 'quick'.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
source tools/ensure_env.sh
if [ "$#" -eq 0 ]; then
  if [ -f pretrained/aasce_cpu.pth ]; then
    DATA=data/dataset16_512
    if [ ! -f "$DATA/test.json" ]; then
      SRC="${AASCE_SOURCE:-}"
      for candidate in data/dataset16/boostnet_labeldata ../shared/aasce/boostnet_labeldata; do
        if [ -z "$SRC" ] && [ -d "$candidate" ]; then SRC="$candidate"; fi
      done
      if [ -z "$SRC" ]; then
        echo "error: no AASCE data: set AASCE_SOURCE=/path/to/boostnet_labeldata" >&2
        exit 1
      fi
      "$PY" data_preprocessing.py --source "$SRC" --target data
    fi
    set -- --checkpoint pretrained/aasce_cpu.pth --data "$DATA/" --out results/aasce_cpu
  else
    set -- --only_test_version quick
  fi
fi
exec "$PY" test.py "$@"
