"""Where a predicted spine's Cobb error comes from (pure numpy, points in original pixels).

The challenge method (``misc.cobb``) measures each vertebra's direction, picks the pairs of vertebrae
whose directions differ most, and reports the angles between them. A predicted angle can be wrong for
two reasons: the method picked other vertebrae than on the truth (*choice*), or the right vertebrae's
predicted directions are off (*slope*). The angles between the predicted directions at the TRUE pairs
carry the slope error alone; the rest of the error is the choice.
"""
from __future__ import annotations

import numpy as np

from misc.cobb import angle_matrix, cobb_angles, vertebra_directions

ANGLE_NAMES = ("PT", "MT", "TL")  # the order of angles.csv: proximal-thoracic, main thoracic, thoraco-lumbar


def tilt_errors_deg(pred_xy, true_xy, direction: str = "sides") -> np.ndarray:
    """(17,) angle in degrees between each vertebra's predicted and true direction (0..180)."""
    pred = _unit_directions(pred_xy, direction)
    true = _unit_directions(true_xy, "sides")
    cross = pred[:, 0] * true[:, 1] - pred[:, 1] * true[:, 0]
    return np.degrees(np.arctan2(np.abs(cross), (pred * true).sum(axis=1)))  # stable near 0 and 180


def _unit_directions(points_xy, direction: str) -> np.ndarray:
    d = vertebra_directions(points_xy, direction)
    norm = np.linalg.norm(d, axis=1, keepdims=True)
    return np.divide(d, norm, out=np.zeros_like(d), where=norm > 0)


def error_sources(pred_xy, true_xy, image_height: float, direction: str = "sides") -> dict:
    """For one spine: the true angles and pairs (challenge method on the truth), the predicted angles and
    pairs (on the prediction, directions measured by ``direction``), the predicted directions' angles at
    the true pairs (slope error only), whether each pair was chosen as on the truth, and the tilt error
    of each vertebra."""
    true = cobb_angles(true_xy, image_height)
    pred = cobb_angles(pred_xy, image_height, degenerate="zero", direction=direction)
    matrix = angle_matrix(pred_xy, degenerate="zero", direction=direction)
    return {
        "true": np.asarray(true["angles"]),
        "pred": np.asarray(pred["angles"]),
        "at_true_pairs": np.asarray([matrix[i, j] for i, j in true["vertebrae"]]),
        "same_pair": np.asarray([tuple(p) == tuple(t) for p, t in zip(pred["vertebrae"], true["vertebrae"])]),
        "pair_shift": np.asarray([abs(p[0] - t[0]) + abs(p[1] - t[1])
                                  for p, t in zip(pred["vertebrae"], true["vertebrae"])]),
        "tilt_error": tilt_errors_deg(pred_xy, true_xy, direction),
    }
