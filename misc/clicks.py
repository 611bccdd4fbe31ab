"""Click simulation: how many points a simulated user clicks, which one next, and the simulated user
(``Clicker``) that the evaluation protocol and the training-time click rounds share."""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from misc.metrics import radial_errors

# P(n initial clicks) for n = 0..12 in the official AASCE training.
DATASET16_CLICK_PROBS = (1 / 8, 1 / 2, 1 / 4, 1 / 16, 1 / 32, 1 / 64, 1 / 128, 1 / 256, 1 / 512,
                         1 / 1024, 1 / 2048, 1 / 4096, 1 / 4096)


def click_count_probs(name: str, max_hint: int) -> np.ndarray:
    """Probabilities of 0..max_hint-1 initial clicks: 'dataset16' (official) or 'uniform'."""
    if name == "dataset16":
        probs = np.zeros(max(max_hint, 1))
        n = min(max_hint, len(DATASET16_CLICK_PROBS))
        probs[:n] = DATASET16_CLICK_PROBS[:n]
    elif name == "uniform":
        probs = np.ones(max(max_hint, 1))
    else:
        raise ValueError(f"unknown click-count distribution '{name}' (use 'dataset16' or 'uniform')")
    if probs.sum() <= 0:
        raise ValueError(f"click-count distribution '{name}' with max_hint={max_hint} has no mass")
    return probs / probs.sum()


def sample_initial_clicks(rng: np.random.Generator, num_keypoints: int, probs: np.ndarray) -> np.ndarray:
    """Draw n ~ probs, then n distinct keypoint indices uniformly (sorted)."""
    n = int(rng.choice(len(probs), p=probs))
    n = min(n, num_keypoints)
    return np.sort(rng.choice(num_keypoints, size=n, replace=False)).astype(np.int64)


def worst_unclicked(errors: torch.Tensor, clicked: torch.Tensor) -> torch.Tensor:
    """Index (B,) of the largest error among keypoints not yet clicked (first on ties).

    With every keypoint clicked it returns the first keypoint; callers stop before that.
    """
    masked = errors.masked_fill(clicked, float("-inf"))
    return masked.argmax(-1)


def indices_to_mask(indices: list, batch: int, num_keypoints: int, device=None) -> torch.Tensor:
    """List (len B) of index arrays -> (B, K) bool mask, built on the host and moved in one copy."""
    mask = np.zeros((batch, num_keypoints), dtype=bool)
    for b, idx in enumerate(indices):
        mask[b, np.asarray(idx, dtype=np.int64)] = True
    return torch.from_numpy(mask).to(device)


def replace_clicked(coords_rc: torch.Tensor, true_rc: torch.Tensor, clicked: torch.Tensor) -> torch.Tensor:
    """Clicked keypoints take their true position."""
    return torch.where(clicked[..., None], true_rc, coords_rc)


class Clicker:
    """The simulated user of RITM-style evaluation and training: it knows the truth, remembers what it
    clicked, clicks the worst not-yet-clicked point, and puts clicked points at their true position.

    true_rc: (B, K, 2) grid (row, col). ``to_choice_frame`` maps grid coordinates (B, K, 2) to the
    frame in which errors choose the next click (None: the grid itself; the protocol passes the
    grid -> original-pixel conversion for ``*_mm_*`` decision metrics).
    """

    def __init__(self, true_rc: torch.Tensor, clicked: torch.Tensor | None = None,
                 to_choice_frame: Callable[[torch.Tensor], torch.Tensor] | None = None):
        self.true_rc = true_rc
        self.clicked = (torch.zeros(true_rc.shape[:2], dtype=torch.bool, device=true_rc.device)
                        if clicked is None else clicked)
        self.to_choice_frame = to_choice_frame

    def fresh(self) -> "Clicker":
        """The same user before any click."""
        return Clicker(self.true_rc, None, self.to_choice_frame)

    def revise(self, coords_rc: torch.Tensor) -> torch.Tensor:
        return replace_clicked(coords_rc, self.true_rc, self.clicked)

    def errors(self, coords_rc: torch.Tensor) -> torch.Tensor:
        """(B, K) radial errors in the choice frame."""
        if self.to_choice_frame is None:
            pred, true = coords_rc, self.true_rc
        else:
            pred, true = self.to_choice_frame(coords_rc), self.to_choice_frame(self.true_rc)
        return radial_errors(pred, true)

    def click_worst(self, coords_rc: torch.Tensor) -> torch.Tensor:
        """Click, per image, the not-yet-clicked point farthest from the truth; return its index (B,)."""
        worst = worst_unclicked(self.errors(coords_rc), self.clicked)
        clicked = self.clicked.clone()  # a new mask: masks handed out before stay as they were
        clicked[torch.arange(len(worst), device=worst.device), worst] = True
        self.clicked = clicked
        return worst
