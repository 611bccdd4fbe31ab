"""Automatic revision in the evaluation protocol (issue 39): engine.revision.run_auto_revisions on hand-made
callables, evaluate() with a real AutoReviser on generated X-rays, and test.py --auto-revision end to end.
Needs no ../shared."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import REPO_ROOT
from engine.revision import choice_clicker, run_auto_revisions, run_revisions
from misc.decoding import hard_argmax
from misc.heatmaps import gaussian_heatmaps
from model.auto_revision import HintState

# ------------------------------------------------------------------------------- hand-made callables
SIZE = (96, 32)  # grid (rows, cols)
K = 8
RAW = [[192.0, 96.0]]  # original pixels: a grid row = 2 px, a grid col = 3 px (the choice frame: hargmax_mm)
SPINE_COL = 16.0
OUTLIER = 5  # point 5 is far off the spine's column: the fake detector sees it without the truth


def _world(batch=2, seed=0):
    """(truth, offsets): the truth is a vertical line of points (col 16); the fake model's 0-click
    prediction is truth + offsets, small ones (up to 2 rows and cols) except point OUTLIER, 10 cols off."""
    g = torch.Generator().manual_seed(seed)
    rows = 6.0 + 11.0 * torch.arange(K, dtype=torch.float32)
    true_rc = torch.stack([rows.expand(batch, K), torch.full((batch, K), SPINE_COL)], -1).clone()
    offsets = (torch.rand(batch, K, 2, generator=g) * 4 - 2).round()
    offsets[:, OUTLIER] = torch.tensor([0.0, 10.0])
    return true_rc, offsets


def _model(world_rc, offsets, calls=None):
    """A fake interactive model: clicked points at the world's truth, hinted ones at their hint, the others
    at truth + offsets halved per click. It closes over the world; the protocol hands it only the
    clicked mask, the last probs and the hint state."""
    def predict(clicked, last_probs, state):
        if calls is not None:
            calls.append(("predict", clicked.clone(), last_probs, state))
        hinted = state.hinted & ~clicked
        coords = world_rc + offsets * 0.5 ** clicked.sum(1)[:, None, None].float()
        coords = torch.where(hinted[..., None], state.hint_rc, coords)
        coords = torch.where(clicked[..., None], world_rc, coords)
        return gaussian_heatmaps(coords, SIZE, std=1.0)
    return predict


def _auto_round(predict, calls=None):
    """A fake automatic round that sees only what the protocol hands it: score = a point's distance to the
    median column of the prediction, flag the highest unclicked unhinted point, hint it on that column."""
    def auto_round(probs, clicked, state):
        points = hard_argmax(probs)
        median_col = points[..., 1].median(1, keepdim=True).values
        scores = (points[..., 1] - median_col).abs()
        flagged = torch.zeros_like(clicked)
        flagged[torch.arange(len(points)), scores.masked_fill(clicked | state.hinted, -1).argmax(1)] = True
        proposal = torch.stack([points[..., 0], median_col.expand_as(scores)], -1)
        state = HintState(torch.where(flagged[..., None], proposal, state.hint_rc), state.hinted | flagged, scores)
        new_probs = predict(clicked, probs, state)
        if calls is not None:
            calls.append(("round", probs, state, new_probs))
        return new_probs, state
    return auto_round


def _decode(probs):
    points = hard_argmax(probs)
    return {"hargmax": points, "sargmax": points + 0.25}  # a second decoding that differs from the first


def _start(batch):
    return HintState(torch.zeros(batch, K, 2), torch.zeros(batch, K, dtype=torch.bool),
                     torch.full((batch, K), float("nan")))


def _clicker(true_rc):
    return choice_clicker(true_rc, "hargmax_mm_MRE", SIZE, torch.tensor(RAW * len(true_rc)))


def _auto(true_rc, world_rc, offsets, clicks=3, rounds=1, calls=None, **kw):
    """run_auto_revisions with the fake model and round; ``calls`` records the protocol's own predict calls
    and the rounds (not the predictions made inside a round)."""
    clicker, kind = _clicker(true_rc)
    auto_round = _auto_round(_model(world_rc, offsets), calls)
    return run_auto_revisions(_model(world_rc, offsets, calls), auto_round, _decode, clicker, clicks, rounds,
                              _start(len(true_rc)), choice_kind=kind, **kw)


def test_without_rounds_automatic_revision_is_model_revision_exactly():
    true_rc, offsets = _world()
    clicker, kind = _clicker(true_rc)
    predict = _model(true_rc, offsets)
    model, _ = run_revisions(lambda clicked, last: predict(clicked, last, _start(2)), _decode, clicker, 4, kind)
    auto, scores = _auto(true_rc, true_rc, offsets, clicks=4, rounds=0)
    assert torch.equal(auto.clicks(), model.clicks())
    for kind in ("hargmax", "sargmax"):
        assert torch.equal(auto.stacked(kind), model.stacked(kind))
    assert scores.shape == (2, K) and torch.isnan(scores).all()


def test_the_user_clicks_the_truly_worst_point_of_the_automatically_revised_prediction():
    true_rc, offsets = _world()
    auto, _ = _auto(true_rc, true_rc, offsets, clicks=4, rounds=1)
    coords = auto.stacked("hargmax").numpy()  # (B, 5, K, 2), clicked points already at the truth
    order = auto.clicks().numpy()
    truth = true_rc.numpy()
    scale = np.array(RAW[0]) / np.array(SIZE)  # grid -> original pixels, per axis
    for b in range(2):
        for n in range(4):
            errors = np.hypot(*((coords[b, n] - truth[b]) * scale).T)
            errors[order[b, :n]] = -1  # clicked already
            assert order[b, n] == np.argmax(errors), (b, n)
            assert np.array_equal(coords[b, n + 1, order[b, : n + 1]], truth[b, order[b, : n + 1]])
    # the round had fixed the outlier before the user looked: model revision would click it first
    model, _ = _auto(true_rc, true_rc, offsets, clicks=1, rounds=0)
    assert (model.clicks()[:, 0] == OUTLIER).all() and (auto.clicks()[:, 0] != OUTLIER).all()


def test_automatic_rounds_never_see_the_truth():
    world_rc, offsets = _world()
    moved_truth = world_rc.clone()
    moved_truth[..., 1] += 3.0  # every point's truth elsewhere; none is clicked at 0 clicks
    calls: list = []
    with_world, scores = _auto(world_rc, world_rc, offsets, rounds=2, calls=calls)
    with_moved, moved_scores = _auto(moved_truth, world_rc, offsets, rounds=2)
    for kind in ("hargmax", "sargmax"):
        assert torch.equal(with_world.stacked(kind)[:, 0], with_moved.stacked(kind)[:, 0])
    assert torch.equal(scores, moved_scores)
    # and the rounds changed the 0-click prediction (else the check above says nothing)
    unrevised, _ = _auto(world_rc, world_rc, offsets, rounds=0)
    assert not torch.equal(with_world.stacked("hargmax")[:, 0], unrevised.stacked("hargmax")[:, 0])


def test_the_next_prediction_gets_the_revised_probs_and_the_standing_hints():
    true_rc, offsets = _world()
    calls: list = []
    _auto(true_rc, true_rc, offsets, clicks=2, rounds=2, calls=calls)
    assert [c[0] for c in calls] == ["predict", "round", "round"] * 3
    assert [int(c[1].sum()) for c in calls if c[0] == "predict"] == [0, 2, 4]  # 0, 1, 2 clicks in 2 images
    for last_round, next_predict in ((2, 3), (5, 6)):
        _, _, state, new_probs = calls[last_round]
        _, _, last_probs, standing = calls[next_predict]
        assert last_probs is new_probs and standing is state


def test_without_rounds_between_clicks_only_the_0_click_prediction_is_revised_automatically():
    true_rc, offsets = _world()
    calls: list = []
    trace, scores = _auto(true_rc, true_rc, offsets, clicks=3, rounds=2, calls=calls, between_clicks=False)
    assert [c[0] for c in calls if c[0] == "round"] == ["round", "round"]
    assert len(trace.click_order) == 3
    first_round_state = next(c[2] for c in calls if c[0] == "round")
    assert torch.equal(scores, first_round_state.scores)  # the 0-click prediction's scores


# ------------------------------------------------------------------ evaluate() with a real AutoReviser
CHECKPOINT = REPO_ROOT / "pretrained" / "aasce_cpu.pth"
IMAGES = 2
CLICKS = 2


@pytest.fixture(scope="module")
def committed(synthetic_dataset):
    from model import read_checkpoint

    _, table_dir = synthetic_dataset
    checkpoint = read_checkpoint(CHECKPOINT)
    return checkpoint, checkpoint.config([f"PATH.DATA.IMAGE={table_dir}/", f"PATH.DATA.TABLE={table_dir}/"])


def detector_checkpoint(path, config, seed=0):
    """An error detector with random weights and a shape model fitted on the generated training labels
    (network grid), written by detector_checkpoint_bytes."""
    from dataset.keypoint_dataset import KeypointDataset
    from misc.shape_model import fit_shape_model
    from model.error_detector import shape_model_to_entries
    from model.error_detector import ErrorDetector, detector_checkpoint_bytes

    torch.manual_seed(seed)
    detector = ErrorDetector(tuple(int(v) for v in config.Dataset.image_size), width=8, token=16)
    train = KeypointDataset(config, "train", train=False)
    labels = np.stack([train[i]["coords_rc"].numpy() for i in range(len(train))])
    entries = shape_model_to_entries(fit_shape_model(labels, num_components=4))
    path.write_bytes(detector_checkpoint_bytes(detector, entries, {"num_flagged": 3}))
    return path


@pytest.fixture(scope="module")
def evaluated(committed, tmp_path_factory):
    """evaluate() on two generated test X-rays, 0..2 clicks: without a reviser, with one and 0 rounds, with one
    and 1 round."""
    from dataset.keypoint_dataset import KeypointDataset, collate
    from engine.evaluation import evaluate
    from model.auto_revision import AutoReviser
    from model.predictor import Predictor

    checkpoint, config = committed
    path = detector_checkpoint(tmp_path_factory.mktemp("detector") / "detector.pth", config)
    net = Predictor.from_checkpoint(checkpoint, config).net
    reviser = AutoReviser.from_checkpoint(path, Predictor(net, config))
    dataset = torch.utils.data.Subset(KeypointDataset(config, "test", train=False), list(range(IMAGES)))
    loader = torch.utils.data.DataLoader(dataset, batch_size=IMAGES, collate_fn=collate)
    run = {"plain": evaluate(net, loader, config, "cpu", CLICKS, progress=False),
           "zero": evaluate(net, loader, config, "cpu", CLICKS, progress=False, reviser=reviser, auto_rounds=0),
           "one": evaluate(net, loader, config, "cpu", CLICKS, progress=False, reviser=reviser, auto_rounds=1)}
    return run


def test_evaluation_with_zero_rounds_is_the_papers_protocol_bit_for_bit(evaluated):
    plain, zero = evaluated["plain"], evaluated["zero"]
    assert list(zero) == list(plain)
    for key in plain:
        assert np.array_equal(zero[key], plain[key]), key


def test_evaluation_with_rounds_adds_automatic_revision_beside_the_unchanged_protocol(evaluated):
    plain, one = evaluated["plain"], evaluated["one"]
    assert set(one) - set(plain) == {"auto_hargmax_rc", "auto_sargmax_rc", "auto_clicks", "error_scores"}
    for key in plain:
        assert np.array_equal(one[key], plain[key]), key
    for kind in ("hargmax", "sargmax"):
        assert one[f"auto_{kind}_rc"].shape == plain[f"model_{kind}_rc"].shape == (IMAGES, CLICKS + 1, 68, 2)
    assert one["auto_clicks"].shape == plain["model_clicks"].shape == (IMAGES, CLICKS)
    assert one["error_scores"].shape == (IMAGES, 68) and np.isfinite(one["error_scores"]).all()
    assert not np.array_equal(one["auto_sargmax_rc"][:, 0], one["model_sargmax_rc"][:, 0])  # the round moved points


def _mre_by_hand(coords_rc, true_rc, raw_size_rc, image_size_rc):
    """(N, C+1) mean radial error in original pixels: grid coordinates times raw / grid size, per axis."""
    scale = np.asarray(raw_size_rc, dtype=np.float64) / np.asarray(image_size_rc, dtype=np.float64)  # (N, 2)
    diff = (np.asarray(coords_rc, np.float64) - np.asarray(true_rc, np.float64)[:, None]) * scale[:, None, None]
    return np.sqrt((diff ** 2).sum(-1)).mean(-1)


def _noc_by_hand(per_image, threshold):
    budget = per_image.shape[1] - 1
    return float(np.mean([np.flatnonzero(row <= threshold)[0] if (row <= threshold).any() else budget
                          for row in per_image]))


def test_summary_of_automatic_revision_matches_numpy_arithmetic(evaluated):
    from engine.evaluation import summarise

    one = evaluated["one"]
    mm = _mre_by_hand(one["auto_sargmax_rc"], one["true_rc"], one["raw_size_rc"], one["image_size_rc"])
    thresholds = sorted({float(f"{v * 1.0001:g}") for v in mm.ravel()})  # each image's MRE is reached somewhere
    results = summarise(one, noc_thresholds=thresholds)
    assert set(results["auto"]) == set(results["model"])
    for kind in ("hargmax", "sargmax"):
        mm = _mre_by_hand(one[f"auto_{kind}_rc"], one["true_rc"], one["raw_size_rc"], one["image_size_rc"])
        np.testing.assert_allclose(results["auto"][f"{kind}_mm_MRE"], mm.mean(0), rtol=1e-5)
        grid = _mre_by_hand(one[f"auto_{kind}_rc"], one["true_rc"], one["image_size_rc"][None], one["image_size_rc"])
        np.testing.assert_allclose(results["auto"][f"{kind}_pixel_MRE"], grid.mean(0), rtol=1e-5)
    for threshold in thresholds:
        assert results["noc"][f"{threshold:g}"]["auto"]["mean_clicks"] == pytest.approx(_noc_by_hand(mm, threshold))


# ---------------------------------------------------------------------------------- test.py end to end
@pytest.fixture(scope="module")
def two_image_data(synthetic_dataset, tmp_path_factory):
    """A copy of the generated data folder whose test split holds its first two images (test.py evaluates a
    whole split)."""
    import shutil

    _, table_dir = synthetic_dataset
    copy = tmp_path_factory.mktemp("two_images") / table_dir.name
    shutil.copytree(table_dir, copy)
    table = json.loads((copy / "test.json").read_text())
    (copy / "test.json").write_text(json.dumps(table[:2]))
    return copy


def _test_py(*args):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # tiny inputs; the machine is shared
    return subprocess.run([sys.executable, str(REPO_ROOT / "test.py"), "--checkpoint", str(CHECKPOINT),
                           "--max-clicks", "1", "--no-progress", *map(str, args)],
                          cwd=REPO_ROOT, capture_output=True, text=True, env=env)


def test_test_py_reports_model_plus_automatic_revision(committed, two_image_data, tmp_path):
    _, config = committed
    detector = detector_checkpoint(tmp_path / "detector.pth", config)
    out = tmp_path / "out"
    done = _test_py("--data", two_image_data, "--out", out, "--auto-revision", 1, "--detector", detector)
    assert done.returncode == 0, done.stderr
    results = json.loads((out / "results.json").read_text())
    assert set(results["auto"]) == set(results["model"]) and "cobb_SMAPE" in results["auto"]
    assert results["auto_revision"]["rounds"] == 1 and results["auto_revision"]["detector"] == str(detector)
    assert results["auto_revision"]["between_clicks"] is True
    assert "| model + automatic revision |" in (out / "results.md").read_text()
    assert "| model + automatic revision |" in done.stdout

    saved = np.load(out / "predictions.npz")
    assert saved["error_scores"].shape == (2, 68) and "auto_cobb_angles" in saved
    mm = _mre_by_hand(saved["auto_sargmax_rc"], saved["true_rc"], saved["raw_size_rc"], saved["image_size_rc"])
    np.testing.assert_allclose(results["auto"]["sargmax_mm_MRE"], mm.mean(0), rtol=1e-5)
    for threshold, entry in results["noc"].items():
        assert entry["auto"]["mean_clicks"] == pytest.approx(_noc_by_hand(mm, float(threshold)))
    original = saved["auto_sargmax_original_rc"] - saved["true_original_rc"][:, None]
    np.testing.assert_allclose(np.sqrt((original ** 2).sum(-1)).mean(-1), mm, rtol=1e-5)


def test_test_py_names_a_missing_detector_in_one_line(two_image_data, tmp_path):
    missing = tmp_path / "no_detector.pth"
    done = _test_py("--data", two_image_data, "--out", tmp_path / "out", "--auto-revision", 2, "--detector", missing)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and str(missing) in lines[0], done.stderr
