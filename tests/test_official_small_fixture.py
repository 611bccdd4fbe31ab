"""The core math reproduces the official implementation's tensors on every clone, without ../shared.

tests/fixtures/official_small_fixture.pth (2.1 MB) is a copy of shared/reference/official_small_fixture.pth,
made by running the authors' code on constructed inputs (keys described in shared/reference/README.md): a
96x40 grid (rows != cols, so a (row, col) swap or a column shift cannot go unnoticed), heatmap std 3,
sub-pixel patch 7, the official AASCE pairs/triplets. Expected values come from that file only.
"""
from __future__ import annotations

import pytest
import torch

from conftest import REPO_ROOT
from misc.heatmaps import gaussian_heatmaps
from misc.morphology import morphology_loss
from model.predictor import Predictor

FIXTURE = REPO_ROOT / "tests" / "fixtures" / "official_small_fixture.pth"
MAP_TOL = 1e-3  # the official float16 maps are rounded from float32
COORD_TOL = 1e-5
LOSS_TOL = 1e-7  # the losses are about 1e-3 .. 3e-2; float32 sums over 70 pairs/triplets


@pytest.fixture(scope="module")
def fx():
    # Tensors, lists, numbers and a string only: loads without unpickling arbitrary objects.
    return torch.load(FIXTURE, weights_only=True)


@pytest.fixture(scope="module")
def predictor(fx):
    """The Predictor of the evaluation/demo/training paths on the fixture's grid. Only its click maps and
    decoding are used, so no network is needed."""
    import util

    rows, cols = fx["grid_hw"]
    config = util.load_config("config/quick.yaml", [
        f"Dataset.image_size=[{rows},{cols}]", f"Dataset.heatmap_std={fx['heatmap_std']}",
        "Dataset.subpixel_decoding=true", f"Dataset.subpixel_decoding_patch_size={fx['subpixel_patch']}"])
    return Predictor(None, config)


def test_fixture_is_the_documented_non_square_grid(fx):
    assert fx["grid_hw"] == [96, 40] and fx["heatmap_std"] == 3.0 and fx["subpixel_patch"] == 7
    assert fx["label_coord_rc"].shape == fx["pred_coord_rc"].shape == (2, 68, 2)
    assert fx["clicked_index"].tolist() == [5, 30, 61]
    # the clicked points lie below row 40, so a swapped click would land outside the 40 columns
    assert bool((fx["label_coord_rc"][0, fx["clicked_index"], 0] > 40).sum() >= 2)


@pytest.mark.parametrize("weights, key", [((0.02, 0.07), "weights_0.02_0.07"), ((1.0, 0.0), "distance_only"),
                                          ((0.0, 1.0), "angle_only")])
def test_morphology_loss_matches_official_for_each_weighting(fx, weights, key):
    """Distance and angle weights differ (0.02 vs 0.07) and each term is checked alone: a swap of the two
    weights or a dropped term changes at least one of the three values."""
    pairs, triplets = (torch.tensor(x) for x in fx["morph_pairs"])
    distance_lambda, angle_lambda = weights
    ours = morphology_loss(fx["pred_coord_rc"], fx["label_coord_rc"], tuple(fx["grid_hw"]), pairs, triplets,
                           distance_lambda, angle_lambda, sample_mask=torch.ones(2, dtype=torch.bool))
    assert float(ours) == pytest.approx(fx["morph_loss"][key], abs=LOSS_TOL, rel=1e-5)


def test_default_aasce_pairs_and_triplets_are_the_official_ones(fx):
    """Morph.pairs 'dataset16' (every AASCE config) loads the 70 pairs and 70 triplets the official code used."""
    from dataset.morph_pairs import load_morph_pairs

    assert [a.tolist() for a in load_morph_pairs("dataset16")] == fx["morph_pairs"]


def test_official_weighted_loss_is_the_weighted_sum_of_its_terms(fx):
    """A consistency check of the fixture itself (no code under test)."""
    loss = fx["morph_loss"]
    combined = 0.02 * loss["distance_only"] + 0.07 * loss["angle_only"]
    assert loss["weights_0.02_0.07"] == pytest.approx(combined, rel=1e-5)
    assert loss["distance_only"] > 10 * loss["angle_only"] > 0  # the terms differ: a swap shows


def test_label_heatmaps_match_official(fx):
    ours = gaussian_heatmaps(fx["label_coord_rc"][:1], tuple(fx["grid_hw"]), fx["heatmap_std"])
    torch.testing.assert_close(ours, fx["label_heatmap"].float(), atol=MAP_TOL, rtol=0)


def test_predictor_click_maps_match_official_on_the_clicked_channels(fx, predictor):
    clicked = torch.zeros(1, 68, dtype=torch.bool)
    clicked[0, fx["clicked_index"]] = True
    maps = predictor.click_maps(fx["label_coord_rc"][:1], clicked)
    assert maps.shape == (1, 68, 96, 40)
    torch.testing.assert_close(maps, fx["click_maps"].float(), atol=MAP_TOL, rtol=0)
    peaks = fx["click_maps"][0, fx["clicked_index"]].float().amax((-1, -2))
    assert bool((peaks > 0.9).all())  # the comparison is not between two empty maps


def test_predictor_decodings_match_official(fx, predictor):
    points = predictor.decode(torch.sigmoid(fx["logits"]))
    torch.testing.assert_close(points["hargmax"], fx["hargmax_coord_rc"], atol=COORD_TOL, rtol=0)
    torch.testing.assert_close(points["sargmax"], fx["sargmax_coord_rc"], atol=COORD_TOL, rtol=0)
    # sub-pixel decoding does move the points off the integer grid here
    assert float((fx["sargmax_coord_rc"] - fx["hargmax_coord_rc"]).abs().max()) > 0.1
