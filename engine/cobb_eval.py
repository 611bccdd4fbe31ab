"""Cobb-angle evaluation of the interactive revisions: SMAPE and mean absolute error per click.

Pure functions over the ``arrays`` of :func:`engine.evaluation.evaluate` (numpy in, numbers out), plus the
Markdown table and the PNG at the edge. Cobb angles are always computed in ORIGINAL image pixels
(see ``shared/AASCE_NOTES.md``): network-grid coordinates are rescaled by ``raw_size_rc / image_size_rc``
first. Pixel spacing is deliberately NOT applied: the challenge defines the angles on pixels, and an
anisotropic spacing would change them (AASCE spacing is 1 anyway).

The truth comes from the table: an entry's ``cobb_angles`` field (the ``angles.csv`` values, if the
preprocessing stored them), else the Cobb angles of the entry's raw ``label`` points with the image height
``raw_size_row_col[0]`` (these reproduce ``angles.csv`` to within 0.01 degree).

results layout added by :func:`cobb_metrics` (JSON-ready, per revision "model" / "manual", and "auto" when the
arrays hold automatic revision)::

    cobb_SMAPE      [C+1] floats, percent, after 0..C clicks
    cobb_MAE        [C+1][3] floats, degrees, mean |pred - true| of angle 1, 2, 3 after 0..C clicks
    cobb_degenerate [C+1] ints, images whose prediction had a vertebra without direction (scored with
                    degenerate="zero", see :func:`predicted_cobb_angles`)
"""
from __future__ import annotations

import io
from pathlib import Path
from typing import Sequence

import numpy as np

from engine.report import REVISION_COLOURS, REVISION_LABELS
from engine.revision import REVISIONS, revisions_in
from misc.cobb import NUM_KEYPOINTS, cobb_angles, smape_per_image
from misc.frames import grid_to_original_px

NUM_ANGLES = 3

__all__ = [
    "REVISIONS",
    "cobb_metrics",
    "degenerate_vertebrae",
    "format_cobb_table",
    "plot_cobb",
    "predicted_cobb_angles",
    "true_cobb_angles",
]


# --------------------------------------------------------------------------------------------------------
# truth
# --------------------------------------------------------------------------------------------------------
def _entry_angles(entry: dict) -> np.ndarray:
    """(3,) true Cobb angles of one table entry: its ``cobb_angles`` field, else computed from ``label``."""
    name = entry.get("image", "?")
    if entry.get("cobb_angles") is not None:
        angles = np.asarray(entry["cobb_angles"], dtype=np.float64)
        if angles.shape != (NUM_ANGLES,) or not np.isfinite(angles).all() or (angles < 0).any():
            raise ValueError(f"table entry '{name}': cobb_angles must be 3 finite non-negative degrees, "
                             f"got {entry['cobb_angles']!r}")
        return angles
    for key in ("label", "raw_size_row_col"):
        if key not in entry:
            raise KeyError(f"table entry '{name}' has neither 'cobb_angles' nor '{key}' to compute them from")
    try:
        result = cobb_angles(np.asarray(entry["label"], dtype=np.float64), entry["raw_size_row_col"][0])
    except ValueError as exc:
        raise ValueError(f"table entry '{name}': cannot compute the true Cobb angles from 'label': {exc}") from None
    return np.asarray(result["angles"], dtype=np.float64)


def true_cobb_angles(table_entries: Sequence[dict], arrays: dict | None = None) -> np.ndarray:
    """(N, 3) true Cobb angles in degrees, in the order of ``arrays["names"]`` (table order if no arrays).

    Per entry: its ``cobb_angles`` field when present (the ``angles.csv`` values), else the challenge method
    (:func:`misc.cobb.cobb_angles`, ``degenerate="raise"``) on its raw ``label`` points (x, y original pixels)
    with height ``raw_size_row_col[0]``. Entries are matched to ``arrays["names"]`` by their ``image`` field,
    so a table in another order, or a superset of the evaluated images, is fine; a name without an entry
    raises KeyError.
    """
    entries = list(table_entries)
    if arrays is None:
        return np.stack([_entry_angles(e) for e in entries]) if entries else np.zeros((0, NUM_ANGLES))
    by_name: dict = {}
    for entry in entries:
        by_name.setdefault(entry.get("image"), entry)
    names = [str(n) for n in np.asarray(arrays["names"]).reshape(-1)]
    missing = [n for n in names if n not in by_name]
    if missing:
        raise KeyError(f"{len(missing)} evaluated image(s) have no table entry, e.g. '{missing[0]}': "
                       "pass the table of the split that was evaluated")
    if not names:
        return np.zeros((0, NUM_ANGLES))
    return np.stack([_entry_angles(by_name[n]) for n in names])


