"""The interactive evaluation protocol of the paper: model revision versus manual revision.

Pure functions over a ``predict`` callable and a simulated user, so the protocol is testable without a
network: ``predict(clicked, last_probs) -> probs`` with clicked (B, K) bool, probs (B, K, H, W) (the
previous-heatmap rule is the predictor's business: ``model.predictor.Predictor.bind``), ``decode(probs)
-> {kind: (B, K, 2)}`` and a ``misc.clicks.Clicker`` (truth, clicks, worst-point rule). Coordinates are
(row, col) on the network grid; errors that choose the next click are measured in the clicker's frame
(original pixels for ``*_mm_*`` decision metrics).

``run_auto_revisions`` is the same model revision with automatic rounds (model/auto_revision.py) after
each prediction: a detector flags suspicious points, a corrector proposes positions, the model
re-predicts with them as hints. The rounds see the clicked mask only, never the truth.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch

from misc.clicks import Clicker
from misc.frames import grid_to_original
from misc.metrics import radial_errors

COORD_KINDS = ("hargmax", "sargmax")
REVISIONS = ("model", "manual")  # the paper's protocol
AUTO_REVISION = "auto"  # model revision with automatic rounds (run_auto_revisions), when it was evaluated


def revisions_in(mapping) -> tuple[str, ...]:
    """The revisions that evaluate()'s arrays (or predictions.npz, or results.json's dict) hold: model,
    manual and, when it was evaluated, auto."""
    has_auto = AUTO_REVISION in mapping or f"{AUTO_REVISION}_sargmax_rc" in mapping
    return REVISIONS + ((AUTO_REVISION,) if has_auto else ())


@dataclass
class RevisionTrace:
    """Per click n = 0..max_clicks, the coordinates of one revision and the clicks made so far."""

    coords: dict = field(default_factory=lambda: {kind: [] for kind in COORD_KINDS})  # kind -> [(B,K,2)]
    click_order: list = field(default_factory=list)  # n-th click: (B,) keypoint index

    def stacked(self, kind: str) -> torch.Tensor:
        """(B, max_clicks + 1, K, 2)."""
        return torch.stack(self.coords[kind], 1)

    def clicks(self) -> torch.Tensor:
        """(B, number of clicks made)."""
        if not self.click_order:  # no click yet: one empty row per image, as concatenating batches needs
            batch = len(self.coords[COORD_KINDS[0]][0]) if self.coords[COORD_KINDS[0]] else 0
            return torch.zeros(batch, 0, dtype=torch.long)
        return torch.stack(self.click_order, 1)


def choice_clicker(true_rc, metric: str, size_rc, raw_size_rc, spacing_rc=None) -> tuple[Clicker, str]:
    """(a clicker measuring errors in the frame of ``metric``, e.g. 'hargmax_mm_MRE', and the decoding
    kind whose errors choose the next click)."""
    kind, frame, _ = metric.split("_")
    to_frame = None
    if frame == "mm":
        def to_frame(coords_rc):
            return grid_to_original(coords_rc, size_rc, raw_size_rc, spacing_rc)
    return Clicker(true_rc, to_choice_frame=to_frame), kind


def run_revisions(predict: Callable, decode: Callable, clicker: Clicker, max_clicks: int,
                  choice_kind: str = "hargmax") -> tuple[RevisionTrace, RevisionTrace]:
    """Simulate 0..max_clicks clicks for a batch; return (model_trace, manual_trace).

    Model revision: predict; clicked points take their true position; the worst remaining point
    (by the ``choice_kind`` decoding) becomes the next click; the next prediction receives the clicks
    and the last prediction. Manual revision: the 0-click prediction; each click puts the worst
    remaining point at its true position and nothing else moves. ``clicker`` starts without clicks.
    """
    max_clicks = min(max_clicks, clicker.true_rc.shape[1])
    manual_clicker = clicker.fresh()
    probs = None
    model, manual = RevisionTrace(), RevisionTrace()
    for n in range(max_clicks + 1):
        probs = predict(clicker.clicked, probs)
        revised = {kind: clicker.revise(c) for kind, c in decode(probs).items()}
        if n == 0:
            manual_now = {kind: c.clone() for kind, c in revised.items()}
        manual_now = {kind: manual_clicker.revise(c) for kind, c in manual_now.items()}
        for kind in COORD_KINDS:
            model.coords[kind].append(revised[kind])
            manual.coords[kind].append(manual_now[kind])
        if n == max_clicks:
            break
        model.click_order.append(clicker.click_worst(revised[choice_kind]))
        manual.click_order.append(manual_clicker.click_worst(manual_now[choice_kind]))
    return model, manual


def run_auto_revisions(predict: Callable, auto_round: Callable, decode: Callable, clicker: Clicker,
                       max_clicks: int, rounds: int, state, between_clicks: bool = True,
                       choice_kind: str = "hargmax") -> tuple[RevisionTrace, torch.Tensor]:
    """Model revision with ``rounds`` automatic rounds after the predictions; return (trace, scores).

    ``predict(clicked, last_probs, state) -> probs``: the prediction with the user's clicks and the
    hints standing in ``state``; ``auto_round(probs, clicked, state) -> (probs, state)``: one automatic
    round; ``state``: the hint state before any round (e.g. ``AutoReviser.start``), which must carry the
    detector's ``scores`` (B, K) of the prediction the round looked at (``HintState``).

    At click 0: predict without clicks, then ``rounds`` automatic rounds; clicked points take their true
    position; the worst remaining point of this revised prediction (by ``choice_kind``) becomes the next
    click; the next prediction receives the clicks, the standing hints and the last (revised)
    prediction, followed by ``rounds`` rounds again when ``between_clicks`` (else none). With
    ``rounds == 0`` this is ``run_revisions``' model revision. Neither callable receives the truth: the
    caller gives them click positions, which are the truth at clicked points only.

    scores: (B, K) the detector's scores of the 0-click prediction (the first round's), NaN without rounds.
    """
    if rounds < 0:
        raise ValueError(f"rounds must be >= 0, got {rounds}")
    max_clicks = min(max_clicks, clicker.true_rc.shape[1])
    scores = torch.full(clicker.true_rc.shape[:2], float("nan"), device=clicker.true_rc.device)
    probs = None
    trace = RevisionTrace()
    for n in range(max_clicks + 1):
        probs = predict(clicker.clicked, probs, state)
        for round_index in range(rounds if n == 0 or between_clicks else 0):
            probs, state = auto_round(probs, clicker.clicked, state)
            if n == 0 and round_index == 0:
                scores = state.scores
        revised = {kind: clicker.revise(c) for kind, c in decode(probs).items()}
        for kind in COORD_KINDS:
            trace.coords[kind].append(revised[kind])
        if n == max_clicks:
            break
        trace.click_order.append(clicker.click_worst(revised[choice_kind]))
    return trace, scores


def mre_per_image(coords_rc: torch.Tensor, true_rc: torch.Tensor, size_rc=None, raw_size_rc=None,
                  spacing_rc=None, frame: str = "pixel") -> torch.Tensor:
    """(B, C, K, 2) per click -> (B, C) mean radial error, on the grid ("pixel") or in the original frame
    ("mm": original pixels on AASCE, which has no pixel spacing; millimetres when ``spacing_rc`` is known)."""
    if frame == "mm":
        coords_rc = grid_to_original(coords_rc, size_rc, raw_size_rc, spacing_rc)
        true_rc = grid_to_original(true_rc, size_rc, raw_size_rc, spacing_rc)
    return radial_errors(coords_rc, true_rc[:, None]).mean(-1)


def clicks_to_reach(per_image_mre: torch.Tensor, threshold: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per image, the fewest clicks whose MRE is at most ``threshold`` (NoC).

    per_image_mre: (B, C). Images that never get there count as C - 1 clicks (the budget) and are
    flagged in the second output, like NoC in interactive segmentation.
    """
    reached = per_image_mre <= threshold
    budget = per_image_mre.shape[1] - 1
    first = torch.where(reached.any(1), reached.float().argmax(1), torch.full_like(reached[:, 0], budget, dtype=torch.long))
    return first.long(), ~reached.any(1)
