"""Click simulation: how many points a simulated user clicks, and which one next (pure functions)."""
from __future__ import annotations

import numpy as np
import torch

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
    """List (len B) of index arrays -> (B, K) bool mask."""
    mask = torch.zeros(batch, num_keypoints, dtype=torch.bool, device=device)
    for b, idx in enumerate(indices):
        if len(idx):
            mask[b, torch.as_tensor(np.asarray(idx), dtype=torch.long, device=device)] = True
    return mask
