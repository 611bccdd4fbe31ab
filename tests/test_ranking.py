"""Ranking an error score against the errors (misc/ranking.py): hand-computed ranks, Spearman values and
top-of-the-worst shares."""

import math

import numpy as np
import pytest

from misc.ranking import average_ranks, per_image_spearman, score_quality, spearman, top_score_among_worst


def test_ranks_start_at_one_and_ties_share_their_mean_rank():
    np.testing.assert_array_equal(average_ranks([30, 10, 20]), [3, 1, 2])
    # 10 -> 1; the two 20s take ranks 2 and 3 -> 2.5 each; 40 -> 4
    np.testing.assert_array_equal(average_ranks([20, 10, 40, 20]), [2.5, 1, 4, 2.5])
    np.testing.assert_array_equal(average_ranks([7, 7, 7]), [2, 2, 2])


def test_spearman_of_same_and_reversed_order_is_plus_and_minus_one():
    assert spearman([1, 2, 3, 4], [10, 200, 3000, 40000]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)


def test_spearman_by_hand_without_ties():
    # ranks a = [1, 2, 3, 4, 5], b = [2, 1, 4, 3, 5]: d = [-1, 1, -1, 1, 0], sum d^2 = 4,
    # rho = 1 - 6 * 4 / (5 * (25 - 1)) = 1 - 24 / 120 = 0.8
    assert spearman([1, 2, 3, 4, 5], [20, 10, 40, 30, 50]) == pytest.approx(0.8)


def test_spearman_by_hand_with_ties():
    # a = [1, 2, 2, 3] -> ranks [1, 2.5, 2.5, 4], centred [-1.5, 0, 0, 1.5];
    # b = [1, 3, 2, 4] -> ranks [1, 3, 2, 4], centred [-1.5, 0.5, -0.5, 1.5]
    # sum products = 2.25 + 0 + 0 + 2.25 = 4.5; sum a^2 = 4.5; sum b^2 = 2.25 + .25 + .25 + 2.25 = 5
    # rho = 4.5 / sqrt(4.5 * 5) = 4.5 / sqrt(22.5)
    assert spearman([1, 2, 2, 3], [1, 3, 2, 4]) == pytest.approx(4.5 / math.sqrt(22.5))


def test_spearman_of_a_constant_is_undefined():
    assert math.isnan(spearman([1, 1, 1], [1, 2, 3]))


def test_top_score_among_worst_per_image():
    errors = np.array([[1, 9, 8, 2, 3, 0],     # worst 2: points 1, 2
                       [5, 4, 3, 2, 1, 0],     # worst 2: points 0, 1
                       [1, 1, 1, 1, 1, 1]])    # all tie: every point counts as worst
    scores = np.array([[0, 0, 5, 0, 0, 0],     # top: point 2 -> hit
                       [0, 0, 0, 0, 0, 9],     # top: point 5 -> miss
                       [0, 3, 0, 0, 0, 0]])    # top: point 1 -> hit (ties)
    np.testing.assert_array_equal(top_score_among_worst(scores, errors, 2), [True, False, True])


def test_score_quality_summarises_the_shares_and_mean_correlation():
    errors = np.array([[1.0, 2, 3, 4], [1, 2, 3, 4], [1, 1, 1, 1]])
    scores = np.array([[1.0, 2, 3, 4], [4, 3, 2, 1], [1, 2, 3, 4]])
    # image 0: top point 3 is the worst -> hit, rho 1; image 1: top point 0 is the best -> miss, rho -1;
    # image 2: constant errors -> every point ties as worst (hit), rho undefined
    quality = score_quality(scores, errors, worst=1)
    assert quality == {"top_among_worst": pytest.approx(2 / 3), "mean_spearman": pytest.approx(0.0),
                       "images": 3, "images_without_spearman": 1}
    np.testing.assert_allclose(per_image_spearman(scores[:2], errors[:2]), [1.0, -1.0])


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError, match="same length"):
        spearman([1, 2], [1, 2, 3])
    with pytest.raises(ValueError, match="images, points"):
        top_score_among_worst(np.zeros((2, 3)), np.zeros((2, 4)))
    with pytest.raises(ValueError, match="worst"):
        top_score_among_worst(np.zeros((2, 3)), np.zeros((2, 3)), worst=4)
