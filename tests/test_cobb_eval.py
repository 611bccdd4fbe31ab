"""Cobb-angle evaluation of the revisions (engine/cobb_eval.py), on hand-built spines with known angles.

The spine: 17 rectangular vertebrae along a gentle bow, vertebra v tilted by TILTS[v] degrees. The angle
between two vertebrae is the difference of their tilts, so the Cobb angles are known by construction:
largest 25 deg (v4 at +10 against v12 at -15), and 10 deg for the other two (v0..v4 and v12..v16).
"""
from __future__ import annotations

import json

import numpy as np
import pytest

from misc.cobb import cobb_angles
from misc.frames import grid_to_original_px
from engine.cobb_eval import (
    cobb_metrics,
    degenerate_vertebrae,
    format_cobb_table,
    plot_cobb,
    predicted_cobb_angles,
    true_cobb_angles,
)

TILTS = np.concatenate([np.linspace(0, 10, 5), np.linspace(10, -15, 9)[1:], np.linspace(-15, -5, 5)[1:]])
KNOWN_ANGLES = [25.0, 10.0, 10.0]  # exact by construction; the challenge method (cosines rounded to 8
# decimals) gives them within 1e-5 deg, so exact-zero checks compare with EXACT_TRUTH below
RAW_RC = (2048.0, 1024.0)
GRID_RC = (512, 256)


def make_spine(tilts_deg=TILTS, x0=450.0, y0=150.0, step=90.0, width=70.0, height=50.0, bow=60.0):
    """(68, 2) (x, y) original pixels: vertebra v centred on a bow, its rectangle rotated by tilts_deg[v]."""
    pts = np.zeros((68, 2))
    corners = np.array([[-width / 2, -height / 2], [width / 2, -height / 2],  # 4v TL, 4v+1 TR
                        [-width / 2, height / 2], [width / 2, height / 2]])  # 4v+2 BL, 4v+3 BR
    for v, tilt in enumerate(tilts_deg):
        t = np.radians(tilt)
        rotation = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
        centre = np.array([x0 + bow * np.sin(np.pi * v / 16), y0 + step * v])
        pts[4 * v: 4 * v + 4] = centre + corners @ rotation.T
    return pts


def to_grid_rc(points_xy, raw_rc=RAW_RC, grid_rc=GRID_RC):
    return np.asarray(points_xy)[:, ::-1] * np.asarray(grid_rc, float) / np.asarray(raw_rc, float)


EXACT_TRUTH = cobb_angles(make_spine(), RAW_RC[0])["angles"]


def make_arrays(model_xy, manual_xy, true_xy, raw_rc=RAW_RC, spacing_rc=(1.0, 1.0)):
    """An ``evaluate``-style arrays dict from per-image lists of per-click (68, 2) original-pixel points."""
    n, steps = len(true_xy), len(model_xy[0])
    arrays = {
        "model_sargmax_rc": np.stack([[to_grid_rc(p, raw_rc) for p in img] for img in model_xy]),
        "manual_sargmax_rc": np.stack([[to_grid_rc(p, raw_rc) for p in img] for img in manual_xy]),
        "true_rc": np.stack([to_grid_rc(p, raw_rc) for p in true_xy]),
        "model_clicks": np.zeros((n, steps - 1), dtype=np.int64),
        "manual_clicks": np.zeros((n, steps - 1), dtype=np.int64),
        "raw_size_rc": np.tile(np.asarray(raw_rc, float), (n, 1)),
        "spacing_rc": np.tile(np.asarray(spacing_rc, float), (n, 1)),
        "names": np.array([f"data/test/img{i} A AP.npy" for i in range(n)]),
        "image_size_rc": np.array(GRID_RC),
    }
    arrays["model_hargmax_rc"] = np.round(arrays["model_sargmax_rc"])
    arrays["manual_hargmax_rc"] = np.round(arrays["manual_sargmax_rc"])
    return arrays


def tilt_vertebra(points_xy, v, extra_deg):
    """Rotate vertebra v's four corners about their centre by extra_deg."""
    pts = np.array(points_xy, dtype=float)
    quad = pts[4 * v: 4 * v + 4]
    centre = quad.mean(axis=0)
    t = np.radians(extra_deg)
    rotation = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
    pts[4 * v: 4 * v + 4] = centre + (quad - centre) @ rotation.T
    return pts


def entry(name, points_xy, raw_rc=RAW_RC, decimals=None, **extra):
    label = np.asarray(points_xy) if decimals is None else np.asarray(points_xy).round(decimals)
    return {"image": name, "label": label.tolist(),
            "raw_size_row_col": [int(raw_rc[0]), int(raw_rc[1])], "pixelSpacing": [1, 1], **extra}


# --------------------------------------------------------------------------------------------------------
def test_the_hand_built_spine_has_the_angles_it_was_built_with():
    assert cobb_angles(make_spine(), RAW_RC[0])["angles"] == pytest.approx(KNOWN_ANGLES, abs=1e-4)
    # tilting the lower end vertebra v12 by -5 deg: largest 30, upper 10, lower (v12 -20 vs v16 -5) 15
    tilted = tilt_vertebra(make_spine(), 12, -5.0)
    assert cobb_angles(tilted, RAW_RC[0])["angles"] == pytest.approx([30.0, 10.0, 15.0], abs=1e-4)


