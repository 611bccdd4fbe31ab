"""The no-grad click rounds of iterative training, with a scripted network (no learning needed)."""
import numpy as np
import pytest
import torch
from munch import Munch

from misc.clicks import Clicker
from misc.heatmaps import gaussian_heatmaps
from engine.training import simulate_click_rounds, training_step
from model.predictor import Predictor

SIZE = (48, 24)
K = 6


class OffsetNet(torch.nn.Module):
    """Predicts truth + per-point offsets (as logits) and records the previous heatmaps it was fed."""

    def __init__(self, true_rc, offsets):
        super().__init__()
        self.true_rc, self.offsets, self.fed = true_rc, offsets, []

    def forward(self, image, click_maps, prev, with_aux=True):
        self.fed.append(torch.zeros_like(click_maps) if prev is None else prev.clone())
        probs = gaussian_heatmaps(self.true_rc + self.offsets, SIZE, 1.5).clamp(1e-4, 1 - 1e-4)
        return (torch.logit(probs),)


def _config(rule="clicked_at_test", least=0, most=0):
    return Munch.fromDict({"Dataset": {"image_size": list(SIZE), "heatmap_std": 1.5, "subpixel_decoding": True,
                                       "subpixel_decoding_patch_size": 5},
                           "Model": {"prev_heatmap": rule},
                           "Train": {"min_click_rounds": least, "max_click_rounds": most, "zero_click_p": 0.0,
                                     "localisation_epochs": 0},
                           "Morph": {"use": False}})


@pytest.mark.parametrize("rule, only_clicked", [("clicked_at_test", False), ("full", False), ("clicked", True)])
def test_rounds_click_the_worst_points_and_feed_previous_heatmaps_by_the_rule(rule, only_clicked):
    true_rc = torch.tensor([[[8.0 + 6 * k, 12.0] for k in range(K)]])
    offsets = torch.zeros_like(true_rc)
    offsets[0, :, 0] = torch.tensor([0.0, 5.0, 1.0, 9.0, 0.0, 3.0])  # worst: 3, then 1, then 5
    net = OffsetNet(true_rc, offsets)
    clicked0 = torch.zeros(1, K, dtype=torch.bool)
    clicked0[0, 0] = True
    clicker = Clicker(true_rc, clicked0)
    prev = simulate_click_rounds(Predictor(net, _config(rule)), torch.zeros(1, 3, *SIZE), clicker, 3)
    clicked = clicker.clicked
    assert torch.nonzero(clicked[0]).flatten().tolist() == [0, 1, 3, 5]
    energy = prev.sum((-1, -2))[0]
    if only_clicked:  # as at test time: nothing on channels the user has not clicked
        assert bool((energy[~clicked[0]] == 0).all()) and bool((energy[clicked[0]] > 0).all())
        second_round_input = net.fed[1].sum((-1, -2))[0]
        assert torch.nonzero(second_round_input).flatten().tolist() == [0, 3]
    else:  # official training: the whole previous prediction
        assert bool((energy > 0).all())
    assert not bool(net.fed[0].any())  # the first round starts without a previous prediction


def test_rounds_without_previous_heatmap_still_click_but_feed_nothing():
    true_rc = torch.tensor([[[8.0 + 6 * k, 12.0] for k in range(K)]])
    offsets = torch.zeros_like(true_rc)
    offsets[0, :, 0] = torch.tensor([0.0, 5.0, 1.0, 9.0, 0.0, 3.0])
    net = OffsetNet(true_rc, offsets)
    clicker = Clicker(true_rc, torch.zeros(1, K, dtype=torch.bool))
    prev = simulate_click_rounds(Predictor(net, _config("none")), torch.zeros(1, 3, *SIZE), clicker, 2)
    assert torch.nonzero(clicker.clicked[0]).flatten().tolist() == [1, 3]
    assert prev is None and len(net.fed) == 2 and not any(bool(fed.any()) for fed in net.fed)


def test_zero_rounds_keep_the_clicks_and_feed_nothing():
    true_rc = torch.rand(2, K, 2) * 20
    clicked0 = torch.rand(2, K) > 0.5
    net = OffsetNet(true_rc, torch.zeros_like(true_rc))
    clicker = Clicker(true_rc, clicked0)
    prev = simulate_click_rounds(Predictor(net, _config("clicked")), torch.zeros(2, 3, *SIZE), clicker, 0)
    assert torch.equal(clicker.clicked, clicked0) and prev is None and net.fed == []


class OffsetNetWithAux(OffsetNet):
    def forward(self, image, click_maps, prev, with_aux=True):
        logits = super().forward(image, click_maps, prev)[0]
        return logits, logits


