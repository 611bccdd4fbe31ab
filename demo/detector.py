"""The error detector in the annotation tool: per-point error scores and one automatic revision round.

    checker = PointChecker.from_checkpoint("pretrained/error_detector.pth", predictor)
    scores = checker.scores(image_t, points_rc, probs)          # (K,) higher = more likely wrong
    fix = checker.auto_fix(image_t, probs, fixed_rc)           # one AutoReviser round

It wraps ``model.auto_revision.AutoReviser`` (detector + shape-model corrector + the interactive model)
around the demo's ``KeypointPredictor``: every network call, the detector's included, runs under the
predictor's lock, so an auto-fix and a refinement of another image never run at once. Coordinates are
(row, col) on the network grid, as in ``demo.predictor``; ``demo.session`` converts.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from demo.predictor import KeypointPredictor
from misc.errors import BadInput
from model.auto_revision import AutoReviser

__all__ = ["AutoFix", "PointChecker"]


@dataclass
class AutoFix:
    """One automatic round: the re-prediction, the points it flagged and moved by hints, its time."""

    points_rc: torch.Tensor  # (K, 2) decoded points of the re-prediction
    probs: torch.Tensor  # (K, rows, cols)
    confidence: torch.Tensor  # (K,)
    flagged: list[int]  # the points the detector flagged and the corrector moved (hints), ascending
    seconds: float


class PointChecker:
    """The detector's scores of a set of points, and auto-fix rounds, for one ``KeypointPredictor``."""

    def __init__(self, reviser: AutoReviser, predictor: KeypointPredictor, source: str = ""):
        self.reviser, self.predictor, self.source = reviser, predictor, source

    @classmethod
    def from_checkpoint(cls, path: str | Path, predictor: KeypointPredictor) -> "PointChecker":
        """BadInput naming the file when it is missing, unreadable, or does not fit the model (another grid
        or point count: found by scoring a blank image once, which also warms the detector up)."""
        path = Path(path)
        # Auto-fix is asked for by the user: it always acts on the top-scored points, whatever minimum
        # score the protocol's setting (chosen for rounds nobody asked for) keeps
        checker = cls(AutoReviser.from_checkpoint(path, predictor.core, min_score=float("-inf")), predictor, str(path))
        rows, cols = predictor.size_rc
        blank = torch.zeros(1, 3, rows, cols)
        spread = np.stack([np.linspace(0.1, 0.9, predictor.num_keypoints) * rows,
                           np.full(predictor.num_keypoints, 0.5 * cols)], axis=1)
        try:
            scores = checker.scores(blank, spread, torch.zeros(predictor.num_keypoints, rows, cols))
        except (RuntimeError, ValueError) as exc:
            raise BadInput(f"error detector '{path}' does not fit the model ({predictor.num_keypoints} points on a "
                           f"{rows} x {cols} grid): {str(exc).splitlines()[0][:200]}") from None
        if scores.shape != (predictor.num_keypoints,) or not np.isfinite(scores).all():
            raise BadInput(f"error detector '{path}' gives {scores.shape} scores, not {predictor.num_keypoints} "
                           f"finite ones, on a blank test image")
        return checker

    def scores(self, image_t: torch.Tensor, points_rc: np.ndarray, probs: torch.Tensor) -> np.ndarray:
        """(K,) float64 scores of ``points_rc`` (K, 2) grid (row, col) on the image ``image_t`` (1, 3, rows, cols),
        given the model's heatmaps ``probs`` (K, rows, cols) of the prediction they come from."""
        points = torch.as_tensor(np.asarray(points_rc, dtype=np.float32))[None]
        with self.predictor._lock, torch.inference_mode():
            return self.reviser.scores(image_t, points, probs.float()[None])[0].double().numpy()

    def auto_fix(self, image_t: torch.Tensor, probs: torch.Tensor, fixed_rc: dict[int, tuple[float, float]]) -> AutoFix:
        """One round of ``AutoReviser.round`` on the prediction ``probs`` (K, rows, cols), the fixed
        points as the user's clicks, with no earlier hints."""
        start = time.perf_counter()
        click_rc, clicked = self.predictor.clicks(fixed_rc)
        hints = self.reviser.start(1, self.predictor.num_keypoints)
        with self.predictor._lock, torch.inference_mode():
            new_probs, hints = self.reviser.round(image_t, probs.float()[None], click_rc, clicked, hints)
            points = self.predictor.core.points(new_probs)[0]
        flagged = torch.nonzero(hints.hinted[0] & ~clicked[0]).flatten().tolist()
        return AutoFix(points, new_probs[0], new_probs[0].amax(dim=(-2, -1)), flagged, time.perf_counter() - start)

