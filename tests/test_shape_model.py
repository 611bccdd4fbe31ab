"""The statistical shape model (misc/shape_model.py): residuals on hand-built spines whose expected values
follow from the geometry, not from the code under test."""

import math

import numpy as np
import pytest

from misc.shape_model import complete_shape, fit_shape_model


def spine(width=80.0, height=40.0, step=60.0, top=100.0, centre_x=500.0):
    """68 points (x, y) of 17 upright rectangles in the AASCE corner order (upper-left, upper-right,
    lower-left, lower-right per vertebra)."""
    corners = np.array([[-1, -1], [1, -1], [-1, 1], [1, 1]]) * [width / 2, height / 2]
    return np.concatenate([corners + [centre_x, top + step * v] for v in range(17)])


def twist(vertebra_a, vertebra_b, u_xy):
    """A displacement of 68 points: the upper-left corner of vertebra A moves by u, its upper-right by -u;
    the upper-right corner of B by u, its upper-left by -u. Two upper endplates of equal width w, so the
    displacement sums to zero and sum conj(d) * shape = conj(u) (-w + w) = 0: it is orthogonal to
    translation, scaling and rotation of the spine, which therefore cannot absorb any of it."""
    d = np.zeros((68, 2))
    d[4 * vertebra_a], d[4 * vertebra_a + 1] = u_xy, -np.asarray(u_xy)
    d[4 * vertebra_b + 1], d[4 * vertebra_b] = u_xy, -np.asarray(u_xy)
    return d


def similarity(points_xy, angle_deg=0.0, scale=1.0, shift_xy=(0.0, 0.0)):
    t = math.radians(angle_deg)
    rot = np.array([[math.cos(t), -math.sin(t)], [math.sin(t), math.cos(t)]])
    return scale * np.asarray(points_xy) @ rot.T + np.asarray(shift_xy)


def jittered_spines(n=40, seed=0, sigma=6.0):
    rng = np.random.default_rng(seed)
    shapes = []
    for i in range(n):
        s = spine(width=rng.uniform(70, 90), step=rng.uniform(55, 65)) + rng.normal(0, sigma, (68, 2))
        shapes.append(similarity(s, rng.uniform(-10, 10), rng.uniform(0.8, 1.3), rng.uniform(-100, 100, 2)))
    return np.array(shapes)


TRANSFORMS = [dict(shift_xy=(123.0, -45.0)), dict(scale=2.5), dict(angle_deg=33.0),
              dict(angle_deg=-20.0, scale=0.4, shift_xy=(900.0, 10.0))]


def test_mean_shape_only_scores_a_displacement_the_similarity_cannot_absorb_at_its_own_size():
    # k = 0: the model is the mean shape. Training: the rectangle spine under various similarities.
    model = fit_shape_model([similarity(spine(), a, s, t) for a, s, t in
                             [(0, 1, (0, 0)), (10, 2, (5, 5)), (-30, 0.5, (100, 0)), (90, 1.5, (-7, 3))]], 0)
    u = np.array([3.0, 4.0])  # |u| = 5 px
    scores = model.residual_scores(spine() + twist(2, 9, u))
    expected = np.zeros(68)
    expected[[8, 9, 36, 37]] = 5.0
    np.testing.assert_allclose(scores, expected, atol=1e-9)


def test_a_shape_in_the_span_of_a_trained_mode_has_zero_residual_and_an_other_mode_keeps_its_size():
    # training: the spine plus t times a twist of vertebrae 2 and 9 (t symmetric around 0), under similarities;
    # one component holds the twist
    mode = twist(2, 9, [0.0, 6.0])
    rng = np.random.default_rng(1)
    training = [similarity(spine() + t * mode, rng.uniform(-40, 40), rng.uniform(0.5, 2), rng.uniform(-50, 50, 2))
                for t in (-2, -1, -0.5, 0, 0.5, 1, 2)]
    model = fit_shape_model(training, 1)
    np.testing.assert_allclose(model.residual_scores(similarity(spine() + 1.7 * mode, 25, 3, (1, 2))), 0, atol=1e-8)
    # another twist (vertebrae 5 and 12, horizontal, |u| = 7 px) is orthogonal to the mode and the similarities
    scores = model.residual_scores(spine() + 0.8 * mode + twist(5, 12, [7.0, 0.0]))
    expected = np.zeros(68)
    expected[[20, 21, 48, 49]] = 7.0
    np.testing.assert_allclose(scores, expected, atol=1e-8)


