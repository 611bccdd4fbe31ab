"""Cobb angles and SMAPE (misc/cobb.py): the challenge method on hand-built spines and on the real labels."""

import math
import warnings

import numpy as np
import pytest

from misc.cobb import (
    angle_matrix,
    cobb_angles,
    cobb_angles_batch,
    is_s_shaped,
    smape,
    smape_per_image,
)
from conftest import SHARED

AASCE_LABELS = SHARED / "aasce" / "boostnet_labeldata" / "labels"


def make_spine(tilts_deg=None, centres_x=None, top=100.0, step=60.0, width=80.0, height=40.0):
    """68 points (x, y) of 17 rectangular vertebrae in the AASCE corner order, vertebra v centred at
    (centres_x[v], top + step * v) and rotated by tilts_deg[v] (so the angle between two vertebrae is the
    difference of their tilts)."""
    tilts = np.zeros(17) if tilts_deg is None else np.asarray(tilts_deg, dtype=float)
    cx = np.full(17, 500.0) if centres_x is None else np.asarray(centres_x, dtype=float)
    # corner offsets: upper-left, upper-right, lower-left, lower-right (y grows downwards)
    corners = np.array([[-1, -1], [1, -1], [-1, 1], [1, 1]]) * [width / 2, height / 2]
    pts = []
    for v in range(17):
        t = math.radians(tilts[v])
        rot = np.array([[math.cos(t), -math.sin(t)], [math.sin(t), math.cos(t)]])
        pts.append(corners @ rot.T + [cx[v], top + step * v])
    return np.concatenate(pts)


def tilts(**by_vertebra):
    out = np.zeros(17)
    for name, value in by_vertebra.items():
        out[int(name[1:])] = value
    return out


V = np.arange(17)
# One bend, start and end x differ. The reference S test compares, for each endplate midpoint, its height
# fraction with its x fraction between the first and the last midpoint; the two endplates of the top
# vertebra share an x, so the bend must go to the side that makes their deviation of the same sign.
C_SHAPE_X = 500.0 + 3.0 * V - 60.0 * np.sin(np.pi * V / 16)
S_SHAPE_X = 500.0 + 3.0 * V + 60.0 * np.sin(2 * np.pi * V / 16)  # two bends


# ---------------------------------------------------------------------------------------------- hand-built
def test_straight_spine_has_zero_angles():
    for centres in (None, C_SHAPE_X, S_SHAPE_X):
        result = cobb_angles(make_spine(centres_x=centres), image_height=1200)
        assert result["angles"] == pytest.approx([0.0, 0.0, 0.0], abs=1e-9)


def test_two_tilted_vertebrae_give_the_sum_of_their_tilts():
    pts = make_spine(tilts(v5=12.0, v12=-7.0), centres_x=C_SHAPE_X)
    assert not is_s_shaped(pts)
    result = cobb_angles(pts, image_height=1200)
    # not S-shaped: main angle between 5 and 12, then top vertebra vs 5 and bottom vertebra vs 12
    assert result["angles"] == pytest.approx([19.0, 12.0, 7.0], abs=1e-5)
    assert result["vertebrae"] == [(5, 12), (0, 5), (12, 16)]


THREE_TILTS = tilts(v3=10.0, v8=-20.0, v13=15.0)  # largest: 35 between 8 and 13; 30 between 3 and 8


def test_c_shaped_spine_uses_the_end_vertebrae():
    result = cobb_angles(make_spine(THREE_TILTS, centres_x=C_SHAPE_X), image_height=1200)
    assert result["s_shaped"] is False
    assert result["angles"] == pytest.approx([35.0, 20.0, 15.0], abs=1e-5)
    assert result["vertebrae"] == [(8, 13), (0, 8), (13, 16)]


def test_s_shaped_spine_with_main_curve_in_the_upper_half_looks_below_it():
    pts = make_spine(THREE_TILTS, centres_x=S_SHAPE_X)
    assert is_s_shaped(pts)
    result = cobb_angles(pts, image_height=5000)
    assert result["angles"] == pytest.approx([35.0, 30.0, 15.0], abs=1e-5)
    assert result["vertebrae"] == [(8, 13), (3, 8), (13, 14)]  # first vertebra reaching the max


