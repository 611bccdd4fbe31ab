"""Coordinate frames, the one place where points move between them (pure functions).

- grid: (row, col) on the network input (``Dataset.image_size``); what the network, the click maps and
  the decoding see.
- original: the X-ray as stored by the dataset, (row, col) or (x, y) = (col, row) in its pixels. On
  AASCE the pixel spacing is unknown, so results keys with ``mm`` (``sargmax_mm_MRE`` ...) are in
  ORIGINAL PIXELS there; with a known spacing (``spacing_rc``) they are in millimetres.

A grid point maps to the original image by scaling each axis by original size / grid size (the
network input is the whole image resized, without padding).
"""
from __future__ import annotations

import numpy as np
import torch

__all__ = ["grid_to_original", "grid_to_original_px", "original_xy_to_grid_rc", "grid_rc_to_original_xy",
           "flip_swap_permutation", "mirror_maps"]


def grid_to_original(coords_rc: torch.Tensor, grid_size_rc, raw_size_rc: torch.Tensor,
                     spacing_rc: torch.Tensor | None = None) -> torch.Tensor:
    """Grid (row, col) (B, ..., 2) -> original (row, col), times the pixel spacing when given.

    raw_size_rc: (B, 2) original (rows, cols) per image; spacing_rc: (B, 2) or None (= 1, AASCE:
    original pixels). The result has the dtype of ``coords_rc``.
    """
    scale = raw_size_rc.to(coords_rc) / torch.tensor([float(grid_size_rc[0]), float(grid_size_rc[1])],
                                                     device=coords_rc.device)
    if spacing_rc is not None:
        scale = scale * spacing_rc.to(coords_rc)
    return coords_rc * scale.reshape((scale.shape[0],) + (1,) * (coords_rc.dim() - 2) + (2,))


def grid_to_original_px(coords_rc, grid_size_rc, raw_size_rc) -> np.ndarray:
    """numpy float64 form of :func:`grid_to_original` without spacing: (N, ..., 2) -> original pixels."""
    coords = np.asarray(coords_rc, dtype=np.float64)
    grid = np.asarray(grid_size_rc, dtype=np.float64).reshape(2)
    raw = np.asarray(raw_size_rc, dtype=np.float64).reshape(-1, 2)
    if coords.shape[0] != raw.shape[0] or coords.shape[-1] != 2:
        raise ValueError(f"coords_rc {coords.shape} must be (N, ..., 2) with N = {raw.shape[0]} raw sizes")
    if (grid <= 0).any():
        raise ValueError(f"grid_size_rc must be positive, got {grid.tolist()}")
    return grid_to_original(torch.from_numpy(coords), grid, torch.from_numpy(raw)).numpy()


def _grid_per_px_xy(grid_size_rc, original_size_rc) -> np.ndarray:
    rows, cols = (float(v) for v in grid_size_rc)
    height, width = (float(v) for v in original_size_rc)
    return np.array([cols / width, rows / height])


def original_xy_to_grid_rc(points_xy, grid_size_rc, original_size_rc) -> np.ndarray:
    """One image: original-pixel (x, y) (..., 2) -> grid (row, col), float64.

    original_size_rc: (height, width) of that image."""
    grid_xy = np.asarray(points_xy, dtype=np.float64) * _grid_per_px_xy(grid_size_rc, original_size_rc)
    return np.ascontiguousarray(grid_xy[..., ::-1])


def grid_rc_to_original_xy(points_rc, grid_size_rc, original_size_rc) -> np.ndarray:
    """One image: grid (row, col) (..., 2) -> original-pixel (x, y), float64 (inverse of the above)."""
    points = np.asarray(points_rc, dtype=np.float64)[..., ::-1]
    return np.ascontiguousarray(points / _grid_per_px_xy(grid_size_rc, original_size_rc))


def flip_swap_permutation(num_keypoints: int) -> np.ndarray:
    """Index map that swaps left/right corners: 4v <-> 4v+1 and 4v+2 <-> 4v+3. In a mirrored image the
    top-left corner of a vertebra is the mirror of its top-right one, so mirroring points or heatmaps
    also swaps these labels (an involution: applying it twice is the identity)."""
    if num_keypoints % 4:
        raise ValueError(f"left/right swap needs 4 corners per vertebra, got {num_keypoints} keypoints")
    return np.arange(num_keypoints).reshape(-1, 2)[:, ::-1].reshape(-1)


def mirror_maps(maps: torch.Tensor) -> torch.Tensor:
    """Per-keypoint maps (B, K, rows, cols) of the left-right mirrored image: each map flipped along
    the columns and the corner labels swapped. Its own inverse."""
    perm = torch.from_numpy(flip_swap_permutation(maps.shape[1])).to(maps.device)
    return maps.flip(-1).index_select(1, perm)
