#!/usr/bin/env bash
# The test suite: bash tests/run.sh [pytest options] [test files or node ids]. The same command CI runs
# (.ci/run); given test files or node ids (tests/test_x.py::test_y) it runs only those.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source tools/ensure_env.sh
# test files run in parallel on up to 4 cores (pytest-xdist; a file's tests stay in one process, so module
# fixtures such as the browser are made once); TEST_WORKERS=0 runs them in this process, one after another
WORKERS="${TEST_WORKERS:-$(n=$(nproc 2>/dev/null || echo 1); echo $(( n < 4 ? n : 4 )))}"
targets=(tests)
for arg in "$@"; do
  if [ -e "${arg%%::*}" ]; then targets=(); break; fi
done
exec "$PY" -m pytest -q -n "$WORKERS" --dist loadfile "${targets[@]}" "$@"
