"""Heatmap losses (pure tensor functions)."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def heatmap_bce(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean binary cross-entropy between sigmoid(logits) and Gaussian targets.

    Computed from logits for numerical stability; equals the official BCE(sigmoid(logits)) to float
    precision wherever the official one is finite.
    """
    return F.binary_cross_entropy_with_logits(logits, target)
