#!/usr/bin/env bash
# Evaluate: bash test.sh [--only_test_version NAME | --checkpoint PATH] [test.py options]
# With no arguments it evaluates the experiment 'quick' (what run.sh trains).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
source tools/ensure_env.sh
if [ "$#" -eq 0 ]; then set -- --only_test_version quick; fi
exec "$PY" test.py "$@"
