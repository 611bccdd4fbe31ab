"""Where the Cobb-angle error of an evaluation comes from: vertebra choice or vertebra slope.

    python tools/cobb_error_sources.py results/val_committed [--clicks 0] [--revision model] [--json OUT]

Reads predictions.npz of a test.py output folder and, per image, runs the challenge method on the truth
and on the prediction (misc/cobb_errors.py). Prints, per angle (PT, MT, TL): the mean absolute error, the
share of images where the method chose the same vertebra pair as on the truth, and the error that is
left when the predicted directions are measured at the TRUE pairs (the slope error alone); the SMAPE of
both; the mean tilt error of each vertebra T1..L5; and the same with each vertebra's direction measured
from its two endplates (Cobb direction "endplates", a variant) instead of its two sides (the challenge's).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from misc.cobb import DIRECTIONS, NUM_VERTEBRAE, smape  # noqa: E402
from misc.cobb_errors import ANGLE_NAMES, error_sources  # noqa: E402
from misc.errors import BadInput, report_bad_input  # noqa: E402

LEVELS = [f"T{i}" for i in range(1, 13)] + [f"L{i}" for i in range(1, 6)]
assert len(LEVELS) == NUM_VERTEBRAE


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path, help="a test.py output folder (holds predictions.npz)")
    parser.add_argument("--clicks", type=int, default=0, help="after how many clicks (default: %(default)s)")
    parser.add_argument("--revision", choices=("model", "manual"), default="model")
    parser.add_argument("--json", type=Path, help="also write the summary as JSON here")
    return parser.parse_args(argv)


def load_predictions(folder: Path, revision: str, clicks: int):
    """(predicted points xy, true points xy, true angles from the labels, image heights) in original pixels."""
    path = folder / "predictions.npz"
    if not path.is_file():
        raise BadInput(f"{path}: not found (write it with test.py --out {folder})")
    arrays = np.load(path)
    key = f"{revision}_sargmax_original_rc"
    for needed in (key, "true_original_rc", "true_cobb_angles", "raw_size_rc"):
        if needed not in arrays:
            raise BadInput(f"{path}: no '{needed}' (not a 68-point AASCE evaluation of test.py?)")
    available = arrays[key].shape[1] - 1
    if not 0 <= clicks <= available:
        raise BadInput(f"--clicks {clicks}: {path} holds 0..{available} clicks")
    pred_xy = arrays[key][:, clicks, :, ::-1].astype(np.float64)
    true_xy = arrays["true_original_rc"][..., ::-1].astype(np.float64)
    heights = np.asarray(arrays["raw_size_rc"], dtype=np.float64).reshape(-1, 2)[:, 0]
    return pred_xy, true_xy, np.asarray(arrays["true_cobb_angles"], dtype=np.float64), heights


def summarise(pred_xy, true_xy, true_angles, heights, direction: str) -> dict:
    rows = [error_sources(p, t, h, direction) for p, t, h in zip(pred_xy, true_xy, heights)]
    pred = np.stack([r["pred"] for r in rows])
    at_true = np.stack([r["at_true_pairs"] for r in rows])
    same = np.stack([r["same_pair"] for r in rows])
    tilt = np.stack([r["tilt_error"] for r in rows])
    return {
        "direction": direction, "images": len(rows),
        "smape": smape(pred, true_angles), "smape_at_true_pairs": smape(at_true, true_angles),
        "mae": dict(zip(ANGLE_NAMES, np.abs(pred - true_angles).mean(0).round(2).tolist())),
        "mae_at_true_pairs": dict(zip(ANGLE_NAMES, np.abs(at_true - true_angles).mean(0).round(2).tolist())),
        "same_pair_share": dict(zip(ANGLE_NAMES, same.mean(0).round(3).tolist())),
        "tilt_error_deg": dict(zip(LEVELS, tilt.mean(0).round(2).tolist())),
    }


def format_summary(summary: dict) -> str:
    lines = [f"direction '{summary['direction']}', {summary['images']} images: Cobb SMAPE "
             f"{summary['smape']:.2f} %, {summary['smape_at_true_pairs']:.2f} % at the true vertebra pairs",
             "| angle | MAE (deg) | same pair as on the truth | MAE at the true pairs (deg) |", "|---|---|---|---|"]
    for name in ANGLE_NAMES:
        lines.append(f"| {name} | {summary['mae'][name]:.2f} | {100 * summary['same_pair_share'][name]:.0f} % | "
                     f"{summary['mae_at_true_pairs'][name]:.2f} |")
    tilts = summary["tilt_error_deg"]
    lines.append("mean tilt error per vertebra (deg): " + ", ".join(f"{k} {v:.1f}" for k, v in tilts.items()))
    return "\n".join(lines)


@report_bad_input
def main(argv=None) -> int:
    args = parse_args(argv)
    pred_xy, true_xy, true_angles, heights = load_predictions(args.folder, args.revision, args.clicks)
    summaries = [summarise(pred_xy, true_xy, true_angles, heights, d) for d in DIRECTIONS]
    print(f"{args.folder}: {args.revision} revision after {args.clicks} clicks")
    print("\n\n".join(format_summary(s) for s in summaries))
    if args.json:
        args.json.write_text(json.dumps(summaries, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
