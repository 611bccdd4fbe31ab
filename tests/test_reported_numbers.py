"""End to end: what test.py reports (results.json, results.md, NoC, predictions.npz) equals what its own
predictions and the dataset's labels say, recomputed here with plain numpy in original pixels.

A tiny random network (deterministic) on 4 generated test images: the numbers mean nothing as
results, but every reported number must follow from the saved predictions by the protocol's rules.
"""
from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch

from conftest import REPO_ROOT

TINY = ["Dataset.image_size=[64,32]", "Dataset.heatmap_std=1.5", "Dataset.subpixel_decoding_patch_size=5",
        "Model.width=8", "Model.ocr_width=16", "Model.small=true"]
MAX_CLICKS = 6
# a ladder across the original-pixel MREs of this network (about 400-600 px) and its grid MREs
# (about 20-30 px), so that NoC in the wrong frame gives other numbers
THRESHOLDS = [2000.0, 600.0, 550.0, 500.0, 450.0, 400.0, 25.0]


@pytest.fixture(scope="module")
def reported(synthetic_dataset, tmp_path_factory):
    """test.py run once on the generated test split: (output folder, printed stdout, table folder)."""
    import contextlib
    import io

    import test as test_script
    from model import build_model, save_checkpoint
    from util import load_config

    _, table = synthetic_dataset
    root = tmp_path_factory.mktemp("reported")
    config = load_config("config/quick.yaml", TINY)
    torch.manual_seed(0)
    save_checkpoint(root / "tiny.pth", build_model(config), epoch=0, config=config)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = test_script.main(["--checkpoint", str(root / "tiny.pth"), "--data", str(table), "--out", str(root / "out"),
                                 "--max-clicks", str(MAX_CLICKS), "--table-clicks", str(MAX_CLICKS), "--device", "cpu",
                                 "--no-progress", "--set", f"Test.noc_thresholds={THRESHOLDS}"])
    assert code == 0
    return root / "out", printed.getvalue(), table


@pytest.fixture(scope="module")
def truth(reported):
    """From the dataset table, not from test.py: per evaluated image, original (row, col) labels and sizes."""
    out, _, table = reported
    npz = np.load(out / "predictions.npz")
    entries = {e["image"]: e for e in json.loads((table / "test.json").read_text())}
    labels_xy = np.array([entries[str(name)]["label"] for name in npz["names"]], dtype=np.float64)
    raw_rc = np.array([entries[str(name)]["raw_size_row_col"] for name in npz["names"]], dtype=np.float64)
    spacing_rc = np.array([entries[str(name)]["pixelSpacing"] for name in npz["names"]], dtype=np.float64)
    return labels_xy[..., ::-1], raw_rc, spacing_rc


def _to_original(coords_rc, raw_rc, grid_rc, spacing_rc):
    """Grid (N, ..., 2) -> original pixels: each axis times original size / grid size (x spacing)."""
    scale = raw_rc / np.asarray(grid_rc, dtype=np.float64) * spacing_rc
    return coords_rc * scale.reshape((len(scale),) + (1,) * (coords_rc.ndim - 2) + (2,))


def _per_image_mre(coords, true):
    """(N, C+1, K, 2), (N, K, 2) -> (N, C+1) mean Euclidean distance."""
    return np.sqrt(((coords - true[:, None]) ** 2).sum(-1)).mean(-1)


def _noc(per_image, threshold):
    """Per image, the first click count with MRE <= threshold; the budget when never reached."""
    reached = per_image <= threshold
    budget = per_image.shape[1] - 1
    return np.where(reached.any(1), reached.argmax(1), budget), int((~reached.any(1)).sum())


def test_original_pixel_coordinates_are_the_grid_ones_rescaled_and_the_truth_is_the_label(reported, truth):
    out, _, _ = reported
    npz = np.load(out / "predictions.npz")
    true_orig, raw_rc, spacing_rc = truth
    assert np.array_equal(npz["raw_size_rc"], raw_rc) and np.array_equal(npz["spacing_rc"], spacing_rc)
    assert not np.allclose(raw_rc / npz["image_size_rc"], 1.0)  # grid and original frames differ here
    np.testing.assert_allclose(npz["true_original_rc"], true_orig, atol=0.01)
    for revision in ("model", "manual"):
        for kind in ("hargmax", "sargmax"):
            expected = _to_original(npz[f"{revision}_{kind}_rc"].astype(np.float64), raw_rc, npz["image_size_rc"], spacing_rc)
            np.testing.assert_allclose(npz[f"{revision}_{kind}_original_rc"], expected, rtol=1e-5, atol=1e-3)


