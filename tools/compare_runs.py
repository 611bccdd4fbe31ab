"""One table for several evaluated runs (an ablation, two seeds, two recipes), from their results.json.

    python tools/compare_runs.py results/ablation/full results/ablation/no_morph ...
    python tools/compare_runs.py "full=results/ablation/full/results.json" "no gating=results/..." --clicks 5

Each argument is a test.py output folder or its results.json, optionally named as NAME=PATH (default name:
the folder's name). Prints a Markdown table: model-revision MRE (sargmax, original pixels) after 0..N
clicks, mean clicks to each NoC threshold, and Cobb SMAPE after 0 and N clicks. All runs must have been
evaluated on the same split and data (test.py writes both into results.json); otherwise it stops.

With --paired-to NAME it also prints, for every other run, the mean per-image difference to run NAME
(negative = better than NAME) with a 95 % paired-bootstrap interval over the images, from the
per_image.csv beside each results.json. That interval says whether these test images tell two trained
models apart; it does not say how far another training seed would move them.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from misc.errors import BadInput, report_bad_input  # noqa: E402
from engine.report import PER_IMAGE_FILE, comparison_table, paired_difference_table, parse_per_image_csv  # noqa: E402


def resolve_runs(specs: list[str]) -> dict[str, Path]:
    """{name: path of results.json} from NAME=PATH or PATH arguments (PATH a folder holding results.json,
    or the file; the default name is the folder's)."""
    paths = {}
    for spec in specs:
        name, _, path_text = spec.rpartition("=")
        path = Path(path_text)
        if path.is_dir():
            path = path / "results.json"
        name = name or path.parent.name
        if name in paths:
            raise BadInput(f"two runs are named '{name}': name them, e.g. {name}_2={path_text}")
        paths[name] = path
    return paths


def read_named_results(paths: dict[str, Path]) -> dict[str, dict]:
    """{name: results.json content}."""
    named = {}
    for name, path in paths.items():
        try:
            results = json.loads(path.read_text())
        except FileNotFoundError:
            raise BadInput(f"{path}: not found (give a test.py output folder or its results.json)") from None
        except json.JSONDecodeError as exc:
            raise BadInput(f"{path}: not valid JSON ({exc})") from None
        if "model" not in results or "noc" not in results:
            raise BadInput(f"{path}: not a test.py results.json (no 'model' or 'noc' entry)")
        named[name] = results
    return named


def read_per_image(paths: dict[str, Path]) -> dict[str, dict]:
    """{name: parsed per_image.csv}, read beside each run's results.json."""
    tables = {}
    for name, results_path in paths.items():
        path = results_path.parent / PER_IMAGE_FILE
        try:
            tables[name] = parse_per_image_csv(path.read_text(), str(path))
        except FileNotFoundError:
            raise BadInput(f"{path}: not found (test.py writes it beside results.json; evaluate the run again "
                           "to get it)") from None
        except ValueError as exc:
            raise BadInput(str(exc)) from None
    return tables


@report_bad_input
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", help="NAME=PATH or PATH: a test.py output folder or its results.json")
    parser.add_argument("--clicks", type=int, default=5, help="last click column (default: %(default)s)")
    parser.add_argument("--paired-to", metavar="NAME", default=None,
                        help="also print each run's per-image difference to run NAME with a 95 %% bootstrap interval")
    parser.add_argument("--resamples", type=int, default=10000,
                        help="bootstrap resamples for --paired-to (default: %(default)s)")
    args = parser.parse_args(argv)
    if args.resamples < 1:
        raise BadInput(f"--resamples must be at least 1, got {args.resamples}")
    paths = resolve_runs(args.runs)
    named = read_named_results(paths)
    try:
        table = comparison_table(named, args.clicks)
    except ValueError as exc:
        raise BadInput(str(exc)) from None
    first = next(iter(named.values()))
    print(f"{first.get('split')} split of {first.get('data')}, {first.get('num_images')} images; "
          f"model revision, sargmax MRE in original pixels\n")
    print(table)
    if args.paired_to is not None:
        try:
            paired = paired_difference_table(read_per_image(paths), args.paired_to, args.clicks, args.resamples)
        except ValueError as exc:
            raise BadInput(str(exc)) from None
        print(f"\nper-image difference to '{args.paired_to}' (negative = better), mean over the images "
              f"[95 % paired-bootstrap interval, {args.resamples} resamples]\n")
        print(paired)
    return 0


if __name__ == "__main__":
    sys.exit(main())
