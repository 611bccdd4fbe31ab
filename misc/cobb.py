"""Cobb angles of the AASCE 2019 challenge and its SMAPE metric.

Pure functions, numpy in, numbers out. The computation follows the challenge's reference method step by
step (see ``shared/AASCE_NOTES.md``); on the true landmarks it reproduces the ``angles.csv`` files of the
AASCE data to within 0.01 degree.

Frames: ``points_xy`` are the 68 vertebra corners as (x, y) in ORIGINAL image pixels (x = column,
y = row, y grows downwards), in the AASCE order: vertebra v = 0 (T1) .. 16 (L5) owns points 4v, 4v+1
(upper endplate, left and right corner) and 4v+2, 4v+3 (lower endplate, left and right corner).
Normalised coordinates give different angles: always pass pixels.
"""

from __future__ import annotations

import numpy as np

NUM_KEYPOINTS = 68
POINTS_PER_VERTEBRA = 4  # two upper-endplate corners, then two lower (left, right)
NUM_VERTEBRAE = NUM_KEYPOINTS // POINTS_PER_VERTEBRA

__all__ = [
    "NUM_KEYPOINTS",
    "NUM_VERTEBRAE",
    "POINTS_PER_VERTEBRA",
    "angle_matrix",
    "cobb_angles",
    "cobb_angles_batch",
    "is_s_shaped",
    "smape",
    "smape_per_image",
    "vertebra_directions",
]


# --------------------------------------------------------------------------------------------------------
# validation
# --------------------------------------------------------------------------------------------------------
def _as_points(points_xy) -> np.ndarray:
    """Return the points as a float64 (68, 2) array or raise ValueError saying what is wrong."""
    try:
        pts = np.array(points_xy, dtype=np.float64)  # copies; uint16 labels become float here
    except (TypeError, ValueError) as exc:
        raise ValueError(f"points_xy must be a numeric array of shape (68, 2): {exc}") from None
    if pts.shape != (NUM_KEYPOINTS, 2):
        raise ValueError(
            f"points_xy must have shape ({NUM_KEYPOINTS}, 2) (x, y per AASCE keypoint), got {pts.shape}"
        )
    bad = ~np.isfinite(pts).all(axis=1)
    if bad.any():
        raise ValueError(f"points_xy has NaN or infinite coordinates at keypoints {np.flatnonzero(bad).tolist()}")
    return pts


def _as_height(image_height) -> float:
    try:
        h = float(image_height)
    except (TypeError, ValueError):
        raise ValueError(f"image_height must be a positive number, got {image_height!r}") from None
    if not np.isfinite(h) or h <= 0:
        raise ValueError(f"image_height must be a positive finite number of pixels, got {image_height!r}")
    return h


# --------------------------------------------------------------------------------------------------------
# the steps of the challenge method
# --------------------------------------------------------------------------------------------------------
DIRECTIONS = ("sides", "endplates", "sides_smoothed")


def _directions(pts: np.ndarray, direction: str = "sides") -> np.ndarray:
    """Step 1: direction vector of each vertebra, (17, 2). "sides" (the challenge method): right-side
    midpoint minus left-side midpoint. "endplates" (a variant, not the challenge's): the mean of the two
    endplates' unit vectors, so that a short, noisy endplate weighs as much as a long one.
    "sides_smoothed" (a variant): the unit "sides" directions averaged with their neighbours' (weights
    1/4, 1/2, 1/4; an end vertebra 3/4 itself and 1/4 its neighbour), against noise in single
    vertebrae."""
    if direction == "sides_smoothed":
        d = _directions(pts, "sides")
        with np.errstate(invalid="ignore", divide="ignore"):
            unit = np.nan_to_num(d / np.linalg.norm(d, axis=1, keepdims=True))
        padded = np.concatenate([unit[:1], unit, unit[-1:]])
        return (padded[:-2] + 2 * padded[1:-1] + padded[2:]) / 4.0
    if direction == "endplates":
        upper, lower = pts[1::4] - pts[0::4], pts[3::4] - pts[2::4]
        with np.errstate(invalid="ignore", divide="ignore"):
            unit = [v / np.linalg.norm(v, axis=1, keepdims=True) for v in (upper, lower)]
        return np.nan_to_num((unit[0] + unit[1]) / 2.0)  # a zero-length endplate gives a degenerate vertebra
    if direction != "sides":
        raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
    left = (pts[0::4] + pts[2::4]) / 2.0  # mean of upper-left and lower-left corner
    right = (pts[1::4] + pts[3::4]) / 2.0  # mean of upper-right and lower-right corner
    return right - left


