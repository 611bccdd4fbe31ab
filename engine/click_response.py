"""How much a network listens to a click: move a click away from the truth and see what follows.

A network that uses clicks moves the clicked point (and, through the shape of the spine, its
neighbours) towards wherever the user puts it; one that ignores them leaves every point where the
image alone put it. The *follow ratio* measures that: the displacement of a prediction, projected
on the click's displacement, divided by the length of the click's displacement (1 = follows fully,
0 = ignores). Pure functions on predictions; the network call is passed in.
"""
from __future__ import annotations

from typing import Callable

import torch

# predict(click_rc (B, K, 2), clicked (B, K) bool) -> predicted coordinates (B, K, 2)
Predict = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def follow_ratio(before_rc: torch.Tensor, after_rc: torch.Tensor, shift_rc: torch.Tensor) -> torch.Tensor:
    """(B, K) share of ``shift_rc`` (B, 2) by which each point moved from ``before_rc`` to ``after_rc``."""
    shift = shift_rc[:, None, :].to(before_rc.dtype)
    return ((after_rc - before_rc) * shift).sum(-1) / (shift * shift).sum(-1).clamp_min(1e-12)


def displaced_click_response(predict: Predict, true_rc: torch.Tensor,
                             index: int, shift_rc: tuple[float, float], neighbours: int = 4) -> dict[str, float]:
    """Click keypoint ``index`` at its true position and at the truth + ``shift_rc``; compare.

    ``predict(click_rc, clicked)`` returns (B, K, 2) coordinates for clicks at ``click_rc`` (B, K, 2) on
    the channels where ``clicked`` (B, K) is True. Returns mean follow ratios of the clicked point, of
    its ``neighbours`` on each side, and of all other points.
    """
    batch, num_keypoints, _ = true_rc.shape
    clicked = torch.zeros(batch, num_keypoints, dtype=torch.bool)
    clicked[:, index] = True
    shift = torch.tensor(shift_rc, dtype=true_rc.dtype).expand(batch, 2)
    moved = true_rc.clone()
    moved[:, index] += shift
    at_truth, displaced = predict(true_rc, clicked), predict(moved, clicked)
    ratio = follow_ratio(at_truth, displaced, shift)
    near = [i for i in range(index - neighbours, index + neighbours + 1) if 0 <= i < num_keypoints and i != index]
    far = [i for i in range(num_keypoints) if i != index and i not in near]
    return {"clicked": float(ratio[:, index].mean()), "neighbours": float(ratio[:, near].mean()),
            "others": float(ratio[:, far].mean())}
