"""Automatic revision (after KeyBot, ECCV 2024): an error detector and a corrector in front of the user.

One automatic round on a prediction: decode the points (user-clicked points at their clicks), score
every point (higher = more likely wrong), flag the ``num_flagged`` highest-scored points that the user
has not clicked and whose score reaches ``min_score``, let the corrector propose positions for them, and
re-predict every point with the interactive model, the proposals given as hints (clicks) beside the
user's clicks. It never sees the truth. Hints persist between rounds and user clicks (a user click on a
hinted point replaces its hint).

    reviser = AutoReviser.from_checkpoint("pretrained/error_detector.pth", predictor)
    state = reviser.start(batch_size, num_keypoints)          # no hints yet
    probs, state = reviser.round(image, probs, click_rc, clicked, state)

Coordinates are (row, col) on the network grid, like ``model.predictor``.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from misc.decoding import decode
from misc.errors import BadInput
from misc.shape_model import ShapeModel, complete_shape
from model.error_detector import load_detector_checkpoint

__all__ = ["AutoReviser", "HintState", "HeatmapShapeCorrector", "ShapeCorrector", "ShapeResidualScorer",
           "VerifiedCorrector"]


@dataclass(frozen=True)
class HintState:
    """The automatic hints so far: positions (B, K, 2) grid (row, col), which points are hinted (B, K)
    bool, and the detector's scores (B, K) of the points before the last round (NaN before any)."""

    hint_rc: torch.Tensor
    hinted: torch.Tensor
    scores: torch.Tensor


class ShapeResidualScorer:
    """The shape-model baseline as a scorer: each point's distance to the shape model's reconstruction
    of the whole prediction (misc/shape_model.py), in grid pixels. Looks at no image."""

    def __init__(self, shape_model: ShapeModel):
        self.shape_model = shape_model

    def __call__(self, image: torch.Tensor, points_rc: torch.Tensor, probs=None) -> torch.Tensor:
        scores = [self.shape_model.residual_scores(p) for p in points_rc.detach().cpu().double().numpy()]
        return torch.as_tensor(np.stack(scores), dtype=torch.float32, device=points_rc.device)


class ShapeCorrector:
    """Proposes each flagged point where the shape model puts it when fitted to the unflagged points
    (misc.shape_model.complete_shape); unflagged points keep their positions."""

    def __init__(self, shape_model: ShapeModel, ridge: float = 1.0):
        self.shape_model, self.ridge = shape_model, float(ridge)

    def __call__(self, image: torch.Tensor, points_rc: torch.Tensor, flagged: torch.Tensor,
                 probs: torch.Tensor | None = None) -> torch.Tensor:
        proposal = points_rc.detach().clone()
        for b in range(len(points_rc)):
            if bool(flagged[b].any()):
                known = (~flagged[b]).cpu().numpy()
                full = complete_shape(self.shape_model, points_rc[b].cpu().double().numpy(), known, ridge=self.ridge)
                filled = torch.as_tensor(full, dtype=proposal.dtype, device=proposal.device)
                proposal[b, flagged[b]] = filled[flagged[b]]
        return proposal


class HeatmapShapeCorrector:
    """The shape model says roughly where a flagged point belongs, the image says exactly: each flagged
    point goes to the sub-pixel maximum of its own heatmap within ``radius`` grid pixels of the shape
    model's proposal (ShapeCorrector), or to the proposal when the heatmap is empty there (below
    ``min_probability``). A level shift often leaves a second mode at the right level."""

    def __init__(self, shape_model: ShapeModel, radius: float = 8.0, min_probability: float = 0.05,
                 ridge: float = 1.0, patch_size: int = 15):
        self.shape = ShapeCorrector(shape_model, ridge)
        self.radius, self.min_probability, self.patch_size = float(radius), float(min_probability), int(patch_size)

    def __call__(self, image, points_rc, flagged, probs=None) -> torch.Tensor:
        proposal = self.shape(image, points_rc, flagged)
        if probs is None or not bool(flagged.any()):
            return proposal
        rows, cols = probs.shape[-2:]
        grid_r = torch.arange(rows, device=probs.device, dtype=probs.dtype)[:, None]
        grid_c = torch.arange(cols, device=probs.device, dtype=probs.dtype)[None, :]
        b_index, k_index = torch.nonzero(flagged, as_tuple=True)
        centre = proposal[b_index, k_index].to(probs.dtype)  # (F, 2)
        near = (grid_r[None] - centre[:, 0, None, None]) ** 2 + (grid_c[None] - centre[:, 1, None, None]) ** 2 \
            <= self.radius ** 2
        windowed = probs[b_index, k_index] * near  # (F, rows, cols)
        found = windowed.flatten(1).amax(1) >= self.min_probability
        located = decode(windowed[None], True, self.patch_size)[0].to(proposal.dtype)  # (F, 2)
        proposal[b_index, k_index] = torch.where(found[:, None], located, proposal[b_index, k_index])
        return proposal


class VerifiedCorrector:
    """Another corrector's proposals, kept only where the detector scores the moved point lower than where
    it was by at least ``margin`` (the detector as a verifier); declined points are NaN (not hinted)."""

    def __init__(self, inner, scorer, margin: float = 0.0):
        self.inner, self.scorer, self.margin = inner, scorer, float(margin)

    def __call__(self, image, points_rc, flagged, probs=None) -> torch.Tensor:
        proposal = self.inner(image, points_rc, flagged, probs)
        before = self.scorer(image, points_rc, probs)
        after = self.scorer(image, proposal, probs)
        accept = flagged & (after <= before - self.margin)
        return torch.where(accept[..., None] | ~flagged[..., None], proposal,
                           torch.full_like(proposal, float("nan")))