def vertebra_directions(points_xy, direction: str = "sides") -> np.ndarray:
    """The (17, 2) direction vectors (x, y) of the 17 vertebrae, measured by ``direction``."""
    return _directions(_as_points(points_xy), direction)


def angle_matrix(points_xy, *, degenerate: str = "raise", direction: str = "sides") -> np.ndarray:
    """Step 2: (17, 17) matrix of angles in degrees between the vertebra direction vectors.

    The cosine is rounded to 8 decimals and clipped to [-1, 1] before the arccos, as the reference does
    (so angles above 90 degrees are possible). A vertebra whose left and right midpoints coincide has no
    direction: ``degenerate="raise"`` raises ValueError naming it, ``degenerate="zero"`` counts every angle
    involving it as 0 degrees (useful to score broken predictions without stopping an evaluation).
    ``direction``: how a vertebra's direction is measured (see ``_directions``; "sides" is the challenge's).
    """
    if degenerate not in ("raise", "zero"):
        raise ValueError(f"degenerate must be 'raise' or 'zero', got {degenerate!r}")
    pts = _as_points(points_xy)
    d = _directions(pts, direction)
    if not np.isfinite(d).all():
        raise ValueError("points_xy coordinates are too large: vertebra direction vectors overflow")
    # Scale each vector by a power of two so its largest component is in [0.5, 1): exact for normal floats,
    # and it keeps tiny or huge vectors from under/overflowing in the dot products. Cosines are unchanged.
    scale = np.abs(d).max(axis=1)
    zero = scale == 0
    if zero.any() and degenerate == "raise":
        raise ValueError(
            "vertebrae "
            f"{np.flatnonzero(zero).tolist()} have coincident left and right side midpoints: "
            "their direction (and so the Cobb angle) is undefined"
        )
    _, exponent = np.frexp(np.where(zero, 1.0, scale))
    d = np.ldexp(d, -exponent[:, None])
    norm = np.sqrt((d * d).sum(axis=1))
    norm[zero] = 1.0
    cos = (d @ d.T) / np.outer(norm, norm)
    cos = np.clip(np.round(cos, 8), -1.0, 1.0)
    if zero.any():  # degenerate == "zero"
        cos[zero, :] = 1.0
        cos[:, zero] = 1.0
    return np.degrees(np.arccos(cos))


def _endplate_midpoints(pts: np.ndarray) -> np.ndarray:
    """The 34 endplate midpoints m_k = mean(p[2k], p[2k+1]); m_{2v} upper, m_{2v+1} lower of vertebra v."""
    return (pts[0::2] + pts[1::2]) / 2.0


def is_s_shaped(points_xy) -> bool:
    """Step 4: the reference's S-shape test on the 34 endplate midpoints.

    Each midpoint k = 0..31 gets the signed deviation
    t_k = (y_k - y_33) / (y_0 - y_33) - (x_k - x_33) / (x_0 - x_33) from the straight line through the first
    and the last midpoint; with T = t t^T the spine is NOT S-shaped iff sum(T) == sum(|T|) (every t_k of one
    sign). When x_0 == x_33 (or y_0 == y_33) the reference divides by zero, its comparison fails and the spine
    counts as S-shaped. We reproduce that deliberately (``angles.csv`` depends on it), with the floating point
    warnings silenced so no NaN warning leaks out.
    """
    mid = _endplate_midpoints(_as_points(points_xy))
    x, y = mid[:, 0], mid[:, 1]
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        t = (y[:-2] - y[-1]) / (y[0] - y[-1]) - (x[:-2] - x[-1]) / (x[0] - x[-1])
        outer = np.outer(t, t)
        # sum over columns, then over the row of column sums, as MATLAB's sum(sum(T))
        total = outer.sum(axis=0).sum()
        total_abs = np.abs(outer).sum(axis=0).sum()
    return not bool(total == total_abs)  # NaN compares unequal -> S-shaped, as in the reference


def _first_argmax(values: np.ndarray) -> int:
    """Index of the first maximum (MATLAB's max and numpy's argmax agree on that)."""
    return int(np.argmax(values))


