"""Select the keypoint pairs and triplets of the morphology-aware loss from training labels.

    python select_morph_pairs.py --labels ../shared/aasce/boostnet_labeldata/labels/training \\
        --out save/morph_pairs_ours.json --compare

``--labels`` is a raw ``labels/<split>/`` folder of ``.mat`` files or a preprocessed table JSON written
by data_preprocessing.py (its raw ``label`` and ``raw_size_row_col``, else its ``points_<rows>``).
The result is a JSON [pairs, triplets] usable as ``Morph.pairs`` in a config. The selection rule is
documented in misc/morph_pairs.py.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from misc.morph_pairs import (
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
    """``Dataset.image_size`` (rows, cols) of a YAML config."""
    import yaml

    try:
        size = yaml.safe_load(Path(path).read_text(encoding="utf-8"))["Dataset"]["image_size"]
        rows, cols = (int(v) for v in size)
    except (OSError, KeyError, TypeError, ValueError) as exc:
        raise SystemExit(f"cannot read Dataset.image_size from {path}: {exc!r}; pass --grid-size ROWS COLS")
    return rows, cols


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
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    grid_rc = tuple(args.grid_size) if args.grid_size else grid_size_from_config(args.config)

    if args.labels.is_dir():
        points_xy, sizes_rc, _ = read_label_folder(args.labels)
    elif args.labels.is_file():
        points_xy, sizes_rc, _ = read_table(args.labels, grid_rc)
    else:
        raise SystemExit(f"--labels {args.labels}: no such folder or file")
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
        ref_pairs, ref_triplets = load_morph_pairs(args.compare, num_keypoints)
        print(f"pairs: {count_recovered(pairs, ref_pairs)} of {len(ref_pairs)} entries of {args.compare!r} recovered")
        print(f"triplets: {count_recovered(triplets, ref_triplets)} of {len(ref_triplets)} entries of "
              f"{args.compare!r} recovered")
    if not args.out and not args.compare:
        print(json.dumps([pairs.tolist(), triplets.tolist()]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
