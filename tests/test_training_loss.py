"""engine/training.py compute_loss: the morphology term reaches the loss with the configured weights
(distance and angle weights deliberately different here; every shipped config uses 0.01 for both).
Expected values derived by hand in the test."""
from __future__ import annotations

import math

import pytest
import torch

from engine.training import compute_loss

ROWS, COLS = 20, 10


def _config(distance_lambda, angle_lambda):
    import util

    return util.load_config("config/quick.yaml", [
        f"Dataset.image_size=[{ROWS},{COLS}]", "Dataset.heatmap_std=1.0", "Dataset.subpixel_decoding_patch_size=5",
        f"Morph.distance_lambda={distance_lambda}", f"Morph.angle_lambda={angle_lambda}",
        "Morph.use=true", "Morph.distance_l1=true", "Morph.apply_to_augmented=false"])


def _sharp_logits(points_rc):
    """Logits that decode (sub-pixel) to exactly these integer points: +30 at each point, -30 elsewhere, so
    the patch around the maximum is symmetric and its expected offset is zero."""
    logits = torch.full((1, len(points_rc), ROWS, COLS), -30.0)
    for k, (r, c) in enumerate(points_rc):
        logits[0, k, r, c] = 30.0
    return logits


# Truth (row, col) on the 20x10 grid, normalised by (20, 10): p0 (0.1, 0.2), p1 (0.1, 0.6), p2 (0.3, 0.6).
TRUE = [(2, 2), (2, 6), (6, 6)]
# Prediction: p0 moves left to (0.1, 0.1) and p2 comes up in line with p0 and p1, at (0.1, 0.8).
PRED = [(2, 1), (2, 6), (2, 8)]
PAIRS = torch.tensor([[0, 1]])
TRIPLETS = torch.tensor([[0, 1, 2]])  # angle at p1 between the directions to p0 and to p2
# Distance term: |0.5 - 0.4| = 0.1 (normalised units).
DISTANCE_TERM = 0.1
# Angle term: truth: direction to p0 at atan2(0, -0.4) = pi, to p2 at atan2(0.2, 0) = pi/2 -> -pi/2;
# prediction: pi and atan2(0, 0.2) = 0 -> -pi; 1 - cos(-pi - (-pi/2)) = 1 - cos(pi/2) = 1.
ANGLE_TERM = 1.0 - math.cos(math.pi / 2)


@pytest.mark.parametrize("distance_lambda, angle_lambda", [(0.02, 0.07), (1.0, 0.0), (0.0, 1.0)])
def test_morphology_term_of_the_loss_uses_the_distance_and_angle_weights_of_the_config(distance_lambda, angle_lambda):
    true_rc = torch.tensor([TRUE], dtype=torch.float32)
    logits = _sharp_logits(PRED)
    targets = torch.zeros_like(logits)
    terms = compute_loss(logits, logits, targets, true_rc, torch.tensor([True]), _config(distance_lambda, angle_lambda),
                         (PAIRS, TRIPLETS))
    expected = distance_lambda * DISTANCE_TERM + angle_lambda * ANGLE_TERM
    assert float(terms.morph) == pytest.approx(expected, abs=1e-6)
    assert float(terms.total) == pytest.approx(float(terms.bce_main) + float(terms.bce_aux) + expected, rel=1e-5)


def test_the_morphology_term_is_off_for_augmented_samples_by_default():
    true_rc = torch.tensor([TRUE], dtype=torch.float32)
    logits = _sharp_logits(PRED)
    terms = compute_loss(logits, logits, torch.zeros_like(logits), true_rc, torch.tensor([False]),
                         _config(0.02, 0.07), (PAIRS, TRIPLETS))
    assert terms.morph == 0.0
