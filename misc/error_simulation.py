"""Typical keypoint errors simulated on a set of vertebra corners (pure numpy), to train the error detector.

Points are (K, 2) in any one frame, vertebra-major: vertebra v holds points 4v .. 4v+3 in the AASCE
order top-left, top-right, bottom-left, bottom-right. Each function returns a new array.

The errors (what the interactive model and annotators get wrong on spine X-rays, after KeyBot):
- a vertebra shifted a level: its corners put on the neighbouring vertebra;
- a run of vertebrae shifted a level together (the run's far end extrapolated by one vertebra step);
- corners swapped (left with right, or top with bottom);
- a vertebra collapsed into a triangle: one corner put on another;
- one point displaced; plain jitter of every point.
"""
from __future__ import annotations

import numpy as np

POINTS_PER_VERTEBRA = 4

__all__ = ["jitter", "shift_level", "shift_run", "swap_corners", "collapse_corner", "displace_point",
           "simulate_errors"]


def _vertebrae(points: np.ndarray) -> np.ndarray:
    points = np.asarray(points, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] != 2 or points.shape[0] % POINTS_PER_VERTEBRA:
        raise ValueError(f"points must be (K, 2) with K a multiple of {POINTS_PER_VERTEBRA}, got {points.shape}")
    return points.reshape(-1, POINTS_PER_VERTEBRA, 2).copy()


def _level(vertebrae: np.ndarray, v: int) -> np.ndarray:
    """The corners of level ``v``, extrapolated one vertebra step beyond either end of the spine."""
    n = len(vertebrae)
    if 0 <= v < n:
        return vertebrae[v]
    if v < 0:
        return vertebrae[0] + (vertebrae[0] - vertebrae[1]) * (-v)
    return vertebrae[n - 1] + (vertebrae[n - 1] - vertebrae[n - 2]) * (v - n + 1)


def jitter(points, rng: np.random.Generator, std: float) -> np.ndarray:
    points = np.asarray(points, dtype=np.float64)
    return points + rng.normal(0.0, std, points.shape)


def shift_level(points, vertebra: int, direction: int) -> np.ndarray:
    """Vertebra ``vertebra`` put on level ``vertebra + direction`` (direction -1: up, +1: down)."""
    vertebrae = _vertebrae(points)
    shifted = vertebrae.copy()
    shifted[vertebra] = _level(vertebrae, vertebra + direction)
    return shifted.reshape(-1, 2)


def shift_run(points, start: int, stop: int, direction: int) -> np.ndarray:
    """Vertebrae start .. stop-1 each put on the level ``direction`` away."""
    vertebrae = _vertebrae(points)
    shifted = vertebrae.copy()
    for v in range(start, stop):
        shifted[v] = _level(vertebrae, v + direction)
    return shifted.reshape(-1, 2)


def swap_corners(points, vertebra: int, axis: str) -> np.ndarray:
    """Left with right corners (axis 'lr') or top with bottom ('tb') of one vertebra."""
    vertebrae = _vertebrae(points)
    order = {"lr": [1, 0, 3, 2], "tb": [2, 3, 0, 1]}[axis]
    vertebrae[vertebra] = vertebrae[vertebra][order]
    return vertebrae.reshape(-1, 2)


def collapse_corner(points, vertebra: int, corner: int, onto: int) -> np.ndarray:
    """One corner of a vertebra put on another of its corners: the vertebra becomes a triangle."""
    vertebrae = _vertebrae(points)
    vertebrae[vertebra, corner] = vertebrae[vertebra, onto]
    return vertebrae.reshape(-1, 2)


def displace_point(points, index: int, offset) -> np.ndarray:
    points = np.array(points, dtype=np.float64)
    points[index] += np.asarray(offset, dtype=np.float64)
    return points


def simulate_errors(points, rng: np.random.Generator, scale: float, max_errors: int = 3,
                    jitter_std: float = 0.0) -> np.ndarray:
    """1..max_errors random errors of the kinds above, then jitter of ``jitter_std``; ``scale`` is a
    vertebra's height in the points' frame (displacements are drawn in its units)."""
    out = np.asarray(points, dtype=np.float64).copy()
    num_vertebrae = len(out) // POINTS_PER_VERTEBRA
    for _ in range(int(rng.integers(1, max_errors + 1))):
        kind = rng.choice(["level", "run", "swap", "triangle", "point"], p=[0.25, 0.25, 0.1, 0.15, 0.25])
        v = int(rng.integers(num_vertebrae))
        direction = int(rng.choice([-1, 1]))
        if kind == "level":
            out = shift_level(out, v, direction)
            out[4 * v:4 * v + 4] += rng.normal(0.0, 0.15 * scale, (4, 2))
        elif kind == "run":
            length = int(rng.integers(2, num_vertebrae + 1))
            start = int(rng.integers(0, num_vertebrae - length + 1))
            fraction = rng.uniform(0.3, 1.0)  # a run is often off by part of a level
            shifted = shift_run(out, start, start + length, direction)
            out = out + fraction * (shifted - out)
        elif kind == "swap":
            out = swap_corners(out, v, str(rng.choice(["lr", "tb"])))
        elif kind == "triangle":
            corner = int(rng.integers(4))
            onto = int(rng.choice([c for c in range(4) if c != corner]))
            out = collapse_corner(out, v, corner, onto)
        else:
            angle = rng.uniform(0, 2 * np.pi)
            length = rng.uniform(0.3, 1.5) * scale
            out = displace_point(out, int(rng.integers(len(out))), length * np.array([np.sin(angle), np.cos(angle)]))
    if jitter_std > 0:
        out = jitter(out, rng, jitter_std)
    return out
