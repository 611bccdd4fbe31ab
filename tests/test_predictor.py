"""model/predictor.py: the click maps the network receives, on a non-square grid (values derived by hand)."""
from __future__ import annotations

import math

import pytest
import torch
from munch import Munch

from model.predictor import Predictor

ROWS, COLS = 96, 40  # rows != cols; clicks below row COLS cannot survive a (row, col) swap
STD = 3.0


def _predictor() -> Predictor:
    config = Munch.fromDict({"Dataset": {"image_size": [ROWS, COLS], "heatmap_std": STD, "subpixel_decoding": True,
                                         "subpixel_decoding_patch_size": 7},
                             "Model": {"prev_heatmap": "clicked_at_test"}})
    return Predictor(None, config)  # click maps need no network


def _peak_rc(channel: torch.Tensor) -> tuple[int, int]:
    flat = int(channel.reshape(-1).argmax())
    return flat // COLS, flat % COLS


def test_a_click_map_peaks_exactly_at_the_clicks_row_and_col():
    click_rc = torch.zeros(1, 4, 2)
    click_rc[0, 2] = torch.tensor([70.0, 12.0])  # row 70 > 40 columns
    click_rc[0, 0] = torch.tensor([5.0, 33.0])  # col 33 > ... and row 5: a swap moves it to row 33, col 5
    clicked = torch.tensor([[True, False, True, False]])
    maps = _predictor().click_maps(click_rc, clicked)
    assert maps.shape == (1, 4, ROWS, COLS)
    assert _peak_rc(maps[0, 2]) == (70, 12) and _peak_rc(maps[0, 0]) == (5, 33)
    assert float(maps[0, 2, 70, 12]) == 1.0 and float(maps[0, 0, 5, 33]) == 1.0
    # an unnormalised Gaussian of std 3: one std along either axis gives exp(-1/2), along both exp(-1)
    for r, c, expected in [(73, 12, math.exp(-0.5)), (70, 15, math.exp(-0.5)), (67, 9, math.exp(-1.0)),
                           (70, 18, math.exp(-2.0)), (76, 12, math.exp(-2.0))]:
        assert abs(float(maps[0, 2, r, c]) - expected) < 1e-6, (r, c)
    assert float(maps[0, 1].abs().sum()) == 0.0 and float(maps[0, 3].abs().sum()) == 0.0  # not clicked


def test_a_fractional_click_is_centred_between_grid_cells():
    """Click at (40.5, 7.5): the four surrounding cells are equal, and larger than every other cell."""
    click_rc = torch.tensor([[[40.5, 7.5]]])
    maps = _predictor().click_maps(click_rc, torch.tensor([[True]]))[0, 0]
    corner = math.exp(-(0.25 + 0.25) / (2 * STD ** 2))
    for r, c in [(40, 7), (40, 8), (41, 7), (41, 8)]:
        assert abs(float(maps[r, c]) - corner) < 1e-6
    assert abs(float(maps[40, 9]) - math.exp(-(0.25 + 2.25) / (2 * STD ** 2))) < 1e-6


def test_click_weights_scale_each_clicks_map_before_the_network_sees_it():
    """Predictor.probs(click_weights=...) hands the network maps whose peaks are the weights."""
    import munch

    seen = {}

    class Net(torch.nn.Module):
        def forward(self, image, maps, prev, with_aux=False):
            seen["maps"] = maps
            return (torch.zeros(maps.shape),)

    config = munch.munchify({"Dataset": {"image_size": [40, 20], "heatmap_std": 2.0, "subpixel_decoding": False,
                                         "subpixel_decoding_patch_size": 5}, "Model": {"prev_heatmap": "none"}})
    predictor = Predictor(Net(), config)
    click_rc = torch.tensor([[[10.0, 5.0], [30.0, 12.0]]])
    clicked = torch.tensor([[True, True]])
    predictor.probs(torch.zeros(1, 3, 40, 20), click_rc, clicked, click_weights=torch.tensor([[1.0, 0.25]]))
    peaks = seen["maps"].flatten(2).amax(-1)[0]
    assert peaks[0] == pytest.approx(1.0) and peaks[1] == pytest.approx(0.25)