def test_results_json_names_what_it_evaluated_and_the_config_overrides(reported):
    """A results file read alone must say that its numbers are not the checkpoint's own config."""
    out, _, table = reported
    results = json.loads((out / "results.json").read_text())
    assert (results["split"], results["data"], results["num_images"]) == ("test", str(table), 4)
    assert results["config_overrides"] == [f"Test.noc_thresholds={THRESHOLDS}"]


def test_results_json_mre_and_noc_follow_from_the_predictions_in_original_pixels(reported, truth):
    out, _, _ = reported
    npz = np.load(out / "predictions.npz")
    results = json.loads((out / "results.json").read_text())
    true_orig, raw_rc, spacing_rc = truth
    grid_rc = npz["image_size_rc"]
    assert results["num_images"] == len(true_orig) == 4 and results["max_clicks"] == MAX_CLICKS
    per_image = {}
    for revision in ("model", "manual"):
        for kind in ("hargmax", "sargmax"):
            coords = npz[f"{revision}_{kind}_rc"].astype(np.float64)
            original = _per_image_mre(_to_original(coords, raw_rc, grid_rc, spacing_rc), true_orig)
            grid = _per_image_mre(coords, npz["true_rc"].astype(np.float64))
            np.testing.assert_allclose(results[revision][f"{kind}_mm_MRE"], original.mean(0), rtol=1e-4)
            np.testing.assert_allclose(results[revision][f"{kind}_pixel_MRE"], grid.mean(0), rtol=1e-4)
            per_image[revision, kind] = original, grid
    informative = grid_differs = False
    for threshold in THRESHOLDS:
        entry = results["noc"][f"{threshold:g}"]
        for revision in ("model", "manual"):
            original, grid = per_image[revision, "sargmax"]
            noc, not_reached = _noc(original, threshold)
            assert entry[revision]["mean_clicks"] == pytest.approx(noc.mean(), abs=1e-9), (threshold, revision)
            assert entry[revision]["not_reached"] == not_reached, (threshold, revision)
            informative |= 0 < noc.mean() < MAX_CLICKS
            grid_differs |= not np.array_equal(_noc(grid, threshold)[0], noc)
    assert informative and grid_differs  # the ladder tells a right NoC from one in the wrong frame


def test_clicks_follow_the_worst_point_rule_and_clicked_points_sit_on_the_truth(reported, truth):
    """Decision metric of the config: hard-argmax error in original pixels, the worst unclicked point."""
    out, _, _ = reported
    npz = np.load(out / "predictions.npz")
    true_orig, raw_rc, spacing_rc = truth
    true_rc = npz["true_rc"]
    for revision in ("model", "manual"):
        clicks = npz[f"{revision}_clicks"]
        assert clicks.shape == (4, MAX_CLICKS)
        hard = _to_original(npz[f"{revision}_hargmax_rc"].astype(np.float64), raw_rc, npz["image_size_rc"], spacing_rc)
        for i in range(4):
            assert len(set(clicks[i].tolist())) == MAX_CLICKS
            for n in range(MAX_CLICKS):
                errors = np.sqrt(((hard[i, n] - true_orig[i]) ** 2).sum(-1))
                errors[clicks[i, :n]] = -np.inf
                assert clicks[i, n] == int(np.argmax(errors)), (revision, i, n)
                done = clicks[i, : n + 1]
                assert np.array_equal(npz[f"{revision}_sargmax_rc"][i, n + 1, done], true_rc[i, done])
    manual = npz["manual_sargmax_rc"]
    for n in range(1, MAX_CLICKS + 1):  # manual revision moves exactly the clicked point
        moved = np.flatnonzero((manual[:, n] != manual[:, n - 1]).any(-1)[0])
        assert set(moved.tolist()) <= {int(npz["manual_clicks"][0, n - 1])}


def _table_rows(markdown: str, metric: str) -> dict[str, list[float]]:
    block = markdown.split(f"MRE ({metric};", 1)[1].split("\n\n", 2)[1]
    rows = {}
    for line in block.splitlines():
        match = re.match(r"\| (model|manual) revision \| (.*) \|$", line)
        if match:
            rows[match.group(1)] = [float(v) for v in match.group(2).split(" | ")]
    return rows


