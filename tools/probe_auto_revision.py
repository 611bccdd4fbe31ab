"""Choose automatic revision's settings on the validation split: error scores and 0-click rounds.

    python tools/probe_auto_revision.py --detector runs/error_detector/best.pth --rounds 2 \
        --flagged 2 4 8 --min-score 0 1.5 2 --correctors shape none --json out.json

For the interactive model's 0-click prediction of every validation image: how well the detector's
scores, 1 - peak confidence and the shape-model residual find its errors (top-scored point among the 5
worst, mean per-image Spearman; errors in original pixels), then the MRE (original pixels) after each
of ``--rounds`` automatic rounds for every combination of points flagged per round, minimum score and
corrector ("shape": the shape model fitted to the other points; "none": the flagged points are hinted
where they are, which only tells the model to keep them, a control).
"""
from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dataset.keypoint_dataset import KeypointDataset, collate  # noqa: E402
from misc.frames import grid_to_original  # noqa: E402
from misc.ranking import score_quality  # noqa: E402
from model import read_checkpoint  # noqa: E402
from model.auto_revision import (AutoReviser, HeatmapShapeCorrector, ShapeCorrector,  # noqa: E402
                                 ShapeResidualScorer, VerifiedCorrector)
from model.error_detector import load_detector_checkpoint  # noqa: E402
from model.predictor import Predictor  # noqa: E402

HEATMAP_RADII = (4, 8, 12)            # search radii (grid px) of the heatmap correctors
VERIFIED_BASES = ("shape", "heatmap4", "heatmap8")
VERIFY_MARGINS = (0.0, 0.2)           # score drop a verified correction must bring
CORRECTOR_NAMES = ["shape", "none", *(f"heatmap{r}" for r in HEATMAP_RADII),
                   *(f"verified_{base}_{margin}" for base in VERIFIED_BASES for margin in VERIFY_MARGINS)]


def keep_in_place(image, points_rc, flagged, probs=None):
    return points_rc.detach().clone()


def build_correctors(shape_model, detector_scorer) -> dict:
    """Every corrector of CORRECTOR_NAMES, by name."""
    correctors = {"shape": ShapeCorrector(shape_model), "none": keep_in_place,
                  **{f"heatmap{r}": HeatmapShapeCorrector(shape_model, radius=r) for r in HEATMAP_RADII}}
    for base in VERIFIED_BASES:
        for margin in VERIFY_MARGINS:
            correctors[f"verified_{base}_{margin}"] = VerifiedCorrector(correctors[base], detector_scorer, margin)
    return correctors


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", default="pretrained/aasce_cpu.pth", help="the interactive model")
    parser.add_argument("--detector", required=True, help="error detector checkpoint (tools/train_error_detector.py)")
    parser.add_argument("--split", default="val", help="split of the model config's data to probe on")
    parser.add_argument("--rounds", type=int, default=2, help="automatic rounds after the 0-click prediction")
    parser.add_argument("--flagged", type=int, nargs="+", default=[4], metavar="N", help="points flagged per round")
    parser.add_argument("--min-score", type=float, nargs="+", default=[float("-inf")], metavar="S",
                        help="flag only points the detector scores above this")
    parser.add_argument("--correctors", nargs="+", default=["shape"], choices=CORRECTOR_NAMES, metavar="NAME",
                        help="where a flagged point is moved: " + ", ".join(CORRECTOR_NAMES))
    parser.add_argument("--hint-weights", type=float, nargs="+", default=[1.0],
                        metavar="W", help="peak of a hint's click map (1: as a click)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--json", default=None, help="write the report here")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    predictor = Predictor.from_checkpoint(args.checkpoint)
    config = read_checkpoint(Path(args.checkpoint)).config(())
    detector, shape_model, _ = load_detector_checkpoint(Path(args.detector))
    scorers = {"detector": detector.scorer(), "shape residual": ShapeResidualScorer(shape_model)}
    correctors = build_correctors(shape_model, scorers["detector"])
    dataset = KeypointDataset(config, args.split, train=False)
    batches = list(torch.utils.data.DataLoader(dataset, batch_size=16, collate_fn=collate))

    def original(points, batch):
        return grid_to_original(points.double(), predictor.size_rc, batch["raw_size_rc"].double(),
                                batch["spacing_rc"].double())

    def errors(points, batch):
        return (original(points, batch) - original(batch["coords_rc"], batch)).norm(dim=-1)

    report: dict = {"split": args.split, "images": len(dataset), "scores": {}, "rounds": []}
    with torch.inference_mode():
        first = []
        for batch in batches:
            clicked = torch.zeros(batch["coords_rc"].shape[:2], dtype=torch.bool)
            probs = predictor.probs(batch["image"], batch["coords_rc"], clicked)
            first.append(probs)
        base_errors = torch.cat([errors(predictor.points(p), b) for p, b in zip(first, batches)]).numpy()
        confidence = torch.cat([1 - p.flatten(2).amax(-1) for p in first]).numpy()
        all_scores = {"1 - confidence": confidence}
        for name, scorer in scorers.items():
            all_scores[name] = torch.cat([scorer(b["image"], predictor.points(p), p) for p, b in zip(first, batches)]).numpy()
        ranks = {name: np.argsort(np.argsort(v, axis=1), axis=1) for name, v in all_scores.items()}
        all_scores["detector + shape residual (mean rank)"] = ranks["detector"] + ranks["shape residual"]
        all_scores["detector + confidence (mean rank)"] = ranks["detector"] + ranks["1 - confidence"]
        for name, scores in all_scores.items():
            report["scores"][name] = score_quality(scores, base_errors)
        report["mre_0_clicks"] = float(base_errors.mean())
        print(json.dumps(report["scores"], indent=1))
        print(f"0 clicks, no automatic round: MRE {report['mre_0_clicks']:.2f}")
        for flagged, min_score, corrector, weight in itertools.product(args.flagged, args.min_score, args.correctors,
                                                                        args.hint_weights):
            reviser = AutoReviser(predictor, scorers["detector"], correctors[corrector], flagged, min_score, weight)
            per_round = [[] for _ in range(args.rounds)]
            hinted = [[] for _ in range(args.rounds)]
            for probs, batch in zip(first, batches):
                clicked = torch.zeros(probs.shape[:2], dtype=torch.bool)
                state = reviser.start(*probs.shape[:2])
                for r in range(args.rounds):
                    probs, state = reviser.round(batch["image"], probs, batch["coords_rc"], clicked, state)
                    per_round[r].append(errors(predictor.points(probs), batch))
                    hinted[r].append(state.hinted.sum(1).float())
            row = {"flagged": flagged, "min_score": min_score, "corrector": corrector, "hint_weight": weight,
                   "mre": [float(torch.cat(e).mean()) for e in per_round],
                   "mean_hinted": [float(torch.cat(h).mean()) for h in hinted]}
            report["rounds"].append(row)
            print(f"flagged {flagged} min score {min_score} corrector {corrector} hint weight {weight}: MRE after rounds "
                  f"{', '.join(f'{v:.2f}' for v in row['mre'])} (hinted {row['mean_hinted'][-1]:.1f} points)", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