# --------------------------------------------------------------------------------------------------------
# predictions
# --------------------------------------------------------------------------------------------------------
def degenerate_vertebrae(points_xy) -> np.ndarray:
    """(..., 17) bool: vertebrae whose left and right side midpoints coincide (no direction, Cobb step 1)."""
    pts = np.asarray(points_xy, dtype=np.float64)
    left = (pts[..., 0::4, :] + pts[..., 2::4, :]) / 2.0
    right = (pts[..., 1::4, :] + pts[..., 3::4, :]) / 2.0
    return (right == left).all(axis=-1)


def predicted_cobb_angles(arrays: dict, revision: str, kind: str = "sargmax") -> tuple[np.ndarray, np.ndarray]:
    """Cobb angles of one revision after every click: ((N, C+1, 3) degrees, (N, C+1) bool degenerate).

    Coordinates ``arrays[f"{revision}_{kind}_rc"]`` (network grid) are converted to original pixels first.
    A prediction in which some vertebra has no direction (its left and right side midpoints coincide, e.g.
    all four corners decoded onto one pixel) is scored with ``degenerate="zero"``: every angle involving that
    vertebra counts as 0 degrees, so a broken prediction gets a (bad) number instead of stopping the
    evaluation; such predictions are flagged in the second array. Non-finite coordinates still raise
    ValueError (they are a bug upstream, not a bad prediction).
    """
    key = f"{revision}_{kind}_rc"
    if key not in arrays:
        raise KeyError(f"arrays has no '{key}': expected the output of engine.evaluation.evaluate")
    coords_rc = grid_to_original_px(arrays[key], arrays["image_size_rc"], arrays["raw_size_rc"])
    if coords_rc.ndim != 4 or coords_rc.shape[2] != NUM_KEYPOINTS:
        raise ValueError(f"arrays['{key}'] must be (N, C+1, {NUM_KEYPOINTS}, 2), got {coords_rc.shape}")
    points_xy = coords_rc[..., ::-1]
    heights = np.asarray(arrays["raw_size_rc"], dtype=np.float64).reshape(-1, 2)[:, 0]
    names = np.asarray(arrays.get("names", np.arange(coords_rc.shape[0]))).reshape(-1)
    n_images, n_steps = coords_rc.shape[:2]
    angles = np.empty((n_images, n_steps, NUM_ANGLES), dtype=np.float64)
    for i in range(n_images):
        for c in range(n_steps):
            try:
                angles[i, c] = cobb_angles(points_xy[i, c], heights[i], degenerate="zero")["angles"]
            except ValueError as exc:
                raise ValueError(f"{revision} revision, image '{names[i]}', {c} clicks: {exc}") from None
    return angles, degenerate_vertebrae(points_xy).any(axis=-1)


def cobb_metrics(arrays: dict, true_angles, kind: str = "sargmax", predicted: dict | None = None) -> dict:
    """Cobb SMAPE and MAE per click for model and manual revision, and automatic revision when ``arrays``
    hold it (JSON-ready, see the module docstring).

    ``true_angles``: (N, 3) degrees in the order of ``arrays["names"]`` (:func:`true_cobb_angles`).
    Predictions use the SARGMAX coordinates (``kind``) in original pixels; predictions with a vertebra
    without direction are scored with ``degenerate="zero"`` (never raise) and counted in ``cobb_degenerate``.
    Returns ``{"model": {"cobb_SMAPE": [...], "cobb_MAE": [[a1, a2, a3], ...], "cobb_degenerate": [...]},
    "manual": {...}}``; merge each revision's dict into ``results[revision]``.
    ``predicted``: revision -> the output of :func:`predicted_cobb_angles`, when the caller already has it
    (then its revisions are the ones scored).
    """
    true = np.asarray(true_angles, dtype=np.float64)
    n_images = len(np.asarray(arrays["raw_size_rc"]).reshape(-1, 2))
    if true.shape != (n_images, NUM_ANGLES):
        raise ValueError(f"true_angles must be ({n_images}, {NUM_ANGLES}) (one row per evaluated image), "
                         f"got {true.shape}")
    if n_images == 0:
        raise ValueError("no evaluated images: Cobb metrics need at least one")
    out: dict = {}
    for revision in (predicted if predicted else revisions_in(arrays)):
        pred, degenerate = predicted[revision] if predicted else predicted_cobb_angles(arrays, revision, kind)
        n_steps = pred.shape[1]
        smape = [float(smape_per_image(pred[:, c], true).mean()) for c in range(n_steps)]
        mae = np.abs(pred - true[:, None, :]).mean(axis=0)  # (C+1, 3)
        out[revision] = {
            "cobb_SMAPE": smape,
            "cobb_MAE": [[float(v) for v in row] for row in mae],
            "cobb_degenerate": [int(v) for v in degenerate.sum(axis=0)],
        }
    return out


