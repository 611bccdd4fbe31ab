"""The README's fast-recipe and ablation numbers are the committed logs' numbers.

Every ablation row names its command (`--only VARIANT`, `--seed N`); its cells must be what
tools/compare_runs.py makes of that run's results.json in pretrained/ablation_logs/, and every run there must
have its row. The fast recipe's validation table, checkpoint metric and logged epoch time are recomputed
from the same folder, so a retrained run whose logs are committed without the README (or the reverse) fails.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

from misc.report import comparison_table

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
LOGS = ROOT / "pretrained" / "ablation_logs"
FAST_RUN = LOGS / "s0_full"


def _cells(line: str) -> list[str]:
    """'| a | b |' -> ['a', 'b']"""
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


def _first_table_after(marker: str) -> list[list[str]]:
    """Cells of the first Markdown table after `marker` in the README, header row first."""
    assert marker in README, f"README has no '{marker}'"
    rows = []
    for line in README.split(marker, 1)[1].splitlines():
        if line.startswith("|"):
            rows.append(_cells(line))
        elif rows:
            break
    return [row for row in rows if not set("".join(row)) <= set("-")]


def _run_of(label: str) -> str:
    """'full method (`bash tools/ablation.sh --only full --seed 1 ...`)' -> 's1_full'; '' for other rows."""
    variant = re.search(r"--only (\w+)", label)
    seed = re.search(r"--seed (\d+)", label)
    return f"s{seed.group(1) if seed else 0}_{variant.group(1)}" if variant else ""


def test_ablation_rows_are_the_committed_runs_results():
    header, *rows = _first_table_after("**The ablation**")
    runs = {_run_of(row[0]): row for row in rows if _run_of(row[0])}
    committed = sorted(path.name for path in LOGS.iterdir() if (path / "results.json").is_file())
    assert committed and sorted(runs) == committed, "each committed ablation run has exactly one README row"
    for run, row in runs.items():
        results = json.loads((LOGS / run / "results.json").read_text())
        assert results["split"] == "test" and results["num_images"] == 64, run
        want_header, _, want_row = comparison_table({run: results}).splitlines()
        assert header == _cells(want_header)
        assert row[1:] == _cells(want_row)[1:], run


def test_fast_recipe_validation_table_is_the_committed_evaluation():
    results = json.loads((FAST_RUN / "val_results.json").read_text())
    assert results["split"] == "val" and results["checkpoint"] == "save/ablation_s0_full.pth"
    rows = {row[0]: row[1:] for row in _first_table_after("**The fast recipe and its result.**")}
    for label, revision in (("model revision, fast recipe", "model"), ("manual revision, fast recipe", "manual")):
        row = next(cells for name, cells in rows.items() if name.startswith(label))
        assert row == [f"{value:.2f}" for value in results[revision]["sargmax_mm_MRE"][:6]], label


def test_fast_recipe_checkpoint_metric_and_time_are_the_logged_ones():
    epochs = [json.loads(line) for line in (FAST_RUN / "metrics.jsonl").read_text().splitlines()]
    best = min(epoch["val/metric"] for epoch in epochs if "val/metric" in epoch)
    seconds = sum(epoch["epoch_seconds"] for epoch in epochs)
    section = " ".join(README.split("**The fast recipe and its result.**", 1)[1].split("| clicks |", 1)[0].split())
    hours, minutes = divmod(round(seconds / 60), 60)
    assert f"checkpoint metric **{best:.2f}**" in section
    assert f"**{hours} h {minutes} min** of training ({seconds:.0f} s of epochs logged" in section
