"""The README's main job (`bash run.sh`, no arguments, no real data) on a small generated set: it must
print the model-vs-manual table of the committed model, pretrained/aasce_cpu.pth, and leave the outputs
it names."""
from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO_ROOT

CHECKPOINT = "pretrained/aasce_cpu.pth"


def venv_with_requirements() -> Path:
    """The interpreter's venv, if tools/ensure_env.sh installed the current requirements.txt into it
    (otherwise run.sh would start a pip install)."""
    venv = Path(sys.prefix)
    stamp = venv / ".requirements.sha256"
    want = hashlib.sha256((REPO_ROOT / "requirements.txt").read_bytes()).hexdigest()
    if not stamp.is_file() or stamp.read_text().strip() != want:
        pytest.skip(f"{venv} was not set up by tools/ensure_env.sh for this requirements.txt: "
                    "run the suite with bash tests/run.sh")
    return venv


def table_rows(text: str, metric: str) -> dict[str, list[float]]:
    """The model/manual rows of the printed MRE block for ``metric``."""
    block = text.split(f"MRE ({metric};", 1)[1].split("\n\n", 2)[1]
    rows = {}
    for revision in ("model", "manual"):
        line = re.search(rf"^\| {revision} revision \|(.*)\|$", block, re.MULTILINE).group(1)
        rows[revision] = [float(cell) for cell in line.split("|")]
    return rows


def numpy_mre(predictions: Path, revision: str, decoding: str) -> np.ndarray:
    """MRE per click in original pixels from the network-grid coordinates, in plain numpy."""
    z = np.load(predictions)
    to_original = (z["raw_size_rc"] / z["image_size_rc"] * z["spacing_rc"]).astype(np.float64)
    predicted = z[f"{revision}_{decoding}_rc"] * to_original[:, None, None, :]
    truth = z["true_rc"] * to_original[:, None, :]
    return np.linalg.norm(predicted - truth[:, None], axis=-1).mean(axis=(0, 2))


@pytest.fixture(scope="module")
def main_job(tmp_path_factory):
    venv = venv_with_requirements()
    work = tmp_path_factory.mktemp("run_main")
    env = {key: value for key, value in os.environ.items()
           if key not in ("AASCE_SOURCE", "TRAIN", "CHECKPOINT", "OUT", "RUN_DATA")}
    env.update(VENV=str(venv), SYNTH_DIR=str(work / "synthetic"), OUT=str(work / "out"), SYNTH_TRAIN="4", SYNTH_TEST="3",
               VAL_SIZE="2", VISUALIZE="2", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    if (REPO_ROOT / "data" / "dataset16" / "boostnet_labeldata").is_dir():
        env["RUN_DATA"] = "synthetic"  # a developer's real tree would otherwise be chosen
    done = subprocess.run(["bash", "run.sh"], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return work, done.stdout


def test_main_job_prints_the_committed_models_table(main_job):
    work, stdout = main_job
    data = work / "synthetic" / "dataset16_512"
    assert len(json.loads((data / "test.json").read_text())) == 3
    out = work / "out"
    assert f"checkpoint {CHECKPOINT}:" in stdout and f"Outputs in {out}/" in stdout

    # The same model on the same images, evaluated by test.py on its own.
    independent = work / "independent"
    subprocess.run([sys.executable, "test.py", "--checkpoint", CHECKPOINT, "--data", f"{data}/", "--out",
                    str(independent), "--no-progress"], cwd=REPO_ROOT, check=True, capture_output=True,
                   env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO_ROOT)})
    expected = json.loads((independent / "results.json").read_text())
    for metric in ("sargmax_mm_MRE", "hargmax_mm_MRE"):
        printed = table_rows(stdout, metric)
        for revision in ("model", "manual"):
            columns = len(printed[revision])
            assert columns == 6
            np.testing.assert_allclose(printed[revision], expected[revision][metric][:columns], atol=0.005)
            # ... and the numbers are what the saved coordinates give, recomputed in numpy.
            decoding = metric.split("_")[0]
            np.testing.assert_allclose(printed[revision], numpy_mre(out / "predictions.npz", revision, decoding)[:6],
                                       atol=0.006)
    # The committed model follows clicks: model revision ends below manual revision.
    assert table_rows(stdout, "sargmax_mm_MRE")["model"][5] < table_rows(stdout, "sargmax_mm_MRE")["manual"][5]


def test_main_job_leaves_the_outputs_it_names(main_job):
    work, stdout = main_job
    out = work / "out"
    results = json.loads((out / "results.json").read_text())
    assert results["checkpoint"] == CHECKPOINT
    for name in ("results.md", "mre_per_click.png", "cobb_per_click.png", "predictions.npz"):
        assert (out / name).stat().st_size > 0, name
    strips = sorted((out / "visualize").glob("*.png"))
    assert len(strips) == 2
    assert (out / "results.md").read_text().strip() in stdout
