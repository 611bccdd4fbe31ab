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


def same_seed_differences(per_image_mre: dict[tuple[int, str], np.ndarray], reference: str = "full",
                          resamples: int = 10000, level: float = 0.95, seed: int = 0
                          ) -> dict[str, dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]]]:
    """The ablation's paired differences, run by run, as :func:`paired_bootstrap` (mean, low, high).

    per_image_mre: {(training seed, variant): (N, C) per-image errors}, all on the same N images in the
    same order. Each variant other than ``reference`` is compared with the ``reference`` run of the same
    training seed (a variant whose seed has no reference run is left out); the ``reference`` runs of the
    other seeds are compared with that of the lowest seed, which shows how far two trainings of one recipe
    lie apart. Returns {variant: {training seed: (mean, low, high)}}, variants in the order first met."""
    differences: dict[str, dict[int, tuple]] = {}
    reference_seeds = sorted(s for s, variant in per_image_mre if variant == reference)
    for (training_seed, variant), errors in per_image_mre.items():
        if variant == reference:
            if training_seed == reference_seeds[0]:
                continue
            base = per_image_mre[(reference_seeds[0], reference)]
        elif training_seed in reference_seeds:
            base = per_image_mre[(training_seed, reference)]
        else:
            continue
        differences.setdefault(variant, {})[training_seed] = paired_bootstrap(errors, base, resamples, level, seed)
    return {variant: dict(sorted(by_seed.items())) for variant, by_seed in differences.items()}
