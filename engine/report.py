"""Human-readable results: the README-style table, the MRE-per-click plot, the ablation's tables (runs side
by side, per-image differences) and the per-image CSV they are paired on."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from engine.revision import revisions_in
from misc.paired import paired_bootstrap

# The paper's Fig. 4: AASCE test set, sargmax MRE in original pixels after 0..5 clicks.
PAPER_AASCE = {
    "model": [58.58, 35.39, 29.35, 24.02, 21.06, 17.67],
    "manual": [58.58, 55.85, 53.33, 50.90, 48.55, 47.03],
}
TABLE_METRIC = "sargmax_mm_MRE"  # official key name: "mm" = original pixels on AASCE (it has no pixel spacing)
# Rows of the tables and lines of the plots, per revision of engine.revision (results.json's keys).
REVISION_LABELS = {"model": "model revision", "manual": "manual revision", "auto": "model + automatic revision"}
REVISION_COLOURS = {"model": "tab:red", "manual": "tab:blue", "auto": "tab:green"}


def format_table(results: dict, clicks: int, metrics=(TABLE_METRIC, "hargmax_mm_MRE")) -> str:
    """Markdown table: rows model / manual revision (and model + automatic revision when ``results`` has
    "auto"), columns 0..clicks, one block per metric."""
    revisions = revisions_in(results)
    lines = []
    header = "| " + " | ".join(["", *[f"{n} click{'s' if n != 1 else ''}" for n in range(clicks + 1)]]) + " |"
    for metric in metrics:
        lines += [f"MRE ({metric}; {'original pixels' if '_mm_' in metric else 'network-grid pixels'}), "
                  f"{results.get('num_images', '?')} images", "", header,
                  "|" + "---|" * (clicks + 2)]
        for revision in revisions:
            values = results[revision][metric][: clicks + 1]
            lines.append(f"| {REVISION_LABELS[revision]} | " + " | ".join(f"{v:.2f}" for v in values) + " |")
        lines.append("")
    if results.get("noc"):
        lines.append("Clicks to bring an image's MRE (sargmax, original px) under a threshold "
                     f"(mean over images; budget {results.get('max_clicks')} clicks):")
        lines.append("")
        for threshold, entry in results["noc"].items():
            parts = [f"{rev} {entry[rev]['mean_clicks']:.2f} ({entry[rev]['not_reached']} not reached)"
                     for rev in revisions]
            lines.append(f"- MRE <= {threshold}: " + "; ".join(parts))
    return "\n".join(lines).rstrip()


def plot_mre(results: dict, path: Path, metric: str = TABLE_METRIC, reference: dict | None = None) -> None:
    """PNG of MRE against clicks for each revision (the paper's AASCE values dashed, if given)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from util import atomic_write_bytes
    import io

    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    for revision in revisions_in(results):
        values, colour = results[revision][metric], REVISION_COLOURS[revision]
        ax.plot(range(len(values)), values, "o-", color=colour, label=f"{REVISION_LABELS[revision]} (ours)")
        if reference and revision in reference:
            ref = reference[revision]
            ax.plot(range(len(ref)), ref, "s--", color=colour, alpha=0.5, label=f"{revision} revision (paper)")
    ax.set_xlabel("clicks")
    ax.set_ylabel(f"MRE ({metric}, {'original px' if '_mm_' in metric else 'grid px'})")
    ax.set_title("Interactive revision: error against number of clicks")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue())


