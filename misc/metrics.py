"""Radial errors and frame conversions (pure tensor functions). Coordinates are (row, col)."""
from __future__ import annotations

import torch


def radial_errors(pred_rc: torch.Tensor, true_rc: torch.Tensor) -> torch.Tensor:
    """(B, K, 2) x2 -> (B, K) Euclidean distances."""
    return torch.sqrt(((pred_rc - true_rc) ** 2).sum(-1))


def grid_to_original(coords_rc: torch.Tensor, size_rc, raw_size_rc: torch.Tensor,
                     spacing_rc: torch.Tensor | None = None) -> torch.Tensor:
    """Rescale grid coordinates to the original image (x pixel spacing, giving "mm").

    raw_size_rc: (B, 2) original (rows, cols); spacing_rc: (B, 2), ones when None (AASCE).
    """
    scale = raw_size_rc.to(coords_rc) / torch.tensor([float(size_rc[0]), float(size_rc[1])], device=coords_rc.device)
    if spacing_rc is not None:
        scale = scale * spacing_rc.to(coords_rc)
    return coords_rc * scale[:, None, :]