def test_s_shaped_spine_with_main_curve_in_the_lower_half_looks_above_it():
    pts = make_spine(THREE_TILTS, centres_x=S_SHAPE_X)
    result = cobb_angles(pts, image_height=500)
    assert result["angles"] == pytest.approx([35.0, 30.0, 10.0], abs=1e-5)
    assert result["vertebrae"] == [(8, 13), (3, 8), (0, 3)]


def test_half_height_rule_uses_the_lower_endplates():
    pts = make_spine(THREE_TILTS, centres_x=S_SHAPE_X)
    mid = (pts[0::2] + pts[1::2]) / 2
    upper_sum = mid[2 * 8, 1] + mid[2 * 13, 1]
    lower_sum = mid[2 * 8 + 1, 1] + mid[2 * 13 + 1, 1]
    assert upper_sum < lower_sum
    # between the two sums: the upper endplates (the common Python port) would say "upper half"
    result = cobb_angles(pts, image_height=(upper_sum + lower_sum) / 2)
    assert result["angles"][2] == pytest.approx(10.0, abs=1e-5)


def test_angles_above_90_degrees_are_kept():
    result = cobb_angles(make_spine(tilts(v4=60.0, v10=-50.0), centres_x=C_SHAPE_X), image_height=1200)
    assert result["angles"][0] == pytest.approx(110.0, abs=1e-5)


def test_vertebrae_are_not_resorted():
    pts = make_spine(tilts(v5=12.0, v12=-7.0), centres_x=C_SHAPE_X)
    swapped = pts.reshape(17, 4, 2)[[0, 1, 2, 3, 4, 12, 6, 7, 8, 9, 10, 11, 5, 13, 14, 15, 16]].reshape(68, 2)
    assert cobb_angles(swapped, 1200)["vertebrae"][0] == (5, 12)
    np.testing.assert_allclose(angle_matrix(swapped)[5, 0], 7.0, atol=1e-5)


def test_integer_labels_are_converted_before_subtracting():
    pts = np.round(make_spine(tilts(v5=12.0, v12=-7.0), centres_x=C_SHAPE_X))
    as_float = cobb_angles(pts, 1200)["angles"]
    assert cobb_angles(pts.astype(np.uint16), 1200)["angles"] == pytest.approx(as_float)


def test_batch_matches_single():
    spines = np.stack([make_spine(THREE_TILTS, centres_x=c) for c in (C_SHAPE_X, S_SHAPE_X)])
    out = cobb_angles_batch(spines, [1200, 500])
    np.testing.assert_allclose(out, [[35, 20, 15], [35, 30, 10]], atol=1e-5)
    with pytest.raises(ValueError, match="heights"):
        cobb_angles_batch(spines, [1200])


# ---------------------------------------------------------------------------------------------- degenerate
def test_vertical_spine_line_counts_as_s_shaped_without_warnings():
    pts = make_spine(THREE_TILTS)  # all centres at x = 500: the reference divides by x_0 - x_33 = 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert is_s_shaped(pts)
        result = cobb_angles(pts, image_height=5000)
    assert result["angles"] == pytest.approx([35.0, 30.0, 15.0], abs=1e-5)


def test_vertical_endplates_give_finite_angles():
    result = cobb_angles(make_spine(tilts(v7=90.0), centres_x=C_SHAPE_X), image_height=1200)
    assert np.isfinite(result["angles"]).all()
    assert result["angles"][0] == pytest.approx(90.0, abs=1e-5)


def test_coincident_points_raise_or_give_zero():
    same = np.full((68, 2), 321.0)
    with pytest.raises(ValueError, match="coincident"):
        cobb_angles(same, 1000)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert cobb_angles(same, 1000, degenerate="zero")["angles"] == [0.0, 0.0, 0.0]


def test_zero_length_direction_names_the_vertebra():
    pts = make_spine(THREE_TILTS, centres_x=C_SHAPE_X)
    pts[4 * 6 : 4 * 6 + 4, 0] = 500.0  # vertebra 6 collapsed to a vertical segment
    with pytest.raises(ValueError, match=r"vertebrae \[6\]"):
        cobb_angles(pts, 1200)
    result = cobb_angles(pts, 1200, degenerate="zero")
    assert result["angles"][0] == pytest.approx(35.0, abs=1e-5)