def plot_paired_differences(differences: dict[str, dict[int, tuple]], path: Path, titles: dict[str, str],
                            reference: str = "full", description: str = "") -> None:
    """PNG, one panel per variant, of :func:`misc.paired.same_seed_differences`: the mean per-image MRE
    difference to the reference after 0..C clicks with its interval as error bars, one colour per training
    seed. The reference's own panel (its seeds against the lowest one) shows the spread between trainings
    that a variant's difference has to exceed to mean anything. ``description`` goes into the PNG's
    Description text chunk, so that what a committed figure shows can be checked without reading pixels."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from util import atomic_write_bytes

    if not differences:
        raise ValueError("no paired differences to plot")
    variants = sorted(differences, key=lambda v: v != reference)  # the seed-to-seed panel first
    fig, axes = plt.subplots(1, len(variants), figsize=(3.6 * len(variants), 3.6), dpi=110, sharey=True,
                             squeeze=False)
    seeds = sorted({s for by_seed in differences.values() for s in by_seed})
    handles = {}
    for ax, variant in zip(axes[0], variants):
        for index, training_seed in enumerate(seeds):
            if training_seed not in differences[variant]:
                continue
            mean, low, high = (np.asarray(a) for a in differences[variant][training_seed])
            clicks = np.arange(len(mean)) + (index - (len(seeds) - 1) / 2) * 0.15  # side by side
            handles[training_seed] = ax.errorbar(clicks, mean, yerr=[mean - low, high - mean], fmt="o-",
                                                 capsize=3, ms=4, color=f"C{index}")
        ax.axhline(0.0, color="grey", lw=0.8)
        ax.set_title(titles.get(variant, variant), fontsize=9)
        ax.set_xlabel("clicks")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("MRE difference (original px)\nnegative = better")
    fig.legend([handles[s] for s in seeds], [f"training seed {s}" for s in seeds], loc="upper right",
               fontsize=8, ncol=len(seeds))
    fig.tight_layout(rect=(0, 0, 1, 0.92))
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", metadata={"Description": description} if description else None)
    plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue())


def comparison_table(named_results: dict[str, dict], clicks: int = 5) -> str:
    """Markdown table with one row per run (e.g. an ablation): model-revision MRE after 0..clicks, the mean
    clicks to each NoC threshold and Cobb SMAPE at 0 and `clicks` clicks.

    Rows are only comparable on the same images, so every results.json must name the same split, data and
    image count, and all must have been evaluated to at least `clicks` clicks with the same thresholds."""
    if not named_results:
        raise ValueError("no results to compare")
    first_name, first = next(iter(named_results.items()))
    for name, results in named_results.items():
        for key in ("split", "data", "num_images"):
            if results.get(key) != first.get(key):
                raise ValueError(f"'{name}' was evaluated with {key}={results.get(key)!r}, but '{first_name}' "
                                 f"with {key}={first.get(key)!r}: rows of one table must share the images")
        if list(results.get("noc", {})) != list(first.get("noc", {})):
            raise ValueError(f"'{name}' has NoC thresholds {list(results.get('noc', {}))}, "
                             f"'{first_name}' {list(first.get('noc', {}))}")
        if len(results["model"][TABLE_METRIC]) < clicks + 1:
            raise ValueError(f"'{name}' was evaluated to {len(results['model'][TABLE_METRIC]) - 1} clicks, "
                             f"the table needs {clicks}")
    thresholds = list(first.get("noc", {}))
    has_cobb = all("cobb_SMAPE" in results["model"] for results in named_results.values())
    header = ["run", *[f"MRE {n}" for n in range(clicks + 1)], *[f"NoC{t}" for t in thresholds]]
    if has_cobb:
        header += ["Cobb SMAPE 0", f"Cobb SMAPE {clicks}"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, results in named_results.items():
        model = results["model"]
        cells = [name, *[f"{v:.2f}" for v in model[TABLE_METRIC][: clicks + 1]]]
        cells += [f"{results['noc'][t]['model']['mean_clicks']:.2f}" for t in thresholds]
        if has_cobb:
            cells += [f"{model['cobb_SMAPE'][0]:.2f}", f"{model['cobb_SMAPE'][clicks]:.2f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


PER_IMAGE_FILE = "per_image.csv"


def per_image_csv(names, mre, cobb_smape=None) -> str:
    """CSV text, one row per image: name, model-revision MRE after 0..C clicks (sargmax, original pixels)
    and, when given, Cobb SMAPE (%) after 0..C clicks. mre, cobb_smape: (N, C+1) arrays in the order of
    names. Small enough to commit beside results.json; tools/compare_runs.py --paired-to pairs runs on it."""
    mre = [list(map(float, row)) for row in mre]
    if len(mre) != len(names):
        raise ValueError(f"{len(names)} names but {len(mre)} MRE rows")
    header = ["image", *[f"mre_{c}" for c in range(len(mre[0]) if mre else 0)]]
    if cobb_smape is not None:
        cobb_smape = [list(map(float, row)) for row in cobb_smape]
        if len(cobb_smape) != len(names):
            raise ValueError(f"{len(names)} names but {len(cobb_smape)} Cobb SMAPE rows")
        header += [f"cobb_smape_{c}" for c in range(len(cobb_smape[0]) if cobb_smape else 0)]
    lines = [",".join(header)]
    for index, name in enumerate(names):
        if "," in str(name) or "\n" in str(name):
            raise ValueError(f"image name {name!r} contains a comma or a line break")
        values = mre[index] + (cobb_smape[index] if cobb_smape is not None else [])
        lines.append(",".join([str(name), *[f"{v:.4f}" for v in values]]))
    return "\n".join(lines) + "\n"


def parse_per_image_csv(text: str, source: str = "per_image.csv") -> dict:
    """Inverse of :func:`per_image_csv`: {"images": [names], "mre": (N, C+1), "cobb_smape": (N, C+1) or
    None}. A malformed file is a ValueError naming ``source`` and the line."""
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines or not lines[0].startswith("image,mre_0"):
        raise ValueError(f"{source}: not a per-image table (the first line must start with 'image,mre_0')")
    header = lines[0].split(",")
    mre_columns = [i for i, h in enumerate(header) if h.startswith("mre_")]
    cobb_columns = [i for i, h in enumerate(header) if h.startswith("cobb_smape_")]
    names, rows = [], []
    for number, line in enumerate(lines[1:], start=2):
        cells = line.split(",")
        if len(cells) != len(header):
            raise ValueError(f"{source}, line {number}: {len(cells)} cells, the header has {len(header)}")
        try:
            rows.append([float(cell) for cell in cells[1:]])
        except ValueError:
            raise ValueError(f"{source}, line {number}: a value is not a number") from None
        names.append(cells[0])
    if not rows:
        raise ValueError(f"{source}: no image rows")
    values = np.array(rows, dtype=np.float64)
    return {"images": names, "mre": values[:, [i - 1 for i in mre_columns]],
            "cobb_smape": values[:, [i - 1 for i in cobb_columns]] if cobb_columns else None}


def paired_difference_table(named_per_image: dict[str, dict], reference: str, clicks: int = 5,
                            resamples: int = 10000, level: float = 0.95, seed: int = 0) -> str:
    """Markdown table: for each run but ``reference``, the mean per-image difference run - reference in
    model-revision MRE after 0..clicks and (when all runs have it) Cobb SMAPE at 0 and ``clicks``, with its
    paired-bootstrap interval over the images (:func:`misc.paired.paired_bootstrap`). Negative = the run is
    better. ``named_per_image``: name -> :func:`parse_per_image_csv` output; all must list the same images."""
    if reference not in named_per_image:
        raise ValueError(f"--paired-to '{reference}' is not one of the runs ({', '.join(named_per_image)})")
    base = named_per_image[reference]
    for name, table in named_per_image.items():
        if table["images"] != base["images"]:
            raise ValueError(f"'{name}' and '{reference}' list different images (or in another order): "
                             "a paired comparison needs the same images")
        if table["mre"].shape[1] < clicks + 1:
            raise ValueError(f"'{name}' has per-image MRE to {table['mre'].shape[1] - 1} clicks, the table needs {clicks}")
    has_cobb = all(t["cobb_smape"] is not None and t["cobb_smape"].shape[1] > clicks for t in named_per_image.values())
    header = ["run - " + reference, *[f"MRE {n}" for n in range(clicks + 1)]]
    if has_cobb:
        header += ["Cobb SMAPE 0", f"Cobb SMAPE {clicks}"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, table in named_per_image.items():
        if name == reference:
            continue
        pairs = [(table["mre"][:, : clicks + 1], base["mre"][:, : clicks + 1])]
        if has_cobb:
            pairs.append((table["cobb_smape"][:, [0, clicks]], base["cobb_smape"][:, [0, clicks]]))
        cells = [name]
        for run_errors, base_errors in pairs:
            mean, low, high = paired_bootstrap(run_errors, base_errors, resamples, level, seed)
            cells += [f"{m:+.2f} [{lo:+.2f}, {hi:+.2f}]" for m, lo, hi in zip(mean, low, high)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
