"""The committed weights (pretrained/aasce_cpu.pth) still give their recorded evaluation: re-evaluated on the
real test split (../shared/aasce, skipped without it; about 2.5 min on 2 CPU cores), they must reproduce
experiments/aasce_cpu/test_results.json and test_per_image.csv, the results.json and per_image.csv of
`bash test.sh` committed with the model."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from engine.report import parse_per_image_csv

ROOT = Path(__file__).resolve().parents[1]
CHECKPOINT = "pretrained/aasce_cpu.pth"
RECORD = ROOT / "experiments" / "aasce_cpu"
COMMITTED_PER_IMAGE = RECORD / "test_per_image.csv"
ROTATED_TEST_IMAGE = "sunhl-1th-12-Jan-2017-262 A AP"  # the test split's one label listing T1 last


def _committed_evaluation() -> dict:
    results = json.loads((RECORD / "test_results.json").read_text())
    assert (results["checkpoint"], results["split"], results["num_images"]) == (CHECKPOINT, "test", 64)
    return results


def test_committed_model_reproduces_its_published_evaluation(real_aasce_data, tmp_path):
    """`bash test.sh` on the real data gives the committed numbers (to 0.01 px / 0.01 %), image by image."""
    import test as test_script

    out = tmp_path / "out"
    code = test_script.main(["--checkpoint", str(ROOT / CHECKPOINT), "--data", str(real_aasce_data),
                             "--out", str(out), "--no-progress", "--device", "cpu"])
    assert code == 0
    got, want = json.loads((out / "results.json").read_text()), _committed_evaluation()
    assert got["num_images"] == want["num_images"] and got["max_clicks"] == want["max_clicks"]
    for revision in ("model", "manual"):
        for metric in ("sargmax_mm_MRE", "hargmax_mm_MRE", "cobb_SMAPE"):
            np.testing.assert_allclose(got[revision][metric], want[revision][metric], atol=0.01,
                                       err_msg=f"{revision} {metric}")
    for threshold, entry in want["noc"].items():
        for revision in ("model", "manual"):
            assert got["noc"][threshold][revision]["not_reached"] == entry[revision]["not_reached"]
            assert got["noc"][threshold][revision]["mean_clicks"] == pytest.approx(entry[revision]["mean_clicks"],
                                                                                   abs=0.02)
    got_images = parse_per_image_csv((out / "per_image.csv").read_text())
    want_images = parse_per_image_csv(COMMITTED_PER_IMAGE.read_text(), COMMITTED_PER_IMAGE.name)
    assert got_images["images"] == want_images["images"]
    np.testing.assert_allclose(got_images["mre"], want_images["mre"], atol=0.01)
    # the image the documents name as the test split's rotated label is the only one out of top-to-bottom order
    from dataset.vertebra_order import is_top_to_bottom, topmost_listed_last
    labels = {Path(entry["image"]).stem: np.asarray(entry["label"], dtype=float)
              for entry in json.loads((real_aasce_data / "test.json").read_text())}
    assert [name for name, label in labels.items() if not is_top_to_bottom(label)] == [ROTATED_TEST_IMAGE]
    assert topmost_listed_last(labels[ROTATED_TEST_IMAGE])
