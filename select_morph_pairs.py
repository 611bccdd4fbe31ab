"""Select the keypoint pairs and triplets of the morphology-aware loss from training labels.

    python select_morph_pairs.py --labels ../shared/aasce/boostnet_labeldata/labels/training \\
        --out save/morph_pairs_ours.json --compare

``--labels`` is a raw ``labels/<split>/`` folder of ``.mat`` files or a preprocessed table JSON written
by data_preprocessing.py (its raw ``label`` and ``raw_size_row_col``, else its ``points_<rows>``).
The result is a JSON [pairs, triplets] usable as ``Morph.pairs`` in a config. The selection rule is
documented in dataset/morph_pairs.py.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import util
from misc.errors import BadInput, report_bad_input
from dataset.morph_pairs import (
    FRAMES,
    count_recovered,
    load_morph_pairs,
    read_label_folder,
    read_table,
    select_morph_pairs,
    write_morph_pairs,
)

DEFAULT_CONFIG = Path(__file__).resolve().parent / "config" / "spineweb_ours.yaml"


def grid_size_from_config(path: Path) -> tuple[int, int]:
    """``Dataset.image_size`` (rows, cols) of a YAML config (validated like every config)."""
    rows, cols = util.load_config(path).Dataset.image_size
    return int(rows), int(cols)


def read_labels(path: Path, grid_rc) -> tuple:
    """(points_xy, sizes_rc, names) from a label folder or a table JSON; BadInput naming the file."""
    try:
        if path.is_dir():
            return read_label_folder(path)
        if path.is_file():
            return read_table(path, grid_rc)
    except (OSError, ValueError) as exc:  # also UnicodeDecodeError and scipy's errors on a broken .mat
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BadInput(f"--labels {detail}" if detail.startswith(str(path)) else f"--labels {path}: {detail}") from None
    raise BadInput(f"--labels {path}: no such folder or file")


def load_morph_pairs_or_fail(name_or_path, num_keypoints: int = 68):
    try:
        return load_morph_pairs(name_or_path, num_keypoints)
    except (OSError, ValueError) as exc:
        raise BadInput(f"--compare {name_or_path}: {str(exc).strip().splitlines()[0]}") from None


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--labels", required=True, type=Path,
                        help="labels/<split> folder of .mat files, or a preprocessed table JSON (e.g. train.json)")
    parser.add_argument("--num-pairs", type=int, default=70)
    parser.add_argument("--num-triplets", type=int, default=70)
    parser.add_argument("--frame", choices=FRAMES, default="grid",
                        help="where lengths and angles are measured (default: the resized training grid)")
    parser.add_argument("--grid-size", type=int, nargs=2, metavar=("ROWS", "COLS"),
                        help="resized grid (default: Dataset.image_size of --config)")
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG,
                        help=f"config to read the grid size from (default: {DEFAULT_CONFIG.name})")
    parser.add_argument("--out", type=Path, help="JSON file to write [pairs, triplets] to (atomic write)")
    parser.add_argument("--compare", nargs="?", const="dataset16", metavar="NAME_OR_JSON",
                        help="print how many entries of this list (default: the official 'dataset16') are recovered")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    if args.num_pairs < 1 or args.num_triplets < 1:
        parser.error(f"--num-pairs and --num-triplets must be >= 1, got {args.num_pairs} and {args.num_triplets}")
    if args.grid_size and min(args.grid_size) < 1:
        parser.error(f"--grid-size needs two positive integers, got {args.grid_size}")
    return args


@report_bad_input
def main(argv=None) -> int:
    args = parse_args(argv)
    grid_rc = tuple(args.grid_size) if args.grid_size else grid_size_from_config(args.config)
    if args.out:
        util.check_output_dir(args.out.parent)  # before the selection, which takes minutes
    if args.compare:
        load_morph_pairs_or_fail(args.compare)
    points_xy, sizes_rc, _ = read_labels(args.labels, grid_rc)
    num_keypoints = points_xy.shape[1]
    print(f"{len(points_xy)} label sets, {num_keypoints} keypoints, frame '{args.frame}'"
          + (f" {grid_rc[0]}x{grid_rc[1]}" if args.frame == "grid" else ""), file=sys.stderr)

    progress = None
    if not args.no_progress:
        try:
            from tqdm import tqdm

            progress = lambda chunks: tqdm(chunks, desc="triplet angles", unit="chunk", file=sys.stderr)  # noqa: E731
        except ImportError:
            pass
    pairs, triplets = select_morph_pairs(
        points_xy, sizes_rc, num_pairs=args.num_pairs, num_triplets=args.num_triplets,
        frame=args.frame, grid_size_rc=grid_rc, progress=progress)

    if args.out:
        write_morph_pairs(args.out, pairs, triplets, num_keypoints)
        print(f"wrote {len(pairs)} pairs and {len(triplets)} triplets to {args.out}", file=sys.stderr)
    if args.compare:
        ref_pairs, ref_triplets = load_morph_pairs_or_fail(args.compare, num_keypoints)
        print(f"pairs: {count_recovered(pairs, ref_pairs)} of {len(ref_pairs)} entries of {args.compare!r} recovered")
        print(f"triplets: {count_recovered(triplets, ref_triplets)} of {len(ref_triplets)} entries of "
              f"{args.compare!r} recovered")
    if not args.out and not args.compare:
        print(json.dumps([pairs.tolist(), triplets.tolist()]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