def test_tiny_and_huge_spines_keep_their_angles():
    pts = make_spine(THREE_TILTS, centres_x=C_SHAPE_X)
    for scale in (1e-300, 1e250):
        result = cobb_angles(pts * scale, 1200 * scale)
        assert result["angles"] == pytest.approx([35.0, 20.0, 15.0], abs=1e-5)


@pytest.mark.parametrize(
    "points, message",
    [
        (np.zeros((68, 3)), "shape"),
        (np.zeros((17, 4, 2)), "shape"),
        (np.zeros(136), "shape"),
        ("spine", "numeric"),
    ],
)
def test_wrong_input_raises(points, message):
    with pytest.raises(ValueError, match=message):
        cobb_angles(points, 1000)


def test_nan_input_raises_naming_the_keypoint():
    pts = make_spine()
    pts[17, 1] = np.nan
    with pytest.raises(ValueError, match=r"NaN.*\[17\]"):
        cobb_angles(pts, 1000)


@pytest.mark.parametrize("height", [0, -5, float("nan"), None])
def test_bad_height_raises(height):
    with pytest.raises(ValueError, match="image_height"):
        cobb_angles(make_spine(), height)


# ---------------------------------------------------------------------------------------------- SMAPE
def test_smape_on_hand_numbers():
    pred = [[10.0, 5.0, 5.0], [20.0, 0.0, 0.0]]
    true = [[12.0, 4.0, 4.0], [20.0, 0.0, 0.0]]
    # image 1: (2 + 1 + 1) / (22 + 9 + 9) = 10 %; image 2: exact, 0 %
    np.testing.assert_allclose(smape_per_image(pred, true), [10.0, 0.0])
    assert smape(pred, true) == pytest.approx(5.0)


def test_smape_sums_angles_before_dividing():
    # per-angle averaging would give (100 + 0 + 0) / 3; the challenge sums first: 10 / (10 + 20 + 20)
    assert smape([10.0, 10.0, 10.0], [0.0, 10.0, 10.0]) == pytest.approx(20.0)


def test_smape_zero_over_zero_is_a_perfect_score():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert smape([[0.0, 0.0, 0.0]], [[0.0, 0.0, 0.0]]) == 0.0
    assert smape([[0.0, 0.0, 0.0]], [[1.0, 0.0, 0.0]]) == pytest.approx(100.0)


def test_smape_rejects_bad_input():
    with pytest.raises(ValueError, match="shape"):
        smape([[1.0, 2.0, 3.0]], [[1.0, 2.0]])
    with pytest.raises(ValueError, match="negative"):
        smape([[-1.0, 2.0, 3.0]], [[1.0, 2.0, 3.0]])
    with pytest.raises(ValueError, match="NaN"):
        smape([[np.nan, 2.0, 3.0]], [[1.0, 2.0, 3.0]])


# ---------------------------------------------------------------------------------------------- real data
def _load_split(split):
    import scipy.io

    folder = AASCE_LABELS / split
    names = (folder / "filenames.csv").read_text().splitlines()
    angles = np.loadtxt(folder / "angles.csv", delimiter=",", ndmin=2)
    landmarks = np.loadtxt(folder / "landmarks.csv", delimiter=",", ndmin=2)
    points, heights = [], []
    for name, row in zip(names, landmarks):
        p = scipy.io.loadmat(str(folder / f"{name}.mat"))["p2"].astype(np.float64)
        y_rel = row[68:]  # landmarks.csv holds y / height: recover the height in whole pixels
        ok = y_rel > 0.05
        heights.append(float(np.round(np.median(p[ok, 1] / y_rel[ok]))))
        points.append(p)
    return np.stack(points), np.array(heights), angles


def test_reproduces_angles_csv_on_the_real_labels():
    if not AASCE_LABELS.is_dir():
        pytest.skip(f"../shared/aasce not present: the real-label proof needs {AASCE_LABELS}")
    pred, true = [], []
    for split in ("training", "test"):
        points, heights, angles = _load_split(split)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # two images have x_0 == x_33: no warning may leak
            pred.append(cobb_angles_batch(points, heights))
        true.append(angles)
    pred, true = np.concatenate(pred), np.concatenate(true)
    assert pred.shape == (481, 3)
    assert np.abs(pred - true).max() < 0.01
    assert smape(pred, true) < 0.001
