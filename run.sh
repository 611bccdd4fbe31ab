#!/usr/bin/env bash
# The main job: see the method work on this machine in a few minutes.
#   virtual environment -> data (real AASCE if configured, else generated synthetic X-rays)
#   -> preprocessing -> the committed CPU model (pretrained/aasce_cpu.pth) evaluated on the test split
#   with picture strips -> model-vs-manual revision table, where the outputs are, what to run next.
#
#   bash run.sh                                        # synthetic data unless real data is configured
#   AASCE_SOURCE=/path/to/boostnet_labeldata bash run.sh
#   TRAIN=1 bash run.sh                                # first train config/quick.yaml from scratch
#                                                      # (a pipeline check, see README "Two commands")
#
# Environment:
#   AASCE_SOURCE   a real boostnet_labeldata tree (./data/dataset16/boostnet_labeldata is used when it exists)
#   RUN_DATA       auto (default), synthetic or aasce: which data to use
#   SYNTH_DIR      where the synthetic tree and its preprocessed copy go (default data/synthetic)
#   SYNTH_TRAIN, SYNTH_TEST, VAL_SIZE   synthetic image counts (default 240, 48) and validation size
#   OUT            output folder (default results/run_<data>, or save/<run>/test after TRAIN=1)
#   VISUALIZE      picture strips to draw (default 8)
#   CHECKPOINT     the model to evaluate (default pretrained/aasce_cpu.pth)
#   TRAIN=1        train first; then RUN_NAME (default quick_<data>) and EPOCHS (default 12 on synthetic)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
SECONDS=0
step() { printf '\n== [%d:%02d] %s\n' $((SECONDS / 60)) $((SECONDS % 60)) "$*"; }

step "set-up: virtual environment (tools/ensure_env.sh)"
source tools/ensure_env.sh

RUN_DATA="${RUN_DATA:-auto}"
SOURCE="${AASCE_SOURCE:-}"
if [ -z "$SOURCE" ] && [ -d data/dataset16/boostnet_labeldata ]; then
  SOURCE=data/dataset16/boostnet_labeldata
fi
case "$RUN_DATA" in
  auto) KIND=$([ -n "$SOURCE" ] && echo aasce || echo synthetic) ;;
  synthetic) KIND=synthetic ;;
  aasce)
    KIND=aasce
    if [ -z "$SOURCE" ]; then
      echo "error: RUN_DATA=aasce needs AASCE_SOURCE=/path/to/boostnet_labeldata or ./data/dataset16/boostnet_labeldata" >&2
      exit 1
    fi ;;
  *) echo "error: RUN_DATA must be auto, synthetic or aasce, got '$RUN_DATA'" >&2; exit 1 ;;
esac

if [ "$KIND" = aasce ]; then
  step "data: real AASCE images from $SOURCE"
  AASCE_SOURCE="$SOURCE"
  source tools/ensure_aasce_data.sh
  DATA="$AASCE_DATA"
else
  SYNTH_DIR="${SYNTH_DIR:-data/synthetic}"
  RAW="$SYNTH_DIR/boostnet_labeldata"
  DATA="$SYNTH_DIR/dataset16_512"
  if [ -f "$RAW/labels/test/angles.csv" ]; then
    step "data: reusing the synthetic spine X-rays in $RAW"
  else
    step "data: no real data configured: generating synthetic spine X-rays in $RAW (about 20 s)"
    "$PY" -m dataset.synthetic --out "$RAW" --num-train "${SYNTH_TRAIN:-240}" --num-test "${SYNTH_TEST:-48}" \
      --seed 0 --overwrite
  fi
  if [ -f "$DATA/test.json" ]; then
    step "preprocessing: reusing $DATA"
  else
    step "preprocessing: $RAW -> $DATA"
    "$PY" data_preprocessing.py --source "$RAW" --target "$SYNTH_DIR" --val-size "${VAL_SIZE:-48}"
  fi
fi
NUM_TEST="$("$PY" -c 'import json, sys; print(len(json.load(open(sys.argv[1]))))' "$DATA/test.json")"

