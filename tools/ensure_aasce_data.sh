# Sourced (after tools/ensure_env.sh): make sure data/dataset16_512 holds the preprocessed AASCE data.
# The raw tree is the first of AASCE_SOURCE, ./data/dataset16/boostnet_labeldata and
# ../shared/aasce/boostnet_labeldata; sets AASCE_DATA to the preprocessed folder.
AASCE_DATA=data/dataset16_512
if [ ! -f "$AASCE_DATA/test.json" ]; then
  _aasce_src="${AASCE_SOURCE:-}"
  for _candidate in data/dataset16/boostnet_labeldata ../shared/aasce/boostnet_labeldata; do
    if [ -z "$_aasce_src" ] && [ -d "$_candidate" ]; then _aasce_src="$_candidate"; fi
  done
  if [ -z "$_aasce_src" ]; then
    echo "error: no AASCE data: set AASCE_SOURCE=/path/to/boostnet_labeldata" >&2
    exit 1
  fi
  "$PY" data_preprocessing.py --source "$_aasce_src" --target data
fi
