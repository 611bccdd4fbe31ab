"""Radial errors (pure tensor functions). Coordinates are (row, col); frame conversions are in
``misc.frames``."""
from __future__ import annotations

import torch


def radial_errors(pred_rc: torch.Tensor, true_rc: torch.Tensor) -> torch.Tensor:
    """(B, K, 2) x2 -> (B, K) Euclidean distances."""
    return torch.sqrt(((pred_rc - true_rc) ** 2).sum(-1))
