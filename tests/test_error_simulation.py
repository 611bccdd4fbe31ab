"""Simulated keypoint errors (misc/error_simulation.py): each kind moves exactly the points it names, to
places that follow from the geometry of a hand-built spine."""

import numpy as np
import pytest

from misc.error_simulation import (collapse_corner, displace_point, shift_level, shift_run, simulate_errors,
                                   swap_corners)


def spine(step=30.0):
    """17 upright 20 x 10 rectangles, vertebra v centred at (row 100 + step v, col 50), (row, col) points
    in the order top-left, top-right, bottom-left, bottom-right."""
    corners = np.array([[-5, -10], [-5, 10], [5, -10], [5, 10]], dtype=float)
    return np.concatenate([corners + [100 + step * v, 50] for v in range(17)])


def moved(a, b):
    return np.flatnonzero(np.linalg.norm(a - b, axis=1) > 1e-9)


def test_a_vertebra_shifted_a_level_sits_on_its_neighbour_and_nothing_else_moves():
    truth = spine()
    out = shift_level(truth, 5, +1)
    assert moved(out, truth).tolist() == [20, 21, 22, 23]
    assert np.allclose(out[20:24], truth[24:28])


def test_the_end_vertebra_shifted_beyond_the_spine_is_extrapolated_by_one_step():
    truth = spine()
    out = shift_level(truth, 16, +1)
    assert np.allclose(out[64:68], truth[64:68] + [30, 0])
    out = shift_level(truth, 0, -1)
    assert np.allclose(out[0:4], truth[0:4] - [30, 0])


def test_a_run_shift_moves_every_vertebra_of_the_run_one_level():
    truth = spine()
    out = shift_run(truth, 3, 7, -1)
    assert moved(out, truth).tolist() == list(range(12, 28))
    assert np.allclose(out[12:28], truth[8:24])


def test_swapped_corners_exchange_left_and_right_or_top_and_bottom():
    truth = spine()
    lr = swap_corners(truth, 2, "lr")
    assert np.allclose(lr[8:12], truth[[9, 8, 11, 10]])
    tb = swap_corners(truth, 2, "tb")
    assert np.allclose(tb[8:12], truth[[10, 11, 8, 9]])
    assert moved(lr, truth).tolist() == [8, 9, 10, 11]


def test_a_collapsed_corner_makes_a_triangle():
    truth = spine()
    out = collapse_corner(truth, 4, 3, 1)
    assert moved(out, truth).tolist() == [19]
    assert np.allclose(out[19], truth[17])
    assert len(np.unique(out[16:20], axis=0)) == 3


def test_a_displaced_point_moves_by_its_offset():
    truth = spine()
    out = displace_point(truth, 7, (3.0, -4.0))
    assert moved(out, truth).tolist() == [7]
    assert np.linalg.norm(out[7] - truth[7]) == pytest.approx(5.0)


def test_simulated_errors_repeat_with_the_seed_leave_the_input_alone_and_move_some_points():
    truth = spine()
    kept = truth.copy()
    a = simulate_errors(truth, np.random.default_rng(3), scale=10.0)
    b = simulate_errors(truth, np.random.default_rng(3), scale=10.0)
    assert np.array_equal(a, b)
    assert np.array_equal(truth, kept)
    moved_counts = [len(moved(simulate_errors(truth, np.random.default_rng(s), scale=10.0), truth)) for s in range(50)]
    assert min(moved_counts) >= 1 and max(moved_counts) < 68 + 1


def test_points_not_in_vertebra_groups_are_refused():
    with pytest.raises(ValueError, match="multiple of 4"):
        shift_level(np.zeros((6, 2)), 0, 1)
