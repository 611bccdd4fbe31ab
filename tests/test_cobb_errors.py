"""Where a Cobb error comes from (misc/cobb_errors.py): vertebra choice against vertebra slope, on
hand-built spines whose angles are known by construction."""
import numpy as np
import pytest

from misc.cobb import cobb_angles
from misc.cobb_errors import error_sources, tilt_errors_deg
from test_cobb import C_SHAPE_X, make_spine, tilts

HEIGHT = 1200.0


def test_a_perfect_prediction_has_no_error_of_either_kind():
    truth = make_spine(tilts(v3=10, v12=-15), centres_x=C_SHAPE_X)
    found = error_sources(truth, truth, HEIGHT)
    np.testing.assert_allclose(found["pred"], found["true"])
    np.testing.assert_allclose(found["at_true_pairs"], found["true"])
    assert found["same_pair"].all() and not found["pair_shift"].any()
    np.testing.assert_allclose(found["tilt_error"], 0, atol=1e-6)


def test_a_slope_error_on_a_chosen_vertebra_shows_at_the_true_pairs():
    # main angle between v3 (+10) and v12 (-15): 25 degrees; v12 predicted at -19 makes it 29
    truth = make_spine(tilts(v3=10, v12=-15), centres_x=C_SHAPE_X)
    pred = make_spine(tilts(v3=10, v12=-19), centres_x=C_SHAPE_X)
    found = error_sources(pred, truth, HEIGHT)
    assert found["true"][0] == pytest.approx(25.0) and found["pred"][0] == pytest.approx(29.0)
    assert found["same_pair"][0]
    assert found["at_true_pairs"][0] == pytest.approx(29.0)  # the slope error is all of it
    assert found["tilt_error"][12] == pytest.approx(4.0) and found["tilt_error"][3] == pytest.approx(0.0, abs=1e-6)


def test_a_choice_error_is_what_the_true_pairs_do_not_show():
    # the prediction tilts v14 beyond v12: the method now picks (3, 14) instead of (3, 12)
    truth = make_spine(tilts(v3=10, v12=-15, v14=-12), centres_x=C_SHAPE_X)
    pred = make_spine(tilts(v3=10, v12=-15, v14=-20), centres_x=C_SHAPE_X)
    found = error_sources(pred, truth, HEIGHT)
    assert cobb_angles(truth, HEIGHT)["vertebrae"][0] == (3, 12)
    assert not found["same_pair"][0] and found["pair_shift"][0] == 2
    assert found["pred"][0] == pytest.approx(30.0)
    assert found["at_true_pairs"][0] == pytest.approx(25.0)  # the right vertebrae still measure right


def test_endplate_directions_equal_side_directions_on_rectangles_and_differ_on_a_skewed_vertebra():
    truth = make_spine(tilts(v3=10, v12=-15), centres_x=C_SHAPE_X)
    np.testing.assert_allclose(tilt_errors_deg(truth, truth, "endplates"), 0, atol=1e-6)
    skewed = truth.copy()
    skewed[4 * 8 + 1, 1] += 8.0  # upper-right corner of the level v8 moves down 8 px (endplate 80 px long)
    sides, endplates = tilt_errors_deg(skewed, truth, "sides")[8], tilt_errors_deg(skewed, truth, "endplates")[8]
    # sides: the right-side midpoint moves 4 px over 80 px; endplates: one of two unit vectors turns by atan(8/80)
    assert sides == pytest.approx(np.degrees(np.arctan2(4, 80)), abs=0.05)
    assert endplates == pytest.approx(np.degrees(np.arctan2(8, 80)) / 2, abs=0.2)


def test_smoothed_directions_halve_a_lone_tilt_and_keep_a_steady_one():
    lone = make_spine(tilts(v8=8))
    assert tilt_errors_deg(lone, make_spine(), "sides_smoothed")[8] == pytest.approx(4.0, abs=0.05)
    assert tilt_errors_deg(lone, make_spine(), "sides_smoothed")[7] == pytest.approx(2.0, abs=0.05)
    steady = make_spine(np.full(17, 6.0))
    np.testing.assert_allclose(tilt_errors_deg(steady, steady, "sides_smoothed"), 0, atol=1e-6)
