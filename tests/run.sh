#!/usr/bin/env bash
# The test suite: bash tests/run.sh [pytest options]. The same command CI runs (.ci/run).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source tools/ensure_env.sh
exec "$PY" -m pytest -q tests "$@"
