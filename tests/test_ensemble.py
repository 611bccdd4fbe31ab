"""The test-time ensemble (model/ensemble.py, `test.py --ensemble`): members' sigmoid heatmaps averaged,
members that predict on other terms refused, and test.py's evaluation of an ensemble is the protocol run on
the averaged maps. Tiny random networks (deterministic) on generated images."""
from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import pytest
import torch

from misc.errors import BadInput
from model import build_model, save_checkpoint
from model.ensemble import HeatmapEnsemble, load_ensemble
from model.predictor import Predictor
from util import load_config

TINY = ["Dataset.image_size=[64,32]", "Dataset.heatmap_std=1.5", "Dataset.subpixel_decoding_patch_size=5",
        "Model.width=8", "Model.ocr_width=16", "Model.small=true"]


def _tiny(seed: int, *overrides):
    config = load_config("config/quick.yaml", TINY + list(overrides))
    torch.manual_seed(seed)
    return build_model(config).eval(), config


def _inputs(config, seed=0):
    generator = torch.Generator().manual_seed(seed)
    rows, cols = config.Dataset.image_size
    keypoints = config.Dataset.num_keypoint
    image = torch.rand(2, 3, rows, cols, generator=generator)
    click_rc = torch.rand(2, keypoints, 2, generator=generator) * torch.tensor([rows - 1, cols - 1])
    clicked = torch.zeros(2, keypoints, dtype=torch.bool)
    clicked[0, 5] = clicked[1, 40] = True
    return image, click_rc, clicked


@torch.inference_mode()
def test_ensemble_heatmaps_are_the_mean_of_its_members_heatmaps():
    (net_a, config), (net_b, _) = _tiny(0), _tiny(1)
    image, click_rc, clicked = _inputs(config)
    single_a, single_b = Predictor(net_a, config), Predictor(net_b, config)
    ensemble = Predictor(HeatmapEnsemble([net_a, net_b]), config)
    last = single_a.probs(image, click_rc, clicked)  # a previous prediction, fed to every member alike
    expected = (single_a.probs(image, click_rc, clicked, last) + single_b.probs(image, click_rc, clicked, last)) / 2
    averaged = ensemble.probs(image, click_rc, clicked, last)
    np.testing.assert_allclose(averaged.numpy(), expected.numpy(), atol=2e-6)
    assert not torch.allclose(expected, single_a.probs(image, click_rc, clicked, last), atol=1e-3)  # members differ
    # one member is that member
    alone = Predictor(HeatmapEnsemble([net_b]), config).probs(image, click_rc, clicked, last)
    np.testing.assert_allclose(alone.numpy(), single_b.probs(image, click_rc, clicked, last).numpy(), atol=2e-6)


def test_ensemble_refuses_a_member_that_predicts_on_other_terms(tmp_path):
    net, config = _tiny(0)
    other, other_config = _tiny(1, "Dataset.heatmap_std=2.0")
    save_checkpoint(tmp_path / "other.pth", other, epoch=1, config=other_config)
    with pytest.raises(BadInput, match=r"other\.pth: Dataset\.heatmap_std is 2\.0, the first model's is 1\.5"):
        load_ensemble(net, config, [tmp_path / "other.pth"])
    save_checkpoint(tmp_path / "bare.pth", other, epoch=1)  # no config stored
    with pytest.raises(BadInput, match=r"bare\.pth: holds no config"):
        load_ensemble(net, config, [tmp_path / "bare.pth"])


def test_test_py_evaluates_the_ensemble_of_its_checkpoints(synthetic_dataset, tmp_path):
    """`test.py --checkpoint a --ensemble b`: results.json names both, and the 0-click predictions are those
    of the two networks averaged (not of one of them). The averaging itself is checked above; here the
    expected points come through the same HeatmapEnsemble, because these random networks' maps are nearly
    flat and their argmax follows float rounding."""
    import test as test_script
    from dataset.keypoint_dataset import KeypointDataset, collate

    _, table = synthetic_dataset
    (net_a, config), (net_b, _) = _tiny(0), _tiny(1)
    save_checkpoint(tmp_path / "a.pth", net_a, epoch=1, config=config)
    save_checkpoint(tmp_path / "b.pth", net_b, epoch=1, config=config)
    with contextlib.redirect_stdout(io.StringIO()) as printed:
        code = test_script.main(["--checkpoint", str(tmp_path / "a.pth"), "--ensemble", str(tmp_path / "b.pth"),
                                 "--data", str(table), "--max-clicks", "1", "--device", "cpu", "--no-progress"])
    assert code == 0
    out = tmp_path / "a_test_ensemble2"  # not the single model's a_test
    assert f"{tmp_path / 'a.pth'} (epoch 1) + {tmp_path / 'b.pth'}" in printed.getvalue()
    results = json.loads((out / "results.json").read_text())
    assert results["checkpoint"] == str(tmp_path / "a.pth") and results["ensemble"] == [str(tmp_path / "b.pth")]
    saved = np.load(out / "predictions.npz")

    config.PATH.DATA.TABLE = config.PATH.DATA.IMAGE = str(table)
    batch = collate([KeypointDataset(config, "test", train=False)[index] for index in range(len(saved["names"]))])
    assert list(batch["name"]) == [str(name) for name in saved["names"]]
    nobody = torch.zeros(batch["coords_rc"].shape[:2], dtype=torch.bool)
    with torch.inference_mode():
        ensemble, first = Predictor(HeatmapEnsemble([net_a, net_b]), config), Predictor(net_a, config)
        mean_points = ensemble.points(ensemble.probs(batch["image"], batch["coords_rc"], nobody)).numpy()
        first_points = first.points(first.probs(batch["image"], batch["coords_rc"], nobody)).numpy()
    np.testing.assert_allclose(saved["model_sargmax_rc"][:, 0], mean_points, atol=1e-4)
    assert np.abs(saved["model_sargmax_rc"][:, 0] - first_points).max() > 0.1