def test_grid_to_original_px_scales_rows_and_columns_per_image():
    coords = np.array([[[[10.0, 20.0]]], [[[10.0, 20.0]]]])  # (N=2, 1, 1, 2)
    out = grid_to_original_px(coords, (100, 50), [[1000, 200], [500, 500]])
    assert out[0, 0, 0].tolist() == [100.0, 80.0]
    assert out[1, 0, 0].tolist() == [50.0, 200.0]


# --------------------------------------------------------------------------------------------------------
# truth
# --------------------------------------------------------------------------------------------------------
def test_true_angles_use_the_stored_field_else_the_label_in_the_order_of_the_evaluated_names():
    spine = make_spine()
    arrays = make_arrays([[spine]] * 2, [[spine]] * 2, [spine] * 2)
    stored = [31.5, 12.25, 7.0]
    table = [  # a different order, plus an image that was not evaluated
        entry("data/test/other.npy", tilt_vertebra(spine, 3, 20.0)),
        entry("data/test/img1 A AP.npy", spine, cobb_angles=stored),
        entry("data/test/img0 A AP.npy", spine, decimals=2),  # labels are stored as rounded pixels
    ]
    truth = true_cobb_angles(table, arrays)
    assert truth.shape == (2, 3)
    assert truth[0] == pytest.approx(KNOWN_ANGLES, abs=1e-2)  # computed from the (rounded) label
    assert truth[1].tolist() == stored  # angles.csv values win over the label
    # without arrays: the table's own order
    assert true_cobb_angles(table[1:]).tolist()[0] == stored


def test_true_angles_name_the_problem():
    spine = make_spine()
    arrays = make_arrays([[spine]], [[spine]], [spine])
    with pytest.raises(KeyError, match="img0 A AP"):
        true_cobb_angles([entry("data/test/somebody else.npy", spine)], arrays)
    with pytest.raises(ValueError, match="cobb_angles must be 3"):
        true_cobb_angles([entry("data/test/img0 A AP.npy", spine, cobb_angles=[1.0, -2.0, 3.0])], arrays)
    broken = make_spine()
    broken[8:12] = broken[8]  # vertebra 2 collapsed onto one point: the truth has no direction
    with pytest.raises(ValueError, match="img0 A AP.*vertebrae \\[2\\]"):
        true_cobb_angles([entry("data/test/img0 A AP.npy", broken)], arrays)


# --------------------------------------------------------------------------------------------------------
# metrics
# --------------------------------------------------------------------------------------------------------
def test_perfect_predictions_give_zero_smape_and_zero_mae_at_every_click():
    spine = make_spine()
    arrays = make_arrays([[spine] * 4] * 3, [[spine] * 4] * 3, [spine] * 3)
    truth = true_cobb_angles([entry(str(n), spine) for n in arrays["names"]], arrays)
    metrics = cobb_metrics(arrays, truth)
    for revision in ("model", "manual"):
        assert len(metrics[revision]["cobb_SMAPE"]) == 4  # clicks 0..3
        assert metrics[revision]["cobb_SMAPE"] == pytest.approx([0.0] * 4, abs=1e-9)
        assert np.asarray(metrics[revision]["cobb_MAE"]) == pytest.approx(np.zeros((4, 3)), abs=1e-9)
        assert metrics[revision]["cobb_degenerate"] == [0, 0, 0, 0]
    json.dumps(metrics)  # results.json-ready


def test_angles_are_measured_in_original_pixels_without_pixel_spacing():
    # an awkward original size (non-power-of-two scale) and an anisotropic spacing that must be ignored
    raw = (2339.0, 951.0)
    spine = make_spine()
    arrays = make_arrays([[spine, spine]], [[spine, spine]], [spine], raw_rc=raw, spacing_rc=(0.5, 0.2))
    metrics = cobb_metrics(arrays, [KNOWN_ANGLES])
    assert metrics["model"]["cobb_SMAPE"] == pytest.approx([0.0, 0.0], abs=1e-5)
    pred, _ = predicted_cobb_angles(arrays, "model")
    assert pred[0, 0] == pytest.approx(KNOWN_ANGLES, abs=1e-4)


def test_a_tilted_end_vertebra_gives_the_expected_mae_and_smape():
    spine = make_spine()
    tilted = tilt_vertebra(spine, 12, -5.0)  # angles (30, 10, 15) against the truth (25, 10, 10)
    # image 0: tilted at 0 clicks, right at 1 click; image 1: always right
    arrays = make_arrays([[tilted, spine], [spine, spine]], [[tilted, tilted], [spine, spine]], [spine, spine])
    metrics = cobb_metrics(arrays, [KNOWN_ANGLES, KNOWN_ANGLES])
    model, manual = metrics["model"], metrics["manual"]
    assert model["cobb_MAE"][0] == pytest.approx([2.5, 0.0, 2.5], abs=1e-4)  # errors (5, 0, 5) on 1 of 2
    assert model["cobb_MAE"][1] == pytest.approx([0.0, 0.0, 0.0], abs=1e-4)
    # SMAPE: image 0 scores 100 * 10 / (55 + 45) = 10 %, image 1 0 %
    assert model["cobb_SMAPE"] == pytest.approx([5.0, 0.0], abs=1e-4)
    assert manual["cobb_SMAPE"] == pytest.approx([5.0, 5.0], abs=1e-4)