Scorer = Callable[..., torch.Tensor]  # (image, points_rc, probs) -> (B, K) scores
Corrector = Callable[..., torch.Tensor]  # (image, points_rc, flagged, probs) -> proposed points_rc (NaN: declined)


class AutoReviser:
    """Detector + corrector + the interactive predictor (model.predictor.Predictor)."""

    def __init__(self, predictor, scorer: Scorer, corrector: Corrector, num_flagged: int = 4,
                 min_score: float = float("-inf"), hint_weight: float = 1.0):
        if int(num_flagged) < 1:
            raise ValueError(f"num_flagged must be at least 1, got {num_flagged}")
        if not 0 < float(hint_weight) <= 1:
            raise ValueError(f"hint_weight must be in (0, 1], got {hint_weight}")
        self.predictor, self.scorer, self.corrector = predictor, scorer, corrector
        self.num_flagged, self.min_score, self.hint_weight = int(num_flagged), float(min_score), float(hint_weight)

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, predictor, **overrides) -> "AutoReviser":
        """The detector checkpoint written by tools/train_error_detector.py (model/error_detector.py)."""
        detector, shape_model, settings = load_detector_checkpoint(Path(path))
        settings = {**settings, **overrides}
        parameters = getattr(predictor.net, "parameters", None)  # None: ONNX Runtime's stand-in (CPU)
        device = next(parameters()).device if parameters is not None else torch.device("cpu")
        detector = detector.to(device)
        return cls(predictor, detector.scorer(), build_corrector(shape_model, settings),
                   num_flagged=settings.get("num_flagged", 4), min_score=settings.get("min_score", float("-inf")),
                   hint_weight=settings.get("hint_weight", 1.0))

    def start(self, batch: int, num_keypoints: int, device=None) -> HintState:
        """No hints."""
        return HintState(torch.zeros(batch, num_keypoints, 2, device=device),
                         torch.zeros(batch, num_keypoints, dtype=torch.bool, device=device),
                         torch.full((batch, num_keypoints), float("nan"), device=device))

    def scores(self, image: torch.Tensor, points_rc: torch.Tensor, probs: torch.Tensor | None = None) -> torch.Tensor:
        """(B, K) the detector's scores of ``points_rc`` (higher = more likely wrong); ``probs``: the
        interactive model's heatmaps of the prediction they come from (a detector may read them)."""
        return self.scorer(image, points_rc, probs)

    def predict(self, image, click_rc, clicked, state: HintState, last_probs=None) -> torch.Tensor:
        """The interactive prediction with the user's clicks and the hints still standing."""
        hinted = state.hinted & ~clicked
        rc = torch.where(clicked[..., None], click_rc, state.hint_rc)
        weights = clicked.float() + self.hint_weight * hinted.float()
        return self.predictor.probs(image, rc, clicked | hinted, last_probs, click_weights=weights)

    def round(self, image, probs, click_rc, clicked, state: HintState) -> tuple[torch.Tensor, HintState]:
        """One automatic round on the prediction ``probs``: (the re-prediction, the new hint state)."""
        points = torch.where(clicked[..., None], click_rc, self.predictor.points(probs))
        scores = self.scores(image, points, probs)
        candidates = scores.masked_fill(clicked | state.hinted, float("-inf"))
        top = candidates.topk(min(self.num_flagged, candidates.shape[1]), dim=1)
        flagged = torch.zeros_like(clicked)
        flagged.scatter_(1, top.indices, top.values >= self.min_score)
        flagged &= torch.isfinite(candidates)
        keep = state.hinted & ~clicked
        trusted = torch.where(keep[..., None], state.hint_rc, points)
        proposal = self.corrector(image, trusted, flagged, probs)
        flagged &= ~torch.isnan(proposal).any(-1)  # a corrector declines a point with NaN
        hint_rc = torch.where(flagged[..., None], proposal, torch.where(keep[..., None], state.hint_rc, trusted))
        state = HintState(hint_rc, keep | flagged, scores)
        return self.predict(image, click_rc, clicked, state, probs), state


CORRECTORS = ("shape", "heatmap")


def build_corrector(shape_model: ShapeModel, settings: dict):
    """The corrector a detector checkpoint's settings name: "shape" (ShapeCorrector) or "heatmap"
    (HeatmapShapeCorrector with ``radius``)."""
    kind = settings.get("corrector", "shape")
    if kind == "shape":
        return ShapeCorrector(shape_model, settings.get("ridge", 1.0))
    if kind == "heatmap":
        return HeatmapShapeCorrector(shape_model, radius=settings.get("radius", 8.0), ridge=settings.get("ridge", 1.0))
    raise BadInput(f"unknown corrector '{kind}' in the detector's settings (use one of {', '.join(CORRECTORS)})")


def with_settings(reviser: AutoReviser, **settings) -> AutoReviser:
    """A copy with other flagging settings (num_flagged, min_score)."""
    copy = AutoReviser(reviser.predictor, reviser.scorer, reviser.corrector, reviser.num_flagged, reviser.min_score,
                       reviser.hint_weight)
    for key, value in settings.items():
        setattr(copy, key, value)
    return copy