EVAL_ARGS=()
if [ "${TRAIN:-0}" = 1 ]; then
  NAME="${RUN_NAME:-quick_$KIND}"
  EPOCHS="${EPOCHS:-$([ "$KIND" = synthetic ] && echo 12 || echo 30)}"
  NUM_TRAIN="$("$PY" -c 'import json, sys; print(len(json.load(open(sys.argv[1]))))' "$DATA/train.json")"
  NUM_VAL="$("$PY" -c 'import json, sys; print(len(json.load(open(sys.argv[1]))))' "$DATA/val.json")"
  # Rates on the project's 2-core machine without other load (README "Two commands"): the fastest
  # config/quick.yaml epoch seen took 126 s for 192 training images (0.66 s each); validation predicts
  # each image after 0..3 clicks at about 0.3 s per prediction. Busy cores make it several times slower.
  MINUTES=$(( (EPOCHS * (NUM_TRAIN * 66 + NUM_VAL * 4 * 30) / 100 + 59) / 60 ))
  RESUME=()
  [ -f "save/$NAME/last.pth" ] && RESUME=(--resume)
  step "training $NAME from scratch: config/quick.yaml, $EPOCHS epoch$([ "$EPOCHS" = 1 ] || echo s) on $NUM_TRAIN images of $DATA"
  echo "   expect about $MINUTES min on 2 idle cores (longer under load); ${RESUME[*]:+resuming save/$NAME; }"\
"Ctrl-C and re-run to resume after the last finished epoch."
  echo "   This is a pipeline check: a short run from scratch learns rough positions, not to follow clicks"
  echo "   (the committed model needed 5.8 h in four stages: bash tools/train_aasce_cpu.sh)."
  "$PY" train.py --config config/quick.yaml --name "$NAME" "${RESUME[@]}" \
    --set "PATH.DATA.IMAGE=$DATA/" --set "PATH.DATA.TABLE=$DATA/" --set "Train.epoch=$EPOCHS"
  EVAL_ARGS=(--only-test-version "$NAME")
  OUT="${OUT:-save/$NAME/test}"
else
  CHECKPOINT="${CHECKPOINT:-pretrained/aasce_cpu.pth}"
  EVAL_ARGS=(--checkpoint "$CHECKPOINT")
  OUT="${OUT:-results/run_$KIND}"
fi

# About 0.3 s per prediction, 11 per image (0..10 clicks), on 2 idle cores; 5 min for 48 images under load.
step "evaluating ${EVAL_ARGS[*]} on the $NUM_TEST $KIND test images, 0..10 clicks (about $(( (NUM_TEST * 33 / 10 + 59) / 60 )) min, more under load)"
"$PY" test.py "${EVAL_ARGS[@]}" --data "$DATA/" --out "$OUT" --visualize "${VISUALIZE:-8}"

step "done in $((SECONDS / 60)) min $((SECONDS % 60)) s"
"$PY" - "$OUT/results.json" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
model, manual = r["model"]["sargmax_mm_MRE"], r["manual"]["sargmax_mm_MRE"]
k = min(5, len(model) - 1)
print(f"checkpoint {r['checkpoint']}: mean radial error {model[0]:.2f} px before any click; after {k} clicks "
      f"{model[k]:.2f} px when the network re-predicts the other points (model revision), "
      f"{manual[k]:.2f} px when only the clicked points move (manual revision).")
EOF
cat <<EOF
Outputs in $OUT/:
  results.md              the table above
  results.json            every metric per click
  mre_per_click.png       MRE per click (the paper's AASCE values dashed); cobb_per_click.png
  visualize/*.png         picture strips: truth, both revisions after 0, 1, 3 and 5 clicks
  predictions.npz         every coordinate, to recompute any number
Next:
  the annotation tool:   $PY demo.py   (then open the printed URL)
  training:              TRAIN=1 bash run.sh   (config/quick.yaml from scratch: a pipeline check)
                         bash tools/train_aasce_cpu.sh   (the committed model's recipe, real data, 5.8 h)
  real data:             AASCE_SOURCE=/path/to/boostnet_labeldata bash run.sh   (see README "Data")
EOF