@pytest.mark.parametrize("least, most", [(2, 2), (1, 3)])
def test_training_step_runs_between_min_and_max_click_rounds(least, most):
    true_rc = torch.tensor([[[8.0 + 6 * k, 12.0] for k in range(K)]])
    config = _config("full", least, most)
    batch = {"image": torch.zeros(1, 3, *SIZE), "coords_rc": true_rc, "clicks": [np.array([], dtype=np.int64)],
             "morph_mask": torch.ones(1, dtype=torch.bool)}
    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(30):
        net = OffsetNetWithAux(true_rc, torch.rand_like(true_rc))
        training_step(net, batch, config, None, rng, torch.device("cpu"))
        seen.add(len(net.fed) - 1)  # no-grad rounds before the forward with gradient
    assert seen == set(range(least, most + 1))


class ClickMapRecorder(OffsetNetWithAux):
    """OffsetNetWithAux that also records the click maps of every call."""

    def __init__(self, true_rc, offsets):
        super().__init__(true_rc, offsets)
        self.click_maps = []

    def forward(self, image, click_maps, prev, with_aux=True):
        self.click_maps.append(click_maps.clone())
        return super().forward(image, click_maps, prev, with_aux)


def _batch_with_clicks(true_rc):
    return {"image": torch.zeros(1, 3, *SIZE), "coords_rc": true_rc, "clicks": [np.array([0, 2], dtype=np.int64)],
            "morph_mask": torch.ones(1, dtype=torch.bool)}


def test_zero_click_batches_drop_the_initial_clicks_and_the_rounds():
    true_rc = torch.tensor([[[8.0 + 6 * k, 12.0] for k in range(K)]])
    config = _config("full", 1, 2)
    config.Train.zero_click_p = 1.0
    net = ClickMapRecorder(true_rc, torch.rand_like(true_rc))
    training_step(net, _batch_with_clicks(true_rc), config, None, np.random.default_rng(0), torch.device("cpu"))
    # one forward, with gradient, seeing what the protocol's first prediction sees: no click, no previous heatmap
    assert len(net.fed) == 1 and not bool(net.fed[0].any()) and not bool(net.click_maps[0].any())


def test_zero_click_share_follows_the_probability_and_the_rest_keep_their_clicks():
    true_rc = torch.tensor([[[8.0 + 6 * k, 12.0] for k in range(K)]])
    config = _config("full", 1, 1)
    config.Train.zero_click_p = 0.3
    rng = np.random.default_rng(1)
    without_clicks = 0
    for _ in range(400):
        net = ClickMapRecorder(true_rc, torch.rand_like(true_rc))
        training_step(net, _batch_with_clicks(true_rc), config, None, rng, torch.device("cpu"))
        if len(net.fed) == 1:
            without_clicks += 1
            assert not bool(net.click_maps[0].any())
        else:  # the batch's two clicks plus one worst-first round reach the trained forward
            assert len(net.fed) == 2 and int((net.click_maps[-1].sum((-1, -2)) > 0).sum()) == 3
    assert 0.24 < without_clicks / 400 < 0.36


def test_a_batch_of_a_localisation_epoch_has_no_click_and_draws_nothing():
    from engine.training import is_localisation_epoch
    true_rc = torch.tensor([[[8.0 + 6 * k, 12.0] for k in range(K)]])
    config = _config("full", 1, 2)
    config.Train.localisation_epochs = 2
    assert [is_localisation_epoch(epoch, config.Train) for epoch in (1, 2, 3)] == [True, True, False]
    net = ClickMapRecorder(true_rc, torch.rand_like(true_rc))
    rng, untouched = np.random.default_rng(4), np.random.default_rng(4)
    training_step(net, _batch_with_clicks(true_rc), config, None, rng, torch.device("cpu"), clicks=False)
    # one forward with gradient, as the protocol's first prediction: neither the batch's clicks nor a round
    assert len(net.fed) == 1 and not bool(net.fed[0].any()) and not bool(net.click_maps[0].any())
    assert rng.random() == untouched.random()  # the click epochs after it keep their random stream
    training_step(net, _batch_with_clicks(true_rc), config, None, rng, torch.device("cpu"))
    assert int((net.click_maps[-1].sum((-1, -2)) > 0).sum()) >= 3  # with clicks: the batch's two and a round


def test_without_the_switch_the_random_stream_is_the_papers():
    from engine.training import draw_click_rounds
    train = Munch(min_click_rounds=0, max_click_rounds=3, zero_click_p=0.0)
    rng, reference = np.random.default_rng(5), np.random.default_rng(5)
    assert [draw_click_rounds(rng, train) for _ in range(50)] == \
        [int(reference.integers(0, 4)) for _ in range(50)]