def test_manual_revision_reaches_the_truth_once_every_wrong_corner_is_clicked():
    spine = make_spine()
    tilted = tilt_vertebra(spine, 12, -5.0)
    order = [48, 49, 50, 51]  # the four corners of vertebra 12
    steps = []
    for n in range(len(order) + 1):  # manual revision: clicked points take their true position
        pred = tilted.copy()
        pred[order[:n]] = spine[order[:n]]
        steps.append(pred)
    arrays = make_arrays([steps], [steps], [spine])
    arrays["manual_clicks"] = np.array([order])
    smape = cobb_metrics(arrays, [EXACT_TRUTH])["manual"]["cobb_SMAPE"]
    assert smape[0] == pytest.approx(10.0, abs=1e-4)
    assert all(v > 0 for v in smape[:4])  # one corner still wrong keeps the vertebra tilted
    assert smape[4] == pytest.approx(0.0, abs=1e-9)


def test_a_degenerate_prediction_is_scored_instead_of_stopping_the_evaluation():
    spine = make_spine()
    collapsed = spine.copy()
    collapsed[20:24] = collapsed[20:24].mean(axis=0)  # vertebra 5: all four corners on one point
    assert degenerate_vertebrae(collapsed).tolist() == [v == 5 for v in range(17)]
    with pytest.raises(ValueError):
        cobb_angles(collapsed, RAW_RC[0])  # the strict default would stop an evaluation
    arrays = make_arrays([[collapsed, spine]], [[collapsed, collapsed]], [spine])
    metrics = cobb_metrics(arrays, [EXACT_TRUTH])
    assert metrics["model"]["cobb_degenerate"] == [1, 0]
    assert metrics["manual"]["cobb_degenerate"] == [1, 1]
    assert np.isfinite(metrics["manual"]["cobb_SMAPE"]).all()
    assert metrics["model"]["cobb_SMAPE"][1] == pytest.approx(0.0, abs=1e-9)


def test_cobb_metrics_checks_its_inputs():
    spine = make_spine()
    arrays = make_arrays([[spine]], [[spine]], [spine])
    with pytest.raises(ValueError, match="true_angles must be"):
        cobb_metrics(arrays, [KNOWN_ANGLES, KNOWN_ANGLES])
    arrays["model_sargmax_rc"] = arrays["model_sargmax_rc"].copy()
    arrays["model_sargmax_rc"][0, 0, 3, 0] = np.nan
    with pytest.raises(ValueError, match="model revision, image 'data/test/img0 A AP.npy', 0 clicks"):
        cobb_metrics(arrays, [KNOWN_ANGLES])


# --------------------------------------------------------------------------------------------------------
# table and plot
# --------------------------------------------------------------------------------------------------------
def sample_results():
    return {
        "num_images": 7,
        "model": {"cobb_SMAPE": [20.0, 15.5, 12.25, 9.0], "cobb_MAE": [[8, 4, 5], [6, 3, 4], [5, 2, 3], [4, 2, 2]],
                  "cobb_degenerate": [0, 0, 0, 0]},
        "manual": {"cobb_SMAPE": [20.0, 19.0, 18.0, 17.0], "cobb_MAE": [[8, 4, 5], [7, 4, 5], [7, 3, 5], [6, 3, 4]],
                   "cobb_degenerate": [2, 1, 0, 0]},
    }


def test_format_cobb_table_is_markdown_with_one_row_per_revision():
    text = format_cobb_table(sample_results(), 2)
    lines = text.splitlines()
    assert lines[0].startswith("Cobb angle SMAPE (%") and "7 images" in lines[0]
    assert "| 0 clicks | 1 click | 2 clicks |" in text and "3 clicks" not in text
    assert "| model revision | 20.00 | 15.50 | 12.25 |" in lines
    assert "| manual revision | 20.00 | 19.00 | 18.00 |" in lines
    assert "- model revision: 0 clicks 8.00 / 4.00 / 5.00; 2 clicks 5.00 / 2.00 / 3.00" in lines
    manual_mae = [l for l in lines if l.startswith("- manual revision")][0]
    assert "2, 1, 0 images" in manual_mae  # degenerate predictions are reported, not hidden
    # asking for more columns than were evaluated shows what there is
    assert "| 3 clicks |" in format_cobb_table(sample_results(), 10)


def test_plot_cobb_writes_a_png(tmp_path):
    from PIL import Image

    path = tmp_path / "sub" / "cobb_per_click.png"
    plot_cobb(sample_results(), path)
    with Image.open(path) as image:
        assert image.format == "PNG" and image.size[0] > 600 and image.size[1] > 300
    assert [p.name for p in path.parent.iterdir()] == ["cobb_per_click.png"]  # no temporary file left
