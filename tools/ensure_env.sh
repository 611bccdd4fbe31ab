#!/usr/bin/env bash
# Create (or reuse) the project's virtual environment and install requirements.txt into it
# whenever that file changed. Sourced by run.sh, train.sh, test.sh and tests/run.sh.
# Override the interpreter with PYTHON=..., the location with VENV=...
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VENV:-$ROOT/.venv}"
if [ ! -x "$VENV/bin/python" ]; then
  echo "creating virtual environment $VENV"
  "${PYTHON:-python3}" -m venv "$VENV"
fi
stamp="$VENV/.requirements.sha256"
want="$(sha256sum "$ROOT/requirements.txt" | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  # pip lists each package as it goes; torch (a 180 MB wheel) is the long one.
  echo "installing requirements.txt into $VENV: torch (CPU), numpy, scipy, opencv, albumentations,"
  echo "tensorboard, matplotlib, pytest and their dependencies (about 1-3 min from a local package cache,"
  echo "longer when downloading; it happens again only when requirements.txt changes)"
  "$VENV/bin/python" -m pip install --upgrade pip
  "$VENV/bin/python" -m pip install --progress-bar on -r "$ROOT/requirements.txt"
  echo "$want" > "$stamp"
fi
PY="$VENV/bin/python"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
