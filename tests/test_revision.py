"""The revision protocol on hand-made predictions (no network needed)."""
import pytest
import torch
from munch import Munch

from misc.clicks import Clicker
from misc.decoding import decode, hard_argmax
from misc.frames import grid_to_original
from misc.heatmaps import gaussian_heatmaps
from misc.metrics import radial_errors
from engine.revision import choice_clicker, clicks_to_reach, mre_per_image, run_revisions
from model.predictor import Predictor

SIZE = (64, 32)
K = 8


def _truth(batch=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.stack([torch.rand(batch, K, generator=g) * 50 + 5, torch.rand(batch, K, generator=g) * 20 + 5], -1).round()


def _predictor(true_rc, offsets, pull=0.5, calls=None):
    """A fake model: prediction = truth + offsets; every click halves the others' offsets."""
    def predict(clicked, prev):
        if calls is not None:
            calls.append((clicked.clone(), None if prev is None else prev.clone()))
        n_clicked = clicked.sum(1, keepdim=True)[..., None].float()
        coords = true_rc + offsets * (pull ** n_clicked)
        return gaussian_heatmaps(coords, SIZE, std=1.5)
    return predict


def _decode(probs):
    return {"hargmax": hard_argmax(probs), "sargmax": decode(probs, True, 15)}


def _run(true_rc, offsets, clicks=4, **kw):
    raw = torch.tensor([[640.0, 320.0]] * true_rc.shape[0])
    clicker, kind = choice_clicker(true_rc, "hargmax_mm_MRE", SIZE, raw)
    return run_revisions(_predictor(true_rc, offsets, **kw), _decode, clicker, clicks, kind), raw


def test_manual_revision_fixes_the_worst_point_first_and_never_moves_others():
    true_rc = _truth()
    offsets = torch.zeros_like(true_rc)
    offsets[:, :, 0] = torch.arange(1, K + 1).float()  # point k is off by k+1 rows: K-1 is the worst
    (model, manual), _ = _run(true_rc, offsets)
    coords = manual.stacked("hargmax")
    assert manual.clicks()[0].tolist() == [7, 6, 5, 4]
    for n in range(1, 5):
        changed = (coords[:, n] != coords[:, n - 1]).any(-1)  # (B, K)
        assert changed.sum(1).tolist() == [1, 1, 1]
        fixed = manual.click_order[n - 1]
        assert torch.equal(coords[torch.arange(3), n, fixed], true_rc[torch.arange(3), fixed])


def test_model_revision_never_clicks_twice_and_clicked_points_equal_truth():
    true_rc = _truth(batch=2, seed=1)
    offsets = torch.randn(2, K, 2, generator=torch.Generator().manual_seed(3)) * 4
    (model, _), _ = _run(true_rc, offsets, clicks=K)
    order = model.clicks()
    for b in range(2):
        assert sorted(order[b].tolist()) == list(range(K))
    soft = model.stacked("sargmax")
    for n in range(1, K + 1):
        for b in range(2):
            done = order[b, :n]
            assert torch.equal(soft[b, n, done], true_rc[b, done])


def test_model_revision_hands_the_last_prediction_to_the_next_call():
    true_rc = _truth(batch=1)
    calls = []
    raw = torch.tensor([[640.0, 320.0]])
    predict = _predictor(true_rc, torch.ones_like(true_rc) * 3, calls=calls)
    run_revisions(predict, _decode, choice_clicker(true_rc, "hargmax_mm_MRE", SIZE, raw)[0], 3)
    assert calls[0][1] is None and [int(c.sum()) for c, _ in calls] == [0, 1, 2, 3]
    for (clicked, _), (_, prev) in zip(calls[:-1], calls[1:]):
        assert torch.equal(prev, predict(clicked, None))  # what the previous call returned, all channels


class RecordingNet(torch.nn.Module):
    """Predicts truth + offsets (as logits) and records the previous heatmap it is fed."""

    def __init__(self, true_rc, offsets):
        super().__init__()
        self.true_rc, self.offsets, self.fed = true_rc, offsets, []

    def forward(self, image, click_maps, prev, with_aux=True):
        self.fed.append(prev)
        probs = gaussian_heatmaps(self.true_rc + self.offsets, SIZE, 1.5).clamp(1e-4, 1 - 1e-4)
        return (torch.logit(probs), None)


def _config(rule):
    return Munch.fromDict({"Dataset": {"image_size": list(SIZE), "heatmap_std": 1.5, "subpixel_decoding": True,
                                       "subpixel_decoding_patch_size": 5}, "Model": {"prev_heatmap": rule}})


def test_predictor_without_previous_heatmap_feeds_only_clicks():
    true_rc = _truth(batch=1)
    net = RecordingNet(true_rc, torch.ones_like(true_rc) * 3)
    predictor = Predictor(net, _config("none"))
    clicker, kind = choice_clicker(true_rc, "hargmax_pixel_MRE", SIZE, None)
    model, _ = run_revisions(predictor.bind(torch.zeros(1, 3, *SIZE), true_rc), predictor.decode, clicker, 3, kind)
    assert model.clicks().shape == (1, 3) and len(net.fed) == 4
    assert all(prev is None for prev in net.fed)


@pytest.mark.parametrize("rule, only_clicked", [("clicked_at_test", True), ("clicked", True), ("full", False)])
def test_predictor_feeds_the_previous_prediction_by_the_rule(rule, only_clicked):
    true_rc = _truth(batch=1)
    net = RecordingNet(true_rc, torch.ones_like(true_rc) * 3)
    predictor = Predictor(net, _config(rule))
    clicker, kind = choice_clicker(true_rc, "hargmax_pixel_MRE", SIZE, None)
    model, _ = run_revisions(predictor.bind(torch.zeros(1, 3, *SIZE), true_rc), predictor.decode, clicker, 3, kind)
    assert net.fed[0] is None
    order = model.clicks()[0]
    for n, prev in enumerate(net.fed[1:], start=1):
        energy = prev.sum((-1, -2))[0]
        clicked = torch.zeros(K, dtype=torch.bool)
        clicked[order[:n]] = True
        if only_clicked:
            assert bool((energy[~clicked] == 0).all()) and bool((energy[clicked] > 0).all())
        else:
            assert bool((energy > 0).all())


def test_metrics_equal_a_direct_computation():
    true_rc = _truth()
    offsets = torch.randn(3, K, 2, generator=torch.Generator().manual_seed(5)) * 3
    (model, manual), raw = _run(true_rc, offsets, clicks=3)
    coords = model.stacked("sargmax")
    per_image = mre_per_image(coords, true_rc, SIZE, raw, frame="mm")
    direct = torch.stack([
        radial_errors(grid_to_original(coords[:, n], SIZE, raw), grid_to_original(true_rc, SIZE, raw)).mean(-1)
        for n in range(4)], 1)
    torch.testing.assert_close(per_image, direct)
    # a helping model beats manual revision once it has a click
    manual_mre = mre_per_image(manual.stacked("sargmax"), true_rc, SIZE, raw, frame="mm").mean(0)
    assert per_image.mean(0)[0] == manual_mre[0] and per_image.mean(0)[3] < manual_mre[3]


def test_clicks_to_reach_counts_first_click_under_threshold_and_flags_failures():
    per_image = torch.tensor([[50.0, 30.0, 10.0], [5.0, 4.0, 3.0], [50.0, 45.0, 41.0]])
    noc, failed = clicks_to_reach(per_image, 20.0)
    assert noc.tolist() == [2, 0, 2] and failed.tolist() == [False, False, True]


class AsymmetricNet(torch.nn.Module):
    """logits[b, k] = (k + 1) * image + a column ramp + clicks + previous: not mirror-symmetric, so a
    wrong flip, a missing label swap or unmirrored clicks change the average."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def forward(self, image, click_maps, prev, with_aux=True):
        self.calls.append((image.clone(), click_maps.clone(), None if prev is None else prev.clone()))
        scale = torch.arange(1, click_maps.shape[1] + 1, dtype=image.dtype)[None, :, None, None]
        ramp = torch.linspace(-2, 2, image.shape[-1])
        logits = scale * image[:, :1] + ramp + 3 * click_maps + (0 if prev is None else prev)
        return (logits, None)


def _flip_config(flip):
    config = _config("clicked")
    config.Test = Munch(flip_average=flip)
    return config


def test_flip_average_is_the_mean_of_the_plain_and_the_mirrored_prediction():
    import numpy as np

    g = torch.Generator().manual_seed(3)
    image = torch.rand(2, 3, *SIZE, generator=g) * 2 - 1
    true_rc = _truth(batch=2)
    clicked = torch.zeros(2, K, dtype=torch.bool)
    clicked[:, [1, 6]] = True
    last = torch.rand(2, K, *SIZE, generator=g)
    plain = Predictor(AsymmetricNet(), _flip_config(False)).probs(image, true_rc, clicked, last).numpy()
    net = AsymmetricNet()
    averaged = Predictor(net, _flip_config(True)).probs(image, true_rc, clicked, last).numpy()
    # the mirrored call by hand: columns reversed, corners 4v <-> 4v+1 and 4v+2 <-> 4v+3 swapped
    swap = np.array([1, 0, 3, 2, 5, 4, 7, 6])
    (_, maps, prev), (mirrored_image, mirrored_maps, mirrored_prev) = net.calls
    np.testing.assert_array_equal(mirrored_image.numpy(), image.numpy()[..., ::-1])
    np.testing.assert_array_equal(mirrored_maps.numpy(), maps.numpy()[:, swap, :, ::-1])
    np.testing.assert_array_equal(mirrored_prev.numpy(), prev.numpy()[:, swap, :, ::-1])
    scale = np.arange(1, K + 1)[None, :, None, None]
    logits = scale * mirrored_image.numpy()[:, :1] + np.linspace(-2, 2, SIZE[1]) + 3 * mirrored_maps.numpy() \
        + mirrored_prev.numpy()
    mirrored_probs = 1 / (1 + np.exp(-logits))
    expected = (plain + mirrored_probs[:, swap, :, ::-1]) / 2
    np.testing.assert_allclose(averaged, expected, rtol=0, atol=1e-6)
    assert not np.allclose(averaged, plain, atol=1e-3)


def test_flip_average_is_never_used_in_training_rounds():
    net = AsymmetricNet()
    clicked = torch.zeros(1, K, dtype=torch.bool)
    Predictor(net, _flip_config(True)).probs(torch.zeros(1, 3, *SIZE), _truth(batch=1), clicked, None, training=True)
    assert len(net.calls) == 1
