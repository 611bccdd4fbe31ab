"""How well a per-point error score ranks the real errors (pure numpy).

An error score (higher = more likely wrong; issue 39) is measured against the radial errors of the same
points, per image: does its top-scored point fall among the image's ``worst`` largest errors, and how
well does its order agree with the errors' order (Spearman's rank correlation, ties by average rank)?
"""
from __future__ import annotations

import numpy as np

__all__ = ["average_ranks", "spearman", "top_score_among_worst", "per_image_spearman", "score_quality"]


def average_ranks(values) -> np.ndarray:
    """Ranks 1..n of a 1-D array (smallest value rank 1); equal values share the mean of their ranks."""
    x = np.asarray(values, dtype=np.float64)
    if x.ndim != 1:
        raise ValueError(f"values must be 1-D, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError("values must be finite to be ranked")
    order = np.argsort(x, kind="stable")
    sorted_x = x[order]
    ranks = np.empty(len(x))
    start = 0
    while start < len(x):
        end = start
        while end + 1 < len(x) and sorted_x[end + 1] == sorted_x[start]:
            end += 1
        ranks[order[start:end + 1]] = (start + end) / 2 + 1  # ranks start+1 .. end+1, averaged
        start = end + 1
    return ranks


def spearman(a, b) -> float:
    """Spearman's rank correlation of two equally long 1-D arrays: the Pearson correlation of their
    average ranks. NaN when either is constant (no order to compare)."""
    ra, rb = average_ranks(a), average_ranks(b)
    if ra.shape != rb.shape:
        raise ValueError(f"a and b must have the same length, got {ra.shape} and {rb.shape}")
    da, db = ra - ra.mean(), rb - rb.mean()
    denominator = np.sqrt((da ** 2).sum() * (db ** 2).sum())
    return float((da * db).sum() / denominator) if denominator > 0 else float("nan")


def _check(scores, errors) -> tuple[np.ndarray, np.ndarray]:
    s, e = np.asarray(scores, dtype=np.float64), np.asarray(errors, dtype=np.float64)
    if s.ndim != 2 or s.shape != e.shape:
        raise ValueError(f"scores and errors must both be (images, points), got {s.shape} and {e.shape}")
    return s, e


def top_score_among_worst(scores, errors, worst: int = 5) -> np.ndarray:
    """(N,) bool: per image, is the point with the highest score (the first on ties) one of the ``worst``
    points with the largest errors? Ties at the border of the worst points count as worst (an error
    equal to the worst-th largest)."""
    s, e = _check(scores, errors)
    if not 1 <= worst <= s.shape[1]:
        raise ValueError(f"worst must be in 1..{s.shape[1]}, got {worst}")
    top = np.argmax(s, axis=1)
    threshold = -np.sort(-e, axis=1)[:, worst - 1]  # the worst-th largest error of each image
    return e[np.arange(len(e)), top] >= threshold


def per_image_spearman(scores, errors) -> np.ndarray:
    """(N,) Spearman correlation between score and error within each image."""
    s, e = _check(scores, errors)
    return np.array([spearman(si, ei) for si, ei in zip(s, e)])


def score_quality(scores, errors, worst: int = 5) -> dict:
    """{"top_among_worst": share of images, "mean_spearman": over images with a defined correlation,
    "images": N, "images_without_spearman": images where score or error is constant}."""
    hits = top_score_among_worst(scores, errors, worst)
    rho = per_image_spearman(scores, errors)
    defined = np.isfinite(rho)
    return {"top_among_worst": float(hits.mean()),
            "mean_spearman": float(rho[defined].mean()) if defined.any() else float("nan"),
            "images": int(len(hits)), "images_without_spearman": int((~defined).sum())}
