"""engine/evaluation.py, the path test.py takes to results.json: MRE and NoC in original pixels on a hand-made
case (expected values computed by hand below), and the committed model's clicks helping on synthetic X-rays
through the same evaluate() as test.py. Needs no ../shared."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import REPO_ROOT
from engine.evaluation import evaluate, original_frame, per_image_errors, summarise

# ------------------------------------------------------------------------------------------ hand-made case
# Network grid 16 x 8 (rows, cols). Image A is 160 x 24 original pixels (a grid row = 10 px, a grid col = 3 px),
# image B 32 x 48 (a row = 2 px, a col = 6 px): rows and cols scale differently, and differently per image.
GRID = (16, 8)
RAW = [[160.0, 24.0], [32.0, 48.0]]
TRUE = [[4.0, 2.0], [10.0, 5.0]]  # two keypoints, the same grid truth in both images
# Grid offsets (d_row, d_col) of p0 and p1 after 0, 1, 2 clicks.
MODEL_OFFSETS = [[[0, 4], [2, 0]], [[0, 0], [1, 0]], [[0, 0], [0, 0]]]  # click 1 fixes p0 and helps p1
MANUAL_OFFSETS = [[[0, 4], [2, 0]], [[0, 0], [2, 0]], [[0, 0], [0, 0]]]  # click 1 fixes p0 only
# Original-pixel errors, by hand:
#   A: p0 (0, 4) -> 4 x 3 = 12 px; p1 (2, 0) -> 2 x 10 = 20 px; p1 (1, 0) -> 10 px
#      model  [(12 + 20) / 2, (0 + 10) / 2, 0] = [16, 5, 0];  manual [16, (0 + 20) / 2, 0] = [16, 10, 0]
#   B: p0 (0, 4) -> 4 x 6 = 24 px; p1 (2, 0) -> 2 x 2 = 4 px;  p1 (1, 0) -> 2 px
#      model  [(24 + 4) / 2, (0 + 2) / 2, 0] = [14, 1, 0];    manual [14, (0 + 4) / 2, 0] = [14, 2, 0]
MODEL_MM = [[16.0, 5.0, 0.0], [14.0, 1.0, 0.0]]
MANUAL_MM = [[16.0, 10.0, 0.0], [14.0, 2.0, 0.0]]
# On the grid both images have model [(4 + 2) / 2, (0 + 1) / 2, 0] = [3, 0.5, 0], manual [3, 1, 0].
MODEL_GRID = [3.0, 0.5, 0.0]
MANUAL_GRID = [3.0, 1.0, 0.0]
# NoC (first click with MRE <= threshold, original pixels), per image (A, B) -> mean:
#   15 px: model A 1 (16 > 15), B 0 (14)        -> 0.5; manual the same      -> 0.5
#   12 px: model A 1 (5),       B 1 (1)         -> 1.0; manual A 1 (10), B 1 -> 1.0
#    6 px: model A 1 (5),       B 1             -> 1.0; manual A 2 (10 > 6), B 1 (2) -> 1.5
# (on the grid every threshold here is reached at 0 clicks: 3 px <= 6).
NOC = {"15": (0.5, 0.5), "12": (1.0, 1.0), "6": (1.0, 1.5)}


def _coords(offsets, factor=1.0):
    """(N=2, clicks, K, 2) grid coordinates: truth + factor x offsets, for both images."""
    one = np.array(TRUE)[None] + factor * np.array(offsets, dtype=np.float64)
    return np.stack([one, one]).astype(np.float32)


def _arrays():
    """What evaluate() returns (and test.py saves in predictions.npz), built by hand. The hard-argmax
    coordinates are off by twice as much, so mixing up the decodings changes the numbers."""
    return {
        "model_sargmax_rc": _coords(MODEL_OFFSETS), "model_hargmax_rc": _coords(MODEL_OFFSETS, 2.0),
        "manual_sargmax_rc": _coords(MANUAL_OFFSETS), "manual_hargmax_rc": _coords(MANUAL_OFFSETS, 2.0),
        "model_clicks": np.array([[0, 1], [0, 1]]), "manual_clicks": np.array([[0, 1], [0, 1]]),
        "true_rc": np.array([TRUE, TRUE], dtype=np.float32),
        "raw_size_rc": np.array(RAW, dtype=np.float32), "spacing_rc": np.ones((2, 2), dtype=np.float32),
        "names": np.array(["a.jpg", "b.jpg"]), "image_size_rc": np.array(GRID),
    }


def test_results_mre_in_mm_is_in_original_pixels_scaled_per_axis_and_per_image():
    results = summarise(_arrays())
    np.testing.assert_allclose(results["model"]["sargmax_mm_MRE"], np.mean(MODEL_MM, 0), atol=1e-5)
    np.testing.assert_allclose(results["manual"]["sargmax_mm_MRE"], np.mean(MANUAL_MM, 0), atol=1e-5)
    np.testing.assert_allclose(results["model"]["hargmax_mm_MRE"], 2 * np.mean(MODEL_MM, 0), atol=1e-5)
    np.testing.assert_allclose(results["model"]["sargmax_pixel_MRE"], MODEL_GRID, atol=1e-5)
    np.testing.assert_allclose(results["manual"]["sargmax_pixel_MRE"], MANUAL_GRID, atol=1e-5)
    assert results["num_images"] == 2 and results["max_clicks"] == 2


def test_per_image_mre_of_test_py_is_in_original_pixels():
    np.testing.assert_allclose(per_image_errors(_arrays(), "model", "sargmax", "mm"), MODEL_MM, atol=1e-5)
    np.testing.assert_allclose(per_image_errors(_arrays(), "manual", "sargmax", "mm"), MANUAL_MM, atol=1e-5)


def test_noc_counts_clicks_to_reach_thresholds_in_original_pixels():
    results = summarise(_arrays(), noc_thresholds=[15.0, 12.0, 6.0])
    for threshold, (model_clicks, manual_clicks) in NOC.items():
        entry = results["noc"][threshold]
        assert entry["model"] == {"mean_clicks": model_clicks, "not_reached": 0}, threshold
        assert entry["manual"] == {"mean_clicks": manual_clicks, "not_reached": 0}, threshold


def test_noc_flags_images_that_never_reach_the_threshold():
    results = summarise(_arrays(), noc_thresholds=[-1.0])  # no MRE is below -1
    assert results["noc"]["-1"]["model"] == {"mean_clicks": 2.0, "not_reached": 2}  # the budget, 2 clicks


def test_predictions_in_original_pixels_scale_rows_and_cols_by_their_image():
    # A: rows x 10, cols x 3; B: rows x 2, cols x 6
    expected = [[[40.0, 6.0], [100.0, 15.0]], [[8.0, 12.0], [20.0, 30.0]]]
    np.testing.assert_allclose(original_frame(_arrays(), "true_rc"), expected, atol=1e-5)


# ---------------------------------------------------------------------------------- the committed model
CHECKPOINT = REPO_ROOT / "pretrained" / "aasce_cpu.pth"
CLICKS = 3


@pytest.fixture(scope="module")
def committed_model_results(synthetic_dataset):
    """results.json of the committed model on two synthetic test X-rays, 0..3 clicks, as test.py computes it
    (the checkpoint's own config, KeypointDataset of the preprocessed test table, evaluate, summarise)."""
    from dataset.keypoint_dataset import KeypointDataset, collate
    from model import read_checkpoint
    from model.predictor import Predictor

    _, table_dir = synthetic_dataset
    checkpoint = read_checkpoint(CHECKPOINT)
    config = checkpoint.config([f"PATH.DATA.IMAGE={table_dir}/", f"PATH.DATA.TABLE={table_dir}/"])
    dataset = torch.utils.data.Subset(KeypointDataset(config, "test", train=False), [0, 1])
    loader = torch.utils.data.DataLoader(dataset, batch_size=2, collate_fn=collate)
    net = Predictor.from_checkpoint(checkpoint, config).net
    arrays = evaluate(net, loader, config, "cpu", CLICKS, progress=False)
    return summarise(arrays, noc_thresholds=[12.0])


def test_committed_model_error_falls_with_three_clicks_and_beats_manual_revision(committed_model_results):
    model = committed_model_results["model"]["sargmax_mm_MRE"]
    manual = committed_model_results["manual"]["sargmax_mm_MRE"]
    assert len(model) == CLICKS + 1 and model[0] == manual[0]
    assert model[CLICKS] < 0.8 * model[0], model
    # Manual revision also falls (clicked points are put at the truth); the model's clicks must move the
    # other points too, so model revision ends clearly below it.
    assert model[CLICKS] < 0.8 * manual[CLICKS], (model, manual)


# ------------------------------------------------------------------------- the confidence it records
class PeakedNet(torch.nn.Module):
    """A stand-in network: logits -6 everywhere except one pixel per channel, where channel k holds
    PEAK_LOGIT[k] plus 0.5 per channel clicked so far (the click maps tell it), so the expected peak
    probabilities are known by hand: sigmoid(PEAK_LOGIT[k] + 0.5 n) after n clicks."""

    def __init__(self, size_rc):
        super().__init__()
        self.size_rc = size_rc

    def forward(self, image, click_maps, prev, with_aux=False):
        batch, channels = click_maps.shape[:2]
        logits = torch.full((batch, channels, *self.size_rc), -6.0)
        clicked = (click_maps.flatten(2).amax(-1) > 0.5).sum(1).float()  # (B,) channels clicked
        for k in range(channels):
            logits[:, k, 10 + 3 * k % 200, 20 + k % 50] = PEAK_LOGIT[k] + 0.5 * clicked
        return (logits,)


PEAK_LOGIT = [float(k % 7) - 3.0 for k in range(68)]  # -3 .. 3 in steps of 1


def test_evaluation_records_each_keypoints_peak_probability_after_every_click(synthetic_dataset):
    from dataset.keypoint_dataset import KeypointDataset, collate
    from model import read_checkpoint

    _, table_dir = synthetic_dataset
    config = read_checkpoint(CHECKPOINT).config([f"PATH.DATA.IMAGE={table_dir}/", f"PATH.DATA.TABLE={table_dir}/",
                                                  "Test.flip_average=False"])
    dataset = torch.utils.data.Subset(KeypointDataset(config, "test", train=False), [0, 1, 2])
    loader = torch.utils.data.DataLoader(dataset, batch_size=2, collate_fn=collate)
    net = PeakedNet(tuple(int(v) for v in config.Dataset.image_size))
    arrays = evaluate(net, loader, config, "cpu", 2, progress=False)

    confidence = arrays["model_confidence"]
    assert confidence.shape == (3, 3, 68)  # images x (clicks + 1) x keypoints
    assert ((confidence >= 0) & (confidence <= 1)).all()
    # sigmoid(x) = 1 / (1 + e^-x): after n clicks the peak logit of channel k is PEAK_LOGIT[k] + 0.5 n
    expected = np.array([[[1 / (1 + np.exp(-(PEAK_LOGIT[k] + 0.5 * n))) for k in range(68)] for n in range(3)]] * 3)
    np.testing.assert_allclose(confidence, expected, rtol=1e-6)
    for key in ("model_sargmax_rc", "model_hargmax_rc", "manual_sargmax_rc", "model_clicks", "true_rc", "names"):
        assert key in arrays  # the arrays that were there before stay


def test_test_py_writes_the_confidence_of_the_committed_model_to_predictions_npz(synthetic_dataset, tmp_path):
    """test.py end to end on two synthetic X-rays, 1 click: model_confidence in predictions.npz equals the
    peak of the committed model's own 0-click heatmaps."""
    import subprocess
    import sys

    from dataset.keypoint_dataset import KeypointDataset, collate
    from model import read_checkpoint
    from model.predictor import Predictor

    _, table_dir = synthetic_dataset
    out = tmp_path / "out"
    subprocess.run([sys.executable, str(REPO_ROOT / "test.py"), "--checkpoint", str(CHECKPOINT), "--data",
                    str(table_dir), "--split", "test", "--max-clicks", "1", "--out", str(out), "--no-progress"],
                   check=True, cwd=REPO_ROOT, stdout=subprocess.DEVNULL)
    saved = np.load(out / "predictions.npz")
    confidence = saved["model_confidence"]
    assert confidence.shape == saved["model_sargmax_rc"].shape[:3] == (len(saved["names"]), 2, 68)
    assert ((confidence >= 0) & (confidence <= 1)).all()

    checkpoint = read_checkpoint(CHECKPOINT)
    config = checkpoint.config([f"PATH.DATA.IMAGE={table_dir}/", f"PATH.DATA.TABLE={table_dir}/"])
    predictor = Predictor.from_checkpoint(checkpoint, config)
    batch = collate([KeypointDataset(config, "test", train=False)[i] for i in range(2)])
    with torch.inference_mode():
        probs = predictor.probs(batch["image"], batch["coords_rc"], torch.zeros(2, 68, dtype=torch.bool))
    np.testing.assert_allclose(confidence[:2, 0], probs.flatten(2).amax(-1).numpy(), atol=1e-5)
