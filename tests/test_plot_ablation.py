"""tools/plot_ablation.py: the ablation drawn as each variant's paired difference to the full run of its
own seed, from the committed per-image tables."""
from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from engine.report import paired_difference_table, parse_per_image_csv
from tools import plot_ablation

ROOT = Path(__file__).resolve().parents[1]
LOGS = ROOT / "experiments" / "ablation"
FIGURE = ROOT / "docs" / "ablation_differences.png"


def _means(row: str) -> list[float]:
    """The mean of every cell of a paired_difference_table row ('+1.10 [-1.36, +3.62]' -> 1.10): MRE after
    0..5 clicks, then Cobb SMAPE."""
    cells = [cell.strip() for cell in row.strip("|").split("|")][1:]
    return [float(cell.split(" ")[0]) for cell in cells if cell.startswith(("+", "-"))]


def _summary_lines(text: str) -> dict[tuple[str, int], list[float]]:
    """{(variant, seed): differences after 0..5 clicks} from the tool's summary (printed and in the PNG)."""
    return {(m.group(1), int(m.group(2))): [float(v) for v in m.group(3).split()]
            for m in re.finditer(r"^(\w+) +seed (\d+): MRE difference after 0\.\.5 clicks (.+)$", text, re.M)}


def _expected_differences() -> dict[tuple[str, int], list[float]]:
    """Each committed variant's paired MRE differences to the full run of its seed (the full method's other
    seeds: to seed 0), as `compare_runs.py --paired-to` tables them, one pair of runs at a time."""
    runs = sorted(p.name for p in LOGS.iterdir() if (p / "per_image.csv").is_file())
    expected = {}
    for run in runs:
        seed, variant = run.split("_", 1)
        reference = f"{seed}_full" if variant != "full" else "s0_full"
        if run == "s0_full" or reference not in runs:
            continue
        tables = {name: parse_per_image_csv((LOGS / name / "per_image.csv").read_text()) for name in (reference, run)}
        row = paired_difference_table(tables, reference, resamples=10).splitlines()[2]
        expected[(variant, int(seed[1:]))] = _means(row)[:6]
    return expected


def _assert_same(shown: dict, expected: dict) -> None:
    assert expected and set(shown) == set(expected)
    for key, means in expected.items():
        np.testing.assert_allclose(shown[key], means, atol=0.006, err_msg=str(key))


def test_it_draws_each_committed_variant_against_the_full_run_of_its_seed(tmp_path, capsys):
    out = tmp_path / "ablation.png"
    assert plot_ablation.main(["--out", str(out), "--resamples", "500"]) == 0
    printed = capsys.readouterr().out
    _assert_same(_summary_lines(printed), _expected_differences())
    with Image.open(out) as image:
        assert image.format == "PNG" and image.width > 1000
        assert image.text["Description"] in printed


def test_the_committed_figure_shows_every_committed_run():
    """docs/ablation_differences.png (in the README) was drawn from the runs committed now: a run added
    without redrawing it (`python tools/plot_ablation.py`) fails here."""
    with Image.open(FIGURE) as image:
        _assert_same(_summary_lines(image.text["Description"]), _expected_differences())


def test_bad_log_folders_are_refused_naming_the_file(tmp_path, capsys):
    assert plot_ablation.main(["--logs", str(tmp_path / "missing"), "--out", str(tmp_path / "a.png")]) == 2
    assert "missing: not a folder" in capsys.readouterr().err
    assert plot_ablation.main(["--logs", str(tmp_path), "--out", str(tmp_path / "a.png")]) == 2
    assert "no s<seed>_<variant>/per_image.csv" in capsys.readouterr().err
    for run in ("s0_full", "s0_no_prev"):
        shutil.copytree(LOGS / run, tmp_path / run)
    table = tmp_path / "s0_no_prev" / "per_image.csv"
    lines = table.read_text().splitlines()
    table.write_text("\n".join([lines[0], lines[2], lines[1], *lines[3:]]) + "\n")  # two images swapped
    assert plot_ablation.main(["--logs", str(tmp_path), "--out", str(tmp_path / "a.png")]) == 2
    assert "s0_no_prev/per_image.csv: lists other images" in capsys.readouterr().err
    assert not (tmp_path / "a.png").exists()
    table.write_text("\n".join(lines) + "\n")
    shutil.rmtree(tmp_path / "s0_full")
    assert plot_ablation.main(["--logs", str(tmp_path), "--out", str(tmp_path / "a.png")]) == 2
    captured = capsys.readouterr()
    assert "left out s0_no_prev: no s0_full run" in captured.out and "nothing to pair" in captured.err