def test_results_md_rows_hold_each_revisions_own_numbers(reported, truth):
    out, printed, _ = reported
    npz = np.load(out / "predictions.npz")
    true_orig, raw_rc, spacing_rc = truth
    markdown = (out / "results.md").read_text()
    assert markdown.strip() in printed  # the table on screen is the file
    for metric, kind in (("sargmax_mm_MRE", "sargmax"), ("hargmax_mm_MRE", "hargmax")):
        rows = _table_rows(markdown, metric)
        for revision in ("model", "manual"):
            coords = _to_original(npz[f"{revision}_{kind}_rc"].astype(np.float64), raw_rc, npz["image_size_rc"], spacing_rc)
            expected = _per_image_mre(coords, true_orig).mean(0)
            assert rows[revision] == pytest.approx(expected, abs=0.0051), (metric, revision)
        assert rows["model"][1:] != pytest.approx(rows["manual"][1:], abs=0.01)  # the rows can be told apart
    noc_lines = [line for line in markdown.splitlines() if line.startswith("- MRE <= ")]
    results = json.loads((out / "results.json").read_text())
    assert len(noc_lines) == len(THRESHOLDS)
    for line, threshold in zip(noc_lines, THRESHOLDS):
        entry = results["noc"][f"{threshold:g}"]
        assert line == (f"- MRE <= {threshold:g}: model {entry['model']['mean_clicks']:.2f} "
                        f"({entry['model']['not_reached']} not reached); manual {entry['manual']['mean_clicks']:.2f} "
                        f"({entry['manual']['not_reached']} not reached)")


def test_compare_runs_rows_hold_each_runs_numbers_and_refuse_other_images(reported, truth, tmp_path, capsys):
    """tools/compare_runs.py (the ablation table): its row is the model revision recomputed from the saved
    predictions; results of another split are refused with the run and the key named."""
    from tools import compare_runs

    out, _, _ = reported
    npz = np.load(out / "predictions.npz")
    true_orig, raw_rc, spacing_rc = truth
    results = json.loads((out / "results.json").read_text())
    other = tmp_path / "other"
    other.mkdir()
    (other / "results.json").write_text(json.dumps({**results, "model": {
        **results["model"], "sargmax_mm_MRE": [v + 1.0 for v in results["model"]["sargmax_mm_MRE"]]}}))
    clicks = 3
    assert compare_runs.main([f"full={out}", f"shifted={other / 'results.json'}", "--clicks", str(clicks)]) == 0
    printed = capsys.readouterr().out
    rows = {line.split("|")[1].strip(): [float(c) for c in line.strip().strip("|").split("|")[1:]]
            for line in printed.splitlines() if line.startswith(("| full", "| shifted"))}
    coords = _to_original(npz["model_sargmax_rc"].astype(np.float64), raw_rc, npz["image_size_rc"], spacing_rc)
    per_image = _per_image_mre(coords, true_orig)
    expected_noc = [_noc(per_image, t)[0].mean() for t in THRESHOLDS]
    cobb = results["model"]["cobb_SMAPE"]
    assert rows["full"] == pytest.approx([*per_image.mean(0)[: clicks + 1], *expected_noc, cobb[0], cobb[clicks]],
                                         abs=0.0051)
    assert rows["shifted"][: clicks + 1] == pytest.approx([v + 1.0 for v in rows["full"][: clicks + 1]], abs=0.0051)

    (other / "results.json").write_text(json.dumps({**results, "split": "val"}))
    assert compare_runs.main([f"full={out}", f"val={other}"]) == 2
    error = capsys.readouterr().err
    assert "'val'" in error and "split='val'" in error and "split='test'" in error
    assert compare_runs.main([str(tmp_path / "missing")]) == 2
    assert "missing: not found" in capsys.readouterr().err


def test_per_image_csv_rows_are_each_images_own_errors(reported, truth):
    """per_image.csv: per image (in predictions.npz order) model revision's MRE in original pixels and Cobb
    SMAPE after 0..max clicks, recomputed here from the saved predictions with plain numpy."""
    from engine.report import parse_per_image_csv

    out, _, _ = reported
    npz = np.load(out / "predictions.npz")
    true_orig, raw_rc, spacing_rc = truth
    table = parse_per_image_csv((out / "per_image.csv").read_text())
    assert table["images"] == [str(name) for name in npz["names"]]
    coords = _to_original(npz["model_sargmax_rc"].astype(np.float64), raw_rc, npz["image_size_rc"], spacing_rc)
    np.testing.assert_allclose(table["mre"], _per_image_mre(coords, true_orig), atol=1e-4)
    predicted, true = npz["model_cobb_angles"], npz["true_cobb_angles"][:, None, :]
    smape = 100.0 * np.abs(predicted - true).sum(-1) / np.maximum((predicted + true).sum(-1), 1e-12)
    assert table["cobb_smape"].shape == (4, MAX_CLICKS + 1) and np.ptp(table["cobb_smape"]) > 0
    np.testing.assert_allclose(table["cobb_smape"], smape, atol=1e-4)