# --------------------------------------------------------------------------------------------------------
# table and plot (edges)
# --------------------------------------------------------------------------------------------------------
def _mae_text(row) -> str:
    return " / ".join(f"{v:.2f}" for v in row)


def format_cobb_table(results: dict, clicks: int) -> str:
    """Markdown: Cobb SMAPE (%) of model / manual (/ automatic) revision for 0..clicks clicks, then one MAE line
    each.

    ``results[revision]`` must hold ``cobb_SMAPE`` and ``cobb_MAE`` (:func:`cobb_metrics`); same layout as
    :func:`engine.report.format_table`.
    """
    revisions = revisions_in(results)
    available = min(len(results[r]["cobb_SMAPE"]) for r in revisions) - 1
    clicks = min(int(clicks), available)
    header = "| " + " | ".join(["", *[f"{n} click{'s' if n != 1 else ''}" for n in range(clicks + 1)]]) + " |"
    lines = [f"Cobb angle SMAPE (%; sargmax, original pixels), {results.get('num_images', '?')} images", "",
             header, "|" + "---|" * (clicks + 2)]
    for revision in revisions:
        values = results[revision]["cobb_SMAPE"][: clicks + 1]
        lines.append(f"| {REVISION_LABELS[revision]} | " + " | ".join(f"{v:.2f}" for v in values) + " |")
    lines += ["", "Cobb angle mean absolute error (degrees; angle 1 / 2 / 3):", ""]
    for revision in revisions:
        mae = results[revision]["cobb_MAE"]
        text = f"- {REVISION_LABELS[revision]}: 0 clicks {_mae_text(mae[0])}"
        if clicks > 0:
            text += f"; {clicks} click{'s' if clicks != 1 else ''} {_mae_text(mae[clicks])}"
        degenerate = results[revision].get("cobb_degenerate", [])[: clicks + 1]
        if any(degenerate):
            text += (f" (predictions with a vertebra without direction, scored as 0 degrees: "
                     f"{', '.join(str(v) for v in degenerate)} images after 0..{clicks} clicks)")
        lines.append(text)
    return "\n".join(lines)


def plot_cobb(results: dict, path) -> None:
    """PNG with two panels against clicks: Cobb SMAPE (%) and per-angle MAE (degrees), both revisions."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from util import atomic_write_bytes

    fig = Figure(figsize=(11, 4), dpi=120)
    FigureCanvasAgg(fig)
    ax_smape, ax_mae = fig.subplots(1, 2)
    styles = ("o-", "s--", "^:")
    for revision in revisions_in(results):
        smape = results[revision]["cobb_SMAPE"]
        ax_smape.plot(range(len(smape)), smape, "o-", color=REVISION_COLOURS[revision],
                      label=REVISION_LABELS[revision])
        mae = np.asarray(results[revision]["cobb_MAE"], dtype=np.float64).reshape(len(smape), NUM_ANGLES)
        for angle in range(NUM_ANGLES):
            ax_mae.plot(range(len(smape)), mae[:, angle], styles[angle], color=REVISION_COLOURS[revision],
                        alpha=0.85, label=f"{revision}, angle {angle + 1}")
    ax_smape.set_title("Cobb angle SMAPE against clicks")
    ax_smape.set_ylabel("SMAPE (%)")
    ax_mae.set_title("Cobb angle mean absolute error against clicks")
    ax_mae.set_ylabel("MAE (degrees)")
    for ax in (ax_smape, ax_mae):
        ax.set_xlabel("clicks")
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    atomic_write_bytes(Path(path), buffer.getvalue())
