"""A training-label repair for AASCE annotations that list the topmost vertebra last.

The 68 AASCE points are 17 vertebrae of 4 corners, listed T1..L5. In 17 of the 417 training label files
in ../shared the topmost vertebra comes last ([T2..L5, T1]): on such an image every channel's target sits
one vertebra below its anatomy and "L5" lies at the top of the image. Trained on as they are, these
images teach the network the wrong vertebra for every channel. ``Dataset.train_vertebra_order:
fix_rotated`` moves that vertebra to the front for training only; validation and evaluation always use
the labels as they are (the paper's protocol, and what ``angles.csv`` was computed on). Other
irregularities (6 files: a last vertebra level with the one above it, half a vertebra at the top) are
left alone: no single reordering repairs them.
"""
from __future__ import annotations

import numpy as np

from misc.cobb import POINTS_PER_VERTEBRA


def _vertebra_rows(points_xy: np.ndarray, points_per_vertebra: int) -> np.ndarray:
    points_xy = np.asarray(points_xy)
    if points_xy.ndim != 2 or points_xy.shape[1] != 2 or points_xy.shape[0] % points_per_vertebra:
        raise ValueError(f"expected (K, 2) points with K a multiple of {points_per_vertebra}, "
                         f"got shape {points_xy.shape}")
    return points_xy.reshape(-1, points_per_vertebra, 2)[:, :, 1].mean(axis=1)


def topmost_listed_last(points_xy: np.ndarray, points_per_vertebra: int = POINTS_PER_VERTEBRA) -> bool:
    """True when the last vertebra of the list (mean row of its corners) lies above every other one."""
    rows = _vertebra_rows(points_xy, points_per_vertebra)
    return bool(rows.size > 1 and rows[-1] < rows[:-1].min())


def unrotate_vertebrae(points_xy: np.ndarray, points_per_vertebra: int = POINTS_PER_VERTEBRA) -> np.ndarray:
    """``points_xy`` (K, 2) with a topmost-listed-last vertebra moved to the front, else unchanged.

    Whole vertebrae move, so the corner order inside each one stays as labelled.
    """
    points_xy = np.asarray(points_xy)
    if not topmost_listed_last(points_xy, points_per_vertebra):
        return points_xy
    return np.roll(points_xy, points_per_vertebra, axis=0)


def is_top_to_bottom(points_xy: np.ndarray, points_per_vertebra: int = POINTS_PER_VERTEBRA) -> bool:
    """True when the vertebrae's mean rows increase strictly down the list."""
    return bool(np.all(np.diff(_vertebra_rows(points_xy, points_per_vertebra)) > 0))