def test_compare_runs_paired_to_gives_each_runs_per_image_difference_and_refuses_other_images(reported, tmp_path,
                                                                                           capsys):
    from engine.report import parse_per_image_csv, per_image_csv
    from tools import compare_runs

    out, _, _ = reported
    base = parse_per_image_csv((out / "per_image.csv").read_text())
    results_text = (out / "results.json").read_text()
    shifts = np.array([1.0, 2.0, 3.0, 6.0])[:, None]  # image i is worse by shifts[i] px at every click
    for name, mre in (("worse", base["mre"] + shifts), ("same", base["mre"])):
        folder = tmp_path / name
        folder.mkdir()
        (folder / "results.json").write_text(results_text)
        (folder / "per_image.csv").write_text(per_image_csv(base["images"], mre, base["cobb_smape"]))
    assert compare_runs.main([f"full={out}", f"worse={tmp_path / 'worse'}", f"same={tmp_path / 'same'}",
                              "--clicks", "2", "--paired-to", "full", "--resamples", "2000"]) == 0
    printed = capsys.readouterr().out
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.strip().strip("|").split("|")[1:]]
            for line in printed.splitlines() if line.startswith(("| worse", "| same"))}
    worse = [re.fullmatch(r"([+-][\d.]+) \[([+-][\d.]+), ([+-][\d.]+)\]", cell).groups() for cell in rows["worse"]]
    assert len(worse) == 3 + 2  # MRE 0..2, Cobb SMAPE 0 and 2
    for mean, low, high in worse[:3]:
        assert float(mean) == pytest.approx(3.0) and 1.0 <= float(low) < 3.0 < float(high) <= 6.0
    assert all(cell == "+0.00 [+0.00, +0.00]" for cell in rows["worse"][3:] + rows["same"])

    reordered = tmp_path / "reordered"
    reordered.mkdir()
    (reordered / "results.json").write_text(results_text)
    (reordered / "per_image.csv").write_text(per_image_csv(base["images"][::-1], base["mre"][::-1]))
    assert compare_runs.main([f"full={out}", f"reordered={reordered}", "--paired-to", "full"]) == 2
    assert "'reordered' and 'full' list different images" in capsys.readouterr().err
    (reordered / "per_image.csv").unlink()
    assert compare_runs.main([f"full={out}", f"reordered={reordered}", "--paired-to", "full"]) == 2
    assert "reordered/per_image.csv: not found" in capsys.readouterr().err
    assert compare_runs.main([f"full={out}", "--paired-to", "nobody"]) == 2
    assert "'nobody' is not one of the runs" in capsys.readouterr().err


def test_cobb_error_sources_rebuild_the_reported_cobb_smape_from_predictions_npz(reported, tmp_path, capsys):
    """tools/cobb_error_sources.py recomputes the angles from predictions.npz alone (misc/cobb_errors.py):
    with the challenge's directions its SMAPE is results.json's, click by click."""
    import importlib.util

    out, _, _ = reported
    spec = importlib.util.spec_from_file_location("cobb_error_sources", REPO_ROOT / "tools" / "cobb_error_sources.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    results = json.loads((out / "results.json").read_text())
    for clicks in range(MAX_CLICKS + 1):
        assert tool.main([str(out), "--clicks", str(clicks), "--json", str(tmp_path / "s.json")]) == 0
        sides, *variants = json.loads((tmp_path / "s.json").read_text())
        assert [sides["direction"]] + [v["direction"] for v in variants] == ["sides", "endplates", "sides_smoothed"]
        assert sides["smape"] == pytest.approx(results["model"]["cobb_SMAPE"][clicks], abs=1e-6)
    assert tool.main([str(out), "--clicks", str(MAX_CLICKS + 1)]) == 2
    assert f"holds 0..{MAX_CLICKS} clicks" in capsys.readouterr().err


def test_error_scores_measure_test_py_output_with_its_confidence(reported, tmp_path):
    """tools/error_scores.py on test.py's own output folder: it finds model_confidence (images x clicks+1 x 68,
    in [0, 1]), scores both baselines, and its errors are results.json's 0-click MRE."""
    import importlib.util

    out, _, table = reported
    saved = np.load(out / "predictions.npz")
    assert saved["model_confidence"].shape == saved["model_sargmax_rc"].shape[:3]
    assert ((saved["model_confidence"] >= 0) & (saved["model_confidence"] <= 1)).all()
    spec = importlib.util.spec_from_file_location("error_scores", REPO_ROOT / "tools" / "error_scores.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    results = json.loads((out / "results.json").read_text())
    for clicks in (0, MAX_CLICKS):
        assert tool.main([str(out), "--data", str(table), "--clicks", str(clicks), "--json", str(tmp_path / "e.json")]) == 0
        summary = json.loads((tmp_path / "e.json").read_text())
        assert summary["mre_px"] == pytest.approx(results["model"]["sargmax_mm_MRE"][clicks], rel=1e-5)
        assert set(summary["scores"]) == {"confidence", "shape_residual"}
        for quality in summary["scores"].values():
            assert 0 <= quality["top_among_worst"] <= 1 and -1 <= quality["mean_spearman"] <= 1
