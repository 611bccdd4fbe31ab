"""Gaussian target heatmaps and click maps (pure tensor functions)."""
from __future__ import annotations

import torch


def gaussian_heatmaps(coords_rc: torch.Tensor, size_rc: tuple[int, int], std: float) -> torch.Tensor:
    """Unnormalised Gaussians exp(-d^2 / (2 std^2)), peak 1 at each keypoint.

    coords_rc: (B, K, 2) float (row, col) on the ``size_rc`` grid -> (B, K, rows, cols).
    The 2-D Gaussian factorises into a row and a column profile, so the grid costs one outer
    product per keypoint instead of a full (rows x cols x 2) distance tensor.
    """
    rows, cols = size_rc
    coords_rc = coords_rc.float()
    grid_r = torch.arange(rows, device=coords_rc.device, dtype=torch.float32)
    grid_c = torch.arange(cols, device=coords_rc.device, dtype=torch.float32)
    inv_two_var = 1.0 / (2.0 * float(std) ** 2)
    profile_r = torch.exp(-((grid_r - coords_rc[..., 0:1]) ** 2) * inv_two_var)  # (B, K, rows)
    profile_c = torch.exp(-((grid_c - coords_rc[..., 1:2]) ** 2) * inv_two_var)  # (B, K, cols)
    return profile_r.unsqueeze(-1) * profile_c.unsqueeze(-2)


def keep_channels(heatmaps: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Zero every channel not in ``keep`` (B, K) bool (the previous-heatmap rule, model/predictor.py)."""
    return heatmaps * keep[..., None, None].to(heatmaps.dtype)
