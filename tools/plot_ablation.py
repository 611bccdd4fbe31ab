"""Draw the ablation as paired differences, one panel per variant, one colour per training seed.

    python tools/plot_ablation.py                      # experiments/ablation -> docs/ablation_differences.png
    python tools/plot_ablation.py --logs results/ablation --out ablation.png

Reads every run folder named s<seed>_<variant> (as tools/ablation.sh names them) that holds a
per_image.csv. Each variant is compared, image by image, with the full method trained with the same seed;
the full method's other seeds are compared with its lowest seed (the first panel: how far two trainings
of one recipe lie apart). Points are the mean per-image difference in model-revision MRE after 0..N
clicks (negative = the variant is better), bars their 95 % paired-bootstrap interval over the images, the
same numbers as `tools/compare_runs.py --paired-to`. A variant's difference means something only where it
is larger than the first panel's spread and has the same sign for every seed.
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from misc.errors import BadInput, report_bad_input  # noqa: E402
from misc.paired import same_seed_differences  # noqa: E402
from engine.report import PER_IMAGE_FILE, parse_per_image_csv, plot_paired_differences  # noqa: E402

REFERENCE = "full"
TITLES = {"full": "full method: seed k - seed 0", "no_morph": "without the morphology-aware loss - full",
          "no_gating": "without the gating block - full", "no_prev": "without the previous heatmap - full"}
RUN_NAME = re.compile(r"s(\d+)_(\w+)")


def read_runs(logs: Path, clicks: int) -> dict[tuple[int, str], dict]:
    """{(seed, variant): parsed per_image.csv} of the s<seed>_<variant> folders under ``logs``, checked to list
    the same images in the same order and to reach ``clicks`` clicks."""
    if not logs.is_dir():
        raise BadInput(f"--logs {logs}: not a folder")
    runs, first = {}, None
    for folder in sorted(logs.iterdir()):
        match = RUN_NAME.fullmatch(folder.name)
        if not match or not (folder / PER_IMAGE_FILE).is_file():
            continue
        path = folder / PER_IMAGE_FILE
        try:
            table = parse_per_image_csv(path.read_text(), str(path))
        except ValueError as exc:
            raise BadInput(str(exc)) from None
        if first is not None and table["images"] != runs[first]["images"]:
            raise BadInput(f"{path}: lists other images (or another order) than {logs / f's{first[0]}_{first[1]}'}; "
                           "paired differences need the same images")
        if table["mre"].shape[1] < clicks + 1:
            raise BadInput(f"{path}: per-image MRE to {table['mre'].shape[1] - 1} clicks, --clicks asks for {clicks}")
        key = (int(match.group(1)), match.group(2))
        runs[key] = table
        first = first or key
    if not runs:
        raise BadInput(f"--logs {logs}: no s<seed>_<variant>/{PER_IMAGE_FILE} in it (tools/ablation.sh writes them)")
    return runs


@report_bad_input
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--logs", type=Path, default=Path("experiments/ablation"),
                        help="folder of s<seed>_<variant> run folders (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=Path("docs/ablation_differences.png"),
                        help="PNG to write (default: %(default)s)")
    parser.add_argument("--clicks", type=int, default=5, help="last click drawn (default: %(default)s)")
    parser.add_argument("--resamples", type=int, default=10000,
                        help="bootstrap resamples for the intervals (default: %(default)s)")
    args = parser.parse_args(argv)
    if args.clicks < 0 or args.resamples < 1:
        raise BadInput(f"--clicks must be >= 0 and --resamples >= 1, got {args.clicks} and {args.resamples}")
    runs = read_runs(args.logs, args.clicks)
    differences = same_seed_differences({key: table["mre"][:, : args.clicks + 1] for key, table in runs.items()},
                                        REFERENCE, args.resamples)
    known = list(TITLES)
    differences = dict(sorted(differences.items(), key=lambda item: (known.index(item[0]) if item[0] in known
                                                                     else len(known), item[0])))
    compared = {(seed, variant) for variant, by_seed in differences.items() for seed in by_seed}
    for seed, variant in sorted(set(runs) - compared):
        if variant != REFERENCE:
            print(f"left out s{seed}_{variant}: no s{seed}_{REFERENCE} run to pair it with")
    if not differences:
        raise BadInput(f"--logs {args.logs}: nothing to pair (each variant needs the {REFERENCE} run of its seed)")
    summary = "\n".join(f"{variant:<10} seed {seed}: MRE difference after 0..{args.clicks} clicks "
                        + " ".join(f"{m:+.2f}" for m in mean)
                        for variant, by_seed in differences.items() for seed, (mean, _, _) in by_seed.items())
    print(summary)
    plot_paired_differences(differences, args.out, TITLES, REFERENCE, description=summary)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
