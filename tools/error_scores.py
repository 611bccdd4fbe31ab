"""How well the baseline error scores find a prediction's errors (issue 39): confidence and shape model.

    python tools/error_scores.py FOLDER --data DATA [--clicks 0] [--components 8] [--worst 5] [--json OUT]

FOLDER is a test.py output folder (predictions.npz); DATA the preprocessed data folder whose train.json
labels fit the shape model. For the model-revision prediction after ``--clicks`` clicks (default: the
0-click prediction), per image and point, the radial error in original pixels (sargmax decoding against
``true_original_rc``, as results.json's ``sargmax_mm_MRE``) is compared with two scores (higher = more
suspicious):
- confidence: 1 - the peak probability of the point's heatmap (``model_confidence``, written by test.py
  since issue 39; folders made before have none and the row is left out with a note);
- shape residual: the distance of the point to its reconstruction by a statistical shape model (PCA of
  ``--components`` components, misc/shape_model.py) fitted on the training labels, in original pixels;
- error detector: its scores of the 0-click prediction (``error_scores``, written by test.py
  --auto-revision N), when the folder has them and ``--clicks`` is 0.
Prints, per score, the share of images whose top-scored point is among the image's ``--worst`` worst
points, the mean per-image Spearman correlation between score and error (misc/ranking.py) and the
Spearman correlation over all points of all images pooled, beside what a random score gets (worst / 68
and 0).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dataset.keypoint_dataset import read_table  # noqa: E402
from misc.errors import BadInput, report_bad_input  # noqa: E402
from misc.ranking import score_quality, spearman  # noqa: E402
from misc.shape_model import DEFAULT_COMPONENTS, NUM_KEYPOINTS, fit_shape_model  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path, help="a test.py output folder (holds predictions.npz)")
    parser.add_argument("--data", type=Path, required=True,
                        help="the preprocessed data folder (its train.json labels fit the shape model)")
    parser.add_argument("--clicks", type=int, default=0, help="score the prediction after this many clicks "
                                                              "(default: %(default)s)")
    parser.add_argument("--components", type=int, default=DEFAULT_COMPONENTS,
                        help="shape-model PCA components (default: %(default)s)")
    parser.add_argument("--worst", type=int, default=5, help="how many worst points count (default: %(default)s)")
    parser.add_argument("--json", type=Path, help="also write the numbers as JSON here")
    return parser.parse_args(argv)


def load_predictions(folder: Path, clicks: int) -> dict:
    """{"pred_xy", "true_xy": (N, 68, 2) original pixels, "confidence": (N, 68) or None, "names"}."""
    path = folder / "predictions.npz"
    if not path.is_file():
        raise BadInput(f"{path}: not found (write it with test.py --out {folder})")
    arrays = np.load(path)
    for needed in ("model_sargmax_original_rc", "true_original_rc", "names"):
        if needed not in arrays:
            raise BadInput(f"{path}: no '{needed}' (not an evaluation written by test.py?)")
    pred = arrays["model_sargmax_original_rc"]
    if pred.shape[2] != NUM_KEYPOINTS:
        raise BadInput(f"{path}: {pred.shape[2]} keypoints, the shape model is for {NUM_KEYPOINTS} (AASCE)")
    available = pred.shape[1] - 1
    if not 0 <= clicks <= available:
        raise BadInput(f"--clicks {clicks}: {path} holds 0..{available} clicks")
    confidence = arrays["model_confidence"][:, clicks].astype(np.float64) if "model_confidence" in arrays else None
    # the error detector's scores (test.py --auto-revision N) are of the 0-click prediction only
    detector = arrays["error_scores"].astype(np.float64) if "error_scores" in arrays and clicks == 0 else None
    return {"pred_xy": pred[:, clicks, :, ::-1].astype(np.float64),
            "true_xy": arrays["true_original_rc"][..., ::-1].astype(np.float64),
            "confidence": confidence, "detector": detector, "names": [str(n) for n in arrays["names"]]}


def training_shapes(data: Path) -> np.ndarray:
    """(N, 68, 2) training labels, (x, y) in original pixels."""
    table = read_table(data, "train")
    try:
        shapes = np.array([entry["label"] for entry in table], dtype=np.float64)
    except (KeyError, TypeError, ValueError) as exc:
        raise BadInput(f"{data / 'train.json'}: every entry needs a 'label' of {NUM_KEYPOINTS} x 2 numbers ({exc})")
    if shapes.shape[1:] != (NUM_KEYPOINTS, 2):
        raise BadInput(f"{data / 'train.json'}: labels have shape {shapes.shape[1:]}, expected ({NUM_KEYPOINTS}, 2)")
    return shapes


def scores_and_errors(predictions: dict, train_xy: np.ndarray, components: int) -> tuple[dict, np.ndarray]:
    """({score name: (N, 68)}, errors (N, 68) in original pixels)."""
    errors = np.linalg.norm(predictions["pred_xy"] - predictions["true_xy"], axis=-1)
    model = fit_shape_model(train_xy, components)
    scores = {}
    if predictions["confidence"] is not None:
        scores["confidence"] = 1.0 - predictions["confidence"]
    scores["shape_residual"] = np.stack([model.residual_scores(p) for p in predictions["pred_xy"]])
    if predictions.get("detector") is not None:
        scores["error_detector"] = predictions["detector"]
    return scores, errors


def format_table(summary: dict) -> str:
    worst = summary["worst"]
    lines = [f"{summary['folder']}: model prediction after {summary['clicks']} clicks, {summary['images']} images, "
             f"mean radial error {summary['mre_px']:.2f} px (original pixels)",
             "", f"| score | top-scored point among the {worst} worst | mean Spearman (score, error) per image "
             "| Spearman over all points |", "|---|---|---|---|"]
    for name, quality in summary["scores"].items():
        lines.append(f"| {name} | {100 * quality['top_among_worst']:.1f} % | {quality['mean_spearman']:.3f} | "
                     f"{quality['pooled_spearman']:.3f} |")
    lines.append(f"| random (expected) | {100 * worst / NUM_KEYPOINTS:.1f} % | 0 | 0 |")
    lines += [f"note: {note}" for note in summary["notes"]]
    return "\n".join(lines)


@report_bad_input
def main(argv=None) -> int:
    args = parse_args(argv)
    predictions = load_predictions(args.folder, args.clicks)
    scores, errors = scores_and_errors(predictions, training_shapes(args.data), args.components)
    notes = []
    if predictions["confidence"] is None:
        notes.append("no model_confidence in predictions.npz (written before issue 39): re-run test.py")
    summary = {"folder": str(args.folder), "data": str(args.data), "clicks": args.clicks,
               "components": args.components, "worst": args.worst, "images": int(len(errors)),
               "mre_px": float(errors.mean()),
               "scores": {name: {**score_quality(s, errors, args.worst),
                                 "pooled_spearman": spearman(s.ravel(), errors.ravel())}
                          for name, s in scores.items()},
               "notes": notes}
    print(format_table(summary))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(summary, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
