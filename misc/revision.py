"""The interactive evaluation protocol of the paper: model revision versus manual revision.

Pure functions over a ``predict`` callable, so the protocol is testable without a network:
``predict(clicked, prev_probs) -> probs`` with clicked (B, K) bool, probs (B, K, H, W).
Coordinates are (row, col) on the network grid; errors that choose the next click are measured
in the frame named by the decision metric (original pixels for ``*_mm_*``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch

from misc.clicks import worst_unclicked
from misc.decoding import decode, hard_argmax
from misc.heatmaps import keep_channels
from misc.metrics import grid_to_original, radial_errors

COORD_KINDS = ("hargmax", "sargmax")


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
        if not self.click_order:
            return torch.zeros(0, 0, dtype=torch.long)
        return torch.stack(self.click_order, 1)


def replace_clicked(coords_rc: torch.Tensor, true_rc: torch.Tensor, clicked: torch.Tensor) -> torch.Tensor:
    """Clicked keypoints take their true position."""
    return torch.where(clicked[..., None], true_rc, coords_rc)


def choice_errors(coords: dict, true_rc, metric: str, size_rc, raw_size_rc, spacing_rc) -> torch.Tensor:
    """(B, K) errors by which the next click is chosen, e.g. 'hargmax_mm_MRE'."""
    kind, frame, _ = metric.split("_")
    pred = coords[kind]
    if frame == "mm":
        pred = grid_to_original(pred, size_rc, raw_size_rc, spacing_rc)
        true_rc = grid_to_original(true_rc, size_rc, raw_size_rc, spacing_rc)
    return radial_errors(pred, true_rc)


def run_revisions(predict: Callable, true_rc: torch.Tensor, max_clicks: int, size_rc, raw_size_rc,
                  spacing_rc=None, choice_metric: str = "hargmax_mm_MRE", subpixel: bool = True,
                  patch_size: int = 15, prev_only_clicked: bool = True) -> tuple[RevisionTrace, RevisionTrace]:
    """Simulate 0..max_clicks clicks for a batch; return (model_trace, manual_trace).

    Model revision: predict; clicked points are replaced by the truth; the worst remaining point
    becomes the next click; the next prediction receives the clicks and, as previous heatmap, the
    last prediction (restricted to the clicked channels when ``prev_only_clicked``).
    Manual revision: the 0-click prediction; each click replaces the worst remaining point by the
    truth and nothing else moves.
    """
    batch, k = true_rc.shape[:2]
    max_clicks = min(max_clicks, k)
    clicked = torch.zeros(batch, k, dtype=torch.bool, device=true_rc.device)
    manual_clicked = clicked.clone()
    prev = None
    model, manual = RevisionTrace(), RevisionTrace()
    frame = (size_rc, raw_size_rc, spacing_rc)
    for n in range(max_clicks + 1):
        probs = predict(clicked, prev)
        raw = {"hargmax": hard_argmax(probs), "sargmax": decode(probs, subpixel, patch_size)}
        revised = {kind: replace_clicked(raw[kind], true_rc, clicked) for kind in COORD_KINDS}
        if n == 0:
            manual_now = {kind: c.clone() for kind, c in revised.items()}
        manual_now = {kind: replace_clicked(c, true_rc, manual_clicked) for kind, c in manual_now.items()}
        for kind in COORD_KINDS:
            model.coords[kind].append(revised[kind])
            manual.coords[kind].append(manual_now[kind])
        if n == max_clicks:
            break
        next_model = worst_unclicked(choice_errors(revised, true_rc, choice_metric, *frame), clicked)
        next_manual = worst_unclicked(choice_errors(manual_now, true_rc, choice_metric, *frame), manual_clicked)
        rows = torch.arange(batch, device=true_rc.device)
        clicked = clicked.clone()
        clicked[rows, next_model] = True
        manual_clicked[rows, next_manual] = True
        model.click_order.append(next_model)
        manual.click_order.append(next_manual)
        prev = keep_channels(probs, clicked) if prev_only_clicked else probs
    return model, manual


def mre_per_image(coords_rc: torch.Tensor, true_rc: torch.Tensor, size_rc=None, raw_size_rc=None,
                  spacing_rc=None, frame: str = "pixel") -> torch.Tensor:
    """(B, C, K, 2) per click -> (B, C) mean radial error, on the grid or in original pixels ("mm")."""
    if frame == "mm":
        b, c = coords_rc.shape[:2]
        coords_rc = grid_to_original(coords_rc.reshape(b, -1, 2), size_rc, raw_size_rc, spacing_rc).reshape(coords_rc.shape)
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
