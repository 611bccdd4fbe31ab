"""The committed model's published numbers: README "Results" quotes its test-split evaluation, and that
evaluation is what the committed weights give.

pretrained/aasce_cpu_logs/test_results.json is results/aasce_cpu/results.json of `bash test.sh`, committed
with the model. The first test holds the README to that file (every number of the Results section and the
"for scale" row of the ablation); the second re-runs the evaluation on the real AASCE test split (it needs
../shared/aasce; 2 min 22 s on the idle 2-core machine) and holds the file to the weights.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import AASCE, require
from misc.report import comparison_table

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
CHECKPOINT = "pretrained/aasce_cpu.pth"
COMMITTED = ROOT / "pretrained" / "aasce_cpu_logs" / "test_results.json"


def _results() -> dict:
    results = json.loads(COMMITTED.read_text())
    assert (results["checkpoint"], results["split"], results["num_images"]) == (CHECKPOINT, "test", 64)
    return results


def _section(start: str, end: str) -> str:
    assert start in README, f"README has no '{start}'"
    return README.split(start, 1)[1].split(end, 1)[0]


def _row(cells) -> str:
    return " | ".join(f"{value:.2f}" for value in cells)


def test_readme_results_section_quotes_the_committed_evaluation():
    results = _results()
    model, manual = results["model"]["sargmax_mm_MRE"], results["manual"]["sargmax_mm_MRE"]
    hard_model, hard_manual = results["model"]["hargmax_mm_MRE"], results["manual"]["hargmax_mm_MRE"]
    section = _section("## Results", "**What made the clicks steer.**")
    expected = [
        f"takes the MRE from {model[0]:.2f} px to {model[5]:.2f} px after 5 clicks ({model[5] / model[0]:.2f} of "
        f"the start); manual revision reaches {manual[5]:.2f}.",
        f"| model revision (this model) | {_row(model[:6])} |",
        f"| manual revision (this model) | {_row(manual[:6])} |",
        f"- After 10 clicks: model {model[10]:.2f} px, manual {manual[10]:.2f} px.",
        f"- Hard-argmax MRE: model {hard_model[0]:.2f} → {hard_model[5]:.2f} after 0 → 5 clicks; manual "
        f"{hard_manual[0]:.2f} → {hard_manual[5]:.2f}.",
    ]
    for revision in ("model", "manual"):
        noc = [results["noc"][threshold][revision] for threshold in ("40", "30", "20")]
        expected.append(f"  - {revision} revision: " + " / ".join(f"{entry['mean_clicks']:.2f}" for entry in noc)
                        + " (" + " / ".join(str(entry["not_reached"]) for entry in noc) + " images never get there)")
        cobb = results[revision]["cobb_SMAPE"][:6]
        expected.append(f"  - {revision} revision: " + ", ".join(f"{value:.2f}" for value in cobb))
    flat = " ".join(section.split())
    for line in expected:
        assert " ".join(line.split()) in flat, f"README Results does not say: {line}"


def test_readme_ablation_scale_row_is_the_committed_evaluation():
    scale_row = next(line for line in README.splitlines() if line.startswith("| for scale: the committed model"))
    want = comparison_table({"committed": _results()}).splitlines()[2]
    assert scale_row.split("|")[2:] == want.split("|")[2:]


def test_committed_model_reproduces_its_published_evaluation(tmp_path):
    """`bash test.sh` on the real data gives the committed numbers (to 0.01 px / 0.01 %)."""
    import test as test_script

    raw = require(AASCE, "re-evaluating the committed model on the real test split")
    subprocess.run([sys.executable, str(ROOT / "data_preprocessing.py"), "--source", str(raw), "--target",
                    str(tmp_path), "--no-progress"], check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    out = tmp_path / "out"
    code = test_script.main(["--checkpoint", str(ROOT / CHECKPOINT), "--data", str(tmp_path / "dataset16_512"),
                             "--out", str(out), "--no-progress", "--device", "cpu"])
    assert code == 0
    got, want = json.loads((out / "results.json").read_text()), _results()
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