def cobb_angles(points_xy, image_height, *, degenerate: str = "raise", direction: str = "sides") -> dict:
    """The three Cobb angles (degrees, order of ``angles.csv``) of one spine by the challenge method.

    Returns ``{"angles": [a1, a2, a3], "vertebrae": [(i, j), (i, j), (i, j)], "s_shaped": bool}`` where
    ``vertebrae[n]`` are the indices (0 = T1 .. 16 = L5, upper first) of the two vertebrae whose directions
    make angle n. a1 is the largest angle between any two vertebrae, between vertebrae a <= b.
    Not S-shaped: a2 between vertebra 0 and a, a3 between b and vertebra 16. S-shaped and the LOWER
    endplate midpoints of a and b have y(a) + y(b) < image_height: a2 = largest angle between a and a
    vertebra 0..a, a3 = largest angle between b and a vertebra b..16; otherwise a2 as before, with its
    partner c, and a3 = largest angle between c and a vertebra 0..c.
    The vertebrae are used in the order given (never re-sorted), as the reference did.
    ``degenerate``, ``direction``: see :func:`angle_matrix`. Bad shapes, NaN/inf or a non-positive height
    raise ValueError.
    """
    pts = _as_points(points_xy)
    h = _as_height(image_height)
    angles = angle_matrix(pts, degenerate=degenerate, direction=direction)
    last = NUM_VERTEBRAE - 1

    # Step 3: the largest angle; a = first row reaching it, b = first column of row a reaching it.
    row_max = angles.max(axis=1)
    a = _first_argmax(row_max)
    b = _first_argmax(angles[a])
    first = angles[a, b]

    s_shaped = is_s_shaped(pts)
    if not s_shaped:
        second, pair2 = angles[0, a], (0, a)
        third, pair3 = angles[last, b], (b, last)
    else:
        mid = _endplate_midpoints(pts)
        c = _first_argmax(angles[a, : a + 1])
        second, pair2 = angles[a, c], (c, a)
        if mid[2 * a + 1, 1] + mid[2 * b + 1, 1] < h:  # main curve in the upper half: look below b
            e = b + _first_argmax(angles[b, b:])
            third, pair3 = angles[b, e], (b, e)
        else:  # main curve in the lower half: look above c
            e = _first_argmax(angles[c, : c + 1])
            third, pair3 = angles[c, e], (e, c)

    return {
        "angles": [float(first), float(second), float(third)],
        "vertebrae": [(a, b), pair2, pair3],
        "s_shaped": s_shaped,
    }


def cobb_angles_batch(points_xy, image_heights, *, degenerate: str = "raise") -> np.ndarray:
    """Cobb angles of N spines: points (N, 68, 2) in pixels and N heights -> (N, 3) array of degrees."""
    try:
        pts = np.asarray(points_xy, dtype=np.float64)
        heights = np.asarray(image_heights, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"cobb_angles_batch needs numeric arrays: {exc}") from None
    if pts.ndim != 3 or pts.shape[1:] != (NUM_KEYPOINTS, 2):
        raise ValueError(f"points_xy must have shape (N, {NUM_KEYPOINTS}, 2), got {pts.shape}")
    if heights.shape[0] != pts.shape[0]:
        raise ValueError(f"got {pts.shape[0]} spines but {heights.shape[0]} image heights")
    out = np.empty((pts.shape[0], 3), dtype=np.float64)
    for n in range(pts.shape[0]):
        try:
            out[n] = cobb_angles(pts[n], heights[n], degenerate=degenerate)["angles"]
        except ValueError as exc:
            raise ValueError(f"spine {n}: {exc}") from None
    return out


# --------------------------------------------------------------------------------------------------------
# the challenge metric
# --------------------------------------------------------------------------------------------------------
def _as_angles(values, name: str) -> np.ndarray:
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be numeric: {exc}") from None
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2 or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"{name} must have shape (N, A) (A angles per image, N >= 1), got {np.shape(values)}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} contains NaN or infinite angles")
    if (arr < 0).any():
        raise ValueError(f"{name} contains negative angles: Cobb angles are >= 0 and SMAPE needs that")
    return arr


def smape_per_image(pred_angles, true_angles) -> np.ndarray:
    """Per-image SMAPE in percent: 100 * sum_k |p_k - t_k| / sum_k (p_k + t_k), shape (N,).

    Angles are summed over the image before dividing (the challenge definition, no factor 2). An image
    whose predicted and true angles are all 0 (the only way, for angles >= 0, to get 0/0) scores 0 %:
    the prediction is exact. Inputs: (N, 3) or (3,) arrays of non-negative finite degrees.
    """
    pred = _as_angles(pred_angles, "pred_angles")
    true = _as_angles(true_angles, "true_angles")
    if pred.shape != true.shape:
        raise ValueError(f"pred_angles {pred.shape} and true_angles {true.shape} differ in shape")
    num = np.abs(pred - true).sum(axis=1)
    den = (pred + true).sum(axis=1)
    safe = np.where(den > 0, den, 1.0)
    return np.where(den > 0, 100.0 * num / safe, 0.0)


def smape(pred_angles, true_angles) -> float:
    """Challenge SMAPE in percent: mean over images of :func:`smape_per_image` (0/0 images count as 0 %)."""
    return float(smape_per_image(pred_angles, true_angles).mean())
