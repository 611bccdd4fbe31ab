"""Heatmaps, decoding, losses and errors reproduce the official code's tensors."""
import torch

from misc.decoding import hard_argmax, subpixel_decode
from misc.heatmaps import gaussian_heatmaps
from misc.losses import heatmap_bce
from misc.metrics import radial_errors
from dataset.morph_pairs import load_morph_pairs
from misc.morphology import morphology_loss

TOL = 1e-5


def _size(fx):
    return tuple(fx["config"]["image_size"])


def test_label_heatmaps_match_official(official_fixture):
    fx = official_fixture
    ours = gaussian_heatmaps(fx["label_coord_rc"], _size(fx), fx["config"]["heatmap_std"])
    torch.testing.assert_close(ours, fx["label_heatmap"], atol=TOL, rtol=0)


def test_hard_and_subpixel_coordinates_match_official(official_fixture):
    fx = official_fixture
    probs = fx["logits"].sigmoid()
    torch.testing.assert_close(hard_argmax(probs), fx["hard_coord_rc"], atol=TOL, rtol=0)
    patch = fx["config"]["subpixel_decoding_patch_size"]
    torch.testing.assert_close(subpixel_decode(probs, patch), fx["soft_coord_rc"], atol=TOL, rtol=0)


def test_bce_terms_match_official(official_fixture):
    fx = official_fixture
    torch.testing.assert_close(heatmap_bce(fx["logits"], fx["label_heatmap"]), fx["bce_main"], atol=TOL, rtol=0)
    torch.testing.assert_close(heatmap_bce(fx["aux_logits"], fx["label_heatmap"]), fx["bce_aux"], atol=TOL, rtol=0)


def test_morphology_loss_and_total_match_official(official_fixture):
    fx = official_fixture
    cfg = fx["config"]
    pairs, triplets = (torch.tensor(x) for x in fx["morph_pairs"])
    assert fx["morph_pairs"] == list(map(lambda t: t.tolist(), load_morph_pairs("dataset16")))
    soft = subpixel_decode(fx["logits"].sigmoid(), cfg["subpixel_decoding_patch_size"])
    morph = morphology_loss(soft, fx["label_coord_rc"], _size(fx), pairs, triplets,
                            cfg["distance_lambda"], cfg["angle_lambda"])
    torch.testing.assert_close(morph, fx["morph_loss"], atol=TOL, rtol=0)
    total = heatmap_bce(fx["logits"], fx["label_heatmap"]) + morph
    torch.testing.assert_close(total, fx["total_loss_main_plus_morph"], atol=TOL, rtol=0)


def test_radial_errors_match_official(official_fixture):
    fx = official_fixture
    errors = radial_errors(hard_argmax(fx["logits"].sigmoid()), fx["label_coord_rc"])
    torch.testing.assert_close(errors, fx["hard_radial_error_px"], atol=TOL, rtol=0)
