"""Behaviour of the pure math beyond the official fixture: edge cases, gradients, vectorisation."""
import numpy as np
import torch

from misc.clicks import click_count_probs, indices_to_mask, sample_initial_clicks, worst_unclicked
from misc.decoding import extract_patches, hard_argmax, subpixel_decode
from misc.frames import grid_to_original
from misc.heatmaps import gaussian_heatmaps, keep_channels
from misc.metrics import radial_errors
from misc.morphology import morphology_loss


def test_heatmap_peak_sits_on_the_keypoint_and_equals_direct_formula():
    coords = torch.tensor([[[10.0, 5.0], [30.25, 17.5]]])
    maps = gaussian_heatmaps(coords, (40, 20), std=3.0)
    assert maps.shape == (1, 2, 40, 20)
    assert hard_argmax(maps)[0, 0].tolist() == [10.0, 5.0]
    r, c = torch.meshgrid(torch.arange(40.0), torch.arange(20.0), indexing="ij")
    direct = torch.exp(-((r - 30.25) ** 2 + (c - 17.5) ** 2) / (2 * 9.0))
    torch.testing.assert_close(maps[0, 1], direct, atol=1e-6, rtol=0)


def test_subpixel_decoding_recovers_fractional_centres():
    coords = torch.tensor([[[20.3, 9.6], [5.5, 14.25]]])
    probs = gaussian_heatmaps(coords, (48, 24), std=2.0)
    decoded = subpixel_decode(probs, patch_size=15)
    # softmax(10 x patch) sharpens towards the peak, so the offset is biased toward the hard argmax
    # but stays well inside the pixel.
    assert (decoded - coords).abs().max() < 0.5


def test_patches_are_zero_outside_the_map():
    maps = torch.ones(1, 1, 10, 10)
    patches = extract_patches(maps, torch.tensor([[[0.0, 0.0]]]), 5)
    assert patches[0, 0, :2].sum() == 0 and patches[0, 0, :, :2].sum() == 0
    assert patches[0, 0, 2:, 2:].sum() == 9


def test_morphology_loss_is_finite_with_coincident_points_and_gradients_exist():
    pred = torch.zeros(2, 6, 2, requires_grad=True)  # every point on top of each other
    true = torch.rand(2, 6, 2) * 50
    pairs = torch.tensor([[0, 1], [2, 3]])
    triplets = torch.tensor([[0, 1, 2], [3, 4, 5]])
    loss = morphology_loss(pred, true, (64, 32), pairs, triplets, 0.01, 0.01)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(pred.grad).all()


def test_morphology_loss_is_zero_for_perfect_prediction_and_respects_mask():
    true = torch.rand(3, 6, 2) * 50
    pairs, triplets = torch.tensor([[0, 1]]), torch.tensor([[0, 1, 2]])
    assert morphology_loss(true.clone(), true, (64, 32), pairs, triplets, 1.0, 1.0).abs() < 1e-6
    wrong = true.clone()
    wrong[0] += torch.rand(6, 2) * 10
    mask = torch.tensor([False, True, True])
    assert morphology_loss(wrong, true, (64, 32), pairs, triplets, 1.0, 1.0, sample_mask=mask).abs() < 1e-6
    none = torch.zeros(3, dtype=torch.bool)
    assert morphology_loss(wrong, true, (64, 32), pairs, triplets, 1.0, 1.0, sample_mask=none) == 0


def test_keep_channels_zeroes_the_unclicked_channels():
    targets = torch.rand(2, 4, 8, 8)
    clicked = torch.tensor([[True, False, False, True], [False, False, False, False]])
    kept = keep_channels(targets, clicked)
    assert torch.equal(kept[0, 0], targets[0, 0]) and torch.equal(kept[0, 3], targets[0, 3])
    assert kept[0, 1].sum() == 0 and kept[0, 2].sum() == 0 and kept[1].sum() == 0


def test_click_count_distribution_matches_spec_and_sampling_is_distinct():
    probs = click_count_probs("dataset16", 13)
    assert np.isclose(probs[1], 0.5) and np.isclose(probs[0], 0.125) and np.isclose(probs.sum(), 1)
    rng = np.random.default_rng(0)
    counts = np.bincount([len(sample_initial_clicks(rng, 68, probs)) for _ in range(4000)], minlength=13)
    assert abs(counts[1] / 4000 - 0.5) < 0.03 and abs(counts[0] / 4000 - 0.125) < 0.02
    for _ in range(50):
        idx = sample_initial_clicks(rng, 68, click_count_probs("uniform", 13))
        assert len(set(idx.tolist())) == len(idx)


def test_worst_unclicked_skips_clicked_points():
    errors = torch.tensor([[5.0, 9.0, 1.0], [3.0, 2.0, 8.0]])
    clicked = indices_to_mask([[1], []], 2, 3)
    assert worst_unclicked(errors, clicked).tolist() == [0, 2]


def test_grid_to_original_scales_rows_and_cols_separately():
    coords = torch.tensor([[[256.0, 128.0]]])
    out = grid_to_original(coords, (512, 256), torch.tensor([[2048.0, 1000.0]]))
    assert out.tolist() == [[[1024.0, 500.0]]]
    assert radial_errors(out, torch.tensor([[[1024.0, 497.0]]])).item() == 3.0
