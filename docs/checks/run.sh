#!/usr/bin/env bash
# The document checks: bash docs/checks/run.sh [pytest options]. Every number that README.md,
# pretrained/README.md and docs/*.md quote from a run is recomputed from its record in experiments/.
# Run by CI after the test suite (.ci/run); separate from tests/, which checks the code's behaviour.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
source tools/ensure_env.sh
exec "$PY" -m pytest -q docs/checks "$@"
