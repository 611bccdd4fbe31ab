"""The error detector network and its checkpoint (model/error_detector.py), and its training stages
(engine/detector_training.py) on a few generated X-rays."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from misc.errors import BadInput
from misc.shape_model import fit_shape_model
from model.error_detector import shape_model_to_entries
from model.error_detector import ErrorDetector, detector_checkpoint_bytes, load_detector_checkpoint, vertebra_geometry


def spine_rc(step=12.0, height=8.0, top=20.0):
    corners = np.array([[-height / 2, -10], [-height / 2, 10], [height / 2, -10], [height / 2, 10]])
    return torch.as_tensor(np.concatenate([corners + [top + step * v, 60] for v in range(17)]), dtype=torch.float32)


def test_geometry_is_in_units_of_the_median_vertebra_height():
    geometry = vertebra_geometry(spine_rc()[None])[0]  # (17, 14)
    offsets = geometry[:, :8].reshape(17, 4, 2)
    assert torch.allclose(offsets[3], torch.tensor([[-0.5, -1.25], [-0.5, 1.25], [0.5, -1.25], [0.5, 1.25]]))
    assert torch.allclose(geometry[0, 8:10], torch.zeros(2))  # no vertebra above the first
    assert torch.allclose(geometry[1:, 8:10], torch.tensor([1.5, 0.0]).expand(16, 2))  # 12 px steps / 8 px
    assert torch.allclose(geometry[:16, 10:12], torch.tensor([1.5, 0.0]).expand(16, 2))
    assert torch.allclose(geometry[16, 10:12], torch.zeros(2))


def test_point_maps_show_each_corner_type_and_the_level_of_each_vertebra():
    detector = ErrorDetector((512, 128))
    points = spine_rc(step=24.0)  # vertebrae 16 px apart: a corner's map does not reach the next vertebra
    maps = detector.point_maps(points[None])[0]  # (5, 256, 128)
    r, c = points[4 * 5 + 2].long()  # vertebra 5's bottom-left corner
    assert maps[2, r, c] == pytest.approx(1.0, abs=1e-4)
    assert maps[0, r, c] < 0.01 and maps[1, r, c] < 0.01
    assert maps[4, r, c] == pytest.approx(6 / 17, abs=1e-4)


def small_detector_file(path, settings, heatmap_patch=0):
    """(path, detector, shapes): a small random detector saved with a 3-component shape model of 12 spines."""
    torch.manual_seed(0)
    detector = ErrorDetector((64, 32), width=8, token=16, heatmap_patch=heatmap_patch).eval()
    shapes = np.stack([spine_rc().numpy() * 0.3 + np.random.default_rng(s).normal(0, 0.3, (68, 2)) for s in range(12)])
    path.write_bytes(detector_checkpoint_bytes(detector, shape_model_to_entries(fit_shape_model(shapes, 3)),
                                              settings))
    return path, detector, shapes


def test_a_saved_detector_reads_back_with_the_same_scores_and_its_settings(tmp_path):
    path, detector, shapes = small_detector_file(tmp_path / "detector.pth", {"num_flagged": 3, "corrector": "heatmap"})
    loaded, shape_model, settings = load_detector_checkpoint(path)
    image, points = torch.randn(2, 3, 64, 32), torch.as_tensor(shapes[:2], dtype=torch.float32)
    with torch.no_grad():
        assert torch.equal(loaded(image, points), detector(image, points))
    assert settings == {"num_flagged": 3, "corrector": "heatmap"}
    assert shape_model.num_components == 3


def test_a_missing_or_foreign_detector_file_is_named_in_the_error(tmp_path):
    with pytest.raises(BadInput, match="nothing.pth' not found"):
        load_detector_checkpoint(tmp_path / "nothing.pth")
    other = tmp_path / "other.pth"
    torch.save({"state_dict": {}}, other)
    with pytest.raises(BadInput, match="other.pth' is not an error detector"):
        load_detector_checkpoint(other)
    broken = tmp_path / "broken.pth"
    broken.write_bytes(b"not a checkpoint")
    with pytest.raises(BadInput, match="broken.pth' cannot be read"):
        load_detector_checkpoint(broken)


def test_training_writes_a_loadable_detector_and_resumes_without_rebuilding_the_bank(synthetic_dataset, tmp_path, capsys):
    """tools/train_error_detector.py on the generated X-rays with the committed interactive model: one
    epoch, then --resume to a second epoch (the bank is read back, the epochs continue), then a refusal
    to overwrite the folder without --resume."""
    from tools.train_error_detector import main

    _, table_dir = synthetic_dataset
    out = tmp_path / "detector_run"
    common = ["--checkpoint", "pretrained/aasce_cpu.pth", "--data", f"{table_dir}/", "--out", str(out), "--views", "1",
              "--batch-size", "4", "--quiet"]
    assert main(common + ["--epochs", "1"]) == 0
    detector, shape_model, settings = load_detector_checkpoint(out / "best.pth")
    assert detector.size_rc == (256, 128) and settings["num_flagged"] == 4
    bank = np.load(out / "bank.npz")
    assert bank["predicted_rc"].shape == (10, 2, 68, 2)  # 10 training images, after 0 and 2 clicks
    assert bank["val_predicted_rc"].shape == (4, 68, 2)
    assert main(common + ["--epochs", "2", "--resume"]) == 0
    epochs = [json.loads(line)["epoch"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert epochs == [1, 2]
    log = (out / "log.txt").read_text()
    assert "resumed after epoch 1" in log and "training views and 4 validation images from" in log
    capsys.readouterr()
    assert main(common + ["--epochs", "2"]) == 2
    assert "is not empty: pass --resume" in capsys.readouterr().err


def test_update_settings_changes_only_the_settings_and_the_reviser_follows_them(tmp_path):
    from model.auto_revision import AutoReviser, HeatmapShapeCorrector
    from model.error_detector import update_settings

    path, detector, _ = small_detector_file(tmp_path / "detector.pth", {"num_flagged": 4})
    update_settings(path, {"num_flagged": 2, "min_score": 1.5, "corrector": "heatmap", "radius": 5.0})
    loaded, _, settings = load_detector_checkpoint(path)
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), detector.state_dict().values()))

    predictor = type("P", (), {"net": torch.nn.Linear(1, 1)})()
    reviser = AutoReviser.from_checkpoint(path, predictor)
    assert (reviser.num_flagged, reviser.min_score) == (2, 1.5)
    assert isinstance(reviser.corrector, HeatmapShapeCorrector) and reviser.corrector.radius == 5.0
    with pytest.raises(BadInput, match="nothing.pth' not found"):
        update_settings(tmp_path / "nothing.pth", {})


def test_a_detector_reading_heatmaps_sees_a_corners_own_heatmap_around_it_and_refuses_to_run_without_them(tmp_path):
    _, detector, shapes = small_detector_file(tmp_path / "detector.pth", {}, heatmap_patch=3)
    points = torch.as_tensor(shapes[:1], dtype=torch.float32)
    pooled = torch.zeros(1, 68, 16, 8)
    r, c = (points[0, 10] / 4).long()  # point 10's pooled cell
    pooled[0, 10, r, c] = 1.0
    patches = detector.heatmap_patches(pooled, points)  # (1, 68, 9), stride 4 = one pooled cell
    assert patches[0, 10, 4] > 0.2  # the centre of its own patch sees its own peak
    assert patches[0, 11].abs().max() == 0  # another point's patch reads its own (empty) heatmap
    with pytest.raises(ValueError, match="heatmaps"):
        detector(torch.zeros(1, 3, 64, 32), points)
