"""tools/error_scores.py on a hand-made predictions.npz and training table: the shares and correlations it
reports follow from how the errors and confidences were built."""
from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest

from conftest import REPO_ROOT
from test_shape_model import jittered_spines, spine


def load_tool():
    spec = importlib.util.spec_from_file_location("error_scores", REPO_ROOT / "tools" / "error_scores.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    return tool


# Three images of the upright spine. Point errors (x offsets, px): 0.1 * i + 1 for point i, so the last points
# are the worst, except that point 10 is moved 80 px (the worst of all, and a clear shape outlier).
OFFSETS_X = 0.1 * np.arange(68) + 1.0
OFFSETS_X[10] = 80.0
# Confidence per image: images 0 and 1 are least confident where the error is largest (score = 1 -
# confidence ranks exactly like the error: Spearman 1, top point 10 among the worst); image 2 the
# reverse (Spearman -1; its least confident point is the best one, point 0: a miss).
CONFIDENCE = [1 - OFFSETS_X / 1000, 1 - OFFSETS_X / 500, 0.5 + OFFSETS_X / 1000]


@pytest.fixture
def folders(tmp_path):
    true_xy = np.stack([spine()] * 3)
    pred_xy = true_xy + np.stack([OFFSETS_X, np.zeros(68)], axis=-1)
    run = tmp_path / "run"
    run.mkdir()
    np.savez(run / "predictions.npz", model_sargmax_original_rc=pred_xy[:, None, :, ::-1],
             true_original_rc=true_xy[..., ::-1], names=np.array(["a", "b", "c"]),
             model_confidence=np.array(CONFIDENCE)[:, None])
    data = tmp_path / "data"
    data.mkdir()
    table = [{"image": f"t{i}.npy", "label": s.round(3).tolist()} for i, s in enumerate(jittered_spines(20, sigma=2))]
    (data / "train.json").write_text(json.dumps(table))
    return run, data


def test_reports_each_scores_top_point_share_and_spearman(folders, tmp_path, capsys):
    run, data = folders
    out = tmp_path / "scores.json"
    assert load_tool().main([str(run), "--data", str(data), "--components", "4", "--json", str(out)]) == 0
    summary = json.loads(out.read_text())
    assert summary["images"] == 3 and summary["clicks"] == 0
    assert summary["mre_px"] == pytest.approx(OFFSETS_X.mean())
    confidence = summary["scores"]["confidence"]
    assert confidence["top_among_worst"] == pytest.approx(2 / 3)
    assert confidence["mean_spearman"] == pytest.approx((1 + 1 - 1) / 3)
    # the 80 px point is the shape model's top point in every image, and it is the worst point
    assert summary["scores"]["shape_residual"]["top_among_worst"] == 1.0
    printed = capsys.readouterr().out
    assert "| confidence | 66.7 % | 0.333 |" in printed
    assert "| random (expected) | 7.4 % | 0 | 0 |" in printed


def test_a_folder_without_confidence_gets_the_shape_row_and_a_note(folders, capsys):
    run, data = folders
    arrays = dict(np.load(run / "predictions.npz"))
    del arrays["model_confidence"]
    np.savez(run / "predictions.npz", **arrays)
    assert load_tool().main([str(run), "--data", str(data)]) == 0
    printed = capsys.readouterr().out
    assert "| shape_residual |" in printed and "| confidence |" not in printed
    assert "no model_confidence" in printed


def test_missing_inputs_are_errors_for_a_person(folders, tmp_path, capsys):
    run, data = folders
    tool = load_tool()
    assert tool.main([str(tmp_path / "nowhere"), "--data", str(data)]) == 2
    assert "predictions.npz: not found" in capsys.readouterr().err
    assert tool.main([str(run), "--data", str(tmp_path)]) == 2
    assert "train.json" in capsys.readouterr().err
    assert tool.main([str(run), "--data", str(data), "--clicks", "1"]) == 2
    assert "holds 0..0 clicks" in capsys.readouterr().err


def test_the_error_detectors_scores_get_their_row_at_0_clicks_only(folders, capsys):
    """error_scores (test.py --auto-revision) ranking image 0 like its errors and images 1, 2 the reverse."""
    run, data = folders
    arrays = dict(np.load(run / "predictions.npz"))
    arrays["error_scores"] = np.stack([OFFSETS_X, -OFFSETS_X, -OFFSETS_X])
    for key in ("model_sargmax_original_rc", "model_confidence"):  # 0..1 clicks
        arrays[key] = np.repeat(arrays[key], 2, axis=1)
    np.savez(run / "predictions.npz", **arrays)
    assert load_tool().main([str(run), "--data", str(data)]) == 0
    assert "| error_detector | 33.3 % | -0.333 |" in capsys.readouterr().out
    assert load_tool().main([str(run), "--data", str(data), "--clicks", "1"]) == 0
    assert "| error_detector |" not in capsys.readouterr().out
