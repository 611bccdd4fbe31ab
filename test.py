"""Evaluate a trained model with the interactive protocol of the paper: model vs manual revision.

    python test.py --only-test-version quick              # save/quick/best.pth on its own test split
    python test.py --checkpoint pretrained/x.pth --data data/dataset16_512 --out results/x
    python test.py --checkpoint a.pth --ensemble b.pth c.pth ...     # heatmaps of a, b, c averaged
    python test.py --only-test-version quick --auto-revision 1       # + model revision with automatic rounds

Writes to the output folder: results.json (every metric per click), results.md (the table),
mre_per_click.png, and predictions.npz (per image and click: coordinates of both revisions in the
network grid and in original pixels, the truth, the click order), so anyone can recompute the
metrics without this code, and per_image.csv (model revision's MRE and Cobb SMAPE per image and click,
small enough to commit; tools/compare_runs.py --paired-to compares runs image by image on it).
The job itself is engine/evaluator.py.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from engine.evaluator import DEFAULT_DETECTOR, EvaluationJob, locate_model, run_evaluation
from misc.errors import BadInput, report_bad_input


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--only-test-version", "--only_test_version", dest="only_test_version", metavar="NAME",
                      help="evaluate save/NAME/best.pth (experiment name under --save-dir); the underscore "
                           "spelling is the official script's")
    what.add_argument("--checkpoint", help="a checkpoint file (ours or the authors' release)")
    parser.add_argument("--ensemble", nargs="+", default=[], metavar="CHECKPOINT",
                        help="average the model's heatmaps with these checkpoints' (a test-time ensemble; each "
                             "built from its stored config, which must predict on the same terms; the first "
                             "model's config drives the evaluation)")
    parser.add_argument("--save-dir", default=None, help="experiments root (default: PATH.SAVE of the config)")
    parser.add_argument("--config", default=None,
                        help="config for --checkpoint (default: the one stored in the checkpoint, "
                             "else config/spineweb_ours.yaml)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
    parser.add_argument("--data", help="a folder written by data_preprocessing.py; its <split>.json is used")
    parser.add_argument("--split", default="test", choices=("test", "val", "train"),
                        help="which table of the data folder to evaluate (default: %(default)s)")
    parser.add_argument("--out", help="output folder (default: <experiment>/test or next to the checkpoint)")
    parser.add_argument("--max-clicks", type=int, default=None, help="clicks to simulate (default: Test.max_clicks)")
    parser.add_argument("--table-clicks", type=int, default=None, help="columns of the printed table (default: Test.table_clicks)")
    parser.add_argument("--visualize", type=int, default=0, metavar="N",
                        help="write PNG strips (truth, both revisions after 0/1/3/5 clicks) for the first N images")
    parser.add_argument("--batch-size", type=int, default=4,
                        help="images per forward pass: changes speed and memory, not the protocol (default: %(default)s)")
    parser.add_argument("--device", default=None,
                        help="'auto', 'cpu', 'cuda', 'cuda:N' (default: MISC.device of the config, or the CPU "
                             "when that device is missing here)")
    parser.add_argument("--allow-pickle", action="store_true",
                        help="allow a checkpoint that needs unpickling (only for files you trust)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar (for logs)")
    parser.add_argument("--auto-revision", type=int, default=0, metavar="N",
                        help="also evaluate model revision with N automatic rounds after the predictions (a "
                             "round: the error detector flags suspicious points, the corrector proposes "
                             "positions, the model re-predicts with them as hints; it never sees the truth); "
                             "a row 'model + automatic revision' in the table, 'auto' in results.json "
                             "(default: %(default)s, the paper's protocol only)")
    parser.add_argument("--detector", default=DEFAULT_DETECTOR, metavar="PATH",
                        help="the error detector checkpoint for --auto-revision (default: %(default)s)")
    parser.add_argument("--auto-between-clicks", choices=("yes", "no"), default="yes",
                        help="run the automatic rounds after every click's prediction too, not only after the "
                             "0-click one (default: %(default)s)")
    return parser.parse_args(argv)


@report_bad_input
def main(argv=None) -> int:
    args = parse_args(argv)
    for flag, value, minimum in (("--max-clicks", args.max_clicks, 0), ("--table-clicks", args.table_clicks, 0),
                                 ("--batch-size", args.batch_size, 1), ("--visualize", args.visualize, 0),
                                 ("--auto-revision", args.auto_revision, 0)):
        if value is not None and value < minimum:
            raise BadInput(f"{flag} must be >= {minimum}, got {value}")
    config, checkpoint, default_out = locate_model(args.only_test_version, args.checkpoint, args.config, args.set,
                                                   args.save_dir, allow_pickle=args.allow_pickle)
    if args.data:
        config.PATH.DATA.TABLE = config.PATH.DATA.IMAGE = args.data
    if args.ensemble:  # never the single model's folder
        default_out = default_out.with_name(f"{default_out.name}_ensemble{1 + len(args.ensemble)}")
    job = EvaluationJob(split=args.split, max_clicks=args.max_clicks, table_clicks=args.table_clicks,
                        batch_size=args.batch_size, device=args.device, ensemble=tuple(args.ensemble),
                        visualize=args.visualize, allow_pickle=args.allow_pickle, progress=not args.no_progress,
                        overrides=tuple(args.set), auto_revision=args.auto_revision, detector=args.detector,
                        auto_between_clicks=args.auto_between_clicks == "yes")
    run_evaluation(config, checkpoint, Path(args.out) if args.out else default_out, job)
    return 0


if __name__ == "__main__":
    sys.exit(main())