def test_a_shape_built_from_the_mean_and_components_has_zero_residual_under_any_similarity():
    model = fit_shape_model(jittered_spines(), 8)
    coefficients = np.array([0.05, -0.03, 0.02, 0.0, 0.01, -0.01, 0.02, 0.015])
    offset = model.components.T @ coefficients
    model_shape = model.mean + offset[0::2] + 1j * offset[1::2]
    points_xy = np.stack([model_shape.real, model_shape.imag], axis=-1)
    for transform in [dict(scale=900.0, shift_xy=(400.0, 800.0)), dict(scale=700.0, angle_deg=170.0)]:
        np.testing.assert_allclose(model.residual_scores(similarity(points_xy, **transform)), 0, atol=1e-7)


@pytest.mark.parametrize("point", [0, 13, 34, 67])
def test_moving_one_point_raises_its_own_score_most(point):
    model = fit_shape_model(jittered_spines(), 8)
    shape = jittered_spines(1, seed=99)[0]
    moved = shape.copy()
    moved[point] += [25.0, -15.0]
    change = model.residual_scores(moved) - model.residual_scores(shape)
    assert int(np.argmax(change)) == point
    assert np.argmax(model.residual_scores(moved)) == point


@pytest.mark.parametrize("transform", TRANSFORMS)
def test_scores_follow_the_image_scale_and_ignore_position_and_rotation(transform):
    model = fit_shape_model(jittered_spines(), 8)
    shape = jittered_spines(1, seed=7)[0]
    np.testing.assert_allclose(model.residual_scores(similarity(shape, **transform)),
                               transform.get("scale", 1.0) * model.residual_scores(shape), rtol=1e-9, atol=1e-9)


def test_fitting_is_blind_to_how_the_training_shapes_sit_in_their_images():
    shapes = jittered_spines()
    moved = np.array([similarity(s, 15.0 * i, 1.0 + 0.1 * i, (10.0 * i, -3.0 * i)) for i, s in enumerate(shapes)])
    test_shape = jittered_spines(1, seed=5)[0]
    np.testing.assert_allclose(fit_shape_model(moved, 8).residual_scores(test_shape),
                               fit_shape_model(shapes, 8).residual_scores(test_shape), rtol=1e-7, atol=1e-7)


def test_bad_inputs_are_refused_with_a_message():
    with pytest.raises(ValueError, match="shape"):
        fit_shape_model(np.zeros((5, 67, 2)))
    with pytest.raises(ValueError, match="num_components"):
        fit_shape_model(jittered_spines(5), 8)
    with pytest.raises(ValueError, match="NaN"):
        fit_shape_model(jittered_spines(10), 2).residual_scores(np.full((68, 2), np.nan))
    with pytest.raises(ValueError, match="aligned"):
        fit_shape_model(jittered_spines(10), 2).residual_scores(np.ones((68, 2)))


# complete_shape: the shape model fitted to some points puts the others


def test_complete_shape_restores_missing_points_of_a_similar_copy_of_a_model_shape():
    """A shape built from the mean and a component, then rotated, scaled and shifted: its hidden points
    come back where they were (the fit has exactly the freedom the shape needs)."""
    model = fit_shape_model(jittered_spines(), num_components=4)
    mean_xy = np.stack([model.mean.real, model.mean.imag], -1)
    mode = model.components[0].reshape(68, 2) * 0.3 * math.sqrt(model.variances[0]) / np.linalg.norm(model.components[0])
    shape = similarity((mean_xy + mode) * 900, angle_deg=12, scale=1.1, shift_xy=(400, 250))
    known = np.ones(68, bool)
    known[24:40] = False  # four vertebrae in the middle hidden
    completed = complete_shape(model, shape, known, ridge=0.0)
    assert np.abs(completed - shape).max() < 1e-6 * np.abs(shape).max()


def test_complete_shape_puts_a_hidden_vertebra_between_its_neighbours_not_where_its_points_were():
    """On an evenly spaced spine the model learns even spacing: a vertebra moved a whole level up
    and hidden is put back close to its own level."""
    model = fit_shape_model(jittered_spines(sigma=2.0), num_components=4)
    truth = spine()
    moved = truth.copy()
    moved[32:36] = truth[28:32]  # vertebra 8 on vertebra 7
    known = np.ones(68, bool)
    known[32:36] = False
    completed = complete_shape(model, moved, known)
    error = np.linalg.norm(completed[32:36] - truth[32:36], axis=1)
    assert error.max() < 10.0  # a level is 60 px
    assert np.linalg.norm(moved[32:36] - truth[32:36], axis=1).min() == pytest.approx(60.0)


def test_complete_shape_refuses_too_few_known_points():
    model = fit_shape_model(jittered_spines(), num_components=2)
    with pytest.raises(ValueError, match="at least 3"):
        complete_shape(model, spine(), np.zeros(68, bool))
