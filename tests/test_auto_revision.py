"""One automatic round (model/auto_revision.py) on a fake interactive model and a fake detector: what is
flagged, what the model is given, how hints persist; the heatmap corrector on hand-made heatmaps."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from misc.heatmaps import gaussian_heatmaps
from misc.shape_model import fit_shape_model
from model.auto_revision import AutoReviser, HeatmapShapeCorrector, ShapeCorrector

SIZE = (200, 80)
K = 68


def spine_rc(step=10.0, top=15.0, jitter=0.0, seed=0):
    """17 upright 6 x 16 rectangles (row, col), vertebra v centred at row top + step v, col 40."""
    rng = np.random.default_rng(seed)
    corners = np.array([[-3, -8], [-3, 8], [3, -8], [3, 8]], dtype=float)
    points = np.concatenate([corners + [top + step * v, 40] for v in range(17)])
    return points + rng.normal(0, jitter, points.shape)


class FakePredictor:
    """Heatmaps with one Gaussian per point: given points (clicked/hinted ones at what it is given) at
    ``base``; records what each call received."""

    size_rc = SIZE

    def __init__(self, base_rc):
        self.base = torch.as_tensor(base_rc, dtype=torch.float32)[None]
        self.calls = []

    def probs(self, image, click_rc, clicked, last_probs=None, click_weights=None):  # weights: not modelled
        self.calls.append((click_rc.clone(), clicked.clone()))
        rc = torch.where(clicked[..., None], click_rc, self.base.expand_as(click_rc))
        return gaussian_heatmaps(rc, SIZE, 2.0)

    def points(self, probs):
        flat = probs.flatten(2).argmax(-1)
        return torch.stack([flat // SIZE[1], flat % SIZE[1]], -1).float()


def scorer_from(scores):
    def score(image, points_rc, probs=None):
        return torch.as_tensor(scores, dtype=torch.float32)[None].expand(len(points_rc), -1).clone()
    return score


def move_to(target_rc):
    """A corrector that proposes the flagged points at ``target_rc``."""
    def correct(image, points_rc, flagged, probs=None):
        return torch.where(flagged[..., None], torch.as_tensor(target_rc, dtype=points_rc.dtype)[None], points_rc)
    return correct


def setup(scores, num_flagged=2, min_score=float("-inf")):
    truth = spine_rc()
    predicted = truth.copy()
    predicted[[9, 30, 50]] += [4.0, 0.0]
    model = FakePredictor(predicted)
    reviser = AutoReviser(model, scorer_from(scores), move_to(truth), num_flagged, min_score)
    return truth, predicted, model, reviser


def test_a_round_hints_the_top_scored_unclicked_points_at_the_correctors_positions():
    scores = np.zeros(K)
    scores[[9, 30, 50]] = [3.0, 2.0, 1.0]
    truth, predicted, model, reviser = setup(scores)
    clicked = torch.zeros(1, K, dtype=torch.bool)
    clicked[0, 9] = True  # the user fixed the top-scored point: it is not flagged
    click_rc = torch.zeros(1, K, 2)
    click_rc[0, 9] = torch.tensor([77.0, 11.0])
    image = torch.zeros(1, 3, *SIZE)
    probs = model.probs(image, click_rc, clicked)
    new_probs, state = reviser.round(image, probs, click_rc, clicked, reviser.start(1, K))
    assert sorted(torch.nonzero(state.hinted[0]).flatten().tolist()) == [30, 50]
    given_rc, given = model.calls[-1]
    assert sorted(torch.nonzero(given[0]).flatten().tolist()) == [9, 30, 50]
    assert torch.equal(given_rc[0, 9], torch.tensor([77.0, 11.0]))  # the user's click, not a hint
    assert torch.allclose(given_rc[0, [30, 50]], torch.as_tensor(truth[[30, 50]], dtype=torch.float32))
    assert torch.allclose(model.points(new_probs)[0, [30, 50]], torch.as_tensor(truth[[30, 50]], dtype=torch.float32))
    assert torch.equal(state.scores[0], torch.as_tensor(scores, dtype=torch.float32))


def test_points_below_the_minimum_score_are_not_flagged():
    scores = np.zeros(K)
    scores[[30, 50]] = [2.0, 0.5]
    _, _, model, reviser = setup(scores, num_flagged=4, min_score=1.0)
    clicked = torch.zeros(1, K, dtype=torch.bool)
    image = torch.zeros(1, 3, *SIZE)
    probs = model.probs(image, torch.zeros(1, K, 2), clicked)
    _, state = reviser.round(image, probs, torch.zeros(1, K, 2), clicked, reviser.start(1, K))
    assert torch.nonzero(state.hinted[0]).flatten().tolist() == [30]
    assert torch.isfinite(state.hint_rc).all()  # no NaN reaches the click maps (NaN x 0 is NaN)


def test_hints_persist_through_the_next_round_and_a_user_click_replaces_one():
    scores = np.arange(K, dtype=float)  # the highest indices score highest
    _, _, model, reviser = setup(scores, num_flagged=1)
    clicked = torch.zeros(1, K, dtype=torch.bool)
    click_rc = torch.zeros(1, K, 2)
    image = torch.zeros(1, 3, *SIZE)
    probs = model.probs(image, click_rc, clicked)
    probs, state = reviser.round(image, probs, click_rc, clicked, reviser.start(1, K))
    probs, state = reviser.round(image, probs, click_rc, clicked, state)
    assert torch.nonzero(state.hinted[0]).flatten().tolist() == [66, 67]  # 67 first, then the next one
    clicked[0, 67] = True
    click_rc[0, 67] = torch.tensor([190.0, 70.0])
    reviser.predict(image, click_rc, clicked, state, probs)
    given_rc, given = model.calls[-1]
    assert torch.nonzero(given[0]).flatten().tolist() == [66, 67]
    assert torch.equal(given_rc[0, 67], torch.tensor([190.0, 70.0]))


def test_the_heatmap_corrector_takes_the_second_mode_near_the_shape_proposal():
    """Point 34 (vertebra 8, top-left) predicted a level too high: its heatmap's maximum sits on vertebra
    7 and a weaker mode on its true place. The shape model, fitted to the other points, puts it near its
    true place; the corrector then takes the weaker mode there, not the maximum."""
    shapes = np.stack([spine_rc(jitter=0.3, seed=s) for s in range(30)])
    shape_model = fit_shape_model(shapes, num_components=4)
    truth = spine_rc()
    predicted = truth.copy()
    predicted[32] = truth[28]
    rc = torch.as_tensor(predicted, dtype=torch.float32)[None]
    strong = gaussian_heatmaps(rc, SIZE, 2.0)
    second = gaussian_heatmaps(torch.as_tensor(truth, dtype=torch.float32)[None] + torch.tensor([0.4, -0.3]), SIZE, 2.0)
    probs = strong.clone()
    probs[0, 32] = torch.maximum(strong[0, 32], 0.6 * second[0, 32])
    flagged = torch.zeros(1, K, dtype=torch.bool)
    flagged[0, 32] = True
    image = torch.zeros(1, 3, *SIZE)
    shape_only = ShapeCorrector(shape_model)(image, rc, flagged)
    assert np.linalg.norm(shape_only[0, 32].numpy() - truth[32]) < 3.0  # roughly right
    corrected = HeatmapShapeCorrector(shape_model, radius=4.0)(image, rc, flagged, probs)
    assert np.linalg.norm(corrected[0, 32].numpy() - (truth[32] + [0.4, -0.3])) < 0.3  # exactly the mode
    assert torch.equal(corrected[0, ~flagged[0]], rc[0, ~flagged[0]])
    empty = HeatmapShapeCorrector(shape_model, radius=4.0)(image, rc, flagged, strong)
    assert torch.allclose(empty[0, 32], shape_only[0, 32])  # nothing there: the shape model's proposal


def test_hints_weighed_less_than_clicks_reach_the_model_with_that_weight():
    scores = np.zeros(K)
    scores[30] = 1.0
    _, _, model, reviser = setup(scores, num_flagged=1)
    received = {}

    def probs(image, click_rc, clicked, last_probs=None, click_weights=None):
        received["weights"] = click_weights
        return FakePredictor.probs(model, image, click_rc, clicked, last_probs)

    model.probs = probs
    reviser.hint_weight = 0.3
    clicked = torch.zeros(1, K, dtype=torch.bool)
    clicked[0, 5] = True
    image = torch.zeros(1, 3, *SIZE)
    start = model.probs(image, torch.zeros(1, K, 2), clicked)
    reviser.round(image, start, torch.zeros(1, K, 2), clicked, reviser.start(1, K))
    weights = received["weights"][0]
    assert weights[5] == 1.0 and weights[30] == pytest.approx(0.3) and weights.sum() == pytest.approx(1.3)


def test_a_point_the_corrector_declines_is_not_hinted_and_the_verifier_declines_what_scores_worse():
    from model.auto_revision import VerifiedCorrector

    scores = np.zeros(K)
    scores[[30, 50]] = [2.0, 1.0]
    truth, predicted, model, _ = setup(scores)
    image = torch.zeros(1, 3, *SIZE)
    points = torch.as_tensor(predicted, dtype=torch.float32)[None]

    def by_distance_to_truth(image, points_rc, probs=None):  # a verifier that knows the truth (test only)
        return (points_rc - torch.as_tensor(truth, dtype=torch.float32)[None]).norm(dim=-1)

    wrong = truth.copy()
    wrong[50] += [0.0, 9.0]  # the inner corrector moves point 50 further off, point 30 onto the truth
    verified = VerifiedCorrector(move_to(wrong), by_distance_to_truth)
    flagged = torch.zeros(1, K, dtype=torch.bool)
    flagged[0, [30, 50]] = True
    proposal = verified(image, points, flagged)
    assert torch.allclose(proposal[0, 30], torch.as_tensor(truth[30], dtype=torch.float32))
    assert torch.isnan(proposal[0, 50]).all()
    reviser = AutoReviser(model, scorer_from(scores), verified, num_flagged=2)
    clicked = torch.zeros(1, K, dtype=torch.bool)
    probs = model.probs(image, torch.zeros(1, K, 2), clicked)
    _, state = reviser.round(image, probs, torch.zeros(1, K, 2), clicked, reviser.start(1, K))
    assert torch.nonzero(state.hinted[0]).flatten().tolist() == [30]
    assert torch.isfinite(state.hint_rc).all()  # no NaN reaches the click maps (NaN x 0 is NaN)
