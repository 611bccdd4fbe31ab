#!/usr/bin/env bash
# The fast CPU recipe: one stage from scratch (config/aasce_cpu_fast.yaml, or the config in
# $CONFIG), about 1 h 45 min with --threads 2 on an otherwise idle 2-core machine (bench/README.md "Training cost"),
# preprocessing the AASCE data first if needed, as test.sh does.
#   bash tools/train_aasce_cpu_fast.sh [train.py options, e.g. --threads 2]
#   RUN=fast_nomorph bash tools/train_aasce_cpu_fast.sh --threads 2 --set Morph.use=false   # an ablation
#   CONFIG=config/aasce_cpu_2h.yaml RUN=aasce_cpu_2h bash tools/train_aasce_cpu_fast.sh --threads 2
#                                        # the 2-hour recipe: 48 epochs, click pathway at 6x (README "Training")
# The run goes to save/$RUN (RUN=aasce_cpu_fast by default); its best checkpoint is exported to
# save/$RUN.pth (weights and config, as pretrained/). Resumable: run it again after an interruption and it
# continues where it stopped.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
RUN="${RUN:-aasce_cpu_fast}"
CONFIG="${CONFIG:-config/aasce_cpu_fast.yaml}"
if [ ! -f "$CONFIG" ]; then echo "error: CONFIG=$CONFIG: no such config file" >&2; exit 2; fi
source tools/ensure_env.sh
source tools/ensure_aasce_data.sh

source tools/train_stage.sh

start=$SECONDS
stage "$RUN" "$CONFIG" "$@"
"$PY" tools/export_pretrained.py "save/$RUN/best.pth" "save/$RUN.pth"
echo "trained in $(( (SECONDS - start) / 60 )) min (this invocation); evaluate with"
echo "  python test.py --checkpoint save/$RUN.pth --data data/dataset16_512 --split val"
