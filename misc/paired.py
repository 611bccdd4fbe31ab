"""Paired comparison of two runs on the same images (pure numpy): how far apart are they, and how sure is
that? Used for the ablation (tools/compare_runs.py --paired-to)."""
from __future__ import annotations

import numpy as np


def paired_bootstrap(errors_a: np.ndarray, errors_b: np.ndarray, resamples: int = 10000, level: float = 0.95,
                     seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean of the per-image difference a - b and its percentile-bootstrap confidence interval.

    errors_a, errors_b: (N,) or (N, C) per-image errors of two runs on the same N images in the same order
    (e.g. MRE after 0..C-1 clicks). The images are resampled with replacement, the same draw for both runs,
    so what the images have in common (a hard image is hard for both) cancels. Returns (mean, low, high),
    each (C,) (or scalars for (N,) inputs). An interval that contains 0 means these images do not tell
    the two runs apart at this level; it says nothing about another training seed."""
    a = np.asarray(errors_a, dtype=np.float64)
    b = np.asarray(errors_b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired errors need the same shape, got {a.shape} and {b.shape}")
    if a.ndim not in (1, 2) or a.shape[0] < 2:
        raise ValueError(f"expected (N,) or (N, C) errors of at least 2 images, got shape {a.shape}")
    if not (0.0 < level < 1.0):
        raise ValueError(f"level must lie in (0, 1), got {level}")
    if resamples < 1:
        raise ValueError(f"resamples must be at least 1, got {resamples}")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError("paired errors must be finite")
    difference = a - b
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, difference.shape[0], size=(resamples, difference.shape[0]))
    means = difference[draws].mean(axis=1)  # (R,) or (R, C)
    tail = (1.0 - level) / 2.0
    low, high = np.quantile(means, [tail, 1.0 - tail], axis=0)
    return difference.mean(axis=0), low, high
