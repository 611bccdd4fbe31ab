#!/usr/bin/env bash
# The main job, end to end, on the built-in default:
#   virtual environment -> data (real AASCE if configured, else generated synthetic X-rays)
#   -> preprocessing -> training (config/quick.yaml, CPU scale) -> interactive evaluation table.
#
#   bash run.sh                       # synthetic data unless a real tree is configured
#   AASCE_SOURCE=/path/to/boostnet_labeldata bash run.sh
#
# Environment: AASCE_SOURCE (a real boostnet_labeldata tree; ./data/dataset16/boostnet_labeldata is
# used when it exists), RUN_NAME (experiment name, default quick_<data>), EPOCHS (default 12 on
# synthetic data, the config's value on real data), SYNTH_TRAIN / SYNTH_TEST (image counts).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
source tools/ensure_env.sh

SOURCE="${AASCE_SOURCE:-}"
if [ -z "$SOURCE" ] && [ -d data/dataset16/boostnet_labeldata ]; then
  SOURCE=data/dataset16/boostnet_labeldata
fi
if [ -n "$SOURCE" ]; then
  KIND=aasce
  TARGET=data
  EPOCH_SET=()
  [ -n "${EPOCHS:-}" ] && EPOCH_SET=(--set "Train.epoch=$EPOCHS")
else
  KIND=synthetic
  SOURCE=data/synthetic/boostnet_labeldata
  TARGET=data/synthetic
  EPOCH_SET=(--set "Train.epoch=${EPOCHS:-12}")
  if [ ! -f "$SOURCE/labels/test/angles.csv" ]; then
    echo "== no real data configured: generating synthetic spine X-rays in $SOURCE"
    "$PY" -m dataset.synthetic --out "$SOURCE" --num-train "${SYNTH_TRAIN:-240}" --num-test "${SYNTH_TEST:-48}" --seed 0
  fi
fi
DATA="$TARGET/dataset16_512"
if [ -f "$DATA/test.json" ]; then
  echo "== reusing preprocessed data in $DATA"
else
  echo "== preprocessing $SOURCE -> $DATA"
  "$PY" data_preprocessing.py --source "$SOURCE" --target "$TARGET" --val-size "${VAL_SIZE:-$([ "$KIND" = synthetic ] && echo 48 || echo 128)}"
fi

NAME="${RUN_NAME:-quick_$KIND}"
RESUME=()
[ -f "save/$NAME/last.pth" ] && RESUME=(--resume) && echo "== resuming experiment save/$NAME"
echo "== training $NAME (config/quick.yaml) on $DATA"
"$PY" train.py --config config/quick.yaml --name "$NAME" "${RESUME[@]}" \
  --set "PATH.DATA.IMAGE=$DATA/" --set "PATH.DATA.TABLE=$DATA/" "${EPOCH_SET[@]}" --no-progress

echo "== evaluating $NAME on the test split"
"$PY" test.py --only_test_version "$NAME" --data "$DATA/"
