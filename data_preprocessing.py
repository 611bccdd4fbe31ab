"""Preprocess the AASCE data (SpineWeb dataset 16) into the layout the training code reads.

    python data_preprocessing.py --source ./data/dataset16/boostnet_labeldata/ --target ./data/

writes ./data/dataset16_512/{train,val,test}.json and the resized images as .npy arrays. All the logic is
in dataset/preprocess.py; this file only parses the command line and reports.
"""
from __future__ import annotations

import argparse
import logging
import sys

from dataset.aasce_io import AasceDataError
from misc.errors import BadInput
from dataset.preprocess import (
    BACKENDS,
    DEFAULT_SIZE_ROW_COL,
    DEFAULT_SOURCE,
    DEFAULT_TARGET,
    DEFAULT_VAL_SIZE,
    MAX_SEED,
    MAX_SIDE_PX,
    OutputExistsError,
    available_cpus,
    preprocess,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=(
            "Convert a raw AASCE 'boostnet_labeldata' tree (data/{training,test}/*.jpg, "
            "labels/{training,test}/*.jpg.mat) into <target>/dataset16_<rows>/ with train.json, val.json, "
            "test.json and the images resized to ROWS x COLS as uint8 (rows, cols, 3) .npy arrays. "
            "The validation set is --val-size images drawn (seeded) from the training folder. "
            "Every problem of the raw tree is reported before anything is written; training/validation "
            "images with points outside the image are dropped with a message, test images are kept."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--source", default=DEFAULT_SOURCE,
                        help="the boostnet_labeldata folder (holding data/ and labels/)")
    parser.add_argument("--target", default=DEFAULT_TARGET,
                        help="folder in which dataset16_<rows>/ is created")
    parser.add_argument("--size", nargs=2, type=int, default=list(DEFAULT_SIZE_ROW_COL), metavar=("ROWS", "COLS"),
                        help="size of the stored images, rows then columns")
    parser.add_argument("--val-size", type=int, default=DEFAULT_VAL_SIZE,
                        help="number of training images moved to the validation set")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the validation draw (from the training images in sorted name order)")
    parser.add_argument("--workers", type=int, default=available_cpus(),
                        help="parallel workers that read and resize images (1 = a plain loop)")
    parser.add_argument("--backend", choices=BACKENDS, default="thread",
                        help="run the workers as threads (decoding and resizing release the GIL; no start-up "
                             "cost) or as processes")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing dataset16_<rows>/ folder (atomically, at the end)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    too_large = max(args.size) > MAX_SIDE_PX
    bad_seed = not 0 <= args.seed <= MAX_SEED
    if too_large or bad_seed:  # before any image is read: one line, the status of a usage error
        print(f"error: --size must be at most {MAX_SIDE_PX} px a side, got {args.size[0]} {args.size[1]}" if too_large
              else f"error: --seed must be in [0, {MAX_SEED}], got {args.seed}", file=sys.stderr)
        return 2
    if args.size[0] <= 0 or args.size[1] <= 0:
        build_parser().error(f"--size needs two positive integers, got {args.size}")
    if args.val_size < 0:
        build_parser().error(f"--val-size must be >= 0, got {args.val_size}")
    if args.workers < 1:
        build_parser().error(f"--workers must be >= 1, got {args.workers}")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s")
    try:
        report = preprocess(
            source=args.source,
            target=args.target,
            size_row_col=tuple(args.size),
            val_size=args.val_size,
            seed=args.seed,
            workers=args.workers,
            overwrite=args.overwrite,
            progress=not args.no_progress,
            backend=args.backend,
        )
    except AasceDataError as exc:
        print(f"error: {len(exc.problems)} problem(s) in '{args.source}'; nothing was written:", file=sys.stderr)
        for problem in exc.problems:
            print(f"  - {problem}", file=sys.stderr)
        return 1
    except (OutputExistsError, BadInput) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # e.g. the disk filled up while writing; the temporary folder was removed
        print(f"error: writing {args.target} failed: {exc.strerror or exc}; nothing was installed", file=sys.stderr)
        return 1
    counts = ", ".join(f"{split} {n}" for split, n in report.counts.items())
    dropped = f"{len(report.dropped)} dropped, see the warnings above" if report.dropped else "none dropped"
    print(f"wrote {report.output_dir} ({counts}; {dropped}) in {report.seconds:.1f} s; "
          f"the run is recorded in preprocessing.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
