#!/usr/bin/env bash
# Train: bash train.sh [train.py options]   (default config: config/quick.yaml; see --help)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
source tools/ensure_env.sh
exec "$PY" train.py "$@"
