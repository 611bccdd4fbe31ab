"""One table for several evaluated runs (an ablation, two seeds, two recipes), from their results.json.

    python tools/compare_runs.py results/ablation/full results/ablation/no_morph ...
    python tools/compare_runs.py "full=results/ablation/full/results.json" "no gating=results/..." --clicks 5

Each argument is a test.py output folder or its results.json, optionally named as NAME=PATH (default name:
the folder's name). Prints a Markdown table: model-revision MRE (sargmax, original pixels) after 0..N
clicks, mean clicks to each NoC threshold, and Cobb SMAPE after 0 and N clicks. All runs must have been
evaluated on the same split and data (test.py writes both into results.json); otherwise it stops.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from misc.errors import BadInput, report_bad_input  # noqa: E402
from misc.report import comparison_table  # noqa: E402


def read_named_results(specs: list[str]) -> dict[str, dict]:
    """{name: results} from NAME=PATH or PATH arguments (PATH a folder holding results.json, or the file)."""
    named = {}
    for spec in specs:
        name, _, path_text = spec.rpartition("=")
        path = Path(path_text)
        if path.is_dir():
            path = path / "results.json"
        name = name or path.parent.name
        if name in named:
            raise BadInput(f"two runs are named '{name}': name them, e.g. {name}_2={path_text}")
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


@report_bad_input
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", help="NAME=PATH or PATH: a test.py output folder or its results.json")
    parser.add_argument("--clicks", type=int, default=5, help="last click column (default: %(default)s)")
    args = parser.parse_args(argv)
    named = read_named_results(args.runs)
    try:
        table = comparison_table(named, args.clicks)
    except ValueError as exc:
        raise BadInput(str(exc)) from None
    first = next(iter(named.values()))
    print(f"{first.get('split')} split of {first.get('data')}, {first.get('num_images')} images; "
          f"model revision, sargmax MRE in original pixels\n")
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
