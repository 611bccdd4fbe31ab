#!/usr/bin/env bash
# Sourced by the multi-stage training scripts (tools/train_aasce_cpu*.sh), after tools/ensure_env.sh.
# stage NAME CONFIG [train.py options]: start the run save/NAME, or resume it if its folder holds one
# (a finished run returns at once), so that a script run again continues where it stopped.
stage() {
  local name=$1 config=$2 resume=()
  shift 2
  if [ -f "save/$name/last.pth" ]; then resume=(--resume); fi
  "$PY" train.py --config "$config" --name "$name" --no-progress "${resume[@]}" "$@"
}
